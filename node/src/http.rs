//! The HTTP front: `/mcp` (bearer-authenticated MCP over Streamable HTTP), `/healthz`
//! (the process answers), `/readyz` (the node can serve: a Raft leader is known and the
//! data plane runs) and `/metrics` (Prometheus text format; an admin token only with
//! `metrics.require_token`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;
use crate::{auth, mcp};

pub fn router(app: Arc<App>) -> Router {
    let mcp_routes = Router::new()
        .nest_service("/mcp", mcp::service(app.clone()))
        .layer(axum::middleware::from_fn(session_end_is_no_content))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_bearer,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::serve))
        .route(auth::RESOURCE_METADATA_PATH, get(resource_metadata))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .merge(mcp_routes)
        .with_state(app.clone())
        .merge(crate::nodes_api::router(app.clone()))
        .nest(
            "/admin/v1",
            crate::admin::router(app.clone()).layer(axum::middleware::from_fn_with_state(
                app,
                crate::metrics::count_admin,
            )),
        )
}

/// A session closed by `DELETE /mcp` answers 204 No Content (rmcp says 202, which clients
/// such as the official Python SDK report as a failed termination).
async fn session_end_is_no_content(request: Request, next: Next) -> Response {
    let is_delete = request.method() == Method::DELETE;
    let response = next.run(request).await;
    if is_delete && response.status() == StatusCode::ACCEPTED {
        return StatusCode::NO_CONTENT.into_response();
    }
    response
}

/// RFC 9728 protected-resource metadata of `/mcp`: where to get tokens and which scopes.
async fn resource_metadata(State(app): State<Arc<App>>) -> impl IntoResponse {
    axum::Json(auth::resource_metadata(&app))
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
}

async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let status = app.control.status();
    let leader_known = status.leader.is_some();
    let ready = app.is_ready() && leader_known;
    let body = serde_json::json!({
        "ready": ready,
        "node_id": status.node_id,
        "leader": status.leader,
        "term": status.term,
        "last_log_index": status.last_log_index,
        "applied_index": status.applied_index,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}
