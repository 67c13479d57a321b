//! Bearer-token authentication of agents at the HTTP front. An opaque token is looked up by
//! its SHA-256 in the replicated state (the secret itself is stored nowhere); a JWT is
//! verified by [`crate::jwt`] (built-in issuer) or [`crate::oidc`] (a tenant's provider). The
//! caller it names travels with the request as an extension that the MCP handler reads.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;

/// Who is calling: resolved from a valid bearer token (an opaque `qk_` token, a JWT of the
/// built-in issuer, or a JWT of the tenant's OpenID Connect provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant_id: String,
    pub principal_id: String,
    pub workspace_id: String,
    /// The opaque token's id, or a JWT's `jti` (`oidc:<jti or sub>` for a provider's token).
    pub token_id: String,
    pub scopes: BTreeSet<String>,
    /// Roles the caller's identity provider grants for this request (its mapped groups), on
    /// top of the principal's stored bindings; empty for Quire's own tokens.
    pub extra_roles: Vec<(quire_raft::rbac::Role, quire_raft::rbac::RoleScope)>,
}

/// Largest `Authorization` header value considered (an identity provider's JWT with many
/// groups runs to a few KB); anything longer is refused as malformed.
const MAX_BEARER_BYTES: usize = 8 * 1024;

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
            AuthFailure::Invalid => {
                "the bearer token is unknown, revoked or expired, or (a JWT) does not verify"
            }
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

/// Path of the protected-resource metadata of `/mcp` (RFC 9728: the well-known prefix
/// inserted before the resource's path).
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

/// The URL of the protected-resource metadata.
pub fn resource_metadata_url(app: &App) -> String {
    format!("{}{RESOURCE_METADATA_PATH}", app.config.public_url())
}

/// The protected-resource metadata document (RFC 9728) of the MCP endpoint.
pub fn resource_metadata(app: &App) -> serde_json::Value {
    let base = app.config.public_url();
    serde_json::json!({
        "resource": format!("{base}/mcp"),
        "authorization_servers": [base],
        "scopes_supported": crate::mcp::SCOPES_SUPPORTED,
        "bearer_methods_supported": ["header"],
        "resource_name": "Quire (governed Notion access)",
    })
}

fn with_challenge(mut response: Response, challenge: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// 401 for `/mcp`: the challenge names the resource metadata and the scope to ask for.
fn mcp_unauthorized(app: &App, failure: AuthFailure) -> Response {
    let metadata = resource_metadata_url(app);
    let challenge = match failure {
        AuthFailure::Missing => format!(
            r#"Bearer resource_metadata="{metadata}", scope="{}""#,
            crate::mcp::SCOPE_MCP
        ),
        _ => format!(
            r#"Bearer error="invalid_token", error_description="{}", resource_metadata="{metadata}", scope="{}""#,
            failure.description(),
            crate::mcp::SCOPE_MCP
        ),
    };
    with_challenge(failure.into_response(), &challenge)
}

/// 403 with `error="insufficient_scope"` naming the scope the request needs.
pub fn insufficient_scope(app: &App, scope: &str, message: String) -> Response {
    let challenge = format!(
        r#"Bearer error="insufficient_scope", scope="{scope}", resource_metadata="{}", error_description="{message}""#,
        resource_metadata_url(app)
    );
    let body =
        serde_json::json!({"error": "insufficient_scope", "scope": scope, "message": message});
    with_challenge(
        (StatusCode::FORBIDDEN, axum::Json(body)).into_response(),
        &challenge,
    )
}

/// axum middleware of `/mcp`: 401 unless the request carries a valid token, 403 unless the
/// token has `mcp_server_access` and, for a `tools/call`, the scope that tool needs (decided
/// before rmcp or the tool sees the arguments).
pub async fn require_bearer(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Response {
    // The access rules must be confirmed current within the revocation bound.
    if let Err(e) = app.freshness.ensure(&app.router).await {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "error": "unavailable",
                "message": format!(
                    "this node cannot confirm its access rules are current ({e}); retry shortly or use another node"
                ),
            })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let caller = match bearer(request.headers()) {
        Ok(secret) => match app.authenticate(secret).await {
            Some(caller) => caller,
            None => return mcp_unauthorized(&app, AuthFailure::Invalid),
        },
        Err(failure) => return mcp_unauthorized(&app, failure),
    };
    if !caller.scopes.contains(crate::mcp::SCOPE_MCP) {
        return insufficient_scope(
            &app,
            crate::mcp::SCOPE_MCP,
            format!("the token lacks the scope {}", crate::mcp::SCOPE_MCP),
        );
    }
    if request.method() == axum::http::Method::POST {
        let (parts, body) = request.into_parts();
        let limit = app.config.mcp.max_request_body_bytes;
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({
                    "error": "payload_too_large",
                    "message": format!("the request body is larger than {limit} bytes"),
                })),
            )
                .into_response();
        };
        if let Some((tool, scope)) = missing_tool_scope(&caller, &bytes) {
            return insufficient_scope(
                &app,
                scope,
                format!("the tool {tool} needs the scope {scope}"),
            );
        }
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// For a JSON-RPC `tools/call` (alone or in a batch) of a tool whose scope the caller lacks:
/// the tool and the scope.
fn missing_tool_scope(caller: &Caller, body: &[u8]) -> Option<(String, &'static str)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let messages = match &value {
        serde_json::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    static CATALOG: std::sync::LazyLock<Vec<crate::tools::ToolSpec>> =
        std::sync::LazyLock::new(crate::tools::catalog);
    for m in messages {
        if m.get("method").and_then(|v| v.as_str()) != Some("tools/call") {
            continue;
        }
        let Some(name) = m.pointer("/params/name").and_then(|v| v.as_str()) else {
            continue;
        };
        let Some(spec) = CATALOG.iter().find(|t| t.name == name) else {
            continue;
        };
        let scope = crate::mcp::scope_for(spec);
        if !caller.scopes.contains(scope) {
            return Some((name.to_owned(), scope));
        }
    }
    None
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
            bearer(&headers(&format!("Bearer {}", "x".repeat(9000)))),
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
