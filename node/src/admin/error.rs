//! The admin API's one error type and its mapping onto HTTP: every failure answers
//! `{"error": code, "message": ..., "field"?: ...}` with the status that says what to do.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use quire_raft::command::ApplyError;
use quire_raft::control::{ReadError, WriteError};
use quire_raft::ids::IdError;

/// `WWW-Authenticate` challenge of the admin API.
pub const ADMIN_REALM_CHALLENGE: &str = r#"Bearer realm="quire-admin""#;

/// A request the admin API refused or could not serve. Messages never carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AdminError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`invalid_input`, `not_found`, ...).
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// The request field at fault, for `invalid_input`.
    pub field: Option<String>,
    /// More of the answer, merged into the body (the request of a `202 approval_pending`).
    pub detail: Option<serde_json::Value>,
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            detail: None,
        }
    }

    /// 400: a field of the request is wrong; `message` says how.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_input",
            message: format!("{field}: {message}"),
            field: Some(field.to_owned()),
            detail: None,
        }
    }

    /// 202: the change became an approval request (separation of duties); `detail` carries
    /// the request. Not a failure, but it ends the handler like one.
    pub fn approval_pending(message: impl Into<String>, detail: serde_json::Value) -> Self {
        Self {
            detail: Some(detail),
            ..Self::new(StatusCode::ACCEPTED, "approval_pending", message)
        }
    }

    /// 400: the request as a whole is malformed (not JSON, not an object, bad query).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 400: an id in `field` failed validation.
    pub fn invalid_id(field: &str, error: &IdError) -> Self {
        Self::invalid(field, error.to_string())
    }

    /// 401: no usable admin credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the caller's principal lacks the permission; the message names it.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: the named object does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not accept that method; see the admin API reference",
        )
    }

    /// 409: the request contradicts the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413: the body is larger than the admin API accepts.
    pub fn too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than {limit_bytes} bytes"),
        )
    }

    /// 503: no leader, or a read could not be confirmed; retry shortly.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: a fault of this node (e.g. the OS random source failed).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<ApplyError> for AdminError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::AlreadyExists(what) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{what} already exists"),
            ),
            ApplyError::NotFound(what) => Self::not_found(format!("{what} not found")),
            ApplyError::Conflict(what) => Self::conflict(what),
            ApplyError::Invalid(what) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", what)
            }
            ApplyError::LimitReached(what) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                format!("limit reached: {what}"),
            ),
            ApplyError::Unauthorized(what) => Self::unauthorized(format!(
                "{what} (it was revoked or expired before the change committed); nothing changed"
            )),
            ApplyError::Forbidden(what) => Self::forbidden(format!("{what}; nothing changed")),
        }
    }
}

impl From<WriteError> for AdminError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Rejected(e) => e.into(),
            WriteError::NotLeader {
                leader: Some(leader),
            } => Self::unavailable(format!(
                "this node is not the Raft leader (node {leader} is) and could not forward the change; retry, or send it to node {leader}"
            )),
            WriteError::NotLeader { leader: None } => Self::unavailable(
                "the cluster has no leader right now (an election may be running); retry in a few seconds",
            ),
            WriteError::Raft(e) => Self::unavailable(format!(
                "the control plane cannot commit right now ({e}); retry in a few seconds"
            )),
            WriteError::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the change was not confirmed in time; it may still commit: read the object back before retrying",
            ),
        }
    }
}

impl From<ReadError> for AdminError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotLeader {
                leader: Some(leader),
            } => Self::unavailable(format!(
                "this node cannot confirm a linearizable read (node {leader} leads); retry, ask node {leader}, or add ?consistency=local for this node's possibly stale view"
            )),
            ReadError::NotLeader { leader: None } => Self::unavailable(
                "the cluster has no leader right now, so a linearizable read cannot be confirmed; retry, or add ?consistency=local",
            ),
            ReadError::Raft(e) => Self::unavailable(format!(
                "the read could not be confirmed ({e}); retry, or add ?consistency=local"
            )),
            ReadError::Timeout => Self::unavailable(
                "the read could not be confirmed in time; retry, or add ?consistency=local",
            ),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let key = if self.status.is_success() {
            "status"
        } else {
            "error"
        };
        let mut body = serde_json::json!({
            key: self.code,
            "message": self.message,
        });
        if let Some(field) = &self.field {
            body["field"] = serde_json::Value::String(field.clone());
        }
        if let Some(serde_json::Value::Object(detail)) = self.detail {
            for (k, v) in detail {
                body[k] = v;
            }
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(ADMIN_REALM_CHALLENGE),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_errors_map_to_statuses() {
        let cases = [
            (ApplyError::AlreadyExists("x".into()), 409, "already_exists"),
            (ApplyError::NotFound("x".into()), 404, "not_found"),
            (ApplyError::Conflict("x".into()), 409, "conflict"),
            (ApplyError::Invalid("x".into()), 422, "rejected"),
            (ApplyError::LimitReached("x".into()), 422, "rejected"),
            (ApplyError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApplyError::Forbidden("x".into()), 403, "forbidden"),
        ];
        for (e, status, code) in cases {
            let a = AdminError::from(WriteError::Rejected(e));
            assert_eq!(a.status.as_u16(), status);
            assert_eq!(a.code, code);
        }
        let t = AdminError::from(WriteError::Timeout);
        assert_eq!(t.status.as_u16(), 504);
        assert!(t.message.contains("may still commit"), "{}", t.message);
        let u = AdminError::from(WriteError::NotLeader { leader: None });
        assert_eq!((u.status.as_u16(), u.code), (503, "unavailable"));
        let r = AdminError::from(ReadError::Timeout);
        assert_eq!((r.status.as_u16(), r.code), (503, "unavailable"));
    }

    #[test]
    fn unauthorized_carries_the_admin_realm() {
        let r = AdminError::unauthorized("no").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="quire-admin""#
        );
    }
}
