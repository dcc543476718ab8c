//! The access-log line: one per request (`ACCESS_LOG=all`) or per 4xx/5xx answer (`errors`).
//!
//! With `LOG_FORMAT=json` and the service's own subscriber in charge, the line is written
//! straight into the log writer's queue, byte for byte what the `tracing` event would have
//! made (the parity test below holds the two together), without the event's trip through the
//! dispatcher: its field visitor, the span look-up through the registry and the extensions'
//! lock. During the spike that trip was about a tenth of a check-in's CPU (BENCHMARKS.md).
//! Everywhere else — text logs, a subscriber a test installed — the line is a `tracing` event
//! as before. Either way `LOG_LEVEL` decides as it does for every line: the line is the
//! `info` event of [`TARGET`].

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing::{Level, Span};
use tracing_appender::non_blocking::NonBlocking;

use super::json;

macro_rules! target {
    () => {
        "controltower::telemetry::http"
    };
}

/// The target of the access-log line, kept from when it was logged in the request layer: it
/// is what a `LOG_LEVEL` directive names (`controltower::telemetry::http=warn`).
pub const TARGET: &str = target!();

/// The line's `target` member (the target has nothing to escape).
const TARGET_MEMBER: &str = concat!(",\"target\":\"", target!(), "\"");

/// The type of the subscriber `init_tracing` installs for `LOG_FORMAT=json` (writing to the
/// log writer's queue; the same subscriber writing elsewhere is another type).
type ServiceJson = super::JsonSubscriber<NonBlocking>;

/// The log writer of the installed [`ServiceJson`] subscriber.
static DIRECT: OnceLock<NonBlocking> = OnceLock::new();

/// Lets access-log lines go straight to `writer`, the writer of the [`ServiceJson`]
/// subscriber just installed as the global default.
pub(super) fn write_directly_to(writer: NonBlocking) {
    // Only the first installation succeeds, so there is only ever one such writer.
    let _ = DIRECT.set(writer);
}

/// One access-log line's fields (the request id is the span's).
#[derive(Debug, Clone, Copy)]
pub(super) struct Access<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_ms: f64,
}

/// Logs `access` in `span`, the request's span, whose `request_id` field is `request_id`.
pub(super) fn log(span: &Span, request_id: &str, access: &Access<'_>) {
    if !tracing::enabled!(target: TARGET, Level::INFO) {
        return;
    }
    match direct_writer() {
        Some(writer) => {
            // The span is disabled when `LOG_LEVEL` leaves it out; the event then has none.
            let request_id = (!span.is_disabled()).then_some(request_id);
            write_line(writer, request_id, access);
        }
        None => span.in_scope(|| {
            tracing::info!(
                target: TARGET,
                method = access.method,
                route = access.route,
                status = access.status,
                latency_ms = access.latency_ms,
                "request"
            );
        }),
    }
}

/// The writer to put the line in directly, when the subscriber in charge here is the
/// service's JSON one (not, say, a test's scoped subscriber).
fn direct_writer() -> Option<&'static NonBlocking> {
    DIRECT
        .get()
        .filter(|_| tracing::dispatcher::get_default(|d| d.is::<ServiceJson>()))
}

/// Formats the line in this thread's buffer and queues it, as the fmt layer does with its own.
fn write_line(writer: &NonBlocking, request_id: Option<&str>, access: &Access<'_>) {
    thread_local! {
        static LINE: RefCell<(String, Option<NonBlocking>)> = const { RefCell::new((String::new(), None)) };
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        let (text, queue) = &mut *line;
        text.clear();
        if format(text, std::time::SystemTime::now(), request_id, access).is_err() {
            return;
        }
        // Queued whole, as one line; an error means the writer thread is gone (shutdown), and
        // the fmt layer drops its line then too.
        let _ = queue
            .get_or_insert_with(|| writer.clone())
            .write_all(text.as_bytes());
    });
}

/// The line `json::JsonLine` makes of the access-log event: timestamp, level, the event's
/// fields in their order, target, and the request span's fields with its name.
fn format(
    out: &mut String,
    now: std::time::SystemTime,
    request_id: Option<&str>,
    access: &Access<'_>,
) -> std::fmt::Result {
    out.write_str("{\"timestamp\":\"")?;
    json::timestamp(out, now)?;
    out.write_str("\",\"level\":\"INFO\",\"message\":\"request\",\"method\":")?;
    json::string(out, access.method)?;
    out.write_str(",\"route\":")?;
    json::string(out, access.route)?;
    out.write_str(",\"status\":")?;
    match access.status {
        // Every HTTP status has three digits.
        status @ 100..=999 => {
            for digit in [status / 100, status / 10 % 10, status % 10] {
                out.push(char::from(b'0' + digit as u8));
            }
        }
        other => write!(out, "{other}")?,
    }
    out.write_str(",\"latency_ms\":")?;
    json::number(out, access.latency_ms)?;
    out.write_str(TARGET_MEMBER)?;
    if let Some(request_id) = request_id {
        out.write_str(",\"span\":{\"request_id\":")?;
        json::string(out, request_id)?;
        out.write_str(",\"name\":\"request\"}")?;
    }
    out.write_str("}\n")
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::telemetry::captured::Captured;

    /// The text of a line from `"level"` on (the timestamps of two lines differ).
    fn after_timestamp(line: &str) -> &str {
        let at = line.find("\"level\"").expect("a level");
        &line[at..]
    }

    #[test]
    fn the_written_line_is_the_line_of_the_event() {
        let cases = [
            (
                "POST",
                "/v1/checkin",
                200,
                0.081_922_000_000_000_01,
                "1fc1330f-ce75",
            ),
            ("GET", "unmatched", 404, 12.5, "trace-42"),
            // Text that needs escaping, a latency serde_json writes as null, a status of 5xx.
            (
                "DELETE",
                "/v1/devices/{id}",
                503,
                f64::NAN,
                "quote \" tab \t nul \u{0} é",
            ),
            ("PUT", "/", 500, 1e-7, "-"),
            // Not from HTTP, but the line stays right: a method to escape, a two-digit status.
            ("M\"X", "/", 42, 1.0, "x"),
        ];
        for (method, route, status, latency_ms, request_id) in cases {
            let access = Access {
                method,
                route,
                status,
                latency_ms,
            };
            let events = Captured::default();
            tracing::subscriber::with_default(events.json_subscriber(), || {
                let span = tracing::info_span!("request", request_id);
                span.in_scope(|| {
                    tracing::info!(
                        target: TARGET,
                        method,
                        route,
                        status,
                        latency_ms,
                        "request"
                    );
                });
            });
            let mut ours = String::new();
            format(
                &mut ours,
                std::time::SystemTime::now(),
                Some(request_id),
                &access,
            )
            .unwrap();
            let theirs = events.text();
            assert_eq!(after_timestamp(&ours), after_timestamp(&theirs));
            assert!(ours.ends_with('\n') && ours.matches('\n').count() == 1);
            let parsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(parsed["span"]["request_id"], request_id);
            assert_eq!(parsed["status"], status);
        }
    }

    #[test]
    fn without_the_span_the_line_has_no_span_member() {
        let events = Captured::default();
        tracing::subscriber::with_default(events.json_subscriber(), || {
            tracing::info!(
                target: TARGET,
                method = "GET",
                route = "/healthz",
                status = 200u16,
                latency_ms = 0.5,
                "request"
            );
        });
        let access = Access {
            method: "GET",
            route: "/healthz",
            status: 200,
            latency_ms: 0.5,
        };
        let mut ours = String::new();
        format(&mut ours, std::time::SystemTime::now(), None, &access).unwrap();
        assert_eq!(after_timestamp(&ours), after_timestamp(&events.text()));
        assert!(!ours.contains("\"span\""));
    }

    #[test]
    fn under_the_service_subscriber_the_line_is_written_directly_in_order_and_filtered() {
        let captured = Captured::default();
        let (writer, flushed) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(captured.clone());
        write_directly_to(writer.clone());
        let access = Access {
            method: "POST",
            route: "/v1/checkin",
            status: 200,
            latency_ms: 0.25,
        };
        let service =
            |filter: &str| super::super::json_subscriber(EnvFilter::new(filter), writer.clone());
        let request = |request_id: &str| {
            let span = tracing::info_span!("request", request_id);
            span.in_scope(|| tracing::info!("handled"));
            log(&span, request_id, &access);
        };
        tracing::subscriber::with_default(service("info"), || {
            assert!(
                direct_writer().is_some(),
                "the service's subscriber is written to directly"
            );
            request("first");
            tracing::info!("after");
        });
        // `LOG_LEVEL` still decides: the line's target turned down, then everything but warnings.
        tracing::subscriber::with_default(
            service("info,controltower::telemetry::http=warn"),
            || {
                request("second");
            },
        );
        tracing::subscriber::with_default(service("warn"), || request("third"));
        // Any other subscriber gets an event, not the service's writer.
        tracing::subscriber::with_default(Captured::default().json_subscriber(), || {
            assert!(direct_writer().is_none());
        });
        drop(flushed);

        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        let messages: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].clone())
            .collect();
        assert_eq!(
            messages,
            ["handled", "request", "after", "handled"],
            "{text}"
        );
        let mut expected = String::new();
        format(
            &mut expected,
            std::time::SystemTime::now(),
            Some("first"),
            &access,
        )
        .unwrap();
        assert_eq!(
            after_timestamp(lines[1]),
            after_timestamp(expected.trim_end())
        );
    }

    #[test]
    fn a_test_subscriber_still_gets_the_line_as_an_event() {
        // The written path is for the service's own subscriber only; under any other the
        // line is an event that subscriber sees (and formats its own way).
        let events = Captured::default();
        tracing::subscriber::with_default(events.json_subscriber(), || {
            let span = tracing::info_span!("request", request_id = "abc");
            let access = Access {
                method: "GET",
                route: "/",
                status: 200,
                latency_ms: 1.0,
            };
            log(&span, "abc", &access);
        });
        let lines = events.json();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "request");
        assert_eq!(lines[0]["span"]["request_id"], "abc");
    }
}
