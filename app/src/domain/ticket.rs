use std::fmt;

use super::{InvalidInput, quote};

/// An upload ticket: 128 random bits in lowercase hex. It is the only credential the public
/// upload-completion endpoint accepts, so it must be unguessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ticket(String);

impl Ticket {
    /// A fresh random ticket.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Parses a ticket from a URL path segment.
    pub fn parse(value: &str) -> Result<Self, InvalidInput> {
        if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(value.to_ascii_lowercase()))
        } else {
            Err(InvalidInput::new(
                "invalid_ticket",
                format!(
                    "ticket {} is not a ticket this service issued (32 hex characters)",
                    quote(value)
                ),
            ))
        }
    }

    /// The ticket as it appears in URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tickets_parse_back_and_differ() {
        let a = Ticket::generate();
        let b = Ticket::generate();
        assert_ne!(a, b);
        assert_eq!(Ticket::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn foreign_strings_are_refused() {
        assert_eq!(Ticket::parse("abc").unwrap_err().code, "invalid_ticket");
        assert!(Ticket::parse(&"g".repeat(32)).is_err());
    }
}
