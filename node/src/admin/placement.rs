//! Admin routes for placement and residency:
//!
//! - `GET /placement` (`system.configure`, globally): the shard map as this node applied it —
//!   each node's labels, health (from one status probe) and shard count, every shard's owner
//!   and epoch, unplaceable and held shards, and the moves a round would make now.
//! - `POST /placement/rebalance` (`system.configure`): runs one placement round now and
//!   proposes its moves (`ApplyPlacement`, fenced by the shards' epochs, so it never races the
//!   leader's controller into two owners). Members that do not answer the probe keep their
//!   shards: moving shards off a dead node is the controller's, after the grace period.
//! - `POST /nodes/{id}/drain` and `DELETE /nodes/{id}/drain`: propose `SetNodeDraining`
//!   (`system.configure`, audited like any admin command). A draining node receives no shards
//!   and the controller moves the ones it owns elsewhere, `placement.max_moves_per_round` per
//!   round; the answer gives how many it owns now (`GET /placement` shows the progress).
//! - `PUT /tenants/{t}/residency` (body `{"regions": [...], "preferred_region": ...}`):
//!   proposes `SetTenantResidency`, which `apply` authorises with `system.configure` — where a
//!   tenant's data may live is cluster configuration, so a tenant admin cannot move it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use serde_json::json;

use quire_raft::command::Command;
use quire_raft::ids::TenantId;
use quire_raft::placement::Residency;

use super::access;
use super::body::Body;
use super::error::AdminError;
use super::routes::{
    ApiResult, Caller, Shared, bytes, id, justification, justification_only, ok, path, write,
};
use crate::app::App;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/placement", get(show))
        .route("/placement/rebalance", post(rebalance))
        .route("/tenants/{tenant}/residency", put(set_residency))
        .route("/nodes/{node}/drain", post(drain).delete(undrain))
}

async fn drain(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    set_draining(&app, &caller, path(p)?, body, true).await
}

async fn undrain(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    set_draining(&app, &caller, path(p)?, body, false).await
}

async fn set_draining(
    app: &App,
    caller: &super::AdminCaller,
    node: String,
    body: Result<Bytes, BytesRejection>,
    draining: bool,
) -> ApiResult {
    let node: u64 = node
        .parse()
        .map_err(|_| AdminError::invalid("node", format!("node id {node:?} is not a number")))?;
    let why = justification_only(body)?;
    let changed = write(
        app,
        caller,
        Command::SetNodeDraining { node, draining },
        why,
    )
    .await?;
    let owned = app
        .control
        .read_applied(|s| crate::placement::shards_owned(s, node));
    Ok(ok(json!({
        "node": node,
        "draining": draining,
        "changed": changed,
        "shards": owned,
    })))
}

async fn show(State(app): Shared, Extension(caller): Caller) -> ApiResult {
    access::check_system(&app, &caller, "GET /placement")?;
    Ok(ok(crate::placement::snapshot(&app).await))
}

async fn rebalance(State(app): Shared, Extension(caller): Caller) -> ApiResult {
    access::check_system(&app, &caller, "POST /placement/rebalance")?;
    let round = crate::placement::rebalance(&app).await?;
    tracing::info!(
        admin_token = %caller.token_id,
        moves = round.plan.moves.len(),
        applied = round.applied,
        "placement rebalanced on request"
    );
    Ok(ok(crate::placement::round_json(&round)))
}

/// Reads `regions` and `preferred_region` from a body and checks them.
pub(super) fn residency(b: &mut Body) -> Result<Residency, AdminError> {
    let r = Residency {
        allowed_regions: b
            .opt_strings("regions")?
            .unwrap_or_default()
            .into_iter()
            .collect(),
        preferred_region: b.opt_string("preferred_region")?,
    };
    r.check()
        .map_err(|e| AdminError::invalid("regions", e.to_string()))?;
    Ok(r)
}

/// The JSON of a tenant's residency.
pub(super) fn residency_json(r: &Residency) -> serde_json::Value {
    json!({
        "regions": r.allowed_regions,
        "preferred_region": r.preferred_region,
    })
}

async fn set_residency(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let mut b = Body::parse(
        &bytes(body)?,
        &["regions", "preferred_region", "justification"],
    )?;
    let r = residency(&mut b)?;
    let why = justification(&mut b)?;
    let changed = write(
        &app,
        &caller,
        Command::SetTenantResidency {
            tenant: tenant.clone(),
            residency: r.clone(),
        },
        why,
    )
    .await?;
    let mut out = residency_json(&r);
    out["tenant"] = json!(tenant.as_str());
    out["changed"] = json!(changed);
    Ok(ok(out))
}
