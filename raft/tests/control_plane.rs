//! ControlPlane end to end on one node: bootstrap, write, read, restart on the same data dir,
//! foreign data dirs, rejected commands, snapshots and log purging.

#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use openraft::{EntryPayload, RaftLogReader};
use quire_raft::command::Command;
use quire_raft::seal::{MasterKey, hash_api_token, integration_aad};
use quire_raft::store::SledStore;
use quire_raft::{
    ApplyError, Budget, CommandOutput, ControlPlane, ControlPlaneConfig, IntegrationId, OpenError,
    PrincipalId, ReadError, TenantId, TokenId, WorkspaceId, WriteError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tempfile::TempDir;

const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn config(dir: &Path, cluster: &str) -> ControlPlaneConfig {
    ControlPlaneConfig::new(dir, 1, cluster, "127.0.0.1:7001")
}

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

async fn started(cfg: ControlPlaneConfig) -> ControlPlane {
    let cp = ControlPlane::open(cfg).await.expect("open");
    cp.bootstrap_single().await.expect("bootstrap");
    cp.wait_leader(LEADER_TIMEOUT).await.expect("leader");
    cp
}

fn setup_commands() -> Vec<Command> {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let key = MasterKey::generate(&mut rng);
    vec![
        Command::InitCluster {
            cluster_name: "test".into(),
            key_check: key.key_check(&mut rng).unwrap(),
        },
        Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Acme".into(),
        },
        Command::AddIntegration {
            tenant: t("acme"),
            integration: IntegrationId::new("main").unwrap(),
            display_name: "Main".into(),
            sealed_token: key
                .seal(b"ntn_token", &integration_aad("acme", "main"), &mut rng)
                .unwrap(),
            budget: Budget {
                requests_per_second: 3,
                burst: 6,
            },
        },
        Command::CreateWorkspace {
            tenant: t("acme"),
            workspace: WorkspaceId::new("docs").unwrap(),
            display_name: "Docs".into(),
            integration: IntegrationId::new("main").unwrap(),
        },
        Command::CreatePrincipal {
            tenant: t("acme"),
            principal: PrincipalId::new("alice").unwrap(),
            display_name: "Alice".into(),
        },
        Command::GrantWorkspace {
            tenant: t("acme"),
            principal: PrincipalId::new("alice").unwrap(),
            workspace: WorkspaceId::new("docs").unwrap(),
        },
        Command::IssueToken {
            tenant: t("acme"),
            principal: PrincipalId::new("alice").unwrap(),
            workspace: WorkspaceId::new("docs").unwrap(),
            token_id: TokenId::new("tok-1").unwrap(),
            secret_hash: hash_api_token("agent-secret"),
            scopes: BTreeSet::from(["notion:read".to_string()]),
            issued_at_ms: 1_000,
            expires_at_ms: None,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_restart_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let cp = started(config(dir.path(), "test")).await;
    for cmd in setup_commands() {
        assert_eq!(cp.write(cmd).await.unwrap(), CommandOutput::Done);
    }
    let n = cp
        .read(|s| {
            assert_eq!(s.cluster().unwrap().cluster_name, "test");
            assert!(
                s.workspace(&t("acme"), &WorkspaceId::new("docs").unwrap())
                    .is_some()
            );
            s.token_by_hash(&hash_api_token("agent-secret"))
                .map(|tok| tok.token_id.clone())
        })
        .await
        .unwrap();
    assert_eq!(n, Some(TokenId::new("tok-1").unwrap()));
    // Metrics are published after the write returns: wait (with a deadline) for them.
    let last_index = cp.status().last_log_index;
    cp.raft()
        .wait(Some(LEADER_TIMEOUT))
        .applied_index(last_index, "metrics catch up")
        .await
        .unwrap();
    let before = cp.status();
    assert!(before.is_leader);
    assert_eq!(before.leader, Some(1));
    assert_eq!(before.voters, vec![1]);
    assert_eq!(before.applied_index, before.last_log_index);
    // initialize's membership entry, the leader's blank entry, then the 7 commands.
    assert_eq!(before.last_log_index, Some(8));
    let state_before = cp.read_applied(|s| s.clone());
    cp.shutdown().await.unwrap();

    // Reopen the same dir: the state comes back, and the log and term continue.
    let cp = ControlPlane::open(config(dir.path(), "test"))
        .await
        .unwrap();
    cp.bootstrap_single().await.unwrap(); // no-op: already initialised
    cp.wait_leader(LEADER_TIMEOUT).await.unwrap();
    let state_after = cp.read(|s| s.clone()).await.unwrap();
    assert_eq!(state_after, state_before);
    let after = cp.status();
    assert!(
        after.term >= before.term,
        "term {} -> {}",
        before.term,
        after.term
    );
    assert!(after.last_log_index >= before.last_log_index);
    // And it keeps taking writes, continuing the log rather than overwriting it.
    cp.write(Command::CreateTenant {
        tenant: t("second"),
        display_name: "Second".into(),
    })
    .await
    .unwrap();
    assert!(cp.read_applied(|s| s.tenant(&t("second")).is_some()));
    let last = cp.status();
    assert!(last.last_log_index > before.last_log_index);
    cp.shutdown().await.unwrap();

    // The log on disk holds every command, in order, at contiguous indexes.
    let mut store = SledStore::open_waiting(dir.path(), "test", 1, LEADER_TIMEOUT)
        .await
        .unwrap();
    let entries = store.log.try_get_log_entries(..).await.unwrap();
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    let expected: Vec<u64> = (0..=last.last_log_index.unwrap()).collect();
    assert_eq!(indexes, expected);
    let commands: Vec<Command> = entries
        .into_iter()
        .filter_map(|e| match e.payload {
            EntryPayload::Normal(c) => Some(c),
            _ => None,
        })
        .collect();
    let mut want = setup_commands();
    want.push(Command::CreateTenant {
        tenant: t("second"),
        display_name: "Second".into(),
    });
    assert_eq!(commands, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_command_returns_rejected_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let cp = started(config(dir.path(), "test")).await;
    cp.write(Command::CreateTenant {
        tenant: t("acme"),
        display_name: "Acme".into(),
    })
    .await
    .unwrap();
    let before = cp.read(|s| s.clone()).await.unwrap();
    // Index 0: initialize's membership, 1: the leader's blank entry, 2: CreateTenant.
    let applied_before = Some(2);
    cp.raft()
        .wait(Some(LEADER_TIMEOUT))
        .applied_index(applied_before, "create applied")
        .await
        .unwrap();
    let err = cp
        .write(Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Again".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Rejected(ApplyError::AlreadyExists(ref m)) if m.contains("acme")),
        "{err}"
    );
    let err = cp
        .write(Command::DeleteTenant { tenant: t("ghost") })
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Rejected(ApplyError::NotFound(_))),
        "{err}"
    );
    assert_eq!(cp.read(|s| s.clone()).await.unwrap(), before);
    // The rejections are in the log (as results), not Raft failures: two more entries applied.
    let want = 4;
    cp.raft()
        .wait(Some(LEADER_TIMEOUT))
        .applied_index_at_least(Some(want), "rejections applied")
        .await
        .unwrap();
    assert_eq!(cp.status().applied_index, Some(want));
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_dir_is_refused() {
    let dir = TempDir::new().unwrap();
    let cp = started(config(dir.path(), "alpha")).await;
    cp.shutdown().await.unwrap();
    match ControlPlane::open(config(dir.path(), "beta")).await {
        Err(OpenError::ForeignDataDir { found, expected }) => {
            assert_eq!(found, "alpha");
            assert_eq!(expected, "beta");
        }
        other => panic!("expected ForeignDataDir, got {other:?}"),
    }
    let mut other_node = config(dir.path(), "alpha");
    other_node.node_id = 2;
    assert!(matches!(
        ControlPlane::open(other_node).await,
        Err(OpenError::NodeIdMismatch {
            found: 1,
            expected: 2
        })
    ));
    // The refusals changed nothing: the right identity still opens.
    let cp = ControlPlane::open(config(dir.path(), "alpha"))
        .await
        .unwrap();
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data_dir_is_reported_with_its_path() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("conf"), b"this is not a sled config").unwrap();
    std::fs::write(dir.path().join("db"), b"garbage garbage garbage").unwrap();
    match ControlPlane::open(config(dir.path(), "test")).await {
        Err(err @ OpenError::Corrupt(..)) => {
            let msg = err.to_string();
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path(), "test");
    cfg.election_timeout_ms = (50, 40);
    assert!(matches!(
        ControlPlane::open(cfg).await,
        Err(OpenError::InvalidConfig(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_purge_the_log_and_restart_recovers() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path(), "test");
    cfg.snapshot_every_logs = 10;
    let cp = started(cfg.clone()).await;
    let none = cp.snapshot_stats();
    assert_eq!((none.bytes, none.last_index, none.built), (0, None, 0));
    for n in 0..35 {
        cp.write(Command::CreateTenant {
            tenant: t(&format!("tenant-{n}")),
            display_name: format!("Tenant {n}"),
        })
        .await
        .unwrap();
    }
    // Wait (with a deadline) for a snapshot to be built and the log purged behind it.
    let mut metrics = cp.raft().metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (snap, purged) = {
            let m = metrics.borrow();
            (m.snapshot, m.purged)
        };
        if snap.is_some() && purged.is_some() {
            break;
        }
        tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .expect("snapshot and purge within the deadline")
            .unwrap();
    }
    let before = cp.read(|s| s.clone()).await.unwrap();
    assert_eq!(before.tenant_count(), 35);
    let automatic = cp.snapshot_stats();
    assert!(automatic.built >= 1, "{automatic:?}");
    assert!(automatic.bytes > 0, "{automatic:?}");

    // A snapshot of everything applied: its recorded size is the state's serialised size.
    // (A trigger is ignored while an automatic build runs, and an entry may be appended
    // meanwhile, so trigger until a snapshot covers everything applied.)
    let deadline = tokio::time::Instant::now() + LEADER_TIMEOUT;
    let (full, state_bytes) = loop {
        cp.raft().trigger().snapshot().await.unwrap();
        let landed = cp
            .raft()
            .wait(Some(Duration::from_secs(1)))
            .metrics(
                |m| m.snapshot.is_some() && m.snapshot == m.last_applied,
                "a snapshot of everything applied",
            )
            .await;
        let (state_bytes, applied) =
            cp.read_applied_indexed(|s, i| (serde_json::to_vec(s).unwrap().len() as u64, i));
        let stats = cp.snapshot_stats();
        if landed.is_ok() && stats.last_index == Some(applied) {
            break (stats, state_bytes);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot at {applied}: {stats:?}"
        );
    };
    assert_eq!(full.bytes, state_bytes);
    assert_eq!(
        state_bytes,
        serde_json::to_vec(&before).unwrap().len() as u64
    );
    assert!(full.built > automatic.built, "{full:?} {automatic:?}");
    cp.shutdown().await.unwrap();

    let cp = ControlPlane::open(cfg).await.unwrap();
    cp.wait_leader(LEADER_TIMEOUT).await.unwrap();
    assert_eq!(cp.read(|s| s.clone()).await.unwrap(), before);
    // The stored snapshot is known again after a restart; none built by this run yet.
    let loaded = cp.snapshot_stats();
    assert_eq!(
        (loaded.bytes, loaded.last_index),
        (full.bytes, full.last_index)
    );
    assert_eq!(loaded.built, 0);
    cp.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninitialised_node_does_not_serve() {
    let dir = TempDir::new().unwrap();
    let cp = ControlPlane::open(config(dir.path(), "test"))
        .await
        .unwrap();
    // Never bootstrapped: no leader, so writes and reads are refused rather than served.
    assert!(cp.wait_leader(Duration::from_millis(300)).await.is_err());
    let err = cp
        .write(Command::CreateTenant {
            tenant: t("acme"),
            display_name: "Acme".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::NotLeader { leader: None }),
        "{err}"
    );
    let err = cp.read(|s| s.tenant_count()).await.unwrap_err();
    assert!(
        matches!(err, ReadError::NotLeader { leader: None }),
        "{err}"
    );
    cp.shutdown().await.unwrap();
}
