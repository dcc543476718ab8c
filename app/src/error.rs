//! The one error type of the API and its JSON shape:
//! `{"error": {"code": "snake_case", "message": "human text"}}`.
//!
//! A 4xx body tells the caller what to fix. A 5xx body says little; the whole error chain
//! goes to the log with the request id.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::InvalidInput;
use crate::store::StoreError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is invalid (400), or asks for what cannot be done
    /// (422, see [`InvalidInput`]).
    #[error("{0}")]
    Invalid(#[from] InvalidInput),
    /// No or unknown admin token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing named in the path does not exist (404).
    #[error("{message}")]
    NotFound {
        /// Error code, e.g. `device_not_found`.
        code: &'static str,
        /// What was not found.
        message: String,
    },
    /// The method is not allowed on this path (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body or the batch is too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// The body's content type is not one this route reads (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// MongoDB is unreachable; the client should retry later (503).
    #[error("database unavailable")]
    Unavailable(#[source] StoreError),
    /// The service is shutting down or not started yet (503).
    #[error("{0}")]
    NotReady(String),
    /// A bug or corrupt data (500). The message is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_device_id`.
    #[schema(example = "invalid_device_id")]
    pub code: String,
    /// Human text: what is wrong and how to fix it.
    #[schema(
        example = "device_id \"a b\" contains ' '; only letters, digits and . _ : - are allowed"
    )]
    pub message: String,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. } => ApiError::Unavailable(error),
            StoreError::Corrupt { .. } => ApiError::Internal(error.to_string()),
        }
    }
}

impl ApiError {
    /// A 400 with the given code and message.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid(InvalidInput::new(code, message))
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::Invalid(e) if e.unprocessable => {
                (StatusCode::UNPROCESSABLE_ENTITY, e.code, e.message.clone())
            }
            ApiError::Invalid(e) => (StatusCode::BAD_REQUEST, e.code, e.message.clone()),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::NotFound { code, message } => (StatusCode::NOT_FOUND, code, message.clone()),
            ApiError::MethodNotAllowed(m) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                m.clone(),
            ),
            ApiError::TooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                m.clone(),
            ),
            ApiError::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m.clone(),
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "dependency_unavailable",
                "the database is unavailable; retry later".to_owned(),
            ),
            ApiError::NotReady(m) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", m.clone()),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; the details are in the service log".to_owned(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        // Not being ready yet (or any more) is expected while starting and draining: probes
        // ask every few seconds, and an error line for each would hide real ones.
        if status.is_server_error() && !matches!(self, ApiError::NotReady(_)) {
            tracing::error!(error = %ErrorChain(&self), code, "request failed");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: code.to_owned(),
                    message,
                },
            }),
        )
            .into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Formats an error with all its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".to_owned(),
            ),
            JsonRejection::JsonSyntaxError(e) => ApiError::invalid(
                "invalid_json",
                format!("body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => ApiError::invalid(
                "invalid_body",
                format!(
                    "body does not match the expected shape: {}",
                    clean_serde_message(&e.body_text())
                ),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => body_too_large(),
            other => ApiError::invalid("invalid_body", other.body_text()),
        }
    }
}

/// The 413 for a body over the configured limit.
pub fn body_too_large() -> ApiError {
    ApiError::TooLarge(
        "request body is larger than BODY_LIMIT_BYTES allows; split it (batch: at most 10000 items per call)"
            .to_owned(),
    )
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid(
            "invalid_query",
            format!(
                "query string is invalid: {}",
                clean_serde_message(&rejection.body_text())
            ),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid("invalid_path", rejection.body_text())
    }
}

/// axum prefixes serde messages with "Failed to deserialize the JSON body into the target
/// type: "; the caller needs only the path and the reason that follow.
fn clean_serde_message(text: &str) -> String {
    let text = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .or_else(|| text.strip_prefix("Failed to deserialize query string: "))
        .unwrap_or(text);
    text.to_owned()
}
