//! Seeded random command sequences against `apply`: every rejection leaves the state
//! unchanged, replay is deterministic, and the state survives a serde round trip.
//! A failure names its seed; rerun with that seed to reproduce it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;

use quire_raft::command::{Command, apply};
use quire_raft::placement::{NodeLabels, Residency, ShardMove, shard_of, tenant_key};
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

/// `BAD` is not a valid region: labels and policies naming it are refused.
const REGIONS: &[&str] = &["r1", "r2", "BAD"];

fn random_residency(rng: &mut ChaCha20Rng) -> Residency {
    let allowed: BTreeSet<String> = REGIONS
        .iter()
        .filter(|_| rng.random_bool(0.3))
        .map(|r| (*r).to_owned())
        .collect();
    let preferred_region = rng.random_bool(0.3).then(|| pick(rng, REGIONS).to_owned());
    Residency {
        allowed_regions: allowed,
        preferred_region,
    }
}

fn random_command(rng: &mut ChaCha20Rng, key: &MasterKey) -> Command {
    let tenant = pick(rng, TENANTS);
    let name = pick(rng, NAMES);
    let tid = TenantId::new(tenant).unwrap();
    match rng.random_range(0..16) {
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
        11 => Command::SetNodeLabels {
            node: rng.random_range(1..4),
            labels: NodeLabels {
                region: pick(rng, REGIONS).to_owned(),
                zone: None,
                capacity: rng.random_range(0..3) * 100,
            },
        },
        12 => Command::CreateTenantIn {
            tenant: tid,
            display_name: format!("Tenant {tenant}"),
            residency: random_residency(rng),
        },
        13 => Command::SetTenantResidency {
            tenant: tid,
            residency: random_residency(rng),
        },
        14 => {
            let node = |rng: &mut ChaCha20Rng| rng.random_bool(0.7).then(|| rng.random_range(1..4));
            Command::ApplyPlacement {
                moves: vec![ShardMove {
                    shard: shard_of(&random_residency(rng), &tenant_key(&tid)),
                    from: node(rng),
                    to: node(rng),
                    expected_epoch: rng.random_range(0..3),
                }],
            }
        }
        15 => Command::SetNodeDraining {
            node: rng.random_range(1..4),
            draining: rng.random_bool(0.5),
        },
        _ => Command::RevokeToken {
            tenant: tid,
            token_id: TokenId::new(format!("t{}", rng.random_range(0..20))).unwrap(),
        },
    }
}

/// Cross-references that must hold in every reachable state.
fn check_invariants(state: &State, seed: u64) {
    let placement = state.placement();
    for tenant in placement.residency.keys() {
        assert!(
            state.tenant(tenant).is_some(),
            "seed {seed}: residency of a missing tenant"
        );
    }
    for (shard, owner) in &placement.shards {
        assert!(
            owner.epoch >= 1,
            "seed {seed}: {shard} in the map at epoch 0"
        );
        // (A node may change region after it was given a shard: the planner then moves the
        // shard; what `apply` guarantees is checked on each accepted move.)
        if let Some(node) = owner.node {
            assert!(
                placement.nodes.contains_key(&node),
                "seed {seed}: {shard} on unlabelled node {node}"
            );
        }
    }
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
            if let (Ok(_), Command::ApplyPlacement { moves }) = (&result, cmd) {
                for m in moves {
                    if let Some(to) = m.to {
                        assert!(
                            !before.placement().is_draining(to),
                            "seed {seed}: {} moved to node {to}, which was draining",
                            m.shard
                        );
                    }
                    if let Some(node) = state.placement().owner(&m.shard).node {
                        let region = &state.placement().nodes[&node].region;
                        assert!(
                            m.shard.residency.allows(region),
                            "seed {seed}: {} moved to node {node} in {region}",
                            m.shard
                        );
                    }
                }
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
        15,
        "accepted kinds: {kinds_accepted:?}"
    );
}
