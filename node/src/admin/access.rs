//! Who may read what through the admin API. Changes are authorised by `apply` (the admin
//! token's subject against the permission the command needs, at its log index); reads are
//! authorised here, with the same [`authorize`] against the state being read, so a tenant
//! admin sees its own tenant and nothing of another.
//!
//! A root admin token (no subject) may read everything. A token acting as a principal needs:
//! - `tenants.list` to list every tenant (otherwise the list holds the tenants it has
//!   `tenant.read` in);
//! - `tenant.read` on a tenant to read it and its workspaces, integrations, principals and
//!   tokens; without it, `workspace.read` on some of its workspaces shows those workspaces and
//!   the objects that belong to them;
//! - `system.configure` for the cluster's status, its nodes, global principals and global
//!   role bindings (or `security.policy` for global bindings and restrictions);
//! - `audit.read` on a tenant to read its audit chain, and `reports.enterprise` for the
//!   cluster's own chain (`_cluster`).
//!
//! Every denial answers 403 `forbidden` naming the permission and the scope, and is recorded
//! in the audit trail (`kind: authorize`, `outcome: denied`).
//!
//! Scopes: reading the audit trail also needs the OAuth scope `audit_access`. Admin tokens
//! carry no scopes of their own yet, so every admin token is treated as holding
//! [`ADMIN_TOKEN_SCOPES`]; scoped admin credentials come with JWT bearer tokens.

use std::collections::BTreeSet;

use quire_raft::audit::{AuditEvent, CLUSTER_CHAIN, Severity};
use quire_raft::ids::{TenantId, WorkspaceId};
use quire_raft::rbac::{Permission, RoleScope, authorize};
use quire_raft::state::State as ControlState;

use super::AdminCaller;
use super::error::AdminError;
use crate::app::App;
use crate::mcp::{SCOPE_ADMIN, SCOPE_AUDIT};

/// The OAuth scopes every admin token is treated as holding (admin tokens carry none of their
/// own yet).
pub const ADMIN_TOKEN_SCOPES: [&str; 2] = [SCOPE_ADMIN, SCOPE_AUDIT];

/// Whether `caller` holds the OAuth scope `scope`.
pub fn has_scope(_caller: &AdminCaller, scope: &str) -> bool {
    ADMIN_TOKEN_SCOPES.contains(&scope)
}

/// A read the caller may not make: the permission it lacks, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The permission checked.
    pub permission: Permission,
    /// Where it was needed.
    pub target: RoleScope,
    /// The decision's reason.
    pub reason: String,
}

/// Checks that `caller` holds `permission` on `target` in `state` at `now_ms`; root tokens
/// hold everything.
pub fn check(
    caller: &AdminCaller,
    state: &ControlState,
    permission: Permission,
    target: &RoleScope,
    now_ms: u64,
) -> Result<(), Denial> {
    let Some(subject) = &caller.subject else {
        return Ok(());
    };
    let decision = authorize(state, subject, permission, target, now_ms);
    if decision.allowed {
        Ok(())
    } else {
        Err(Denial {
            permission,
            target: target.clone(),
            reason: decision.reason,
        })
    }
}

/// Whether `caller` holds `permission` on `target`.
pub fn may(
    caller: &AdminCaller,
    state: &ControlState,
    permission: Permission,
    target: &RoleScope,
    now_ms: u64,
) -> bool {
    check(caller, state, permission, target, now_ms).is_ok()
}

/// The scope of one tenant.
pub fn tenant_scope(tenant: &TenantId) -> RoleScope {
    RoleScope::Tenant {
        tenant: tenant.clone(),
    }
}

/// The scope of one workspace.
pub fn workspace_scope(tenant: &TenantId, workspace: &WorkspaceId) -> RoleScope {
    RoleScope::Workspace {
        tenant: tenant.clone(),
        workspace: workspace.clone(),
    }
}

/// What of a tenant the caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantView {
    /// Everything (`tenant.read`).
    All,
    /// Only these workspaces and what belongs to them (`workspace.read` on each).
    Workspaces(BTreeSet<WorkspaceId>),
}

impl TenantView {
    /// Whether the workspace is in view.
    pub fn shows(&self, workspace: &WorkspaceId) -> bool {
        match self {
            TenantView::All => true,
            TenantView::Workspaces(set) => set.contains(workspace),
        }
    }
}

/// What of `tenant` the caller may read: all of it with `tenant.read`, else the workspaces
/// it has `workspace.read` on; denied (naming `tenant.read`) if neither.
pub fn tenant_view(
    caller: &AdminCaller,
    state: &ControlState,
    tenant: &TenantId,
    now_ms: u64,
) -> Result<TenantView, Denial> {
    let denial = match check(
        caller,
        state,
        Permission::TenantRead,
        &tenant_scope(tenant),
        now_ms,
    ) {
        Ok(()) => return Ok(TenantView::All),
        Err(d) => d,
    };
    let visible: BTreeSet<WorkspaceId> = state
        .workspaces(tenant)
        .filter(|w| {
            may(
                caller,
                state,
                Permission::WorkspaceRead,
                &workspace_scope(tenant, &w.id),
                now_ms,
            )
        })
        .map(|w| w.id.clone())
        .collect();
    if visible.is_empty() {
        Err(denial)
    } else {
        Ok(TenantView::Workspaces(visible))
    }
}

/// Checks that the caller may read one workspace: `tenant.read` on its tenant or
/// `workspace.read` on it (the denial names `workspace.read`).
pub fn check_workspace(
    caller: &AdminCaller,
    state: &ControlState,
    tenant: &TenantId,
    workspace: &WorkspaceId,
    now_ms: u64,
) -> Result<(), Denial> {
    if may(
        caller,
        state,
        Permission::TenantRead,
        &tenant_scope(tenant),
        now_ms,
    ) {
        return Ok(());
    }
    check(
        caller,
        state,
        Permission::WorkspaceRead,
        &workspace_scope(tenant, workspace),
        now_ms,
    )
}

/// Whether the caller may see role bindings and restrictions at `scope`: global ones with
/// `system.configure` or `security.policy`, a tenant's with `tenant.read`, a workspace's with
/// `tenant.read` or `workspace.read`.
pub fn may_see_scope(
    caller: &AdminCaller,
    state: &ControlState,
    scope: &RoleScope,
    now_ms: u64,
) -> bool {
    match scope {
        RoleScope::Global => {
            may(
                caller,
                state,
                Permission::SystemConfigure,
                &RoleScope::Global,
                now_ms,
            ) || may(
                caller,
                state,
                Permission::SecurityPolicy,
                &RoleScope::Global,
                now_ms,
            )
        }
        RoleScope::Tenant { tenant } => may(
            caller,
            state,
            Permission::TenantRead,
            &tenant_scope(tenant),
            now_ms,
        ),
        RoleScope::Workspace { tenant, workspace } => {
            check_workspace(caller, state, tenant, workspace, now_ms).is_ok()
        }
    }
}

/// The permission and scope that reading an audit chain needs: `audit.read` on its tenant,
/// `reports.enterprise` for the cluster's chain. `None` if the name is neither.
pub fn audit_requirement(chain: &str) -> Option<(Permission, RoleScope)> {
    if chain == CLUSTER_CHAIN {
        return Some((Permission::ReportsEnterprise, RoleScope::Global));
    }
    let tenant = TenantId::new(chain).ok()?;
    Some((Permission::AuditRead, tenant_scope(&tenant)))
}

/// Checks that the caller may read the audit chain `chain`.
pub fn check_audit(
    caller: &AdminCaller,
    state: &ControlState,
    chain: &str,
    now_ms: u64,
) -> Result<(), Denial> {
    let Some((permission, target)) = audit_requirement(chain) else {
        // Not a chain name: only a root token could ask, and it reads nothing there.
        return check(
            caller,
            state,
            Permission::ReportsEnterprise,
            &RoleScope::Global,
            now_ms,
        );
    };
    check(caller, state, permission, &target, now_ms)
}

/// Turns a denial into the 403 the caller gets, and records it in the audit trail (in the
/// target tenant's chain when that tenant exists, else in the caller's own).
pub fn refuse(app: &App, caller: &AdminCaller, denial: Denial, resource: &str) -> AdminError {
    let Denial {
        permission,
        target,
        reason,
    } = denial;
    let target_tenant = target.tenant().cloned();
    let tenant = app.control.read_applied(|s| match &target_tenant {
        Some(t) if s.tenant(t).is_some() => Some(t.clone()),
        _ => caller
            .subject
            .as_ref()
            .and_then(|subject| subject.tenant.clone())
            .filter(|t| s.tenant(t).is_some()),
    });
    let workspace = match &target {
        RoleScope::Workspace { workspace, .. } if tenant == target_tenant => {
            Some(workspace.as_str().to_owned())
        }
        _ => None,
    };
    let event = AuditEvent {
        at_ms: app.clock.now_ms(),
        node: app.config.node.id,
        principal: caller.actor(),
        tenant,
        workspace,
        kind: "authorize".to_owned(),
        action: permission.name().to_owned(),
        resource: Some(truncate(resource, 200)),
        outcome: "denied".to_owned(),
        latency_ms: None,
        notion_requests: None,
        justification: Some(truncate(&reason, 900)),
        severity: Severity::Warning,
    };
    if let Err(e) = app.audit.record(event) {
        tracing::warn!(error = %e, "an admin read denial could not be queued for the audit trail");
    }
    tracing::info!(admin_token = %caller.token_id, permission = permission.name(), "admin read denied");
    AdminError::forbidden(format!("{permission} on {target} is not granted: {reason}"))
}

/// Checks `system.configure` (global) for a cluster-level request (status, nodes, global
/// principals), against this node's applied state; a denial is audited.
pub fn check_system(app: &App, caller: &AdminCaller, what: &str) -> Result<(), AdminError> {
    let now_ms = app.clock.now_ms();
    app.control
        .read_applied(|s| {
            check(
                caller,
                s,
                Permission::SystemConfigure,
                &RoleScope::Global,
                now_ms,
            )
        })
        .map_err(|d| refuse(app, caller, d, what))
}

/// An error for a missing OAuth scope.
pub fn insufficient_scope(scope: &str) -> AdminError {
    AdminError::forbidden(format!(
        "insufficient_scope: this request needs the scope {scope:?}"
    ))
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_raft::command::{Command, apply};
    use quire_raft::ids::{IntegrationId, PrincipalId, TokenId};
    use quire_raft::rbac::{Role, Subject};
    use quire_raft::seal::{MasterKey, integration_aad};
    use quire_raft::state::Budget;
    use rand::SeedableRng;

    const NOW: u64 = 10_000;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    fn w(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    fn run(s: &mut ControlState, cmd: Command) {
        apply(s, &cmd).unwrap_or_else(|e| panic!("{} rejected: {e}", cmd.kind()));
    }

    fn caller(subject: Option<&str>) -> AdminCaller {
        AdminCaller {
            token_id: TokenId::new("adm-test").unwrap(),
            display_name: "test".into(),
            subject: subject.map(|s| s.parse().unwrap()),
        }
    }

    /// Tenants `acme` and `other` (workspaces `docs` and `eng` each); `acme/alice` tenant
    /// admin of acme, `acme/mgr` workspace manager of acme/docs, global `auditor` a
    /// compliance officer.
    fn state() -> ControlState {
        let mut s = ControlState::new();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let key = MasterKey::generate(&mut rng);
        for tenant in ["acme", "other"] {
            run(
                &mut s,
                Command::CreateTenant {
                    tenant: t(tenant),
                    display_name: tenant.into(),
                },
            );
            run(
                &mut s,
                Command::AddIntegration {
                    tenant: t(tenant),
                    integration: IntegrationId::new("main").unwrap(),
                    display_name: "main".into(),
                    sealed_token: key
                        .seal(b"ntn_x", &integration_aad(tenant, "main"), &mut rng)
                        .unwrap(),
                    budget: Budget {
                        requests_per_second: 3,
                        burst: 5,
                    },
                },
            );
            for workspace in ["docs", "eng"] {
                run(
                    &mut s,
                    Command::CreateWorkspace {
                        tenant: t(tenant),
                        workspace: w(workspace),
                        display_name: workspace.into(),
                        integration: IntegrationId::new("main").unwrap(),
                    },
                );
            }
        }
        for principal in ["alice", "mgr"] {
            run(
                &mut s,
                Command::CreatePrincipal {
                    tenant: t("acme"),
                    principal: PrincipalId::new(principal).unwrap(),
                    display_name: principal.into(),
                },
            );
        }
        run(
            &mut s,
            Command::CreateGlobalPrincipal {
                principal: PrincipalId::new("auditor").unwrap(),
                display_name: "auditor".into(),
            },
        );
        for (subject, role, scope) in [
            ("acme/alice", Role::TenantAdmin, tenant_scope(&t("acme"))),
            (
                "acme/mgr",
                Role::WorkspaceManager,
                workspace_scope(&t("acme"), &w("docs")),
            ),
            ("auditor", Role::ComplianceOfficer, RoleScope::Global),
        ] {
            run(
                &mut s,
                Command::AssignRole {
                    subject: subject.parse::<Subject>().unwrap(),
                    role,
                    scope,
                    granted_at_ms: NOW - 1,
                    expires_at_ms: None,
                    justification: None,
                },
            );
        }
        s
    }

    #[test]
    fn tenant_and_workspace_reads_follow_roles() {
        let s = state();
        let (root, alice, mgr) = (
            caller(None),
            caller(Some("acme/alice")),
            caller(Some("acme/mgr")),
        );
        assert_eq!(
            tenant_view(&root, &s, &t("other"), NOW),
            Ok(TenantView::All)
        );
        assert_eq!(
            tenant_view(&alice, &s, &t("acme"), NOW),
            Ok(TenantView::All)
        );
        let d = tenant_view(&alice, &s, &t("other"), NOW).unwrap_err();
        assert_eq!(d.permission, Permission::TenantRead);
        assert_eq!(d.target, tenant_scope(&t("other")));
        assert_eq!(
            tenant_view(&mgr, &s, &t("acme"), NOW),
            Ok(TenantView::Workspaces([w("docs")].into()))
        );
        assert!(check_workspace(&mgr, &s, &t("acme"), &w("docs"), NOW).is_ok());
        let d = check_workspace(&mgr, &s, &t("acme"), &w("eng"), NOW).unwrap_err();
        assert_eq!(d.permission, Permission::WorkspaceRead);
        assert!(check_workspace(&alice, &s, &t("acme"), &w("eng"), NOW).is_ok());
        // Role bindings are seen where the reader may read.
        assert!(may_see_scope(&alice, &s, &tenant_scope(&t("acme")), NOW));
        assert!(!may_see_scope(&alice, &s, &RoleScope::Global, NOW));
        assert!(may_see_scope(
            &mgr,
            &s,
            &workspace_scope(&t("acme"), &w("docs")),
            NOW
        ));
        assert!(!may_see_scope(&mgr, &s, &tenant_scope(&t("acme")), NOW));
        assert!(may_see_scope(&root, &s, &RoleScope::Global, NOW));
    }

    #[test]
    fn audit_chains_need_audit_read_or_enterprise_reports() {
        let s = state();
        let (alice, mgr, auditor) = (
            caller(Some("acme/alice")),
            caller(Some("acme/mgr")),
            caller(Some("auditor")),
        );
        assert!(check_audit(&alice, &s, "acme", NOW).is_ok());
        let d = check_audit(&alice, &s, "other", NOW).unwrap_err();
        assert_eq!(d.permission, Permission::AuditRead);
        let d = check_audit(&alice, &s, CLUSTER_CHAIN, NOW).unwrap_err();
        assert_eq!(
            (d.permission, d.target),
            (Permission::ReportsEnterprise, RoleScope::Global)
        );
        assert!(check_audit(&mgr, &s, "acme", NOW).is_err());
        for chain in ["acme", "other", CLUSTER_CHAIN] {
            assert!(check_audit(&auditor, &s, chain, NOW).is_ok(), "{chain}");
        }
        assert!(check_audit(&caller(None), &s, "Not A Chain", NOW).is_ok());
        assert!(check_audit(&alice, &s, "Not A Chain", NOW).is_err());
        assert!(has_scope(&alice, SCOPE_AUDIT));
    }
}
