//! Commands that change the replicated state, and the pure, deterministic [`apply`].
//!
//! `apply` reads no clock and no randomness: timestamps and sealed secrets are inside the
//! command, stamped by the proposer. A command it rejects leaves the state exactly as it was
//! and yields an [`ApplyError`]; that rejection is the command's result in the log, not a Raft
//! failure.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{IntegrationId, PrincipalId, TenantId, TokenId, WorkspaceId, validate_id};
use crate::seal::{MAX_PLAINTEXT_BYTES, SealedSecret};
use crate::state::{
    AdminToken, ApiToken, BUDGET_MAX_BURST, BUDGET_MAX_RPS, Budget, ClusterInfo, Integration,
    Principal, State, Tenant, TenantState, Workspace,
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
            Command::Once { command, .. } => command.kind(),
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

/// Applies `cmd` to `state`. Pure and deterministic: the same state and command always give
/// the same result. On `Err` the state is unchanged (every check runs before any mutation).
pub fn apply(state: &mut State, cmd: &Command) -> Result<CommandOutput, ApplyError> {
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
        } => {
            check_secret_hash("admin token", secret_hash)?;
            check_display_name("admin token", display_name)?;
            check_expiry("admin token", *issued_at_ms, *expires_at_ms)?;
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
        } => {
            if matches!(
                **command,
                Command::AsAdmin { .. } | Command::InitCluster { .. }
            ) {
                return Err(ApplyError::Invalid(format!(
                    "{} cannot be made as an admin command",
                    command.kind()
                )));
            }
            let valid = state
                .admin_tokens
                .get(admin_token)
                .is_some_and(|t| t.is_valid_at(*at_ms));
            if !valid {
                return Err(ApplyError::Unauthorized(format!(
                    "admin token {:?} is unknown, revoked or expired",
                    admin_token.as_str()
                )));
            }
            apply(state, command)
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
            let result = apply(state, command);
            state.requests.record(request_id, &result);
            result
        }
    }
}
