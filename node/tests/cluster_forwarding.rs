//! Any node serves any tool call, and one integration's budget is spent once in the cluster:
//! three real `quire` processes (mutual TLS between them) and the Notion sandbox with its own
//! rate limit on; one integration with a budget of 3 requests/s (burst 3); MCP clients on all
//! three nodes call a tool concurrently for several seconds. Every call succeeds, from every
//! node; the sandbox never answers 429 and never admits more in one second than the budget
//! allows (burst + rate); the shard's owner served calls forwarded by the other nodes, and
//! only the owner did.

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cluster_common::mcp::{CLUSTER_DEADLINES, Session, message_of};
use quire_node::local_cluster::{LocalCluster, Spec};
use quire_raft::placement::{Residency, integration_key, shard_of};
use quire_raft::{IntegrationId, TenantId};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

const BUDGET_RPS: u64 = 3;
const BUDGET_BURST: u64 = 3;
const CLIENTS_PER_NODE: usize = 2;
const LOAD: Duration = Duration::from_secs(8);
const TOOL: &str = "notion-get-self";

async fn admin_ok(c: &LocalCluster, path: &str, body: Value) -> Value {
    let (status, v) = c.admin(1, Method::POST, path, Some(body)).await.unwrap();
    assert!((200..300).contains(&status), "POST {path}: {status} {v}");
    v
}

/// `name{labels} value` lines of a Prometheus page, summed by exact name and label text.
fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| *k == name_and_labels)
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_serves_calls_within_one_budget() {
    let dir = tempfile::Builder::new()
        .prefix("quire-forwarding-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("forwarding.toml");
    std::fs::write(&config, "[placement]\ninterval_ms = 300\n").unwrap();
    let spec = Spec {
        dir: dir.path().join("cluster"),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_quire")),
        nodes: 3,
        tls: true,
        fault_injection: false,
        env: vec![("QUIRE_CONFIG".into(), config.to_string_lossy().into_owned())],
        // Notion's limit as the sandbox enforces it: 3/s, a bucket of 6. Three limiters of
        // 3/s each (one per node) would overrun it.
        sandbox_args: vec![
            "--rate-limit".into(),
            "3".into(),
            "--burst".into(),
            "6".into(),
        ],
    };
    let c = LocalCluster::up(spec).await.unwrap();

    let base = "/tenants/demo";
    admin_ok(
        &c,
        &format!("{base}/integrations"),
        json!({"id": "share", "display_name": "shared budget", "notion_token": "secret_sandbox_alpha",
               "requests_per_second": BUDGET_RPS, "burst": BUDGET_BURST}),
    )
    .await;
    admin_ok(
        &c,
        &format!("{base}/workspaces"),
        json!({"id": "share", "display_name": "shared budget", "integration": "share"}),
    )
    .await;
    admin_ok(
        &c,
        &format!("{base}/principals"),
        json!({"id": "share-agent", "display_name": "agent"}),
    )
    .await;
    admin_ok(
        &c,
        &format!("{base}/principals/share-agent/workspaces"),
        json!({"workspace": "share"}),
    )
    .await;
    let token = admin_ok(
        &c,
        &format!("{base}/tokens"),
        json!({"principal": "share-agent", "workspace": "share"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Wait until the controller gave the integration's shard an owner, and learn which.
    let shard = shard_of(
        &Residency::default(),
        &integration_key(
            &TenantId::new("demo").unwrap(),
            &IntegrationId::new("share").unwrap(),
        ),
    )
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let owner = loop {
        let (status, v) = c.admin(1, Method::GET, "/placement", None).await.unwrap();
        assert_eq!(status, 200, "{v}");
        let owner = v["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["shard"] == Value::String(shard.clone()))
            .and_then(|s| s["owner"].as_u64());
        if let Some(owner) = owner {
            break owner;
        }
        assert!(Instant::now() < deadline, "shard {shard} got no owner: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let http = reqwest::Client::new();
    let stats_url = format!("{}/__sandbox/stats", c.status.sandbox_url);
    http.post(format!("{stats_url}/reset"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let ids: Vec<u64> = (1..=3).collect();
    let mut clients = Vec::new();
    for &id in &ids {
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
            clients.push(tokio::spawn(async move {
                let stop = Instant::now() + LOAD;
                let (mut ok, mut failed) = (0u32, Vec::new());
                let mut n = 10;
                while Instant::now() < stop {
                    n += 1;
                    match session.call_tool(n, TOOL, &json!({})).await {
                        Ok((200, body)) => {
                            let v = message_of(&body).unwrap_or_default();
                            if v["result"]["isError"] == Value::Bool(true)
                                || v.get("error").is_some()
                            {
                                failed.push(v.to_string());
                            } else {
                                ok += 1;
                            }
                        }
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (id, ok, failed)
            }));
        }
    }
    let mut ok_by_node: BTreeMap<u64, u32> = BTreeMap::new();
    for client in clients {
        let (id, ok, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "calls on node {id} failed: {failed:?}");
        *ok_by_node.entry(id).or_default() += ok;
    }
    for &id in &ids {
        assert!(
            ok_by_node.get(&id).copied().unwrap_or(0) > 0,
            "no call succeeded on node {id}: {ok_by_node:?}"
        );
    }

    let stats: Value = http
        .get(&stats_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alpha = &stats["integrations"]["alpha"];
    let requests = alpha["requests"].as_u64().unwrap_or(0);
    let total_ok: u32 = ok_by_node.values().sum();
    assert_eq!(
        requests,
        u64::from(total_ok),
        "one Notion request per call: {stats}"
    );
    assert_eq!(
        alpha["rate_limited"],
        json!(0),
        "Notion answered 429: {stats}"
    );
    let max = alpha["max_per_second"].as_u64().unwrap();
    eprintln!(
        "calls by entry node {ok_by_node:?}; Notion saw {requests} requests in {LOAD:?}, at most \
         {max} in one second, {} answered 429; owner node {owner}",
        alpha["rate_limited"]
    );
    assert!(
        max <= BUDGET_BURST + BUDGET_RPS,
        "{max} requests in one second, over the budget's {} ({stats})",
        BUDGET_BURST + BUDGET_RPS
    );
    // Over the whole window the cluster sent at about the budget's rate, not three times it.
    let limit = BUDGET_BURST + BUDGET_RPS * (LOAD.as_secs() + 2);
    assert!(
        requests <= limit,
        "{requests} requests in {LOAD:?}, over {limit}"
    );

    // The owner served the other nodes' calls; no other node served any.
    for &id in &ids {
        let page = http
            .get(format!("{}/metrics", c.node(id).unwrap().http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let served = metric(&page, "quire_forward_served_total{outcome=\"ok\"}");
        let forwarded = metric(&page, "quire_forwarded_calls_total{outcome=\"ok\"}");
        if id == owner {
            assert!(
                served > 0.0,
                "the owner (node {id}) served no forwarded call:\n{page}"
            );
            assert_eq!(forwarded, 0.0, "the owner forwarded calls:\n{page}");
        } else {
            assert_eq!(served, 0.0, "node {id} is not the owner but served calls");
            assert!(
                forwarded >= f64::from(ok_by_node[&id]),
                "node {id} answered {} calls but forwarded {forwarded}",
                ok_by_node[&id]
            );
        }
    }
}
