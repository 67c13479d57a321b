//! JWT bearer tokens: the cluster's built-in issuer (signing with the current key of the
//! replicated state, its private key unsealed with the master key) and the validation every
//! JWT goes through, built-in or from a tenant's OpenID Connect provider ([`crate::oidc`]).
//!
//! Validation, in order: the token has three parts; its header's `alg` is on the allow-list
//! (EdDSA, ES256, RS256 — never `none`, never an HMAC); it names a `kid`; the key with that
//! `kid` exists, still validates, and is of the header's algorithm (so a public key can never
//! be used as an HMAC secret, nor one key type as another); the signature verifies; `iss` is
//! the expected issuer; `aud` holds an accepted audience (RFC 8707: the MCP resource URL);
//! `exp` lies ahead and `nbf` (when present) behind, within `security.jwt_leeway_secs` on the
//! node's clock; and its `jti` is not revoked for its tenant.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use quire_raft::ids::{PrincipalId, TenantId, WorkspaceId};
use quire_raft::jwt_keys::{JwtAlg, PublicKey, SigningKey, signing_key_aad};
use quire_raft::seal::{MasterKey, SealedSecret};
use quire_raft::state::State;

use crate::auth::Caller;
use crate::config::Config;

/// Prefix of a built-in JWT's `jti`.
pub const JTI_PREFIX: &str = "jwt-";

/// Why a JWT was refused (or could not be made). The message names what was wrong, never a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the algorithm {0} is not accepted (only EdDSA, ES256 and RS256)")]
    AlgorithmNotAllowed(String),
    #[error("the token names no key id (kid)")]
    NoKid,
    #[error("no valid signing key {0:?} (unknown, removed, or past its overlap)")]
    UnknownKey(String),
    #[error("the token's algorithm {header} does not match its key's {key}")]
    KeyMismatch { header: String, key: String },
    #[error("the token's signature or claims do not verify: {0}")]
    Invalid(String),
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was revoked")]
    Revoked,
    #[error("the token's issuer is unknown")]
    UnknownIssuer,
    #[error("{0}")]
    Claims(String),
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// The settings that decide what a JWT must say to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The built-in issuer (`iss`).
    pub issuer: String,
    /// The audience built-in tokens are issued for (cluster-wide).
    pub audience: String,
    /// Every audience accepted in built-in tokens: `audience` and this node's `/mcp` URL.
    pub accepted_audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Longest lifetime of an issued token, in seconds.
    pub max_ttl_secs: u64,
}

impl JwtSettings {
    /// The settings of `config` (see `security.jwt_*`).
    pub fn from_config(config: &Config) -> Self {
        let issuer = config
            .security
            .jwt_issuer
            .clone()
            .unwrap_or_else(|| format!("quire:{}", config.node.cluster_name));
        let audience = config
            .security
            .jwt_audience
            .clone()
            .unwrap_or_else(|| format!("urn:quire:{}:mcp", config.node.cluster_name));
        let mut accepted_audiences = vec![audience.clone(), format!("{}/mcp", config.public_url())];
        accepted_audiences.dedup();
        Self {
            issuer,
            audience,
            accepted_audiences,
            leeway_secs: config.security.jwt_leeway_secs,
            max_ttl_secs: config.security.jwt_max_ttl_secs,
        }
    }
}

/// The claims of a built-in token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltinClaims {
    pub iss: String,
    /// The principal (within `tenant`).
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub tenant: String,
    pub workspace: String,
    /// Space-separated OAuth scopes.
    pub scope: String,
}

/// Whether a bearer secret has the shape of a JWT (three dot-separated parts).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The accepted algorithm a header names.
pub fn header_alg(alg: Algorithm) -> Result<JwtAlg, JwtError> {
    match alg {
        Algorithm::EdDSA => Ok(JwtAlg::EdDSA),
        Algorithm::ES256 => Ok(JwtAlg::ES256),
        Algorithm::RS256 => Ok(JwtAlg::RS256),
        other => Err(JwtError::AlgorithmNotAllowed(format!("{other:?}"))),
    }
}

fn jose(alg: JwtAlg) -> Algorithm {
    match alg {
        JwtAlg::EdDSA => Algorithm::EdDSA,
        JwtAlg::ES256 => Algorithm::ES256,
        JwtAlg::RS256 => Algorithm::RS256,
    }
}

/// The verification key of a public key.
pub fn decoding_key(key: &PublicKey) -> Result<DecodingKey, JwtError> {
    let made = match key {
        PublicKey::Okp { x } => DecodingKey::from_ed_components(x),
        PublicKey::Ec { x, y } => DecodingKey::from_ec_components(x, y),
        PublicKey::Rsa { n, e } => DecodingKey::from_rsa_components(n, e),
    };
    made.map_err(|e| JwtError::Invalid(format!("unusable public key: {e}")))
}

/// The header of a JWT (unverified): its accepted algorithm and `kid`.
pub fn peek_header(token: &str) -> Result<(JwtAlg, String), JwtError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
    let alg = header_alg(header.alg)?;
    let kid = header.kid.ok_or(JwtError::NoKid)?;
    Ok((alg, kid))
}

/// The claims of a JWT, unverified: only to choose where to verify it.
pub fn peek_claims(token: &str) -> Result<serde_json::Value, JwtError> {
    jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
        .map_err(|e| JwtError::Malformed(e.to_string()))
}

/// Verifies `token`'s signature with `key` (whose algorithm is `key_alg`), its `iss` against
/// `issuer` and its `aud` against `audiences`, then `exp`/`nbf` against `now_ms`. Returns the
/// claims.
pub fn verify(
    token: &str,
    key_alg: JwtAlg,
    key: &DecodingKey,
    issuer: &str,
    audiences: &[String],
    leeway_secs: u64,
    now_ms: u64,
) -> Result<serde_json::Value, JwtError> {
    let (alg, _) = peek_header(token)?;
    if alg != key_alg {
        return Err(JwtError::KeyMismatch {
            header: alg.name().to_owned(),
            key: key_alg.name().to_owned(),
        });
    }
    let mut validation = Validation::new(jose(alg));
    // Time is checked below on the node's clock, not the library's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(audiences);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
        .map_err(|e| JwtError::Invalid(e.to_string()))?;
    let claims = data.claims;
    let now_secs = now_ms / 1000;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| JwtError::Claims("exp must be a number of seconds".into()))?;
    if now_secs >= exp.saturating_add(leeway_secs) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf
            .as_u64()
            .ok_or_else(|| JwtError::Claims("nbf must be a number of seconds".into()))?;
        if now_secs.saturating_add(leeway_secs) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    Ok(claims)
}

/// The `iss` of a JWT's (unverified) claims.
pub fn claimed_issuer(claims: &serde_json::Value) -> Option<&str> {
    claims.get("iss").and_then(serde_json::Value::as_str)
}

/// Validates a token of the built-in issuer against `state` and yields its caller.
pub fn validate_builtin(
    state: &State,
    settings: &JwtSettings,
    token: &str,
    now_ms: u64,
) -> Result<Caller, JwtError> {
    let (_, kid) = peek_header(token)?;
    let key = state
        .jwt()
        .key(&kid)
        .filter(|k| k.validates_at(now_ms))
        .ok_or_else(|| JwtError::UnknownKey(kid.clone()))?;
    let claims = verify(
        token,
        key.alg,
        &decoding_key(&key.public_key)?,
        &settings.issuer,
        &settings.accepted_audiences,
        settings.leeway_secs,
        now_ms,
    )?;
    let claims: BuiltinClaims = serde_json::from_value(claims).map_err(|e| {
        JwtError::Claims(format!(
            "the claims are not those of a Quire token ({e}); tokens of an identity provider need its issuer configured for the tenant"
        ))
    })?;
    let tenant = TenantId::new(&claims.tenant).map_err(|e| JwtError::Claims(e.to_string()))?;
    let principal = PrincipalId::new(&claims.sub).map_err(|e| JwtError::Claims(e.to_string()))?;
    let workspace =
        WorkspaceId::new(&claims.workspace).map_err(|e| JwtError::Claims(e.to_string()))?;
    if state.jwt().is_revoked(&tenant, &claims.jti) {
        return Err(JwtError::Revoked);
    }
    if state.principal(&tenant, &principal).is_none() {
        return Err(JwtError::Claims(format!(
            "principal {}/{} does not exist",
            tenant.as_str(),
            principal.as_str()
        )));
    }
    if state.workspace(&tenant, &workspace).is_none() {
        return Err(JwtError::Claims(format!(
            "workspace {}/{} does not exist",
            tenant.as_str(),
            workspace.as_str()
        )));
    }
    Ok(Caller {
        tenant_id: claims.tenant,
        principal_id: claims.sub,
        workspace_id: claims.workspace,
        token_id: claims.jti,
        scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        extra_roles: Vec::new(),
    })
}

/// What a built-in token is to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub tenant: TenantId,
    pub principal: PrincipalId,
    pub workspace: WorkspaceId,
    pub scopes: BTreeSet<String>,
    pub ttl_secs: u64,
}

/// A token just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedJwt {
    pub token: String,
    pub jti: String,
    pub kid: String,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// Signs a token for `request` with the current signing key of `state`, its private key
/// unsealed with `master_key`.
pub fn issue(
    state: &State,
    master_key: &MasterKey,
    settings: &JwtSettings,
    request: &IssueRequest,
    now_ms: u64,
) -> Result<IssuedJwt, JwtError> {
    if request.ttl_secs == 0 || request.ttl_secs > settings.max_ttl_secs {
        return Err(JwtError::Claims(format!(
            "ttl_secs must be 1..={} (security.jwt_max_ttl_secs)",
            settings.max_ttl_secs
        )));
    }
    let key = state.jwt().current_key().ok_or_else(|| {
        JwtError::Signing(
            "the cluster has no signing key; add one with `quire ctl keys jwt rotate`".into(),
        )
    })?;
    let encoding = encoding_key(master_key, key)?;
    let iat = now_ms / 1000;
    let exp = iat + request.ttl_secs;
    let jti = new_jti();
    let claims = BuiltinClaims {
        iss: settings.issuer.clone(),
        sub: request.principal.as_str().to_owned(),
        aud: settings.audience.clone(),
        exp,
        nbf: iat,
        iat,
        jti: jti.clone(),
        tenant: request.tenant.as_str().to_owned(),
        workspace: request.workspace.as_str().to_owned(),
        scope: request
            .scopes
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut header = Header::new(jose(key.alg));
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &encoding)
        .map_err(|e| JwtError::Signing(e.to_string()))?;
    Ok(IssuedJwt {
        token,
        jti,
        kid: key.kid.clone(),
        issued_at_ms: iat * 1000,
        expires_at_ms: exp * 1000,
    })
}

fn encoding_key(master_key: &MasterKey, key: &SigningKey) -> Result<EncodingKey, JwtError> {
    let der = master_key
        .unseal(&key.sealed_private_key, &signing_key_aad(&key.kid))
        .map_err(|e| JwtError::Signing(format!("signing key {:?}: {e}", key.kid)))?;
    Ok(match key.alg {
        JwtAlg::EdDSA => EncodingKey::from_ed_der(&der),
        JwtAlg::ES256 => EncodingKey::from_ec_der(&der),
        JwtAlg::RS256 => EncodingKey::from_rsa_der(&der),
    })
}

fn new_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut StdRng::from_os_rng(), &mut bytes);
    format!("{JTI_PREFIX}{}", hex::encode(bytes))
}

/// A freshly generated signing key: its id, public key and sealed private key.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub kid: String,
    pub alg: JwtAlg,
    pub public_key: PublicKey,
    pub sealed_private_key: SealedSecret,
}

/// Generates a signing key (EdDSA or ES256) and seals its private key under `master_key`,
/// bound to its new `kid`.
pub fn generate_key(master_key: &MasterKey, alg: JwtAlg, now_ms: u64) -> Result<NewKey, JwtError> {
    let sign_alg = match alg {
        JwtAlg::EdDSA => &rcgen::PKCS_ED25519,
        JwtAlg::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        JwtAlg::RS256 => {
            return Err(JwtError::Signing(
                "the built-in issuer signs with EdDSA or ES256; RS256 is accepted only from identity providers".into(),
            ));
        }
    };
    let pair = rcgen::KeyPair::generate_for(sign_alg)
        .map_err(|e| JwtError::Signing(format!("cannot generate a key: {e}")))?;
    let raw = pair.public_key_raw();
    let public_key = match alg {
        JwtAlg::EdDSA => PublicKey::Okp {
            x: URL_SAFE_NO_PAD.encode(raw),
        },
        _ => {
            // An uncompressed P-256 point: 0x04, x (32 bytes), y (32 bytes).
            if raw.len() != 65 || raw[0] != 4 {
                return Err(JwtError::Signing("unexpected P-256 public key".into()));
            }
            PublicKey::Ec {
                x: URL_SAFE_NO_PAD.encode(&raw[1..33]),
                y: URL_SAFE_NO_PAD.encode(&raw[33..]),
            }
        }
    };
    let mut suffix = [0u8; 4];
    rand::RngCore::fill_bytes(&mut StdRng::from_os_rng(), &mut suffix);
    let kid = format!("k{}-{}", now_ms / 1000, hex::encode(suffix));
    let der = quire_raft::seal::Zeroizing::new(pair.serialize_der());
    let sealed_private_key = master_key
        .seal(&der, &signing_key_aad(&kid), &mut StdRng::from_os_rng())
        .map_err(|e| JwtError::Signing(format!("cannot seal the key: {e}")))?;
    Ok(NewKey {
        kid,
        alg,
        public_key,
        sealed_private_key,
    })
}

/// The command that adds `key`; with `make_current` it signs from now on, and the previous
/// current key validates until `previous_not_after_ms`.
pub fn add_key_command(
    key: NewKey,
    now_ms: u64,
    make_current: bool,
    previous_not_after_ms: Option<u64>,
) -> quire_raft::command::Command {
    quire_raft::command::Command::AddJwtKey {
        kid: key.kid,
        alg: key.alg,
        public_key: key.public_key,
        sealed_private_key: key.sealed_private_key,
        created_at_ms: now_ms,
        make_current,
        previous_not_after_ms,
    }
}

/// The JWK of a public key (for `GET /admin/v1/jwt/keys`).
pub fn jwk_json(key: &SigningKey) -> serde_json::Value {
    let mut jwk = serde_json::to_value(&key.public_key).unwrap_or_default();
    if let PublicKey::Okp { .. } = key.public_key {
        jwk["crv"] = "Ed25519".into();
    } else if let PublicKey::Ec { .. } = key.public_key {
        jwk["crv"] = "P-256".into();
    }
    jwk["kid"] = key.kid.clone().into();
    jwk["alg"] = key.alg.name().into();
    jwk["use"] = "sig".into();
    jwk
}

#[cfg(test)]
mod tests {
    use quire_raft::command::{Command, apply};
    use quire_raft::ids::IntegrationId;
    use quire_raft::state::Budget;

    use super::*;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn master() -> MasterKey {
        MasterKey::from_bytes([9; 32])
    }

    fn settings() -> JwtSettings {
        JwtSettings::from_config(&Config::default())
    }

    /// A state with tenant acme, workspace ws, principal ann (a member) and key k1 current.
    fn state() -> (State, String) {
        let mut s = State::new();
        let t = TenantId::new("acme").unwrap();
        let cmds = [
            Command::CreateTenant {
                tenant: t.clone(),
                display_name: "Acme".into(),
            },
            Command::AddIntegration {
                tenant: t.clone(),
                integration: IntegrationId::new("notion").unwrap(),
                display_name: "Notion".into(),
                sealed_token: master()
                    .seal(b"ntn_secret_token", b"x", &mut StdRng::seed_from_u64(1))
                    .unwrap(),
                budget: Budget {
                    requests_per_second: 3,
                    burst: 5,
                },
            },
            Command::CreateWorkspace {
                tenant: t.clone(),
                workspace: WorkspaceId::new("ws").unwrap(),
                display_name: "WS".into(),
                integration: IntegrationId::new("notion").unwrap(),
            },
            Command::CreatePrincipal {
                tenant: t.clone(),
                principal: PrincipalId::new("ann").unwrap(),
                display_name: "Ann".into(),
            },
            Command::GrantWorkspace {
                tenant: t.clone(),
                principal: PrincipalId::new("ann").unwrap(),
                workspace: WorkspaceId::new("ws").unwrap(),
            },
        ];
        for c in &cmds {
            apply(&mut s, c).unwrap();
        }
        let key = generate_key(&master(), JwtAlg::EdDSA, NOW_MS).unwrap();
        let kid = key.kid.clone();
        apply(&mut s, &add_key_command(key, NOW_MS, true, None)).unwrap();
        (s, kid)
    }

    fn request(ttl_secs: u64) -> IssueRequest {
        IssueRequest {
            tenant: TenantId::new("acme").unwrap(),
            principal: PrincipalId::new("ann").unwrap(),
            workspace: WorkspaceId::new("ws").unwrap(),
            scopes: ["mcp_server_access", "notion_workspace_read"]
                .map(str::to_owned)
                .into(),
            ttl_secs,
        }
    }

    fn claims(s: &JwtSettings) -> BuiltinClaims {
        let iat = NOW_MS / 1000;
        BuiltinClaims {
            iss: s.issuer.clone(),
            sub: "ann".into(),
            aud: s.audience.clone(),
            exp: iat + 600,
            nbf: iat,
            iat,
            jti: "jwt-test".into(),
            tenant: "acme".into(),
            workspace: "ws".into(),
            scope: "mcp_server_access".into(),
        }
    }

    /// Signs `claims` with key `kid` of `state` (as the issuer would), under `header_alg`.
    fn sign(state: &State, kid: &str, claims: &BuiltinClaims) -> String {
        let key = state.jwt().key(kid).unwrap();
        let mut header = Header::new(jose(key.alg));
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &encoding_key(&master(), key).unwrap()).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn an_issued_token_validates_to_its_caller() {
        let (s, kid) = state();
        let issued = issue(&s, &master(), &settings(), &request(600), NOW_MS).unwrap();
        assert_eq!(issued.kid, kid);
        assert!(looks_like_jwt(&issued.token));
        let caller = validate_builtin(&s, &settings(), &issued.token, NOW_MS + 1_000).unwrap();
        assert_eq!(caller.tenant_id, "acme");
        assert_eq!(caller.principal_id, "ann");
        assert_eq!(caller.workspace_id, "ws");
        assert_eq!(caller.token_id, issued.jti);
        assert_eq!(caller.scopes, request(600).scopes);
        assert!(caller.extra_roles.is_empty());
        // A node's own /mcp URL is accepted as audience too.
        let mut c = claims(&settings());
        c.aud = format!("{}/mcp", Config::default().public_url());
        assert!(validate_builtin(&s, &settings(), &sign(&s, &kid, &c), NOW_MS).is_ok());
    }

    #[test]
    fn none_and_hmac_are_refused_even_with_the_public_key_as_secret() {
        let (s, kid) = state();
        let c = serde_json::to_value(claims(&settings())).unwrap();
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "kid": kid})),
            b64(&c)
        );
        assert!(matches!(
            validate_builtin(&s, &settings(), &none, NOW_MS),
            Err(JwtError::Malformed(_) | JwtError::AlgorithmNotAllowed(_))
        ));
        // HS256 keyed with the Ed25519 public key's bytes (and with its base64 text).
        let PublicKey::Okp { x } = &s.jwt().key(&kid).unwrap().public_key else {
            panic!("an EdDSA key");
        };
        let raw = URL_SAFE_NO_PAD.decode(x).unwrap();
        for secret in [raw.as_slice(), x.as_bytes()] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.clone());
            let token =
                jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(secret).unwrap())
                    .unwrap();
            assert_eq!(
                validate_builtin(&s, &settings(), &token, NOW_MS),
                Err(JwtError::AlgorithmNotAllowed("HS256".into()))
            );
        }
    }

    #[test]
    fn a_header_algorithm_other_than_the_keys_is_refused() {
        let (s, kid) = state();
        // Signed with some ES256 key, claiming the EdDSA key's kid.
        let other = generate_key(&master(), JwtAlg::ES256, NOW_MS).unwrap();
        let der = master()
            .unseal(&other.sealed_private_key, &signing_key_aad(&other.kid))
            .unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(
            &header,
            &claims(&settings()),
            &EncodingKey::from_ec_der(&der),
        )
        .unwrap();
        assert_eq!(
            validate_builtin(&s, &settings(), &token, NOW_MS),
            Err(JwtError::KeyMismatch {
                header: "ES256".into(),
                key: "EdDSA".into()
            })
        );
        // A signature by a key the cluster does not hold does not verify under its kid.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let stranger = generate_key(&master(), JwtAlg::EdDSA, NOW_MS).unwrap();
        let der = master()
            .unseal(
                &stranger.sealed_private_key,
                &signing_key_aad(&stranger.kid),
            )
            .unwrap();
        let token = jsonwebtoken::encode(
            &header,
            &claims(&settings()),
            &EncodingKey::from_ed_der(&der),
        )
        .unwrap();
        assert!(matches!(
            validate_builtin(&s, &settings(), &token, NOW_MS),
            Err(JwtError::Invalid(_))
        ));
        // No kid at all.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = None;
        let key = s.jwt().key(&kid).unwrap();
        let token = jsonwebtoken::encode(
            &header,
            &claims(&settings()),
            &encoding_key(&master(), key).unwrap(),
        )
        .unwrap();
        assert_eq!(
            validate_builtin(&s, &settings(), &token, NOW_MS),
            Err(JwtError::NoKid)
        );
    }

    #[test]
    fn expiry_and_not_before_hold_within_the_leeway() {
        let (s, _) = state();
        let set = settings();
        let issued = issue(&s, &master(), &set, &request(60), NOW_MS).unwrap();
        let leeway_ms = set.leeway_secs * 1000;
        assert!(
            validate_builtin(&s, &set, &issued.token, NOW_MS + 60_000 + leeway_ms - 1_000).is_ok()
        );
        assert_eq!(
            validate_builtin(&s, &set, &issued.token, NOW_MS + 60_000 + leeway_ms),
            Err(JwtError::Expired)
        );
        assert!(validate_builtin(&s, &set, &issued.token, NOW_MS - leeway_ms).is_ok());
        assert_eq!(
            validate_builtin(&s, &set, &issued.token, NOW_MS - leeway_ms - 1_000),
            Err(JwtError::NotYetValid)
        );
        assert!(matches!(
            issue(&s, &master(), &set, &request(set.max_ttl_secs + 1), NOW_MS),
            Err(JwtError::Claims(_))
        ));
    }

    #[test]
    fn a_wrong_audience_or_issuer_is_refused() {
        let (s, kid) = state();
        let set = settings();
        let mut c = claims(&set);
        c.aud = "https://elsewhere.example/mcp".into();
        assert!(matches!(
            validate_builtin(&s, &set, &sign(&s, &kid, &c), NOW_MS),
            Err(JwtError::Invalid(e)) if e.contains("Audience") || e.contains("audience")
        ));
        let mut c = claims(&set);
        c.iss = "quire:another-cluster".into();
        assert!(matches!(
            validate_builtin(&s, &set, &sign(&s, &kid, &c), NOW_MS),
            Err(JwtError::Invalid(e)) if e.contains("Issuer") || e.contains("issuer")
        ));
        // The same token is fine with the right claims.
        assert!(validate_builtin(&s, &set, &sign(&s, &kid, &claims(&set)), NOW_MS).is_ok());
    }

    #[test]
    fn a_revoked_token_id_is_refused() {
        let (mut s, _) = state();
        let issued = issue(&s, &master(), &settings(), &request(600), NOW_MS).unwrap();
        apply(
            &mut s,
            &Command::RevokeJwt {
                tenant: TenantId::new("acme").unwrap(),
                jti: issued.jti.clone(),
                expires_at_ms: issued.expires_at_ms,
                revoked_at_ms: NOW_MS,
            },
        )
        .unwrap();
        assert_eq!(
            validate_builtin(&s, &settings(), &issued.token, NOW_MS + 1),
            Err(JwtError::Revoked)
        );
    }

    #[test]
    fn a_rotated_key_validates_through_its_overlap_and_a_removed_key_not_at_all() {
        let (mut s, k1) = state();
        let set = settings();
        let old = issue(&s, &master(), &set, &request(3_600), NOW_MS).unwrap();
        let k2 = generate_key(&master(), JwtAlg::ES256, NOW_MS).unwrap();
        let k2_id = k2.kid.clone();
        let overlap_end = NOW_MS + 600_000;
        apply(
            &mut s,
            &add_key_command(k2, NOW_MS + 1_000, true, Some(overlap_end)),
        )
        .unwrap();
        let new = issue(&s, &master(), &set, &request(3_600), NOW_MS + 2_000).unwrap();
        assert_eq!(new.kid, k2_id);
        // The retired key still validates its tokens during the overlap...
        assert!(validate_builtin(&s, &set, &old.token, overlap_end - 1).is_ok());
        assert!(validate_builtin(&s, &set, &new.token, overlap_end - 1).is_ok());
        // ...and not after it, though the token itself has not expired.
        assert_eq!(
            validate_builtin(&s, &set, &old.token, overlap_end),
            Err(JwtError::UnknownKey(k1.clone()))
        );
        // Once pruned (the next key change past the overlap), the key is gone.
        let k3 = generate_key(&master(), JwtAlg::EdDSA, overlap_end).unwrap();
        apply(&mut s, &add_key_command(k3, overlap_end + 1, false, None)).unwrap();
        assert!(s.jwt().key(&k1).is_none());
        assert_eq!(
            validate_builtin(&s, &set, &old.token, NOW_MS + 3_000),
            Err(JwtError::UnknownKey(k1))
        );
        assert!(validate_builtin(&s, &set, &new.token, overlap_end + 2).is_ok());
    }

    #[test]
    fn a_signing_key_opens_only_for_its_own_kid() {
        let (s, kid) = state();
        let mut key = s.jwt().key(&kid).unwrap().clone();
        key.kid = "another".into();
        assert!(matches!(
            encoding_key(&master(), &key),
            Err(JwtError::Signing(_))
        ));
        assert!(matches!(
            encoding_key(&MasterKey::from_bytes([1; 32]), s.jwt().key(&kid).unwrap()),
            Err(JwtError::Signing(_))
        ));
    }
}
