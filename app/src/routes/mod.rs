//! HTTP routes, one file per resource. A handler extracts, parses into domain types, calls a
//! service, and answers; nothing else. [`router`] assembles them with the OpenAPI document
//! generated from the handlers' annotations.

pub mod audit;
pub mod checkin;
pub mod devices;
pub mod extract;
pub mod health;

use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

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

/// The full OpenAPI document, as served at `/openapi.json`.
pub fn document() -> OpenApi {
    router().into_openapi()
}
