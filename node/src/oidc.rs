//! Tenants' OpenID Connect providers: discovery (`{issuer}/.well-known/openid-configuration`)
//! and JWKS fetched over HTTPS (the system's roots, or `security.oidc_ca_file`), cached for
//! `security.oidc_jwks_cache_ttl_secs`, refetched when a token names an unknown `kid` — at most
//! once per `security.oidc_refetch_min_interval_ms` per provider, so a flood of bogus kids
//! cannot make the node hammer the provider — and the mapping of a verified token to a
//! [`Caller`].
//!
//! A provider's token maps to a caller of its tenant: the principal is the claim
//! `principal_claim` (default `sub`, which must be a valid principal id), the workspace the
//! claim `workspace_claim` or the provider's `default_workspace`, and each group of
//! `groups_claim` that the provider maps adds its role (at the tenant or one workspace) and its
//! OAuth scopes. The roles hold for this request only, added to the principal's stored
//! bindings and membership; explicit restrictions still override them
//! (`quire_raft::rbac::authorize_with_extra_roles`). When the token carries `scope` (or
//! `scp`), the caller's scopes are the mapped ones it also names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use quire_raft::ids::{PrincipalId, WorkspaceId};
use quire_raft::jwt_keys::{JwtAlg, OidcProvider, PublicKey};
use quire_raft::rbac::{Role, RoleScope};
use quire_raft::state::State;

use crate::auth::Caller;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::jwt::{JwtError, decoding_key, peek_header, verify};

/// Largest discovery document or JWKS read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys taken from one JWKS.
pub const MAX_JWKS_KEYS: usize = 64;
/// Most groups of one token considered.
pub const MAX_TOKEN_GROUPS: usize = 256;
/// Most providers cached at once (one per issuer).
const MAX_CACHED_ISSUERS: usize = 10_000;
/// Largest CA file read, in bytes.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// How the node reaches providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    pub cache_ttl_ms: u64,
    pub refetch_min_interval_ms: u64,
    pub fetch_timeout_ms: u64,
    pub leeway_secs: u64,
    /// `security.oidc_allowed_issuers` (empty: any https issuer).
    pub allowed_issuers: Vec<String>,
}

impl OidcSettings {
    /// Whether the node may fetch discovery and keys from `issuer`.
    pub fn issuer_allowed(&self, issuer: &str) -> bool {
        issuer.starts_with("https://")
            && (self.allowed_issuers.is_empty()
                || self
                    .allowed_issuers
                    .iter()
                    .any(|p| issuer.starts_with(p.as_str())))
    }
}

impl OidcSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            cache_ttl_ms: config.security.oidc_jwks_cache_ttl_secs * 1000,
            refetch_min_interval_ms: config.security.oidc_refetch_min_interval_ms,
            fetch_timeout_ms: config.security.oidc_fetch_timeout_ms,
            leeway_secs: config.security.jwt_leeway_secs,
            allowed_issuers: config.security.oidc_allowed_issuers.clone(),
        }
    }
}

/// The certificates of a PEM CA file (`security.oidc_ca_file`).
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > MAX_CA_FILE_BYTES {
        return Err(format!(
            "{} is {size} bytes, more than {MAX_CA_FILE_BYTES}",
            path.display()
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// One provider's keys as last fetched.
#[derive(Clone, Default)]
struct Entry {
    keys: BTreeMap<String, (JwtAlg, Arc<DecodingKey>)>,
    fetched_at_ms: Option<u64>,
    last_attempt_ms: Option<u64>,
    last_error: Option<String>,
}

/// The cache of providers' keys, shared by every request of the node.
pub struct OidcCache {
    http: Result<reqwest::Client, String>,
    settings: OidcSettings,
    clock: SharedClock,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// One fetch at a time per issuer: concurrent requests with the same unknown kid wait for
    /// the one fetch instead of each starting their own.
    fetching: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl OidcCache {
    /// A cache reaching providers with reqwest, trusting `ca_file`'s certificates if given
    /// (else the system's roots). A CA file that cannot be read leaves every provider
    /// unreachable (fail closed), with the reason in each refusal.
    pub fn new(settings: OidcSettings, ca_file: Option<&Path>, clock: SharedClock) -> Self {
        let http = (|| {
            let timeout = Duration::from_millis(settings.fetch_timeout_ms);
            let mut builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .https_only(true)
                .redirect(reqwest::redirect::Policy::limited(3));
            if let Some(path) = ca_file {
                builder = builder.tls_certs_only(
                    read_ca_file(path).map_err(|e| format!("security.oidc_ca_file: {e}"))?,
                );
            }
            builder
                .build()
                .map_err(|e| format!("cannot build the OIDC HTTP client: {e}"))
        })();
        if let Err(e) = &http {
            tracing::error!("OpenID Connect providers are unreachable: {e}");
        }
        Self {
            http,
            settings,
            clock,
            entries: Mutex::new(BTreeMap::new()),
            fetching: Mutex::new(BTreeMap::new()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many times providers' keys were fetched (discovery and JWKS count as one).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn entry(&self, issuer: &str) -> Entry {
        self.entries
            .lock()
            .map(|e| e.get(issuer).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    fn lookup(&self, issuer: &str, kid: &str, now_ms: u64) -> Lookup {
        let entry = self.entry(issuer);
        let fresh = entry
            .fetched_at_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < self.settings.cache_ttl_ms);
        let may_fetch = entry
            .last_attempt_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= self.settings.refetch_min_interval_ms);
        match entry.keys.get(kid) {
            Some(found) if fresh => Lookup::Found(found.clone()),
            found if may_fetch => Lookup::Fetch(found.cloned()),
            Some(found) => Lookup::Found(found.clone()),
            None => Lookup::Missing(entry.last_error),
        }
    }

    /// The key `kid` of `issuer`, from the cache or (rate-limited) from the provider.
    pub async fn key(
        &self,
        issuer: &str,
        kid: &str,
    ) -> Result<(JwtAlg, Arc<DecodingKey>), JwtError> {
        let stale = match self.lookup(issuer, kid, self.clock.now_ms()) {
            Lookup::Found(k) => return Ok(k),
            Lookup::Missing(error) => return Err(unknown_kid(kid, error)),
            Lookup::Fetch(stale) => stale,
        };
        let gate = {
            let Ok(mut map) = self.fetching.lock() else {
                return Err(JwtError::Invalid("the OIDC cache is unavailable".into()));
            };
            if map.len() >= MAX_CACHED_ISSUERS && !map.contains_key(issuer) {
                map.clear();
            }
            map.entry(issuer.to_owned()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        // Another request may have fetched while this one waited.
        match self.lookup(issuer, kid, self.clock.now_ms()) {
            Lookup::Found(k) => return Ok(k),
            Lookup::Missing(error) => return Err(unknown_kid(kid, error)),
            Lookup::Fetch(_) => {}
        }
        let started_ms = self.clock.now_ms();
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fetched = self.fetch(issuer).await;
        let Ok(mut entries) = self.entries.lock() else {
            return Err(JwtError::Invalid("the OIDC cache is unavailable".into()));
        };
        if entries.len() >= MAX_CACHED_ISSUERS && !entries.contains_key(issuer) {
            entries.clear();
        }
        let entry = entries.entry(issuer.to_owned()).or_default();
        entry.last_attempt_ms = Some(started_ms);
        match fetched {
            Ok(keys) => {
                entry.keys = keys;
                entry.fetched_at_ms = Some(started_ms);
                entry.last_error = None;
                entry
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| unknown_kid(kid, None))
            }
            Err(e) => {
                tracing::warn!(issuer, "cannot fetch the provider's keys: {e}");
                entry.last_error = Some(e.clone());
                // Keys fetched earlier keep serving while the provider is unreachable only
                // until their cache time is over; then the provider's tokens are refused.
                stale.ok_or_else(|| unknown_kid(kid, Some(e)))
            }
        }
    }

    async fn fetch(
        &self,
        issuer: &str,
    ) -> Result<BTreeMap<String, (JwtAlg, Arc<DecodingKey>)>, String> {
        let http = self.http.as_ref().map_err(Clone::clone)?;
        if !self.settings.issuer_allowed(issuer) {
            return Err(format!(
                "issuer {issuer:?} is not in security.oidc_allowed_issuers; nothing was fetched"
            ));
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery = get_json(http, &discovery_url).await?;
        if discovery.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(format!(
                "{discovery_url} names issuer {:?}, not {issuer:?}",
                discovery.get("issuer")
            ));
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{discovery_url} has no jwks_uri"))?;
        if !jwks_uri.starts_with("https://") {
            return Err(format!("jwks_uri {jwks_uri:?} is not an https:// URL"));
        }
        let jwks = get_json(http, jwks_uri).await?;
        parse_jwks(&jwks)
    }
}

enum Lookup {
    Found((JwtAlg, Arc<DecodingKey>)),
    Fetch(Option<(JwtAlg, Arc<DecodingKey>)>),
    Missing(Option<String>),
}

fn unknown_kid(kid: &str, error: Option<String>) -> JwtError {
    match error {
        Some(e) => JwtError::UnknownKey(format!(
            "{kid} (the provider's keys cannot be fetched: {e})"
        )),
        None => JwtError::UnknownKey(kid.to_owned()),
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(format!("GET {url} answered HTTP {}", response.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        if bytes.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: more than {MAX_DOCUMENT_BYTES} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The signing keys of a JWKS that Quire can use: each with a `kid`, of an accepted algorithm
/// (from `alg`, or the key type: OKP/Ed25519 → EdDSA, EC/P-256 → ES256, RSA → RS256), not
/// marked for encryption. Others are skipped.
pub fn parse_jwks(jwks: &Value) -> Result<BTreeMap<String, (JwtAlg, Arc<DecodingKey>)>, String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no keys array")?;
    let mut out = BTreeMap::new();
    for k in keys.iter().take(MAX_JWKS_KEYS) {
        let s = |name: &str| k.get(name).and_then(Value::as_str).map(str::to_owned);
        let Some(kid) = s("kid") else { continue };
        if s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let public = match (s("kty").as_deref(), s("crv").as_deref()) {
            (Some("OKP"), Some("Ed25519")) => s("x").map(|x| PublicKey::Okp { x }),
            (Some("EC"), Some("P-256")) => s("x").zip(s("y")).map(|(x, y)| PublicKey::Ec { x, y }),
            (Some("RSA"), _) => s("n").zip(s("e")).map(|(n, e)| PublicKey::Rsa { n, e }),
            _ => None,
        };
        let Some(public) = public else { continue };
        let inferred = match public {
            PublicKey::Okp { .. } => JwtAlg::EdDSA,
            PublicKey::Ec { .. } => JwtAlg::ES256,
            PublicKey::Rsa { .. } => JwtAlg::RS256,
        };
        let alg = match s("alg") {
            None => inferred,
            Some(name) => match JwtAlg::from_name(&name) {
                Some(a) if a == inferred => a,
                _ => continue,
            },
        };
        let Ok(key) = decoding_key(&public) else {
            continue;
        };
        out.insert(kid, (alg, Arc::new(key)));
    }
    Ok(out)
}

/// The providers of `state` that may have issued a token claiming `issuer` with `claims`:
/// the one provider with that issuer, or, when tenants share it, the one whose tenant claim
/// the token carries.
pub fn provider_for(state: &State, issuer: &str, claims: &Value) -> Option<OidcProvider> {
    let mut candidates = state
        .jwt()
        .oidc_providers()
        .filter(|p| p.issuer == issuer)
        .filter(|p| match &p.tenant_claim {
            None => true,
            Some(c) => claims.get(c).and_then(Value::as_str) == Some(p.tenant.as_str()),
        });
    let first = candidates.next()?;
    // Shared issuers need tenant claims (enforced by apply); two matches would be ambiguous.
    candidates.next().is_none().then(|| first.clone())
}

/// Validates a token of `provider` (its key found through `cache`) and maps it to a caller.
pub async fn validate(
    cache: &OidcCache,
    provider: &OidcProvider,
    token: &str,
    now_ms: u64,
) -> Result<Value, JwtError> {
    let (_, kid) = peek_header(token)?;
    let (alg, key) = cache.key(&provider.issuer, &kid).await?;
    verify(
        token,
        alg,
        &key,
        &provider.issuer,
        std::slice::from_ref(&provider.audience),
        cache.settings.leeway_secs,
        now_ms,
    )
}

/// The caller a verified token of `provider` stands for, against `state`.
pub fn caller_of(
    state: &State,
    provider: &OidcProvider,
    claims: &Value,
) -> Result<Caller, JwtError> {
    let tenant = &provider.tenant;
    if let Some(c) = &provider.tenant_claim
        && claims.get(c).and_then(Value::as_str) != Some(tenant.as_str())
    {
        return Err(JwtError::Claims(format!(
            "the claim {c} does not name tenant {}",
            tenant.as_str()
        )));
    }
    let claim = &provider.principal_claim;
    let principal_text = claims
        .get(claim)
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Claims(format!("the token has no {claim} claim")))?;
    let principal = PrincipalId::new(principal_text).map_err(|e| {
        JwtError::Claims(format!(
            "the claim {claim} is not a Quire principal id: {e}"
        ))
    })?;
    let workspace_text = provider
        .workspace_claim
        .as_ref()
        .and_then(|c| claims.get(c).and_then(Value::as_str))
        .map(str::to_owned)
        .or_else(|| {
            provider
                .default_workspace
                .as_ref()
                .map(|w| w.as_str().to_owned())
        })
        .ok_or_else(|| {
            JwtError::Claims(
                "the token names no workspace and the provider has no default_workspace".into(),
            )
        })?;
    let workspace = WorkspaceId::new(&workspace_text)
        .map_err(|e| JwtError::Claims(format!("the workspace claim: {e}")))?;
    if state.workspace(tenant, &workspace).is_none() {
        return Err(JwtError::Claims(format!(
            "workspace {}/{} does not exist",
            tenant.as_str(),
            workspace.as_str()
        )));
    }
    let groups: Vec<&str> = match claims.get(&provider.groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .take(MAX_TOKEN_GROUPS)
            .filter_map(Value::as_str)
            .collect(),
        Some(Value::String(one)) => vec![one.as_str()],
        _ => Vec::new(),
    };
    let mut scopes = BTreeSet::new();
    let mut extra_roles: Vec<(Role, RoleScope)> = Vec::new();
    for group in groups {
        let Some(mapping) = provider.groups.get(group) else {
            continue;
        };
        scopes.extend(mapping.scopes.iter().cloned());
        if let Some(role) = mapping.role {
            let scope = match &mapping.workspace {
                Some(w) => RoleScope::Workspace {
                    tenant: tenant.clone(),
                    workspace: w.clone(),
                },
                None => RoleScope::Tenant {
                    tenant: tenant.clone(),
                },
            };
            if !extra_roles.contains(&(role, scope.clone())) {
                extra_roles.push((role, scope));
            }
        }
    }
    let asked: Option<BTreeSet<String>> = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => Some(s.split_whitespace().map(str::to_owned).collect()),
        (_, Some(Value::Array(items))) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    };
    if let Some(asked) = asked {
        scopes.retain(|s| asked.contains(s));
    }
    let jti = claims.get("jti").and_then(Value::as_str);
    if let Some(jti) = jti
        && state.jwt().is_revoked(tenant, jti)
    {
        return Err(JwtError::Revoked);
    }
    Ok(Caller {
        tenant_id: tenant.as_str().to_owned(),
        principal_id: principal.as_str().to_owned(),
        workspace_id: workspace.as_str().to_owned(),
        token_id: format!("oidc:{}", jti.unwrap_or(principal_text)),
        scopes,
        extra_roles,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use quire_raft::command::{Command, apply};
    use quire_raft::ids::{IntegrationId, TenantId};
    use quire_raft::jwt_keys::GroupMapping;
    use quire_raft::seal::MasterKey;
    use quire_raft::state::Budget;
    use rand::SeedableRng;
    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn the_issuer_allow_list_limits_what_is_fetched() {
        let mut s = settings();
        assert!(s.issuer_allowed("https://idp.example"));
        assert!(!s.issuer_allowed("http://idp.example"));
        s.allowed_issuers = vec!["https://login.example.com/".into()];
        assert!(s.issuer_allowed("https://login.example.com/tenant-a"));
        assert!(!s.issuer_allowed("https://login.example.com.evil.test/"));
        assert!(!s.issuer_allowed("https://169.254.169.254/"));
    }

    fn settings() -> OidcSettings {
        OidcSettings {
            cache_ttl_ms: 300_000,
            refetch_min_interval_ms: 10_000,
            fetch_timeout_ms: 1_000,
            leeway_secs: 30,
            allowed_issuers: Vec::new(),
        }
    }

    fn provider() -> OidcProvider {
        OidcProvider {
            tenant: TenantId::new("acme").unwrap(),
            issuer: "https://idp.example".into(),
            audience: "https://quire.example/mcp".into(),
            principal_claim: "sub".into(),
            tenant_claim: Some("tid".into()),
            groups_claim: "groups".into(),
            workspace_claim: Some("ws".into()),
            default_workspace: Some(WorkspaceId::new("main").unwrap()),
            groups: BTreeMap::from([
                (
                    "writers".to_owned(),
                    GroupMapping {
                        role: Some(Role::StandardUser),
                        workspace: Some(WorkspaceId::new("main").unwrap()),
                        scopes: ["mcp_server_access", "notion_workspace_write"]
                            .map(str::to_owned)
                            .into(),
                    },
                ),
                (
                    "admins".to_owned(),
                    GroupMapping {
                        role: Some(Role::TenantAdmin),
                        workspace: None,
                        scopes: ["admin_operations".to_owned()].into(),
                    },
                ),
            ]),
        }
    }

    fn state() -> State {
        let mut s = State::new();
        let t = TenantId::new("acme").unwrap();
        let key = MasterKey::from_bytes([3; 32]);
        for c in [
            Command::CreateTenant {
                tenant: t.clone(),
                display_name: "Acme".into(),
            },
            Command::AddIntegration {
                tenant: t.clone(),
                integration: IntegrationId::new("n").unwrap(),
                display_name: "N".into(),
                sealed_token: key
                    .seal(
                        b"ntn_x_token_text",
                        b"a",
                        &mut rand::rngs::StdRng::seed_from_u64(2),
                    )
                    .unwrap(),
                budget: Budget {
                    requests_per_second: 3,
                    burst: 5,
                },
            },
            Command::CreateWorkspace {
                tenant: t.clone(),
                workspace: WorkspaceId::new("main").unwrap(),
                display_name: "Main".into(),
                integration: IntegrationId::new("n").unwrap(),
            },
            Command::SetOidcProvider {
                provider: provider(),
            },
        ] {
            apply(&mut s, &c).unwrap();
        }
        s
    }

    #[test]
    fn groups_map_to_roles_and_scopes_narrowed_by_the_tokens_scope() {
        let s = state();
        let p = provider();
        let claims = json!({"sub": "ola", "tid": "acme", "groups": ["writers", "admins", "other"]});
        let caller = caller_of(&s, &p, &claims).unwrap();
        assert_eq!(caller.tenant_id, "acme");
        assert_eq!(caller.principal_id, "ola");
        assert_eq!(caller.workspace_id, "main");
        assert_eq!(caller.token_id, "oidc:ola");
        assert_eq!(
            caller.scopes,
            [
                "admin_operations",
                "mcp_server_access",
                "notion_workspace_write"
            ]
            .map(str::to_owned)
            .into()
        );
        assert_eq!(caller.extra_roles.len(), 2);
        assert!(caller.extra_roles.contains(&(
            Role::TenantAdmin,
            RoleScope::Tenant {
                tenant: TenantId::new("acme").unwrap()
            }
        )));
        // A token asking for fewer scopes gets only those.
        let claims = json!({"sub": "ola", "tid": "acme", "groups": ["writers"],
                            "scope": "mcp_server_access openid"});
        let caller = caller_of(&s, &p, &claims).unwrap();
        assert_eq!(caller.scopes, ["mcp_server_access".to_owned()].into());
        // No group: no scope, no role.
        let caller = caller_of(&s, &p, &json!({"sub": "ola", "tid": "acme"})).unwrap();
        assert!(caller.scopes.is_empty() && caller.extra_roles.is_empty());
    }

    #[test]
    fn the_tenant_claim_principal_and_workspace_must_hold() {
        let s = state();
        let p = provider();
        for claims in [
            json!({"sub": "ola", "tid": "beta", "groups": ["writers"]}),
            json!({"sub": "ola", "groups": ["writers"]}),
            json!({"sub": "Ola@Example.com", "tid": "acme"}),
            json!({"tid": "acme"}),
            json!({"sub": "ola", "tid": "acme", "ws": "missing"}),
        ] {
            assert!(
                matches!(caller_of(&s, &p, &claims), Err(JwtError::Claims(_))),
                "{claims}"
            );
        }
        let mut revoked = s.clone();
        apply(
            &mut revoked,
            &Command::RevokeJwt {
                tenant: TenantId::new("acme").unwrap(),
                jti: "j1".into(),
                expires_at_ms: 10_000,
                revoked_at_ms: 1,
            },
        )
        .unwrap();
        let claims = json!({"sub": "ola", "tid": "acme", "jti": "j1"});
        assert!(caller_of(&s, &p, &claims).is_ok());
        assert_eq!(caller_of(&revoked, &p, &claims), Err(JwtError::Revoked));
        // The provider is found by issuer and tenant claim.
        assert!(provider_for(&s, "https://idp.example", &json!({"tid": "acme"})).is_some());
        assert!(provider_for(&s, "https://idp.example", &json!({"tid": "beta"})).is_none());
        assert!(provider_for(&s, "https://other.example", &json!({"tid": "acme"})).is_none());
    }

    #[test]
    fn a_jwks_yields_only_usable_signing_keys() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let jwks = json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "claims-rs", "alg": "RS256", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "x": x},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": "sXch", "e": "AQAB"},
        ]});
        let keys = parse_jwks(&jwks).unwrap();
        let kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        assert_eq!(kids, ["ed", "rsa"]);
        assert_eq!(keys["ed"].0, JwtAlg::EdDSA);
        assert_eq!(keys["rsa"].0, JwtAlg::RS256);
        assert!(parse_jwks(&json!({"nokeys": []})).is_err());
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let clock = ManualClock::new(1_000_000);
        let cache = OidcCache::new(settings(), None, Arc::new(clock.clone()));
        // Nothing listens on port 1: every fetch fails at once.
        let issuer = "https://127.0.0.1:1";
        assert!(matches!(
            cache.key(issuer, "a").await,
            Err(JwtError::UnknownKey(_))
        ));
        assert_eq!(cache.fetch_count(), 1);
        for kid in ["b", "c", "d", "a"] {
            let refused = cache.key(issuer, kid).await;
            assert!(
                matches!(&refused, Err(JwtError::UnknownKey(m)) if m.contains("cannot be fetched")),
                "{refused:?}"
            );
        }
        assert_eq!(
            cache.fetch_count(),
            1,
            "within the interval nothing is fetched"
        );
        clock.advance_ms(settings().refetch_min_interval_ms);
        assert!(cache.key(issuer, "e").await.is_err());
        assert_eq!(cache.fetch_count(), 2);
    }
}
