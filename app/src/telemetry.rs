//! Logs and metrics, in one place: the tracing subscriber, the request middleware (request
//! id, one log line and the HTTP metrics per request), and every metric the service emits.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::registry::Registry;

/// Installs the global tracing subscriber. Calling it twice is harmless (tests do).
pub fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
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

/// Prometheus text of every metric, with the snapshot gauges brought up to date.
pub fn render(registry: &Registry) -> String {
    metrics::gauge!("controltower_snapshot_registrations").set(registry.len() as f64);
    let age = registry.age().map_or(f64::NAN, |a| a.as_secs_f64());
    metrics::gauge!("controltower_snapshot_age_seconds").set(age);
    prometheus().render()
}

/// Counts a check-in by what it was told (`upload`, `no_upload`) or how it failed.
pub fn checkin(outcome: &'static str, from_snapshot: bool) {
    let source = if from_snapshot {
        "snapshot"
    } else {
        "database"
    };
    metrics::counter!("controltower_checkins_total", "outcome" => outcome, "source" => source)
        .increment(1);
}

/// Counts a completed upload.
pub fn upload_completed(first_time: bool) {
    let kind = if first_time { "counted" } else { "repeat" };
    metrics::counter!("controltower_uploads_completed_total", "kind" => kind).increment(1);
}

/// Records a snapshot reload.
pub fn snapshot_reloaded(active: usize, took: Duration) {
    metrics::counter!("controltower_snapshot_reloads_total").increment(1);
    metrics::histogram!("controltower_snapshot_reload_duration_seconds").record(took.as_secs_f64());
    metrics::gauge!("controltower_snapshot_registrations").set(active as f64);
}

/// Per request: a span carrying the request id, one log line, and the HTTP metrics.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let span = tracing::info_span!("request", request_id = %request_id);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let took = started.elapsed();
    span.in_scope(|| {
        tracing::info!(
            method = %method,
            route = %route,
            status,
            latency_ms = took.as_secs_f64() * 1000.0,
            "request"
        );
    });
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("controltower_http_requests_total", &labels).increment(1);
    metrics::histogram!("controltower_http_request_duration_seconds", &labels[..2])
        .record(took.as_secs_f64());
    response
}
