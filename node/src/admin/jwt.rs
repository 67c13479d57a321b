//! Admin routes for JWT bearer tokens: issuing a built-in token (`POST /tenants/{t}/jwt`,
//! shown once), the built-in issuer's signing keys (list, rotate, retire), revoking a token id
//! (`POST /jwt/revocations`), and a tenant's OpenID Connect provider
//! (`PUT|GET|DELETE /tenants/{t}/oidc`).
//!
//! Key changes, revocations and provider changes are `AsAdmin` commands (decided and audited
//! in `apply`). Issuing a token changes no state: the caller must hold
//! `workspace.members.manage` in the token's workspace (as for an opaque token), checked
//! against a linearizable read, and the issue is audited.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{Map, Value, json};

use quire_raft::audit::{AuditEvent, Severity};
use quire_raft::command::Command;
use quire_raft::ids::{PrincipalId, TenantId, WorkspaceId};
use quire_raft::jwt_keys::{GroupMapping, JwtAlg, OidcProvider, check_jti, check_kid};
use quire_raft::rbac::{Permission, Role};

use super::AdminCaller;
use super::access;
use super::body::Body;
use super::error::AdminError;
use super::routes::{
    ApiResult, Caller, KNOWN_SCOPES, Shared, bytes, created, id, justification, ok, path, write,
};
use crate::app::App;
use crate::jwt::{IssueRequest, JwtError};

/// The routes, merged into the admin API's router.
pub(super) fn routes() -> Router<std::sync::Arc<App>> {
    Router::new()
        .route("/tenants/{tenant}/jwt", post(issue))
        .route("/jwt/keys", get(list_keys))
        .route("/jwt/keys/rotate", post(rotate))
        .route("/jwt/keys/{kid}/retire", post(retire))
        .route("/jwt/revocations", post(revoke))
        .route(
            "/tenants/{tenant}/oidc",
            get(get_oidc).put(set_oidc).delete(remove_oidc),
        )
}

fn jwt_error(e: JwtError) -> AdminError {
    match e {
        JwtError::Signing(m) => AdminError::conflict(m),
        other => AdminError::invalid("ttl_secs", other.to_string()),
    }
}

fn token_scopes(requested: Option<Vec<String>>) -> Result<BTreeSet<String>, AdminError> {
    let Some(requested) = requested else {
        return Ok(KNOWN_SCOPES.iter().map(|s| (*s).to_owned()).collect());
    };
    if requested.is_empty() {
        return Err(AdminError::invalid(
            "scopes",
            "must name at least one scope (or be left out for all)",
        ));
    }
    requested
        .into_iter()
        .map(|s| {
            if KNOWN_SCOPES.contains(&s.as_str()) {
                Ok(s)
            } else {
                let shown: String = s.chars().take(64).collect();
                Err(AdminError::invalid(
                    "scopes",
                    format!(
                        "unknown scope {shown:?}; known scopes: {}",
                        KNOWN_SCOPES.join(", ")
                    ),
                ))
            }
        })
        .collect()
}

async fn issue(
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
    let scopes = token_scopes(b.opt_strings("scopes")?)?;
    let ttl_secs = b
        .opt_u64("ttl_secs", 1, app.jwt.max_ttl_secs)?
        .unwrap_or(app.config.security.jwt_default_ttl_secs);
    let why = justification(&mut b)?;
    let what = format!("POST /tenants/{}/jwt", tenant.as_str());
    let now_ms = app.clock.now_ms();
    let target = access::workspace_scope(&tenant, &workspace);
    let request = IssueRequest {
        tenant: tenant.clone(),
        principal: principal.clone(),
        workspace: workspace.clone(),
        scopes: scopes.clone(),
        ttl_secs,
    };
    let issued = app
        .read(|s| {
            access::check(
                &caller,
                s,
                Permission::WorkspaceMembersManage,
                &target,
                now_ms,
            )
            .map_err(Err)?;
            if s.workspace(&tenant, &workspace).is_none() {
                return Err(Ok(AdminError::not_found(format!(
                    "workspace {:?} in tenant {:?} not found",
                    workspace.as_str(),
                    tenant.as_str()
                ))));
            }
            if s.principal(&tenant, &principal).is_none() {
                return Err(Ok(AdminError::not_found(format!(
                    "principal {:?} in tenant {:?} not found",
                    principal.as_str(),
                    tenant.as_str()
                ))));
            }
            crate::jwt::issue(s, &app.master_key, &app.jwt, &request, now_ms)
                .map_err(|e| Ok(jwt_error(e)))
        })
        .await?
        .map_err(|e| match e {
            Ok(error) => error,
            Err(denial) => access::refuse(&app, &caller, denial, &what),
        })?;
    audit_issue(
        &app,
        &caller,
        &tenant,
        &workspace,
        &principal,
        &issued.jti,
        why,
    );
    Ok(created(json!({
        "token": issued.token,
        "jti": issued.jti,
        "kid": issued.kid,
        "tenant": tenant.as_str(),
        "principal": principal.as_str(),
        "workspace": workspace.as_str(),
        "scopes": scopes,
        "issuer": app.jwt.issuer,
        "audience": app.jwt.audience,
        "issued_at_ms": issued.issued_at_ms,
        "expires_at_ms": issued.expires_at_ms,
        "note": "the token is shown once; store it now",
    })))
}

fn audit_issue(
    app: &App,
    caller: &AdminCaller,
    tenant: &TenantId,
    workspace: &WorkspaceId,
    principal: &PrincipalId,
    jti: &str,
    justification: Option<String>,
) {
    let event = AuditEvent {
        at_ms: app.clock.now_ms(),
        node: app.config.node.id,
        principal: caller.actor(),
        tenant: Some(tenant.clone()),
        workspace: Some(workspace.as_str().to_owned()),
        kind: "admin".to_owned(),
        action: "issue_jwt".to_owned(),
        resource: Some(format!("jwt:{jti} for {}", principal.as_str())),
        outcome: "ok".to_owned(),
        latency_ms: None,
        notion_requests: None,
        justification,
        severity: Severity::Info,
    };
    if let Err(e) = app.audit.record(event) {
        tracing::warn!(error = %e, "a JWT issue could not be queued for the audit trail");
    }
}

async fn list_keys(State(app): Shared, Extension(caller): Caller) -> ApiResult {
    access::check_system(&app, &caller, "GET /jwt/keys")?;
    let now_ms = app.clock.now_ms();
    let keys = app
        .read(|s| {
            let current = s.jwt().current_key().map(|k| k.kid.clone());
            s.jwt()
                .keys()
                .map(|k| {
                    json!({
                        "kid": k.kid,
                        "alg": k.alg.name(),
                        "current": current.as_deref() == Some(k.kid.as_str()),
                        "created_at_ms": k.created_at_ms,
                        "retired_at_ms": k.retired_at_ms,
                        "not_after_ms": k.not_after_ms,
                        "validates": k.validates_at(now_ms),
                        "jwk": crate::jwt::jwk_json(k),
                    })
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(ok(json!({
        "issuer": app.jwt.issuer,
        "audience": app.jwt.audience,
        "keys": keys,
    })))
}

async fn rotate(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(&bytes(body)?, &["alg", "overlap_secs", "justification"])?;
    let alg = match b.opt_string("alg")? {
        None => JwtAlg::EdDSA,
        Some(name) => match JwtAlg::from_name(&name) {
            Some(a @ (JwtAlg::EdDSA | JwtAlg::ES256)) => a,
            _ => {
                return Err(AdminError::invalid(
                    "alg",
                    "the built-in issuer signs with EdDSA (default) or ES256",
                ));
            }
        },
    };
    let overlap_secs = b
        .opt_u64("overlap_secs", 0, 366 * 24 * 3600)?
        .unwrap_or(app.jwt.max_ttl_secs);
    let why = justification(&mut b)?;
    let now_ms = app.clock.now_ms();
    let key = crate::jwt::generate_key(&app.master_key, alg, now_ms)
        .map_err(|e| AdminError::internal(e.to_string()))?;
    let kid = key.kid.clone();
    let previous = app
        .control
        .read_applied(|s| s.jwt().current_key().map(|k| k.kid.clone()));
    let not_after_ms = now_ms + overlap_secs * 1000;
    write(
        &app,
        &caller,
        crate::jwt::add_key_command(key, now_ms, true, Some(not_after_ms)),
        why,
    )
    .await?;
    Ok(created(json!({
        "kid": kid,
        "alg": alg.name(),
        "previous": previous,
        "previous_not_after_ms": previous.as_ref().map(|_| not_after_ms),
    })))
}

async fn retire(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let kid = path(p)?;
    check_kid(&kid).map_err(|e| AdminError::invalid("kid", e.to_string()))?;
    let mut b = Body::parse(&bytes(body)?, &["overlap_secs", "justification"])?;
    let overlap_secs = b
        .opt_u64("overlap_secs", 0, 366 * 24 * 3600)?
        .unwrap_or(app.jwt.max_ttl_secs);
    let why = justification(&mut b)?;
    let at_ms = app.clock.now_ms();
    let not_after_ms = at_ms + overlap_secs * 1000;
    write(
        &app,
        &caller,
        Command::RetireJwtKey {
            kid: kid.clone(),
            at_ms,
            not_after_ms,
        },
        why,
    )
    .await?;
    Ok(ok(json!({"kid": kid, "not_after_ms": not_after_ms})))
}

async fn revoke(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(
        &bytes(body)?,
        &["token", "tenant", "jti", "expires_at_ms", "justification"],
    )?;
    let token = b.opt_string("token")?;
    let tenant = b.opt_string("tenant")?;
    let jti = b.opt_string("jti")?;
    let expires_at_ms = b.opt_u64("expires_at_ms", 1, u64::MAX)?;
    let why = justification(&mut b)?;
    let (tenant, jti, expires_at_ms) = match (token, tenant, jti, expires_at_ms) {
        (Some(token), None, None, None) => revocation_of(&app, &token)?,
        (None, Some(tenant), Some(jti), Some(exp)) => {
            (id("tenant", tenant, TenantId::new)?, jti, exp)
        }
        _ => {
            return Err(AdminError::bad_request(
                "send either {\"token\": \"<jwt>\"} or {\"tenant\", \"jti\", \"expires_at_ms\"}",
            ));
        }
    };
    check_jti(&jti).map_err(|e| AdminError::invalid("jti", e.to_string()))?;
    let revoked_at_ms = app.clock.now_ms();
    let changed = write(
        &app,
        &caller,
        Command::RevokeJwt {
            tenant: tenant.clone(),
            jti: jti.clone(),
            expires_at_ms,
            revoked_at_ms,
        },
        why,
    )
    .await?;
    Ok(ok(json!({
        "tenant": tenant.as_str(),
        "jti": jti,
        "expires_at_ms": expires_at_ms,
        "revoked": true,
        "changed": changed,
    })))
}

/// The tenant, `jti` and expiry of a token to revoke, from its claims (the signature is not
/// needed: a revocation only ever takes rights away, and only in the tenant the admin may
/// secure, which `apply` checks).
fn revocation_of(app: &App, token: &str) -> Result<(TenantId, String, u64), AdminError> {
    let claims =
        crate::jwt::peek_claims(token).map_err(|e| AdminError::invalid("token", e.to_string()))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let jti = text("jti").ok_or_else(|| {
        AdminError::invalid("token", "the token has no jti; it cannot be revoked by id")
    })?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| AdminError::invalid("token", "the token has no numeric exp"))?;
    let issuer = text("iss").unwrap_or_default();
    let tenant = if issuer == app.jwt.issuer {
        text("tenant")
            .ok_or_else(|| AdminError::invalid("token", "the token names no tenant"))
            .and_then(|t| id("tenant", t, TenantId::new))?
    } else {
        app.control
            .read_applied(|s| crate::oidc::provider_for(s, &issuer, &claims))
            .map(|p| p.tenant)
            .ok_or_else(|| {
                AdminError::invalid(
                    "token",
                    "its issuer is neither this cluster nor a tenant's OpenID Connect provider",
                )
            })?
    };
    Ok((tenant, jti, exp.saturating_mul(1000)))
}

fn provider_json(p: &OidcProvider) -> Value {
    let groups: Map<String, Value> = p
        .groups
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                json!({
                    "role": m.role.map(|r| r.name()),
                    "workspace": m.workspace.as_ref().map(WorkspaceId::as_str),
                    "scopes": m.scopes,
                }),
            )
        })
        .collect();
    json!({
        "tenant": p.tenant.as_str(),
        "issuer": p.issuer,
        "audience": p.audience,
        "principal_claim": p.principal_claim,
        "tenant_claim": p.tenant_claim,
        "groups_claim": p.groups_claim,
        "workspace_claim": p.workspace_claim,
        "default_workspace": p.default_workspace.as_ref().map(WorkspaceId::as_str),
        "groups": groups,
    })
}

fn group_mapping(name: &str, value: Value) -> Result<GroupMapping, AdminError> {
    let field = format!("groups.{}", name.chars().take(64).collect::<String>());
    let Value::Object(map) = value else {
        return Err(AdminError::invalid(
            &field,
            "must be an object of role, workspace, scopes",
        ));
    };
    let bytes =
        serde_json::to_vec(&Value::Object(map)).map_err(|e| AdminError::internal(e.to_string()))?;
    let mut b = Body::parse(&bytes, &["role", "workspace", "scopes"])
        .map_err(|e| AdminError::invalid(&field, e.message))?;
    let role = b
        .opt_string("role")?
        .map(|r| r.parse::<Role>())
        .transpose()
        .map_err(|e| AdminError::invalid(&format!("{field}.role"), e))?;
    let workspace = b
        .opt_string("workspace")?
        .map(|w| id(&format!("{field}.workspace"), w, WorkspaceId::new))
        .transpose()?;
    let scopes: BTreeSet<String> = b
        .opt_strings("scopes")?
        .unwrap_or_default()
        .into_iter()
        .collect();
    if let Some(bad) = scopes
        .iter()
        .find(|s| !crate::mcp::SCOPES_SUPPORTED.contains(&s.as_str()))
    {
        return Err(AdminError::invalid(
            &format!("{field}.scopes"),
            format!(
                "unknown scope {:?}; known scopes: {}",
                bad.chars().take(64).collect::<String>(),
                crate::mcp::SCOPES_SUPPORTED.join(", ")
            ),
        ));
    }
    Ok(GroupMapping {
        role,
        workspace,
        scopes,
    })
}

async fn set_oidc(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let mut b = Body::parse(
        &bytes(body)?,
        &[
            "issuer",
            "audience",
            "principal_claim",
            "tenant_claim",
            "groups_claim",
            "workspace_claim",
            "default_workspace",
            "groups",
            "justification",
        ],
    )?;
    let issuer = b.string("issuer")?;
    let audience = b
        .opt_string("audience")?
        .unwrap_or_else(|| app.jwt.audience.clone());
    let principal_claim = b
        .opt_string("principal_claim")?
        .unwrap_or_else(|| "sub".into());
    let tenant_claim = b.opt_string("tenant_claim")?;
    let groups_claim = b
        .opt_string("groups_claim")?
        .unwrap_or_else(|| "groups".into());
    let workspace_claim = b.opt_string("workspace_claim")?;
    let default_workspace = b
        .opt_string("default_workspace")?
        .map(|w| id("default_workspace", w, WorkspaceId::new))
        .transpose()?;
    let mut groups = BTreeMap::new();
    for (name, value) in b.opt_object("groups")?.unwrap_or_default() {
        let mapping = group_mapping(&name, value)?;
        groups.insert(name, mapping);
    }
    let why = justification(&mut b)?;
    let provider = OidcProvider {
        tenant: tenant.clone(),
        issuer,
        audience,
        principal_claim,
        tenant_claim,
        groups_claim,
        workspace_claim,
        default_workspace,
        groups,
    };
    provider
        .check()
        .map_err(|e| AdminError::invalid("provider", e.to_string()))?;
    if !crate::oidc::OidcSettings::from_config(&app.config).issuer_allowed(&provider.issuer) {
        return Err(AdminError::invalid(
            "issuer",
            "must be an https:// URL starting with one of security.oidc_allowed_issuers",
        ));
    }
    let json = provider_json(&provider);
    write(&app, &caller, Command::SetOidcProvider { provider }, why).await?;
    Ok(ok(json))
}

async fn get_oidc(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let what = format!("GET /tenants/{}/oidc", tenant.as_str());
    let now_ms = app.clock.now_ms();
    let target = access::tenant_scope(&tenant);
    let found = app
        .read(|s| {
            access::check(&caller, s, Permission::TenantRead, &target, now_ms)?;
            Ok(s.jwt().oidc_provider(&tenant).map(provider_json))
        })
        .await?
        .map_err(|d| access::refuse(&app, &caller, d, &what))?;
    found.map(ok).ok_or_else(|| {
        AdminError::not_found(format!(
            "tenant {:?} has no OpenID Connect provider",
            tenant.as_str()
        ))
    })
}

async fn remove_oidc(
    State(app): Shared,
    Extension(caller): Caller,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let tenant = id("tenant", path(p)?, TenantId::new)?;
    let why = super::routes::justification_only(body)?;
    write(
        &app,
        &caller,
        Command::RemoveOidcProvider {
            tenant: tenant.clone(),
        },
        why,
    )
    .await?;
    Ok(ok(json!({"tenant": tenant.as_str(), "removed": true})))
}
