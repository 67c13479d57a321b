//! Seeded random command sequences against `apply`: every rejection leaves the state
//! unchanged, replay is deterministic, and the state survives a serde round trip.
//! A failure names its seed; rerun with that seed to reproduce it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;

use quire_raft::command::{Command, apply};
use quire_raft::seal::{MasterKey, SealedSecret, hash_api_token, integration_aad};
use quire_raft::{Budget, IntegrationId, PrincipalId, State, TenantId, TokenId, WorkspaceId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const TENANTS: &[&str] = &["acme", "globex", "initech"];
const NAMES: &[&str] = &["a", "b", "c"];
const SECRETS: &[&str] = &["s1", "s2", "s3", "s4"];
const COMMANDS_PER_RUN: usize = 400;
const SEEDS: u64 = 40;

fn pick<'a>(rng: &mut ChaCha20Rng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn sealed(key: &MasterKey, rng: &mut ChaCha20Rng, tenant: &str, integration: &str) -> SealedSecret {
    key.seal(b"ntn_token", &integration_aad(tenant, integration), rng)
        .unwrap()
}

fn random_command(rng: &mut ChaCha20Rng, key: &MasterKey) -> Command {
    let tenant = pick(rng, TENANTS);
    let name = pick(rng, NAMES);
    let tid = TenantId::new(tenant).unwrap();
    match rng.random_range(0..11) {
        0 => Command::CreateTenant {
            tenant: tid,
            display_name: format!("Tenant {tenant}"),
        },
        1 => Command::DeleteTenant { tenant: tid },
        2 => Command::CreateWorkspace {
            tenant: tid,
            workspace: WorkspaceId::new(name).unwrap(),
            display_name: "W".into(),
            integration: IntegrationId::new(pick(rng, NAMES)).unwrap(),
        },
        3 => Command::AddIntegration {
            tenant: tid,
            integration: IntegrationId::new(name).unwrap(),
            display_name: "I".into(),
            sealed_token: sealed(key, rng, tenant, name),
            budget: Budget {
                requests_per_second: rng.random_range(0..5),
                burst: rng.random_range(0..5),
            },
        },
        4 => Command::RotateIntegrationToken {
            tenant: tid,
            integration: IntegrationId::new(name).unwrap(),
            sealed_token: sealed(key, rng, tenant, name),
        },
        5 => Command::RemoveIntegration {
            tenant: tid,
            integration: IntegrationId::new(name).unwrap(),
        },
        6 => Command::CreatePrincipal {
            tenant: tid,
            principal: PrincipalId::new(name).unwrap(),
            display_name: "P".into(),
        },
        7 => Command::GrantWorkspace {
            tenant: tid,
            principal: PrincipalId::new(name).unwrap(),
            workspace: WorkspaceId::new(pick(rng, NAMES)).unwrap(),
        },
        8 | 9 => {
            let issued_at_ms = rng.random_range(0..1_000);
            Command::IssueToken {
                tenant: tid,
                principal: PrincipalId::new(name).unwrap(),
                workspace: WorkspaceId::new(pick(rng, NAMES)).unwrap(),
                token_id: TokenId::new(format!("t{}", rng.random_range(0..20))).unwrap(),
                secret_hash: hash_api_token(pick(rng, SECRETS)),
                scopes: BTreeSet::from(["notion:read".to_string()]),
                issued_at_ms,
                expires_at_ms: rng
                    .random_bool(0.5)
                    .then(|| issued_at_ms + rng.random_range(0..100)),
            }
        }
        _ => Command::RevokeToken {
            tenant: tid,
            token_id: TokenId::new(format!("t{}", rng.random_range(0..20))).unwrap(),
        },
    }
}

/// Cross-references that must hold in every reachable state.
fn check_invariants(state: &State, seed: u64) {
    for tenant in state.tenants() {
        for ws in state.workspaces(&tenant.id) {
            assert!(
                state.integration(&tenant.id, &ws.integration_id).is_some(),
                "seed {seed}: workspace {:?} points at a missing integration",
                ws.id
            );
        }
        for p in state.principals(&tenant.id) {
            for w in &p.workspaces {
                assert!(
                    state.workspace(&tenant.id, w).is_some(),
                    "seed {seed}: dangling grant"
                );
            }
        }
        for tok in state.tokens(&tenant.id) {
            assert_eq!(
                state.token_by_hash(&tok.hash).map(|t| &t.token_id),
                Some(&tok.token_id),
                "seed {seed}: token index out of step"
            );
            assert!(
                state.principal(&tenant.id, &tok.principal).is_some(),
                "seed {seed}"
            );
        }
    }
}

#[test]
fn random_sequences_keep_rejections_side_effect_free_and_replay_deterministically() {
    let mut kinds_accepted = BTreeSet::new();
    for seed in 0..SEEDS {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let key = MasterKey::generate(&mut rng);
        let log: Vec<Command> = (0..COMMANDS_PER_RUN)
            .map(|_| random_command(&mut rng, &key))
            .collect();

        let mut state = State::new();
        let mut results = Vec::new();
        let mut accepted = 0;
        for cmd in &log {
            let before = state.clone();
            let result = apply(&mut state, cmd);
            if result.is_err() {
                assert_eq!(
                    state,
                    before,
                    "seed {seed}: rejected {} changed state",
                    cmd.kind()
                );
            } else {
                accepted += 1;
                kinds_accepted.insert(cmd.kind());
            }
            check_invariants(&state, seed);
            results.push(result);
        }
        assert!(
            accepted > 20,
            "seed {seed}: only {accepted} commands accepted"
        );

        let mut replayed = State::new();
        let replay_results: Vec<_> = log.iter().map(|c| apply(&mut replayed, c)).collect();
        assert_eq!(replayed, state, "seed {seed}: replay diverged");
        assert_eq!(
            replay_results, results,
            "seed {seed}: replay results diverged"
        );

        let json = serde_json::to_vec(&state).unwrap();
        let back: State = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, state, "seed {seed}: serde round trip");
    }
    // The generator reaches every command's success path somewhere.
    assert_eq!(
        kinds_accepted.len(),
        10,
        "accepted kinds: {kinds_accepted:?}"
    );
}
