//! Admin routes of delegations: lending a permission or a role the caller's principal holds
//! (`POST /delegations`), listing them (`GET /delegations`, `?review_due=true` for permanent
//! ones due for their 90-day review), approving one that needs a higher authority
//! (`POST /delegations/{id}/approve`), and ending one at once (`DELETE /delegations/{id}`).
//!
//! Every change is an `AsAdmin` command whose rules `apply` decides with the caller's
//! principal at the command's log index (see `quire_raft::delegation`); the caller must act as
//! a principal (a root token holds no role to lend). A delegation is shown to whoever may see
//! role bindings at its scope, and to its delegator and delegate.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{Value, json};

use quire_raft::command::Command;
use quire_raft::delegation::{Delegated, Delegation, backing_role};
use quire_raft::rbac::{Permission, Role, RoleScope, Subject};

use super::access;
use super::body::{Body, DEFAULT_PAGE_ITEMS, MAX_PAGE_ITEMS, Query, ReadParams};
use super::error::AdminError;
use super::routes::{
    ApiResult, Caller, Shared, bytes, created, justification, justification_only, ok, path, read,
    write,
};
use super::{MAX_TTL_SECS, expiry};
use crate::app::App;

/// The routes, merged into the admin API's router.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/delegations", post(create).get(list))
        .route("/delegations/{id}", get(show).delete(revoke))
        .route("/delegations/{id}/approve", post(approve))
}

fn grant_json(g: Delegated) -> Value {
    match g {
        Delegated::Permission(p) => json!({"permission": p.name()}),
        Delegated::Role(r) => json!({"role": r.name()}),
    }
}

/// A delegation as the API shows it, at `now_ms`.
pub fn delegation_json(d: &Delegation, now_ms: u64) -> Value {
    let mut v = json!({
        "id": d.id,
        "delegator": d.delegator.to_string(),
        "delegator_role": d.delegator_role.name(),
        "delegate": d.delegate.to_string(),
        "scope": serde_json::to_value(&d.scope).unwrap_or(Value::Null),
        "kind": if d.is_permanent() { "permanent" } else { "temporary" },
        "created_at_ms": d.created_at_ms,
        "expires_at_ms": d.expires_at_ms,
        "justification": d.justification,
        "needs_approval": d.needs_approval,
        "approved_by": d.approval.as_ref().map(|a| a.by.clone()),
        "approved_at_ms": d.approval.as_ref().map(|a| a.at_ms),
        "review_due_at_ms": d.review_due_at_ms,
        "review_due": d.review_due_at(now_ms),
        "status": d.status_at(now_ms),
    });
    if let (Some(obj), Value::Object(g)) = (v.as_object_mut(), grant_json(d.grant)) {
        obj.extend(g);
    }
    v
}

/// [`delegation_json`] with what only the state can tell: whether the delegator still holds
/// what it lent (`delegator_holds`), and so whether the delegation counts now (`in_force`).
fn shown(s: &quire_raft::State, d: &Delegation, now_ms: u64) -> Value {
    let holds = backing_role(s, &d.delegator, d.grant, &d.scope, Some(now_ms)).is_some();
    let mut v = delegation_json(d, now_ms);
    v["delegator_holds"] = json!(holds);
    v["in_force"] = json!(holds && d.is_in_force_at(now_ms));
    v
}

fn subject(field: &str, value: &str) -> Result<Subject, AdminError> {
    value
        .parse::<Subject>()
        .map_err(|e| AdminError::invalid(field, e))
}

/// A scope object, as `/roles` takes it: `{"level": "global"}`, `{"level": "tenant",
/// "tenant": T}` or `{"level": "workspace", "tenant": T, "workspace": W}`.
fn scope(map: serde_json::Map<String, Value>) -> Result<RoleScope, AdminError> {
    if let Some(unknown) = map
        .keys()
        .find(|k| !["level", "tenant", "workspace"].contains(&k.as_str()))
    {
        let shown: String = unknown.chars().take(64).collect();
        return Err(AdminError::invalid(
            "scope",
            format!("unknown field {shown:?}; a scope has level, tenant and workspace"),
        ));
    }
    let level = map.get("level").and_then(Value::as_str).unwrap_or("");
    let expected: &[&str] = match level {
        "global" => &["level"],
        "tenant" => &["level", "tenant"],
        "workspace" => &["level", "tenant", "workspace"],
        _ => {
            return Err(AdminError::invalid(
                "scope.level",
                "must be \"global\", \"tenant\" or \"workspace\"",
            ));
        }
    };
    if let Some(extra) = map.keys().find(|k| !expected.contains(&k.as_str())) {
        return Err(AdminError::invalid(
            &format!("scope.{extra}"),
            format!("has no place at the {level} level"),
        ));
    }
    serde_json::from_value(Value::Object(map))
        .map_err(|e| AdminError::invalid("scope", e.to_string()))
}

/// `POST /delegations`: `{"delegate", "permission" | "role", "scope", "ttl_secs" |
/// "permanent": true, "justification"}`.
async fn create(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let raw = bytes(body)?;
    let mut b = Body::parse(
        &raw,
        &[
            "delegate",
            "permission",
            "role",
            "scope",
            "ttl_secs",
            "permanent",
            "justification",
        ],
    )?;
    let permanent = match serde_json::from_slice::<Value>(&raw)
        .ok()
        .and_then(|v| v.get("permanent").cloned())
    {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(AdminError::invalid("permanent", "must be true or false")),
    };
    let delegate = subject("delegate", &b.string("delegate")?)?;
    let grant = match (b.opt_string("permission")?, b.opt_string("role")?) {
        (Some(p), None) => Delegated::Permission(
            p.parse::<Permission>()
                .map_err(|e| AdminError::invalid("permission", e))?,
        ),
        (None, Some(r)) => Delegated::Role(
            r.parse::<Role>()
                .map_err(|e| AdminError::invalid("role", e))?,
        ),
        _ => {
            return Err(AdminError::invalid(
                "permission",
                "name exactly one of permission and role",
            ));
        }
    };
    let scope =
        scope(b.opt_object("scope")?.ok_or_else(|| {
            AdminError::invalid("scope", "missing field (an object is required)")
        })?)?;
    let ttl_secs = b.opt_u64("ttl_secs", 1, MAX_TTL_SECS)?;
    if ttl_secs.is_some() == permanent {
        return Err(AdminError::invalid(
            "ttl_secs",
            "give ttl_secs for a temporary delegation, or \"permanent\": true for one without expiry (which needs approval)",
        ));
    }
    let why = justification(&mut b)?
        .ok_or_else(|| AdminError::invalid("justification", "a delegation needs one"))?;
    let Some(delegator) = caller.subject.clone() else {
        return Err(AdminError::invalid(
            "delegator",
            "a root admin token holds no role to delegate; use an admin token acting as the delegating principal",
        ));
    };
    let at_ms = app.clock.now_ms();
    let expires_at_ms = expiry(at_ms, ttl_secs)?;
    write(
        &app,
        &caller,
        Command::Delegate {
            delegate: delegate.clone(),
            grant,
            scope: scope.clone(),
            expires_at_ms,
            justification: why.clone(),
        },
        Some(why),
    )
    .await?;
    // Its id, as `apply` numbered it (the newest of this delegator, delegate, grant and
    // scope), read linearizably: on a follower it may not be applied locally yet.
    let now_ms = app.clock.now_ms();
    let found = app
        .read(|s| {
            s.delegations()
                .received_by(&delegate)
                .filter(|d| d.delegator == delegator && d.grant == grant && d.scope == scope)
                .max_by_key(|d| d.id)
                .map(|d| shown(s, d, now_ms))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    Ok(created(found))
}

fn visible(
    caller: &super::AdminCaller,
    s: &quire_raft::State,
    d: &Delegation,
    now_ms: u64,
) -> bool {
    caller
        .subject
        .as_ref()
        .is_some_and(|me| me == &d.delegator || me == &d.delegate)
        || access::may_see_scope(caller, s, &d.scope, now_ms)
}

async fn list(State(app): Shared, Extension(caller): Caller, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(
        q.as_deref(),
        &[
            "delegate",
            "delegator",
            "review_due",
            "status",
            "limit",
            "after",
        ],
    )?;
    let delegate = q
        .get("delegate")
        .map(|s| subject("delegate", s))
        .transpose()?;
    let delegator = q
        .get("delegator")
        .map(|s| subject("delegator", s))
        .transpose()?;
    let review_due = match q.get("review_due") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(AdminError::invalid("review_due", "must be true or false")),
    };
    let status = q.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !["active", "pending_approval", "expired"].contains(&s.as_str())
    {
        return Err(AdminError::invalid(
            "status",
            "must be active, pending_approval or expired",
        ));
    }
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
    let mut items = read(&app, &params, |s| {
        let all: Vec<&Delegation> = match &delegate {
            Some(who) => s.delegations().received_by(who).collect(),
            None => s.delegations().all().collect(),
        };
        all.into_iter()
            .filter(|d| d.id > after)
            .filter(|d| delegator.as_ref().is_none_or(|x| &d.delegator == x))
            .filter(|d| review_due.is_none_or(|due| d.review_due_at(now_ms) == due))
            .filter(|d| status.as_deref().is_none_or(|st| d.status_at(now_ms) == st))
            .filter(|d| visible(&caller, s, d, now_ms))
            .map(|d| (d.id, shown(s, d, now_ms)))
            .collect::<Vec<_>>()
    })
    .await?;
    items.sort_by_key(|(id, _)| *id);
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|(id, _)| *id)
    } else {
        None
    };
    let list: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
    Ok(ok(json!({"delegations": list, "next_after": next})))
}

fn delegation_id(p: Result<Path<String>, PathRejection>) -> Result<u64, AdminError> {
    path(p)?
        .parse::<u64>()
        .map_err(|_| AdminError::invalid("id", "must be a whole number (the id a list shows)"))
}

async fn show(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let id = delegation_id(p)?;
    let params = ReadParams::parse(q.as_deref(), false)?;
    let now_ms = app.clock.now_ms();
    let found = read(&app, &params, |s| {
        s.delegations()
            .get(id)
            .filter(|d| visible(&caller, s, d, now_ms))
            .map(|d| shown(s, d, now_ms))
    })
    .await?;
    // One that exists but is out of the caller's sight answers as one that does not.
    found
        .map(ok)
        .ok_or_else(|| AdminError::not_found(format!("delegation #{id} not found")))
}

async fn approve(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = delegation_id(p)?;
    let why = justification_only(body)?;
    let changed = write(
        &app,
        &caller,
        Command::ApproveDelegation { delegation: id },
        why,
    )
    .await?;
    let now_ms = app.clock.now_ms();
    let d = app
        .read(|s| s.delegations().get(id).map(|d| shown(s, d, now_ms)))
        .await?
        .unwrap_or_else(|| json!({"id": id}));
    let mut v = d;
    v["changed"] = json!(changed);
    Ok(ok(v))
}

async fn revoke(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = delegation_id(p)?;
    let why = justification_only(body)?;
    write(
        &app,
        &caller,
        Command::RevokeDelegation { delegation: id },
        why,
    )
    .await?;
    Ok(ok(json!({"id": id, "revoked": true})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_raft::delegation::{DelegationApproval, REVIEW_AFTER_MS};

    fn permanent(approved_at_ms: Option<u64>) -> Delegation {
        Delegation {
            id: 4,
            delegator: "acme/mgr".parse().unwrap(),
            delegator_role: Role::WorkspaceManager,
            delegate: "acme/dave".parse().unwrap(),
            grant: Delegated::Role(Role::StandardUser),
            scope: serde_json::from_value(
                json!({"level": "workspace", "tenant": "acme", "workspace": "docs"}),
            )
            .unwrap(),
            created_at_ms: 1_000,
            expires_at_ms: None,
            justification: "joins docs".into(),
            needs_approval: true,
            approval: approved_at_ms.map(|at_ms| DelegationApproval {
                by: "acme/alice".into(),
                role: Role::TenantAdmin,
                at_ms,
            }),
            review_due_at_ms: approved_at_ms.map(|at| at + REVIEW_AFTER_MS),
        }
    }

    #[test]
    fn a_permanent_delegation_shows_pending_then_active_then_due_for_review() {
        let v = delegation_json(&permanent(None), 2_000);
        assert_eq!(v["status"], "pending_approval");
        assert_eq!(v["kind"], "permanent");
        assert_eq!(v["role"], "standard_user");
        assert_eq!(v["review_due"], false);
        let d = permanent(Some(5_000));
        let v = delegation_json(&d, 5_001);
        assert_eq!(v["status"], "active");
        assert_eq!(v["approved_by"], "acme/alice");
        assert_eq!(v["review_due_at_ms"], 5_000 + REVIEW_AFTER_MS);
        assert_eq!(v["review_due"], false);
        let v = delegation_json(&d, 5_000 + REVIEW_AFTER_MS);
        assert_eq!(v["review_due"], true);
        assert_eq!(v["status"], "active", "due for review, still in force");
    }

    #[test]
    fn scopes_are_checked_by_level() {
        let obj = |v: Value| v.as_object().cloned().unwrap();
        assert_eq!(
            scope(obj(json!({"level": "global"}))).unwrap(),
            RoleScope::Global
        );
        let e = scope(obj(json!({"level": "global", "tenant": "acme"}))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scope.tenant"));
        assert!(scope(obj(json!({"level": "tenant"}))).is_err());
        assert!(scope(obj(json!({"level": "tenant", "tenant": "Bad Id"}))).is_err());
        assert!(scope(obj(json!({"level": "planet"}))).is_err());
        assert!(scope(obj(json!({"level": "global", "x": 1}))).is_err());
    }
}
