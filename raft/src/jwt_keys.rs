//! JWT state in the replicated state machine: the built-in issuer's signing keys (public key
//! in the clear, private key sealed under the master key with an AAD that binds it to its
//! `kid`), which key signs, retired keys that still validate until their `not_after`, revoked
//! token ids (kept until the token's `exp`, then pruned), and each tenant's OpenID Connect
//! provider.
//!
//! Nothing here signs or verifies: key generation and sealing happen in the proposer (the
//! node), and validation reads this state. `apply` only checks shapes and bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::ApplyError;
use crate::ids::{TenantId, WorkspaceId};
use crate::rbac::{Level, Role};
use crate::seal::SealedSecret;

/// Most signing keys held (current, active and retired-in-overlap together).
pub const MAX_JWT_KEYS: usize = 32;
/// Most revoked token ids remembered at once (each only until its token expires).
pub const MAX_REVOKED_JTIS: usize = 100_000;
/// Longest a revocation is kept: a token id whose `exp` lies further ahead is refused.
pub const MAX_REVOCATION_SPAN_MS: u64 = 400 * 24 * 3600 * 1000;
/// Longest `kid`, in characters.
pub const KID_MAX_CHARS: usize = 64;
/// Longest `jti`, in characters.
pub const JTI_MAX_CHARS: usize = 128;
/// Longest issuer URL, audience or claim name, in characters.
pub const OIDC_TEXT_MAX_CHARS: usize = 512;
/// Most group mappings of one OpenID Connect provider.
pub const MAX_GROUP_MAPPINGS: usize = 200;
/// Longest base64url public-key component (a 4096-bit RSA modulus is 683).
const KEY_COMPONENT_MAX_CHARS: usize = 1_400;

/// The signature algorithms Quire accepts, and nothing else (no `none`, no HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JwtAlg {
    /// Ed25519 (the built-in issuer's default).
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
}

impl JwtAlg {
    /// Every accepted algorithm.
    pub const ALL: [JwtAlg; 3] = [JwtAlg::EdDSA, JwtAlg::ES256, JwtAlg::RS256];

    /// The JOSE name (`alg` header value).
    pub fn name(self) -> &'static str {
        match self {
            JwtAlg::EdDSA => "EdDSA",
            JwtAlg::ES256 => "ES256",
            JwtAlg::RS256 => "RS256",
        }
    }

    /// The JOSE algorithm named `name`, if it is one Quire accepts.
    pub fn from_name(name: &str) -> Option<JwtAlg> {
        JwtAlg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether `key` is a key of this algorithm's type.
    pub fn fits(self, key: &PublicKey) -> bool {
        matches!(
            (self, key),
            (JwtAlg::EdDSA, PublicKey::Okp { .. })
                | (JwtAlg::ES256, PublicKey::Ec { .. })
                | (JwtAlg::RS256, PublicKey::Rsa { .. })
        )
    }
}

impl fmt::Display for JwtAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public key as JWK components (base64url without padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum PublicKey {
    /// Ed25519: `x` is the 32-byte public key.
    #[serde(rename = "OKP")]
    Okp {
        /// The public key.
        x: String,
    },
    /// P-256: the point's coordinates.
    #[serde(rename = "EC")]
    Ec {
        /// x coordinate.
        x: String,
        /// y coordinate.
        y: String,
    },
    /// RSA: modulus and exponent.
    #[serde(rename = "RSA")]
    Rsa {
        /// Modulus.
        n: String,
        /// Public exponent.
        e: String,
    },
}

impl PublicKey {
    fn check(&self) -> Result<(), ApplyError> {
        let parts: Vec<&String> = match self {
            PublicKey::Okp { x } => vec![x],
            PublicKey::Ec { x, y } => vec![x, y],
            PublicKey::Rsa { n, e } => vec![n, e],
        };
        for p in parts {
            if p.is_empty()
                || p.len() > KEY_COMPONENT_MAX_CHARS
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ApplyError::Invalid(format!(
                    "a public key component must be 1..={KEY_COMPONENT_MAX_CHARS} characters of base64url"
                )));
            }
        }
        Ok(())
    }
}

/// One signing key of the built-in issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Key id (the `kid` header of the tokens it signs).
    pub kid: String,
    /// Its algorithm.
    pub alg: JwtAlg,
    /// Its public key.
    pub public_key: PublicKey,
    /// The PKCS#8 private key, sealed with AAD [`signing_key_aad`]`(kid)`.
    pub sealed_private_key: SealedSecret,
    /// When it was added (stamped by the proposer).
    pub created_at_ms: u64,
    /// When it stopped signing, if it did.
    pub retired_at_ms: Option<u64>,
    /// From when it no longer validates (set when retired).
    pub not_after_ms: Option<u64>,
}

impl SigningKey {
    /// Whether tokens it signed are still accepted at `now_ms`.
    pub fn validates_at(&self, now_ms: u64) -> bool {
        self.not_after_ms.is_none_or(|end| now_ms < end)
    }
}

/// The associated data that binds a sealed signing key to its `kid`.
pub fn signing_key_aad(kid: &str) -> Vec<u8> {
    format!("jwt-signing-key/{kid}").into_bytes()
}

/// A revoked token id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedJti {
    /// The token's tenant.
    pub tenant: TenantId,
    /// The token id.
    pub jti: String,
    /// The token's own expiry: the revocation is forgotten after it.
    pub expires_at_ms: u64,
    /// When it was revoked (stamped by the proposer).
    pub revoked_at_ms: u64,
}

/// What one group of an OpenID Connect provider grants, for the request that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMapping {
    /// A role in the tenant (or in `workspace`), if any.
    pub role: Option<Role>,
    /// The workspace the role is bound at; `None` binds it at the tenant.
    pub workspace: Option<WorkspaceId>,
    /// OAuth scopes the group's members get.
    pub scopes: BTreeSet<String>,
}

/// A tenant's OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcProvider {
    /// The tenant.
    pub tenant: TenantId,
    /// The issuer URL (`iss`; discovery at `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// The audience its tokens must carry (`aud`).
    pub audience: String,
    /// Claim naming the principal (default `sub`).
    pub principal_claim: String,
    /// Claim that must equal the tenant id, if the provider serves several tenants.
    pub tenant_claim: Option<String>,
    /// Claim listing the caller's groups (default `groups`).
    pub groups_claim: String,
    /// Claim naming the workspace, if the provider sends one.
    pub workspace_claim: Option<String>,
    /// The workspace used when the token names none.
    pub default_workspace: Option<WorkspaceId>,
    /// Group name → what it grants.
    pub groups: BTreeMap<String, GroupMapping>,
}

impl OidcProvider {
    /// Checks the provider's shape (what `apply` checks before any state), so a boundary can
    /// refuse a bad one before proposing it.
    pub fn check(&self) -> Result<(), ApplyError> {
        let text = |what: &str, v: &str| {
            if v.is_empty()
                || v.chars().count() > OIDC_TEXT_MAX_CHARS
                || v.chars().any(char::is_control)
            {
                Err(ApplyError::Invalid(format!(
                    "OIDC {what} must be 1..={OIDC_TEXT_MAX_CHARS} characters without control characters"
                )))
            } else {
                Ok(())
            }
        };
        text("issuer", &self.issuer)?;
        if !self.issuer.starts_with("https://") {
            return Err(ApplyError::Invalid(format!(
                "OIDC issuer {:?} must be an https:// URL",
                self.issuer
            )));
        }
        text("audience", &self.audience)?;
        text("principal_claim", &self.principal_claim)?;
        text("groups_claim", &self.groups_claim)?;
        if let Some(c) = &self.tenant_claim {
            text("tenant_claim", c)?;
        }
        if let Some(c) = &self.workspace_claim {
            text("workspace_claim", c)?;
        }
        if self.groups.len() > MAX_GROUP_MAPPINGS {
            return Err(ApplyError::Invalid(format!(
                "an OIDC provider maps at most {MAX_GROUP_MAPPINGS} groups"
            )));
        }
        for (group, m) in &self.groups {
            text("group name", group)?;
            if let Some(role) = m.role {
                let level = if m.workspace.is_some() {
                    Level::Workspace
                } else {
                    Level::Tenant
                };
                if !role.allowed_levels().contains(&level) {
                    return Err(ApplyError::Invalid(format!(
                        "group {group:?}: {role} cannot be held at the {level:?} level of a tenant"
                    )));
                }
            }
            if m.scopes.len() > crate::command::MAX_SCOPES_PER_TOKEN {
                return Err(ApplyError::Invalid(format!(
                    "group {group:?} grants more than {} scopes",
                    crate::command::MAX_SCOPES_PER_TOKEN
                )));
            }
            crate::command::check_scope_names(&m.scopes)?;
        }
        Ok(())
    }
}

/// Everything JWT-related in the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtState {
    pub(crate) keys: BTreeMap<String, SigningKey>,
    pub(crate) current: Option<String>,
    /// [`revocation_key`]`(tenant, jti)` → revocation.
    pub(crate) revoked: BTreeMap<String, RevokedJti>,
    pub(crate) oidc: BTreeMap<TenantId, OidcProvider>,
}

impl JwtState {
    /// The key that signs new tokens.
    pub fn current_key(&self) -> Option<&SigningKey> {
        self.keys.get(self.current.as_ref()?)
    }

    /// A signing key by `kid`.
    pub fn key(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.get(kid)
    }

    /// Every signing key, in `kid` order.
    pub fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.values()
    }

    /// Whether the token `jti` of `tenant` was revoked.
    pub fn is_revoked(&self, tenant: &TenantId, jti: &str) -> bool {
        self.revoked.contains_key(&revocation_key(tenant, jti))
    }

    /// How many revocations are remembered.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    /// Revocations of a tenant, in jti order.
    pub fn revocations(&self, tenant: &TenantId) -> impl Iterator<Item = &RevokedJti> {
        self.revoked.values().filter(move |r| &r.tenant == tenant)
    }

    /// A tenant's OpenID Connect provider.
    pub fn oidc_provider(&self, tenant: &TenantId) -> Option<&OidcProvider> {
        self.oidc.get(tenant)
    }

    /// Every OpenID Connect provider, in tenant order.
    pub fn oidc_providers(&self) -> impl Iterator<Item = &OidcProvider> {
        self.oidc.values()
    }

    /// Drops revocations of tokens expired by `now_ms` and keys past their `not_after`.
    pub(crate) fn prune(&mut self, now_ms: u64) {
        self.revoked.retain(|_, r| r.expires_at_ms > now_ms);
        let current = self.current.clone();
        self.keys
            .retain(|kid, k| Some(kid) == current.as_ref() || k.validates_at(now_ms));
    }
}

/// The key of a revocation: `tenant/jti` (a tenant id holds no `/`).
pub(crate) fn revocation_key(tenant: &TenantId, jti: &str) -> String {
    format!("{}/{jti}", tenant.as_str())
}

/// Checks a `kid`: 1..=[`KID_MAX_CHARS`] characters of `[A-Za-z0-9._-]`.
pub fn check_kid(kid: &str) -> Result<(), ApplyError> {
    if kid.is_empty()
        || kid.chars().count() > KID_MAX_CHARS
        || !kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(ApplyError::Invalid(format!(
            "a key id must be 1..={KID_MAX_CHARS} characters of A-Z, a-z, 0-9, '.', '-', '_'"
        )));
    }
    Ok(())
}

/// Checks a `jti`: 1..=[`JTI_MAX_CHARS`] printable ASCII characters.
pub fn check_jti(jti: &str) -> Result<(), ApplyError> {
    if jti.is_empty() || jti.len() > JTI_MAX_CHARS || !jti.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApplyError::Invalid(format!(
            "a token id (jti) must be 1..={JTI_MAX_CHARS} printable ASCII characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_public_key(alg: JwtAlg, key: &PublicKey) -> Result<(), ApplyError> {
    key.check()?;
    if !alg.fits(key) {
        return Err(ApplyError::Invalid(format!(
            "a {alg} key cannot be a {} public key",
            match key {
                PublicKey::Okp { .. } => "OKP",
                PublicKey::Ec { .. } => "EC",
                PublicKey::Rsa { .. } => "RSA",
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::command::{Command, CommandOutput, apply};
    use crate::rbac::{Permission, RoleScope, Subject, authorize, authorize_with_extra_roles};
    use crate::seal::MasterKey;
    use crate::state::State;

    fn sealed(kid: &str) -> SealedSecret {
        let key = MasterKey::from_bytes([7; 32]);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        key.seal(b"pkcs8 private key bytes", &signing_key_aad(kid), &mut rng)
            .unwrap()
    }

    fn add(kid: &str, at: u64, make_current: bool, previous_end: Option<u64>) -> Command {
        Command::AddJwtKey {
            kid: kid.into(),
            alg: JwtAlg::EdDSA,
            public_key: PublicKey::Okp { x: "abc_-1".into() },
            sealed_private_key: sealed(kid),
            created_at_ms: at,
            make_current,
            previous_not_after_ms: previous_end,
        }
    }

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    fn with_tenant() -> State {
        let mut s = State::new();
        apply(
            &mut s,
            &Command::CreateTenant {
                tenant: t("acme"),
                display_name: "Acme".into(),
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn rotation_keeps_the_previous_key_validating_until_its_overlap_ends() {
        let mut s = State::new();
        apply(&mut s, &add("k1", 1_000, true, None)).unwrap();
        assert_eq!(s.jwt().current_key().unwrap().kid, "k1");
        apply(&mut s, &add("k2", 2_000, true, Some(5_000))).unwrap();
        assert_eq!(s.jwt().current_key().unwrap().kid, "k2");
        let k1 = s.jwt().key("k1").unwrap();
        assert_eq!(k1.retired_at_ms, Some(2_000));
        assert!(k1.validates_at(4_999));
        assert!(!k1.validates_at(5_000));
        // A retired key cannot sign again, and the current key cannot be retired.
        assert!(matches!(
            apply(&mut s, &Command::SetCurrentJwtKey { kid: "k1".into() }),
            Err(ApplyError::Conflict(_))
        ));
        assert!(matches!(
            apply(
                &mut s,
                &Command::RetireJwtKey {
                    kid: "k2".into(),
                    at_ms: 3_000,
                    not_after_ms: 3_000
                }
            ),
            Err(ApplyError::Conflict(_))
        ));
        // Past its not_after, the next key change prunes it.
        apply(&mut s, &add("k3", 6_000, false, None)).unwrap();
        assert!(s.jwt().key("k1").is_none());
        assert_eq!(s.jwt().current_key().unwrap().kid, "k2");
    }

    #[test]
    fn a_key_must_fit_its_algorithm_and_its_id_rules() {
        let mut s = State::new();
        let mut cmd = add("k1", 1, true, None);
        if let Command::AddJwtKey { alg, .. } = &mut cmd {
            *alg = JwtAlg::ES256;
        }
        assert!(matches!(apply(&mut s, &cmd), Err(ApplyError::Invalid(_))));
        assert!(matches!(
            apply(&mut s, &add("bad kid", 1, true, None)),
            Err(ApplyError::Invalid(_))
        ));
        assert_eq!(s, State::new());
        assert_eq!(JwtAlg::from_name("none"), None);
        assert_eq!(JwtAlg::from_name("HS256"), None);
        assert_eq!(JwtAlg::from_name("RS256"), Some(JwtAlg::RS256));
    }

    #[test]
    fn revoked_token_ids_are_kept_until_the_token_expires_then_pruned() {
        let mut s = with_tenant();
        let revoke = |jti: &str, exp: u64, at: u64| Command::RevokeJwt {
            tenant: t("acme"),
            jti: jti.into(),
            expires_at_ms: exp,
            revoked_at_ms: at,
        };
        assert_eq!(
            apply(&mut s, &revoke("a", 10_000, 1_000)).unwrap(),
            CommandOutput::Done
        );
        assert!(s.jwt().is_revoked(&t("acme"), "a"));
        assert!(!s.jwt().is_revoked(&t("other"), "a"));
        assert_eq!(
            apply(&mut s, &revoke("a", 10_000, 2_000)).unwrap(),
            CommandOutput::Unchanged
        );
        // An expired token needs no revocation.
        assert_eq!(
            apply(&mut s, &revoke("old", 500, 2_000)).unwrap(),
            CommandOutput::Unchanged
        );
        assert_eq!(s.jwt().revoked_count(), 1);
        // Once "a" expired, the next revocation prunes it.
        apply(&mut s, &revoke("b", 50_000, 20_000)).unwrap();
        assert!(!s.jwt().is_revoked(&t("acme"), "a"));
        assert!(s.jwt().is_revoked(&t("acme"), "b"));
        assert_eq!(s.jwt().revoked_count(), 1);
        assert!(matches!(
            apply(&mut s, &revoke("c", u64::MAX, 20_000)),
            Err(ApplyError::Invalid(_))
        ));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s);
    }

    #[test]
    fn jwt_commands_need_their_permissions() {
        let s = with_tenant();
        let (p, scope) = crate::command::required_permission(&s, &add("k", 1, true, None)).unwrap();
        assert_eq!((p, scope), (Permission::SystemConfigure, RoleScope::Global));
        let (p, scope) = crate::command::required_permission(
            &s,
            &Command::RevokeJwt {
                tenant: t("acme"),
                jti: "j".into(),
                expires_at_ms: 2,
                revoked_at_ms: 1,
            },
        )
        .unwrap();
        assert_eq!(
            (p, scope),
            (
                Permission::TenantSecurity,
                RoleScope::Tenant { tenant: t("acme") }
            )
        );
    }

    fn provider(tenant: &str, issuer: &str, tenant_claim: Option<&str>) -> OidcProvider {
        OidcProvider {
            tenant: t(tenant),
            issuer: issuer.into(),
            audience: "https://quire.example/mcp".into(),
            principal_claim: "sub".into(),
            tenant_claim: tenant_claim.map(str::to_owned),
            groups_claim: "groups".into(),
            workspace_claim: None,
            default_workspace: None,
            groups: BTreeMap::from([(
                "admins".to_owned(),
                GroupMapping {
                    role: Some(Role::TenantAdmin),
                    workspace: None,
                    scopes: ["mcp_server_access".to_owned()].into(),
                },
            )]),
        }
    }

    #[test]
    fn oidc_providers_are_checked_and_issuers_not_shared_silently() {
        let mut s = with_tenant();
        apply(
            &mut s,
            &Command::CreateTenant {
                tenant: t("beta"),
                display_name: "Beta".into(),
            },
        )
        .unwrap();
        let p = provider("acme", "https://idp.example", None);
        apply(
            &mut s,
            &Command::SetOidcProvider {
                provider: p.clone(),
            },
        )
        .unwrap();
        assert_eq!(s.jwt().oidc_provider(&t("acme")), Some(&p));
        assert!(matches!(
            apply(
                &mut s,
                &Command::SetOidcProvider {
                    provider: provider("beta", "https://idp.example", Some("tid"))
                }
            ),
            Err(ApplyError::Conflict(_))
        ));
        assert!(matches!(
            apply(
                &mut s,
                &Command::SetOidcProvider {
                    provider: provider("beta", "http://idp.example", None)
                }
            ),
            Err(ApplyError::Invalid(_))
        ));
        let mut bad = provider("beta", "https://other.example", None);
        bad.groups.get_mut("admins").unwrap().role = Some(Role::EnterpriseAdmin);
        assert!(matches!(
            apply(&mut s, &Command::SetOidcProvider { provider: bad }),
            Err(ApplyError::Invalid(_))
        ));
        apply(&mut s, &Command::RemoveOidcProvider { tenant: t("acme") }).unwrap();
        assert!(s.jwt().oidc_provider(&t("acme")).is_none());
    }

    #[test]
    fn extra_roles_add_to_bindings_but_never_beat_a_restriction_or_a_tenant_boundary() {
        let mut s = with_tenant();
        apply(
            &mut s,
            &Command::CreatePrincipal {
                tenant: t("acme"),
                principal: crate::ids::PrincipalId::new("ann").unwrap(),
                display_name: "Ann".into(),
            },
        )
        .unwrap();
        let ann: Subject = "acme/ann".parse().unwrap();
        let acme = RoleScope::Tenant { tenant: t("acme") };
        let extra = [(Role::TenantAdmin, acme.clone())];
        let p = Permission::TenantUsersManage;
        assert!(!authorize(&s, &ann, p, &acme, 1).allowed);
        assert!(authorize_with_extra_roles(&s, &ann, &extra, p, &acme, 1).allowed);
        assert!(!authorize_with_extra_roles(&s, &ann, &[], p, &acme, 1).allowed);
        // Another tenant's scope grants nothing to a principal of acme.
        let beta = RoleScope::Tenant { tenant: t("beta") };
        assert!(
            !authorize_with_extra_roles(
                &s,
                &ann,
                &[(Role::TenantAdmin, beta.clone())],
                p,
                &beta,
                1
            )
            .allowed
        );
        apply(
            &mut s,
            &Command::AddRestriction {
                subject: ann.clone(),
                permission: Some(p),
                scope: acme.clone(),
                set_at_ms: 1,
                justification: "under review".into(),
            },
        )
        .unwrap();
        let d = authorize_with_extra_roles(&s, &ann, &extra, p, &acme, 1);
        assert!(!d.allowed, "{}", d.reason);
        assert!(d.reason.contains("restriction"), "{}", d.reason);
    }
}
