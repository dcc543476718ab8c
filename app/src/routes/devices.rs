//! `/v1/devices`: device registrations (admin).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Path, Query};
use crate::auth::Admin;
use crate::domain::{
    DeviceId, InvalidInput, Registration, RegistrationInput, RegistrationSpec, Status,
};
use crate::error::{ApiError, ErrorBody, ErrorDetail, body_too_large};
use crate::service::registrations::{BatchItem, ItemOutcome};
use crate::state::AppState;
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
/// Its next check-in answers `upload: true` on every replica as soon as the change reaches
/// it (typically well under a second; at once on the replica that served this call).
/// Registering a device whose registration ended starts a new one with its upload count at
/// zero.
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
        (status = 400, description = "The body or device id does not match the schema", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Well-formed but not possible as asked: `expires_at` already past (`invalid_date`), `\"unlimited\"` without `expires_at` (`invalid_max_uploads`), `app_version.min` above `max` (`invalid_version_range`). Nothing was changed.", body = ErrorBody),
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
/// readable (`GET`) with status `revoked`, and can be registered again with `PUT`; revoking
/// twice is fine.
#[utoipa::path(
    post,
    path = "/v1/devices/{device_id}/revoke",
    tag = "registrations",
    params(("device_id" = String, Path, description = "Device id", pattern = "^[A-Za-z0-9._:-]{1,128}$")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Revoked: the registration as it is now", body = Registration),
        (status = 400, description = "Invalid device id", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "Not registered", body = ErrorBody),
        (status = 503, description = "Database unavailable: nothing was changed", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn revoke_device(
    State(state): State<AppState>,
    admin: Admin,
    Path(device_id): Path<String>,
) -> Result<Json<Registration>, ApiError> {
    admin.require_write()?;
    let device = DeviceId::parse(&device_id)?;
    Ok(Json(
        state.registrations.revoke(&device, &admin.name).await?,
    ))
}

/// Delete a registration: the device stops being asked for logs and the registration is
/// gone (`GET` answers 404). The audit log keeps what it was (`GET /v1/audit`). To keep it
/// readable instead, revoke it.
#[utoipa::path(
    delete,
    path = "/v1/devices/{device_id}",
    tag = "registrations",
    params(("device_id" = String, Path, description = "Device id", pattern = "^[A-Za-z0-9._:-]{1,128}$")),
    security(("admin_token" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid device id", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Read-only token", body = ErrorBody),
        (status = 404, description = "Not registered (or already deleted)", body = ErrorBody),
        (status = 503, description = "Database unavailable: nothing was changed", body = ErrorBody),
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
    state.registrations.delete(&device, &admin.name).await?;
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
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
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
#[derive(Debug, Deserialize)]
pub struct BatchItemInput {
    /// The device id.
    pub device_id: String,
    /// The registration.
    #[serde(flatten)]
    pub registration: RegistrationInput,
}

/// The item schema: [`RegistrationInput`]'s object with `device_id` added — one flat object
/// with no other keys (an `allOf` would forbid `device_id` through the registration's
/// `additionalProperties: false`).
impl utoipa::PartialSchema for BatchItemInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        let mut schema = <RegistrationInput as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.description = Some(
                "One item of a JSON batch: a device id and the fields of a single registration."
                    .to_owned(),
            );
            object.properties.insert(
                "device_id".to_owned(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z0-9._:-]{1,128}$"))
                    .description(Some("The device id."))
                    .into(),
            );
            object.required.insert(0, "device_id".to_owned());
        }
        schema
    }
}

impl ToSchema for BatchItemInput {}

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

/// A CSV batch: a header row naming columns among [`CSV_COLUMNS`] (`device_id` and `reason`
/// required, each once), then one registration per line.
pub struct CsvBatch;

impl utoipa::PartialSchema for CsvBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(csv_header_pattern()))
            .description(Some(
                "A header row of columns among device_id, reason, ticket_ref, expires_at, max_uploads, log_since, platforms (separated by ;), app_version_min, app_version_max — device_id and reason required — then one registration per line. A line that cannot be registered gets its own error result.",
            ))
            .examples(["device_id,reason,max_uploads\ndev-1,crash on boss 3,1\n"])
            .into()
    }
}

impl ToSchema for CsvBatch {}

/// The header row a CSV batch must start with, as the OpenAPI document states it and as the
/// handler checks it: lowercase column names separated by commas (blanks around them
/// allowed), `device_id` and `reason` once each, the optional columns any number of times.
pub fn csv_header_pattern() -> String {
    let optional = CSV_COLUMNS[2..].join("|");
    let others = format!("(?:(?:{optional}) *, *)*");
    format!(
        "^ *{others}(?:device_id *, *{others}reason|reason *, *{others}device_id)(?: *, *(?:{optional}))* *(?:\\r?\\n[\\s\\S]*)?$"
    )
}

/// [`csv_header_pattern`], compiled once.
static CSV_HEADER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    // The pattern is built from constants and covered by a test: it always compiles.
    #[allow(clippy::expect_used)]
    regex::Regex::new(&csv_header_pattern()).expect("the CSV header pattern compiles")
});

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
/// (separated by `;`), app_version_min, app_version_max). A JSON batch whose items do not
/// all match the item schema is refused as a whole (400, naming every such item); otherwise
/// every item gets its own result: one that cannot be registered as asked (a CSV line with a
/// bad value, an `expires_at` already past, a duplicate device id) is reported and the good
/// ones are saved.
#[utoipa::path(
    post,
    path = "/v1/devices/batch",
    tag = "registrations",
    request_body(content(
        (BatchRequest = "application/json"),
        (CsvBatch = "text/csv"),
    )),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Per-item results", body = BatchResponse),
        (status = 400, description = "The body does not match the schema: bad JSON, a JSON item that breaks the item schema (every such item is named), or a bad CSV header row. Nothing was saved.", body = ErrorBody),
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
                    message: "not saved: the database failed while saving this part of the batch (the items reported created or updated were saved, each with its audit entry); sending the whole batch again is safe".to_owned(),
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
    let now = crate::domain::now();
    let mut items = Vec::with_capacity(request.items.len());
    let mut broken: Vec<InvalidInput> = Vec::new();
    for (index, value) in request.items.into_iter().enumerate() {
        let position = format!("items[{index}]");
        match json_item(&position, value, now) {
            Ok(item) => items.push(item),
            Err(e) => broken.push(e.at(&position)),
        }
    }
    if let Some(first) = broken.first() {
        const SHOWN: usize = 20;
        let mut message = broken
            .iter()
            .take(SHOWN)
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ");
        if broken.len() > SHOWN {
            message.push_str(&format!("; and {} more", broken.len() - SHOWN));
        }
        return Err(ApiError::invalid(
            first.code,
            format!(
                "{} item(s) do not match the item schema, so nothing was saved: {message}",
                broken.len()
            ),
        ));
    }
    Ok(items)
}

/// One JSON item. An item that breaks the item schema (a type, a pattern, a length) is an
/// `Err`: the batch is refused. One the schema allows but that cannot be registered as asked
/// (an `expires_at` already past, say) becomes a failed item.
fn json_item(
    position: &str,
    value: serde_json::Value,
    now: time::OffsetDateTime,
) -> Result<BatchItem, InvalidInput> {
    let raw_device_id = value
        .get("device_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let item = batch_item_input(value)?;
    let device = DeviceId::parse(&item.device_id)?;
    match RegistrationSpec::parse(item.registration.clone(), now) {
        Err(e) if !e.unprocessable => return Err(e),
        _ => {}
    }
    Ok(BatchItem {
        position: position.to_owned(),
        parsed: Ok((device, item.registration)),
        raw_device_id,
    })
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
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::invalid("invalid_csv", format!("a CSV batch is UTF-8 text: {e}")))?;
    if !CSV_HEADER.is_match(text) {
        let first = text.lines().next().unwrap_or_default();
        return Err(ApiError::invalid(
            "invalid_csv",
            format!(
                "the CSV header row {} must name columns among {}, separated by commas, with device_id and reason once each",
                crate::domain::quote(first),
                CSV_COLUMNS.join(", ")
            ),
        ));
    }
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
