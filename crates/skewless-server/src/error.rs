//! The server's errors and their one mapping to HTTP status and JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use skewless_core::CoreError;
use skewless_state::StateError;
use skewless_store::StoreError;
use thiserror::Error;

/// Anything the gateway or admin API can fail with.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No or wrong admin token.
    #[error("missing or invalid admin token")]
    Unauthorized,
    /// The token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but refused by a rule.
    #[error("{0}")]
    Unprocessable(String),
    /// One client holds too much.
    #[error("{0}")]
    TooMany(String),
    /// The server is at a limit.
    #[error("{0}")]
    Unavailable(String),
    /// The body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// A domain rule.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The state store.
    #[error(transparent)]
    State(#[from] StateError),
    /// The blob store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Start-up failed.
    #[error("{0}")]
    Startup(String),
    /// An uploaded blob is being deleted by a garbage collection: the upload
    /// is not acknowledged, and succeeds again once the collection is done.
    #[error(
        "blob {0} is being deleted by a garbage collection; upload it again once the collection has finished"
    )]
    BeingCollected(skewless_core::BlobHash),
}

impl ServerError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ServerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServerError::Unauthorized => StatusCode::UNAUTHORIZED,
            ServerError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::Conflict(_) => StatusCode::CONFLICT,
            ServerError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServerError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ServerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Core(CoreError::UnknownRelease(_)) => StatusCode::NOT_FOUND,
            ServerError::Core(
                CoreError::Transition { .. } | CoreError::NoRollback(_) | CoreError::Refused(_),
            ) => StatusCode::CONFLICT,
            ServerError::Core(_) => StatusCode::BAD_REQUEST,
            ServerError::State(e) => match e {
                StateError::Exists(_) => StatusCode::CONFLICT,
                StateError::NotFound(_) => StatusCode::NOT_FOUND,
                StateError::Rule(CoreError::Transition { .. }) => StatusCode::CONFLICT,
                StateError::Rule(_) => StatusCode::BAD_REQUEST,
                StateError::NoRollback(_) => StatusCode::CONFLICT,
                StateError::Conflict(_) => StatusCode::CONFLICT,
                StateError::MissingBlobs(_) => StatusCode::UNPROCESSABLE_ENTITY,
                StateError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                StateError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ServerError::Store(e) => match e {
                StoreError::HashMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                StoreError::Interrupted(_) => StatusCode::BAD_REQUEST,
                StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::Corrupt(_) => StatusCode::BAD_GATEWAY,
                StoreError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                StoreError::Remote { .. } => StatusCode::BAD_GATEWAY,
            },
            ServerError::Startup(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ServerError::BeingCollected(_) => StatusCode::CONFLICT,
        }
    }
}

/// Seconds a client is told to wait before retrying what an unavailable
/// blob store refused.
pub const RETRY_AFTER: axum::http::HeaderValue = axum::http::HeaderValue::from_static("5");

/// The JSON body of every error answer: `{"error": "..."}`.
pub fn error_body(message: &str) -> String {
    let body = skewless_wire::ErrorBody {
        error: message.to_owned(),
    };
    // A struct of one string always serialises.
    serde_json::to_string(&body).unwrap_or_default()
}

/// A JSON error response `{"error": "..."}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = error_body(message);
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    resp
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = json_error(status, &self.to_string());
        if matches!(self, ServerError::Store(StoreError::Unavailable(_))) {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, RETRY_AFTER);
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"skewless\""),
            );
        }
        resp
    }
}
