//! Admin routes for the group's members: `GET /admin/v1/nodes` (each member's role and Raft
//! figures, asked of the member itself), `DELETE /admin/v1/nodes/{id}` (remove a member), and,
//! only with `peer.fault_injection`, `POST /admin/v1/test/faults` to cut or heal this node's
//! outgoing links (failure tests).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use quire_raft::membership::{MemberRole, MembershipError};

use crate::app::App;

type Shared = State<Arc<App>>;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// Authenticates the admin token and checks `system.configure`: the group's members are
/// cluster configuration, not any one tenant's (a denial answers 403 and is audited).
async fn require_admin(State(app): Shared, request: Request, next: Next) -> Response {
    let secret = crate::auth::bearer(request.headers()).ok();
    let caller = secret.and_then(|s| crate::admin::authenticate_admin(&app, s));
    if let Some(caller) = &caller {
        let what = format!("{} {}", request.method(), request.uri().path());
        if let Err(e) = crate::admin::access::check_system(&app, caller, &what) {
            return e.into_response();
        }
    }
    if caller.is_none() {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an admin token is required: send 'Authorization: Bearer qa_...'",
        );
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static(r#"Bearer realm="quire-admin""#),
        );
        return response;
    }
    next.run(request).await
}

/// Routes under `/admin/v1/nodes` and `/admin/v1/test`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/admin/v1/nodes", get(list_nodes))
        .route("/admin/v1/nodes/{id}", delete(remove_node))
        .route("/admin/v1/test/faults", post(set_faults))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_admin,
        ))
        .with_state(app)
}

/// Every member with its role and, asked of the member itself, its Raft figures.
pub async fn members_json(app: &App) -> Value {
    let status = app.control.status();
    let members = app.control.members();
    let (labels, draining) = app
        .control
        .read_applied(|s| (s.placement().nodes.clone(), s.placement().draining.clone()));
    let mut out = Vec::new();
    for member in members {
        let role = if Some(member.id) == status.leader {
            "leader"
        } else if member.role == MemberRole::Voter {
            "follower"
        } else {
            "learner"
        };
        let mut entry = json!({
            "id": member.id,
            "addr": member.addr,
            "role": role,
            "reachable": true,
            "last_log_index": Value::Null,
            "applied_index": Value::Null,
            "region": labels.get(&member.id).map(|l| l.region.clone()),
            "zone": labels.get(&member.id).and_then(|l| l.zone.clone()),
            "capacity": labels.get(&member.id).map(|l| l.capacity),
            "draining": draining.contains(&member.id),
        });
        if member.id == status.node_id {
            entry["last_log_index"] = json!(status.last_log_index);
            entry["applied_index"] = json!(status.applied_index);
        } else if let Some(peers) = &app.router.peers {
            match peers.status(&member.addr).await {
                Ok(s) => {
                    entry["last_log_index"] = json!(s.last_log_index);
                    entry["applied_index"] = json!(s.applied_index);
                    entry["term"] = json!(s.term);
                }
                Err(e) => {
                    entry["reachable"] = json!(false);
                    entry["error"] = json!(e.to_string());
                }
            }
        }
        out.push(entry);
    }
    json!({
        "node_id": status.node_id,
        "leader": status.leader,
        "term": status.term,
        "members": out,
    })
}

async fn list_nodes(State(app): Shared) -> Response {
    (StatusCode::OK, axum::Json(members_json(&app).await)).into_response()
}

async fn remove_node(State(app): Shared, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("node id {id:?} is not a number"),
        );
    };
    let result = match app.control.remove(id).await {
        Err(MembershipError::NotLeader { leader }) => {
            let addr = leader.and_then(|l| app.control.member_addr(l));
            match (&app.router.peers, addr) {
                (Some(peers), Some(addr)) => {
                    peers.remove(&addr, id).await.map(|_| ()).map_err(|e| {
                        error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            e.to_string(),
                        )
                    })
                }
                _ => Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "no leader is known; retry when the cluster has elected one",
                )),
            }
        }
        Err(MembershipError::Refused(message)) => {
            Err(error(StatusCode::CONFLICT, "refused", message))
        }
        Err(MembershipError::Raft(message)) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message,
        )),
        Ok(()) => Ok(()),
    };
    match result {
        Ok(()) => {
            tracing::info!(node_id = id, "removed a node from the cluster");
            (StatusCode::OK, axum::Json(members_json(&app).await)).into_response()
        }
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    /// Peers whose links from this node are cut.
    #[serde(default)]
    cut: Vec<u64>,
    /// Heal every link first.
    #[serde(default)]
    heal: bool,
}

async fn set_faults(State(app): Shared, body: axum::body::Bytes) -> Response {
    let Some(faults) = &app.router.faults else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "fault injection is off on this node (peer.fault_injection)",
        );
    };
    let request: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_input", e.to_string()),
    };
    let me = app.control.config().node_id;
    if request.heal {
        faults.heal_all();
    }
    for peer in &request.cut {
        faults.cut(me, *peer);
    }
    tracing::warn!(cut = ?request.cut, heal = request.heal, "test fault injection changed this node's links");
    (
        StatusCode::OK,
        axum::Json(json!({"node_id": me, "cut": request.cut, "healed": request.heal})),
    )
        .into_response()
}
