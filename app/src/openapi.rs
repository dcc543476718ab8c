//! The OpenAPI document. Paths and schemas come from the handlers' `#[utoipa::path]`
//! annotations (see `routes::router`, which starts from [`base`]); this module adds what is global: title, version,
//! tags and the admin bearer-token scheme. Served at `/openapi.json`, browsable at `/docs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Tag};

/// The document before routes are added.
pub fn base() -> OpenApi {
    let mut clients = Tag::new("clients");
    clients.description = Some("Called by game clients: check-in and upload completion.".into());
    let mut registrations = Tag::new("registrations");
    registrations.description = Some(
        "Operators: register devices whose logs are wanted (Authorization: Bearer <admin token>)."
            .into(),
    );
    let mut operations = Tag::new("operations");
    operations.description = Some("Probes and metrics.".into());
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("controltower")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Check-in service: tells game clients at start-up whether to upload their logs. \
                     Errors are always {\"error\": {\"code\", \"message\"}}.",
                ))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "admin_token",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some("An admin token configured in ADMIN_TOKENS"))
                            .build(),
                    ),
                )
                .build(),
        ))
        .tags(Some([clients, registrations, operations]))
        .build()
}
