//! The JSON log line, written straight into the line buffer.
//!
//! Same output as `tracing_subscriber`'s JSON format with `flatten_event(true)`,
//! `with_current_span(true)` and `with_span_list(false)` — `timestamp`, `level`, the event's
//! fields in order, `target`, then `span` with the current span's fields and `name` — but
//! without its per-line detours: that formatter parses the span's fields back from their JSON
//! text into a `serde_json::Value` for every line, and builds each value through serde. Here
//! the span's fields (already JSON, stored by [`SpanFields`] when the span was made) are copied
//! as they are. One access-log line per request makes this part of every check-in's cost.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of `LOG_FORMAT=json`.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            let stored = extensions
                .get::<FormattedFields<N>>()
                .map(|f| f.fields.as_str())
                .unwrap_or_default();
            // `{"a":1,"b":"x"}` (or empty when the span has no field): the members as they are.
            let members = stored
                .trim()
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or_default();
            if !members.is_empty() {
                writer.write_str(members)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// `2026-12-01T15:40:13.123456Z`: the time as `tracing_subscriber`'s `SystemTime` writes it
/// (UTC, six fractional digits), with the part up to the second formatted once a second per
/// thread rather than digit by digit through `fmt` for every line.
pub(super) fn timestamp(out: &mut impl fmt::Write, now: std::time::SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| fmt::Error)?;
    let seconds = since.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != seconds {
        let at = i64::try_from(seconds)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or(fmt::Error)?;
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
        // Years after 9999 do not fit; they are not cached (and not expected).
        let Ok(bytes) = <[u8; 19]>::try_from(text.as_bytes()) else {
            return write!(out, "{text}.{:06}Z", since.subsec_micros());
        };
        prefix = bytes;
        SECOND.set((seconds, prefix));
    }
    let mut micros = since.subsec_micros();
    let mut fraction = *b".000000Z";
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
    out.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

/// The span fields of `LOG_FORMAT=json`, stored once when a span is made and copied into each
/// of its lines: the text `JsonFields` stores (`{"a":1,"b":"x"}`, keys in order, a later value
/// of a key replacing the earlier), written directly instead of through a map of
/// `serde_json::Value`s and a serializer — every check-in makes one such span.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        thread_local! {
            static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
        }
        // Almost every span's fields come in key order and once each (the request span has
        // one): they are written as they come, into this thread's buffer, then copied once
        // into the span's own text — no map, no sort, no text per value, no regrowing.
        let in_order = SCRATCH.with(|scratch| {
            let mut text = scratch.try_borrow_mut().ok()?;
            text.clear();
            let mut in_order = Visitor(InOrder {
                out: &mut text,
                last: None,
                ok: true,
            });
            fields.record(&mut in_order);
            in_order.0.finish()?;
            Some(writer.write_str(&text))
        });
        if let Some(written) = in_order {
            return written;
        }
        // Otherwise (keys out of order, a key twice, a value that failed to format): gathered,
        // sorted, the last value of a key kept.
        let mut collected = Visitor(Collected::default());
        fields.record(&mut collected);
        collected.0.write(&mut writer)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Rare (fields recorded after the span was made): the stored object is read back and
        // merged, as `JsonFields` does.
        let mut collected = Visitor(Collected::default());
        if !current.fields.is_empty() {
            let stored: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&current.fields).map_err(|_| fmt::Error)?;
            for (name, value) in stored {
                collected.0.insert(Cow::Owned(name), value.to_string());
            }
        }
        fields.record(&mut collected);
        let mut merged = String::new();
        collected.0.write(&mut merged)?;
        current.fields = merged;
        Ok(())
    }
}

/// Span fields by name, each value already JSON text.
#[derive(Default)]
struct Collected(Vec<(Cow<'static, str>, String)>);

impl Collected {
    fn insert(&mut self, name: Cow<'static, str>, value: String) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn write(mut self, out: &mut impl fmt::Write) -> fmt::Result {
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        out.write_char('{')?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            string(out, name)?;
            out.write_char(':')?;
            out.write_str(value)?;
        }
        out.write_char('}')
    }
}

/// Where span fields go: each one's name, and what writes its value as JSON text.
trait PutField {
    fn put(&mut self, name: &'static str, value: impl FnOnce(&mut String) -> fmt::Result);
}

impl PutField for Collected {
    fn put(&mut self, name: &'static str, value: impl FnOnce(&mut String) -> fmt::Result) {
        let mut text = String::new();
        if value(&mut text).is_ok() {
            self.insert(Cow::Borrowed(name), text);
        }
    }
}

/// Span fields written as they come while their keys rise; gives up (`ok` false) at the first
/// key that does not, or a value that fails to format.
struct InOrder<'a> {
    out: &'a mut String,
    last: Option<&'static str>,
    ok: bool,
}

impl InOrder<'_> {
    /// Closes the object; `None` when the fields have to be gathered and sorted instead.
    fn finish(self) -> Option<()> {
        if !self.ok {
            return None;
        }
        if self.last.is_none() {
            self.out.push('{');
        }
        self.out.push('}');
        Some(())
    }
}

impl PutField for InOrder<'_> {
    fn put(&mut self, name: &'static str, value: impl FnOnce(&mut String) -> fmt::Result) {
        if !self.ok {
            return;
        }
        let opening = match self.last {
            None => '{',
            Some(last) if last < name => ',',
            Some(_) => {
                self.ok = false;
                return;
            }
        };
        self.out.push(opening);
        self.ok = string(self.out, name).is_ok() && {
            self.out.push(':');
            value(self.out).is_ok()
        };
        self.last = Some(name);
    }
}

/// What `JsonFields`' visitor makes of each kind of value, handed to `P`.
struct Visitor<P>(P);

impl<P: PutField> Visit for Visitor<P> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field.name(), |w| number(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field.name(), |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.put(field.name(), |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field.name(), |w| {
            w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field.name(), |w| string(w, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.0.put(field.name(), |w| {
            w.write_char('[')?;
            for (i, byte) in value.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write!(w, "{byte}")?;
            }
            w.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // `log.*` fields are the metadata of `log` records, already in the line.
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.0.put(name, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// Writes each field as `,"name":value`, as `tracing_serde`'s map visitor serializes it.
struct Fields<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_char(',')?;
        string(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.out));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| number(w, value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A JSON number as serde_json renders an `f64` (shortest round-trip digits; NaN and
/// infinities as null).
pub(super) fn number(out: &mut impl fmt::Write, value: f64) -> fmt::Result {
    match serde_json::Number::from_f64(value) {
        Some(number) => write!(out, "{number}"),
        None => out.write_str("null"),
    }
}

/// A JSON string, escaped as serde_json escapes it.
pub(super) fn string(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string: `"` `\` and control characters,
/// like serde_json (`\b \f \n \r \t`, `\u00XX` for the other controls; nothing else).
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        // Almost every string of a log line needs no escape: one table look-up per byte
        // (serde_json's way), and the clean runs in between are written whole.
        for (i, &byte) in bytes.iter().enumerate() {
            let escape = ESCAPE[usize::from(byte)];
            if escape == 0 {
                continue;
            }
            self.0.write_str(&s[start..i])?;
            match escape {
                b'u' => write!(self.0, "\\u{byte:04x}")?,
                short => {
                    self.0.write_char('\\')?;
                    self.0.write_char(char::from(short))?;
                }
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// For each byte: 0 (written as it is), the letter of its short escape (`\n` → `n`, `"` → `"`),
/// or `u` for `\u00XX` — the escapes serde_json writes.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::captured::Captured;

    /// The lines a few events make, timestamps cut out.
    fn lines(
        subscriber: impl Subscriber + Send + Sync + 'static,
        buffer: &Captured,
    ) -> Vec<String> {
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("plain message");
            let span = tracing::info_span!("request", request_id = %"abc-123", n = 7u64);
            span.in_scope(|| {
                tracing::info!(
                    method = %"POST",
                    route = "/v1/checkin",
                    status = 200u16,
                    latency_ms = 0.10330299999999999,
                    ok = true,
                    delta = -3i64,
                    nan = f64::NAN,
                    "request"
                );
                tracing::warn!(error = %"quote \" backslash \\ newline \n tab \t bell \u{7} cr \r bs \u{8} ff \u{c} us \u{1f} del \u{7f} nul \u{0}", "odd text: ünïcode");
                let inner = tracing::info_span!("inner");
                inner.in_scope(|| tracing::debug!(value = ?Some(3), "in a span without fields"));
            });
            // Every kind of span field, keys out of order, a raw identifier, fields recorded
            // later (one new, one replacing a value), and a span whose only field comes later.
            let kinds = tracing::info_span!(
                "kinds",
                zeta = 1.5f64,
                alpha = -2i64,
                r#type = ?"raw",
                flag = false,
                text = "tab \t \"quoted\"",
                big = u64::MAX,
                infinite = f64::INFINITY,
                later = tracing::field::Empty,
                again = tracing::field::Empty,
            );
            kinds.record("later", "set afterwards");
            kinds.record("again", 1u64);
            kinds.record("again", 2u64);
            kinds.in_scope(|| tracing::info!("in a span with every kind of field"));
            // Keys in order, as almost every span has them (written as they come), one kind each.
            let ordered = tracing::info_span!(
                "ordered",
                a_flag = true,
                b_float = 0.25f64,
                c_int = -1i64,
                d_text = "a \"quote\"",
                e_debug = ?Some("x"),
                f_count = 3u64,
            );
            ordered.in_scope(|| tracing::info!("in a span whose keys come in order"));
            let single = tracing::info_span!("request", request_id = "7f0c-é");
            single.in_scope(|| tracing::info!("in a span of one field"));
            let empty = tracing::info_span!("empty", only = tracing::field::Empty);
            empty.record("only", true);
            empty.in_scope(|| tracing::info!("in a span whose field came later"));
        });
        let text = buffer.text();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{l}");
                let at = l.find("\"level\"").unwrap();
                l[at..].to_owned()
            })
            .collect()
    }

    #[test]
    fn timestamps_are_utc_with_six_fractional_digits_at_any_time() {
        use std::time::{Duration, UNIX_EPOCH};
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        let mut seconds = 0u64;
        // From 1970 to 9999, through month ends, leap days and the same second twice (the cache).
        while seconds < 253_402_300_799 {
            for nanos in [0, 1_000, 999_999_999, 123_456_789] {
                let at = UNIX_EPOCH + Duration::new(seconds, nanos);
                let mut ours = String::new();
                timestamp(&mut ours, at).unwrap();
                let expected = time::OffsetDateTime::from(at).format(&format).unwrap();
                assert_eq!(ours, expected, "{seconds}s {nanos}ns");
            }
            seconds = seconds * 3 / 2 + 86_399;
        }
    }

    #[test]
    fn timestamps_read_like_those_of_tracing_subscriber() {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        // The two are read one after the other: they agree to the second unless a second
        // boundary falls between them, so a few tries settle it.
        let agreed = (0..5).any(|_| {
            let mut theirs = String::new();
            SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            let mut ours = String::new();
            timestamp(&mut ours, std::time::SystemTime::now()).unwrap();
            ours.len() == theirs.len() && ours[..19] == theirs[..19]
        });
        assert!(agreed);
    }

    #[test]
    fn lines_are_those_of_the_tracing_subscriber_json_format() {
        let ours = Captured::default();
        let theirs = Captured::default();
        let fast = ours.json_subscriber();
        let reference = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(theirs.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        let ours = lines(fast, &ours);
        let theirs = lines(reference, &theirs);
        assert_eq!(ours.len(), 8);
        assert_eq!(ours, theirs);
    }
}
