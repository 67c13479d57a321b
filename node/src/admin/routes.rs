//! The admin API's routes and handlers. Each handler validates its input, builds one
//! control-plane command (or a read), and answers JSON.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use quire_raft::command::{Command, CommandOutput, check_display_name};
use quire_raft::ids::{IdError, IntegrationId, PrincipalId, TenantId, TokenId, WorkspaceId};
use quire_raft::rbac::{Permission, RoleScope, Subject};
use quire_raft::seal::{MAX_PLAINTEXT_BYTES, integration_aad};
use quire_raft::state::{
    AdminToken, ApiToken, BUDGET_MAX_BURST, BUDGET_MAX_RPS, Budget, Integration, Principal,
    State as ControlState, Workspace,
};

use super::access::{self, Denial, TenantView};
use super::body::{Body, Consistency, MAX_BODY_BYTES, ReadParams};
use super::error::AdminError;
use super::{
    API_TOKEN_PREFIX, AdminCaller, MAX_TTL_SECS, check_justification, expiry, new_secret,
    new_token_id,
};
use crate::app::App;
use crate::mcp::{SCOPE_MCP, SCOPE_READ, SCOPE_WRITE};

/// Scopes an API token may carry; a new token gets all of them unless it names its own.
pub const KNOWN_SCOPES: [&str; 3] = [SCOPE_MCP, SCOPE_READ, SCOPE_WRITE];
/// Longest Notion token accepted, in bytes (Notion's are about 50).
pub const MAX_NOTION_TOKEN_BYTES: usize = 4 * 1024;

pub(super) type Shared = State<Arc<App>>;
pub(super) type Caller = Extension<AdminCaller>;
pub(super) type ApiResult = Result<Response, AdminError>;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/cluster/status", get(cluster_status))
        .route("/tenants", post(create_tenant).get(list_tenants))
        .route("/tenants/{tenant}", get(get_tenant).delete(delete_tenant))
        .route(
            "/tenants/{tenant}/workspaces",
            post(create_workspace).get(list_workspaces),
        )
        .route("/tenants/{tenant}/workspaces/{id}", get(get_workspace))
        .route(
            "/tenants/{tenant}/integrations",
            post(add_integration).get(list_integrations),
        )
        .route(
            "/tenants/{tenant}/integrations/{id}",
            delete(remove_integration),
        )
        .route(
            "/tenants/{tenant}/integrations/{id}/rotate",
            post(rotate_integration),
        )
        .route(
            "/tenants/{tenant}/principals",
            post(create_principal).get(list_principals),
        )
        .route(
            "/tenants/{tenant}/principals/{id}/workspaces",
            post(grant_workspace),
        )
        .route(
            "/tenants/{tenant}/tokens",
            post(issue_token).get(list_tokens),
        )
        .route("/tenants/{tenant}/tokens/{id}", delete(revoke_token))
        .route("/admin-tokens", post(issue_admin).get(list_admin_tokens))
        .route("/admin-tokens/{id}", delete(revoke_admin))
        .route(
            "/principals",
            post(super::rbac::create_global_principal).get(super::rbac::list_global_principals),
        )
        .route(
            "/roles",
            post(super::rbac::assign_role).get(super::rbac::list_roles),
        )
        .route("/roles/{id}", delete(super::rbac::revoke_role))
        .route(
            "/restrictions",
            post(super::rbac::add_restriction).get(super::rbac::list_restrictions),
        )
        .route(
            "/restrictions/{id}",
            delete(super::rbac::remove_restriction),
        )
        .route(
            "/audit/retention",
            axum::routing::put(super::audit::set_retention),
        )
        .route("/audit/chains", get(super::audit::chains))
        .route("/audit/records", get(super::audit::records))
        .route("/audit/export", get(super::audit::export))
        .route("/audit/verify", get(super::audit::verify))
        .merge(super::jwt::routes())
        .merge(super::keys::routes())
        .merge(super::approvals::routes())
        .merge(super::delegations::routes())
        .merge(super::templates::routes())
        .merge(super::backup::routes())
        .merge(super::placement::routes())
        .merge(super::usage::routes())
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

async fn unknown_path() -> AdminError {
    AdminError::not_found("no such admin API path; see the admin API reference")
}

async fn method_not_allowed() -> AdminError {
    AdminError::method_not_allowed()
}

// ---- helpers ----

pub(super) fn created(body: Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(super) fn ok(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

pub(super) fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, AdminError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::too_large(MAX_BODY_BYTES)
        } else {
            AdminError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

pub(super) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, AdminError> {
    p.map(|Path(v)| v)
        .map_err(|e| AdminError::bad_request(format!("bad path: {e}")))
}

pub(super) fn id<T>(
    field: &str,
    value: String,
    make: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<T, AdminError> {
    make(value).map_err(|e| AdminError::invalid_id(field, &e))
}

pub(super) fn display_name(kind: &str, name: &str) -> Result<(), AdminError> {
    check_display_name(kind, name).map_err(|e| AdminError::invalid("display_name", e.to_string()))
}

pub(super) async fn read<R>(
    app: &App,
    params: &ReadParams,
    f: impl FnOnce(&ControlState) -> R,
) -> Result<R, AdminError> {
    match params.consistency {
        Consistency::Linearizable => Ok(app.read(f).await?),
        Consistency::Local => Ok(app.control.read_applied(f)),
    }
}

/// Proposes `cmd` on behalf of `caller` (authorised by `apply` at the command's log index,
/// and audited there with `justification`), logging the outcome (never the command's fields).
pub(super) async fn write(
    app: &App,
    caller: &AdminCaller,
    cmd: Command,
    justification: Option<String>,
) -> Result<bool, AdminError> {
    let kind = cmd.kind();
    match app
        .write(super::as_admin(app, caller, cmd, justification))
        .await
    {
        Ok(CommandOutput::Pending { approval }) => {
            tracing::info!(admin_token = %caller.token_id, command = kind, approval, "admin change held for approval");
            Err(super::approvals::pending(app, approval, kind, None).await)
        }
        Ok(output) => {
            tracing::info!(admin_token = %caller.token_id, command = kind, "admin change applied");
            Ok(output == CommandOutput::Done)
        }
        Err(e) => {
            let e = AdminError::from(e);
            tracing::info!(admin_token = %caller.token_id, command = kind, error = e.code, "admin change refused");
            Err(e)
        }
    }
}

/// A 403 for `denial`, audited; `what` names the request.
pub(super) fn refuse(app: &App, caller: &AdminCaller, denial: Denial, what: &str) -> AdminError {
    access::refuse(app, caller, denial, what)
}

/// The optional `justification` of a write body, checked.
pub(super) fn justification(b: &mut Body) -> Result<Option<String>, AdminError> {
    check_justification(b.opt_string("justification")?)
}

/// The body of a request that may carry only a `justification` (DELETE and the like).
pub(super) fn justification_only(
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<String>, AdminError> {
    let mut b = Body::parse(&bytes(body)?, &["justification"])?;
    justification(&mut b)
}

pub(super) fn tenant_missing(tenant: &TenantId) -> AdminError {
    AdminError::not_found(format!("tenant {:?} not found", tenant.as_str()))
}

fn budget_json(b: &Budget) -> Value {
    json!({"requests_per_second": b.requests_per_second, "burst": b.burst})
}

fn workspace_json(w: &Workspace) -> Value {
    json!({
        "tenant": w.tenant.as_str(),
        "id": w.id.as_str(),
        "display_name": w.display_name,
        "integration": w.integration_id.as_str(),
    })
}

fn integration_json(i: &Integration, workspaces: Vec<String>) -> Value {
    json!({
        "tenant": i.tenant.as_str(),
        "id": i.id.as_str(),
        "display_name": i.display_name,
        "budget": budget_json(&i.budget),
        "workspaces": workspaces,
    })
}

fn principal_json(p: &Principal) -> Value {
    json!({
        "tenant": p.tenant.as_str(),
        "id": p.id.as_str(),
        "display_name": p.display_name,
        "workspaces": p.workspaces.iter().map(WorkspaceId::as_str).collect::<Vec<_>>(),
    })
}

fn token_json(t: &ApiToken, now_ms: u64) -> Value {
    json!({
        "token_id": t.token_id.as_str(),
        "tenant": t.tenant.as_str(),
        "principal": t.principal.as_str(),
        "workspace": t.workspace_id.as_str(),
        "scopes": t.scopes,
        "issued_at_ms": t.issued_at_ms,
        "expires_at_ms": t.expires_at_ms,
        "revoked": t.revoked,
        "valid": t.is_valid_at(now_ms),
    })
}

fn admin_token_json(t: &AdminToken, now_ms: u64) -> Value {
    json!({
        "token_id": t.token_id.as_str(),
        "display_name": t.display_name,
        "subject": t.subject.as_ref().map(ToString::to_string),
        "issued_at_ms": t.issued_at_ms,
        "expires_at_ms": t.expires_at_ms,
        "revoked": t.revoked,
        "valid": t.is_valid_at(now_ms),
    })
}

// ---- cluster ----

async fn cluster_status(State(app): Shared, Extension(caller): Caller) -> ApiResult {
    access::check_system(&app, &caller, "GET /cluster/status")?;
    let s = app.control.status();
    // Each member's figures come from the member itself, over the peer transport.
    let nodes = crate::nodes_api::members_json(&app).await;
    let mut members = nodes["members"].as_array().cloned().unwrap_or_default();
    for member in &mut members {
        let this = member["id"].as_u64() == Some(s.node_id);
        member["this_node"] = json!(this);
    }
    Ok(ok(json!({
        "node_id": s.node_id,
        "leader": s.leader,
        "is_leader": s.is_leader,
        "term": s.term,
        "last_log_index": s.last_log_index,
        "applied_index": s.applied_index,
        "voters": s.voters,
        "members": members,
    })))
}

// ---- tenants ----

async fn create_tenant(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(
        &bytes(body)?,
        &[
            "id",
            "display_name",
            "justification",
            "regions",
            "preferred_region",
        ],
    )?;
    let tenant = id("id", b.string("id")?, TenantId::new)?;
    let name = b.string("display_name")?;
    display_name("tenant", &name)?;
    let residency = super::placement::residency(&mut b)?;
    let why = justification(&mut b)?;
    let cmd = if residency == quire_raft::placement::Residency::any() {
        Command::CreateTenant {
            tenant: tenant.clone(),
            display_name: name.clone(),
        }
    } else {
        Command::CreateTenantIn {
            tenant: tenant.clone(),
            display_name: name.clone(),
            residency: residency.clone(),
        }
    };
    write(&app, &caller, cmd, why).await?;
    let mut out = json!({"id": tenant.as_str(), "display_name": name});
    if residency != quire_raft::placement::Residency::any() {
        out["residency"] = super::placement::residency_json(&residency);
    }
    Ok(created(out))
}

fn tenant_summary(state: &ControlState, tenant: &TenantId) -> Option<Value> {
    let t = state.tenant(tenant)?;
    Some(json!({
        "id": t.id.as_str(),
        "display_name": t.display_name,
        "workspaces": state.workspaces(tenant).count(),
        "integrations": state.integrations(tenant).count(),
        "principals": state.principals(tenant).count(),
        "tokens": state.tokens(tenant).filter(|t| !t.revoked).count(),
        "residency": super::placement::residency_json(&state.placement().residency_of(tenant)),
    }))
}

async fn list_tenants(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = ReadParams::parse(q.as_deref(), true)?;
    let now_ms = app.clock.now_ms();
    let (tenants, next) = read(&app, &params, |s| {
        // `tenants.list` shows every tenant; otherwise those the caller may read.
        let all = access::may(
            &caller,
            s,
            Permission::TenantsList,
            &RoleScope::Global,
            now_ms,
        );
        let visible = s.tenants().filter(|t| {
            all || access::may(
                &caller,
                s,
                Permission::TenantRead,
                &access::tenant_scope(&t.id),
                now_ms,
            )
        });
        let (page, next) = params.page(visible, |t| t.id.as_str());
        let page: Vec<Value> = page
            .into_iter()
            .filter_map(|t| tenant_summary(s, &t.id))
            .collect();
        (page, next)
    })
    .await?;
    Ok(ok(json!({ "tenants": tenants, "next_after": next })))
}

pub(super) async fn get_tenant(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let params = ReadParams::parse(q.as_deref(), false)?;
    let now_ms = app.clock.now_ms();
    let found = read(&app, &params, |s| {
        access::check(
            &caller,
            s,
            Permission::TenantRead,
            &access::tenant_scope(&tenant),
            now_ms,
        )
        .map(|()| tenant_summary(s, &tenant))
    })
    .await?
    .map_err(|d| {
        refuse(
            &app,
            &caller,
            d,
            &format!("GET /tenants/{}", tenant.as_str()),
        )
    })?;
    found.map(ok).ok_or_else(|| tenant_missing(&tenant))
}

pub(super) async fn delete_tenant(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let why = justification_only(body)?;
    write(
        &app,
        &caller,
        Command::DeleteTenant {
            tenant: tenant.clone(),
        },
        why,
    )
    .await?;
    Ok(ok(json!({"id": tenant.as_str(), "deleted": true})))
}

// ---- workspaces ----

async fn create_workspace(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let mut b = Body::parse(
        &bytes(body)?,
        &["id", "display_name", "integration", "justification"],
    )?;
    let workspace = id("id", b.string("id")?, WorkspaceId::new)?;
    let name = b.string("display_name")?;
    display_name("workspace", &name)?;
    let integration = id("integration", b.string("integration")?, IntegrationId::new)?;
    let why = justification(&mut b)?;
    let w = Workspace {
        tenant: tenant.clone(),
        id: workspace.clone(),
        display_name: name.clone(),
        integration_id: integration.clone(),
    };
    write(
        &app,
        &caller,
        Command::CreateWorkspace {
            tenant,
            workspace,
            display_name: name,
            integration,
        },
        why,
    )
    .await?;
    Ok(created(workspace_json(&w)))
}

/// Reads what of `tenant` the caller may see and runs `f` on it: 403 (audited) if nothing,
/// 404 if the tenant does not exist.
async fn tenant_read<R>(
    app: &App,
    caller: &AdminCaller,
    params_consistency: Consistency,
    tenant: &TenantId,
    what: &str,
    f: impl FnOnce(&ControlState, &TenantView) -> R,
) -> Result<R, AdminError> {
    let now_ms = app.clock.now_ms();
    let params = ReadParams {
        consistency: params_consistency,
        limit: 1,
        after: None,
    };
    let found = read(app, &params, |s| {
        let view = access::tenant_view(caller, s, tenant, now_ms)?;
        Ok::<_, Denial>(s.tenant(tenant).map(|_| f(s, &view)))
    })
    .await?
    .map_err(|d| refuse(app, caller, d, what))?;
    found.ok_or_else(|| tenant_missing(tenant))
}

async fn list_workspaces(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let params = ReadParams::parse(q.as_deref(), true)?;
    let what = format!("GET /tenants/{}/workspaces", tenant.as_str());
    let (list, next) = tenant_read(
        &app,
        &caller,
        params.consistency,
        &tenant,
        &what,
        |s, view| {
            let visible = s.workspaces(&tenant).filter(|w| view.shows(&w.id));
            let (page, next) = params.page(visible, |w| w.id.as_str());
            (
                page.into_iter().map(workspace_json).collect::<Vec<_>>(),
                next,
            )
        },
    )
    .await?;
    Ok(ok(json!({ "workspaces": list, "next_after": next })))
}

async fn get_workspace(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (t, w) = path(p)?;
    let tenant = id("tenant", t, TenantId::new)?;
    let workspace = id("workspace", w, WorkspaceId::new)?;
    let params = ReadParams::parse(q.as_deref(), false)?;
    let now_ms = app.clock.now_ms();
    let found = read(&app, &params, |s| {
        access::check_workspace(&caller, s, &tenant, &workspace, now_ms)?;
        Ok(s.tenant(&tenant).map(|_| {
            s.workspace(&tenant, &workspace).map(|w| {
                let mut v = workspace_json(w);
                v["principals"] = s
                    .principals(&tenant)
                    .filter(|p| p.workspaces.contains(&workspace))
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .into();
                v
            })
        }))
    })
    .await?
    .map_err(|d: Denial| {
        refuse(
            &app,
            &caller,
            d,
            &format!(
                "GET /tenants/{}/workspaces/{}",
                tenant.as_str(),
                workspace.as_str()
            ),
        )
    })?;
    match found {
        None => Err(tenant_missing(&tenant)),
        Some(None) => Err(AdminError::not_found(format!(
            "workspace {:?} in tenant {:?} not found",
            workspace.as_str(),
            tenant.as_str()
        ))),
        Some(Some(v)) => Ok(ok(v)),
    }
}

// ---- integrations ----

/// Checks a Notion token without ever putting it in the error.
fn notion_token(token: &str) -> Result<(), AdminError> {
    if token.trim().is_empty() {
        return Err(AdminError::invalid("notion_token", "must not be empty"));
    }
    if token.len() > MAX_NOTION_TOKEN_BYTES.min(MAX_PLAINTEXT_BYTES) {
        return Err(AdminError::invalid(
            "notion_token",
            format!("is longer than {MAX_NOTION_TOKEN_BYTES} bytes"),
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AdminError::invalid(
            "notion_token",
            "must not contain spaces, line breaks or control characters",
        ));
    }
    Ok(())
}

fn seal(
    app: &App,
    tenant: &TenantId,
    integration: &IntegrationId,
    token: &str,
) -> Result<quire_raft::seal::SealedSecret, AdminError> {
    app.master_key
        .seal(
            token.as_bytes(),
            &integration_aad(tenant.as_str(), integration.as_str()),
            &mut StdRng::from_os_rng(),
        )
        .map_err(|e| AdminError::invalid("notion_token", e.to_string()))
}

async fn add_integration(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let mut b = Body::parse(
        &bytes(body)?,
        &[
            "id",
            "display_name",
            "notion_token",
            "requests_per_second",
            "burst",
            "justification",
        ],
    )?;
    let integration = id("id", b.string("id")?, IntegrationId::new)?;
    let name = b.string("display_name")?;
    display_name("integration", &name)?;
    let token = quire_raft::seal::Zeroizing::new(b.string("notion_token")?);
    notion_token(&token)?;
    let budget = Budget {
        requests_per_second: b
            .opt_u64("requests_per_second", 1, u64::from(BUDGET_MAX_RPS))?
            .map_or(app.config.notion.default_requests_per_second, |v| v as u32),
        burst: b
            .opt_u64("burst", 1, u64::from(BUDGET_MAX_BURST))?
            .map_or(app.config.notion.default_burst, |v| v as u32),
    };
    let why = justification(&mut b)?;
    let sealed_token = seal(&app, &tenant, &integration, &token)?;
    drop(token);
    write(
        &app,
        &caller,
        Command::AddIntegration {
            tenant: tenant.clone(),
            integration: integration.clone(),
            display_name: name.clone(),
            sealed_token,
            budget,
        },
        why,
    )
    .await?;
    Ok(created(json!({
        "tenant": tenant.as_str(),
        "id": integration.as_str(),
        "display_name": name,
        "budget": budget_json(&budget),
    })))
}

async fn rotate_integration(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (t, i) = path(p)?;
    let tenant = id("tenant", t, TenantId::new)?;
    let integration = id("integration", i, IntegrationId::new)?;
    let mut b = Body::parse(&bytes(body)?, &["notion_token", "justification"])?;
    let token = quire_raft::seal::Zeroizing::new(b.string("notion_token")?);
    notion_token(&token)?;
    let why = justification(&mut b)?;
    let sealed_token = seal(&app, &tenant, &integration, &token)?;
    drop(token);
    write(
        &app,
        &caller,
        Command::RotateIntegrationToken {
            tenant: tenant.clone(),
            integration: integration.clone(),
            sealed_token,
        },
        why,
    )
    .await?;
    Ok(ok(json!({
        "tenant": tenant.as_str(),
        "id": integration.as_str(),
        "rotated": true,
    })))
}

async fn remove_integration(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (t, i) = path(p)?;
    let tenant = id("tenant", t, TenantId::new)?;
    let integration = id("integration", i, IntegrationId::new)?;
    let why = justification_only(body)?;
    write(
        &app,
        &caller,
        Command::RemoveIntegration {
            tenant: tenant.clone(),
            integration: integration.clone(),
        },
        why,
    )
    .await?;
    Ok(ok(json!({
        "tenant": tenant.as_str(),
        "id": integration.as_str(),
        "removed": true,
    })))
}

async fn list_integrations(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let params = ReadParams::parse(q.as_deref(), true)?;
    let what = format!("GET /tenants/{}/integrations", tenant.as_str());
    let (list, next) = tenant_read(
        &app,
        &caller,
        params.consistency,
        &tenant,
        &what,
        |s, view| {
            let used_by = |i: &Integration| -> Vec<String> {
                s.workspaces(&tenant)
                    .filter(|w| w.integration_id == i.id && view.shows(&w.id))
                    .map(|w| w.id.as_str().to_owned())
                    .collect()
            };
            // A workspace manager sees the integrations serving its workspaces.
            let visible = s
                .integrations(&tenant)
                .filter(|i| *view == TenantView::All || !used_by(i).is_empty());
            let (page, next) = params.page(visible, |i| i.id.as_str());
            let page = page
                .into_iter()
                .map(|i| integration_json(i, used_by(i)))
                .collect::<Vec<_>>();
            (page, next)
        },
    )
    .await?;
    Ok(ok(json!({ "integrations": list, "next_after": next })))
}

// ---- principals ----

async fn create_principal(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let mut b = Body::parse(&bytes(body)?, &["id", "display_name", "justification"])?;
    let principal = id("id", b.string("id")?, PrincipalId::new)?;
    let name = b.string("display_name")?;
    display_name("principal", &name)?;
    let why = justification(&mut b)?;
    write(
        &app,
        &caller,
        Command::CreatePrincipal {
            tenant: tenant.clone(),
            principal: principal.clone(),
            display_name: name.clone(),
        },
        why,
    )
    .await?;
    Ok(created(json!({
        "tenant": tenant.as_str(),
        "id": principal.as_str(),
        "display_name": name,
        "workspaces": [],
    })))
}

async fn list_principals(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let params = ReadParams::parse(q.as_deref(), true)?;
    let what = format!("GET /tenants/{}/principals", tenant.as_str());
    let (list, next) = tenant_read(
        &app,
        &caller,
        params.consistency,
        &tenant,
        &what,
        |s, view| {
            // A workspace manager sees the members of its workspaces.
            let visible = s
                .principals(&tenant)
                .filter(|p| *view == TenantView::All || p.workspaces.iter().any(|w| view.shows(w)));
            let (page, next) = params.page(visible, |p| p.id.as_str());
            (
                page.into_iter().map(principal_json).collect::<Vec<_>>(),
                next,
            )
        },
    )
    .await?;
    Ok(ok(json!({ "principals": list, "next_after": next })))
}

async fn grant_workspace(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (t, pr) = path(p)?;
    let tenant = id("tenant", t, TenantId::new)?;
    let principal = id("principal", pr, PrincipalId::new)?;
    let mut b = Body::parse(&bytes(body)?, &["workspace", "justification"])?;
    let workspace = id("workspace", b.string("workspace")?, WorkspaceId::new)?;
    let why = justification(&mut b)?;
    let changed = write(
        &app,
        &caller,
        Command::GrantWorkspace {
            tenant: tenant.clone(),
            principal: principal.clone(),
            workspace: workspace.clone(),
        },
        why,
    )
    .await?;
    Ok(ok(json!({
        "tenant": tenant.as_str(),
        "principal": principal.as_str(),
        "workspace": workspace.as_str(),
        "granted": true,
        "changed": changed,
    })))
}

// ---- API tokens ----

fn scopes(requested: Option<Vec<String>>) -> Result<BTreeSet<String>, AdminError> {
    let Some(requested) = requested else {
        return Ok(KNOWN_SCOPES.iter().map(|s| (*s).to_owned()).collect());
    };
    if requested.is_empty() {
        return Err(AdminError::invalid(
            "scopes",
            format!(
                "must name at least one scope (or be left out for all of: {})",
                KNOWN_SCOPES.join(", ")
            ),
        ));
    }
    let mut set = BTreeSet::new();
    for scope in requested {
        if !KNOWN_SCOPES.contains(&scope.as_str()) {
            let shown: String = scope.chars().take(64).collect();
            return Err(AdminError::invalid(
                "scopes",
                format!(
                    "unknown scope {shown:?}; known scopes: {}",
                    KNOWN_SCOPES.join(", ")
                ),
            ));
        }
        set.insert(scope);
    }
    Ok(set)
}

async fn issue_token(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let mut b = Body::parse(
        &bytes(body)?,
        &[
            "principal",
            "workspace",
            "scopes",
            "ttl_secs",
            "justification",
        ],
    )?;
    let principal = id("principal", b.string("principal")?, PrincipalId::new)?;
    let workspace = id("workspace", b.string("workspace")?, WorkspaceId::new)?;
    let scopes = scopes(b.opt_strings("scopes")?)?;
    let ttl_secs = b.opt_u64("ttl_secs", 1, MAX_TTL_SECS)?;
    let why = justification(&mut b)?;
    let issued_at_ms = app.clock.now_ms();
    let expires_at_ms = expiry(issued_at_ms, ttl_secs)?;
    let token_id = new_token_id("tok-")?;
    let secret = new_secret(API_TOKEN_PREFIX);
    write(
        &app,
        &caller,
        Command::IssueToken {
            tenant: tenant.clone(),
            principal: principal.clone(),
            workspace: workspace.clone(),
            token_id: token_id.clone(),
            secret_hash: quire_raft::hash_api_token(&secret),
            scopes: scopes.clone(),
            issued_at_ms,
            expires_at_ms,
        },
        why,
    )
    .await?;
    Ok(created(json!({
        "token_id": token_id.as_str(),
        "token": secret,
        "tenant": tenant.as_str(),
        "principal": principal.as_str(),
        "workspace": workspace.as_str(),
        "scopes": scopes,
        "issued_at_ms": issued_at_ms,
        "expires_at_ms": expires_at_ms,
        "note": "the token is shown once; store it now",
    })))
}

async fn list_tokens(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let now_ms = app.clock.now_ms();
    let params = ReadParams::parse(q.as_deref(), true)?;
    let what = format!("GET /tenants/{}/tokens", tenant.as_str());
    let (list, next) = tenant_read(
        &app,
        &caller,
        params.consistency,
        &tenant,
        &what,
        |s, view| {
            let visible = s.tokens(&tenant).filter(|t| view.shows(&t.workspace_id));
            let (page, next) = params.page(visible, |t| t.token_id.as_str());
            let page = page.into_iter().map(|t| token_json(t, now_ms));
            (page.collect::<Vec<_>>(), next)
        },
    )
    .await?;
    Ok(ok(json!({ "tokens": list, "next_after": next })))
}

async fn revoke_token(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let (t, k) = path(p)?;
    let tenant = id("tenant", t, TenantId::new)?;
    let token_id = id("token", k, TokenId::new)?;
    let why = justification_only(body)?;
    let changed = write(
        &app,
        &caller,
        Command::RevokeToken {
            tenant: tenant.clone(),
            token_id: token_id.clone(),
        },
        why,
    )
    .await?;
    Ok(ok(json!({
        "token_id": token_id.as_str(),
        "revoked": true,
        "changed": changed,
    })))
}

// ---- admin tokens ----

async fn issue_admin(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(
        &bytes(body)?,
        &["display_name", "ttl_secs", "subject", "justification"],
    )?;
    let name = b.string("display_name")?;
    let ttl_secs = b.opt_u64("ttl_secs", 1, MAX_TTL_SECS)?;
    let subject = b
        .opt_string("subject")?
        .map(|s| s.parse::<Subject>())
        .transpose()
        .map_err(|e| AdminError::invalid("subject", e))?;
    let why = justification(&mut b)?;
    let issued = super::issue_admin_token_for(
        &app,
        super::AdminTokenRequest {
            display_name: name.clone(),
            ttl_secs,
            subject: subject.clone(),
            justification: why,
        },
        Some(&caller),
    )
    .await?;
    tracing::info!(admin_token = %caller.token_id, issued = %issued.token_id, "admin token issued");
    Ok(created(json!({
        "token_id": issued.token_id,
        "token": issued.secret,
        "display_name": name,
        "subject": subject.map(|s| s.to_string()),
        "issued_at_ms": issued.issued_at_ms,
        "expires_at_ms": issued.expires_at_ms,
        "note": "the token is shown once; store it now",
    })))
}

async fn list_admin_tokens(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let now_ms = app.clock.now_ms();
    let params = ReadParams::parse(q.as_deref(), true)?;
    let (list, next) = read(&app, &params, |s| {
        // `system.configure` shows every admin token; otherwise those acting as principals
        // of tenants the caller may read.
        let all = access::may(
            &caller,
            s,
            Permission::SystemConfigure,
            &RoleScope::Global,
            now_ms,
        );
        let visible = s.admin_tokens().filter(|t| {
            all || t
                .subject
                .as_ref()
                .and_then(|subject| subject.tenant.as_ref())
                .is_some_and(|tenant| {
                    access::may(
                        &caller,
                        s,
                        Permission::TenantRead,
                        &access::tenant_scope(tenant),
                        now_ms,
                    )
                })
        });
        let (page, next) = params.page(visible, |t| t.token_id.as_str());
        let page = page.into_iter().map(|t| admin_token_json(t, now_ms));
        (page.collect::<Vec<_>>(), next)
    })
    .await?;
    Ok(ok(json!({ "admin_tokens": list, "next_after": next })))
}

async fn revoke_admin(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let token_id = id("token", path(p)?, TokenId::new)?;
    let why = justification_only(body)?;
    // Guard against locking every operator out: keep at least one other valid admin token.
    let now_ms = app.clock.now_ms();
    let (target_valid, others_valid) = app
        .read(|s| {
            let valid = |t: &&AdminToken| t.is_valid_at(now_ms);
            (
                s.admin_token(&token_id).filter(valid).is_some(),
                s.admin_tokens()
                    .filter(|t| t.token_id != token_id)
                    .filter(valid)
                    .count(),
            )
        })
        .await?;
    if target_valid && others_valid == 0 {
        return Err(AdminError::conflict(format!(
            "admin token {:?} is the last valid admin token; issue another one before revoking it",
            token_id.as_str()
        )));
    }
    let changed = write(
        &app,
        &caller,
        Command::RevokeAdminToken {
            token_id: token_id.clone(),
        },
        why,
    )
    .await?;
    Ok(ok(json!({
        "token_id": token_id.as_str(),
        "revoked": true,
        "changed": changed,
    })))
}
