//! `POST /v1/checkin` and `POST /v1/uploads/{ticket}/complete`: public, called by clients.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::extract::{Json, Path};
use crate::domain::{CheckinContext, DeviceId, Ticket};
use crate::error::{ApiError, ErrorBody};
use crate::service::checkin::Answer;
use crate::state::AppState;
use crate::store::UploadReport;

/// A client's check-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    /// The device id: 1–128 characters of `[A-Za-z0-9._:-]`.
    #[schema(example = "a1b2c3d4-e5f6", pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub device_id: String,
    /// Client version, e.g. `1.4.2` (at most 64 characters).
    #[serde(default)]
    #[schema(example = "1.4.2", max_length = 64)]
    pub app_version: Option<String>,
    /// Client platform, e.g. `ios` (at most 64 characters).
    #[serde(default)]
    #[schema(example = "ios", max_length = 64)]
    pub platform: Option<String>,
}

/// What the client must do.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckinResponse {
    /// Whether to pack and upload logs now.
    pub upload: bool,
    /// Ticket to quote when completing the upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Where to upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
    /// Why the logs are wanted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Upload logs written since then.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub log_since: Option<OffsetDateTime>,
}

/// Bounded client strings: a check-in is public, so nothing unbounded reaches the database.
fn bounded(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > 64 => Err(ApiError::invalid(
            "invalid_body",
            format!("{field} must be at most 64 characters"),
        )),
        other => Ok(other),
    }
}

/// Check in at client start-up.
///
/// Almost every device is unregistered and is answered from memory. A registered device
/// gets `upload: true` with a ticket and an upload URL.
#[utoipa::path(
    post,
    path = "/v1/checkin",
    tag = "clients",
    request_body = CheckinRequest,
    responses(
        (status = 200, description = "What to do", body = CheckinResponse),
        (status = 400, description = "Invalid device id or body", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "Registered device while the database is down: retry at next start", body = ErrorBody),
    )
)]
// No span of its own (unlike the admin routes): the request span carries the request id,
// and a second span per check-in was a tenth of the service's CPU in the spike.
pub async fn check_in(
    State(state): State<AppState>,
    Json(request): Json<CheckinRequest>,
) -> Result<Json<CheckinResponse>, ApiError> {
    let device = DeviceId::parse(&request.device_id)?;
    let client = CheckinContext {
        app_version: bounded("app_version", request.app_version)?,
        platform: bounded("platform", request.platform)?,
    };
    let answer = state.checkins.check_in(device, client)?;
    Ok(Json(match answer {
        Answer::NoUpload => CheckinResponse {
            upload: false,
            ticket: None,
            upload_url: None,
            reason: None,
            log_since: None,
        },
        Answer::Upload {
            ticket,
            upload_url,
            reason,
            log_since,
        } => CheckinResponse {
            upload: true,
            ticket: Some(ticket.to_string()),
            upload_url: Some(upload_url),
            reason: Some(reason),
            log_since,
        },
    }))
}

/// What the client reports after uploading.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// Bytes uploaded (a whole number up to 2^53 − 1; `301.0` is 301).
    #[serde(default, deserialize_with = "byte_count")]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    pub bytes: Option<u64>,
    /// Id the dump service gave the upload (at most 64 characters).
    #[serde(default)]
    #[schema(example = "dump-7f3a", max_length = 64)]
    pub dump_id: Option<String>,
}

/// The largest integer a JSON number holds exactly (2^53 − 1).
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

/// `bytes`: a whole JSON number, `301` or `301.0` (JSON Schema's integer), 0 to 2^53 − 1.
fn byte_count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let value = Option::<serde_json::Number>::deserialize(deserializer)?;
    let Some(number) = value else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .and_then(crate::domain::whole_number)
            .and_then(|n| u64::try_from(n).ok())
    });
    match whole {
        Some(n) if n <= MAX_SAFE_INTEGER => Ok(Some(n)),
        _ => Err(D::Error::custom(format!(
            "bytes {number} must be a whole number from 0 to {MAX_SAFE_INTEGER}"
        ))),
    }
}

/// Report an upload as complete.
///
/// Counts one upload of the ticket's device; once it has all the uploads it asked for, its
/// registration is fulfilled and later check-ins answer `upload: false`. Completing a ticket
/// again is accepted and not counted twice.
#[utoipa::path(
    post,
    path = "/v1/uploads/{ticket}/complete",
    tag = "clients",
    params(("ticket" = String, Path, description = "Ticket from the check-in answer", pattern = "^[0-9a-fA-F]{32}$")),
    request_body = CompleteRequest,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "Malformed ticket or body", body = ErrorBody),
        (status = 404, description = "Unknown ticket", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "Database unavailable: retry", body = ErrorBody),
    )
)]
pub async fn complete_upload(
    State(state): State<AppState>,
    Path(ticket): Path<String>,
    Json(request): Json<CompleteRequest>,
) -> Result<StatusCode, ApiError> {
    let ticket = Ticket::parse(&ticket)?;
    let dump_id = bounded("dump_id", request.dump_id)?;
    let report = UploadReport {
        bytes: request.bytes,
        dump_id,
    };
    state.checkins.complete_upload(&ticket, report).await?;
    Ok(StatusCode::NO_CONTENT)
}
