//! Controlled shutdown: three real `quire` processes (mutual TLS between them) and the Notion
//! sandbox; MCP clients on the two nodes that do not own an integration's shard call a tool
//! on it without pause, and the owner gets SIGTERM. The stopping node marks itself stopping,
//! the leader moves its shards at once, and the node waits for that before it drains and
//! exits: the placement shows another owner at a higher epoch while the old process is still
//! running, and its log names the moved shards. Every call that failed told the agent it may
//! retry. Restarted, the node clears its mark and gets shards again.

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster_common::shards::{
    Agent, Call, Three, call, node_entry, open_sessions, placement, shard_entry, wait_for,
};
use quire_node::local_cluster::LocalCluster;
use quire_raft::placement::Residency;
use serde_json::{Value, json};
use tokio::time::Instant;

const CLIENTS_PER_NODE: usize = 2;
const TOOL: &str = "notion-get-self";

/// The shard's owner and epoch, and node `node`'s entry, as node `via` sees the placement.
async fn placement_of(
    c: &LocalCluster,
    via: u64,
    shard: &str,
    node: u64,
) -> (Option<u64>, u64, Value) {
    let v = placement(c, via).await;
    let entry = shard_entry(&v, shard);
    (
        entry["owner"].as_u64(),
        entry["epoch"].as_u64().unwrap_or(0),
        node_entry(&v, node),
    )
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    times: Vec<Instant>,
    retryable: Vec<String>,
    failed: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_owner_moves_its_shards_before_it_exits() {
    let (_dir, mut c) = Three {
        prefix: "quire-stop-",
        config: "[placement]\ninterval_ms = 2000\n\n[security]\nauthz_max_staleness_ms = 1000\n",
        env: &[],
        sandbox_args: &[],
    }
    .start()
    .await;
    let agent = Agent {
        tenant: "demo",
        integration: "stop",
        workspace: "stop",
        principal: "stop-agent",
        notion_token: "secret_sandbox_alpha",
        budget: None,
    };
    let token = agent.provision(&c, 1).await;

    let shard = agent.shard(&Residency::default());
    let (old_owner, old_epoch) = wait_for(
        &format!("shard {shard} to get an owner"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || match placement_of(&c, 1, &shard, 1).await {
            (Some(owner), epoch, _) => Some((owner, epoch)),
            _ => None,
        },
    )
    .await;
    let others: Vec<u64> = (1..=3).filter(|n| *n != old_owner).collect();
    let via = others[0];

    let http = cluster_common::client();
    let sessions = open_sessions(&http, &c, &others, CLIENTS_PER_NODE, &token).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (id, session) in sessions {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut n = 10;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match call(&session, n, TOOL).await {
                    Call::Ok => seen.times.push(Instant::now()),
                    Call::Retry(_, err) => {
                        seen.retryable.push(err);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Call::Failed(e) => seen.failed.push(e),
                }
            }
            (id, seen)
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = c.node(old_owner).unwrap().pid;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let termed_at = Instant::now();

    // The shard leaves the stopping node while its process still runs.
    let mut moved_while_alive = None;
    let deadline = termed_at + Duration::from_secs(30);
    while c.is_running(old_owner) {
        let (owner, epoch, me) = placement_of(&c, via, &shard, old_owner).await;
        if owner.is_some_and(|o| o != old_owner) && epoch > old_epoch {
            assert_eq!(me["stopping"], json!(true), "{me}");
            moved_while_alive = Some((owner.unwrap(), epoch, termed_at.elapsed()));
            break;
        }
        assert!(Instant::now() < deadline, "node {old_owner} never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (new_owner, new_epoch, moved_after) = moved_while_alive
        .unwrap_or_else(|| panic!("node {old_owner} exited before shard {shard} moved off it"));
    let exit_deadline = Instant::now() + Duration::from_secs(30);
    while c.is_running(old_owner) {
        assert!(
            Instant::now() < exit_deadline,
            "node {old_owner} never exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited_after = termed_at.elapsed();
    let log_path = c
        .spec
        .dir
        .join(format!("node-{old_owner}"))
        .join("node.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("this node's shards moved to the others"),
        "the stopping node's log names no move:\n{}",
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    assert!(
        !log.contains("requests still open when the shutdown grace ended"),
        "the drain after the move must have the rest of the grace:\n{}",
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "shard {shard} moved from node {old_owner} to node {new_owner} (epoch {old_epoch} -> \
         {new_epoch}) {} ms after SIGTERM; the node exited {} ms after SIGTERM",
        moved_after.as_millis(),
        exited_after.as_millis()
    );

    // Load goes on without the old owner, then it comes back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.start_node(old_owner).unwrap();
    c.wait_ready(old_owner, Duration::from_secs(60))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, me) = placement_of(&c, via, &shard, old_owner).await;
        if me["stopping"] == json!(false) && me["shards"].as_u64().is_some_and(|n| n > 0) {
            eprintln!(
                "node {old_owner} restarted: not stopping, owns {} shards",
                me["shards"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node {old_owner} did not get shards again: {me}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);

    let mut times = Vec::new();
    let (mut retryable, mut failed) = (Vec::new(), Vec::new());
    for client in clients {
        let (id, seen) = client.await.unwrap();
        times.extend(seen.times);
        retryable.extend(
            seen.retryable
                .into_iter()
                .map(|e| format!("node {id}: {e}")),
        );
        failed.extend(seen.failed.into_iter().map(|e| format!("node {id}: {e}")));
    }
    assert!(
        failed.is_empty(),
        "calls failed without retry_after_seconds: {failed:?}"
    );
    times.sort();
    let after: Vec<Instant> = times.iter().copied().filter(|t| *t >= termed_at).collect();
    assert!(!after.is_empty(), "no call succeeded after SIGTERM");
    let mut gap = Duration::ZERO;
    let mut last = termed_at;
    for t in &after {
        gap = gap.max(t.duration_since(last));
        last = *t;
    }
    eprintln!(
        "{} calls succeeded, {} after SIGTERM; longest time without a successful call from \
         SIGTERM on: {} ms; {} retryable failures {:?}",
        times.len(),
        after.len(),
        gap.as_millis(),
        retryable.len(),
        retryable.iter().take(3).collect::<Vec<_>>()
    );
}
