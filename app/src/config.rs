//! Configuration: every flag mirrors an environment variable (`--port` / `PORT`), parsed
//! and validated once at start so a bad value stops the process with a message naming it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::telemetry::{AccessLog, LogFormat};

/// Settings of the check-in service.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "controltower",
    version,
    about = "The check-in service: tells game clients whether to upload their logs."
)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// MongoDB connection string. Without it the service runs on an embedded in-memory
    /// store: fine on a laptop, never in production (nothing survives a restart).
    #[arg(long, env = "MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<Secret>,

    /// MongoDB database name.
    #[arg(long, env = "MONGODB_DATABASE", default_value = "controltower")]
    pub mongodb_database: String,

    /// Application name sent to MongoDB (visible in its logs and currentOp).
    #[arg(long, env = "MONGODB_APP_NAME", default_value = "controltower")]
    pub mongodb_app_name: String,

    /// How long a database operation may wait for a reachable server before the request
    /// gets 503 (e.g. 2s, 500ms).
    #[arg(long, env = "MONGODB_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub mongodb_timeout: Duration,

    /// The longest one database operation of a request may take, server reached or not,
    /// before the request gets 503 (e.g. 5s). Without it a server that stops answering on
    /// an open connection would hold the request as long as the connection stays up.
    #[arg(long, env = "MONGODB_OPERATION_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub mongodb_operation_timeout: Duration,

    /// Admin tokens: `name=token` entries separated by commas; `name=token:read` for a
    /// read-only token. Tokens need at least 16 characters.
    #[arg(long, env = "ADMIN_TOKENS", hide_env_values = true)]
    pub admin_tokens: Option<Secret>,

    /// File with one `name=token[:read]` per line (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<PathBuf>,

    /// Upload URL given to a registered device; `{ticket}` and `{device_id}` are replaced.
    #[arg(
        long,
        env = "UPLOAD_URL_TEMPLATE",
        default_value = "https://appdump.example.com/v1/dumps/{ticket}?device={device_id}"
    )]
    pub upload_url_template: String,

    /// Changes reach every replica as they are made (the store's change feed); this is how
    /// long a replica waits for one before it confirms its snapshot (its age metric) and
    /// sweeps registrations past `expires_at` (e.g. 2s).
    #[arg(long, env = "SNAPSHOT_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub snapshot_poll_interval: Duration,

    /// After SIGTERM: how long new requests are still served before the listener closes.
    /// Keep preStop + this below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "DRAIN_SECONDS", default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Largest request body accepted, in bytes (batch registrations are the big ones).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Most registrations accepted by one batch call.
    #[arg(long, env = "BATCH_MAX_ITEMS", default_value_t = 10_000)]
    pub batch_max_items: usize,

    /// How long check-ins of registered devices are collected before they are written in one
    /// batch (e.g. 100ms).
    #[arg(long, env = "CHECKIN_BATCH_LINGER", default_value = "100ms", value_parser = parse_duration)]
    pub checkin_batch_linger: Duration,

    /// Days check-in records are kept (TTL index).
    #[arg(long, env = "CHECKIN_RETENTION_DAYS", default_value_t = 30)]
    pub checkin_retention_days: u32,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `controltower=debug,info`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Access log: `all` (one line per request) or `errors` (only requests answered 4xx/5xx).
    /// With `LOG_FORMAT=json` the per-request line costs about a tenth of a check-in's CPU
    /// (BENCHMARKS.md).
    #[arg(long, env = "ACCESS_LOG", value_enum, default_value_t = AccessLog::All)]
    pub access_log: AccessLog,
}

/// A value that must never be printed: its `Debug` shows `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or malformed.
    #[error("{setting}: {reason}")]
    Invalid {
        /// Flag and variable, e.g. `--drain / DRAIN_SECONDS`.
        setting: &'static str,
        /// What is wrong and what would be valid.
        reason: String,
    },
    /// The tokens file cannot be read.
    #[error("cannot read ADMIN_TOKENS_FILE {path}: {source}")]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The admin token entries as configured (`ADMIN_TOKENS` and/or `ADMIN_TOKENS_FILE`), not yet
/// parsed: `auth::AdminTokens::parse` reads them at start-up.
#[derive(Debug)]
pub struct TokenEntries {
    /// `name=token[:read]` entries, separated by commas or newlines.
    pub spec: Secret,
    /// Where they came from, named in errors (never the tokens themselves).
    pub source: String,
}

/// Parses a duration as kubectl and helm users type it (`500ms`, `90s`, `1m30s`, `2h`; the
/// same syntax as infra-gen), ISO 8601 (`PT2S`), or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let trimmed = value.trim();
    let parsed = match trimmed.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => jiff::SignedDuration::try_from_secs_f64(seconds).ok(),
        _ => trimmed.parse::<jiff::SignedDuration>().ok(),
    };
    match parsed {
        Some(d) if !d.is_negative() => Duration::try_from(d).map_err(|e| format!("{value:?}: {e}")),
        Some(_) => Err(format!("{value:?} is negative")),
        None => Err(format!(
            "{value:?} is not a duration like 500ms, 90s, 1m30s or 2h"
        )),
    }
}

impl Settings {
    /// The address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Check-in retention as a duration.
    pub fn checkin_retention(&self) -> Duration {
        Duration::from_secs(u64::from(self.checkin_retention_days) * 86_400)
    }

    /// Checks values that clap cannot, and reads the admin token entries (from the tokens
    /// file when one is named).
    pub fn validate(&self) -> Result<TokenEntries, ConfigError> {
        if !self.upload_url_template.contains("{ticket}") {
            return Err(ConfigError::Invalid {
                setting: "--upload-url-template / UPLOAD_URL_TEMPLATE",
                reason: format!(
                    "{:?} has no {{ticket}} placeholder; the dump service needs the ticket to accept the upload",
                    self.upload_url_template
                ),
            });
        }
        if self.snapshot_poll_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                setting: "--snapshot-poll-interval / SNAPSHOT_POLL_INTERVAL",
                reason: "must be at least 100ms (every replica polls the database this often)"
                    .into(),
            });
        }
        if self.drain > Duration::from_secs(300) {
            return Err(ConfigError::Invalid {
                setting: "--drain / DRAIN_SECONDS",
                reason: "must be at most 300s; Kubernetes would SIGKILL the pod first".into(),
            });
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::Invalid {
                setting: "--body-limit-bytes / BODY_LIMIT_BYTES",
                reason: "must be at least 1024".into(),
            });
        }
        if self.checkin_retention_days == 0 {
            return Err(ConfigError::Invalid {
                setting: "--checkin-retention-days / CHECKIN_RETENTION_DAYS",
                reason: "must be at least 1".into(),
            });
        }
        let mut spec = String::new();
        if let Some(tokens) = &self.admin_tokens {
            spec.push_str(tokens.expose());
            spec.push('\n');
        }
        let mut source = String::from("ADMIN_TOKENS");
        if let Some(path) = &self.admin_tokens_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokensFile {
                path: path.clone(),
                source,
            })?;
            spec.push_str(&text);
            source = format!("ADMIN_TOKENS/ADMIN_TOKENS_FILE {}", path.display());
        }
        Ok(TokenEntries {
            spec: Secret(spec),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["controltower"];
        argv.extend_from_slice(args);
        Settings::try_parse_from(argv).unwrap()
    }

    #[test]
    fn durations_accept_the_usual_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("like 500ms, 90s, 1m30s or 2h")
        );
        assert!(parse_duration("-2s").is_err());
    }

    #[test]
    fn refuses_a_template_without_ticket_naming_the_setting() {
        let err = settings(&["--upload-url-template", "https://dump/x"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("UPLOAD_URL_TEMPLATE"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = settings(&[
            "--mongodb-uri",
            "mongodb://user:hunter2@db/",
            "--admin-tokens",
            "a=aaaaaaaaaaaaaaaaaaaa",
        ]);
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("aaaaaaaa"),
            "{shown}"
        );
    }

    #[test]
    fn missing_tokens_file_is_named() {
        let err = settings(&["--admin-tokens-file", "/nonexistent/tokens"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tokens"), "{err}");
    }
}
