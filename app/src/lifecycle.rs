//! Readiness and shutdown state shared by the health routes, the startup task and the
//! signal handler.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Where the process is in its life: starting, ready, draining.
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
    stop: watch::Sender<bool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            stop: watch::Sender::new(false),
        }
    }
}

impl Lifecycle {
    /// Marks start-up done (indexes exist, first snapshot loaded).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether start-up finished (regardless of draining).
    pub fn is_started(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Starts draining: readiness turns 503 at once; requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether SIGTERM (or a stop request) arrived.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Tells background tasks to stop.
    pub fn stop_background(&self) {
        self.stop.send_replace(true);
    }

    /// A receiver that changes when background tasks must stop.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}
