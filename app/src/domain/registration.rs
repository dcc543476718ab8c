use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::{DeviceId, InvalidInput, VersionRange, quote};

/// Where a registration is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Matching check-ins are told to upload.
    Active,
    /// It received the uploads it asked for.
    Fulfilled,
    /// `expires_at` passed.
    Expired,
    /// An operator deleted it.
    Revoked,
}

impl Status {
    /// Every status, in the order the API documents them.
    pub const ALL: [Status; 4] = [
        Status::Active,
        Status::Fulfilled,
        Status::Expired,
        Status::Revoked,
    ];

    /// The wire name (`active`, `fulfilled`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Fulfilled => "fulfilled",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = InvalidInput;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| {
                InvalidInput::new(
                    "invalid_status",
                    format!(
                        "status {} is not one of active, fulfilled, expired, revoked",
                        quote(value)
                    ),
                )
            })
    }
}

/// How many uploads a registration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadLimit {
    /// Upload on the next N matching check-ins that complete an upload (1 = upload once).
    Count(u32),
    /// Upload at every matching check-in until `expires_at`.
    UntilExpiry,
}

impl UploadLimit {
    /// Largest accepted count; above that an operator means "until expiry".
    pub const MAX_COUNT: u32 = 1000;

    /// Whether `uploads` completed uploads satisfy the limit.
    pub fn is_reached_by(self, uploads: u32) -> bool {
        match self {
            UploadLimit::Count(max) => uploads >= max,
            UploadLimit::UntilExpiry => false,
        }
    }
}

impl Serialize for UploadLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            UploadLimit::Count(n) => serializer.serialize_u32(*n),
            UploadLimit::UntilExpiry => serializer.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for UploadLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match MaxUploadsInput::deserialize(deserializer)? {
            MaxUploadsInput::Count(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .map(UploadLimit::Count)
                .ok_or_else(|| serde::de::Error::custom("max_uploads must be at least 1")),
            MaxUploadsInput::Word(w) if w == "unlimited" => Ok(UploadLimit::UntilExpiry),
            MaxUploadsInput::Word(w) => Err(serde::de::Error::custom(format!(
                "max_uploads {w:?} is neither a number nor \"unlimited\""
            ))),
        }
    }
}

/// `max_uploads` as sent: a number, or the word `"unlimited"` (every check-in until
/// `expires_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MaxUploadsInput {
    /// Number of uploads wanted (1 to 1000).
    Count(i64),
    /// `"unlimited"`: upload at every matching check-in until `expires_at`.
    Word(String),
}

impl<'de> Deserialize<'de> for MaxUploadsInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MaxUploadsInput;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number or \"unlimited\"")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(MaxUploadsInput::Count(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(MaxUploadsInput::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            // JSON has one number type: 3.0 is the integer 3 (as JSON Schema says).
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                match super::whole_number(v) {
                    Some(n) => Ok(MaxUploadsInput::Count(n)),
                    None => Err(E::custom(format!("max_uploads {v} is not a whole number"))),
                }
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaxUploadsInput::Word(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl utoipa::PartialSchema for MaxUploadsInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(UploadLimit::MAX_COUNT))
                    .description(Some("Number of uploads wanted.")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["unlimited"]))
                    .description(Some(
                        "Upload at every matching check-in until `expires_at` (which it needs: else 422).",
                    )),
            )
            .description(Some("Uploads wanted (default 1), or \"unlimited\"."))
            .into()
    }
}

impl ToSchema for MaxUploadsInput {}

/// A registration as an operator sends it (PUT body, batch item). Dates are RFC 3339
/// strings; they are parsed by [`RegistrationSpec::parse`] so a bad one gets a precise error.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationInput {
    /// Why the logs are wanted (shown to the client and in the audit log). Required: at
    /// most 500 characters, not only blanks; surrounding blanks are dropped.
    #[schema(
        example = "crash on boss 3 without traceback, JIRA GAME-1234",
        min_length = 1,
        max_length = 500,
        pattern = "[^\\x00-\\x20]"
    )]
    pub reason: String,
    /// Reference to the ticket in the team's tracker (at most 200 characters).
    #[serde(default)]
    #[schema(example = "GAME-1234", max_length = 200)]
    pub ticket_ref: Option<String>,
    /// RFC 3339 time after which the registration stops asking for uploads. One already
    /// past is refused with 422 (`invalid_date`): the registration would never ask.
    #[serde(default)]
    #[schema(example = "2027-01-15T00:00:00Z", format = DateTime)]
    pub expires_at: Option<String>,
    /// Number of uploads wanted (default 1), or `"unlimited"` (needs `expires_at`).
    #[serde(default)]
    pub max_uploads: Option<MaxUploadsInput>,
    /// RFC 3339 time: the client uploads logs written since then.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub log_since: Option<String>,
    /// Upload only from these platforms (e.g. `ios`, `android`; 1 to 32 letters, digits, `-`
    /// or `_`, stored in lowercase); empty = any.
    #[serde(default)]
    #[schema(inline, value_type = Option<Vec<PlatformName>>)]
    pub platforms: Option<Vec<String>>,
    /// Upload only from client versions in this inclusive range.
    #[serde(default)]
    pub app_version: Option<VersionRange>,
}

/// A platform name as sent: 1 to 32 letters, digits, `-` or `_`.
#[derive(ToSchema)]
#[schema(pattern = "^[A-Za-z0-9_-]{1,32}$", example = "ios")]
pub struct PlatformName(#[allow(dead_code)] String);

/// What an operator asked for, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationSpec {
    /// Why the logs are wanted.
    pub reason: String,
    /// Reference in the team's tracker.
    pub ticket_ref: Option<String>,
    /// When it stops asking for uploads.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// How many uploads it asks for: a number, or `"unlimited"` (until `expires_at`).
    #[schema(value_type = MaxUploadsInput)]
    pub max_uploads: UploadLimit,
    /// Logs written since then are wanted.
    #[serde(with = "time::serde::rfc3339::option")]
    pub log_since: Option<OffsetDateTime>,
    /// Platforms that upload (lowercase); empty = any.
    pub platforms: Vec<String>,
    /// Client versions that upload.
    pub app_version: Option<VersionRange>,
}

impl RegistrationSpec {
    /// Longest accepted reason.
    pub const MAX_REASON: usize = 500;

    /// Validates an operator's input. `now` decides whether `expires_at` is in the past.
    pub fn parse(input: RegistrationInput, now: OffsetDateTime) -> Result<Self, InvalidInput> {
        // As the schema says: at most 500 characters as sent, one of them not a blank.
        let reason = input.reason.trim().to_owned();
        if !input.reason.chars().any(|c| c > ' ') || input.reason.chars().count() > Self::MAX_REASON
        {
            return Err(InvalidInput::new(
                "invalid_reason",
                format!(
                    "reason must be 1 to {} characters (say why the logs are wanted)",
                    Self::MAX_REASON
                ),
            ));
        }
        if input
            .ticket_ref
            .as_ref()
            .is_some_and(|t| t.chars().count() > 200)
        {
            return Err(InvalidInput::new(
                "invalid_ticket_ref",
                "ticket_ref must be at most 200 characters",
            ));
        }
        let ticket_ref = match input.ticket_ref.map(|t| t.trim().to_owned()) {
            Some(t) if t.chars().count() > 200 => {
                return Err(InvalidInput::new(
                    "invalid_ticket_ref",
                    "ticket_ref must be at most 200 characters",
                ));
            }
            Some(t) if t.is_empty() => None,
            other => other,
        };
        let expires_at = input
            .expires_at
            .as_deref()
            .map(|v| parse_time("expires_at", v))
            .transpose()?;
        let log_since = input
            .log_since
            .as_deref()
            .map(|v| parse_time("log_since", v))
            .transpose()?;
        let max_uploads = match input.max_uploads {
            None => UploadLimit::Count(1),
            Some(MaxUploadsInput::Count(n)) => match u32::try_from(n) {
                Ok(n) if (1..=UploadLimit::MAX_COUNT).contains(&n) => UploadLimit::Count(n),
                _ => {
                    return Err(InvalidInput::new(
                        "invalid_max_uploads",
                        format!(
                            "max_uploads {n} must be between 1 and {}, or \"unlimited\" with expires_at",
                            UploadLimit::MAX_COUNT
                        ),
                    ));
                }
            },
            Some(MaxUploadsInput::Word(w)) if w == "unlimited" => UploadLimit::UntilExpiry,
            Some(MaxUploadsInput::Word(w)) => {
                return Err(InvalidInput::new(
                    "invalid_max_uploads",
                    format!(
                        "max_uploads {} must be a number or \"unlimited\"",
                        quote(&w)
                    ),
                ));
            }
        };
        let platforms = input
            .platforms
            .unwrap_or_default()
            .into_iter()
            .map(|p| parse_platform(&p))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(range) = &input.app_version {
            range.check_form()?;
        }
        // Every check the schema states came first (400); what follows it allows but cannot
        // be carried out (422).
        if let Some(at) = expires_at
            && at <= now
        {
            return Err(InvalidInput::unprocessable(
                "invalid_date",
                format!(
                    "expires_at {} is in the past; give a time after {}",
                    format_time(at),
                    format_time(now)
                ),
            ));
        }
        if max_uploads == UploadLimit::UntilExpiry && expires_at.is_none() {
            return Err(InvalidInput::unprocessable(
                "invalid_max_uploads",
                "max_uploads \"unlimited\" needs expires_at, or the device would upload at every start forever",
            ));
        }
        if let Some(range) = &input.app_version {
            range.validate()?;
        }
        let app_version = input
            .app_version
            .filter(|r| r.min.is_some() || r.max.is_some());
        Ok(Self {
            reason,
            ticket_ref,
            expires_at,
            max_uploads,
            log_since,
            platforms,
            app_version,
        })
    }
}

fn parse_platform(value: &str) -> Result<String, InvalidInput> {
    let lower = value.to_ascii_lowercase();
    let valid = !lower.is_empty()
        && lower.len() <= 32
        && lower
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(lower)
    } else {
        Err(InvalidInput::new(
            "invalid_platform",
            format!(
                "platform {} must be 1 to 32 letters, digits, - or _ (e.g. ios, android)",
                quote(value)
            ),
        ))
    }
}

/// Parses an RFC 3339 time, naming the field in the error.
pub(crate) fn parse_time(field: &str, value: &str) -> Result<OffsetDateTime, InvalidInput> {
    OffsetDateTime::parse(value.trim(), &Rfc3339).map_err(|e| {
        InvalidInput::new(
            "invalid_date",
            format!(
                "{field} {} is not an RFC 3339 time like 2026-12-01T09:00:00Z ({e})",
                quote(value)
            ),
        )
    })
}

/// Formats a time as RFC 3339 (UTC as given).
pub(crate) fn format_time(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// A device registration as stored and as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Registration {
    /// The registered device.
    #[serde(with = "device_id_serde")]
    #[schema(value_type = String, example = "a1b2c3d4-e5f6")]
    pub device_id: DeviceId,
    /// What the operator asked for.
    #[serde(flatten)]
    pub spec: RegistrationSpec,
    /// Where it is in its life.
    pub status: Status,
    /// Completed uploads since it was (re)activated.
    pub uploads: u32,
    /// Name of the admin token that created it.
    pub created_by: String,
    /// Name of the admin token that last changed it.
    pub updated_by: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When an operator last changed it.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When the device last checked in while registered.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_checkin_at: Option<OffsetDateTime>,
}

mod device_id_serde {
    use super::DeviceId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &DeviceId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeviceId, D::Error> {
        let raw = String::deserialize(d)?;
        DeviceId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// What a check-in says about the client, besides its id.
#[derive(Debug, Clone, Default)]
pub struct CheckinContext {
    /// Client version as sent.
    pub app_version: Option<String>,
    /// Client platform as sent.
    pub platform: Option<String>,
}

/// The answer a registration gives to one check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Tell the client to upload.
    Upload,
    /// Registered, but this client is outside the platform/version narrowing.
    NotTargeted(&'static str),
    /// `expires_at` passed: the registration must be marked expired.
    Expired,
}

impl Registration {
    /// A new, active registration.
    pub fn new(
        device_id: DeviceId,
        spec: RegistrationSpec,
        actor: &str,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            device_id,
            spec,
            status: Status::Active,
            uploads: 0,
            created_by: actor.to_owned(),
            updated_by: actor.to_owned(),
            created_at: now,
            updated_at: now,
            last_checkin_at: None,
        }
    }

    /// Replaces what the operator asked for. A registration that had ended (fulfilled,
    /// expired, revoked) starts again with its upload count at zero: registering a device
    /// again means "I want new logs".
    pub fn update(&mut self, spec: RegistrationSpec, actor: &str, now: OffsetDateTime) {
        if self.effective_status(now) != Status::Active {
            self.uploads = 0;
        }
        self.status = Status::Active;
        self.spec = spec;
        self.updated_by = actor.to_owned();
        self.updated_at = now;
    }

    /// The status as of `now`: an active registration past `expires_at` is expired even if
    /// the sweep has not written that yet.
    pub fn effective_status(&self, now: OffsetDateTime) -> Status {
        match (self.status, self.spec.expires_at) {
            (Status::Active, Some(at)) if at <= now => Status::Expired,
            (status, _) => status,
        }
    }
}

/// Whether a registration's narrowing leaves this client out, and by what (`platform`,
/// `app_version`). The hot-path snapshot decides with it (`registry::Entry::decide`).
pub fn narrowing_excludes(
    platforms: &[String],
    app_version: Option<&VersionRange>,
    client: &CheckinContext,
) -> Option<&'static str> {
    if !platforms.is_empty() {
        let platform = client.platform.as_deref().map(str::to_ascii_lowercase);
        if !platform.is_some_and(|p| platforms.contains(&p)) {
            return Some("platform");
        }
    }
    match app_version {
        Some(range) if !range.contains(client.app_version.as_deref()) => Some("app_version"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-22 10:00 UTC);

    fn input(reason: &str) -> RegistrationInput {
        RegistrationInput {
            reason: reason.into(),
            ..Default::default()
        }
    }

    fn registration(input: RegistrationInput) -> Registration {
        let spec = RegistrationSpec::parse(input, NOW).unwrap();
        Registration::new(DeviceId::parse("dev-1").unwrap(), spec, "alice", NOW)
    }

    #[test]
    fn defaults_to_upload_once() {
        let spec = RegistrationSpec::parse(input("crash"), NOW).unwrap();
        assert_eq!(spec.max_uploads, UploadLimit::Count(1));
        assert!(spec.max_uploads.is_reached_by(1));
    }

    #[test]
    fn refuses_past_expiry_bad_dates_and_unbounded_unlimited() {
        let mut past = input("x");
        past.expires_at = Some("2020-01-01T00:00:00Z".into());
        let err = RegistrationSpec::parse(past, NOW).unwrap_err();
        assert_eq!(err.code, "invalid_date");
        assert!(err.message.contains("in the past"), "{}", err.message);

        let mut garbled = input("x");
        garbled.log_since = Some("yesterday".into());
        let err = RegistrationSpec::parse(garbled, NOW).unwrap_err();
        assert!(
            err.message.contains("log_since \"yesterday\""),
            "{}",
            err.message
        );

        let mut unlimited = input("x");
        unlimited.max_uploads = Some(MaxUploadsInput::Word("unlimited".into()));
        let err = RegistrationSpec::parse(unlimited, NOW).unwrap_err();
        assert_eq!(err.code, "invalid_max_uploads");

        let mut zero = input("x");
        zero.max_uploads = Some(MaxUploadsInput::Count(0));
        assert_eq!(
            RegistrationSpec::parse(zero, NOW).unwrap_err().code,
            "invalid_max_uploads"
        );

        assert_eq!(
            RegistrationSpec::parse(input("  "), NOW).unwrap_err().code,
            "invalid_reason"
        );
    }

    #[test]
    fn narrows_by_platform_case_insensitively_and_by_version() {
        let mut narrowed = input("x");
        narrowed.platforms = Some(vec!["iOS".into()]);
        narrowed.app_version = Some(VersionRange {
            min: Some(crate::domain::AppVersion::parse("1.4").unwrap()),
            max: None,
        });
        let reg = registration(narrowed);
        let excludes = |client: &CheckinContext| {
            narrowing_excludes(&reg.spec.platforms, reg.spec.app_version.as_ref(), client)
        };
        let client = |platform: &str, version: &str| CheckinContext {
            platform: Some(platform.into()),
            app_version: Some(version.into()),
        };
        assert_eq!(excludes(&client("IOS", "1.4.1")), None);
        assert_eq!(excludes(&client("android", "1.4.1")), Some("platform"));
        assert_eq!(excludes(&client("ios", "1.3")), Some("app_version"));
        assert_eq!(excludes(&CheckinContext::default()), Some("platform"));
    }

    #[test]
    fn expiry_and_end_states_stop_uploads() {
        let mut expiring = input("x");
        expiring.expires_at = Some("2026-11-22T11:00:00Z".into());
        let reg = registration(expiring);
        let later = datetime!(2026-11-22 11:00 UTC);
        assert_eq!(reg.effective_status(NOW), Status::Active);
        assert_eq!(reg.effective_status(later), Status::Expired);

        let mut revoked = registration(input("x"));
        revoked.status = Status::Revoked;
        assert_eq!(revoked.effective_status(NOW), Status::Revoked);
    }

    #[test]
    fn registering_an_ended_device_again_restarts_its_count() {
        let mut reg = registration(input("first"));
        reg.uploads = 1;
        reg.status = Status::Fulfilled;
        let spec = RegistrationSpec::parse(input("second"), NOW).unwrap();
        reg.update(spec.clone(), "bob", NOW);
        assert_eq!((reg.status, reg.uploads), (Status::Active, 0));
        assert_eq!(reg.created_by, "alice");
        assert_eq!(reg.updated_by, "bob");

        reg.uploads = 1;
        reg.spec.max_uploads = UploadLimit::Count(3);
        reg.update(spec, "bob", NOW);
        assert_eq!(reg.uploads, 1, "an active registration keeps its count");
    }

    #[test]
    fn status_parses_from_its_wire_name() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        }
        assert_eq!("done".parse::<Status>().unwrap_err().code, "invalid_status");
    }
}
