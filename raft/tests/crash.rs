//! A node process killed with SIGKILL in the middle of a stream of writes loses none of the
//! writes it acknowledged: the test re-runs itself as a child process that writes and prints
//! each acknowledgement, kills it, reopens the data dir and checks.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use quire_raft::command::Command;
use quire_raft::{ControlPlane, ControlPlaneConfig, TenantId};
use tempfile::TempDir;

const CHILD_ENV: &str = "QUIRE_RAFT_CRASH_CHILD_DIR";
const TEST_NAME: &str = "killed_process_loses_no_acknowledged_write";
/// Acknowledgements to see before killing the child.
const ACKS_BEFORE_KILL: u64 = 40;
/// The child stops on its own after this many writes, should the kill never come.
const CHILD_MAX_WRITES: u64 = 5_000;

fn config(dir: &Path) -> ControlPlaneConfig {
    let mut c = ControlPlaneConfig::new(dir, 1, "crash-test", "127.0.0.1:7001");
    c.snapshot_every_logs = 25;
    c
}

fn tenant(n: u64) -> TenantId {
    TenantId::new(format!("tenant-{n}")).unwrap()
}

/// The child: write until killed, printing `acked N` after each acknowledged write.
fn child(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cp = ControlPlane::open(config(dir)).await.unwrap();
        cp.bootstrap_single().await.unwrap();
        cp.wait_leader(Duration::from_secs(10)).await.unwrap();
        for n in 0..CHILD_MAX_WRITES {
            cp.write(Command::CreateTenant {
                tenant: tenant(n),
                display_name: format!("Tenant {n}"),
            })
            .await
            .unwrap();
            println!("acked {n}");
        }
    });
}

#[test]
fn killed_process_loses_no_acknowledged_write() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = TempDir::new().unwrap();
    let mut proc = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let mut last_acked = None;
    // The child's output ends when it is killed or exits, so this loop is bounded by it.
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            let n: u64 = n.trim().parse().unwrap();
            last_acked = Some(n);
            if n + 1 >= ACKS_BEFORE_KILL {
                proc.kill().unwrap(); // SIGKILL: no shutdown, no flush
                break;
            }
        }
    }
    proc.wait().unwrap();
    let last_acked = last_acked.expect("child acknowledged no writes");
    assert!(
        last_acked + 1 >= ACKS_BEFORE_KILL,
        "child stopped early at {last_acked}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cp = ControlPlane::open(config(dir.path())).await.unwrap();
        cp.wait_leader(Duration::from_secs(10)).await.unwrap();
        let missing: Vec<u64> = cp
            .read(|s| {
                (0..=last_acked)
                    .filter(|n| s.tenant(&tenant(*n)).is_none())
                    .collect()
            })
            .await
            .unwrap();
        assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
        cp.shutdown().await.unwrap();
    });
}
