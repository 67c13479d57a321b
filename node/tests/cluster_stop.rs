//! Controlled shutdown: three real `quire` processes (mutual TLS between them) and the Notion
//! sandbox; MCP clients on the two nodes that do not own an integration's shard call a tool
//! on it without pause, and the owner gets SIGTERM. The stopping node marks itself stopping,
//! the leader moves its shards at once, and the node waits for that before it drains and
//! exits: the placement shows another owner at a higher epoch while the old process is still
//! running, and its log names the moved shards. Every call that failed told the agent it may
//! retry. Restarted, the node clears its mark and gets shards again.

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster_common::mcp::{CLUSTER_DEADLINES, Session, message_of};
use quire_node::local_cluster::{LocalCluster, Spec};
use quire_raft::placement::{Residency, integration_key, shard_of};
use quire_raft::{IntegrationId, TenantId};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

const CLIENTS_PER_NODE: usize = 2;
const TOOL: &str = "notion-get-self";

async fn admin_ok(c: &LocalCluster, via: u64, path: &str, body: Value) -> Value {
    let (status, v) = c.admin(via, Method::POST, path, Some(body)).await.unwrap();
    assert!((200..300).contains(&status), "POST {path}: {status} {v}");
    v
}

/// The shard's owner and epoch, and node `node`'s entry, as node `via` sees the placement.
async fn placement(
    c: &LocalCluster,
    via: u64,
    shard: &str,
    node: u64,
) -> (Option<u64>, u64, Value) {
    let (status, v) = c.admin(via, Method::GET, "/placement", None).await.unwrap();
    assert_eq!(status, 200, "{v}");
    let entry = v["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["shard"] == Value::String(shard.to_owned()))
        .cloned()
        .unwrap_or(Value::Null);
    let me = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == json!(node))
        .cloned()
        .unwrap_or(Value::Null);
    (
        entry["owner"].as_u64(),
        entry["epoch"].as_u64().unwrap_or(0),
        me,
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
    let dir = tempfile::Builder::new()
        .prefix("quire-stop-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("stop.toml");
    std::fs::write(
        &config,
        "[placement]\ninterval_ms = 2000\n\n[security]\nauthz_max_staleness_ms = 1000\n",
    )
    .unwrap();
    let spec = Spec {
        dir: dir.path().join("cluster"),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_quire")),
        nodes: 3,
        tls: true,
        fault_injection: false,
        env: vec![("QUIRE_CONFIG".into(), config.to_string_lossy().into_owned())],
        sandbox_args: vec![],
    };
    let mut c = LocalCluster::up(spec).await.unwrap();

    let base = "/tenants/demo";
    admin_ok(
        &c,
        1,
        &format!("{base}/integrations"),
        json!({"id": "stop", "display_name": "stop", "notion_token": "secret_sandbox_alpha"}),
    )
    .await;
    admin_ok(
        &c,
        1,
        &format!("{base}/workspaces"),
        json!({"id": "stop", "display_name": "stop", "integration": "stop"}),
    )
    .await;
    admin_ok(
        &c,
        1,
        &format!("{base}/principals"),
        json!({"id": "stop-agent", "display_name": "agent"}),
    )
    .await;
    admin_ok(
        &c,
        1,
        &format!("{base}/principals/stop-agent/workspaces"),
        json!({"workspace": "stop"}),
    )
    .await;
    let token = admin_ok(
        &c,
        1,
        &format!("{base}/tokens"),
        json!({"principal": "stop-agent", "workspace": "stop"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let shard = shard_of(
        &Residency::default(),
        &integration_key(
            &TenantId::new("demo").unwrap(),
            &IntegrationId::new("stop").unwrap(),
        ),
    )
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (old_owner, old_epoch) = loop {
        if let (Some(owner), epoch, _) = placement(&c, 1, &shard, 1).await {
            break (owner, epoch);
        }
        assert!(Instant::now() < deadline, "shard {shard} got no owner");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let others: Vec<u64> = (1..=3).filter(|n| *n != old_owner).collect();
    let via = others[0];

    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for &id in &others {
        for k in 0..CLIENTS_PER_NODE {
            let url = c.node(id).unwrap().http.clone();
            let session = Session::open(
                &http,
                &url,
                &token,
                &format!("n{id}-c{k}"),
                Some(CLUSTER_DEADLINES),
            )
            .await
            .unwrap();
            sessions.push((id, session));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (id, session) in sessions {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut n = 10;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let answer = session.call_tool(n, TOOL, &json!({})).await;
                let v = match &answer {
                    Ok((200, body)) => message_of(body).unwrap_or_default(),
                    other => {
                        seen.failed.push(format!("{other:?}"));
                        continue;
                    }
                };
                if v["result"]["isError"] == Value::Bool(true) {
                    let err = &v["result"]["structuredContent"];
                    if err["retry_after_seconds"].as_u64().is_some() {
                        seen.retryable.push(err.to_string());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        seen.failed.push(v.to_string());
                    }
                } else if v.get("error").is_some() || v.get("result").is_none() {
                    seen.failed.push(v.to_string());
                } else {
                    seen.times.push(Instant::now());
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
        let (owner, epoch, me) = placement(&c, via, &shard, old_owner).await;
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
    let log_path = dir
        .path()
        .join("cluster")
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
        let (_, _, me) = placement(&c, via, &shard, old_owner).await;
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
