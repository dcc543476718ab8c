//! `GET /v1/audit`: who changed which registration, when, before and after (admin).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::devices::page_limit;
use super::extract::{Json, Query};
use crate::auth::Admin;
use crate::domain::DeviceId;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::store::{AuditEntry, AuditQuery};

/// Audit filters and page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only entries about this device.
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub device_id: Option<String>,
    /// Page size, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9a-fA-F]{24}$")]
    pub cursor: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Read the audit log, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "registrations",
    params(AuditParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page", body = AuditPage),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(admin = %admin.name))]
pub async fn list_audit(
    State(state): State<AppState>,
    admin: Admin,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let device_id = params
        .device_id
        .as_deref()
        .map(DeviceId::parse)
        .transpose()?;
    if let Some(cursor) = &params.cursor
        && !(cursor.len() == 24 && cursor.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid(
            "invalid_cursor",
            "cursor is not a next_cursor this API returned",
        ));
    }
    let query = AuditQuery {
        device_id,
        before: params.cursor,
        limit: page_limit(params.limit)?,
    };
    let (items, next_cursor) = state.registrations.audit(query).await?;
    Ok(Json(AuditPage { items, next_cursor }))
}
