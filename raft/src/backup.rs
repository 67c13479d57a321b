//! Backups of the whole control plane and exports of one tenant, as checksummed envelopes,
//! and the two commands that bring them back: `RestoreState` (a restored cluster's state,
//! applied once on a fresh cluster) and `ImportTenant` (one tenant's slice, its audit chain
//! verified inside `apply`).
//!
//! An envelope is two lines: a JSON [`EnvelopeHeader`] (format name and version, cluster name,
//! log index, creation time, the master-key check, the body's SHA-256 and length), then the
//! body's JSON bytes. The checksum covers the body's exact bytes, so a changed byte anywhere
//! in the body, or a header that no longer matches it, is refused before anything is decoded.
//! Secrets stay as the state holds them: Notion tokens and JWT private keys sealed under the
//! master key, API and admin tokens as SHA-256 hashes. A backup read without the master key
//! reveals none of them; restoring or importing one needs the key its check was sealed with.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{AuditChain, AuditEvent, GENESIS_HASH, Severity, verify_chain};
use crate::command::{ApplyError, CommandOutput, MAX_TENANTS};
use crate::ids::{TenantId, WorkspaceId};
use crate::jwt_keys::{OidcProvider, RevokedJti, revocation_key};
use crate::rbac::{Restriction, RoleBinding};
use crate::seal::SealedSecret;
use crate::state::{AdminToken, ApiToken, State, TenantState};
use crate::templates::WorkflowTemplate;

/// Format name of a whole-cluster backup.
pub const BACKUP_FORMAT: &str = "quire-backup";
/// Format name of one tenant's export.
pub const TENANT_EXPORT_FORMAT: &str = "quire-tenant-export";
/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;
/// Longest header line read, in bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why an envelope cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Not an envelope of the expected kind.
    #[error("not a {expected} file: {reason}")]
    NotEnvelope {
        /// The format expected.
        expected: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Written by a newer Quire.
    #[error("{format} version {found} is newer than version {supported} that this quire reads")]
    NewerVersion {
        /// The format.
        format: String,
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The body does not match the header's checksum or length.
    #[error(
        "checksum mismatch: the file is damaged or was changed (header says sha256 {expected} over {expected_bytes} bytes, the body has sha256 {found} over {found_bytes} bytes)"
    )]
    Checksum {
        /// SHA-256 in the header.
        expected: String,
        /// Length in the header.
        expected_bytes: u64,
        /// SHA-256 of the body.
        found: String,
        /// Length of the body.
        found_bytes: u64,
    },
    /// The body passed its checksum but does not decode.
    #[error("the body does not decode: {0}")]
    Body(String),
    /// The state has no cluster facts (it was never initialised).
    #[error("the state holds no cluster (InitCluster was never applied)")]
    Uninitialised,
    /// The tenant does not exist.
    #[error("tenant {0:?} not found")]
    NoTenant(String),
}

/// The first line of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// [`BACKUP_FORMAT`] or [`TENANT_EXPORT_FORMAT`].
    pub format: String,
    /// [`ENVELOPE_VERSION`] when written.
    pub version: u32,
    /// The cluster it was taken from.
    pub cluster_name: String,
    /// The applied log index the body was read at.
    pub log_index: u64,
    /// When it was taken (ms since the Unix epoch, the taker's clock).
    pub created_at_ms: u64,
    /// The tenant, for a tenant export.
    #[serde(default)]
    pub tenant: Option<TenantId>,
    /// The cluster's master-key check: a restore or import opens it with its own key to tell
    /// the secrets inside will open.
    pub key_check: SealedSecret,
    /// Lowercase hex SHA-256 of the body's bytes.
    pub body_sha256: String,
    /// Length of the body in bytes.
    pub body_bytes: u64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn seal_envelope(mut header: EnvelopeHeader, body: &[u8]) -> Result<Vec<u8>, BackupError> {
    header.body_sha256 = sha256_hex(body);
    header.body_bytes = body.len() as u64;
    let head = serde_json::to_vec(&header).map_err(|e| BackupError::Body(e.to_string()))?;
    let mut out = Vec::with_capacity(head.len() + body.len() + 2);
    out.extend_from_slice(&head);
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(b'\n');
    Ok(out)
}

/// Splits an envelope of `format` into its header and body, checking the version, length and
/// checksum before anything in the body is decoded.
pub fn open_envelope<'a>(
    bytes: &'a [u8],
    format: &'static str,
) -> Result<(EnvelopeHeader, &'a [u8]), BackupError> {
    let not = |reason: &str| BackupError::NotEnvelope {
        expected: format,
        reason: reason.to_owned(),
    };
    let newline = bytes
        .iter()
        .take(MAX_HEADER_BYTES)
        .position(|b| *b == b'\n')
        .ok_or_else(|| not("no header line"))?;
    let header: EnvelopeHeader = serde_json::from_slice(&bytes[..newline])
        .map_err(|e| not(&format!("the header line does not decode: {e}")))?;
    if header.format != format {
        return Err(not(&format!("its format is {:?}", header.format)));
    }
    if header.version > ENVELOPE_VERSION {
        return Err(BackupError::NewerVersion {
            format: header.format,
            found: header.version,
            supported: ENVELOPE_VERSION,
        });
    }
    let rest = &bytes[newline + 1..];
    let body = rest.strip_suffix(b"\n").unwrap_or(rest);
    let found = sha256_hex(body);
    if found != header.body_sha256 || body.len() as u64 != header.body_bytes {
        return Err(BackupError::Checksum {
            expected: header.body_sha256,
            expected_bytes: header.body_bytes,
            found,
            found_bytes: body.len() as u64,
        });
    }
    Ok((header, body))
}

/// A backup of the whole `state`, read at applied log index `log_index`.
pub fn write_backup(
    state: &State,
    log_index: u64,
    created_at_ms: u64,
) -> Result<(EnvelopeHeader, Vec<u8>), BackupError> {
    let cluster = state.cluster().ok_or(BackupError::Uninitialised)?;
    let body = serde_json::to_vec(state).map_err(|e| BackupError::Body(e.to_string()))?;
    let header = EnvelopeHeader {
        format: BACKUP_FORMAT.to_owned(),
        version: ENVELOPE_VERSION,
        cluster_name: cluster.cluster_name.clone(),
        log_index,
        created_at_ms,
        tenant: None,
        key_check: cluster.key_check.clone(),
        body_sha256: String::new(),
        body_bytes: 0,
    };
    let bytes = seal_envelope(header, &body)?;
    let (header, _) = open_envelope(&bytes, BACKUP_FORMAT)?;
    Ok((header, bytes))
}

/// Reads a backup: checksum first, then the state.
pub fn read_backup(bytes: &[u8]) -> Result<(EnvelopeHeader, State), BackupError> {
    let (header, body) = open_envelope(bytes, BACKUP_FORMAT)?;
    let state: State =
        serde_json::from_slice(body).map_err(|e| BackupError::Body(e.to_string()))?;
    if state.cluster().is_none() {
        return Err(BackupError::Uninitialised);
    }
    Ok((header, state))
}

/// Everything one tenant owns, as an export carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSlice {
    /// The tenant, its workspaces, integrations (tokens sealed) and principals.
    pub tenant: TenantState,
    /// Its API tokens (hashes only), revoked ones included.
    pub tokens: Vec<ApiToken>,
    /// Admin tokens acting as its principals (hashes only).
    pub admin_tokens: Vec<AdminToken>,
    /// Role bindings its principals hold (all inside the tenant).
    pub bindings: Vec<RoleBinding>,
    /// Restrictions on its principals.
    pub restrictions: Vec<Restriction>,
    /// Workflow templates, by workspace and name.
    pub templates: BTreeMap<WorkspaceId, BTreeMap<String, WorkflowTemplate>>,
    /// Its OpenID Connect provider.
    pub oidc: Option<OidcProvider>,
    /// Revoked JWT ids of its tokens still unexpired.
    pub revoked_jtis: Vec<RevokedJti>,
    /// Its audit chain: retained records and the retention anchor.
    pub audit: AuditChain,
    /// Its residency policy (exports written before residency existed carry none: any region).
    #[serde(default)]
    pub residency: Option<crate::placement::Residency>,
}

/// The slice of `state` that tenant `tenant` owns.
pub fn tenant_slice(state: &State, tenant: &TenantId) -> Option<TenantSlice> {
    let owned = state.tenants.get(tenant)?.clone();
    let mine = |s: &crate::rbac::Subject| s.tenant.as_ref() == Some(tenant);
    Some(TenantSlice {
        tenant: owned,
        tokens: state.tokens(tenant).cloned().collect(),
        admin_tokens: state
            .admin_tokens
            .values()
            .filter(|t| t.subject.as_ref().is_some_and(mine))
            .cloned()
            .collect(),
        bindings: state
            .access
            .bindings
            .iter()
            .filter(|(s, _)| mine(s))
            .flat_map(|(_, held)| held.values().cloned())
            .collect(),
        restrictions: state
            .access
            .restrictions
            .iter()
            .filter(|(s, _)| mine(s))
            .flat_map(|(_, held)| held.values().cloned())
            .collect(),
        templates: state
            .templates
            .by_workspace
            .get(tenant)
            .cloned()
            .unwrap_or_default(),
        oidc: state.jwt.oidc.get(tenant).cloned(),
        revoked_jtis: state
            .jwt
            .revoked
            .values()
            .filter(|r| &r.tenant == tenant)
            .cloned()
            .collect(),
        audit: state
            .audit
            .chain(tenant.as_str())
            .cloned()
            .unwrap_or_default(),
        residency: state.placement.residency.get(tenant).cloned(),
    })
}

/// An export of tenant `tenant` from `state`, read at applied log index `log_index`.
pub fn write_tenant_export(
    state: &State,
    tenant: &TenantId,
    log_index: u64,
    created_at_ms: u64,
) -> Result<(EnvelopeHeader, Vec<u8>), BackupError> {
    let cluster = state.cluster().ok_or(BackupError::Uninitialised)?;
    let slice = tenant_slice(state, tenant)
        .ok_or_else(|| BackupError::NoTenant(tenant.as_str().to_owned()))?;
    let body = serde_json::to_vec(&slice).map_err(|e| BackupError::Body(e.to_string()))?;
    let header = EnvelopeHeader {
        format: TENANT_EXPORT_FORMAT.to_owned(),
        version: ENVELOPE_VERSION,
        cluster_name: cluster.cluster_name.clone(),
        log_index,
        created_at_ms,
        tenant: Some(tenant.clone()),
        key_check: cluster.key_check.clone(),
        body_sha256: String::new(),
        body_bytes: 0,
    };
    let bytes = seal_envelope(header, &body)?;
    let (header, _) = open_envelope(&bytes, TENANT_EXPORT_FORMAT)?;
    Ok((header, bytes))
}

/// Reads a tenant export: checksum first, then the slice.
pub fn read_tenant_export(bytes: &[u8]) -> Result<(EnvelopeHeader, TenantSlice), BackupError> {
    let (header, body) = open_envelope(bytes, TENANT_EXPORT_FORMAT)?;
    let slice: TenantSlice =
        serde_json::from_slice(body).map_err(|e| BackupError::Body(e.to_string()))?;
    if header.tenant.as_ref() != Some(&slice.tenant.tenant.id) {
        return Err(BackupError::Body(
            "the header names another tenant than the body".into(),
        ));
    }
    Ok((header, slice))
}

/// Serde of a value as a JSON string inside a command: the state and a tenant slice hold maps
/// keyed by numbers, which an internally tagged enum (as `Command` is) cannot read back from
/// its buffered form; as text they round-trip exactly.
pub(crate) mod as_json_text {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(value).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}

// ---- apply ----

/// `RestoreState`: replaces a fresh cluster's state with a backup's. Only a cluster that was
/// just initialised (no tenants, tokens, admin tokens or global principals) accepts it; the
/// cluster keeps its own name and key check (the restoring node checked that the backup's key
/// check opens with the same master key).
pub(crate) fn restore(state: &mut State, restored: &State) -> Result<CommandOutput, ApplyError> {
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApplyError::Conflict(
            "the cluster is not initialised; a restore follows InitCluster".into(),
        ));
    };
    if !state.tenants.is_empty()
        || !state.tokens.is_empty()
        || !state.admin_tokens.is_empty()
        || !state.global_principals.is_empty()
    {
        return Err(ApplyError::Conflict(
            "a state is restored only into a new, empty cluster".into(),
        ));
    }
    if restored.cluster.is_none() {
        return Err(ApplyError::Invalid(
            "the restored state holds no cluster".into(),
        ));
    }
    let mut next = restored.clone();
    next.cluster = Some(cluster);
    // The nodes are this cluster's: their labels stay; residency and the shard map (with its
    // epochs, which only ever grow) come from the backup.
    next.placement.nodes = std::mem::take(&mut state.placement.nodes);
    *state = next;
    Ok(CommandOutput::Done)
}

fn invalid(text: String) -> ApplyError {
    ApplyError::Invalid(format!("tenant import: {text}"))
}

/// `ImportTenant`: adds a tenant from another cluster's export. Refuses a tenant id that
/// exists (or whose audit chain remains from a deleted tenant), anything in the slice that
/// belongs to another tenant or collides with what the cluster holds, and an audit chain that
/// does not verify from its anchor. Keeps the chain's records and hashes as they were and
/// audits the import as its next record. Role binding and restriction ids are renumbered in
/// this cluster.
pub(crate) fn import(
    state: &mut State,
    log_index: u64,
    actor: &str,
    slice: &TenantSlice,
    at_ms: u64,
    node: u64,
) -> Result<CommandOutput, ApplyError> {
    let t = &slice.tenant;
    let id = &t.tenant.id;
    crate::command::check_display_name("tenant", &t.tenant.display_name)?;
    if state.tenants.contains_key(id) {
        return Err(ApplyError::AlreadyExists(format!(
            "tenant {:?}",
            id.as_str()
        )));
    }
    if state
        .audit
        .chain(id.as_str())
        .is_some_and(|c| c.head_seq() > 0)
    {
        return Err(ApplyError::Conflict(format!(
            "an audit chain named {:?} remains from a deleted tenant; import under another cluster",
            id.as_str()
        )));
    }
    if state.tenants.len() >= MAX_TENANTS {
        return Err(ApplyError::LimitReached(format!(
            "the cluster already has {MAX_TENANTS} tenants"
        )));
    }
    // Everything in the slice belongs to the tenant.
    let ws_ok = t
        .workspaces
        .iter()
        .all(|(k, w)| &w.tenant == id && &w.id == k);
    let int_ok = t
        .integrations
        .iter()
        .all(|(k, i)| &i.tenant == id && &i.id == k);
    let pr_ok = t
        .principals
        .iter()
        .all(|(k, p)| &p.tenant == id && &p.id == k);
    if !(ws_ok && int_ok && pr_ok) {
        return Err(invalid(
            "a workspace, integration or principal names another tenant or id".into(),
        ));
    }
    for w in t.workspaces.values() {
        if !t.integrations.contains_key(&w.integration_id) {
            return Err(invalid(format!(
                "workspace {:?} uses a missing integration",
                w.id.as_str()
            )));
        }
    }
    let principal_ok = |s: &crate::rbac::Subject| {
        s.tenant.as_ref() == Some(id) && t.principals.contains_key(&s.principal)
    };
    let scope_ok = |scope: &crate::rbac::RoleScope| match scope {
        crate::rbac::RoleScope::Global => false,
        crate::rbac::RoleScope::Tenant { tenant } => tenant == id,
        crate::rbac::RoleScope::Workspace { tenant, workspace } => {
            tenant == id && t.workspaces.contains_key(workspace)
        }
    };
    let mut hashes = BTreeSet::new();
    for tok in &slice.tokens {
        if &tok.tenant != id || !t.principals.contains_key(&tok.principal) {
            return Err(invalid(format!(
                "token {:?} belongs elsewhere",
                tok.token_id.as_str()
            )));
        }
        if state.tokens.contains_key(&tok.token_id) {
            return Err(ApplyError::AlreadyExists(format!(
                "token {:?}",
                tok.token_id.as_str()
            )));
        }
        hashes.insert(tok.hash.clone());
    }
    for tok in &slice.admin_tokens {
        if !tok.subject.as_ref().is_some_and(principal_ok) {
            return Err(invalid(format!(
                "admin token {:?} acts for no principal of the tenant",
                tok.token_id.as_str()
            )));
        }
        if state.admin_tokens.contains_key(&tok.token_id) {
            return Err(ApplyError::AlreadyExists(format!(
                "admin token {:?}",
                tok.token_id.as_str()
            )));
        }
        hashes.insert(tok.hash.clone());
    }
    if hashes.len() != slice.tokens.len() + slice.admin_tokens.len()
        || hashes
            .iter()
            .any(|h| state.token_index.contains_key(h) || state.admin_token_index.contains_key(h))
    {
        return Err(ApplyError::AlreadyExists(
            "a token with the same secret hash".into(),
        ));
    }
    for b in &slice.bindings {
        if !principal_ok(&b.subject) || !scope_ok(&b.scope) {
            return Err(invalid(format!(
                "role binding #{} is not inside the tenant",
                b.id
            )));
        }
    }
    for r in &slice.restrictions {
        if !principal_ok(&r.subject) || !scope_ok(&r.scope) {
            return Err(invalid(format!(
                "restriction #{} is not inside the tenant",
                r.id
            )));
        }
    }
    for (ws, templates) in &slice.templates {
        if !t.workspaces.contains_key(ws) || templates.iter().any(|(name, tpl)| &tpl.name != name) {
            return Err(invalid(format!(
                "templates of workspace {:?} do not belong to it",
                ws.as_str()
            )));
        }
    }
    if let Some(provider) = &slice.oidc {
        if &provider.tenant != id {
            return Err(invalid(
                "the OpenID Connect provider names another tenant".into(),
            ));
        }
        provider.check()?;
        if let Some(other) = state.jwt.oidc.values().find(|o| {
            o.issuer == provider.issuer
                && (o.tenant_claim.is_none() || provider.tenant_claim.is_none())
        }) {
            return Err(ApplyError::Conflict(format!(
                "issuer {:?} already serves tenant {:?}",
                provider.issuer,
                other.tenant.as_str()
            )));
        }
    }
    if slice.revoked_jtis.iter().any(|r| &r.tenant != id) {
        return Err(invalid("a revoked JWT id belongs to another tenant".into()));
    }
    let chain = &slice.audit;
    if chain.records.iter().any(|r| r.chain != id.as_str()) {
        return Err(invalid("an audit record belongs to another chain".into()));
    }
    let anchor_hash = if chain.anchor_hash.is_empty() {
        GENESIS_HASH
    } else {
        chain.anchor_hash.as_str()
    };
    verify_chain(&chain.records, Some((chain.anchor_seq, anchor_hash)))
        .map_err(|e| invalid(format!("the audit chain does not verify: {e}")))?;

    if let Some(r) = &slice.residency {
        r.check()
            .map_err(|e| invalid(format!("the residency policy: {e}")))?;
    }

    // All checks passed: install.
    state.tenants.insert(id.clone(), t.clone());
    for tok in &slice.tokens {
        state
            .token_index
            .insert(tok.hash.clone(), tok.token_id.clone());
        state.tokens.insert(tok.token_id.clone(), tok.clone());
    }
    for tok in &slice.admin_tokens {
        state
            .admin_token_index
            .insert(tok.hash.clone(), tok.token_id.clone());
        state.admin_tokens.insert(tok.token_id.clone(), tok.clone());
    }
    for b in &slice.bindings {
        let mut b = b.clone();
        b.id = state.access.take_id();
        state
            .access
            .bindings
            .entry(b.subject.clone())
            .or_default()
            .insert(b.id, b);
    }
    for r in &slice.restrictions {
        let mut r = r.clone();
        r.id = state.access.take_id();
        state
            .access
            .restrictions
            .entry(r.subject.clone())
            .or_default()
            .insert(r.id, r);
    }
    if !slice.templates.is_empty() {
        state
            .templates
            .by_workspace
            .insert(id.clone(), slice.templates.clone());
    }
    if let Some(provider) = &slice.oidc {
        state.jwt.oidc.insert(id.clone(), provider.clone());
    }
    if let Some(r) = slice
        .residency
        .as_ref()
        .filter(|r| !r.allowed_regions.is_empty() || r.preferred_region.is_some())
    {
        state.placement.residency.insert(id.clone(), r.clone());
    }
    for r in &slice.revoked_jtis {
        state
            .jwt
            .revoked
            .insert(revocation_key(id, &r.jti), r.clone());
    }
    state
        .audit
        .chains
        .insert(id.as_str().to_owned(), chain.clone());
    state.audit.append(
        log_index,
        AuditEvent {
            at_ms,
            node,
            principal: actor.to_owned(),
            tenant: Some(id.clone()),
            workspace: None,
            kind: "admin".into(),
            action: "import_tenant".into(),
            resource: Some(format!("tenant:{}", id.as_str())),
            outcome: "ok".into(),
            latency_ms: None,
            notion_requests: None,
            justification: None,
            severity: Severity::Info,
        },
    );
    Ok(CommandOutput::Done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::command::{Command, apply_at};
    use crate::ids::{IntegrationId, PrincipalId, TokenId};
    use crate::seal::{MasterKey, hash_api_token, integration_aad};
    use crate::state::Budget;

    const NOTION_TOKEN: &str = "secret_plaintext_notion_token_0123456789";

    fn key() -> MasterKey {
        MasterKey::generate(&mut ChaCha20Rng::seed_from_u64(7))
    }

    fn run(state: &mut State, index: &mut u64, cmd: Command) {
        *index += 1;
        apply_at(state, *index, &cmd).unwrap_or_else(|e| panic!("{}: {e}", cmd.kind()));
    }

    /// A cluster named `name` with tenant `acme`: a workspace, a sealed Notion token, a
    /// principal with a token, and three tool-call audit records.
    fn cluster(name: &str, with_tenant: bool) -> State {
        let key = key();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let mut s = State::new();
        let mut n = 0;
        run(
            &mut s,
            &mut n,
            Command::InitCluster {
                cluster_name: name.into(),
                key_check: key.key_check(&mut rng).unwrap(),
            },
        );
        if !with_tenant {
            return s;
        }
        let acme = TenantId::new("acme").unwrap();
        let notion = IntegrationId::new("notion").unwrap();
        let docs = WorkspaceId::new("docs").unwrap();
        let alice = PrincipalId::new("alice").unwrap();
        for cmd in [
            Command::CreateTenant {
                tenant: acme.clone(),
                display_name: "Acme".into(),
            },
            Command::AddIntegration {
                tenant: acme.clone(),
                integration: notion.clone(),
                display_name: "Notion".into(),
                sealed_token: key
                    .seal(
                        NOTION_TOKEN.as_bytes(),
                        &integration_aad("acme", "notion"),
                        &mut rng,
                    )
                    .unwrap(),
                budget: Budget {
                    requests_per_second: 3,
                    burst: 5,
                },
            },
            Command::CreateWorkspace {
                tenant: acme.clone(),
                workspace: docs.clone(),
                display_name: "Docs".into(),
                integration: notion,
            },
            Command::CreatePrincipal {
                tenant: acme.clone(),
                principal: alice.clone(),
                display_name: "Alice".into(),
            },
            Command::GrantWorkspace {
                tenant: acme.clone(),
                principal: alice.clone(),
                workspace: docs.clone(),
            },
            Command::IssueToken {
                tenant: acme.clone(),
                principal: alice,
                workspace: docs,
                token_id: TokenId::new("tok-1").unwrap(),
                secret_hash: hash_api_token("qk_alice"),
                scopes: ["mcp_server_access".to_owned()].into(),
                issued_at_ms: 1,
                expires_at_ms: None,
            },
        ] {
            run(&mut s, &mut n, cmd);
        }
        let events = (1..=3)
            .map(|k| AuditEvent {
                at_ms: 100 + k,
                node: 1,
                principal: "acme/alice".into(),
                tenant: Some(acme.clone()),
                workspace: Some("docs".into()),
                kind: "tool".into(),
                action: "notion-search".into(),
                resource: None,
                outcome: "ok".into(),
                latency_ms: Some(5),
                notion_requests: None,
                justification: None,
                severity: Severity::Info,
            })
            .collect();
        run(&mut s, &mut n, Command::AppendAudit { events });
        s
    }

    #[test]
    fn a_backup_round_trips_reveals_no_token_and_refuses_a_changed_byte() {
        let state = cluster("east", true);
        let (header, bytes) = write_backup(&state, 42, 1_000).unwrap();
        assert_eq!(header.log_index, 42);
        assert_eq!(header.cluster_name, "east");
        let (read, restored) = read_backup(&bytes).unwrap();
        assert_eq!(read, header);
        assert_eq!(restored, state);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(NOTION_TOKEN),
            "the backup holds the token in clear"
        );
        assert!(!text.contains("qk_alice"));
        key().verify_key_check(&header.key_check).unwrap();
        let other = MasterKey::generate(&mut ChaCha20Rng::seed_from_u64(8));
        assert!(other.verify_key_check(&header.key_check).is_err());

        // One byte changed in the body.
        let mut damaged = bytes.clone();
        let at = damaged.len() - 20;
        damaged[at] ^= 0x01;
        assert!(matches!(
            read_backup(&damaged),
            Err(BackupError::Checksum { .. })
        ));
        // A truncated file.
        assert!(read_backup(&bytes[..bytes.len() - 30]).is_err());
        // An export is not a backup.
        let (_, export) =
            write_tenant_export(&state, &TenantId::new("acme").unwrap(), 42, 1).unwrap();
        assert!(matches!(
            read_backup(&export),
            Err(BackupError::NotEnvelope { .. })
        ));
    }

    #[test]
    fn restore_and_import_commands_round_trip_through_the_log_encoding() {
        let source = cluster("east", true);
        let acme = TenantId::new("acme").unwrap();
        for cmd in [
            Command::RestoreState {
                state: Box::new(source.clone()),
            },
            import_cmd(tenant_slice(&source, &acme).unwrap()),
        ] {
            let wrapped = Command::Once {
                request_id: "r-1".into(),
                command: Box::new(cmd),
            };
            let text = serde_json::to_string(&wrapped).unwrap();
            let back: Command = serde_json::from_str(&text).unwrap();
            assert_eq!(back, wrapped);
        }
    }

    #[test]
    fn restore_replaces_only_a_fresh_clusters_state() {
        let source = cluster("east", true);
        let mut fresh = cluster("west", false);
        let cmd = Command::RestoreState {
            state: Box::new(source.clone()),
        };
        apply_at(&mut fresh, 2, &cmd).unwrap();
        assert_eq!(fresh.cluster().unwrap().cluster_name, "west");
        assert!(fresh.eq_except_audit(&{
            let mut s = source.clone();
            s.cluster = fresh.cluster.clone();
            s
        }));
        assert_eq!(fresh.audit(), source.audit());
        assert!(fresh.token_by_hash(&hash_api_token("qk_alice")).is_some());
        // A second restore, or one into a cluster with tenants, is refused.
        let before = fresh.clone();
        assert!(matches!(
            apply_at(&mut fresh, 3, &cmd),
            Err(ApplyError::Conflict(_))
        ));
        assert_eq!(fresh, before);
        // Never as an admin command.
        assert!(crate::command::required_permission(&fresh, &cmd).is_err());
    }

    #[test]
    fn residency_and_the_shard_map_survive_backup_restore_and_export() {
        use crate::placement::{NodeLabels, Residency, ShardMove, shard_of, tenant_key};
        let mut source = cluster("east", true);
        let acme = TenantId::new("acme").unwrap();
        let eu = Residency {
            allowed_regions: ["eu-west".to_owned(), "eu-central".to_owned()].into(),
            preferred_region: Some("eu-west".into()),
        };
        let mut n = 10;
        run(
            &mut source,
            &mut n,
            Command::SetTenantResidency {
                tenant: acme.clone(),
                residency: eu.clone(),
            },
        );
        let labels = NodeLabels {
            region: "eu-west".into(),
            zone: None,
            capacity: 100,
        };
        run(
            &mut source,
            &mut n,
            Command::SetNodeLabels {
                node: 1,
                labels: labels.clone(),
            },
        );
        let shard = shard_of(&eu, &tenant_key(&acme));
        run(
            &mut source,
            &mut n,
            Command::ApplyPlacement {
                moves: vec![ShardMove {
                    shard: shard.clone(),
                    from: None,
                    to: Some(1),
                    expected_epoch: 0,
                }],
            },
        );

        // A whole backup: residency and the map (with its epochs) come back; the restoring
        // cluster's own node labels stay.
        let (_, bytes) = write_backup(&source, 12, 1).unwrap();
        let (_, decoded) = read_backup(&bytes).unwrap();
        let mut fresh = cluster("west", false);
        let mut m = 1;
        let west_labels = NodeLabels {
            region: "us-east".into(),
            zone: Some("a".into()),
            capacity: 50,
        };
        run(
            &mut fresh,
            &mut m,
            Command::SetNodeLabels {
                node: 7,
                labels: west_labels.clone(),
            },
        );
        run(
            &mut fresh,
            &mut m,
            Command::RestoreState {
                state: Box::new(decoded),
            },
        );
        assert_eq!(fresh.placement().residency_of(&acme), eu);
        assert_eq!(fresh.placement().owner(&shard).epoch, 1);
        assert_eq!(
            fresh
                .placement()
                .nodes
                .clone()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![(7, west_labels)]
        );

        // A tenant export carries the residency.
        let (_, bytes) = write_tenant_export(&source, &acme, 9, 1).unwrap();
        let (_, slice) = read_tenant_export(&bytes).unwrap();
        assert_eq!(slice.residency.as_ref(), Some(&eu));
        let mut target = cluster("west", false);
        apply_at(&mut target, 7, &import_cmd(slice)).unwrap();
        assert_eq!(target.placement().residency_of(&acme), eu);
    }

    #[test]
    fn backups_and_exports_from_before_placement_still_load() {
        let source = cluster("east", true);
        let acme = TenantId::new("acme").unwrap();
        let mut state = serde_json::to_value(&source).unwrap();
        state.as_object_mut().unwrap().remove("placement").unwrap();
        let old: State = serde_json::from_value(state).unwrap();
        assert_eq!(old, source);
        let mut slice = serde_json::to_value(tenant_slice(&source, &acme).unwrap()).unwrap();
        slice.as_object_mut().unwrap().remove("residency").unwrap();
        let old: TenantSlice = serde_json::from_value(slice).unwrap();
        assert_eq!(old.residency, None);
    }

    fn import_cmd(slice: TenantSlice) -> Command {
        Command::ImportTenant {
            slice: Box::new(slice),
            at_ms: 5_000,
            node: 2,
        }
    }

    #[test]
    fn import_keeps_the_chain_and_audits_itself_next() {
        let source = cluster("east", true);
        let acme = TenantId::new("acme").unwrap();
        let (_, bytes) = write_tenant_export(&source, &acme, 9, 1).unwrap();
        let (header, slice) = read_tenant_export(&bytes).unwrap();
        assert_eq!(header.tenant.as_ref(), Some(&acme));
        let mut target = cluster("west", false);
        apply_at(&mut target, 7, &import_cmd(slice.clone())).unwrap();

        assert_eq!(target.tenant(&acme), source.tenant(&acme));
        assert!(target.token_by_hash(&hash_api_token("qk_alice")).is_some());
        let before = source.audit().chain("acme").unwrap();
        let after = target.audit().chain("acme").unwrap();
        assert_eq!(after.records.len(), before.records.len() + 1);
        assert!(
            after
                .records
                .iter()
                .zip(&before.records)
                .all(|(a, b)| a == b)
        );
        let last = after.records.back().unwrap();
        assert_eq!(last.event.action, "import_tenant");
        assert_eq!(last.log_index, 7);
        assert_eq!(last.prev_hash, before.head_hash());
        verify_chain(&after.records, Some((0, GENESIS_HASH))).unwrap();

        // The same tenant again is refused, and changes nothing.
        let snapshot = target.clone();
        assert!(matches!(
            apply_at(&mut target, 8, &import_cmd(slice)),
            Err(ApplyError::AlreadyExists(_))
        ));
        assert_eq!(target, snapshot);
    }

    #[test]
    fn import_refuses_a_tampered_chain_or_a_foreign_object() {
        let source = cluster("east", true);
        let acme = TenantId::new("acme").unwrap();
        let slice = tenant_slice(&source, &acme).unwrap();
        let mut target = cluster("west", false);
        let pristine = target.clone();

        let mut changed = slice.clone();
        changed.audit.records[1].event.outcome = "denied".into();
        let e = apply_at(&mut target, 3, &import_cmd(changed)).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        assert_eq!(target, pristine);

        let mut dropped = slice.clone();
        dropped.audit.records.remove(0);
        assert!(apply_at(&mut target, 3, &import_cmd(dropped)).is_err());
        assert_eq!(target, pristine);

        let mut foreign = slice.clone();
        foreign.tokens[0].tenant = TenantId::new("other").unwrap();
        assert!(apply_at(&mut target, 3, &import_cmd(foreign)).is_err());
        assert_eq!(target, pristine);

        // A slice renamed to another tenant whose objects still name the first.
        let mut clash = cluster("west", false);
        let mut same_hash = tenant_slice(&source, &acme).unwrap();
        same_hash.tenant.tenant.id = TenantId::new("acme2").unwrap();
        assert!(apply_at(&mut clash, 3, &import_cmd(same_hash)).is_err());
        apply_at(&mut clash, 4, &import_cmd(slice)).unwrap();
    }
}
