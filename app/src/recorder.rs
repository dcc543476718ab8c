//! The check-in recorder: check-ins of registered devices are written in batches by one
//! background task, so a spike with many registered devices costs the database a few writes a
//! second instead of two per check-in, and no check-in waits for MongoDB.
//!
//! A batch that fails is kept and written again (with backoff) until it succeeds; meanwhile
//! the recorder reports itself unhealthy and registered devices get 503, as when the database
//! is down. When the queue is full, a check-in is refused (503) rather than forgotten. On
//! shutdown the queue is written out before the process exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{CheckinRecord, Store};

/// Most check-ins waiting to be written.
pub const QUEUE: usize = 100_000;
/// Most check-ins per write.
pub const BATCH: usize = 1_000;

enum Message {
    Record(CheckinRecord),
    Flush(oneshot::Sender<()>),
}

/// The recorder's queue was full: the check-in could not be accepted.
#[derive(Debug, thiserror::Error)]
#[error("{QUEUE} check-ins are waiting to be written; the database cannot keep up")]
pub struct QueueFull;

/// Handle to the background writer.
#[derive(Clone)]
pub struct Recorder {
    sender: mpsc::Sender<Message>,
    healthy: Arc<AtomicBool>,
}

impl Recorder {
    /// Starts the writer. It collects check-ins for up to `linger` after the first of a batch,
    /// and stops (after writing everything queued) when every `Recorder` is dropped.
    pub fn start(store: Store, linger: Duration) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(run(store, receiver, linger, healthy.clone()));
        (Recorder { sender, healthy }, task)
    }

    /// Queues a check-in; refused when the queue is full.
    pub fn record(&self, checkin: CheckinRecord) -> Result<(), QueueFull> {
        self.sender
            .try_send(Message::Record(checkin))
            .map_err(|_| QueueFull)
    }

    /// Waits until everything queued before this call has been written (or attempted).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

async fn write(store: &Store, batch: &mut Vec<CheckinRecord>, healthy: &AtomicBool) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.record_checkins(batch).await {
            Ok(()) => {
                if !healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("check-in records are written again");
                }
                batch.clear();
                return;
            }
            Err(error) => {
                if healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, pending = batch.len(), "cannot write check-in records; keeping them and retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn run(
    store: Store,
    mut receiver: mpsc::Receiver<Message>,
    linger: Duration,
    healthy: Arc<AtomicBool>,
) {
    let mut batch: Vec<CheckinRecord> = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = receiver.recv().await {
        let deadline = tokio::time::Instant::now() + linger;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Message::Record(r)) => batch.push(r),
                Some(Message::Flush(done)) => {
                    waiting.push(done);
                    break;
                }
                None => {}
            }
            if batch.len() >= BATCH {
                break;
            }
            next = tokio::select! {
                message = receiver.recv() => match message {
                    Some(m) => Some(m),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            };
        }
        if !batch.is_empty() {
            write(&store, &mut batch, &healthy).await;
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    if !batch.is_empty() {
        write(&store, &mut batch, &healthy).await;
    }
}
