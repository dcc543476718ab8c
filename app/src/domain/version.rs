use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{InvalidInput, quote};

/// A dotted numeric client version such as `1.4.2` (1 to 4 parts). A pre-release or build
/// suffix (`1.4.2-rc1`, `1.4.2+517`) is kept for display but ignored when comparing, because
/// game builds use it for the build number, not for ordering.
#[derive(Debug, Clone)]
pub struct AppVersion {
    parts: [u32; 4],
    text: String,
}

impl AppVersion {
    /// The OpenAPI pattern of a version an operator sends, which
    /// [`AppVersion::check_operator_form`] checks exactly.
    pub const PATTERN: &str = "^[0-9]{1,9}(\\.[0-9]{1,9}){0,3}([-+][0-9A-Za-z.+-]*)?$";
    /// Longest version an operator may send.
    pub const MAX_LEN: usize = 64;

    /// Parses `MAJOR[.MINOR[.PATCH[.BUILD]]][-suffix|+suffix]` (any suffix: clients send
    /// what they send, and a stored range must always read back).
    pub fn parse(value: &str) -> Result<Self, InvalidInput> {
        let invalid = || {
            InvalidInput::new(
                "invalid_version",
                format!(
                    "version {} is not a dotted number like 1.4.2 (1 to 4 numeric parts, optional -suffix)",
                    quote(value)
                ),
            )
        };
        let numeric = value.split(['-', '+']).next().unwrap_or_default();
        let mut parts = [0u32; 4];
        for (count, piece) in numeric.split('.').enumerate() {
            if count == 4 || piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            parts[count] = piece.parse().map_err(|_| invalid())?;
        }
        Ok(Self {
            parts,
            text: value.to_owned(),
        })
    }

    /// Whether the version, as an operator sent it, has the documented form
    /// ([`Self::PATTERN`]: 1 to 4 parts of 1 to 9 digits, a suffix of letters, digits and
    /// `.+-`, at most 64 characters).
    pub fn check_operator_form(&self, field: &str) -> Result<(), InvalidInput> {
        let text = &self.text;
        let numeric = text.split(['-', '+']).next().unwrap_or_default();
        let suffix = &text[numeric.len()..];
        let ok = text.len() <= Self::MAX_LEN
            && numeric.split('.').all(|p| (1..=9).contains(&p.len()))
            && suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'));
        if ok {
            Ok(())
        } else {
            Err(InvalidInput::new(
                "invalid_version",
                format!(
                    "{field} {} must be 1 to 4 parts of 1 to 9 digits with an optional -suffix or +suffix of letters, digits and .+- (at most {} characters), like 1.4.2-rc1",
                    quote(text),
                    Self::MAX_LEN
                ),
            ))
        }
    }
}

impl PartialEq for AppVersion {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}
impl Eq for AppVersion {}
impl PartialOrd for AppVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for AppVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl fmt::Display for AppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for AppVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for AppVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of client versions; either end may be open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionRange {
    /// Lowest version that uploads (inclusive), e.g. `1.4.0`.
    #[schema(value_type = Option<String>, example = "1.4.0", max_length = 64, pattern = "^[0-9]{1,9}(\\.[0-9]{1,9}){0,3}([-+][0-9A-Za-z.+-]*)?$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<AppVersion>,
    /// Highest version that uploads (inclusive), e.g. `1.4.99`. Below `min`: 422.
    #[schema(value_type = Option<String>, example = "1.4.99", max_length = 64, pattern = "^[0-9]{1,9}(\\.[0-9]{1,9}){0,3}([-+][0-9A-Za-z.+-]*)?$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<AppVersion>,
}

/// What a range is read from: an object only (serde would also read a struct from an
/// array, by position, which the API does not allow).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    #[serde(default)]
    min: Option<AppVersion>,
    #[serde(default)]
    max: Option<AppVersion>,
}

impl<'de> Deserialize<'de> for VersionRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = VersionRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with min and/or max")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<VersionRange, A::Error> {
                let raw = RawRange::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(VersionRange {
                    min: raw.min,
                    max: raw.max,
                })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl VersionRange {
    /// Refuses ends that do not have the documented form ([`AppVersion::PATTERN`]).
    pub fn check_form(&self) -> Result<(), InvalidInput> {
        if let Some(min) = &self.min {
            min.check_operator_form("app_version.min")?;
        }
        if let Some(max) = &self.max {
            max.check_operator_form("app_version.max")?;
        }
        Ok(())
    }

    /// Refuses a range whose minimum is above its maximum.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        self.check_form()?;
        match (&self.min, &self.max) {
            (Some(min), Some(max)) if min > max => Err(InvalidInput::unprocessable(
                "invalid_version_range",
                format!("app_version.min {min} is above app_version.max {max}; swap them"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `version` lies in the range. A client that sent no version, or one that does
    /// not parse, is outside any bounded range: the operator asked for specific builds.
    pub fn contains(&self, version: Option<&str>) -> bool {
        if self.min.is_none() && self.max.is_none() {
            return true;
        }
        let Some(version) = version.and_then(|v| AppVersion::parse(v).ok()) else {
            return false;
        };
        self.min.as_ref().is_none_or(|min| &version >= min)
            && self.max.as_ref().is_none_or(|max| &version <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> AppVersion {
        AppVersion::parse(s).unwrap()
    }

    #[test]
    fn compares_numerically_not_lexically() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("2") > v("1.99.99"));
        assert_eq!(v("1.4"), v("1.4.0"));
        assert_eq!(v("1.4.2-rc1"), v("1.4.2"));
        assert_eq!(v("1.4.2+517").to_string(), "1.4.2+517");
    }

    #[test]
    fn refuses_what_is_not_a_version() {
        for bad in ["", "a.b", "1..2", "1.2.3.4.5", "v1.2", "99999999999"] {
            let err = AppVersion::parse(bad).unwrap_err();
            assert_eq!(err.code, "invalid_version", "{bad}");
        }
    }

    #[test]
    fn range_is_inclusive_and_strict_about_unknown_versions() {
        let range = VersionRange {
            min: Some(v("1.4")),
            max: Some(v("1.5.2")),
        };
        assert!(range.contains(Some("1.4.0")));
        assert!(range.contains(Some("1.5.2")));
        assert!(!range.contains(Some("1.5.3")));
        assert!(!range.contains(Some("1.3.9")));
        assert!(!range.contains(None));
        assert!(!range.contains(Some("garbage")));
        let open = VersionRange {
            min: None,
            max: None,
        };
        assert!(open.contains(None));
    }

    #[test]
    fn an_operator_s_range_has_the_documented_form() {
        for bad in [
            "1.2-rc 1",
            "1.2-rc/1",
            "1234567890",
            &format!("1.2-{}", "a".repeat(70)),
        ] {
            let range = VersionRange {
                min: Some(v(bad)),
                max: None,
            };
            assert_eq!(
                range.validate().unwrap_err().code,
                "invalid_version",
                "{bad}"
            );
        }
        for ok in ["1", "1.4.2", "1.4.2-rc.1+517", "999999999.0.0.1"] {
            let range = VersionRange {
                min: Some(v(ok)),
                max: None,
            };
            assert!(range.validate().is_ok(), "{ok}");
        }
    }

    #[test]
    fn inverted_range_is_refused() {
        let range = VersionRange {
            min: Some(v("2.0")),
            max: Some(v("1.0")),
        };
        assert_eq!(range.validate().unwrap_err().code, "invalid_version_range");
    }
}
