//! ControlPlane on the simulated disk: crash a one-node group in the middle of a stream of
//! writes, restart it on the same disk, and check that no acknowledged write was lost —
//! with torn writes, across several crashes and snapshots — and that the planted
//! ack-before-flush bug does lose one (so the check can see it). Also: identity checks and
//! injected storage faults surface as errors, never panics.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quire_raft::command::Command;
use quire_raft::engine::{EngineTree, SimDisk, SimFaults, StorageEngine};
use quire_raft::store::{TREE_LOG, TREE_META};
use quire_raft::{ControlPlane, ControlPlaneConfig, NoPeers, OpenError, TenantId, WriteError};

const DEADLINE: Duration = Duration::from_secs(10);

fn config(node_id: u64, cluster: &str) -> ControlPlaneConfig {
    let mut c = ControlPlaneConfig::new("unused-by-open-with", node_id, cluster, "node-1");
    c.snapshot_every_logs = 10;
    c
}

fn tenant(n: u64) -> TenantId {
    TenantId::new(format!("tenant-{n}")).unwrap()
}

fn create(n: u64) -> Command {
    Command::CreateTenant {
        tenant: tenant(n),
        display_name: format!("Tenant {n}"),
    }
}

async fn start(disk: &SimDisk) -> ControlPlane {
    let cp = ControlPlane::open_with(config(1, "sim"), disk.open(), NoPeers)
        .await
        .expect("open on the simulated disk");
    cp.bootstrap_single().await.expect("bootstrap");
    cp.wait_leader(DEADLINE).await.expect("leader");
    cp
}

/// Acknowledged writes in `acked` that the node does not have.
async fn missing(cp: &ControlPlane, acked: &BTreeSet<u64>) -> Vec<u64> {
    cp.read(|s| {
        acked
            .iter()
            .copied()
            .filter(|n| s.tenant(&tenant(*n)).is_none())
            .collect()
    })
    .await
    .expect("linearizable read")
}

/// Runs `writers` concurrent writers (writer `w` writes `base + w`, `base + w + writers`,
/// ...) until `crash_after` acknowledgements arrived, then crashes the disk. Returns every
/// acknowledged write, including those acknowledged after the crash (their entries were
/// durable before it).
async fn write_then_crash(
    cp: ControlPlane,
    disk: &SimDisk,
    base: u64,
    writers: u64,
    crash_after: usize,
) -> BTreeSet<u64> {
    let cp = Arc::new(cp);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let cp = cp.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = base + w;
            // Bounded: stops at the first failure (the crash), or after 1000 writes.
            for _ in 0..1000 {
                match cp.write(create(n)).await {
                    Ok(_) => {
                        if tx.send(n).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
                n += writers;
            }
        }));
    }
    drop(tx);
    let mut acked = BTreeSet::new();
    while acked.len() < crash_after {
        let n = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("acknowledgements keep coming")
            .expect("writers stopped before the crash");
        acked.insert(n);
    }
    // Crash: unflushed writes are lost (or torn) and the node's handle on the disk is dead.
    disk.crash();
    for task in tasks {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("writers stop after the crash")
            .unwrap();
    }
    while let Some(n) = rx.recv().await {
        acked.insert(n);
    }
    acked
}

async fn crash_cycles(seed: u64, torn_writes: bool) {
    let disk = SimDisk::with_label(seed, format!("seed-{seed}"));
    disk.set_faults(SimFaults {
        torn_writes,
        ..SimFaults::default()
    });
    let mut all_acked = BTreeSet::new();
    for cycle in 0..3u64 {
        let cp = start(&disk).await;
        let still = missing(&cp, &all_acked).await;
        assert!(
            still.is_empty(),
            "seed {seed} cycle {cycle}: acknowledged writes lost: {still:?}"
        );
        let crash_after = 20 + usize::try_from((seed + cycle) % 7).unwrap();
        let acked = write_then_crash(cp, &disk, cycle * 100_000, 4, crash_after).await;
        all_acked.extend(acked);
    }
    let cp = start(&disk).await;
    let still = missing(&cp, &all_acked).await;
    assert!(
        still.is_empty(),
        "seed {seed}: acknowledged writes lost: {still:?}"
    );
    assert!(all_acked.len() >= 60);
    let stats = disk.stats();
    assert_eq!(stats.crashes, 3);
    // The crashes did catch writes in flight (so the check above meant something).
    assert!(stats.writes_lost + stats.writes_kept_torn > 0, "{stats:?}");
    cp.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn crashes_lose_no_acknowledged_write() {
    for seed in 0..3 {
        crash_cycles(seed, false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn torn_crashes_lose_no_acknowledged_write() {
    for seed in 10..14 {
        crash_cycles(seed, true).await;
    }
}

#[tokio::test(start_paused = true)]
async fn planted_ack_before_flush_bug_loses_an_acknowledged_write() {
    let disk = SimDisk::new(7);
    let cp = start(&disk).await;
    let mut acked = BTreeSet::new();
    for n in 0..5 {
        cp.write(create(n)).await.unwrap();
        acked.insert(n);
    }
    disk.set_bug_ack_before_flush(true);
    for n in 5..15 {
        cp.write(create(n)).await.unwrap();
        acked.insert(n);
    }
    disk.crash();
    drop(cp);
    disk.set_bug_ack_before_flush(false);

    let cp = start(&disk).await;
    let lost = missing(&cp, &acked).await;
    assert!(
        !lost.is_empty(),
        "the planted bug should lose an acknowledged write"
    );
    assert!(
        lost.iter().all(|n| *n >= 5),
        "writes acknowledged before the bug was on were lost: {lost:?}"
    );
    cp.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn identity_is_checked_on_the_simulated_disk() {
    let disk = SimDisk::new(8);
    let cp = start(&disk).await;
    cp.write(create(1)).await.unwrap();
    cp.shutdown().await.unwrap();

    match ControlPlane::open_with(config(1, "other"), disk.open(), NoPeers).await {
        Err(OpenError::ForeignDataDir { found, expected }) => {
            assert_eq!(found, "sim");
            assert_eq!(expected, "other");
        }
        other => panic!("expected ForeignDataDir, got {other:?}"),
    }
    assert!(matches!(
        ControlPlane::open_with(config(2, "sim"), disk.open(), NoPeers).await,
        Err(OpenError::NodeIdMismatch {
            found: 1,
            expected: 2
        })
    ));
    // The refusals changed nothing.
    let cp = ControlPlane::open_with(config(1, "sim"), disk.open(), NoPeers)
        .await
        .unwrap();
    cp.wait_leader(DEADLINE).await.unwrap();
    assert_eq!(missing(&cp, &BTreeSet::from([1])).await, Vec::<u64>::new());
    cp.shutdown().await.unwrap();
}

/// Opens `disk`, lets `damage` write to it raw, flushes, and returns what opening a
/// ControlPlane on it says.
async fn open_damaged(disk: &SimDisk, damage: impl FnOnce(&quire_raft::SimEngine)) -> OpenError {
    let engine = disk.open();
    damage(&engine);
    engine.flush().await.unwrap();
    ControlPlane::open_with(config(1, "sim"), disk.open(), NoPeers)
        .await
        .expect_err("damaged disk must be refused")
}

#[tokio::test(start_paused = true)]
async fn corrupt_data_is_reported_on_the_simulated_disk() {
    // A node id that is not 8 bytes.
    let disk = SimDisk::with_label(9, "node-1");
    let err = open_damaged(&disk, |e| {
        let meta = e.open_tree(TREE_META).unwrap();
        meta.insert(b"cluster_name", b"sim").unwrap();
        meta.insert(b"node_id", b"xyz").unwrap();
    })
    .await;
    assert!(matches!(err, OpenError::Corrupt(..)), "{err:?}");
    assert!(err.to_string().contains("sim:node-1"), "{err}");

    // Half an identity.
    let disk = SimDisk::new(10);
    let err = open_damaged(&disk, |e| {
        e.open_tree(TREE_META)
            .unwrap()
            .insert(b"cluster_name", b"sim")
            .unwrap();
    })
    .await;
    assert!(err.to_string().contains("half-written"), "{err}");

    // A log entry that does not decode, on a disk with a good identity.
    let disk = SimDisk::new(11);
    let cp = start(&disk).await;
    cp.shutdown().await.unwrap();
    let err = open_damaged(&disk, |e| {
        e.open_tree(TREE_LOG)
            .unwrap()
            .insert(&u64::MAX.to_be_bytes(), b"{not json")
            .unwrap();
    })
    .await;
    assert!(matches!(err, OpenError::Corrupt(..)), "{err:?}");
    assert!(err.to_string().contains("log entry"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn storage_faults_surface_as_errors_and_lose_nothing_acknowledged() {
    // A disk that cannot be read refuses to open, with a clear error.
    let disk = SimDisk::new(12);
    disk.set_faults(SimFaults {
        read_error_probability: 1.0,
        ..SimFaults::default()
    });
    let err = ControlPlane::open_with(config(1, "sim"), disk.open(), NoPeers)
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("injected read error"), "{err}");

    // A node whose disk starts failing writes stops acknowledging writes.
    disk.set_faults(SimFaults::default());
    let cp = start(&disk).await;
    let mut acked = BTreeSet::new();
    for n in 0..5 {
        cp.write(create(n)).await.unwrap();
        acked.insert(n);
    }
    disk.set_faults(SimFaults {
        write_error_probability: 1.0,
        ..SimFaults::default()
    });
    let err = cp
        .write_with_timeout(create(99), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WriteError::Raft(_) | WriteError::Timeout),
        "{err:?}"
    );
    disk.crash();
    drop(cp);

    // Restarted on a healthy disk: everything acknowledged is there, the failed write not.
    disk.set_faults(SimFaults::default());
    let cp = start(&disk).await;
    assert_eq!(missing(&cp, &acked).await, Vec::<u64>::new());
    assert!(cp.read(|s| s.tenant(&tenant(99)).is_none()).await.unwrap());
    cp.shutdown().await.unwrap();
}
