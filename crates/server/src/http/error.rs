//! The API's errors: a status and a JSON body `{"error": reason}`, and the few ways handlers
//! turn a failure into one.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// An error answer: a status and a JSON body `{"error": reason}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Why, in words for the person who asked.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.reason }));
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is left unread, so hyper closes the connection after this
            // answer. Saying so keeps a client from sending its next request down it (reqwest then
            // failed that request with `IncompleteMessage` when it lost the race).
            let close = [(header::CONNECTION, "close")];
            return (self.status, close, body).into_response();
        }
        (self.status, body).into_response()
    }
}

pub(super) fn bad_request(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, reason)
}

pub(super) fn no_run(run_id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("there is no run {run_id}"))
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "The store failed during an API call.");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store does not answer; retry later",
    )
}

/// A request the run's or case's state refuses: 409 with the reason (404 for what does not
/// exist, 400 for a malformed change); store failures: 503.
pub(super) fn refused(error: Error) -> ApiError {
    match error {
        Error::Store(error) => unavailable(error),
        Error::Run(runner::Error::Journal(error)) => unavailable(error),
        Error::NotFound(reason) => ApiError::new(StatusCode::NOT_FOUND, reason),
        Error::Invalid(reason) => bad_request(reason),
        other => ApiError::new(StatusCode::CONFLICT, other.to_string()),
    }
}
