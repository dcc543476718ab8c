//! `/v1/devices`: device registrations (admin).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Json, Path, Query};
use crate::auth::Admin;
use crate::domain::{DeviceId, InvalidInput, Registration, RegistrationInput, Status};
use crate::error::{ApiError, ErrorBody, ErrorDetail, body_too_large};
use crate::service::registrations::{BatchItem, ItemOutcome};
use crate::startup::AppState;
use crate::store::{CheckinRecord, DeviceQuery};

/// Default and maximum page sizes of listings.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page a listing returns.
pub const MAX_LIMIT: usize = 1000;

/// Checks a `limit` query parameter.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid(
            "invalid_limit",
            format!("limit {n} must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// Register a device (or replace its registration).
///
/// Its next check-in answers `upload: true` on every replica within the snapshot poll
/// interval (at once on the replica that served this call). Registering a device whose
/// registration ended starts a new one with its upload count at zero.
#[utoipa::path(
    put,
    path = "/v1/devices/{device_id}",
    tag = "registrations",
    params(("device_id" = String, Path, description = "Device id", pattern = "^[A-Za-z0-9._:-]{1,128}$")),
    request_body = RegistrationInput,
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Registered", body = Registration),
        (status = 200, description = "Registration replaced", body = Registration),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "Database unavailable: nothing was changed", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn put_device(
    State(state): State<AppState>,
    admin: Admin,
    Path(device_id): Path<String>,
    Json(input): Json<RegistrationInput>,
) -> Result<(StatusCode, Json<Registration>), ApiError> {
    admin.require_write()?;
    let device = DeviceId::parse(&device_id)?;
    let (registration, created) = state.registrations.put(device, input, &admin.name).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(registration)))
}

/// A registration with the device's recent check-ins.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrationDetailBody {
    /// The registration.
    pub registration: Registration,
    /// The device's latest check-ins while registered, newest first.
    pub recent_checkins: Vec<CheckinRecord>,
}

/// Show a registration and its recent check-ins.
#[utoipa::path(
    get,
    path = "/v1/devices/{device_id}",
    tag = "registrations",
    params(("device_id" = String, Path, description = "Device id", pattern = "^[A-Za-z0-9._:-]{1,128}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The registration", body = RegistrationDetailBody),
        (status = 400, description = "Invalid device id", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn get_device(
    State(state): State<AppState>,
    admin: Admin,
    Path(device_id): Path<String>,
) -> Result<Json<RegistrationDetailBody>, ApiError> {
    let device = DeviceId::parse(&device_id)?;
    let detail = state.registrations.get(&device).await?;
    Ok(Json(RegistrationDetailBody {
        registration: detail.registration,
        recent_checkins: detail.recent_checkins,
    }))
}

/// Revoke a registration: the device stops being asked for logs. The registration stays
/// readable with status `revoked`; revoking twice is fine.
#[utoipa::path(
    delete,
    path = "/v1/devices/{device_id}",
    tag = "registrations",
    params(("device_id" = String, Path, description = "Device id", pattern = "^[A-Za-z0-9._:-]{1,128}$")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Invalid device id", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn delete_device(
    State(state): State<AppState>,
    admin: Admin,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin.require_write()?;
    let device = DeviceId::parse(&device_id)?;
    state.registrations.revoke(&device, &admin.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Listing filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this status: active, fulfilled, expired, revoked.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of registrations.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrationPage {
    /// Registrations ordered by device id.
    pub items: Vec<Registration>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List registrations, ordered by device id, with cursor pagination.
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "registrations",
    params(ListParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page", body = RegistrationPage),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn list_devices(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<ListParams>,
) -> Result<Json<RegistrationPage>, ApiError> {
    let status = params
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()?;
    let after = params
        .cursor
        .as_deref()
        .map(|c| {
            DeviceId::parse(c).map(|d| d.to_string()).map_err(|_| {
                ApiError::invalid(
                    "invalid_cursor",
                    "cursor is not a next_cursor this API returned",
                )
            })
        })
        .transpose()?;
    let query = DeviceQuery {
        status,
        after,
        limit: page_limit(params.limit)?,
    };
    let (items, next_cursor) = state.registrations.list(query).await?;
    Ok(Json(RegistrationPage { items, next_cursor }))
}

/// A JSON batch: `{"items": [{"device_id": "...", "reason": "...", ...}, ...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Registrations: each a `device_id` plus the fields of a single registration.
    #[schema(value_type = Vec<BatchItemInput>)]
    pub items: Vec<serde_json::Value>,
}

/// One item of a JSON batch: a device id and the fields of a single registration.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchItemInput {
    /// The device id.
    pub device_id: String,
    /// The registration.
    #[serde(flatten)]
    pub registration: RegistrationInput,
}

/// The result of one batch item.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemResult {
    /// Where the item was: `items[3]` or `line 4`.
    pub position: String,
    /// Its device id, as sent.
    pub device_id: Option<String>,
    /// `created`, `updated` or `error`.
    pub result: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// The results of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// New registrations.
    pub created: usize,
    /// Replaced registrations.
    pub updated: usize,
    /// Items refused or not saved: fix and send them again.
    pub failed: usize,
    /// One result per item, in order.
    pub items: Vec<BatchItemResult>,
}

/// Columns a CSV batch may have (`device_id` and `reason` are required).
pub const CSV_COLUMNS: [&str; 9] = [
    "device_id",
    "reason",
    "ticket_ref",
    "expires_at",
    "max_uploads",
    "log_since",
    "platforms",
    "app_version_min",
    "app_version_max",
];

/// Register up to 10 000 devices in one call.
///
/// The body is JSON (`{"items": [...]}`) or CSV (`Content-Type: text/csv`, a header row with
/// columns among device_id, reason, ticket_ref, expires_at, max_uploads, log_since, platforms
/// (separated by `;`), app_version_min, app_version_max). Every item gets its own result: a
/// bad line is reported and the good ones are saved.
#[utoipa::path(
    post,
    path = "/v1/devices/batch",
    tag = "registrations",
    request_body(content(
        (BatchRequest = "application/json"),
        (String = "text/csv", example = "device_id,reason,max_uploads\ndev-1,crash on boss 3,1\n"),
    )),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Per-item results", body = BatchResponse),
        (status = 400, description = "The body as a whole is unreadable (bad JSON, bad CSV header)", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 413, description = "Too many items or body too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor CSV", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn batch_register(
    State(state): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    admin.require_write()?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            body_too_large()
        } else {
            ApiError::invalid("invalid_body", rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let items = match content_type.as_str() {
        "application/json" => parse_json_batch(&body)?,
        "text/csv" => parse_csv_batch(&body)?,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {other:?} is not accepted; send application/json or text/csv"
            )));
        }
    };
    if items.len() > state.batch_max_items {
        return Err(ApiError::TooLarge(format!(
            "batch has {} items; at most {} per call: split it",
            items.len(),
            state.batch_max_items
        )));
    }
    let positions: Vec<(String, Option<String>)> = items
        .iter()
        .map(|i| (i.position.clone(), i.raw_device_id.clone()))
        .collect();
    let outcomes = state.registrations.batch(items, &admin.name).await?;
    let mut response = BatchResponse {
        created: 0,
        updated: 0,
        failed: 0,
        items: Vec::with_capacity(outcomes.len()),
    };
    for ((position, device_id), outcome) in positions.into_iter().zip(outcomes) {
        let (result, error) = match outcome {
            ItemOutcome::Created => {
                response.created += 1;
                ("created", None)
            }
            ItemOutcome::Updated => {
                response.updated += 1;
                ("updated", None)
            }
            ItemOutcome::Failed(e) => {
                response.failed += 1;
                let detail = ErrorDetail {
                    code: e.code.to_owned(),
                    message: e.message,
                };
                ("error", Some(detail))
            }
            ItemOutcome::Unavailable => {
                response.failed += 1;
                let detail = ErrorDetail {
                    code: "dependency_unavailable".to_owned(),
                    message: "the database did not save this item; send it again".to_owned(),
                };
                ("error", Some(detail))
            }
        };
        response.items.push(BatchItemResult {
            position,
            device_id,
            result: result.to_owned(),
            error,
        });
    }
    Ok(Json(response))
}

fn parse_json_batch(body: &[u8]) -> Result<Vec<BatchItem>, ApiError> {
    let request: BatchRequest = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::invalid("invalid_json", format!("body is not valid JSON: {e}"))
        } else {
            ApiError::invalid(
                "invalid_body",
                format!("a JSON batch is {{\"items\": [...]}}: {e}"),
            )
        }
    })?;
    Ok(request
        .items
        .into_iter()
        .enumerate()
        .map(|(index, value)| json_item(format!("items[{index}]"), value))
        .collect())
}

fn json_item(position: String, value: serde_json::Value) -> BatchItem {
    let raw_device_id = value
        .get("device_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let parsed = batch_item_input(value).and_then(|item| {
        let device = DeviceId::parse(&item.device_id)?;
        Ok((device, item.registration))
    });
    BatchItem {
        position,
        parsed,
        raw_device_id,
    }
}

/// Splits `device_id` off and reads the rest as a registration. (serde's `flatten` would
/// silently accept unknown keys; a typo in a batch must be reported like in a single PUT.)
fn batch_item_input(value: serde_json::Value) -> Result<BatchItemInput, InvalidInput> {
    let serde_json::Value::Object(mut fields) = value else {
        return Err(InvalidInput::new(
            "invalid_body",
            "an item must be an object with device_id and reason",
        ));
    };
    let device_id = match fields.remove("device_id") {
        Some(serde_json::Value::String(id)) => id,
        _ => {
            return Err(InvalidInput::new(
                "invalid_device_id",
                "the item has no device_id string",
            ));
        }
    };
    let registration = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| InvalidInput::new("invalid_body", e.to_string()))?;
    Ok(BatchItemInput {
        device_id,
        registration,
    })
}

fn parse_csv_batch(body: &[u8]) -> Result<Vec<BatchItem>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| {
            ApiError::invalid(
                "invalid_csv",
                format!("cannot read the CSV header row: {e}"),
            )
        })?
        .iter()
        .map(str::to_owned)
        .collect();
    for column in &header {
        if !CSV_COLUMNS.contains(&column.as_str()) {
            return Err(ApiError::invalid(
                "invalid_csv",
                format!(
                    "CSV column {column:?} is unknown; columns are {}",
                    CSV_COLUMNS.join(", ")
                ),
            ));
        }
    }
    for required in ["device_id", "reason"] {
        if !header.iter().any(|c| c == required) {
            return Err(ApiError::invalid(
                "invalid_csv",
                format!("the CSV header row has no {required} column"),
            ));
        }
    }
    let mut items = Vec::new();
    for record in reader.records() {
        let (position, record) = match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                (format!("line {line}"), Ok(record))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                (format!("line {line}"), Err(e))
            }
        };
        let item = match record {
            Err(e) => BatchItem {
                parsed: Err(InvalidInput::new("invalid_csv", e.to_string())),
                position,
                raw_device_id: None,
            },
            Ok(record) => csv_item(position, &header, &record),
        };
        items.push(item);
    }
    Ok(items)
}

fn csv_item(position: String, header: &[String], record: &csv::StringRecord) -> BatchItem {
    let cell = |name: &str| {
        header
            .iter()
            .position(|c| c == name)
            .and_then(|i| record.get(i))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let raw_device_id = cell("device_id");
    let parsed = (|| {
        if record.len() > header.len() {
            return Err(InvalidInput::new(
                "invalid_csv",
                format!("{} cells but the header has {}", record.len(), header.len()),
            ));
        }
        let device = DeviceId::parse(raw_device_id.as_deref().unwrap_or(""))?;
        let max_uploads = cell("max_uploads").map(|v| match v.parse::<i64>() {
            Ok(n) => crate::domain::MaxUploadsInput::Count(n),
            Err(_) => crate::domain::MaxUploadsInput::Word(v),
        });
        let app_version = match (cell("app_version_min"), cell("app_version_max")) {
            (None, None) => None,
            (min, max) => Some(crate::domain::VersionRange {
                min: min
                    .as_deref()
                    .map(crate::domain::AppVersion::parse)
                    .transpose()?,
                max: max
                    .as_deref()
                    .map(crate::domain::AppVersion::parse)
                    .transpose()?,
            }),
        };
        let input = RegistrationInput {
            reason: cell("reason").unwrap_or_default(),
            ticket_ref: cell("ticket_ref"),
            expires_at: cell("expires_at"),
            max_uploads,
            log_since: cell("log_since"),
            platforms: cell("platforms").map(|p| {
                p.split(';')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            app_version,
        };
        Ok((device, input))
    })();
    BatchItem {
        position,
        parsed,
        raw_device_id,
    }
}
