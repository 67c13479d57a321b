//! The sled engine keeps the data-dir layout sled data dirs have always had: trees `log`
//! (JSON entries under big-endian indexes), `meta` (identity, vote) and `sm` (snapshot), so
//! existing data dirs still open; and a dir laid out by hand that way opens.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use quire_raft::command::Command;
use quire_raft::{ControlPlane, ControlPlaneConfig, TenantId};
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_data_dir_layout_is_unchanged() {
    let dir = TempDir::new().unwrap();
    let mut cfg = ControlPlaneConfig::new(dir.path(), 3, "layout", "127.0.0.1:7001");
    cfg.snapshot_every_logs = 5;
    let cp = ControlPlane::open(cfg.clone()).await.unwrap();
    cp.bootstrap_single().await.unwrap();
    cp.wait_leader(DEADLINE).await.unwrap();
    for n in 0..8 {
        cp.write(Command::CreateTenant {
            tenant: TenantId::new(format!("t{n}")).unwrap(),
            display_name: format!("T{n}"),
        })
        .await
        .unwrap();
    }
    // Wait (with a deadline) until a snapshot is stored.
    let mut metrics = cp.raft().metrics();
    tokio::time::timeout(DEADLINE, async {
        while metrics.borrow().snapshot.is_none() {
            metrics.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    cp.shutdown().await.unwrap();

    // Read it with sled directly, the way the store has always laid it out.
    let db = tokio::time::timeout(DEADLINE, async {
        loop {
            match sled::open(dir.path()) {
                Ok(db) => return db,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .unwrap();
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(&*meta.get("cluster_name").unwrap().unwrap(), b"layout");
    assert_eq!(&*meta.get("node_id").unwrap().unwrap(), &3u64.to_be_bytes());
    let vote: serde_json::Value =
        serde_json::from_slice(&meta.get("vote").unwrap().unwrap()).unwrap();
    assert!(vote.get("leader_id").is_some(), "{vote}");
    let log = db.open_tree("log").unwrap();
    let (key, value) = log.last().unwrap().unwrap();
    assert_eq!(key.len(), 8);
    let entry: serde_json::Value = serde_json::from_slice(&value).unwrap();
    let index = u64::from_be_bytes(key.as_ref().try_into().unwrap());
    assert_eq!(entry["log_id"]["index"], index);
    let sm = db.open_tree("sm").unwrap();
    let record = sm.get("snapshot").unwrap().unwrap();
    let meta_len = u32::from_be_bytes(record[..4].try_into().unwrap()) as usize;
    let snap_meta: serde_json::Value = serde_json::from_slice(&record[4..4 + meta_len]).unwrap();
    assert!(snap_meta.get("last_log_id").is_some(), "{snap_meta}");
    let state: serde_json::Value = serde_json::from_slice(&record[4 + meta_len..]).unwrap();
    assert!(state.is_object());
    drop((meta, log, sm, db));

    // And it opens again with everything in it.
    let cp = ControlPlane::open(cfg).await.unwrap();
    cp.wait_leader(DEADLINE).await.unwrap();
    assert_eq!(cp.read(|s| s.tenant_count()).await.unwrap(), 8);
    cp.shutdown().await.unwrap();
}
