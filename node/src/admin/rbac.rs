//! Admin routes for global principals, role bindings and restrictions. Every change is an
//! `AsAdmin` command, so `apply` decides (the caller's roles, at the command's log index)
//! and audits it; reads show only what the caller may see (see [`super::access`]).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use serde_json::{Map, Value, json};

use quire_raft::command::Command;
use quire_raft::ids::{PrincipalId, TenantId, WorkspaceId};
use quire_raft::rbac::{Permission, Restriction, RoleBinding, RoleScope, Subject};

use super::access;
use super::body::{Body, DEFAULT_PAGE_ITEMS, MAX_PAGE_ITEMS, Query, ReadParams};
use super::error::AdminError;
use super::routes::{
    ApiResult, Caller, Shared, bytes, created, display_name, id, justification, justification_only,
    ok, path, read, write,
};
use super::{MAX_TTL_SECS, expiry};

/// A subject from a request field (`tenant/principal` or a global principal id).
fn subject(field: &str, value: &str) -> Result<Subject, AdminError> {
    value
        .parse::<Subject>()
        .map_err(|e| AdminError::invalid(field, e))
}

/// A scope object: `{"level": "global"}`, `{"level": "tenant", "tenant": T}` or
/// `{"level": "workspace", "tenant": T, "workspace": W}`.
fn scope(mut map: Map<String, Value>) -> Result<RoleScope, AdminError> {
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
    let mut text = |name: &str| -> Result<Option<String>, AdminError> {
        match map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AdminError::invalid(
                &format!("scope.{name}"),
                "must be a string",
            )),
        }
    };
    let level = text("level")?;
    let tenant = text("tenant")?;
    let workspace = text("workspace")?;
    let need = |v: Option<String>, name: &str, level: &str| {
        v.ok_or_else(|| {
            AdminError::invalid(
                &format!("scope.{name}"),
                format!("is required at the {level} level"),
            )
        })
    };
    let forbid = |v: &Option<String>, name: &str, level: &str| match v {
        Some(_) => Err(AdminError::invalid(
            &format!("scope.{name}"),
            format!("has no place at the {level} level"),
        )),
        None => Ok(()),
    };
    match level.as_deref() {
        Some("global") => {
            forbid(&tenant, "tenant", "global")?;
            forbid(&workspace, "workspace", "global")?;
            Ok(RoleScope::Global)
        }
        Some("tenant") => {
            forbid(&workspace, "workspace", "tenant")?;
            Ok(RoleScope::Tenant {
                tenant: id(
                    "scope.tenant",
                    need(tenant, "tenant", "tenant")?,
                    TenantId::new,
                )?,
            })
        }
        Some("workspace") => Ok(RoleScope::Workspace {
            tenant: id(
                "scope.tenant",
                need(tenant, "tenant", "workspace")?,
                TenantId::new,
            )?,
            workspace: id(
                "scope.workspace",
                need(workspace, "workspace", "workspace")?,
                WorkspaceId::new,
            )?,
        }),
        _ => Err(AdminError::invalid(
            "scope.level",
            "must be \"global\", \"tenant\" or \"workspace\"",
        )),
    }
}

fn scope_json(scope: &RoleScope) -> Value {
    serde_json::to_value(scope).unwrap_or(Value::Null)
}

fn binding_json(b: &RoleBinding, now_ms: u64) -> Value {
    json!({
        "id": b.id,
        "subject": b.subject.to_string(),
        "role": b.role.name(),
        "scope": scope_json(&b.scope),
        "granted_by": b.granted_by,
        "granted_at_ms": b.granted_at_ms,
        "expires_at_ms": b.expires_at_ms,
        "justification": b.justification,
        "active": b.is_active_at(now_ms),
    })
}

fn restriction_json(r: &Restriction) -> Value {
    json!({
        "id": r.id,
        "subject": r.subject.to_string(),
        "permission": r.permission.map(Permission::name),
        "scope": scope_json(&r.scope),
        "set_by": r.set_by,
        "set_at_ms": r.set_at_ms,
        "justification": r.justification,
    })
}

/// The numeric id in a `/roles/{id}` or `/restrictions/{id}` path.
fn numeric_id(field: &str, p: Result<Path<String>, PathRejection>) -> Result<u64, AdminError> {
    let raw = path(p)?;
    raw.parse::<u64>()
        .map_err(|_| AdminError::invalid(field, "must be a whole number (the id a list shows)"))
}

/// `limit` and `after` (an id) of a list of numbered items.
fn numbered_page(q: &Query) -> Result<(usize, u64), AdminError> {
    let limit = q
        .opt_u64("limit", 1, MAX_PAGE_ITEMS as u64)?
        .map_or(DEFAULT_PAGE_ITEMS, |n| n as usize);
    let after = q.opt_u64("after", 0, u64::MAX)?.unwrap_or(0);
    Ok((limit, after))
}

fn page_of(mut items: Vec<(u64, Value)>, limit: usize, after: u64) -> (Vec<Value>, Option<u64>) {
    items.sort_by_key(|(id, _)| *id);
    let mut page: Vec<(u64, Value)> = items
        .into_iter()
        .filter(|(id, _)| *id > after)
        .take(limit + 1)
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|(id, _)| *id)
    } else {
        None
    };
    (page.into_iter().map(|(_, v)| v).collect(), next)
}

// ---- global principals ----

pub(super) async fn create_global_principal(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(&bytes(body)?, &["id", "display_name", "justification"])?;
    let principal = id("id", b.string("id")?, PrincipalId::new)?;
    let name = b.string("display_name")?;
    display_name("principal", &name)?;
    let why = justification(&mut b)?;
    write(
        &app,
        &caller,
        Command::CreateGlobalPrincipal {
            principal: principal.clone(),
            display_name: name.clone(),
        },
        why,
    )
    .await?;
    Ok(created(
        json!({"id": principal.as_str(), "display_name": name}),
    ))
}

pub(super) async fn list_global_principals(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let params = ReadParams::parse(q.as_deref(), true)?;
    access::check_system(&app, &caller, "GET /principals")?;
    let (list, next) = read(&app, &params, |s| {
        let (page, next) = params.page(s.global_principals(), |p| p.id.as_str());
        let page = page
            .into_iter()
            .map(|p| json!({"id": p.id.as_str(), "display_name": p.display_name}))
            .collect::<Vec<_>>();
        (page, next)
    })
    .await?;
    Ok(ok(json!({"principals": list, "next_after": next})))
}

// ---- role bindings ----

pub(super) async fn assign_role(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(
        &bytes(body)?,
        &["subject", "role", "scope", "ttl_secs", "justification"],
    )?;
    let who = subject("subject", &b.string("subject")?)?;
    let role = b
        .string("role")?
        .parse()
        .map_err(|e: String| AdminError::invalid("role", e))?;
    let scope =
        scope(b.opt_object("scope")?.ok_or_else(|| {
            AdminError::invalid("scope", "missing field (an object is required)")
        })?)?;
    let ttl_secs = b.opt_u64("ttl_secs", 1, MAX_TTL_SECS)?;
    let why = justification(&mut b)?;
    let granted_at_ms = app.clock.now_ms();
    let expires_at_ms = expiry(granted_at_ms, ttl_secs)?;
    let changed = write(
        &app,
        &caller,
        Command::AssignRole {
            subject: who.clone(),
            role,
            scope: scope.clone(),
            granted_at_ms,
            expires_at_ms,
            justification: why.clone(),
        },
        why,
    )
    .await?;
    // The binding's id, as `apply` numbered it (the newest of this subject, role and scope),
    // read linearizably: on a follower the change may not be applied locally yet.
    let now_ms = app.clock.now_ms();
    let binding = app
        .read(|s| {
            s.access()
                .bindings_of(&who)
                .filter(|b| b.role == role && b.scope == scope)
                .max_by_key(|b| b.id)
                .map(|b| binding_json(b, now_ms))
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    Ok(created(json!({
        "subject": who.to_string(),
        "role": role.name(),
        "scope": scope_json(&scope),
        "expires_at_ms": expires_at_ms,
        "changed": changed,
        "binding": binding,
    })))
}

pub(super) async fn list_roles(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref(), &["subject", "limit", "after"])?;
    let filter = q
        .get("subject")
        .map(|s| subject("subject", s))
        .transpose()?;
    let (limit, after) = numbered_page(&q)?;
    let params = ReadParams {
        consistency: q.consistency,
        limit,
        after: None,
    };
    let now_ms = app.clock.now_ms();
    let items = read(&app, &params, |s| {
        let bindings: Vec<&RoleBinding> = match &filter {
            Some(who) => s.access().bindings_of(who).collect(),
            None => s.access().all_bindings().collect(),
        };
        bindings
            .into_iter()
            .filter(|b| access::may_see_scope(&caller, s, &b.scope, now_ms))
            .map(|b| (b.id, binding_json(b, now_ms)))
            .collect::<Vec<_>>()
    })
    .await?;
    let (list, next) = page_of(items, limit, after);
    Ok(ok(json!({"roles": list, "next_after": next})))
}

pub(super) async fn revoke_role(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let binding = numeric_id("id", p)?;
    let why = justification_only(body)?;
    write(&app, &caller, Command::RevokeRole { binding }, why).await?;
    Ok(ok(json!({"id": binding, "revoked": true})))
}

// ---- restrictions ----

pub(super) async fn add_restriction(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(
        &bytes(body)?,
        &["subject", "permission", "scope", "justification"],
    )?;
    let who = subject("subject", &b.string("subject")?)?;
    let permission = b
        .opt_string("permission")?
        .map(|p| p.parse::<Permission>())
        .transpose()
        .map_err(|e| AdminError::invalid("permission", e))?;
    let scope =
        scope(b.opt_object("scope")?.ok_or_else(|| {
            AdminError::invalid("scope", "missing field (an object is required)")
        })?)?;
    let why = justification(&mut b)?
        .ok_or_else(|| AdminError::invalid("justification", "a restriction needs one"))?;
    let set_at_ms = app.clock.now_ms();
    write(
        &app,
        &caller,
        Command::AddRestriction {
            subject: who.clone(),
            permission,
            scope: scope.clone(),
            set_at_ms,
            justification: why.clone(),
        },
        Some(why),
    )
    .await?;
    // Its id, read linearizably (on a follower the change may not be applied locally yet).
    let restriction = app
        .read(|s| {
            s.access()
                .restrictions_of(&who)
                .filter(|r| r.scope == scope && r.permission == permission)
                .max_by_key(|r| r.id)
                .map(restriction_json)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    Ok(created(restriction))
}

pub(super) async fn list_restrictions(
    State(app): Shared,
    Extension(caller): Caller,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref(), &["subject", "limit", "after"])?;
    let filter = q
        .get("subject")
        .map(|s| subject("subject", s))
        .transpose()?;
    let (limit, after) = numbered_page(&q)?;
    let params = ReadParams {
        consistency: q.consistency,
        limit,
        after: None,
    };
    let now_ms = app.clock.now_ms();
    let items = read(&app, &params, |s| {
        let restrictions: Vec<&Restriction> = match &filter {
            Some(who) => s.access().restrictions_of(who).collect(),
            None => s.access().all_restrictions().collect(),
        };
        restrictions
            .into_iter()
            .filter(|r| access::may_see_scope(&caller, s, &r.scope, now_ms))
            .map(|r| (r.id, restriction_json(r)))
            .collect::<Vec<_>>()
    })
    .await?;
    let (list, next) = page_of(items, limit, after);
    Ok(ok(json!({"restrictions": list, "next_after": next})))
}

pub(super) async fn remove_restriction(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let restriction = numeric_id("id", p)?;
    let why = justification_only(body)?;
    write(
        &app,
        &caller,
        Command::RemoveRestriction { restriction },
        why,
    )
    .await?;
    Ok(ok(json!({"id": restriction, "removed": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn scopes_parse_by_level() {
        assert_eq!(
            scope(obj(json!({"level": "global"}))).unwrap(),
            RoleScope::Global
        );
        assert_eq!(
            scope(obj(json!({"level": "tenant", "tenant": "acme"}))).unwrap(),
            RoleScope::Tenant {
                tenant: TenantId::new("acme").unwrap()
            }
        );
        let w = scope(obj(
            json!({"level": "workspace", "tenant": "acme", "workspace": "docs"}),
        ))
        .unwrap();
        assert_eq!(w.to_string(), "workspace acme/docs");
        let e = scope(obj(json!({"level": "tenant"}))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scope.tenant"));
        let e = scope(obj(json!({"level": "global", "tenant": "acme"}))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scope.tenant"));
        let e = scope(obj(json!({"level": "planet"}))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scope.level"));
        assert!(scope(obj(json!({"level": "global", "x": 1}))).is_err());
        assert_eq!(
            scope_json(&w),
            json!({"level": "workspace", "tenant": "acme", "workspace": "docs"})
        );
    }

    #[test]
    fn numbered_pages() {
        let items = (1..=5).map(|i| (i, json!(i))).collect::<Vec<_>>();
        let (page, next) = page_of(items.clone(), 2, 1);
        assert_eq!(page, [json!(2), json!(3)]);
        assert_eq!(next, Some(3));
        let (page, next) = page_of(items, 10, 3);
        assert_eq!((page, next), (vec![json!(4), json!(5)], None));
    }
}
