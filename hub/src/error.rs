//! The one place where failures become what clients see: an HTTP status with a JSON body before
//! the upgrade, or a close code after it. Internal details go to the log, never to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chorus_protocol::ext::ErrorCode;
use serde_json::json;

/// A refusal before the WebSocket upgrade.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (bad room name, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// No valid token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing here.
    #[error("{0}")]
    NotFound(String),
    /// The node is at a limit or draining; retry later (elsewhere).
    #[error("{0}")]
    Unavailable(String),
    /// A tenant quota (connections, rooms, rate) is used up.
    #[error("{0}")]
    TooManyRequests(String),
}

impl ApiError {
    /// The HTTP status and error code.
    pub fn parts(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}
