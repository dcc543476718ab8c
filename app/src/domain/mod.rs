//! Domain types. Each one can only be built through a fallible `parse`, so a value that
//! exists is valid: handlers parse once at the edge and the rest of the code trusts the type.

mod device_id;
mod registration;
mod ticket;
mod version;

pub use device_id::DeviceId;
pub use registration::{
    CheckinContext, Decision, MaxUploadsInput, Registration, RegistrationInput, RegistrationSpec,
    Status, UploadLimit, narrowing_excludes,
};
pub use ticket::Ticket;
pub use version::{AppVersion, VersionRange};

/// Why a value from a request was refused. The `code` is the stable, machine-readable part of
/// the API error; the message quotes the value and says what would be valid.
///
/// Two kinds, because the OpenAPI document is exact: a value the schema already rules out
/// (a pattern, a length, a type) is a 400; a request the schema allows but that cannot be
/// carried out as asked (an `expires_at` already past, `"unlimited"` without an expiry, a
/// version range whose minimum is above its maximum) is a 422, documented on the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidInput {
    /// snake_case error code, e.g. `invalid_device_id`.
    pub code: &'static str,
    /// Human text naming the field, the bad value and what would be valid.
    pub message: String,
    /// The schema allows it; the request is refused for what it asks (422).
    pub unprocessable: bool,
}

impl InvalidInput {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            unprocessable: false,
        }
    }

    /// A request the schema allows that cannot be carried out as asked (422).
    pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            unprocessable: true,
        }
    }

    /// The same error with `position: ` before its message.
    pub(crate) fn at(self, position: &str) -> Self {
        Self {
            message: format!("{position}: {}", self.message),
            ..self
        }
    }
}

/// A JSON number that is a whole number (`3.0` is the integer 3, as JSON Schema has it), as
/// an i64 (saturating: out-of-range values stay out of range for the caller's check).
pub fn whole_number(v: f64) -> Option<i64> {
    if !v.is_finite() || v.fract() != 0.0 {
        return None;
    }
    // `as` saturates at the i64 bounds.
    #[allow(clippy::cast_possible_truncation)]
    Some(v as i64)
}

/// Shortens a user-supplied value for quoting in an error message, so a 1 MB string does
/// not come back in a 400 body.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}… ({} chars)", value.chars().count())
    }
}

/// The current time, truncated to milliseconds: MongoDB stores dates in milliseconds, so
/// truncating here makes a registration read back equal to the one written, on either store.
pub fn now() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}
