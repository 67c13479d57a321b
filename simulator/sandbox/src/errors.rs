//! Notion's error object: `{object:"error", status, code, message, request_id}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered the way Notion answers it. `request_id` is added when it is rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds for the `Retry-After` header (429 and 529).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "validation_error", message)
    }

    pub fn invalid_json(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_json", message)
    }

    pub fn missing_version() -> ApiError {
        ApiError::new(
            400,
            "missing_version",
            "Notion-Version header failed validation: Notion-Version header should be defined, instead was `undefined`.",
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "unauthorized", "API token is invalid.")
    }

    pub fn not_found(kind: &str, id: &str) -> ApiError {
        ApiError::new(
            404,
            "object_not_found",
            format!(
                "Could not find {kind} with ID: {id}. Make sure the relevant pages and databases are shared with your integration."
            ),
        )
    }

    pub fn invalid_url() -> ApiError {
        ApiError::new(400, "invalid_request_url", "Invalid request URL.")
    }

    pub fn rate_limited(retry_after_s: u64) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s.max(1)),
            ..ApiError::new(
                429,
                "rate_limited",
                "This request exceeds the number of requests allowed. Slow down and try again.",
            )
        }
    }

    pub fn archived() -> ApiError {
        ApiError::validation(
            "Can't edit block that is archived. You must unarchive the block before editing.",
        )
    }

    /// An injected server-side failure; unknown statuses become 500.
    pub fn injected(status: u16) -> ApiError {
        match status {
            502 => ApiError::new(
                502,
                "bad_gateway",
                "Notion encountered an error while processing the request (injected by the sandbox).",
            ),
            503 => ApiError::new(
                503,
                "service_unavailable",
                "Notion is unavailable. Try again later (injected by the sandbox).",
            ),
            504 => ApiError::new(
                504,
                "gateway_timeout",
                "Notion timed out while attempting to complete this request (injected by the sandbox).",
            ),
            529 => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(
                    529,
                    "service_overload",
                    "Notion is overloaded. Try again later (injected by the sandbox).",
                )
            },
            _ => ApiError::new(
                500,
                "internal_server_error",
                "Unexpected error occurred (injected by the sandbox).",
            ),
        }
    }

    /// The HTTP response, with Notion's error body and `Retry-After` when set.
    pub fn render(&self, request_id: &str) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({
            "object": "error",
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
