use std::fmt;

use super::{InvalidInput, quote};

/// The id a game client sends: 1–128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 128;

    /// Parses a device id, refusing anything outside the documented alphabet and length.
    pub fn parse(value: &str) -> Result<Self, InvalidInput> {
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(InvalidInput::new(
                "invalid_device_id",
                format!(
                    "device_id {} must be 1 to {} characters long (it has {})",
                    quote(value),
                    Self::MAX_LEN,
                    value.chars().count()
                ),
            ));
        }
        if let Some(bad) = value.chars().find(|c| !Self::is_allowed(*c)) {
            return Err(InvalidInput::new(
                "invalid_device_id",
                format!(
                    "device_id {} contains {bad:?}; only letters, digits and . _ : - are allowed",
                    quote(value)
                ),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    fn is_allowed(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
    }

    /// The id as sent by the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "A-z_0.9:x", &"x".repeat(128)] {
            assert_eq!(
                DeviceId::parse(ok).map(|d| d.to_string()).as_deref(),
                Ok(ok)
            );
        }
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters_with_the_reason() {
        let empty = DeviceId::parse("").unwrap_err();
        assert_eq!(empty.code, "invalid_device_id");
        assert!(empty.message.contains("1 to 128"), "{}", empty.message);

        let long = DeviceId::parse(&"x".repeat(129)).unwrap_err();
        assert!(long.message.contains("it has 129"), "{}", long.message);

        let space = DeviceId::parse("dev ice").unwrap_err();
        assert!(space.message.contains("' '"), "{}", space.message);

        let unicode = DeviceId::parse("appareil-é").unwrap_err();
        assert!(unicode.message.contains("'é'"), "{}", unicode.message);
    }
}
