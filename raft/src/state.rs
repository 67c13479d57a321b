//! The replicated state model: what every node holds after applying the same log.
//!
//! Everything is kept in `BTreeMap`s/`BTreeSet`s so iteration (and serialisation) order is
//! the same on every node. The model changes only through [`crate::command::apply`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::approvals::ApprovalState;
use crate::audit::AuditState;
use crate::command::{ApplyError, CommandOutput};
use crate::delegation::DelegationState;
use crate::ids::{IntegrationId, PrincipalId, TenantId, TokenId, WorkspaceId};
use crate::jwt_keys::JwtState;
use crate::rbac::{AccessState, Subject};
use crate::seal::SealedSecret;

/// Cluster-wide facts, set once by `InitCluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster's name.
    pub cluster_name: String,
    /// A known plaintext sealed under the master key (see `MasterKey::verify_key_check`).
    pub key_check: SealedSecret,
}

/// Where a sealed secret lives in the state (key rotation reseals them one by one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SecretRef {
    /// The cluster's key check ([`ClusterInfo::key_check`]).
    KeyCheck,
    /// An integration's Notion token.
    IntegrationToken {
        /// Owning tenant.
        tenant: TenantId,
        /// The integration.
        integration: IntegrationId,
    },
    /// The private half of a JWT signing key.
    JwtSigningKey {
        /// The key's `kid`.
        kid: String,
    },
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::KeyCheck => write!(f, "the key check"),
            SecretRef::IntegrationToken {
                tenant,
                integration,
            } => write!(f, "integration {tenant}/{integration}"),
            SecretRef::JwtSigningKey { kid } => write!(f, "JWT signing key {kid}"),
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Human-readable name.
    pub display_name: String,
}

/// A workspace: what an agent works in, served through one integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Its id (unique in the tenant).
    pub id: WorkspaceId,
    /// Human-readable name.
    pub display_name: String,
    /// The integration whose Notion token serves this workspace.
    pub integration_id: IntegrationId,
}

/// Request budget for one Notion integration, cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Short burst allowance.
    pub burst: u32,
}

/// Largest `requests_per_second` accepted in a [`Budget`].
pub const BUDGET_MAX_RPS: u32 = 1_000;
/// Largest `burst` accepted in a [`Budget`].
pub const BUDGET_MAX_BURST: u32 = 10_000;

/// A Notion integration: its sealed token and budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integration {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Its id (unique in the tenant).
    pub id: IntegrationId,
    /// Human-readable name.
    pub display_name: String,
    /// The Notion token, sealed with AAD `integration_aad(tenant, id)`.
    pub sealed_token: SealedSecret,
    /// Request budget.
    pub budget: Budget,
}

/// A principal (user or agent) of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Owning tenant.
    pub tenant: TenantId,
    /// Its id (unique in the tenant).
    pub id: PrincipalId,
    /// Human-readable name.
    pub display_name: String,
    /// Workspaces it was granted.
    pub workspaces: BTreeSet<WorkspaceId>,
}

/// An API token. Only the SHA-256 hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id.
    pub token_id: TokenId,
    /// Tenant of the principal.
    pub tenant: TenantId,
    /// The principal it acts as.
    pub principal: PrincipalId,
    /// The workspace it is limited to.
    pub workspace_id: WorkspaceId,
    /// Lowercase hex SHA-256 of the secret (`hash_api_token`).
    pub hash: String,
    /// Scopes granted.
    pub scopes: BTreeSet<String>,
    /// When it was issued (stamped by the proposer).
    pub issued_at_ms: u64,
    /// When it stops being valid, if ever.
    pub expires_at_ms: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl ApiToken {
    /// Not revoked, and not expired at `now_ms`.
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        !self.revoked && self.expires_at_ms.is_none_or(|expires| now_ms < expires)
    }
}

/// A cluster-level admin token: it authenticates operators at the admin API, not agents at
/// MCP. Only the SHA-256 hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    /// Public id.
    pub token_id: TokenId,
    /// Lowercase hex SHA-256 of the secret (`hash_api_token`).
    pub hash: String,
    /// Who or what holds it, for humans.
    pub display_name: String,
    /// When it was issued (stamped by the proposer).
    pub issued_at_ms: u64,
    /// When it stops being valid, if ever.
    pub expires_at_ms: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// The principal it acts as, with that principal's roles; `None` is the cluster's root
    /// (every permission; the bootstrap token is one).
    #[serde(default)]
    pub subject: Option<Subject>,
}

impl AdminToken {
    /// Not revoked, and not expired at `now_ms`.
    pub fn is_valid_at(&self, now_ms: u64) -> bool {
        !self.revoked && self.expires_at_ms.is_none_or(|expires| now_ms < expires)
    }
}

/// A global (enterprise) principal: belongs to no tenant; holds global roles, or tenant
/// roles in any tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalPrincipal {
    /// Its id (unique among global principals).
    pub id: PrincipalId,
    /// Human-readable name.
    pub display_name: String,
}

/// Everything one tenant owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantState {
    /// The tenant record.
    pub tenant: Tenant,
    /// Its workspaces.
    pub workspaces: BTreeMap<WorkspaceId, Workspace>,
    /// Its integrations.
    pub integrations: BTreeMap<IntegrationId, Integration>,
    /// Its principals.
    pub principals: BTreeMap<PrincipalId, Principal>,
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Set by `InitCluster`.
    pub(crate) cluster: Option<ClusterInfo>,
    pub(crate) tenants: BTreeMap<TenantId, TenantState>,
    pub(crate) tokens: BTreeMap<TokenId, ApiToken>,
    /// token hash → token id.
    pub(crate) token_index: BTreeMap<String, TokenId>,
    /// Cluster-level admin tokens (live or revoked).
    #[serde(default)]
    pub(crate) admin_tokens: BTreeMap<TokenId, AdminToken>,
    /// admin token hash → admin token id.
    #[serde(default)]
    pub(crate) admin_token_index: BTreeMap<String, TokenId>,
    /// Results of the most recent `Once` requests, so a retried request is applied once.
    #[serde(default)]
    pub(crate) requests: RequestLog,
    /// Global (enterprise) principals.
    #[serde(default)]
    pub(crate) global_principals: BTreeMap<PrincipalId, GlobalPrincipal>,
    /// Role bindings and restrictions.
    #[serde(default)]
    pub(crate) access: AccessState,
    /// The audit chains.
    #[serde(default)]
    pub(crate) audit: AuditState,
    /// Workflow templates.
    #[serde(default)]
    pub(crate) templates: crate::templates::TemplateState,
    /// JWT signing keys, revoked token ids, OpenID Connect providers.
    #[serde(default)]
    pub(crate) jwt: JwtState,
    /// MCP sessions, so a session continues on any node (see `sessions.rs`).
    #[serde(default)]
    pub(crate) mcp_sessions: crate::sessions::SessionTable,
    /// Delegations of permissions and roles.
    #[serde(default)]
    pub(crate) delegations: DelegationState,
    /// The separation-of-duties policy and its approval requests.
    #[serde(default)]
    pub(crate) approvals: ApprovalState,
    /// Node labels, tenants' residency and the shard map (`placement.rs`).
    #[serde(default)]
    pub(crate) placement: crate::placement::PlacementState,
}

/// How many request results the state remembers; older ones are forgotten first. A retry
/// comes within seconds, long before this many other requests.
pub const MAX_REMEMBERED_REQUESTS: usize = 10_000;

/// The results of recent requests, by request id, forgotten oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    results: BTreeMap<String, (u64, Result<CommandOutput, ApplyError>)>,
    order: BTreeMap<u64, String>,
    next: u64,
}

impl RequestLog {
    /// The result of request `id`, if it was applied and is still remembered.
    pub fn result(&self, id: &str) -> Option<Result<CommandOutput, ApplyError>> {
        self.results.get(id).map(|(_, r)| r.clone())
    }

    pub(crate) fn record(&mut self, id: &str, result: &Result<CommandOutput, ApplyError>) {
        let seq = self.next;
        self.next += 1;
        self.results.insert(id.to_owned(), (seq, result.clone()));
        self.order.insert(seq, id.to_owned());
        while self.order.len() > MAX_REMEMBERED_REQUESTS {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.results.remove(&oldest);
        }
    }

    /// How many results are remembered.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }
}

impl State {
    /// The results of recent requests.
    pub fn requests(&self) -> &RequestLog {
        &self.requests
    }

    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cluster facts, once `InitCluster` was applied.
    pub fn cluster(&self) -> Option<&ClusterInfo> {
        self.cluster.as_ref()
    }

    /// Every secret sealed under the master key: integration tokens, then JWT private keys,
    /// then the key check (last, so a rotation that follows this order reseals it last).
    pub fn sealed_secrets(&self) -> Vec<(SecretRef, &SealedSecret)> {
        let mut out = Vec::new();
        for (tenant, t) in &self.tenants {
            for (integration, i) in &t.integrations {
                out.push((
                    SecretRef::IntegrationToken {
                        tenant: tenant.clone(),
                        integration: integration.clone(),
                    },
                    &i.sealed_token,
                ));
            }
        }
        for (kid, key) in &self.jwt.keys {
            out.push((
                SecretRef::JwtSigningKey { kid: kid.clone() },
                &key.sealed_private_key,
            ));
        }
        if let Some(cluster) = &self.cluster {
            out.push((SecretRef::KeyCheck, &cluster.key_check));
        }
        out
    }

    /// The sealed secret at `place`, if it exists.
    pub fn sealed_secret(&self, place: &SecretRef) -> Option<&SealedSecret> {
        match place {
            SecretRef::KeyCheck => self.cluster.as_ref().map(|c| &c.key_check),
            SecretRef::IntegrationToken {
                tenant,
                integration,
            } => self
                .tenants
                .get(tenant)?
                .integrations
                .get(integration)
                .map(|i| &i.sealed_token),
            SecretRef::JwtSigningKey { kid } => {
                self.jwt.keys.get(kid).map(|k| &k.sealed_private_key)
            }
        }
    }

    pub(crate) fn sealed_secret_mut(&mut self, place: &SecretRef) -> Option<&mut SealedSecret> {
        match place {
            SecretRef::KeyCheck => self.cluster.as_mut().map(|c| &mut c.key_check),
            SecretRef::IntegrationToken {
                tenant,
                integration,
            } => self
                .tenants
                .get_mut(tenant)?
                .integrations
                .get_mut(integration)
                .map(|i| &mut i.sealed_token),
            SecretRef::JwtSigningKey { kid } => self
                .jwt
                .keys
                .get_mut(kid)
                .map(|k| &mut k.sealed_private_key),
        }
    }

    /// A tenant.
    pub fn tenant(&self, id: &TenantId) -> Option<&Tenant> {
        self.tenants.get(id).map(|t| &t.tenant)
    }

    /// A workspace of a tenant.
    pub fn workspace(&self, tenant: &TenantId, id: &WorkspaceId) -> Option<&Workspace> {
        self.tenants.get(tenant)?.workspaces.get(id)
    }

    /// An integration of a tenant.
    pub fn integration(&self, tenant: &TenantId, id: &IntegrationId) -> Option<&Integration> {
        self.tenants.get(tenant)?.integrations.get(id)
    }

    /// A principal of a tenant.
    pub fn principal(&self, tenant: &TenantId, id: &PrincipalId) -> Option<&Principal> {
        self.tenants.get(tenant)?.principals.get(id)
    }

    /// A token by id.
    pub fn token(&self, id: &TokenId) -> Option<&ApiToken> {
        self.tokens.get(id)
    }

    /// A token by the hash of its secret (see `hash_api_token`).
    pub fn token_by_hash(&self, hash: &str) -> Option<&ApiToken> {
        self.tokens.get(self.token_index.get(hash)?)
    }

    /// All tenants, in id order.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values().map(|t| &t.tenant)
    }

    /// A tenant's workspaces, in id order (empty if the tenant does not exist).
    pub fn workspaces(&self, tenant: &TenantId) -> impl Iterator<Item = &Workspace> {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.workspaces.values())
    }

    /// A tenant's integrations, in id order.
    pub fn integrations(&self, tenant: &TenantId) -> impl Iterator<Item = &Integration> {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.integrations.values())
    }

    /// A tenant's principals, in id order.
    pub fn principals(&self, tenant: &TenantId) -> impl Iterator<Item = &Principal> {
        self.tenants
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.principals.values())
    }

    /// All tokens of a tenant, in token-id order (revoked ones included).
    pub fn tokens(&self, tenant: &TenantId) -> impl Iterator<Item = &ApiToken> {
        self.tokens.values().filter(move |t| &t.tenant == tenant)
    }

    /// Number of tenants.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// An admin token by id.
    pub fn admin_token(&self, id: &TokenId) -> Option<&AdminToken> {
        self.admin_tokens.get(id)
    }

    /// An admin token by the hash of its secret (see `hash_api_token`).
    pub fn admin_token_by_hash(&self, hash: &str) -> Option<&AdminToken> {
        self.admin_tokens.get(self.admin_token_index.get(hash)?)
    }

    /// All admin tokens, in token-id order (revoked ones included).
    pub fn admin_tokens(&self) -> impl Iterator<Item = &AdminToken> {
        self.admin_tokens.values()
    }

    /// A global principal.
    pub fn global_principal(&self, id: &PrincipalId) -> Option<&GlobalPrincipal> {
        self.global_principals.get(id)
    }

    /// All global principals, in id order.
    pub fn global_principals(&self) -> impl Iterator<Item = &GlobalPrincipal> {
        self.global_principals.values()
    }

    /// Whether the principal a subject names exists.
    pub fn subject_exists(&self, subject: &Subject) -> bool {
        match &subject.tenant {
            Some(t) => self.principal(t, &subject.principal).is_some(),
            None => self.global_principals.contains_key(&subject.principal),
        }
    }

    /// Role bindings and restrictions.
    pub fn access(&self) -> &AccessState {
        &self.access
    }

    /// The audit chains.
    pub fn audit(&self) -> &AuditState {
        &self.audit
    }

    /// Workflow templates.
    pub fn templates(&self) -> &crate::templates::TemplateState {
        &self.templates
    }

    /// JWT signing keys, revoked token ids and OpenID Connect providers.
    pub fn jwt(&self) -> &JwtState {
        &self.jwt
    }

    /// The MCP session table.
    pub fn mcp_sessions(&self) -> &crate::sessions::SessionTable {
        &self.mcp_sessions
    }

    /// Delegations of permissions and roles.
    pub fn delegations(&self) -> &DelegationState {
        &self.delegations
    }

    /// The separation-of-duties policy and its approval requests.
    pub fn approvals(&self) -> &ApprovalState {
        &self.approvals
    }

    /// Node labels, tenants' residency and the shard map.
    pub fn placement(&self) -> &crate::placement::PlacementState {
        &self.placement
    }

    /// Equal in everything but the audit trail (a refused admin command leaves only an
    /// audit record behind).
    pub fn eq_except_audit(&self, other: &State) -> bool {
        let mut a = self.clone();
        a.audit = AuditState::default();
        let mut b = other.clone();
        b.audit = AuditState::default();
        a == b
    }
}
