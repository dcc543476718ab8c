//! Health and metrics: `/healthz/live`, `/healthz/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Json;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Health details.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `live` or `ready`.
    pub status: String,
    /// `mongodb` or `memory`.
    pub store: String,
    /// Active registrations in this replica's snapshot.
    pub registrations: usize,
    /// Seconds since the snapshot was last confirmed against the store.
    pub snapshot_age_seconds: Option<f64>,
}

fn health(state: &AppState, status: &str) -> Health {
    Health {
        status: status.to_owned(),
        store: state.store.kind().to_owned(),
        registrations: state.registry.len(),
        snapshot_age_seconds: state.registry.age().map(|a| a.as_secs_f64()),
    }
}

/// Liveness: the process answers. It stays 200 while the database is down, so Kubernetes
/// does not restart replicas that are still answering unregistered devices.
#[utoipa::path(
    get,
    path = "/healthz/live",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn live(State(state): State<AppState>) -> Json<Health> {
    Json(health(&state, "live"))
}

/// Readiness: 200 once indexes exist and the first snapshot is loaded; 503 while starting
/// and from the moment SIGTERM arrives (so the load balancer stops sending traffic). It stays
/// 200 while the database is down: unregistered devices are still answered.
#[utoipa::path(
    get,
    path = "/healthz/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Starting or draining", body = ErrorBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::NotReady(
            "shutting down: draining in-flight requests".into(),
        ));
    }
    if !state.lifecycle.is_started() {
        return Err(ApiError::NotReady(
            "starting: waiting for the database indexes and the first registration snapshot".into(),
        ));
    }
    Ok(Json(health(&state, "ready")))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(state.registry.len(), state.registry.age()),
    )
}
