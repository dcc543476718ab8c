//! Durations as kubectl and helm users type them (`90s`, `1m30s`, `500ms`, `2h`), also in
//! ISO 8601 (`PT10M`), by jiff's parser; a bare number is seconds, as before.

use jiff::SignedDuration;

/// Parses a duration; negative ones are refused.
pub fn parse(text: &str) -> Result<SignedDuration, String> {
    let trimmed = text.trim();
    let parsed = match trimmed.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => SignedDuration::try_from_secs_f64(seconds).ok(),
        _ => trimmed.parse::<SignedDuration>().ok(),
    };
    match parsed {
        Some(d) if !d.is_negative() => Ok(d),
        Some(_) => Err(format!("{text:?} is negative")),
        None => Err(format!(
            "{text:?} is not a duration like 500ms, 90s, 1m30s or 2h"
        )),
    }
}

/// [`parse`], as a `std` duration (command-line flags).
pub fn parse_std(text: &str) -> Result<std::time::Duration, String> {
    let d = parse(text)?;
    std::time::Duration::try_from(d).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_forms_kubectl_and_helm_users_type_and_the_old_ones() {
        for (text, want) in [
            ("90s", Duration::from_secs(90)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("2h", Duration::from_secs(7200)),
            ("1h30m", Duration::from_secs(5400)),
            ("10m", Duration::from_secs(600)),
            ("PT10M", Duration::from_secs(600)),
            ("600", Duration::from_secs(600)),
            ("1.5s", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse_std(text), Ok(want), "{text}");
        }
        for bad in ["soon", "10 parsecs", "-5s", ""] {
            assert!(parse_std(bad).is_err(), "{bad}");
        }
    }
}
