//! HTTP routes, one file per resource. A handler extracts, parses into domain types, calls a
//! service, and answers; nothing else. [`router`] assembles them with the OpenAPI document
//! generated from the handlers' annotations.

pub mod audit;
pub mod checkin;
pub mod devices;
pub mod health;

use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::startup::AppState;

/// `axum::Json` whose rejections are [`ApiError`]s, so a bad body gets the one JSON error
/// shape with a message naming the bad field.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with [`ApiError`] rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path` with [`ApiError`] rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Every route with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(checkin::check_in))
        .routes(routes!(checkin::complete_upload))
        .routes(routes!(devices::list_devices))
        .routes(routes!(devices::batch_register))
        .routes(routes!(
            devices::put_device,
            devices::get_device,
            devices::delete_device
        ))
        .routes(routes!(audit::list_audit))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
}
