//! Commands that change the replicated state, and the pure, deterministic [`apply`].
//!
//! `apply` reads no clock and no randomness: timestamps and sealed secrets are inside the
//! command, stamped by the proposer. A command it rejects leaves the state exactly as it was
//! and yields an [`ApplyError`]; that rejection is the command's result in the log, not a Raft
//! failure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::approvals::SodPolicy;
use crate::audit::{AuditEvent, MAX_AUDIT_BATCH, MAX_AUDIT_TEXT_CHARS, Severity};
use crate::delegation::Delegated;
use crate::ids::{IntegrationId, PrincipalId, TenantId, TokenId, WorkspaceId, validate_id};
use crate::jwt_keys::{
    JwtAlg, MAX_JWT_KEYS, MAX_REVOCATION_SPAN_MS, MAX_REVOKED_JTIS, OidcProvider, PublicKey,
    RevokedJti, SigningKey, check_jti, check_kid, check_public_key, revocation_key,
};
use crate::rbac::{
    BindingOrigin, Permission, Restriction, Role, RoleBinding, RoleScope, Subject, authorize,
};
use crate::seal::{MAX_PLAINTEXT_BYTES, SealedSecret};
use crate::state::{
    AdminToken, ApiToken, BUDGET_MAX_BURST, BUDGET_MAX_RPS, Budget, ClusterInfo, GlobalPrincipal,
    Integration, Principal, SecretRef, State, Tenant, TenantState, Workspace,
};

/// Longest display name, in characters.
pub const DISPLAY_NAME_MAX_CHARS: usize = 200;
/// Most tenants in a cluster.
pub const MAX_TENANTS: usize = 10_000;
/// Most workspaces per tenant.
pub const MAX_WORKSPACES_PER_TENANT: usize = 1_000;
/// Most integrations per tenant.
pub const MAX_INTEGRATIONS_PER_TENANT: usize = 100;
/// Most principals per tenant.
pub const MAX_PRINCIPALS_PER_TENANT: usize = 10_000;
/// Most workspaces granted to one principal.
pub const MAX_GRANTS_PER_PRINCIPAL: usize = 1_000;
/// Most tokens (live or revoked) in the cluster.
pub const MAX_TOKENS: usize = 1_000_000;
/// Most scopes on one token.
pub const MAX_SCOPES_PER_TOKEN: usize = 32;
/// Longest scope, in characters.
pub const SCOPE_MAX_CHARS: usize = 64;
/// Most admin tokens (live or revoked) in the cluster.
pub const MAX_ADMIN_TOKENS: usize = 10_000;
/// Most global (enterprise) principals.
pub const MAX_GLOBAL_PRINCIPALS: usize = 10_000;
/// Most role bindings one subject holds.
pub const MAX_BINDINGS_PER_SUBJECT: usize = 200;
/// Most restrictions on one subject.
pub const MAX_RESTRICTIONS_PER_SUBJECT: usize = 200;
/// Longest justification, in characters.
pub const JUSTIFICATION_MAX_CHARS: usize = 1_000;
/// Largest audit retention accepted (records per chain).
pub const MAX_AUDIT_RETENTION: u64 = 10_000_000;
/// Most secrets resealed by one `ResealSecrets` command.
pub const MAX_RESEAL_BATCH: usize = 100;
/// Who the cluster's root is in the audit trail.
pub const ROOT_PRINCIPAL: &str = "root";

/// A change to the replicated state. Proposers stamp times and seal secrets before proposing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Names the cluster and records the master-key check. Once only.
    InitCluster {
        /// Cluster name.
        cluster_name: String,
        /// `MasterKey::key_check` output.
        key_check: SealedSecret,
    },
    /// Creates a tenant.
    CreateTenant {
        /// New tenant id.
        tenant: TenantId,
        /// Human-readable name.
        display_name: String,
    },
    /// Deletes a tenant that has no workspaces (its integrations and principals go with it).
    DeleteTenant {
        /// Tenant to delete.
        tenant: TenantId,
    },
    /// Creates a workspace served by an existing integration of the same tenant.
    CreateWorkspace {
        /// Owning tenant.
        tenant: TenantId,
        /// New workspace id.
        workspace: WorkspaceId,
        /// Human-readable name.
        display_name: String,
        /// Integration that serves it.
        integration: IntegrationId,
    },
    /// Adds a Notion integration with its sealed token.
    AddIntegration {
        /// Owning tenant.
        tenant: TenantId,
        /// New integration id.
        integration: IntegrationId,
        /// Human-readable name.
        display_name: String,
        /// Token sealed with AAD `integration_aad(tenant, integration)`.
        sealed_token: SealedSecret,
        /// Request budget.
        budget: Budget,
    },
    /// Replaces an integration's sealed token.
    RotateIntegrationToken {
        /// Owning tenant.
        tenant: TenantId,
        /// Integration to update.
        integration: IntegrationId,
        /// New sealed token.
        sealed_token: SealedSecret,
    },
    /// Removes an integration no workspace uses.
    RemoveIntegration {
        /// Owning tenant.
        tenant: TenantId,
        /// Integration to remove.
        integration: IntegrationId,
    },
    /// Creates a principal.
    CreatePrincipal {
        /// Owning tenant.
        tenant: TenantId,
        /// New principal id.
        principal: PrincipalId,
        /// Human-readable name.
        display_name: String,
    },
    /// Grants a principal access to a workspace of its tenant (idempotent).
    GrantWorkspace {
        /// Owning tenant.
        tenant: TenantId,
        /// Principal to grant.
        principal: PrincipalId,
        /// Workspace granted.
        workspace: WorkspaceId,
    },
    /// Records an API token (only the hash of its secret) for a principal in a granted workspace.
    IssueToken {
        /// Owning tenant.
        tenant: TenantId,
        /// Principal the token acts as.
        principal: PrincipalId,
        /// Workspace it is limited to (must be granted to the principal).
        workspace: WorkspaceId,
        /// New token id.
        token_id: TokenId,
        /// `hash_api_token(secret)`: 64 lowercase hex characters.
        secret_hash: String,
        /// Scopes granted.
        scopes: BTreeSet<String>,
        /// Issue time, stamped by the proposer.
        issued_at_ms: u64,
        /// Expiry, if any (must be after `issued_at_ms`).
        expires_at_ms: Option<u64>,
    },
    /// Revokes a token of the tenant (idempotent).
    RevokeToken {
        /// Owning tenant.
        tenant: TenantId,
        /// Token to revoke.
        token_id: TokenId,
    },
    /// Records a cluster-level admin token (only the hash of its secret).
    IssueAdminToken {
        /// New admin token id.
        token_id: TokenId,
        /// `hash_api_token(secret)`: 64 lowercase hex characters.
        secret_hash: String,
        /// Who or what holds it, for humans.
        display_name: String,
        /// Issue time, stamped by the proposer.
        issued_at_ms: u64,
        /// Expiry, if any (must be after `issued_at_ms`).
        expires_at_ms: Option<u64>,
        /// The principal it acts as; `None` makes a root token (every permission).
        #[serde(default)]
        subject: Option<Subject>,
    },
    /// Revokes an admin token (idempotent).
    RevokeAdminToken {
        /// Admin token to revoke.
        token_id: TokenId,
    },
    /// Runs `command` on behalf of an admin token. The token is checked here, against the
    /// state at this log index (present, not revoked, not expired at `at_ms`), so a change
    /// authorised by a token that a committed revocation precedes is refused.
    AsAdmin {
        /// The admin token the change is made with.
        admin_token: TokenId,
        /// When the proposer authorised it (stamped by the proposer).
        at_ms: u64,
        /// The change itself (not `AsAdmin` or `InitCluster`).
        command: Box<Command>,
        /// The node that proposed it (for the audit trail).
        #[serde(default)]
        node: u64,
        /// Why, if the operator said (recorded in the audit trail).
        #[serde(default)]
        justification: Option<String>,
    },
    /// Creates a global (enterprise) principal.
    CreateGlobalPrincipal {
        /// New principal id.
        principal: PrincipalId,
        /// Human-readable name.
        display_name: String,
    },
    /// Gives a subject a role at a scope (only as an admin command: the assigner must hold a
    /// role above it within a scope that covers it).
    AssignRole {
        /// Who receives it.
        subject: Subject,
        /// The role.
        role: Role,
        /// Where.
        scope: RoleScope,
        /// When (stamped by the proposer).
        granted_at_ms: u64,
        /// Until when, if temporary (must be after `granted_at_ms`).
        expires_at_ms: Option<u64>,
        /// Why.
        justification: Option<String>,
    },
    /// Ends a role binding at once (idempotent once gone: `NotFound`).
    RevokeRole {
        /// The binding's id.
        binding: u64,
    },
    /// Denies a subject a permission (or everything) at a scope, whatever its roles grant.
    AddRestriction {
        /// Who is restricted.
        subject: Subject,
        /// What is denied; `None` denies everything.
        permission: Option<Permission>,
        /// Where.
        scope: RoleScope,
        /// When (stamped by the proposer).
        set_at_ms: u64,
        /// Why (required).
        justification: String,
    },
    /// Lifts a restriction.
    RemoveRestriction {
        /// The restriction's id.
        restriction: u64,
    },
    /// Creates, edits or retires a workflow template of a workspace.
    Template(crate::templates::TemplateCommand),
    /// Appends events (tool calls, authorization decisions) to their tenants' audit chains:
    /// the group commit of the audit trail. Proposed by nodes, never as an admin command.
    AppendAudit {
        /// The events, in the order they are to be chained.
        events: Vec<AuditEvent>,
    },
    /// Sets the audit retention: records kept per chain.
    SetAuditRetention {
        /// Records kept per chain (1..=[`MAX_AUDIT_RETENTION`]).
        max_records_per_chain: u64,
    },
    /// Adds a signing key of the built-in JWT issuer (generated and sealed by the proposer).
    AddJwtKey {
        /// Key id.
        kid: String,
        /// Its algorithm.
        alg: JwtAlg,
        /// Its public key.
        public_key: PublicKey,
        /// The PKCS#8 private key sealed with AAD `signing_key_aad(kid)`.
        sealed_private_key: SealedSecret,
        /// When (stamped by the proposer).
        created_at_ms: u64,
        /// Whether it signs from now on (a rotation).
        make_current: bool,
        /// With `make_current`: the previous current key stops signing and validates until
        /// then (the overlap); `None` leaves it validating until it is retired.
        #[serde(default)]
        previous_not_after_ms: Option<u64>,
    },
    /// Master-key rotation: replaces sealed secrets with the same plaintexts sealed under the
    /// current master key. Each is replaced only if the state still holds exactly `expected`
    /// (so a token rotated meanwhile is never overwritten); the others are left as they are.
    ResealSecrets {
        /// 1..=[`MAX_RESEAL_BATCH`] secrets, each named once.
        secrets: Vec<Reseal>,
    },
    /// Makes an existing, unretired signing key the one that signs.
    SetCurrentJwtKey {
        /// Key id.
        kid: String,
    },
    /// Retires a signing key that does not sign: tokens it signed validate until `not_after_ms`.
    RetireJwtKey {
        /// Key id.
        kid: String,
        /// When (stamped by the proposer).
        at_ms: u64,
        /// From when its tokens are refused (not before `at_ms`).
        not_after_ms: u64,
    },
    /// Revokes a JWT of a tenant by its `jti`, remembered until the token's own expiry.
    RevokeJwt {
        /// The token's tenant.
        tenant: TenantId,
        /// The token id.
        jti: String,
        /// The token's `exp`, in ms.
        expires_at_ms: u64,
        /// When (stamped by the proposer).
        revoked_at_ms: u64,
    },
    /// Sets (or replaces) a tenant's OpenID Connect provider.
    SetOidcProvider {
        /// The provider, naming its tenant.
        provider: OidcProvider,
    },
    /// Removes a tenant's OpenID Connect provider.
    RemoveOidcProvider {
        /// The tenant.
        tenant: TenantId,
    },
    // ---- MCP sessions (`sessions.rs`) ----
    /// Stores an MCP session bound to its principal, or refreshes one bound to the same
    /// principal; forgets expired sessions first (bounded). Proposed by the node that opened
    /// or served the session, not an admin command.
    PutMcpSession {
        /// The session.
        session: crate::sessions::McpSession,
        /// When (stamped by the proposer); expiry is decided against it.
        at_ms: u64,
        /// The proposer's limits on the table.
        limits: crate::sessions::SessionLimits,
    },
    /// Forgets an MCP session (only for the principal it is bound to).
    DeleteMcpSession {
        /// The session id.
        id: String,
        /// The tenant of the principal asking.
        tenant: TenantId,
        /// The principal asking.
        principal: String,
        /// When (stamped by the proposer).
        at_ms: u64,
    },
    // ---- delegation and separation of duties (`delegation.rs`, `approvals.rs`) ----
    /// Lends a permission or a role the admin token's principal holds to another principal
    /// (only as an admin command). Temporary with `expires_at_ms`, permanent without.
    Delegate {
        /// Who receives it (same tenant as the delegator, or a global principal).
        delegate: Subject,
        /// What is lent.
        grant: Delegated,
        /// Where.
        scope: RoleScope,
        /// Until when (after the admin command's `at_ms`); `None` makes it permanent.
        expires_at_ms: Option<u64>,
        /// Why (required).
        justification: String,
    },
    /// Approves a delegation that needs a higher authority (only as an admin command).
    ApproveDelegation {
        /// The delegation's id.
        delegation: u64,
    },
    /// Ends a delegation at once (only as an admin command).
    RevokeDelegation {
        /// The delegation's id.
        delegation: u64,
    },
    /// Replaces the separation-of-duties policy (a security-policy change: held for
    /// approval while the policy is on).
    SetSodPolicy {
        /// The new policy.
        policy: SodPolicy,
    },
    /// Approves a pending approval request (only as an admin command); the last required
    /// approval executes the request's command.
    ApproveRequest {
        /// The request's id.
        request: u64,
    },
    /// Rejects a pending approval request (only as an admin command).
    RejectRequest {
        /// The request's id.
        request: u64,
    },
    /// Executes a pending approval request at once (only as an admin command, by an enterprise
    /// admin, with a justification); audited with high severity.
    BreakGlass {
        /// The request's id.
        request: u64,
    },
    /// Replaces a just-initialised cluster's state with a backup's (`quire restore`; see
    /// `backup.rs`). Never an admin command.
    RestoreState {
        /// The backup's state (as JSON text in the log).
        #[serde(with = "crate::backup::as_json_text")]
        state: Box<State>,
    },
    /// Adds a tenant exported from another cluster, with its audit chain verified and kept
    /// as it was (only as an admin command; see `backup.rs`).
    ImportTenant {
        /// The tenant's slice (as JSON text in the log).
        #[serde(with = "crate::backup::as_json_text")]
        slice: Box<crate::backup::TenantSlice>,
        /// When (stamped by the proposer).
        at_ms: u64,
        /// The node that proposed it (for the audit trail).
        node: u64,
    },
    // ---- placement (`placement.rs`) ----
    /// Records the placement labels of node `node`. Proposed by the node itself when it
    /// starts, never as an admin command; the peer transport relays it only from the node its
    /// certificate names ([`Command::speaks_for_node`]).
    SetNodeLabels {
        /// The node.
        node: u64,
        /// Its region, zone and capacity.
        labels: crate::placement::NodeLabels,
    },
    /// Creates a tenant with a residency policy, in one entry (so it never exists without it).
    CreateTenantIn {
        /// New tenant id.
        tenant: TenantId,
        /// Human-readable name.
        display_name: String,
        /// Where its shards may live.
        residency: crate::placement::Residency,
    },
    /// Replaces a tenant's residency policy (its shards move to its new residency group).
    SetTenantResidency {
        /// The tenant.
        tenant: TenantId,
        /// Where its shards may live.
        residency: crate::placement::Residency,
    },
    /// Marks node `node` as draining (it receives no shards, and the placement controller
    /// moves every shard it owns elsewhere, residency permitting) or clears the mark. An
    /// admin command (`system.configure`).
    SetNodeDraining {
        /// The node.
        node: u64,
        /// `true` to drain it, `false` to undrain it.
        draining: bool,
    },
    /// Marks node `node` as stopping (it receives no shards, and the placement controller
    /// moves every shard it owns elsewhere, residency permitting) or clears the mark.
    /// Proposed by the node itself when it is asked to stop (`true`) and when it starts
    /// (`false`), never as an admin command; relayed only from the node its certificate names
    /// ([`Command::speaks_for_node`]).
    SetNodeStopping {
        /// The node.
        node: u64,
        /// `true` when it is stopping, `false` once it has started again.
        stopping: bool,
    },
    /// Changes shards' owners: each move takes effect only if the shard still has the owner
    /// and epoch the planner read (its epoch then goes up by one); the others are stale.
    /// Proposed by the placement controller, never as an admin command.
    ApplyPlacement {
        /// 1..=[`crate::placement::MAX_MOVES_PER_COMMAND`] moves, each shard once.
        moves: Vec<crate::placement::ShardMove>,
    },
    /// Applies `command` at most once per `request_id`: a proposer that retries a command
    /// whose first attempt may already have committed (a forwarded write whose answer was
    /// lost) gets the first attempt's result instead of a second application.
    Once {
        /// Unique per request: 1–64 characters of `[0-9a-z-]`.
        request_id: String,
        /// The change (anything but another `Once`).
        command: Box<Command>,
    },
}

/// One secret of a [`Command::ResealSecrets`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reseal {
    /// Where it lives.
    pub secret: SecretRef,
    /// The sealed value it replaces, as read from the state by the proposer.
    pub expected: SealedSecret,
    /// The same plaintext sealed under the current master key (same associated data).
    pub sealed: SealedSecret,
}

impl Command {
    /// A short name of the command kind, for logs and metrics (never carries secrets).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "init_cluster",
            Command::CreateTenant { .. } => "create_tenant",
            Command::DeleteTenant { .. } => "delete_tenant",
            Command::CreateWorkspace { .. } => "create_workspace",
            Command::AddIntegration { .. } => "add_integration",
            Command::RotateIntegrationToken { .. } => "rotate_integration_token",
            Command::RemoveIntegration { .. } => "remove_integration",
            Command::CreatePrincipal { .. } => "create_principal",
            Command::GrantWorkspace { .. } => "grant_workspace",
            Command::IssueToken { .. } => "issue_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::IssueAdminToken { .. } => "issue_admin_token",
            Command::RevokeAdminToken { .. } => "revoke_admin_token",
            Command::AsAdmin { .. } => "as_admin",
            Command::CreateGlobalPrincipal { .. } => "create_global_principal",
            Command::AssignRole { .. } => "assign_role",
            Command::RevokeRole { .. } => "revoke_role",
            Command::AddRestriction { .. } => "add_restriction",
            Command::RemoveRestriction { .. } => "remove_restriction",
            Command::AppendAudit { .. } => "append_audit",
            Command::SetAuditRetention { .. } => "set_audit_retention",
            Command::Template(crate::templates::TemplateCommand::Put { .. }) => "put_template",
            Command::Template(crate::templates::TemplateCommand::Retire { .. }) => {
                "retire_template"
            }
            Command::AddJwtKey { .. } => "add_jwt_key",
            Command::ResealSecrets { .. } => "reseal_secrets",
            Command::SetCurrentJwtKey { .. } => "set_current_jwt_key",
            Command::RetireJwtKey { .. } => "retire_jwt_key",
            Command::RevokeJwt { .. } => "revoke_jwt",
            Command::SetOidcProvider { .. } => "set_oidc_provider",
            Command::RemoveOidcProvider { .. } => "remove_oidc_provider",
            Command::PutMcpSession { .. } => "put_mcp_session",
            Command::DeleteMcpSession { .. } => "delete_mcp_session",
            Command::Delegate { .. } => "delegate",
            Command::ApproveDelegation { .. } => "approve_delegation",
            Command::RevokeDelegation { .. } => "revoke_delegation",
            Command::SetSodPolicy { .. } => "set_sod_policy",
            Command::ApproveRequest { .. } => "approve_request",
            Command::RejectRequest { .. } => "reject_request",
            Command::BreakGlass { .. } => "break_glass",
            Command::RestoreState { .. } => "restore_state",
            Command::ImportTenant { .. } => "import_tenant",
            Command::SetNodeLabels { .. } => "set_node_labels",
            Command::CreateTenantIn { .. } => "create_tenant_in",
            Command::SetTenantResidency { .. } => "set_tenant_residency",
            Command::SetNodeDraining { .. } => "set_node_draining",
            Command::SetNodeStopping { .. } => "set_node_stopping",
            Command::ApplyPlacement { .. } => "apply_placement",
            Command::Once { command, .. } => command.kind(),
        }
    }

    /// The node a command speaks for, if only that node may propose it (`SetNodeLabels`,
    /// `SetNodeStopping`, also inside `Once`): the peer transport checks it against the relaying node's
    /// certificate.
    pub fn speaks_for_node(&self) -> Option<u64> {
        match self {
            Command::SetNodeLabels { node, .. } | Command::SetNodeStopping { node, .. } => {
                Some(*node)
            }
            Command::Once { command, .. } => command.speaks_for_node(),
            _ => None,
        }
    }
}

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandOutput {
    /// The state changed as asked.
    Done,
    /// The command was already in effect (a repeated grant or revocation); nothing changed.
    Unchanged,
    /// The separation-of-duties policy holds the command: it became an approval request and
    /// runs once approved (see `approvals.rs`).
    Pending {
        /// The approval request's id.
        approval: u64,
    },
}

/// Why a command was rejected. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ApplyError {
    /// The object to create exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// An object the command names does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The command contradicts the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The command is malformed.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// A configured bound would be exceeded.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The credential the command was made with is not valid at this log index.
    #[error("not authorised: {0}")]
    Unauthorized(String),
    /// The credential is valid but its principal may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

fn tenant_name(t: &TenantId) -> String {
    format!("tenant {:?}", t.as_str())
}

/// Checks a display name against the rules `apply` enforces (not blank, at most
/// [`DISPLAY_NAME_MAX_CHARS`] characters, no control characters), so a boundary can refuse a
/// bad name before proposing it. `kind` names the object in the error.
pub fn check_display_name(kind: &str, name: &str) -> Result<(), ApplyError> {
    let chars = name.chars().count();
    if name.trim().is_empty() {
        return Err(ApplyError::Invalid(format!(
            "{kind} display name must not be blank"
        )));
    }
    if chars > DISPLAY_NAME_MAX_CHARS {
        return Err(ApplyError::Invalid(format!(
            "{kind} display name is {chars} characters, more than {DISPLAY_NAME_MAX_CHARS}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApplyError::Invalid(format!(
            "{kind} display name contains control characters"
        )));
    }
    Ok(())
}

fn check_budget(budget: &Budget) -> Result<(), ApplyError> {
    if budget.requests_per_second == 0 || budget.requests_per_second > BUDGET_MAX_RPS {
        return Err(ApplyError::Invalid(format!(
            "budget requests_per_second {} must be in 1..={BUDGET_MAX_RPS}",
            budget.requests_per_second
        )));
    }
    if budget.burst == 0 || budget.burst > BUDGET_MAX_BURST {
        return Err(ApplyError::Invalid(format!(
            "budget burst {} must be in 1..={BUDGET_MAX_BURST}",
            budget.burst
        )));
    }
    Ok(())
}

/// Applies `ResealSecrets`: validates the whole batch first, then replaces each secret whose
/// state value is still the expected one. `Done` if any was replaced, `Unchanged` if none.
fn reseal_secrets(state: &mut State, secrets: &[Reseal]) -> Result<CommandOutput, ApplyError> {
    if secrets.is_empty() || secrets.len() > MAX_RESEAL_BATCH {
        return Err(ApplyError::Invalid(format!(
            "a reseal names 1..={MAX_RESEAL_BATCH} secrets, not {}",
            secrets.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for r in secrets {
        if !seen.insert(&r.secret) {
            return Err(ApplyError::Invalid(format!(
                "{} is named twice in one reseal",
                r.secret
            )));
        }
        check_sealed(&r.secret.to_string(), &r.sealed)?;
        if r.sealed.key_id.is_none() {
            return Err(ApplyError::Invalid(format!(
                "{} is resealed without the id of the key that sealed it",
                r.secret
            )));
        }
    }
    let mut replaced = 0usize;
    for r in secrets {
        if let Some(current) = state.sealed_secret_mut(&r.secret)
            && *current == r.expected
        {
            *current = r.sealed.clone();
            replaced += 1;
        }
    }
    Ok(if replaced == 0 {
        CommandOutput::Unchanged
    } else {
        CommandOutput::Done
    })
}

fn check_sealed(what: &str, sealed: &SealedSecret) -> Result<(), ApplyError> {
    // At least the 16-byte tag; a real token is longer.
    if sealed.ciphertext.len() <= 16 {
        return Err(ApplyError::Invalid(format!(
            "{what} sealed secret is empty or truncated"
        )));
    }
    if sealed.ciphertext.len() > MAX_PLAINTEXT_BYTES + 16 {
        return Err(ApplyError::Invalid(format!(
            "{what} sealed secret is {} bytes, more than {MAX_PLAINTEXT_BYTES} plus the tag",
            sealed.ciphertext.len()
        )));
    }
    Ok(())
}

fn check_scopes(scopes: &BTreeSet<String>) -> Result<(), ApplyError> {
    if scopes.is_empty() {
        return Err(ApplyError::Invalid("token needs at least one scope".into()));
    }
    if scopes.len() > MAX_SCOPES_PER_TOKEN {
        return Err(ApplyError::Invalid(format!(
            "token has {} scopes, more than {MAX_SCOPES_PER_TOKEN}",
            scopes.len()
        )));
    }
    check_scope_names(scopes)
}

/// Checks each scope's spelling (1..=[`SCOPE_MAX_CHARS`] of `a-z 0-9 : . - _`).
pub(crate) fn check_scope_names(scopes: &BTreeSet<String>) -> Result<(), ApplyError> {
    for scope in scopes {
        let ok = !scope.is_empty()
            && scope.chars().count() <= SCOPE_MAX_CHARS
            && scope.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ':' | '.' | '-' | '_')
            });
        if !ok {
            return Err(ApplyError::Invalid(format!(
                "scope {scope:?} must be 1..={SCOPE_MAX_CHARS} characters of a-z, 0-9, ':', '.', '-', '_'"
            )));
        }
    }
    Ok(())
}

fn check_secret_hash(what: &str, secret_hash: &str) -> Result<(), ApplyError> {
    if secret_hash.len() != 64
        || !secret_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ApplyError::Invalid(format!(
            "{what} secret_hash must be 64 lowercase hex characters (hash_api_token)"
        )));
    }
    Ok(())
}

fn check_expiry(
    what: &str,
    issued_at_ms: u64,
    expires_at_ms: Option<u64>,
) -> Result<(), ApplyError> {
    if let Some(expires) = expires_at_ms
        && expires <= issued_at_ms
    {
        return Err(ApplyError::Invalid(format!(
            "{what} expires_at_ms {expires} is not after issued_at_ms {issued_at_ms}"
        )));
    }
    Ok(())
}

fn tenant_mut<'a>(
    state: &'a mut State,
    tenant: &TenantId,
) -> Result<&'a mut TenantState, ApplyError> {
    state
        .tenants
        .get_mut(tenant)
        .ok_or_else(|| ApplyError::NotFound(tenant_name(tenant)))
}

fn tenant_ref<'a>(state: &'a State, tenant: &TenantId) -> Result<&'a TenantState, ApplyError> {
    state
        .tenants
        .get(tenant)
        .ok_or_else(|| ApplyError::NotFound(tenant_name(tenant)))
}

/// Applies `cmd` to `state` as if at log index 0 (see [`apply_at`]).
pub fn apply(state: &mut State, cmd: &Command) -> Result<CommandOutput, ApplyError> {
    apply_at(state, 0, cmd)
}

/// Applies `cmd`, the command of log entry `log_index`, to `state`. Pure and deterministic:
/// the same state and command always give the same result. On `Err` the state is unchanged
/// (every check runs before any mutation), except that an admin command's refusal is still
/// recorded in the audit trail.
pub fn apply_at(
    state: &mut State,
    log_index: u64,
    cmd: &Command,
) -> Result<CommandOutput, ApplyError> {
    apply_cmd(
        state,
        &Ctx {
            log_index,
            actor: ROOT_PRINCIPAL,
        },
        cmd,
    )
}

/// Who is applying a command, and at which log index.
struct Ctx<'a> {
    log_index: u64,
    /// The admin principal (`tenant/principal`, a global principal, or `root`).
    actor: &'a str,
}

fn apply_cmd(state: &mut State, ctx: &Ctx<'_>, cmd: &Command) -> Result<CommandOutput, ApplyError> {
    match cmd {
        Command::InitCluster {
            cluster_name,
            key_check,
        } => {
            validate_id("cluster", cluster_name).map_err(|e| ApplyError::Invalid(e.to_string()))?;
            check_sealed("key check", key_check)?;
            if let Some(existing) = &state.cluster {
                return Err(ApplyError::Conflict(format!(
                    "cluster is already initialised as {:?}",
                    existing.cluster_name
                )));
            }
            state.cluster = Some(ClusterInfo {
                cluster_name: cluster_name.clone(),
                key_check: key_check.clone(),
            });
            Ok(CommandOutput::Done)
        }

        Command::CreateTenantIn {
            tenant,
            display_name,
            residency,
        } => {
            residency
                .check()
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
            let created = apply_cmd(
                state,
                ctx,
                &Command::CreateTenant {
                    tenant: tenant.clone(),
                    display_name: display_name.clone(),
                },
            )?;
            if *residency != crate::placement::Residency::any() {
                state
                    .placement
                    .residency
                    .insert(tenant.clone(), residency.clone());
            }
            Ok(created)
        }

        Command::SetTenantResidency { tenant, residency } => {
            residency
                .check()
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
            tenant_ref(state, tenant)?;
            if state.placement.residency_of(tenant) == *residency {
                return Ok(CommandOutput::Unchanged);
            }
            if *residency == crate::placement::Residency::any() {
                state.placement.residency.remove(tenant);
            } else {
                state
                    .placement
                    .residency
                    .insert(tenant.clone(), residency.clone());
            }
            *state
                .placement
                .residency_changes
                .entry(tenant.clone())
                .or_default() += 1;
            Ok(CommandOutput::Done)
        }

        Command::SetNodeLabels { node, labels } => {
            match state.placement.set_labels(*node, labels) {
                Ok(true) => Ok(CommandOutput::Done),
                Ok(false) => Ok(CommandOutput::Unchanged),
                Err(e) => Err(ApplyError::Invalid(e.to_string())),
            }
        }

        Command::SetNodeDraining { node, draining } => {
            match state.placement.set_draining(*node, *draining) {
                Ok(true) => Ok(CommandOutput::Done),
                Ok(false) => Ok(CommandOutput::Unchanged),
                Err(e) => Err(ApplyError::NotFound(e.to_string())),
            }
        }

        Command::SetNodeStopping { node, stopping } => {
            match state.placement.set_stopping(*node, *stopping) {
                Ok(true) => Ok(CommandOutput::Done),
                Ok(false) => Ok(CommandOutput::Unchanged),
                Err(e) => Err(ApplyError::NotFound(e.to_string())),
            }
        }

        Command::ApplyPlacement { moves } => {
            let mut next = state.placement.clone();
            let stale = next
                .apply_moves(moves)
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
            if stale.len() == moves.len() {
                return Err(ApplyError::Conflict(format!(
                    "every move is stale (the map changed since it was planned): {}",
                    stale.join("; ")
                )));
            }
            state.placement = next;
            Ok(CommandOutput::Done)
        }

        Command::CreateTenant {
            tenant,
            display_name,
        } => {
            check_display_name("tenant", display_name)?;
            if state.tenants.contains_key(tenant) {
                return Err(ApplyError::AlreadyExists(tenant_name(tenant)));
            }
            if state.tenants.len() >= MAX_TENANTS {
                return Err(ApplyError::LimitReached(format!(
                    "the cluster already has {MAX_TENANTS} tenants"
                )));
            }
            state.tenants.insert(
                tenant.clone(),
                TenantState {
                    tenant: Tenant {
                        id: tenant.clone(),
                        display_name: display_name.clone(),
                    },
                    workspaces: BTreeMap::new(),
                    integrations: BTreeMap::new(),
                    principals: BTreeMap::new(),
                },
            );
            Ok(CommandOutput::Done)
        }

        Command::DeleteTenant { tenant } => {
            let t = tenant_ref(state, tenant)?;
            if !t.workspaces.is_empty() {
                return Err(ApplyError::Conflict(format!(
                    "{} still has {} workspace(s); delete them first",
                    tenant_name(tenant),
                    t.workspaces.len()
                )));
            }
            state.tenants.remove(tenant);
            state.placement.residency.remove(tenant);
            state.placement.residency_changes.remove(tenant);
            state.jwt.oidc.remove(tenant);
            state.jwt.revoked.retain(|_, r| &r.tenant != tenant);
            let gone: Vec<TokenId> = state
                .tokens
                .values()
                .filter(|tok| &tok.tenant == tenant)
                .map(|tok| tok.token_id.clone())
                .collect();
            for id in gone {
                if let Some(tok) = state.tokens.remove(&id) {
                    state.token_index.remove(&tok.hash);
                }
            }
            state.templates.remove_tenant(tenant);
            state.mcp_sessions.remove_tenant(tenant);
            // Its principals' roles and restrictions go with it, and so do roles and
            // restrictions that global principals held inside it; admin tokens of its
            // principals are revoked. Its audit chain stays.
            let inside = |scope: &RoleScope| scope.tenant() == Some(tenant);
            state
                .access
                .bindings
                .retain(|subject, _| subject.tenant.as_ref() != Some(tenant));
            for held in state.access.bindings.values_mut() {
                held.retain(|_, b| !inside(&b.scope));
            }
            state.access.bindings.retain(|_, held| !held.is_empty());
            state
                .access
                .restrictions
                .retain(|subject, _| subject.tenant.as_ref() != Some(tenant));
            for held in state.access.restrictions.values_mut() {
                held.retain(|_, r| !inside(&r.scope));
            }
            state.access.restrictions.retain(|_, held| !held.is_empty());
            crate::delegation::forget_tenant(state, tenant);
            for tok in state.admin_tokens.values_mut() {
                if tok
                    .subject
                    .as_ref()
                    .is_some_and(|s| s.tenant.as_ref() == Some(tenant))
                {
                    tok.revoked = true;
                }
            }
            Ok(CommandOutput::Done)
        }

        Command::CreateWorkspace {
            tenant,
            workspace,
            display_name,
            integration,
        } => {
            check_display_name("workspace", display_name)?;
            let t = tenant_mut(state, tenant)?;
            if t.workspaces.contains_key(workspace) {
                return Err(ApplyError::AlreadyExists(format!(
                    "workspace {:?} in {}",
                    workspace.as_str(),
                    tenant_name(tenant)
                )));
            }
            if !t.integrations.contains_key(integration) {
                return Err(ApplyError::NotFound(format!(
                    "integration {:?} in {}",
                    integration.as_str(),
                    tenant_name(tenant)
                )));
            }
            if t.workspaces.len() >= MAX_WORKSPACES_PER_TENANT {
                return Err(ApplyError::LimitReached(format!(
                    "{} already has {MAX_WORKSPACES_PER_TENANT} workspaces",
                    tenant_name(tenant)
                )));
            }
            t.workspaces.insert(
                workspace.clone(),
                Workspace {
                    tenant: tenant.clone(),
                    id: workspace.clone(),
                    display_name: display_name.clone(),
                    integration_id: integration.clone(),
                },
            );
            Ok(CommandOutput::Done)
        }

        Command::AddIntegration {
            tenant,
            integration,
            display_name,
            sealed_token,
            budget,
        } => {
            check_display_name("integration", display_name)?;
            check_budget(budget)?;
            check_sealed("integration token", sealed_token)?;
            let t = tenant_mut(state, tenant)?;
            if t.integrations.contains_key(integration) {
                return Err(ApplyError::AlreadyExists(format!(
                    "integration {:?} in {}",
                    integration.as_str(),
                    tenant_name(tenant)
                )));
            }
            if t.integrations.len() >= MAX_INTEGRATIONS_PER_TENANT {
                return Err(ApplyError::LimitReached(format!(
                    "{} already has {MAX_INTEGRATIONS_PER_TENANT} integrations",
                    tenant_name(tenant)
                )));
            }
            t.integrations.insert(
                integration.clone(),
                Integration {
                    tenant: tenant.clone(),
                    id: integration.clone(),
                    display_name: display_name.clone(),
                    sealed_token: sealed_token.clone(),
                    budget: *budget,
                },
            );
            Ok(CommandOutput::Done)
        }

        Command::RotateIntegrationToken {
            tenant,
            integration,
            sealed_token,
        } => {
            check_sealed("integration token", sealed_token)?;
            let t = tenant_mut(state, tenant)?;
            let i = t.integrations.get_mut(integration).ok_or_else(|| {
                ApplyError::NotFound(format!(
                    "integration {:?} in {}",
                    integration.as_str(),
                    tenant_name(tenant)
                ))
            })?;
            i.sealed_token = sealed_token.clone();
            Ok(CommandOutput::Done)
        }

        Command::ResealSecrets { secrets } => reseal_secrets(state, secrets),

        Command::RemoveIntegration {
            tenant,
            integration,
        } => {
            let t = tenant_mut(state, tenant)?;
            if !t.integrations.contains_key(integration) {
                return Err(ApplyError::NotFound(format!(
                    "integration {:?} in {}",
                    integration.as_str(),
                    tenant_name(tenant)
                )));
            }
            if let Some(ws) = t
                .workspaces
                .values()
                .find(|w| &w.integration_id == integration)
            {
                return Err(ApplyError::Conflict(format!(
                    "integration {:?} in {} is used by workspace {:?}",
                    integration.as_str(),
                    tenant_name(tenant),
                    ws.id.as_str()
                )));
            }
            t.integrations.remove(integration);
            Ok(CommandOutput::Done)
        }

        Command::CreatePrincipal {
            tenant,
            principal,
            display_name,
        } => {
            check_display_name("principal", display_name)?;
            let t = tenant_mut(state, tenant)?;
            if t.principals.contains_key(principal) {
                return Err(ApplyError::AlreadyExists(format!(
                    "principal {:?} in {}",
                    principal.as_str(),
                    tenant_name(tenant)
                )));
            }
            if t.principals.len() >= MAX_PRINCIPALS_PER_TENANT {
                return Err(ApplyError::LimitReached(format!(
                    "{} already has {MAX_PRINCIPALS_PER_TENANT} principals",
                    tenant_name(tenant)
                )));
            }
            t.principals.insert(
                principal.clone(),
                Principal {
                    tenant: tenant.clone(),
                    id: principal.clone(),
                    display_name: display_name.clone(),
                    workspaces: BTreeSet::new(),
                },
            );
            Ok(CommandOutput::Done)
        }

        Command::GrantWorkspace {
            tenant,
            principal,
            workspace,
        } => {
            let t = tenant_mut(state, tenant)?;
            if !t.workspaces.contains_key(workspace) {
                return Err(ApplyError::NotFound(format!(
                    "workspace {:?} in {}",
                    workspace.as_str(),
                    tenant_name(tenant)
                )));
            }
            let p = t.principals.get_mut(principal).ok_or_else(|| {
                ApplyError::NotFound(format!(
                    "principal {:?} in {}",
                    principal.as_str(),
                    tenant_name(tenant)
                ))
            })?;
            if p.workspaces.contains(workspace) {
                return Ok(CommandOutput::Unchanged);
            }
            if p.workspaces.len() >= MAX_GRANTS_PER_PRINCIPAL {
                return Err(ApplyError::LimitReached(format!(
                    "principal {:?} already has {MAX_GRANTS_PER_PRINCIPAL} workspaces",
                    principal.as_str()
                )));
            }
            p.workspaces.insert(workspace.clone());
            Ok(CommandOutput::Done)
        }

        Command::IssueToken {
            tenant,
            principal,
            workspace,
            token_id,
            secret_hash,
            scopes,
            issued_at_ms,
            expires_at_ms,
        } => {
            check_secret_hash("token", secret_hash)?;
            check_scopes(scopes)?;
            check_expiry("token", *issued_at_ms, *expires_at_ms)?;
            let t = tenant_ref(state, tenant)?;
            let p = t.principals.get(principal).ok_or_else(|| {
                ApplyError::NotFound(format!(
                    "principal {:?} in {}",
                    principal.as_str(),
                    tenant_name(tenant)
                ))
            })?;
            if !t.workspaces.contains_key(workspace) {
                return Err(ApplyError::NotFound(format!(
                    "workspace {:?} in {}",
                    workspace.as_str(),
                    tenant_name(tenant)
                )));
            }
            if !p.workspaces.contains(workspace) {
                return Err(ApplyError::Conflict(format!(
                    "principal {:?} is not granted workspace {:?} in {}",
                    principal.as_str(),
                    workspace.as_str(),
                    tenant_name(tenant)
                )));
            }
            if state.tokens.contains_key(token_id) {
                return Err(ApplyError::AlreadyExists(format!(
                    "token {:?}",
                    token_id.as_str()
                )));
            }
            if state.token_index.contains_key(secret_hash)
                || state.admin_token_index.contains_key(secret_hash)
            {
                return Err(ApplyError::AlreadyExists(
                    "a token with this secret hash".into(),
                ));
            }
            if state.tokens.len() >= MAX_TOKENS {
                return Err(ApplyError::LimitReached(format!(
                    "the cluster already has {MAX_TOKENS} tokens"
                )));
            }
            state.tokens.insert(
                token_id.clone(),
                ApiToken {
                    token_id: token_id.clone(),
                    tenant: tenant.clone(),
                    principal: principal.clone(),
                    workspace_id: workspace.clone(),
                    hash: secret_hash.clone(),
                    scopes: scopes.clone(),
                    issued_at_ms: *issued_at_ms,
                    expires_at_ms: *expires_at_ms,
                    revoked: false,
                },
            );
            state
                .token_index
                .insert(secret_hash.clone(), token_id.clone());
            Ok(CommandOutput::Done)
        }

        Command::RevokeToken { tenant, token_id } => {
            let tok = state
                .tokens
                .get_mut(token_id)
                .filter(|tok| &tok.tenant == tenant)
                .ok_or_else(|| {
                    ApplyError::NotFound(format!(
                        "token {:?} in {}",
                        token_id.as_str(),
                        tenant_name(tenant)
                    ))
                })?;
            if tok.revoked {
                return Ok(CommandOutput::Unchanged);
            }
            tok.revoked = true;
            Ok(CommandOutput::Done)
        }

        Command::IssueAdminToken {
            token_id,
            secret_hash,
            display_name,
            issued_at_ms,
            expires_at_ms,
            subject,
        } => {
            check_secret_hash("admin token", secret_hash)?;
            check_display_name("admin token", display_name)?;
            check_expiry("admin token", *issued_at_ms, *expires_at_ms)?;
            if let Some(subject) = subject
                && !state.subject_exists(subject)
            {
                return Err(ApplyError::NotFound(format!("principal {subject}")));
            }
            if state.admin_tokens.contains_key(token_id) {
                return Err(ApplyError::AlreadyExists(format!(
                    "admin token {:?}",
                    token_id.as_str()
                )));
            }
            if state.admin_token_index.contains_key(secret_hash)
                || state.token_index.contains_key(secret_hash)
            {
                return Err(ApplyError::AlreadyExists(
                    "a token with this secret hash".into(),
                ));
            }
            if state.admin_tokens.len() >= MAX_ADMIN_TOKENS {
                return Err(ApplyError::LimitReached(format!(
                    "the cluster already has {MAX_ADMIN_TOKENS} admin tokens (revoked ones count)"
                )));
            }
            state.admin_tokens.insert(
                token_id.clone(),
                AdminToken {
                    token_id: token_id.clone(),
                    hash: secret_hash.clone(),
                    display_name: display_name.clone(),
                    issued_at_ms: *issued_at_ms,
                    expires_at_ms: *expires_at_ms,
                    revoked: false,
                    subject: subject.clone(),
                },
            );
            state
                .admin_token_index
                .insert(secret_hash.clone(), token_id.clone());
            Ok(CommandOutput::Done)
        }

        Command::RevokeAdminToken { token_id } => {
            let tok = state.admin_tokens.get_mut(token_id).ok_or_else(|| {
                ApplyError::NotFound(format!("admin token {:?}", token_id.as_str()))
            })?;
            if tok.revoked {
                return Ok(CommandOutput::Unchanged);
            }
            tok.revoked = true;
            Ok(CommandOutput::Done)
        }

        Command::AsAdmin {
            admin_token,
            at_ms,
            command,
            node,
            justification,
        } => as_admin(
            state,
            ctx,
            admin_token,
            *at_ms,
            command,
            *node,
            justification.as_ref(),
        ),

        Command::CreateGlobalPrincipal {
            principal,
            display_name,
        } => {
            check_display_name("principal", display_name)?;
            if state.global_principals.contains_key(principal) {
                return Err(ApplyError::AlreadyExists(format!(
                    "global principal {:?}",
                    principal.as_str()
                )));
            }
            if principal.as_str() == ROOT_PRINCIPAL {
                return Err(ApplyError::Invalid(format!(
                    "{ROOT_PRINCIPAL:?} is reserved for the cluster's root"
                )));
            }
            if state.global_principals.len() >= MAX_GLOBAL_PRINCIPALS {
                return Err(ApplyError::LimitReached(format!(
                    "the cluster already has {MAX_GLOBAL_PRINCIPALS} global principals"
                )));
            }
            state.global_principals.insert(
                principal.clone(),
                GlobalPrincipal {
                    id: principal.clone(),
                    display_name: display_name.clone(),
                },
            );
            Ok(CommandOutput::Done)
        }

        Command::AssignRole {
            subject,
            role,
            scope,
            granted_at_ms,
            expires_at_ms,
            justification,
        } => {
            check_expiry("role binding", *granted_at_ms, *expires_at_ms)?;
            if let Some(j) = justification {
                check_justification(j)?;
            }
            if !role.allowed_levels().contains(&scope.level()) {
                return Err(ApplyError::Invalid(format!(
                    "{role} cannot be bound at {scope}; it is bound at the {:?} level",
                    role.allowed_levels()
                )));
            }
            check_subject_and_scope(state, subject, scope)?;
            if !subject.may_hold(scope) {
                return Err(ApplyError::Invalid(format!(
                    "{subject} belongs to another tenant than {scope}"
                )));
            }
            let held = state.access.bindings.entry(subject.clone()).or_default();
            if held.values().any(|b| {
                b.role == *role
                    && &b.scope == scope
                    && b.expires_at_ms.is_none()
                    && expires_at_ms.is_none()
            }) {
                return Ok(CommandOutput::Unchanged);
            }
            if held.len() >= MAX_BINDINGS_PER_SUBJECT {
                return Err(ApplyError::LimitReached(format!(
                    "{subject} already holds {MAX_BINDINGS_PER_SUBJECT} role bindings"
                )));
            }
            let id = state.access.take_id();
            let binding = RoleBinding {
                id,
                subject: subject.clone(),
                role: *role,
                scope: scope.clone(),
                granted_by: ctx.actor.to_owned(),
                granted_at_ms: *granted_at_ms,
                expires_at_ms: *expires_at_ms,
                justification: justification.clone(),
                origin: BindingOrigin::Assigned,
            };
            state
                .access
                .bindings
                .entry(subject.clone())
                .or_default()
                .insert(id, binding);
            Ok(CommandOutput::Done)
        }

        Command::RevokeRole { binding } => {
            let subject = state
                .access
                .binding(*binding)
                .map(|b| b.subject.clone())
                .ok_or_else(|| ApplyError::NotFound(format!("role binding #{binding}")))?;
            if let Some(held) = state.access.bindings.get_mut(&subject) {
                held.remove(binding);
                if held.is_empty() {
                    state.access.bindings.remove(&subject);
                }
            }
            crate::delegation::end_unbacked(state, &subject);
            Ok(CommandOutput::Done)
        }

        Command::AddRestriction {
            subject,
            permission,
            scope,
            set_at_ms,
            justification,
        } => {
            check_justification(justification)?;
            if justification.trim().is_empty() {
                return Err(ApplyError::Invalid(
                    "a restriction needs a justification".into(),
                ));
            }
            if let Some(p) = permission
                && scope.level() > p.level()
            {
                return Err(ApplyError::Invalid(format!(
                    "{p} applies at the {:?} level; a restriction at {scope} could never match it",
                    p.level()
                )));
            }
            check_subject_and_scope(state, subject, scope)?;
            let held = state
                .access
                .restrictions
                .entry(subject.clone())
                .or_default();
            if held.len() >= MAX_RESTRICTIONS_PER_SUBJECT {
                return Err(ApplyError::LimitReached(format!(
                    "{subject} already has {MAX_RESTRICTIONS_PER_SUBJECT} restrictions"
                )));
            }
            let id = state.access.take_id();
            let restriction = Restriction {
                id,
                subject: subject.clone(),
                permission: *permission,
                scope: scope.clone(),
                set_by: ctx.actor.to_owned(),
                set_at_ms: *set_at_ms,
                justification: justification.clone(),
            };
            state
                .access
                .restrictions
                .entry(subject.clone())
                .or_default()
                .insert(id, restriction);
            Ok(CommandOutput::Done)
        }

        Command::RemoveRestriction { restriction } => {
            let subject = state
                .access
                .restriction(*restriction)
                .map(|r| r.subject.clone())
                .ok_or_else(|| ApplyError::NotFound(format!("restriction #{restriction}")))?;
            if let Some(held) = state.access.restrictions.get_mut(&subject) {
                held.remove(restriction);
                if held.is_empty() {
                    state.access.restrictions.remove(&subject);
                }
            }
            Ok(CommandOutput::Done)
        }

        Command::AppendAudit { events } => {
            if events.is_empty() || events.len() > MAX_AUDIT_BATCH {
                return Err(ApplyError::Invalid(format!(
                    "an audit batch holds 1..={MAX_AUDIT_BATCH} events, not {}",
                    events.len()
                )));
            }
            for e in events {
                check_audit_event(e)?;
            }
            for e in events {
                state.audit.append(ctx.log_index, e.clone());
            }
            Ok(CommandOutput::Done)
        }

        Command::Template(cmd) => {
            let (tenant, workspace) = cmd.scope();
            let exists = state.workspace(tenant, workspace).is_some();
            crate::templates::apply(&mut state.templates, exists, ctx.actor, cmd)
        }

        Command::SetAuditRetention {
            max_records_per_chain,
        } => {
            if !(1..=MAX_AUDIT_RETENTION).contains(max_records_per_chain) {
                return Err(ApplyError::Invalid(format!(
                    "audit retention must be 1..={MAX_AUDIT_RETENTION} records per chain"
                )));
            }
            if state.audit.max_records_per_chain == *max_records_per_chain {
                return Ok(CommandOutput::Unchanged);
            }
            state.audit.set_retention(*max_records_per_chain);
            Ok(CommandOutput::Done)
        }

        Command::AddJwtKey {
            kid,
            alg,
            public_key,
            sealed_private_key,
            created_at_ms,
            make_current,
            previous_not_after_ms,
        } => {
            check_kid(kid)?;
            check_public_key(*alg, public_key)?;
            check_sealed("signing key", sealed_private_key)?;
            if previous_not_after_ms.is_some() && !make_current {
                return Err(ApplyError::Invalid(
                    "previous_not_after_ms needs make_current".into(),
                ));
            }
            if let Some(end) = previous_not_after_ms
                && end < created_at_ms
            {
                return Err(ApplyError::Invalid(format!(
                    "previous_not_after_ms {end} is before created_at_ms {created_at_ms}"
                )));
            }
            if state.jwt.keys.contains_key(kid) {
                return Err(ApplyError::AlreadyExists(format!("signing key {kid:?}")));
            }
            let mut jwt = state.jwt.clone();
            jwt.prune(*created_at_ms);
            if jwt.keys.len() >= MAX_JWT_KEYS {
                return Err(ApplyError::LimitReached(format!(
                    "the cluster already holds {MAX_JWT_KEYS} signing keys; retire some first"
                )));
            }
            if *make_current {
                if let (Some(end), Some(previous)) = (
                    previous_not_after_ms,
                    jwt.current.clone().and_then(|c| jwt.keys.get_mut(&c)),
                ) {
                    previous.retired_at_ms = Some(*created_at_ms);
                    previous.not_after_ms = Some(*end);
                }
                jwt.current = Some(kid.clone());
            }
            jwt.keys.insert(
                kid.clone(),
                SigningKey {
                    kid: kid.clone(),
                    alg: *alg,
                    public_key: public_key.clone(),
                    sealed_private_key: sealed_private_key.clone(),
                    created_at_ms: *created_at_ms,
                    retired_at_ms: None,
                    not_after_ms: None,
                },
            );
            state.jwt = jwt;
            Ok(CommandOutput::Done)
        }

        Command::SetCurrentJwtKey { kid } => {
            let key = state
                .jwt
                .keys
                .get(kid)
                .ok_or_else(|| ApplyError::NotFound(format!("signing key {kid:?}")))?;
            if key.retired_at_ms.is_some() {
                return Err(ApplyError::Conflict(format!(
                    "signing key {kid:?} is retired; add a new key instead"
                )));
            }
            if state.jwt.current.as_ref() == Some(kid) {
                return Ok(CommandOutput::Unchanged);
            }
            state.jwt.current = Some(kid.clone());
            Ok(CommandOutput::Done)
        }

        Command::RetireJwtKey {
            kid,
            at_ms,
            not_after_ms,
        } => {
            if not_after_ms < at_ms {
                return Err(ApplyError::Invalid(format!(
                    "not_after_ms {not_after_ms} is before at_ms {at_ms}"
                )));
            }
            if state.jwt.current.as_ref() == Some(kid) {
                return Err(ApplyError::Conflict(format!(
                    "signing key {kid:?} signs new tokens; rotate to another key before retiring it"
                )));
            }
            let key = state
                .jwt
                .keys
                .get_mut(kid)
                .ok_or_else(|| ApplyError::NotFound(format!("signing key {kid:?}")))?;
            key.retired_at_ms.get_or_insert(*at_ms);
            key.not_after_ms = Some(*not_after_ms);
            state.jwt.prune(*at_ms);
            Ok(CommandOutput::Done)
        }

        Command::RevokeJwt {
            tenant,
            jti,
            expires_at_ms,
            revoked_at_ms,
        } => {
            check_jti(jti)?;
            tenant_ref(state, tenant)?;
            if *expires_at_ms > revoked_at_ms.saturating_add(MAX_REVOCATION_SPAN_MS) {
                return Err(ApplyError::Invalid(format!(
                    "expires_at_ms lies more than {} days ahead; no token Quire accepts lives that long",
                    MAX_REVOCATION_SPAN_MS / 86_400_000
                )));
            }
            let key = revocation_key(tenant, jti);
            let mut jwt = state.jwt.clone();
            jwt.prune(*revoked_at_ms);
            if *expires_at_ms <= *revoked_at_ms || jwt.revoked.contains_key(&key) {
                state.jwt = jwt;
                return Ok(CommandOutput::Unchanged);
            }
            if jwt.revoked.len() >= MAX_REVOKED_JTIS {
                return Err(ApplyError::LimitReached(format!(
                    "{MAX_REVOKED_JTIS} unexpired token ids are already revoked"
                )));
            }
            jwt.revoked.insert(
                key,
                RevokedJti {
                    tenant: tenant.clone(),
                    jti: jti.clone(),
                    expires_at_ms: *expires_at_ms,
                    revoked_at_ms: *revoked_at_ms,
                },
            );
            state.jwt = jwt;
            Ok(CommandOutput::Done)
        }

        Command::SetOidcProvider { provider } => {
            provider.check()?;
            let t = tenant_ref(state, &provider.tenant)?;
            for ws in provider.default_workspace.iter().chain(
                provider
                    .groups
                    .values()
                    .filter_map(|g| g.workspace.as_ref()),
            ) {
                if !t.workspaces.contains_key(ws) {
                    return Err(ApplyError::NotFound(format!(
                        "workspace {:?} in {}",
                        ws.as_str(),
                        tenant_name(&provider.tenant)
                    )));
                }
            }
            if let Some(other) = state.jwt.oidc.values().find(|o| {
                o.tenant != provider.tenant
                    && o.issuer == provider.issuer
                    && (o.tenant_claim.is_none() || provider.tenant_claim.is_none())
            }) {
                return Err(ApplyError::Conflict(format!(
                    "issuer {:?} already serves {}; tenants may share an issuer only when both name a tenant_claim",
                    provider.issuer,
                    tenant_name(&other.tenant)
                )));
            }
            if state.jwt.oidc.get(&provider.tenant) == Some(provider) {
                return Ok(CommandOutput::Unchanged);
            }
            state
                .jwt
                .oidc
                .insert(provider.tenant.clone(), provider.clone());
            Ok(CommandOutput::Done)
        }

        Command::RemoveOidcProvider { tenant } => {
            if state.jwt.oidc.remove(tenant).is_none() {
                return Err(ApplyError::NotFound(format!(
                    "OpenID Connect provider of {}",
                    tenant_name(tenant)
                )));
            }
            Ok(CommandOutput::Done)
        }

        Command::PutMcpSession {
            session,
            at_ms,
            limits,
        } => crate::sessions::put(state, session, *at_ms, limits),

        Command::DeleteMcpSession {
            id,
            tenant,
            principal,
            at_ms,
        } => crate::sessions::delete(state, id, tenant, principal, *at_ms),

        Command::SetSodPolicy { policy } => {
            crate::approvals::check_policy(state, policy)?;
            if &state.approvals.policy == policy {
                return Ok(CommandOutput::Unchanged);
            }
            state.approvals.policy = policy.clone();
            Ok(CommandOutput::Done)
        }

        Command::Delegate { .. }
        | Command::ApproveDelegation { .. }
        | Command::RevokeDelegation { .. }
        | Command::ApproveRequest { .. }
        | Command::RejectRequest { .. }
        | Command::BreakGlass { .. } => Err(ApplyError::Invalid(format!(
            "{} is made only as an admin command (it acts for the admin token's principal)",
            cmd.kind()
        ))),

        Command::RestoreState { state: restored } => crate::backup::restore(state, restored),

        Command::ImportTenant { slice, at_ms, node } => {
            crate::backup::import(state, ctx.log_index, ctx.actor, slice, *at_ms, *node)
        }

        Command::Once {
            request_id,
            command,
        } => {
            if request_id.is_empty()
                || request_id.len() > 64
                || !request_id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
            {
                return Err(ApplyError::Invalid(
                    "a request id is 1-64 characters of 0-9, a-z and '-'".into(),
                ));
            }
            if matches!(**command, Command::Once { .. }) {
                return Err(ApplyError::Invalid(
                    "a request cannot wrap another request".into(),
                ));
            }
            if let Some(earlier) = state.requests.result(request_id) {
                return earlier;
            }
            let result = apply_cmd(state, ctx, command);
            state.requests.record(request_id, &result);
            result
        }
    }
}

fn check_justification(text: &str) -> Result<(), ApplyError> {
    let chars = text.chars().count();
    if chars > JUSTIFICATION_MAX_CHARS {
        return Err(ApplyError::Invalid(format!(
            "justification is {chars} characters, more than {JUSTIFICATION_MAX_CHARS}"
        )));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApplyError::Invalid(
            "justification contains control characters".into(),
        ));
    }
    Ok(())
}

fn check_subject_and_scope(
    state: &State,
    subject: &Subject,
    scope: &RoleScope,
) -> Result<(), ApplyError> {
    if !state.subject_exists(subject) {
        return Err(ApplyError::NotFound(format!("principal {subject}")));
    }
    match scope {
        RoleScope::Global => {}
        RoleScope::Tenant { tenant } => {
            tenant_ref(state, tenant)?;
        }
        RoleScope::Workspace { tenant, workspace } => {
            if state.workspace(tenant, workspace).is_none() {
                return Err(ApplyError::NotFound(format!(
                    "workspace {:?} in {}",
                    workspace.as_str(),
                    tenant_name(tenant)
                )));
            }
        }
    }
    Ok(())
}

fn check_audit_event(e: &AuditEvent) -> Result<(), ApplyError> {
    let texts = [
        Some(e.principal.as_str()),
        e.workspace.as_deref(),
        Some(e.kind.as_str()),
        Some(e.action.as_str()),
        e.resource.as_deref(),
        Some(e.outcome.as_str()),
        e.justification.as_deref(),
    ];
    for t in texts.into_iter().flatten() {
        if t.chars().count() > MAX_AUDIT_TEXT_CHARS {
            return Err(ApplyError::Invalid(format!(
                "an audit field is longer than {MAX_AUDIT_TEXT_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// The permission an admin command needs, and the scope it is needed at.
pub fn required_permission(
    state: &State,
    cmd: &Command,
) -> Result<(Permission, RoleScope), ApplyError> {
    let tenant_scope = |t: &TenantId| RoleScope::Tenant { tenant: t.clone() };
    let assign = |scope: &RoleScope| match scope {
        RoleScope::Global => (Permission::SystemConfigure, RoleScope::Global),
        RoleScope::Tenant { tenant } => (Permission::TenantUsersManage, tenant_scope(tenant)),
        RoleScope::Workspace { .. } => (Permission::WorkspaceMembersManage, scope.clone()),
    };
    let restrict = |scope: &RoleScope| match scope.tenant() {
        None => (Permission::SecurityPolicy, RoleScope::Global),
        Some(t) => (Permission::TenantSecurity, tenant_scope(t)),
    };
    let admin_token = |subject: Option<&Subject>| match subject.and_then(|s| s.tenant.as_ref()) {
        Some(t) => (Permission::TenantUsersManage, tenant_scope(t)),
        None => (Permission::SystemConfigure, RoleScope::Global),
    };
    Ok(match cmd {
        Command::CreateTenant { .. }
        | Command::CreateTenantIn { .. }
        | Command::ImportTenant { .. } => (Permission::TenantsCreate, RoleScope::Global),
        // Where a tenant's data may live is cluster configuration (placement), not the
        // tenant's own: a tenant admin cannot move its data out of a region.
        Command::SetTenantResidency { .. } => (Permission::SystemConfigure, RoleScope::Global),
        // Draining a node is cluster configuration, as removing one is.
        Command::SetNodeDraining { .. } => (Permission::SystemConfigure, RoleScope::Global),
        Command::DeleteTenant { .. } => (Permission::TenantsDelete, RoleScope::Global),
        Command::CreateWorkspace { tenant, .. } => {
            (Permission::TenantWorkspacesConfigure, tenant_scope(tenant))
        }
        Command::AddIntegration { tenant, .. }
        | Command::RotateIntegrationToken { tenant, .. }
        | Command::RemoveIntegration { tenant, .. } => {
            (Permission::TenantIntegrationsManage, tenant_scope(tenant))
        }
        Command::CreatePrincipal { tenant, .. } => {
            (Permission::TenantUsersManage, tenant_scope(tenant))
        }
        Command::GrantWorkspace {
            tenant, workspace, ..
        }
        | Command::IssueToken {
            tenant, workspace, ..
        } => (
            Permission::WorkspaceMembersManage,
            RoleScope::Workspace {
                tenant: tenant.clone(),
                workspace: workspace.clone(),
            },
        ),
        Command::RevokeToken { tenant, .. } => (Permission::TenantSecurity, tenant_scope(tenant)),
        Command::IssueAdminToken { subject, .. } => admin_token(subject.as_ref()),
        Command::RevokeAdminToken { token_id } => admin_token(
            state
                .admin_tokens
                .get(token_id)
                .and_then(|t| t.subject.as_ref()),
        ),
        Command::Template(cmd) => {
            let (tenant, workspace) = cmd.scope();
            (
                Permission::WorkspaceTemplatesManage,
                RoleScope::Workspace {
                    tenant: tenant.clone(),
                    workspace: workspace.clone(),
                },
            )
        }
        Command::CreateGlobalPrincipal { .. }
        | Command::SetAuditRetention { .. }
        | Command::AddJwtKey { .. }
        | Command::SetCurrentJwtKey { .. }
        | Command::RetireJwtKey { .. } => (Permission::SystemConfigure, RoleScope::Global),
        Command::RevokeJwt { tenant, .. } | Command::RemoveOidcProvider { tenant } => {
            (Permission::TenantSecurity, tenant_scope(tenant))
        }
        Command::SetOidcProvider { provider } => {
            (Permission::TenantSecurity, tenant_scope(&provider.tenant))
        }
        Command::AssignRole { scope, .. } => assign(scope),
        Command::RevokeRole { binding } => assign(
            &state
                .access
                .binding(*binding)
                .ok_or_else(|| ApplyError::NotFound(format!("role binding #{binding}")))?
                .scope,
        ),
        Command::AddRestriction { scope, .. } => restrict(scope),
        Command::RemoveRestriction { restriction } => restrict(
            &state
                .access
                .restriction(*restriction)
                .ok_or_else(|| ApplyError::NotFound(format!("restriction #{restriction}")))?
                .scope,
        ),
        // Delegation and approval commands carry their own rules (`approvals::decide`); what
        // is named here is what they concern.
        Command::Delegate { scope, .. } => assign(scope),
        Command::ApproveDelegation { delegation } | Command::RevokeDelegation { delegation } => {
            assign(
                &state
                    .delegations
                    .get(*delegation)
                    .ok_or_else(|| ApplyError::NotFound(format!("delegation #{delegation}")))?
                    .scope,
            )
        }
        Command::SetSodPolicy { .. } | Command::ResealSecrets { .. } => {
            (Permission::SecurityPolicy, RoleScope::Global)
        }
        Command::ApproveRequest { request }
        | Command::RejectRequest { request }
        | Command::BreakGlass { request } => {
            let held = &state
                .approvals
                .request(*request)
                .ok_or_else(|| ApplyError::NotFound(format!("approval request #{request}")))?
                .command;
            required_permission(state, held)
                .unwrap_or((Permission::SecurityPolicy, RoleScope::Global))
        }
        Command::InitCluster { .. }
        | Command::AsAdmin { .. }
        | Command::Once { .. }
        | Command::RestoreState { .. }
        | Command::SetNodeLabels { .. }
        | Command::SetNodeStopping { .. }
        | Command::ApplyPlacement { .. }
        | Command::PutMcpSession { .. }
        | Command::DeleteMcpSession { .. }
        | Command::AppendAudit { .. } => {
            return Err(ApplyError::Invalid(format!(
                "{} cannot be made as an admin command",
                cmd.kind()
            )));
        }
    })
}

/// The tenant an admin command concerns (its audit chain), and what it acts on.
fn command_target(cmd: &Command) -> (Option<TenantId>, Option<String>, Option<String>) {
    match cmd {
        Command::CreateTenant { tenant, .. }
        | Command::CreateTenantIn { tenant, .. }
        | Command::DeleteTenant { tenant } => {
            (None, None, Some(format!("tenant:{}", tenant.as_str())))
        }
        Command::SetNodeDraining { node, .. } => (None, None, Some(format!("node:{node}"))),
        Command::SetTenantResidency { tenant, .. } => (
            Some(tenant.clone()),
            None,
            Some(format!("residency:{}", tenant.as_str())),
        ),
        Command::ImportTenant { slice, .. } => (
            None,
            None,
            Some(format!("tenant:{}", slice.tenant.tenant.id.as_str())),
        ),
        Command::CreateWorkspace {
            tenant, workspace, ..
        } => (
            Some(tenant.clone()),
            Some(workspace.as_str().to_owned()),
            Some(format!("workspace:{}", workspace.as_str())),
        ),
        Command::AddIntegration {
            tenant,
            integration,
            ..
        }
        | Command::RotateIntegrationToken {
            tenant,
            integration,
            ..
        }
        | Command::RemoveIntegration {
            tenant,
            integration,
        } => (
            Some(tenant.clone()),
            None,
            Some(format!("integration:{}", integration.as_str())),
        ),
        Command::CreatePrincipal {
            tenant, principal, ..
        } => (
            Some(tenant.clone()),
            None,
            Some(format!("principal:{}", principal.as_str())),
        ),
        Command::GrantWorkspace {
            tenant,
            principal,
            workspace,
        } => (
            Some(tenant.clone()),
            Some(workspace.as_str().to_owned()),
            Some(format!("principal:{}", principal.as_str())),
        ),
        Command::IssueToken {
            tenant,
            workspace,
            token_id,
            ..
        } => (
            Some(tenant.clone()),
            Some(workspace.as_str().to_owned()),
            Some(format!("token:{}", token_id.as_str())),
        ),
        Command::RevokeToken { tenant, token_id } => (
            Some(tenant.clone()),
            None,
            Some(format!("token:{}", token_id.as_str())),
        ),
        Command::IssueAdminToken {
            token_id, subject, ..
        } => (
            subject.as_ref().and_then(|s| s.tenant.clone()),
            None,
            Some(format!("admin_token:{}", token_id.as_str())),
        ),
        Command::RevokeAdminToken { token_id } => (
            None,
            None,
            Some(format!("admin_token:{}", token_id.as_str())),
        ),
        Command::CreateGlobalPrincipal { principal, .. } => (
            None,
            None,
            Some(format!("principal:{}", principal.as_str())),
        ),
        Command::AssignRole {
            subject,
            role,
            scope,
            ..
        } => (
            scope.tenant().cloned(),
            workspace_of(scope),
            Some(format!("role:{role}@{scope} for {subject}")),
        ),
        Command::RevokeRole { binding } => (None, None, Some(format!("binding:{binding}"))),
        Command::AddRestriction { subject, scope, .. } => (
            scope.tenant().cloned(),
            workspace_of(scope),
            Some(format!("restriction for {subject}")),
        ),
        Command::RemoveRestriction { restriction } => {
            (None, None, Some(format!("restriction:{restriction}")))
        }
        Command::SetAuditRetention { .. } => (None, None, Some("audit_retention".into())),
        Command::ResealSecrets { .. } => (None, None, Some("master_key".into())),
        Command::Template(cmd) => {
            let (tenant, workspace) = cmd.scope();
            (
                Some(tenant.clone()),
                Some(workspace.as_str().to_owned()),
                Some(format!("template:{}", cmd.name())),
            )
        }
        Command::AddJwtKey { kid, .. }
        | Command::SetCurrentJwtKey { kid }
        | Command::RetireJwtKey { kid, .. } => (None, None, Some(format!("jwt_key:{kid}"))),
        Command::RevokeJwt { tenant, jti, .. } => {
            (Some(tenant.clone()), None, Some(format!("jwt:{jti}")))
        }
        Command::SetOidcProvider { provider } => (
            Some(provider.tenant.clone()),
            None,
            Some(format!("oidc_provider:{}", provider.issuer)),
        ),
        Command::RemoveOidcProvider { tenant } => {
            (Some(tenant.clone()), None, Some("oidc_provider".into()))
        }
        Command::Delegate {
            delegate, scope, ..
        } => (
            scope.tenant().cloned(),
            workspace_of(scope),
            Some(format!("delegation for {delegate}")),
        ),
        Command::ApproveDelegation { delegation } | Command::RevokeDelegation { delegation } => {
            (None, None, Some(format!("delegation:{delegation}")))
        }
        Command::SetSodPolicy { .. } => (None, None, Some("sod_policy".into())),
        Command::ApproveRequest { request }
        | Command::RejectRequest { request }
        | Command::BreakGlass { request } => (None, None, Some(format!("approval:{request}"))),
        Command::InitCluster { .. }
        | Command::AsAdmin { .. }
        | Command::Once { .. }
        | Command::RestoreState { .. }
        | Command::SetNodeLabels { .. }
        | Command::SetNodeStopping { .. }
        | Command::ApplyPlacement { .. }
        | Command::PutMcpSession { .. }
        | Command::DeleteMcpSession { .. }
        | Command::AppendAudit { .. } => (None, None, None),
    }
}

/// The tenant an admin command concerns, its workspace, and what it acts on (for the audit
/// record of a command executed through an approval request).
pub(crate) fn target_of(cmd: &Command) -> (Option<TenantId>, Option<String>, Option<String>) {
    command_target(cmd)
}

/// Applies `cmd` on behalf of `actor` (an approved or break-glass request's command).
pub(crate) fn apply_as(
    state: &mut State,
    log_index: u64,
    actor: &str,
    cmd: &Command,
) -> Result<CommandOutput, ApplyError> {
    apply_cmd(state, &Ctx { log_index, actor }, cmd)
}

/// Checks a justification's length and characters (see [`JUSTIFICATION_MAX_CHARS`]).
pub(crate) fn check_justification_text(text: &str) -> Result<(), ApplyError> {
    check_justification(text)
}

/// The permission that assigning a role at `scope` needs, and where.
pub fn assign_permission(scope: &RoleScope) -> (Permission, RoleScope) {
    match scope {
        RoleScope::Global => (Permission::SystemConfigure, RoleScope::Global),
        RoleScope::Tenant { tenant } => (
            Permission::TenantUsersManage,
            RoleScope::Tenant {
                tenant: tenant.clone(),
            },
        ),
        RoleScope::Workspace { .. } => (Permission::WorkspaceMembersManage, scope.clone()),
    }
}

fn workspace_of(scope: &RoleScope) -> Option<String> {
    match scope {
        RoleScope::Workspace { workspace, .. } => Some(workspace.as_str().to_owned()),
        _ => None,
    }
}

/// The role a role command assigns or revokes, and where.
fn role_change(state: &State, cmd: &Command) -> Option<(Role, RoleScope)> {
    match cmd {
        Command::AssignRole { role, scope, .. } => Some((*role, scope.clone())),
        Command::RevokeRole { binding } => state
            .access
            .binding(*binding)
            .map(|b| (b.role, b.scope.clone())),
        _ => None,
    }
}

/// An admin command: the token must be valid at `at_ms`, and its principal must hold the
/// command's permission at this log index (and, to assign or revoke a role, a role above it
/// whose scope covers it). Allowed or not, the decision goes to the audit trail.
fn as_admin(
    state: &mut State,
    ctx: &Ctx<'_>,
    admin_token: &TokenId,
    at_ms: u64,
    command: &Command,
    node: u64,
    justification: Option<&String>,
) -> Result<CommandOutput, ApplyError> {
    let (tenant, workspace, resource) = command_target(command);
    let mut event = AuditEvent {
        at_ms,
        node,
        principal: format!("admin_token:{}", admin_token.as_str()),
        tenant,
        workspace,
        kind: "admin".into(),
        action: command.kind().into(),
        resource,
        outcome: String::new(),
        latency_ms: None,
        notion_requests: None,
        justification: justification.cloned(),
        severity: Severity::Info,
    };
    let (permission, target) = required_permission(state, command)?;
    let Some(token) = state
        .admin_tokens
        .get(admin_token)
        .filter(|t| t.is_valid_at(at_ms))
        .cloned()
    else {
        event.outcome = "denied".into();
        event.severity = Severity::Warning;
        event.justification = Some("admin token unknown, revoked or expired".into());
        state.audit.append(ctx.log_index, event);
        return Err(ApplyError::Unauthorized(format!(
            "admin token {:?} is unknown, revoked or expired",
            admin_token.as_str()
        )));
    };
    let actor = token
        .subject
        .as_ref()
        .map_or_else(|| ROOT_PRINCIPAL.to_owned(), Subject::to_string);
    event.principal = actor.clone();
    if crate::approvals::decides_itself(command) {
        return crate::approvals::decide(
            state,
            ctx.log_index,
            token.subject.as_ref(),
            &actor,
            at_ms,
            command,
            justification,
            event,
        );
    }
    if let Some(subject) = &token.subject {
        let mut decision = authorize(state, subject, permission, &target, at_ms);
        if decision.allowed
            && let Some((role, scope)) = role_change(state, command)
        {
            let may = state.access.bindings_of(subject).any(|b| {
                b.is_active_at(at_ms) && b.scope.covers(&scope) && b.role.may_assign(role)
            });
            if !may {
                decision.allowed = false;
                decision.reason =
                    format!("{subject} holds no role above {role} whose scope covers {scope}");
            }
        }
        if !decision.allowed {
            event.outcome = "denied".into();
            event.severity = Severity::Warning;
            event.justification = Some(decision.reason.clone());
            state.audit.append(ctx.log_index, event);
            return Err(ApplyError::Forbidden(format!(
                "{permission} on {target} is not granted: {}",
                decision.reason
            )));
        }
    }
    if let Some(held) = crate::approvals::hold(
        state,
        token.subject.as_ref(),
        &actor,
        at_ms,
        command,
        justification,
        &mut event,
    ) {
        state.audit.append(ctx.log_index, event);
        return held;
    }
    let result = apply_cmd(
        state,
        &Ctx {
            log_index: ctx.log_index,
            actor: &actor,
        },
        command,
    );
    event.outcome = match &result {
        Ok(CommandOutput::Done) => "ok".into(),
        Ok(CommandOutput::Unchanged) => "unchanged".into(),
        Ok(CommandOutput::Pending { .. }) => "pending_approval".into(),
        Err(e) => {
            event.severity = Severity::Warning;
            format!("error:{}", error_code(e))
        }
    };
    state.audit.append(ctx.log_index, event);
    result
}

/// The short code of an error, for the audit trail.
pub fn error_code(e: &ApplyError) -> &'static str {
    match e {
        ApplyError::AlreadyExists(_) => "already_exists",
        ApplyError::NotFound(_) => "not_found",
        ApplyError::Conflict(_) => "conflict",
        ApplyError::Invalid(_) => "invalid",
        ApplyError::LimitReached(_) => "limit_reached",
        ApplyError::Unauthorized(_) => "unauthorized",
        ApplyError::Forbidden(_) => "forbidden",
    }
}

#[cfg(test)]
mod reseal_tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::seal::{MasterKey, integration_aad};

    fn tid(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }
    fn iid(s: &str) -> IntegrationId {
        IntegrationId::new(s).unwrap()
    }
    fn token_ref(tenant: &str, integration: &str) -> SecretRef {
        SecretRef::IntegrationToken {
            tenant: tid(tenant),
            integration: iid(integration),
        }
    }

    /// A state with the key check and two integrations sealed under `old`.
    fn setup(old: &MasterKey, rng: &mut ChaCha20Rng) -> State {
        let mut state = State::new();
        apply(
            &mut state,
            &Command::InitCluster {
                cluster_name: "c".into(),
                key_check: old.key_check(rng).unwrap(),
            },
        )
        .unwrap();
        apply(
            &mut state,
            &Command::CreateTenant {
                tenant: tid("acme"),
                display_name: "Acme".into(),
            },
        )
        .unwrap();
        for name in ["main", "docs"] {
            apply(
                &mut state,
                &Command::AddIntegration {
                    tenant: tid("acme"),
                    integration: iid(name),
                    display_name: name.into(),
                    sealed_token: old
                        .seal(
                            format!("ntn_{name}").as_bytes(),
                            &integration_aad("acme", name),
                            rng,
                        )
                        .unwrap(),
                    budget: Budget {
                        requests_per_second: 3,
                        burst: 10,
                    },
                },
            )
            .unwrap();
        }
        state
    }

    fn reseal_of(
        state: &State,
        ring: &MasterKey,
        place: &SecretRef,
        rng: &mut ChaCha20Rng,
    ) -> Reseal {
        let expected = state.sealed_secret(place).unwrap().clone();
        let sealed = match place {
            SecretRef::KeyCheck => ring.reseal_key_check(&expected, rng).unwrap(),
            SecretRef::IntegrationToken {
                tenant,
                integration,
            } => ring
                .reseal(
                    &expected,
                    &integration_aad(tenant.as_str(), integration.as_str()),
                    rng,
                )
                .unwrap(),
            SecretRef::JwtSigningKey { .. } => unreachable!("no JWT keys here"),
        };
        Reseal {
            secret: place.clone(),
            expected,
            sealed,
        }
    }

    #[test]
    fn reseals_every_secret_whose_expected_value_is_current() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let old = MasterKey::generate(&mut rng);
        let new = MasterKey::generate(&mut rng);
        let mut state = setup(&old, &mut rng);
        let ring = new.clone().with_previous([old.clone()]);
        let places: Vec<SecretRef> = state.sealed_secrets().into_iter().map(|(p, _)| p).collect();
        assert_eq!(places.len(), 3);
        assert_eq!(places.last(), Some(&SecretRef::KeyCheck), "key check last");
        let batch: Vec<Reseal> = places
            .iter()
            .map(|p| reseal_of(&state, &ring, p, &mut rng))
            .collect();
        let cmd = Command::ResealSecrets { secrets: batch };
        assert_eq!(apply(&mut state, &cmd), Ok(CommandOutput::Done));
        for (place, sealed) in state.sealed_secrets() {
            assert!(ring.is_current(sealed), "{place}");
        }
        assert!(
            new.verify_key_check(&state.cluster().unwrap().key_check)
                .is_ok()
        );
        let token = state.integration(&tid("acme"), &iid("main")).unwrap();
        assert_eq!(
            new.unseal(&token.sealed_token, &integration_aad("acme", "main"))
                .unwrap()
                .as_slice(),
            b"ntn_main"
        );
        // The same command again replaces nothing: its expected values are gone.
        assert_eq!(apply(&mut state, &cmd), Ok(CommandOutput::Unchanged));
    }

    #[test]
    fn a_stale_expected_value_is_refused_for_that_secret_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let old = MasterKey::generate(&mut rng);
        let new = MasterKey::generate(&mut rng);
        let mut state = setup(&old, &mut rng);
        let ring = new.clone().with_previous([old.clone()]);
        let main = reseal_of(&state, &ring, &token_ref("acme", "main"), &mut rng);
        let docs = reseal_of(&state, &ring, &token_ref("acme", "docs"), &mut rng);
        // The token of `main` is rotated after the reseal was prepared.
        let rotated = ring
            .seal(b"ntn_rotated", &integration_aad("acme", "main"), &mut rng)
            .unwrap();
        apply(
            &mut state,
            &Command::RotateIntegrationToken {
                tenant: tid("acme"),
                integration: iid("main"),
                sealed_token: rotated.clone(),
            },
        )
        .unwrap();
        let out = apply(
            &mut state,
            &Command::ResealSecrets {
                secrets: vec![main, docs.clone()],
            },
        );
        assert_eq!(out, Ok(CommandOutput::Done));
        assert_eq!(
            state.sealed_secret(&token_ref("acme", "main")),
            Some(&rotated),
            "the rotated token is not overwritten"
        );
        assert_eq!(
            state.sealed_secret(&token_ref("acme", "docs")),
            Some(&docs.sealed)
        );
        // A secret that no longer exists is skipped too.
        let mut gone = docs.clone();
        gone.secret = token_ref("acme", "gone");
        assert_eq!(
            apply(
                &mut state,
                &Command::ResealSecrets {
                    secrets: vec![gone]
                }
            ),
            Ok(CommandOutput::Unchanged)
        );
    }

    #[test]
    fn the_batch_is_bounded_and_well_formed() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let old = MasterKey::generate(&mut rng);
        let new = MasterKey::generate(&mut rng);
        let mut state = setup(&old, &mut rng);
        let before = state.clone();
        let ring = new.clone().with_previous([old.clone()]);
        let one = reseal_of(&state, &ring, &token_ref("acme", "main"), &mut rng);

        let empty = Command::ResealSecrets { secrets: vec![] };
        assert!(matches!(
            apply(&mut state, &empty),
            Err(ApplyError::Invalid(_))
        ));
        let too_many = Command::ResealSecrets {
            secrets: (0..=MAX_RESEAL_BATCH)
                .map(|i| {
                    let mut r = one.clone();
                    r.secret = token_ref("acme", &format!("i{i}"));
                    r
                })
                .collect(),
        };
        assert!(matches!(
            apply(&mut state, &too_many),
            Err(ApplyError::Invalid(_))
        ));
        let twice = Command::ResealSecrets {
            secrets: vec![one.clone(), one.clone()],
        };
        assert!(matches!(
            apply(&mut state, &twice),
            Err(ApplyError::Invalid(_))
        ));
        let mut truncated = one.clone();
        truncated.sealed.ciphertext.truncate(4);
        assert!(matches!(
            apply(
                &mut state,
                &Command::ResealSecrets {
                    secrets: vec![truncated]
                }
            ),
            Err(ApplyError::Invalid(_))
        ));
        let mut no_id = one.clone();
        no_id.sealed.key_id = None;
        assert!(matches!(
            apply(
                &mut state,
                &Command::ResealSecrets {
                    secrets: vec![no_id]
                }
            ),
            Err(ApplyError::Invalid(_))
        ));
        assert_eq!(state, before, "a refused batch changes nothing");
        // Exactly the limit is accepted.
        let at_limit = Command::ResealSecrets {
            secrets: (0..MAX_RESEAL_BATCH)
                .map(|i| {
                    let mut r = one.clone();
                    if i > 0 {
                        r.secret = token_ref("acme", &format!("i{i}"));
                    }
                    r
                })
                .collect(),
        };
        assert_eq!(apply(&mut state, &at_limit), Ok(CommandOutput::Done));
    }

    #[test]
    fn an_admin_needs_security_policy_to_reseal() {
        let state = State::new();
        let cmd = Command::ResealSecrets { secrets: vec![] };
        assert_eq!(
            required_permission(&state, &cmd),
            Ok((Permission::SecurityPolicy, RoleScope::Global))
        );
    }
}
