//! Admin routes of separation of duties: the policy (`GET|PUT /sod-policy`) and the approval
//! requests that critical changes become while it is on (`GET /approvals`,
//! `GET /approvals/{id}`, `POST /approvals/{id}/approve|reject|break-glass`).
//!
//! A critical change (tenant creation or deletion, enterprise configuration, security policy)
//! made through any route answers `202 Accepted` with `{"status": "approval_pending",
//! "approval": {...}}` instead of executing; `apply` executes it when the last required
//! approval lands (see `quire_raft::approvals`). Approving, rejecting and breaking the glass
//! are `AsAdmin` commands, decided and audited in `apply`.
//!
//! Requests are seen by the root token, by holders of `system.configure`, `security.policy`
//! or `reports.enterprise` (the enterprise admins, security admins and compliance officers
//! who approve them), and by their requester.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{Map, Value, json};

use quire_raft::approvals::{ApprovalRequest, RequestStatus, SodClass, SodPolicy, SodRule};
use quire_raft::command::{Command, error_code};
use quire_raft::rbac::{Permission, Role, RoleScope};
use quire_raft::state::State as ControlState;

use super::AdminCaller;
use super::access;
use super::body::{Body, DEFAULT_PAGE_ITEMS, MAX_PAGE_ITEMS, Query, ReadParams};
use super::error::AdminError;
use super::routes::{ApiResult, Caller, Shared, bytes, justification, ok, path, read, write};
use crate::app::App;

/// The routes, merged into the admin API's router.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/sod-policy", get(get_policy).put(set_policy))
        .route("/approvals", get(list))
        .route("/approvals/{id}", get(show))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/reject", post(reject))
        .route("/approvals/{id}/break-glass", post(break_glass))
}

/// Statuses a listing may filter on.
const STATUSES: [&str; 5] = ["pending", "expired", "executed", "failed", "rejected"];

fn rule_json(rule: &SodRule) -> Value {
    json!({
        "approvals": rule.approvals,
        "roles": rule.roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
        "window_ms": rule.window_ms,
    })
}

fn policy_json(p: &SodPolicy) -> Value {
    json!({
        "enabled": p.enabled,
        "tenant_lifecycle": rule_json(&p.tenant_lifecycle),
        "enterprise_config": rule_json(&p.enterprise_config),
        "security_policy": rule_json(&p.security_policy),
    })
}

/// A request as the API shows it (the held command by its kind and target, never its
/// secrets: an admin token's hash or a sealed key stay inside).
pub fn request_json(r: &ApprovalRequest, now_ms: u64) -> Value {
    let (result, executed_at_ms) = match &r.status {
        RequestStatus::Executed { result, at_ms } => (
            Some(match result {
                Ok(_) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": error_code(e), "message": e.to_string()}),
            }),
            Some(*at_ms),
        ),
        _ => (None, None),
    };
    let rejected_by = match &r.status {
        RequestStatus::Rejected { by, .. } => Some(by.clone()),
        _ => None,
    };
    json!({
        "id": r.id,
        "class": r.class.name(),
        "action": r.command.kind(),
        "target": command_summary(&r.command),
        "requested_by": r.requested_by,
        "requested_at_ms": r.requested_at_ms,
        "expires_at_ms": r.expires_at_ms,
        "justification": r.justification,
        "required": r.required,
        "roles": r.roles.iter().map(|x| x.name()).collect::<Vec<_>>(),
        "approvals": r.approvals.iter().map(|a| json!({
            "by": a.by, "role": a.role.name(), "at_ms": a.at_ms, "log_index": a.log_index,
        })).collect::<Vec<_>>(),
        "approved": r.approvals.len(),
        "status": r.status_at(now_ms),
        "executed_at_ms": executed_at_ms,
        "result": result,
        "rejected_by": rejected_by,
        "break_glass": r.break_glass.as_ref().map(|g| json!({
            "by": g.by, "justification": g.justification, "at_ms": g.at_ms,
        })),
    })
}

/// What a held command acts on, for people (no secrets).
fn command_summary(cmd: &Command) -> String {
    match cmd {
        Command::CreateTenant { tenant, .. } | Command::DeleteTenant { tenant } => {
            format!("tenant {}", tenant.as_str())
        }
        Command::SetSodPolicy { policy } => format!(
            "separation-of-duties policy ({})",
            if policy.enabled { "on" } else { "off" }
        ),
        Command::SetAuditRetention {
            max_records_per_chain,
        } => format!("audit retention {max_records_per_chain} records per chain"),
        Command::AddRestriction {
            subject,
            permission,
            ..
        } => format!(
            "global restriction on {subject} ({})",
            permission.map_or("every permission", |p| p.name())
        ),
        Command::RemoveRestriction { restriction } => format!("restriction #{restriction}"),
        Command::CreateGlobalPrincipal { principal, .. } => {
            format!("global principal {}", principal.as_str())
        }
        Command::AssignRole {
            subject,
            role,
            scope,
            ..
        } => format!("{role} at {scope} for {subject}"),
        Command::IssueAdminToken {
            token_id, subject, ..
        } => format!(
            "admin token {} ({})",
            token_id.as_str(),
            subject
                .as_ref()
                .map_or_else(|| "root".to_owned(), ToString::to_string)
        ),
        Command::AddJwtKey { kid, .. } | Command::SetCurrentJwtKey { kid } => {
            format!("signing key {kid}")
        }
        other => other.kind().to_owned(),
    }
}

/// Whether the caller may see approval requests: root, or a holder of one of the approving
/// permissions globally, or (for its own requests) the requester.
fn may_see(caller: &AdminCaller, state: &ControlState, r: &ApprovalRequest, now_ms: u64) -> bool {
    may_see_all(caller, state, now_ms) || r.requested_by == caller.actor()
}

fn may_see_all(caller: &AdminCaller, state: &ControlState, now_ms: u64) -> bool {
    [
        Permission::SystemConfigure,
        Permission::SecurityPolicy,
        Permission::ReportsEnterprise,
    ]
    .into_iter()
    .any(|p| access::may(caller, state, p, &RoleScope::Global, now_ms))
}

/// The `202 approval_pending` answer for a change held as request `approval`, with `extra`
/// fields (e.g. an admin token's secret, valid once the request is approved).
pub async fn pending(app: &App, approval: u64, kind: &str, extra: Option<Value>) -> AdminError {
    let now_ms = app.clock.now_ms();
    // Read back linearizably: on a follower the request may not be applied locally yet.
    let request = app
        .read(|s| {
            s.approvals()
                .request(approval)
                .map(|r| request_json(r, now_ms))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| json!({"id": approval}));
    let needs = request["required"].as_u64().unwrap_or(0);
    let roles = request["roles"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let mut detail = json!({ "approval": request });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            detail[k] = v;
        }
    }
    AdminError::approval_pending(
        format!(
            "{kind} needs {needs} approval(s) from distinct principals holding {roles} (separation of duties); it is held as approval request #{approval} (quire ctl approvals show {approval})"
        ),
        detail,
    )
}

/// Whether `caller` may read the policy: as for requests.
async fn get_policy(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = ReadParams::parse(q.as_deref(), false)?;
    let now_ms = app.clock.now_ms();
    let policy = read(&app, &params, |s| {
        may_see_all(&caller, s, now_ms).then(|| policy_json(s.approvals().policy()))
    })
    .await?;
    let Some(policy) = policy else {
        return Err(access::refuse(
            &app,
            &caller,
            denial(&app, &caller, now_ms),
            "GET /sod-policy",
        ));
    };
    Ok(ok(policy))
}

fn denial(app: &App, caller: &AdminCaller, now_ms: u64) -> access::Denial {
    app.control.read_applied(|s| {
        access::check(
            caller,
            s,
            Permission::SecurityPolicy,
            &RoleScope::Global,
            now_ms,
        )
        .err()
        .unwrap_or(access::Denial {
            permission: Permission::SecurityPolicy,
            target: RoleScope::Global,
            reason: "approval requests are for enterprise admins, security admins and compliance officers".into(),
        })
    })
}

fn rule(
    map: Option<Map<String, Value>>,
    field: &str,
    default: &SodRule,
) -> Result<SodRule, AdminError> {
    let Some(mut map) = map else {
        return Ok(default.clone());
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["approvals", "roles", "window_ms"].contains(&k.as_str()))
    {
        let shown: String = unknown.chars().take(64).collect();
        return Err(AdminError::invalid(
            field,
            format!("unknown field {shown:?}; a rule has approvals, roles and window_ms"),
        ));
    }
    let number = |v: Option<Value>, name: &str| -> Result<Option<u64>, AdminError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                AdminError::invalid(&format!("{field}.{name}"), "must be a whole number")
            }),
            Some(_) => Err(AdminError::invalid(
                &format!("{field}.{name}"),
                "must be a whole number",
            )),
        }
    };
    let approvals = number(map.remove("approvals"), "approvals")?
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(default.approvals);
    let window_ms = number(map.remove("window_ms"), "window_ms")?.unwrap_or(default.window_ms);
    let roles = match map.remove("roles") {
        None | Some(Value::Null) => default.roles.clone(),
        Some(Value::Array(items)) if items.len() <= Role::ALL.len() => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s
                    .parse::<Role>()
                    .map_err(|e| AdminError::invalid(&format!("{field}.roles"), e)),
                _ => Err(AdminError::invalid(
                    &format!("{field}.roles"),
                    "must be a list of role names",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(AdminError::invalid(
                &format!("{field}.roles"),
                "must be a list of role names",
            ));
        }
    };
    Ok(SodRule {
        approvals,
        roles,
        window_ms,
    })
}

/// `PUT /sod-policy`: `{"enabled": bool, "tenant_lifecycle"?: rule, "enterprise_config"?:
/// rule, "security_policy"?: rule, "justification"?}`; a rule left out keeps its current
/// value. While the policy is on, this is itself a security-policy change (202).
async fn set_policy(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = bytes(body)?;
    let mut b = Body::parse(
        &raw,
        &[
            "enabled",
            "tenant_lifecycle",
            "enterprise_config",
            "security_policy",
            "justification",
        ],
    )?;
    // The body parsed above as a JSON object; `enabled` is its one boolean.
    let enabled = match serde_json::from_slice::<Value>(&raw)
        .ok()
        .and_then(|v| v.get("enabled").cloned())
    {
        None | Some(Value::Null) => None,
        Some(Value::Bool(on)) => Some(on),
        Some(_) => return Err(AdminError::invalid("enabled", "must be true or false")),
    };
    let current = app
        .read(|s| s.approvals().policy().clone())
        .await
        .map_err(AdminError::from)?;
    let policy = SodPolicy {
        enabled: enabled.unwrap_or(current.enabled),
        tenant_lifecycle: rule(
            b.opt_object("tenant_lifecycle")?,
            "tenant_lifecycle",
            &current.tenant_lifecycle,
        )?,
        enterprise_config: rule(
            b.opt_object("enterprise_config")?,
            "enterprise_config",
            &current.enterprise_config,
        )?,
        security_policy: rule(
            b.opt_object("security_policy")?,
            "security_policy",
            &current.security_policy,
        )?,
    };
    let why = justification(&mut b)?;
    policy
        .check()
        .map_err(|e| AdminError::invalid("policy", e.to_string()))?;
    let changed = write(
        &app,
        &caller,
        Command::SetSodPolicy {
            policy: policy.clone(),
        },
        why,
    )
    .await?;
    let mut v = policy_json(&policy);
    v["changed"] = json!(changed);
    Ok(ok(v))
}

/// The numeric id in an `/approvals/{id}` path.
fn request_id(p: Result<Path<String>, PathRejection>) -> Result<u64, AdminError> {
    path(p)?
        .parse::<u64>()
        .map_err(|_| AdminError::invalid("id", "must be a whole number (the id a list shows)"))
}

async fn list(State(app): Shared, Extension(caller): Caller, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref(), &["status", "class", "limit", "after"])?;
    let status = q.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(AdminError::invalid(
            "status",
            format!("must be one of: {}", STATUSES.join(", ")),
        ));
    }
    let class = match q.get("class") {
        None => None,
        Some(c) => Some(
            [
                SodClass::TenantLifecycle,
                SodClass::EnterpriseConfig,
                SodClass::SecurityPolicy,
            ]
            .into_iter()
            .find(|k| k.name() == c)
            .ok_or_else(|| {
                AdminError::invalid(
                    "class",
                    "must be tenant_lifecycle, enterprise_config or security_policy",
                )
            })?,
        ),
    };
    let limit = q
        .opt_u64("limit", 1, MAX_PAGE_ITEMS as u64)?
        .map_or(DEFAULT_PAGE_ITEMS, |n| n as usize);
    let after = q.opt_u64("after", 0, u64::MAX)?.unwrap_or(0);
    let params = ReadParams {
        consistency: q.consistency,
        limit,
        after: None,
    };
    let now_ms = app.clock.now_ms();
    let (items, more) = read(&app, &params, |s| {
        let mut items: Vec<Value> = s
            .approvals()
            .requests()
            .filter(|r| r.id > after)
            .filter(|r| may_see(&caller, s, r, now_ms))
            .filter(|r| status.as_deref().is_none_or(|st| r.status_at(now_ms) == st))
            .filter(|r| class.is_none_or(|c| r.class == c))
            .take(limit + 1)
            .map(|r| request_json(r, now_ms))
            .collect();
        let more = items.len() > limit;
        items.truncate(limit);
        (items, more)
    })
    .await?;
    let next = if more {
        items.last().and_then(|v| v["id"].as_u64())
    } else {
        None
    };
    Ok(ok(json!({"approvals": items, "next_after": next})))
}

async fn show(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let id = request_id(p)?;
    let params = ReadParams::parse(q.as_deref(), false)?;
    let now_ms = app.clock.now_ms();
    let found = read(&app, &params, |s| {
        s.approvals()
            .request(id)
            .map(|r| may_see(&caller, s, r, now_ms).then(|| request_json(r, now_ms)))
    })
    .await?;
    match found {
        None => Err(AdminError::not_found(format!(
            "approval request #{id} not found"
        ))),
        Some(None) => Err(access::refuse(
            &app,
            &caller,
            denial(&app, &caller, now_ms),
            &format!("GET /approvals/{id}"),
        )),
        Some(Some(v)) => Ok(ok(v)),
    }
}

/// Proposes a decision on request `id` and answers the request as it then stands.
async fn decide(
    app: &App,
    caller: &AdminCaller,
    id: u64,
    cmd: Command,
    why: Option<String>,
) -> ApiResult {
    write(app, caller, cmd, why).await?;
    let now_ms = app.clock.now_ms();
    let request = app
        .read(|s| s.approvals().request(id).map(|r| request_json(r, now_ms)))
        .await?
        .unwrap_or_else(|| json!({"id": id}));
    Ok(ok(request))
}

async fn approve(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = request_id(p)?;
    let mut b = Body::parse(&bytes(body)?, &["justification"])?;
    let why = justification(&mut b)?;
    decide(
        &app,
        &caller,
        id,
        Command::ApproveRequest { request: id },
        why,
    )
    .await
}

async fn reject(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = request_id(p)?;
    let mut b = Body::parse(&bytes(body)?, &["justification"])?;
    let why = justification(&mut b)?;
    decide(
        &app,
        &caller,
        id,
        Command::RejectRequest { request: id },
        why,
    )
    .await
}

async fn break_glass(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = request_id(p)?;
    let mut b = Body::parse(&bytes(body)?, &["justification"])?;
    let why = justification(&mut b)?.ok_or_else(|| {
        AdminError::invalid(
            "justification",
            "break-glass needs one (it is recorded with high severity)",
        )
    })?;
    tracing::warn!(admin_token = %caller.token_id, request = id, "break-glass requested");
    decide(
        &app,
        &caller,
        id,
        Command::BreakGlass { request: id },
        Some(why),
    )
    .await
}
