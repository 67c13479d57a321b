//! Bearer-token authentication of agents at the HTTP front. A token is looked up by its
//! SHA-256 in the replicated state (the secret itself is stored nowhere); the caller it
//! names travels with the request as an extension that the MCP handler reads.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;

/// Who is calling: resolved from a valid bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant_id: String,
    pub principal_id: String,
    pub workspace_id: String,
    pub token_id: String,
    pub scopes: BTreeSet<String>,
}

/// Largest `Authorization` header value considered; anything longer is not a Quire token.
const MAX_BEARER_BYTES: usize = 512;

/// Why a request carries no usable credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Invalid,
}

impl AuthFailure {
    fn description(&self) -> &'static str {
        match self {
            AuthFailure::Missing => {
                "a bearer token is required: send 'Authorization: Bearer <token>'"
            }
            AuthFailure::Malformed => "the Authorization header must be 'Bearer <token>'",
            AuthFailure::Invalid => "the bearer token is unknown, revoked or expired",
        }
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let challenge = match self {
            AuthFailure::Missing => r#"Bearer realm="quire""#.to_owned(),
            _ => format!(
                r#"Bearer realm="quire", error="invalid_token", error_description="{}""#,
                self.description()
            ),
        };
        let body = serde_json::json!({
            "error": if self == AuthFailure::Missing { "unauthorized" } else { "invalid_token" },
            "message": self.description(),
        });
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Extracts the bearer secret from the request headers.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, AuthFailure> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthFailure::Missing);
    };
    if value.len() > MAX_BEARER_BYTES {
        return Err(AuthFailure::Malformed);
    }
    let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// axum middleware: rejects the request with 401 unless it carries a valid token.
pub async fn require_bearer(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match bearer(request.headers())
        .and_then(|secret| app.authenticate(secret).ok_or(AuthFailure::Invalid))
    {
        Ok(caller) => caller,
        Err(failure) => return failure.into_response(),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(&HeaderMap::new()), Err(AuthFailure::Missing));
        assert_eq!(bearer(&headers("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(&headers("Basic abc")), Err(AuthFailure::Malformed));
        assert_eq!(bearer(&headers("Bearer")), Err(AuthFailure::Malformed));
        assert_eq!(
            bearer(&headers(&format!("Bearer {}", "x".repeat(600)))),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn unauthorized_carries_a_bearer_challenge() {
        let r = AuthFailure::Missing.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenge = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let r = AuthFailure::Invalid.into_response();
        let challenge = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
}
