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
/// shape with a message naming the bad field. Every request body of this API is an object:
/// anything else is refused (serde would read a struct from an array, field by position,
/// which the OpenAPI document does not allow).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".to_owned(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    crate::error::body_too_large()
                } else {
                    ApiError::invalid("invalid_body", rejection.body_text())
                }
            })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::invalid(
                "invalid_body",
                "the body must be a JSON object ({...})",
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(value))
    }
}

/// `Content-Type: application/json` (or `application/<something>+json`), as `axum::Json`
/// accepts it.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

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
        .routes(routes!(devices::revoke_device))
        .routes(routes!(audit::list_audit))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
}
