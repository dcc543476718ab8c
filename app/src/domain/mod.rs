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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidInput {
    /// snake_case error code, e.g. `invalid_device_id`.
    pub code: &'static str,
    /// Human text naming the field, the bad value and what would be valid.
    pub message: String,
}

impl InvalidInput {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
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
