//! Logs and metrics, in one place: the tracing subscriber, the request middleware (request
//! id, one log line and the HTTP metrics per request), and every metric the service emits.

mod access;
mod http;
mod json;

pub use http::{ObserveLayer, REQUEST_ID, set_access_log};

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use clap::ValueEnum;
use metrics::Counter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Which requests get an access-log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLog {
    /// Every request.
    All,
    /// Requests answered with a 4xx or 5xx status.
    Errors,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the log writer thread alive; dropping it flushes what is still queued.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the global tracing subscriber. Log lines are written by a background thread in
/// batches (one write per batch, not per request line), so a spike of check-ins does not turn
/// into a spike of syscalls on the request path. Nothing is dropped: when the queue is full,
/// logging waits. Calling it twice is harmless (tests do).
pub fn init_tracing(format: LogFormat, filter: &str) -> LogGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Json => {
            use tracing_subscriber::util::SubscriberInitExt as _;
            if json_subscriber(filter, writer.clone()).try_init().is_ok() {
                access::write_directly_to(writer);
            }
        }
        LogFormat::Text => {
            use std::io::IsTerminal as _;
            // Colours only on a terminal: a container's log (kubectl logs, CloudWatch) would
            // otherwise hold the escape codes.
            let _already_set = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::stdout().is_terminal())
                .with_writer(writer)
                .try_init();
        }
    }
    guard
}

/// The subscriber of `LOG_FORMAT=json`, writing to `writer` (the log writer's queue; the
/// telemetry tests' memory).
type JsonSubscriber<W> =
    tracing_subscriber::fmt::Subscriber<json::SpanFields, json::JsonLine, EnvFilter, W>;

/// The subscriber of `LOG_FORMAT=json`, writing to `writer`.
fn json_subscriber<W>(filter: EnvFilter, writer: W) -> JsonSubscriber<W>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(json::SpanFields)
        .event_format(json::JsonLine)
        .finish()
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed, and then its handle still renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Prometheus text of every metric, with the snapshot gauges brought up to date from the
/// snapshot's size and age (`None`: never loaded).
pub fn render(registrations: usize, snapshot_age: Option<Duration>) -> String {
    metrics::gauge!("controltower_snapshot_registrations").set(registrations as f64);
    let age = snapshot_age.map_or(f64::NAN, |a| a.as_secs_f64());
    metrics::gauge!("controltower_snapshot_age_seconds").set(age);
    prometheus().render()
}

/// Counts a check-in by what it was told (`upload`, `no_upload`) or how it failed, and whether
/// the device is registered. The handles are registered once: this runs for every check-in
/// of the spike.
pub fn checkin(outcome: &'static str, registered: bool) {
    static COUNTERS: OnceLock<HashMap<(&'static str, bool), Counter>> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        let mut map = HashMap::new();
        for outcome in ["upload", "no_upload", "error"] {
            for registered in [true, false] {
                let label = if registered { "true" } else { "false" };
                let counter = metrics::counter!(
                    "controltower_checkins_total",
                    "outcome" => outcome,
                    "registered" => label
                );
                map.insert((outcome, registered), counter);
            }
        }
        map
    });
    if let Some(counter) = counters.get(&(outcome, registered)) {
        counter.increment(1);
    }
}

/// Counts a completed upload.
pub fn upload_completed(first_time: bool) {
    let kind = if first_time { "counted" } else { "repeat" };
    metrics::counter!("controltower_uploads_completed_total", "kind" => kind).increment(1);
}

/// Records a snapshot reload.
pub fn snapshot_reloaded(active: usize, took: Duration) {
    // Duration first: a scrape that sees the new count also sees its duration.
    metrics::histogram!("controltower_snapshot_reload_duration_seconds").record(took.as_secs_f64());
    metrics::gauge!("controltower_snapshot_registrations").set(active as f64);
    metrics::counter!("controltower_snapshot_reloads_total").increment(1);
}

/// Counts registration documents read from the store to keep the snapshot current.
pub fn snapshot_documents_read(documents: u64) {
    static COUNTER: OnceLock<Counter> = OnceLock::new();
    COUNTER
        .get_or_init(|| metrics::counter!("controltower_snapshot_documents_read_total"))
        .increment(documents);
}

/// Counts a gap in the registration feed (a full reload follows).
pub fn snapshot_feed_gap() {
    metrics::counter!("controltower_snapshot_feed_gaps_total").increment(1);
}

/// A log kept in memory, for the telemetry tests.
#[cfg(test)]
pub(crate) mod captured {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    /// What a subscriber wrote, as bytes.
    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        /// Everything written so far.
        pub fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        /// Each line, parsed as JSON.
        pub fn json(&self) -> Vec<serde_json::Value> {
            self.text()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }

        /// The service's `LOG_FORMAT=json` subscriber (at `debug`), writing here.
        pub fn json_subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
            super::json_subscriber(tracing_subscriber::EnvFilter::new("debug"), self.clone())
        }
    }
}
