//! What a person watching the deploy sees: on a terminal, a spinner whose text follows the
//! rollout; in CI (no TTY), one line per change, with the time since start.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress output of one command.
pub struct Progress {
    started: Instant,
    spinner: Option<ProgressBar>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A spinner on a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            started: Instant::now(),
            spinner,
        }
    }

    /// A step that happened ("switched controltower from blue to green").
    pub fn step(&self, message: &str) {
        match &self.spinner {
            Some(bar) => bar.println(format!("✓ {message}")),
            None => eprintln!("[{:>5.1}s] {message}", self.started.elapsed().as_secs_f64()),
        }
    }

    /// The current state of a wait ("controltower-green: 1/3 available — pod …").
    pub fn status(&self, message: &str) {
        match &self.spinner {
            Some(bar) => bar.set_message(message.to_owned()),
            None => eprintln!(
                "[{:>5.1}s]   {message}",
                self.started.elapsed().as_secs_f64()
            ),
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}
