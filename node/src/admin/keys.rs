//! Admin routes for the master key ring: `GET /keys` (which key seals how many secrets) and
//! `POST /keys/rotate` (reseal what a previous key sealed under the current key).
//!
//! Both need `security.policy` (global). A rotation reseals one batch of at most
//! [`MAX_RESEAL_BATCH`] secrets per request, proposed as one `ResealSecrets` command in an
//! `AsAdmin` (authorised and audited in `apply`); `quire ctl keys rotate` repeats the request
//! until nothing is left. `apply` replaces a secret only if the state still holds the sealed
//! value read here, so a token rotated meanwhile is never overwritten. The cluster's key check
//! is resealed last, in a batch of its own, once every other secret is under the current key.
//! A reseal changes no access and no plaintext, so separation of duties does not hold it for
//! approval.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::routing::{get, post};
use axum::{Extension, Router};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use quire_raft::command::{Command, MAX_RESEAL_BATCH, Reseal};
use quire_raft::jwt_keys::signing_key_aad;
use quire_raft::rbac::{Permission, RoleScope};
use quire_raft::seal::{MasterKey, SealError, SealedSecret, integration_aad};
use quire_raft::state::{SecretRef, State as ControlState};

use super::access;
use super::body::Body;
use super::error::AdminError;
use super::routes::{ApiResult, Caller, Shared, bytes, justification, ok, write};
use crate::app::App;

/// Shown for secrets sealed before keys had ids.
pub const UNIDENTIFIED: &str = "(no id)";

/// The routes, merged into the admin API's router.
pub(super) fn routes() -> Router<std::sync::Arc<App>> {
    Router::new()
        .route("/keys", get(status))
        .route("/keys/rotate", post(rotate))
}

fn check_policy(
    app: &App,
    caller: &super::AdminCaller,
    state: &ControlState,
    what: &str,
) -> Result<(), AdminError> {
    access::check(
        caller,
        state,
        Permission::SecurityPolicy,
        &RoleScope::Global,
        app.clock.now_ms(),
    )
    .map_err(|d| access::refuse(app, caller, d, what))
}

/// Reseals `sealed` (at `place`) under the ring's current key.
pub fn reseal(
    ring: &MasterKey,
    place: &SecretRef,
    sealed: &SealedSecret,
    rng: &mut StdRng,
) -> Result<SealedSecret, SealError> {
    match place {
        SecretRef::KeyCheck => ring.reseal_key_check(sealed, rng),
        SecretRef::IntegrationToken {
            tenant,
            integration,
        } => ring.reseal(
            sealed,
            &integration_aad(tenant.as_str(), integration.as_str()),
            rng,
        ),
        SecretRef::JwtSigningKey { kid } => ring.reseal(sealed, &signing_key_aad(kid), rng),
    }
}

/// How many secrets each key id seals (`(no id)` for secrets sealed before ids existed).
pub fn count_by_key(state: &ControlState) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (_, sealed) in state.sealed_secrets() {
        let id = sealed.key_id.as_deref().unwrap_or(UNIDENTIFIED).to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// The next batch to reseal: secrets not under the current key, the key check only when
/// nothing else is left; and how many are not under the current key in all.
fn next_batch(ring: &MasterKey, state: &ControlState) -> (Vec<(SecretRef, SealedSecret)>, u64) {
    let stale: Vec<(SecretRef, SealedSecret)> = state
        .sealed_secrets()
        .into_iter()
        .filter(|(_, sealed)| !ring.is_current(sealed))
        .map(|(place, sealed)| (place, sealed.clone()))
        .collect();
    let pending = stale.len() as u64;
    let others: Vec<_> = stale
        .iter()
        .filter(|(place, _)| *place != SecretRef::KeyCheck)
        .take(MAX_RESEAL_BATCH)
        .cloned()
        .collect();
    if others.is_empty() {
        (stale, pending)
    } else {
        (others, pending)
    }
}

async fn status(State(app): Shared, Extension(caller): Caller) -> ApiResult {
    let ring = &app.master_key;
    let counts = app
        .read(|s| {
            check_policy(&app, &caller, s, "GET /keys")?;
            Ok::<_, AdminError>(count_by_key(s))
        })
        .await??;
    Ok(ok(status_json(ring, &counts)))
}

/// The body of `GET /keys`.
pub fn status_json(ring: &MasterKey, counts: &BTreeMap<String, u64>) -> Value {
    let mut keys = vec![json!({
        "key_id": ring.id(),
        "role": "current",
        "secrets": counts.get(ring.id()).copied().unwrap_or(0),
    })];
    let legacy = counts.get(UNIDENTIFIED).copied().unwrap_or(0);
    let mut safe_to_drop = Vec::new();
    for id in ring.previous_ids() {
        let n = counts.get(id).copied().unwrap_or(0);
        if n == 0 && legacy == 0 {
            safe_to_drop.push(id.to_owned());
        }
        keys.push(json!({"key_id": id, "role": "previous", "secrets": n}));
    }
    for (id, n) in counts {
        if !ring.holds(id) {
            let role = if id == UNIDENTIFIED {
                "sealed before key ids"
            } else {
                "not in this node's ring"
            };
            keys.push(json!({"key_id": id, "role": role, "secrets": n}));
        }
    }
    let not_current: u64 = counts
        .iter()
        .filter(|(id, _)| id.as_str() != ring.id())
        .map(|(_, n)| n)
        .sum();
    json!({
        "current_key": ring.id(),
        "keys": keys,
        "not_current": not_current,
        "safe_to_drop": safe_to_drop,
    })
}

async fn rotate(
    State(app): Shared,
    Extension(caller): Caller,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut b = Body::parse(&bytes(body)?, &["justification"])?;
    let why = justification(&mut b)?;
    let ring = &app.master_key;
    let (batch, pending) = app
        .read(|s| {
            check_policy(&app, &caller, s, "POST /keys/rotate")?;
            Ok::<_, AdminError>(next_batch(ring, s))
        })
        .await??;
    if batch.is_empty() {
        return Ok(ok(json!({
            "current_key": ring.id(),
            "resealed": 0,
            "skipped": 0,
            "pending_before": 0,
            "remaining": 0,
        })));
    }
    let mut rng = StdRng::from_os_rng();
    let mut secrets = Vec::with_capacity(batch.len());
    for (place, expected) in batch {
        let sealed = reseal(ring, &place, &expected, &mut rng).map_err(|e| {
            AdminError::conflict(format!(
                "{place} cannot be resealed: {e}; this node's key ring must hold every key \
                 still in use (security.previous_master_key_files)"
            ))
        })?;
        secrets.push(Reseal {
            secret: place,
            expected,
            sealed,
        });
    }
    write(
        &app,
        &caller,
        Command::ResealSecrets {
            secrets: secrets.clone(),
        },
        why,
    )
    .await?;
    let (resealed, remaining) = app
        .read(|s| {
            let resealed = secrets
                .iter()
                .filter(|r| s.sealed_secret(&r.secret) == Some(&r.sealed))
                .count() as u64;
            let remaining = s
                .sealed_secrets()
                .into_iter()
                .filter(|(_, sealed)| !ring.is_current(sealed))
                .count() as u64;
            (resealed, remaining)
        })
        .await?;
    tracing::info!(
        admin_token = %caller.token_id,
        resealed,
        remaining,
        key = ring.id(),
        "resealed secrets under the current master key"
    );
    Ok(ok(json!({
        "current_key": ring.id(),
        "resealed": resealed,
        "skipped": secrets.len() as u64 - resealed,
        "pending_before": pending,
        "remaining": remaining,
    })))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn status_says_which_previous_key_is_safe_to_drop() {
        let mut rng = StdRng::seed_from_u64(1);
        let (k1, k2, k3) = (
            MasterKey::generate(&mut rng),
            MasterKey::generate(&mut rng),
            MasterKey::generate(&mut rng),
        );
        let ring = k3.clone().with_previous([k2.clone(), k1.clone()]);
        let counts = BTreeMap::from([(k3.id().to_owned(), 4), (k2.id().to_owned(), 1)]);
        let v = status_json(&ring, &counts);
        assert_eq!(v["current_key"], k3.id());
        assert_eq!(v["not_current"], 1);
        assert_eq!(v["safe_to_drop"], json!([k1.id()]));
        assert_eq!(v["keys"][1]["secrets"], 1);
        // A secret without an id may be under any key: nothing is safe to drop.
        let counts = BTreeMap::from([(UNIDENTIFIED.to_owned(), 1)]);
        let v = status_json(&ring, &counts);
        assert_eq!(v["safe_to_drop"], json!([]));
        assert_eq!(v["keys"][3]["role"], "sealed before key ids");
    }
}
