//! Admin routes for backups and tenant moves:
//!
//! - `GET /backup` (`system.configure`, globally): the whole control-plane state at one
//!   applied log index, read after a linearizable barrier, as a checksummed envelope
//!   (`quire_raft::backup`). Secrets stay sealed; `quire restore` starts a new cluster from it.
//! - `GET /tenants/{t}/export` (`tenant.users.manage` and `audit.read` on the tenant: its
//!   tenant admin or an enterprise admin): the tenant's slice with its audit chain.
//! - `POST /tenants/import` (body: an export file; `tenants.create`, globally): proposes
//!   `ImportTenant` once the export's checksum holds and its master-key check opens with this
//!   node's key (sealed Notion tokens open only under the key they were sealed with).
//!
//! Each is recorded in the audit trail: a backup or export as a read, the import by `apply`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::json;

use quire_raft::audit::{AuditEvent, Severity};
use quire_raft::backup::{self, EnvelopeHeader};
use quire_raft::command::Command;
use quire_raft::ids::TenantId;
use quire_raft::rbac::Permission;

use super::AdminCaller;
use super::access;
use super::error::AdminError;
use super::routes::{ApiResult, Caller, Shared, id, ok, path, refuse, write};
use crate::app::App;

/// Largest tenant export `POST /tenants/import` accepts, in bytes.
pub const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/backup", get(take_backup))
        .route("/tenants/{tenant}/export", get(export_tenant))
        // The static path takes precedence over `/tenants/{tenant}`: GET and DELETE go on to
        // the tenant routes, so a tenant named `import` stays reachable.
        .route(
            "/tenants/import",
            post(import_tenant)
                .layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES))
                .get(get_tenant_named_import)
                .delete(delete_tenant_named_import),
        )
}

/// The tenant id the static `/tenants/import` path shadows.
const IMPORT_SEGMENT: &str = "import";

async fn get_tenant_named_import(app: Shared, caller: Caller, q: RawQuery) -> ApiResult {
    super::routes::get_tenant(app, caller, Ok(Path(IMPORT_SEGMENT.to_owned())), q).await
}

async fn delete_tenant_named_import(
    app: Shared,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    super::routes::delete_tenant(app, caller, Ok(Path(IMPORT_SEGMENT.to_owned())), body).await
}

fn audit_read(app: &App, caller: &AdminCaller, tenant: Option<TenantId>, action: &str, what: &str) {
    let event = AuditEvent {
        at_ms: app.clock.now_ms(),
        node: app.config.node.id,
        principal: caller.actor(),
        tenant,
        workspace: None,
        kind: "admin".to_owned(),
        action: action.to_owned(),
        resource: Some(what.to_owned()),
        outcome: "ok".to_owned(),
        latency_ms: None,
        notion_requests: None,
        justification: None,
        severity: Severity::Info,
    };
    if let Err(e) = app.audit.record(event) {
        tracing::warn!(error = %e, action, "could not queue the audit record");
    }
}

fn envelope_response(header: &EnvelopeHeader, bytes: Vec<u8>) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        bytes,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&header.body_sha256) {
        headers.insert("x-quire-sha256", v);
    }
    headers.insert("x-quire-log-index", HeaderValue::from(header.log_index));
    response
}

/// Copies the state after a linearizable barrier, with the index it was applied to.
async fn consistent_state(app: &App) -> Result<(quire_raft::State, u64), AdminError> {
    app.read(|_| ()).await?;
    Ok(app
        .control
        .read_applied_indexed(|s, index| (s.clone(), index)))
}

/// `GET /backup`.
async fn take_backup(State(app): Shared, Extension(caller): Caller) -> ApiResult {
    access::check_system(&app, &caller, "GET /backup")?;
    let (state, index) = consistent_state(&app).await?;
    let (header, bytes) = backup::write_backup(&state, index, app.clock.now_ms())
        .map_err(|e| AdminError::internal(format!("cannot write the backup: {e}")))?;
    audit_read(&app, &caller, None, "backup", &format!("log_index:{index}"));
    tracing::info!(admin_token = %caller.token_id, log_index = index, bytes = bytes.len(), "backup taken");
    Ok(envelope_response(&header, bytes))
}

/// `GET /tenants/{tenant}/export`.
async fn export_tenant(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let what = format!("GET /tenants/{}/export", tenant.as_str());
    let (state, index) = consistent_state(&app).await?;
    let now_ms = app.clock.now_ms();
    let scope = access::tenant_scope(&tenant);
    for permission in [Permission::TenantUsersManage, Permission::AuditRead] {
        access::check(&caller, &state, permission, &scope, now_ms)
            .map_err(|d| refuse(&app, &caller, d, &what))?;
    }
    if state.tenant(&tenant).is_none() {
        return Err(super::routes::tenant_missing(&tenant));
    }
    let (header, bytes) = backup::write_tenant_export(&state, &tenant, index, now_ms)
        .map_err(|e| AdminError::internal(format!("cannot write the export: {e}")))?;
    audit_read(
        &app,
        &caller,
        Some(tenant.clone()),
        "export_tenant",
        &format!("tenant:{}", tenant.as_str()),
    );
    tracing::info!(admin_token = %caller.token_id, tenant = tenant.as_str(), "tenant exported");
    Ok(envelope_response(&header, bytes))
}

/// `POST /tenants/import`.
async fn import_tenant(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::too_large(MAX_IMPORT_BYTES)
        } else {
            AdminError::bad_request(format!("cannot read the request body: {e}"))
        }
    })?;
    let (header, slice) = backup::read_tenant_export(&body)
        .map_err(|e| AdminError::bad_request(format!("the tenant export is refused: {e}")))?;
    if app.master_key.verify_key_check(&header.key_check).is_err() {
        return Err(AdminError::bad_request(format!(
            "the tenant export comes from cluster {:?}, whose master key differs from this cluster's: its sealed Notion tokens could not be opened here. Import it into a cluster that runs with the same master key",
            header.cluster_name
        )));
    }
    let tenant = slice.tenant.tenant.id.clone();
    let records = slice.audit.records.len();
    write(
        &app,
        &caller,
        Command::ImportTenant {
            slice: Box::new(slice),
            at_ms: app.clock.now_ms(),
            node: app.config.node.id,
        },
        None,
    )
    .await?;
    Ok(ok(json!({
        "tenant": tenant.as_str(),
        "from_cluster": header.cluster_name,
        "from_log_index": header.log_index,
        "audit_records": records,
        "imported": true,
    })))
}
