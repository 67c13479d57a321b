//! The running node's shared state: configuration, the control plane (Raft), the data plane
//! (actors), the master key, and the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use quire_actors::call::{Budget, IntegrationSpec};
use quire_actors::notion::NotionToken;
use quire_actors::supervisor::DataPlane;
use quire_raft::command::{Command, CommandOutput};
use quire_raft::control::{ControlPlane, ReadError, WriteError};
use quire_raft::ids::{TenantId, WorkspaceId};
use quire_raft::seal::{MasterKey, integration_aad};
use quire_raft::state::State;

use crate::audit_log::AuditLog;
use crate::auth::Caller;
use crate::clock::SharedClock;
use crate::cluster::Router;
use crate::config::Config;
use crate::freshness::Freshness;
use crate::jwt::{JwtError, JwtSettings};
use crate::metrics::NodeMetrics;
use crate::oidc::{OidcCache, OidcSettings};

pub struct App {
    pub config: Config,
    pub control: Arc<ControlPlane>,
    /// Writes and linearizable reads from any node (forwarded to the leader).
    pub router: Router,
    pub data: DataPlane,
    pub master_key: MasterKey,
    pub clock: SharedClock,
    /// Cancelled when the node shuts down; MCP sessions end with it.
    pub shutdown: CancellationToken,
    /// The group-commit audit batcher.
    pub audit: AuditLog,
    /// How current the access rules are (the revocation bound).
    pub freshness: Arc<Freshness>,
    /// What a JWT must say to be accepted (issuer, audiences, leeway).
    pub jwt: JwtSettings,
    /// Tenants' OpenID Connect providers' keys.
    pub oidc: OidcCache,
    /// This node's counters for `/metrics`.
    pub metrics: Arc<NodeMetrics>,
    /// Sending each Notion request from its shard's owner: hold-offs, bounds, counters.
    pub forward: Arc<crate::forward::Forward>,
    ready: AtomicBool,
}

impl App {
    pub fn new(
        config: Config,
        router: Router,
        data: DataPlane,
        master_key: MasterKey,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Self {
        let audit = AuditLog::start(
            router.clone(),
            config.limits.audit_queue_capacity,
            config.limits.audit_max_batch,
            shutdown.clone(),
        );
        let freshness = Freshness::start(
            router.clone(),
            std::time::Duration::from_millis(config.security.authz_max_staleness_ms),
            shutdown.clone(),
        );
        let jwt = JwtSettings::from_config(&config);
        let oidc = OidcCache::new(
            OidcSettings::from_config(&config),
            config.security.oidc_ca_file.as_deref(),
            clock.clone(),
        );
        Self {
            metrics: Arc::new(NodeMetrics::default()),
            forward: Arc::new(crate::forward::Forward::default()),
            audit,
            freshness,
            jwt,
            oidc,
            config,
            control: router.control.clone(),
            router,
            data,
            master_key,
            clock,
            shutdown,
            ready: AtomicBool::new(false),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Proposes a command to the control plane and waits until it is committed and applied.
    /// Any node accepts writes: one that is not the leader forwards the command to it.
    ///
    /// A revocation (of a token, a role, a tenant, or a new restriction) returns only after
    /// the revocation bound has passed since it committed, so that once it is acknowledged
    /// no node authorizes a request that relied on what it revoked (see `freshness`).
    pub async fn write(&self, cmd: Command) -> Result<CommandOutput, WriteError> {
        let revokes = is_revocation(&cmd);
        let out = self.router.write(cmd).await?;
        if revokes {
            tokio::time::sleep(self.freshness.max_staleness()).await;
        }
        Ok(out)
    }

    /// A linearizable read of the control state: it sees every write acknowledged before it
    /// started, on whichever node it runs.
    pub async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, ReadError> {
        self.router.read(f).await
    }

    /// Resolves a bearer secret to its caller, against the applied control state: an opaque
    /// `qk_` token by its hash, a JWT (three dot-separated parts) by its issuer — the built-in
    /// one or a tenant's OpenID Connect provider. Every kind yields the same [`Caller`].
    pub async fn authenticate(&self, secret: &str) -> Option<Caller> {
        match self.authenticate_detailed(secret).await {
            Ok(caller) => Some(caller),
            Err(e) => {
                tracing::debug!("bearer token refused: {e}");
                None
            }
        }
    }

    /// [`App::authenticate`], saying why a token is refused.
    pub async fn authenticate_detailed(&self, secret: &str) -> Result<Caller, JwtError> {
        if !crate::jwt::looks_like_jwt(secret) {
            return self
                .authenticate_opaque(secret)
                .ok_or_else(|| JwtError::Claims("unknown, revoked or expired token".into()));
        }
        let claims = crate::jwt::peek_claims(secret)?;
        let issuer = crate::jwt::claimed_issuer(&claims)
            .ok_or_else(|| JwtError::Claims("the token has no iss claim".into()))?;
        if issuer == self.jwt.issuer {
            let now_ms = self.clock.now_ms();
            return self.control.read_applied(|state| {
                crate::jwt::validate_builtin(state, &self.jwt, secret, now_ms)
            });
        }
        let provider = self
            .control
            .read_applied(|state| crate::oidc::provider_for(state, issuer, &claims))
            .ok_or(JwtError::UnknownIssuer)?;
        let verified =
            crate::oidc::validate(&self.oidc, &provider, secret, self.clock.now_ms()).await?;
        // Mapped against the state as it is now (the provider may have changed meanwhile).
        self.control
            .read_applied(|state| match state.jwt().oidc_provider(&provider.tenant) {
                Some(current) if current == &provider => {
                    crate::oidc::caller_of(state, current, &verified)
                }
                _ => Err(JwtError::UnknownIssuer),
            })
    }

    fn authenticate_opaque(&self, secret: &str) -> Option<Caller> {
        let hash = quire_raft::hash_api_token(secret);
        let now_ms = self.clock.now_ms();
        self.control.read_applied(|state| {
            let token = state.token_by_hash(&hash)?;
            if !token.is_valid_at(now_ms) {
                return None;
            }
            let principal = state.principal(&token.tenant, &token.principal)?;
            if !principal.workspaces.contains(&token.workspace_id) {
                return None;
            }
            Some(Caller {
                tenant_id: token.tenant.as_str().to_owned(),
                principal_id: token.principal.as_str().to_owned(),
                workspace_id: token.workspace_id.as_str().to_owned(),
                token_id: token.token_id.as_str().to_owned(),
                scopes: token.scopes.clone(),
                extra_roles: Vec::new(),
            })
        })
    }

    /// The Notion integration behind the caller's workspace, its token unsealed.
    pub fn integration_for(&self, caller: &Caller) -> Result<IntegrationSpec, String> {
        self.integration_spec(&caller.tenant_id, &caller.workspace_id)
    }

    /// The Notion integration of workspace `workspace_id` of tenant `tenant_id`, its token
    /// unsealed, from this node's applied state.
    pub fn integration_spec(
        &self,
        tenant_id: &str,
        workspace_id: &str,
    ) -> Result<IntegrationSpec, String> {
        let (Ok(tenant), Ok(workspace)) =
            (TenantId::new(tenant_id), WorkspaceId::new(workspace_id))
        else {
            return Err("the caller's tenant or workspace id is not valid".to_owned());
        };
        let found = self.control.read_applied(|state| {
            let workspace = state.workspace(&tenant, &workspace)?;
            let integration = state.integration(&tenant, &workspace.integration_id)?;
            Some((
                integration.id.as_str().to_owned(),
                integration.sealed_token.clone(),
                integration.budget,
            ))
        });
        let Some((integration_id, sealed, budget)) = found else {
            return Err(format!(
                "workspace {}/{} has no Notion integration (it may have been removed)",
                tenant_id, workspace_id
            ));
        };
        let token = self
            .master_key
            .unseal_string(&sealed, &integration_aad(tenant_id, &integration_id))
            .map_err(|e| format!("the integration's Notion token cannot be unsealed: {e}"))?;
        Ok(IntegrationSpec {
            id: format!("{}/{}", tenant_id, integration_id),
            token: NotionToken::new(token.as_str()),
            budget: Budget {
                requests_per_second: budget.requests_per_second,
                burst: budget.burst,
            },
        })
    }
}

/// Whether `cmd` takes away a right (so its acknowledgement waits for the revocation bound).
pub fn is_revocation(cmd: &Command) -> bool {
    match cmd {
        Command::Once { command, .. } | Command::AsAdmin { command, .. } => is_revocation(command),
        Command::RevokeToken { .. }
        | Command::RevokeAdminToken { .. }
        | Command::RevokeRole { .. }
        | Command::AddRestriction { .. }
        | Command::DeleteTenant { .. }
        | Command::RevokeJwt { .. }
        | Command::RetireJwtKey { .. }
        | Command::SetOidcProvider { .. }
        | Command::RemoveOidcProvider { .. } => true,
        // Ending a delegation; and approving or breaking the glass on a request, which may
        // execute a held revocation (a tenant deletion, a global restriction).
        Command::RevokeDelegation { .. }
        | Command::ApproveRequest { .. }
        | Command::BreakGlass { .. } => true,
        _ => false,
    }
}
