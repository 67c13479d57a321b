//! Role-based access control: roles, the permission catalogue, role bindings, explicit
//! restrictions, and the pure [`authorize`] decision every node takes against its applied
//! state (and `apply` takes against the state at a command's log index).
//!
//! The model:
//! - A [`Subject`] is a principal: a tenant principal (`tenant/principal`) or a global one
//!   (`principal`, held by enterprise staff). A tenant principal holds roles only inside its
//!   own tenant, so no grant can ever cross a tenant boundary.
//! - A [`RoleBinding`] gives a subject a [`Role`] at a [`RoleScope`] (global, one tenant, one
//!   workspace), optionally until an expiry.
//! - Each [`Permission`] lists the roles that carry it and the level of target it applies
//!   to. Higher roles inherit the lower ones within their scope: an enterprise admin holds
//!   every tenant and workspace permission everywhere, a tenant admin every workspace
//!   permission in its tenant, a workspace manager the standard user's in its workspace.
//! - A [`Restriction`] (explicit deny) on a subject for a permission at a scope overrides
//!   every grant that would otherwise allow it.
//! - Membership of a workspace (`Principal::workspaces`, `GrantWorkspace`) is the
//!   `standard_user` role in that workspace.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{PrincipalId, TenantId, WorkspaceId, validate_id};

/// A role. Ordered from the broadest to the narrowest of the hierarchy; the two functional
/// roles stand beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Global: system configuration, tenants, global security policy, enterprise reporting.
    EnterpriseAdmin,
    /// One tenant: its users, workspaces, integrations, security settings, usage reporting.
    TenantAdmin,
    /// One workspace: its members, integration configuration, workflow templates, analytics.
    WorkspaceManager,
    /// Uses the workspaces it is assigned, runs workflows, sees its own data.
    StandardUser,
    /// Functional: security policy and tenant security settings, audit; approves.
    SecurityAdmin,
    /// Functional: audit and reports; approves.
    ComplianceOfficer,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 6] = [
        Role::EnterpriseAdmin,
        Role::TenantAdmin,
        Role::WorkspaceManager,
        Role::StandardUser,
        Role::SecurityAdmin,
        Role::ComplianceOfficer,
    ];

    /// The name used in the API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::EnterpriseAdmin => "enterprise_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::WorkspaceManager => "workspace_manager",
            Role::StandardUser => "standard_user",
            Role::SecurityAdmin => "security_admin",
            Role::ComplianceOfficer => "compliance_officer",
        }
    }

    /// The scope levels a binding of this role may have.
    pub fn allowed_levels(self) -> &'static [Level] {
        match self {
            Role::EnterpriseAdmin => &[Level::Global],
            Role::TenantAdmin => &[Level::Tenant],
            Role::WorkspaceManager | Role::StandardUser => &[Level::Workspace],
            Role::SecurityAdmin | Role::ComplianceOfficer => &[Level::Global, Level::Tenant],
        }
    }

    /// Roles this role may assign to others (within its own scope): every role below it in
    /// the hierarchy. Functional roles assign nothing.
    pub fn may_assign(self, other: Role) -> bool {
        match self {
            Role::EnterpriseAdmin => other != Role::EnterpriseAdmin,
            Role::TenantAdmin => matches!(other, Role::WorkspaceManager | Role::StandardUser),
            Role::WorkspaceManager => other == Role::StandardUser,
            Role::StandardUser | Role::SecurityAdmin | Role::ComplianceOfficer => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                format!("unknown role {s:?}; roles are: {}", names.join(", "))
            })
    }
}

/// The level of a scope or target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The whole cluster.
    Global,
    /// One tenant.
    Tenant,
    /// One workspace of a tenant.
    Workspace,
}

/// Where a role binding or restriction applies, and what an action targets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum RoleScope {
    /// The whole cluster.
    Global,
    /// One tenant.
    Tenant {
        /// The tenant.
        tenant: TenantId,
    },
    /// One workspace.
    Workspace {
        /// Its tenant.
        tenant: TenantId,
        /// The workspace.
        workspace: WorkspaceId,
    },
}

impl RoleScope {
    /// Its level.
    pub fn level(&self) -> Level {
        match self {
            RoleScope::Global => Level::Global,
            RoleScope::Tenant { .. } => Level::Tenant,
            RoleScope::Workspace { .. } => Level::Workspace,
        }
    }

    /// The tenant it lies in, if any.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            RoleScope::Global => None,
            RoleScope::Tenant { tenant } | RoleScope::Workspace { tenant, .. } => Some(tenant),
        }
    }

    /// Whether `self` contains `target` (a scope contains itself).
    pub fn covers(&self, target: &RoleScope) -> bool {
        match (self, target) {
            (RoleScope::Global, _) => true,
            (RoleScope::Tenant { tenant: a }, RoleScope::Tenant { tenant: b }) => a == b,
            (RoleScope::Tenant { tenant: a }, RoleScope::Workspace { tenant: b, .. }) => a == b,
            (
                RoleScope::Workspace {
                    tenant: a,
                    workspace: wa,
                },
                RoleScope::Workspace {
                    tenant: b,
                    workspace: wb,
                },
            ) => a == b && wa == wb,
            _ => false,
        }
    }
}

impl fmt::Display for RoleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleScope::Global => f.write_str("global"),
            RoleScope::Tenant { tenant } => write!(f, "tenant {}", tenant.as_str()),
            RoleScope::Workspace { tenant, workspace } => {
                write!(f, "workspace {}/{}", tenant.as_str(), workspace.as_str())
            }
        }
    }
}

/// A principal as the access model sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject {
    /// The principal's tenant; `None` for a global (enterprise) principal.
    pub tenant: Option<TenantId>,
    /// The principal.
    pub principal: PrincipalId,
}

impl Subject {
    /// A principal of a tenant.
    pub fn tenant(tenant: TenantId, principal: PrincipalId) -> Self {
        Self {
            tenant: Some(tenant),
            principal,
        }
    }

    /// A global principal.
    pub fn global(principal: PrincipalId) -> Self {
        Self {
            tenant: None,
            principal,
        }
    }

    /// Whether this subject may hold a binding at `scope`: a tenant principal only inside its
    /// own tenant.
    pub fn may_hold(&self, scope: &RoleScope) -> bool {
        match &self.tenant {
            None => true,
            Some(own) => scope.tenant() == Some(own),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            Some(t) => write!(f, "{}/{}", t.as_str(), self.principal.as_str()),
            None => f.write_str(self.principal.as_str()),
        }
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Subject {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Subject {
    type Err = String;

    /// `tenant/principal` or `principal` (global).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((tenant, principal)) => Ok(Subject::tenant(
                TenantId::new(tenant).map_err(|e| e.to_string())?,
                PrincipalId::new(principal).map_err(|e| e.to_string())?,
            )),
            None => {
                validate_id("principal", s).map_err(|e| e.to_string())?;
                Ok(Subject::global(
                    PrincipalId::new(s).map_err(|e| e.to_string())?,
                ))
            }
        }
    }
}

macro_rules! permissions {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $level:ident, [$($role:ident),*]; )*) => {
        /// One thing a principal may be allowed to do. Every admin action and every MCP tool
        /// maps to exactly one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Permission {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl Permission {
            /// Every permission, in catalogue order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),*];

            /// Its name, e.g. `tenant.users.manage`.
            pub fn name(self) -> &'static str {
                match self { $(Permission::$variant => $name,)* }
            }

            /// The level of target it applies to.
            pub fn level(self) -> Level {
                match self { $(Permission::$variant => Level::$level,)* }
            }

            /// The roles that carry it directly (inheritance adds the roles above them).
            pub fn roles(self) -> &'static [Role] {
                match self { $(Permission::$variant => &[$(Role::$role),*],)* }
            }
        }
    };
}

permissions! {
    /// Cluster configuration: nodes, admin tokens, global principals, cluster settings.
    SystemConfigure = "system.configure", Global, [EnterpriseAdmin];
    /// Create a tenant.
    TenantsCreate = "tenants.create", Global, [EnterpriseAdmin];
    /// Delete a tenant.
    TenantsDelete = "tenants.delete", Global, [EnterpriseAdmin];
    /// List every tenant.
    TenantsList = "tenants.list", Global, [EnterpriseAdmin, SecurityAdmin, ComplianceOfficer];
    /// Change the global security policy.
    SecurityPolicy = "security.policy", Global, [EnterpriseAdmin, SecurityAdmin];
    /// Enterprise-wide reports.
    ReportsEnterprise = "reports.enterprise", Global, [EnterpriseAdmin, ComplianceOfficer];
    /// Read a tenant's configuration.
    TenantRead = "tenant.read", Tenant, [TenantAdmin, SecurityAdmin, ComplianceOfficer];
    /// Manage a tenant's principals and their tenant-level roles.
    TenantUsersManage = "tenant.users.manage", Tenant, [TenantAdmin];
    /// Create and configure a tenant's workspaces.
    TenantWorkspacesConfigure = "tenant.workspaces.configure", Tenant, [TenantAdmin];
    /// Add and remove a tenant's Notion integrations.
    TenantIntegrationsManage = "tenant.integrations.manage", Tenant, [TenantAdmin];
    /// A tenant's security settings: token revocation, restrictions.
    TenantSecurity = "tenant.security", Tenant, [TenantAdmin, SecurityAdmin];
    /// A tenant's usage reports.
    TenantUsageRead = "tenant.usage.read", Tenant, [TenantAdmin, ComplianceOfficer];
    /// Read a tenant's audit trail.
    AuditRead = "audit.read", Tenant, [TenantAdmin, SecurityAdmin, ComplianceOfficer];
    /// Read a workspace's configuration and members.
    WorkspaceRead = "workspace.read", Workspace, [WorkspaceManager];
    /// Manage a workspace's members, their roles in it and their tokens.
    WorkspaceMembersManage = "workspace.members.manage", Workspace, [WorkspaceManager];
    /// Configure the Notion integration that serves a workspace.
    WorkspaceIntegrationConfigure = "workspace.integration.configure", Workspace, [WorkspaceManager];
    /// Create, edit and retire workflow templates.
    WorkspaceTemplatesManage = "workspace.templates.manage", Workspace, [WorkspaceManager];
    /// A workspace's analytics.
    WorkspaceAnalyticsRead = "workspace.analytics.read", Workspace, [WorkspaceManager];
    /// Read Notion content through the read-only tools.
    NotionRead = "notion.read", Workspace, [StandardUser];
    /// Change Notion content through the write tools.
    NotionWrite = "notion.write", Workspace, [StandardUser];
    /// Run a workflow template.
    WorkflowRun = "workflow.run", Workspace, [StandardUser];
    /// See one's own data (tokens, usage).
    OwnDataRead = "own.data.read", Workspace, [StandardUser];
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Permission {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown permission {s:?}"))
    }
}

/// Whether `held` (a role bound at `binding`) carries `permission` on `target`, through the
/// role itself or inheritance. The binding's scope must cover the target.
pub fn role_grants(
    held: Role,
    binding: &RoleScope,
    permission: Permission,
    target: &RoleScope,
) -> bool {
    if !binding.covers(target) || target.level() != permission.level() {
        return false;
    }
    let direct = permission.roles();
    match held {
        // Everything, everywhere.
        Role::EnterpriseAdmin => true,
        // Every tenant- and workspace-level permission in its tenant.
        Role::TenantAdmin => {
            permission.level() != Level::Global
                && (direct.contains(&Role::TenantAdmin)
                    || direct.contains(&Role::WorkspaceManager)
                    || direct.contains(&Role::StandardUser))
        }
        Role::WorkspaceManager => {
            direct.contains(&Role::WorkspaceManager) || direct.contains(&Role::StandardUser)
        }
        Role::StandardUser => direct.contains(&Role::StandardUser),
        Role::SecurityAdmin => direct.contains(&Role::SecurityAdmin),
        Role::ComplianceOfficer => direct.contains(&Role::ComplianceOfficer),
    }
}

/// How a binding came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BindingOrigin {
    /// Assigned by an administrator within their authority.
    Assigned,
    /// The built-in root of the cluster (bootstrap).
    Bootstrap,
}

/// A role held by a subject at a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleBinding {
    /// Cluster-unique id (assigned by `apply`, increasing).
    pub id: u64,
    /// Who holds it.
    pub subject: Subject,
    /// The role.
    pub role: Role,
    /// Where.
    pub scope: RoleScope,
    /// Who assigned it (`root` for the bootstrap).
    pub granted_by: String,
    /// When (stamped by the proposer).
    pub granted_at_ms: u64,
    /// Until when, if temporary.
    pub expires_at_ms: Option<u64>,
    /// Why.
    pub justification: Option<String>,
    /// How it came to be.
    pub origin: BindingOrigin,
}

impl RoleBinding {
    /// In force at `now_ms`.
    pub fn is_active_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// An explicit restriction: denies `permission` (or every permission) to a subject at a
/// scope, whatever its roles grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restriction {
    /// Cluster-unique id (assigned by `apply`).
    pub id: u64,
    /// Who is restricted.
    pub subject: Subject,
    /// What is denied; `None` denies everything.
    pub permission: Option<Permission>,
    /// Where.
    pub scope: RoleScope,
    /// Who set it.
    pub set_by: String,
    /// When (stamped by the proposer).
    pub set_at_ms: u64,
    /// Why (required).
    pub justification: String,
}

/// The role bindings and restrictions of the cluster, indexed by subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessState {
    pub(crate) bindings: BTreeMap<Subject, BTreeMap<u64, RoleBinding>>,
    pub(crate) restrictions: BTreeMap<Subject, BTreeMap<u64, Restriction>>,
    pub(crate) next_id: u64,
}

impl AccessState {
    /// A subject's bindings, in id order.
    pub fn bindings_of(&self, subject: &Subject) -> impl Iterator<Item = &RoleBinding> {
        self.bindings
            .get(subject)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// A subject's restrictions, in id order.
    pub fn restrictions_of(&self, subject: &Subject) -> impl Iterator<Item = &Restriction> {
        self.restrictions
            .get(subject)
            .into_iter()
            .flat_map(|m| m.values())
    }

    /// Every binding, by subject then id.
    pub fn all_bindings(&self) -> impl Iterator<Item = &RoleBinding> {
        self.bindings.values().flat_map(|m| m.values())
    }

    /// Every restriction, by subject then id.
    pub fn all_restrictions(&self) -> impl Iterator<Item = &Restriction> {
        self.restrictions.values().flat_map(|m| m.values())
    }

    /// A binding by id.
    pub fn binding(&self, id: u64) -> Option<&RoleBinding> {
        self.all_bindings().find(|b| b.id == id)
    }

    /// A restriction by id.
    pub fn restriction(&self, id: u64) -> Option<&Restriction> {
        self.all_restrictions().find(|r| r.id == id)
    }

    pub(crate) fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// An authorization decision, with the reason a human (and the audit trail) can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// Which grant allowed it, or why it was denied.
    pub reason: String,
}

impl Decision {
    fn allow(reason: String) -> Self {
        Self {
            allowed: true,
            reason,
        }
    }

    fn deny(reason: String) -> Self {
        Self {
            allowed: false,
            reason,
        }
    }
}

/// Why `subject` may never have `permission` on `target`, whatever roles it holds: a target of
/// the wrong level, another tenant, or an explicit restriction.
fn refusal(
    state: &crate::state::State,
    subject: &Subject,
    permission: Permission,
    target: &RoleScope,
) -> Option<Decision> {
    if target.level() != permission.level() {
        return Some(Decision::deny(format!(
            "{permission} applies to a {:?} target, not to {target}",
            permission.level()
        )));
    }
    if let Some(own) = &subject.tenant
        && target.tenant() != Some(own)
    {
        return Some(Decision::deny(format!(
            "{subject} belongs to tenant {} and cannot act on {target}",
            own.as_str()
        )));
    }
    state
        .access()
        .restrictions_of(subject)
        .find(|r| r.scope.covers(target) && r.permission.is_none_or(|p| p == permission))
        .map(|r| {
            Decision::deny(format!(
                "restriction #{} on {subject} at {} denies {}: {}",
                r.id,
                r.scope,
                r.permission.map_or("every permission", |p| p.name()),
                r.justification
            ))
        })
}

/// Decides whether `subject` may use `permission` on `target` at `now_ms`, against `state`:
/// tenant isolation first, then explicit restrictions (a deny wins), then role bindings and
/// workspace membership, then delegations in force (`crate::delegation::honoured`). Pure: every node with the same applied state decides the same.
pub fn authorize(
    state: &crate::state::State,
    subject: &Subject,
    permission: Permission,
    target: &RoleScope,
    now_ms: u64,
) -> Decision {
    if let Some(denied) = refusal(state, subject, permission, target) {
        return denied;
    }
    let access = state.access();
    if let Some(b) = access
        .bindings_of(subject)
        .find(|b| b.is_active_at(now_ms) && role_grants(b.role, &b.scope, permission, target))
    {
        return Decision::allow(format!(
            "{subject} holds {} at {} (binding #{})",
            b.role, b.scope, b.id
        ));
    }
    if let (
        Some(tenant),
        RoleScope::Workspace {
            tenant: t,
            workspace,
        },
    ) = (&subject.tenant, target)
        && tenant == t
        && state
            .principal(tenant, &subject.principal)
            .is_some_and(|p| p.workspaces.contains(workspace))
        && role_grants(Role::StandardUser, target, permission, target)
    {
        return Decision::allow(format!("{subject} is a member (standard_user) of {target}"));
    }
    // A delegation in force, while its delegator still holds what it lent (see
    // `delegation.rs`); a state without delegations decides exactly as before.
    if let Some(d) = crate::delegation::honoured(state, subject, permission, target, now_ms) {
        return Decision::allow(format!(
            "{subject} holds {} at {} delegated by {} (delegation #{})",
            d.grant, d.scope, d.delegator, d.id
        ));
    }
    Decision::deny(format!(
        "no role of {subject} grants {permission} on {target}"
    ))
}

/// [`authorize`] for a caller whose identity provider grants it `extra` roles for this one
/// request (an OpenID Connect token's groups): its stored bindings and membership first, then
/// each extra role whose scope it may hold (a tenant principal only inside its tenant), as if
/// it were an active binding. Restrictions still override everything, and nothing crosses a
/// tenant boundary.
pub fn authorize_with_extra_roles(
    state: &crate::state::State,
    subject: &Subject,
    extra: &[(Role, RoleScope)],
    permission: Permission,
    target: &RoleScope,
    now_ms: u64,
) -> Decision {
    let decision = authorize(state, subject, permission, target, now_ms);
    if decision.allowed || refusal(state, subject, permission, target).is_some() {
        return decision;
    }
    if let Some((role, scope)) = extra.iter().find(|(role, scope)| {
        subject.may_hold(scope)
            && role.allowed_levels().contains(&scope.level())
            && role_grants(*role, scope, permission, target)
    }) {
        return Decision::allow(format!(
            "{subject} holds {role} at {scope} through its identity provider's groups"
        ));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    fn w(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    #[test]
    fn subjects_round_trip() {
        for s in ["acme/alice", "ops-bob"] {
            let subject: Subject = s.parse().unwrap();
            assert_eq!(subject.to_string(), s);
            let json = serde_json::to_string(&subject).unwrap();
            assert_eq!(serde_json::from_str::<Subject>(&json).unwrap(), subject);
        }
        assert!("Acme/alice".parse::<Subject>().is_err());
        assert!("a/b/c".parse::<Subject>().is_err());
    }

    #[test]
    fn scopes_cover_what_lies_inside_them() {
        let acme = RoleScope::Tenant { tenant: t("acme") };
        let acme_docs = RoleScope::Workspace {
            tenant: t("acme"),
            workspace: w("docs"),
        };
        let other = RoleScope::Workspace {
            tenant: t("other"),
            workspace: w("docs"),
        };
        assert!(RoleScope::Global.covers(&acme_docs));
        assert!(acme.covers(&acme_docs));
        assert!(!acme.covers(&other));
        assert!(!acme_docs.covers(&acme));
        assert!(!acme.covers(&RoleScope::Global));
    }

    #[test]
    fn every_permission_has_a_role_at_its_level() {
        for p in Permission::ALL {
            assert!(!p.roles().is_empty(), "{p}");
            assert!(
                p.roles()
                    .iter()
                    .all(|r| r.allowed_levels().iter().any(|l| *l <= p.level())),
                "{p} is carried by a role that cannot be bound at or above its level"
            );
            assert_eq!(p.name().parse::<Permission>().unwrap(), *p);
        }
    }
}
