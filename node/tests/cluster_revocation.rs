//! Revocation racing with calls on other nodes, on a cluster of three real `quire`
//! processes: once the admin API acknowledges a token's revocation (on one node), no request
//! sent afterwards with that token is authorized on any node — while agents hammer the other
//! nodes through the revocation.

mod cluster_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster_common::mcp::{CLUSTER_DEADLINES, Session, message_of};
use cluster_common::start;
use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_on_every_node_once_acknowledged() {
    let c = start(3, false).await;
    let ids = c.ids();
    let leader = c
        .wait_leader(1, None, Duration::from_secs(20))
        .await
        .unwrap();
    // A token of its own, so the cluster's demo token stays usable for other checks.
    let issued = c
        .admin_ok(
            1,
            Method::POST,
            "/tenants/demo/tokens",
            Some(json!({"principal": "demo-user", "workspace": "demo"})),
        )
        .await;
    let token = issued["token"].as_str().unwrap().to_owned();
    let token_id = issued["token_id"].as_str().unwrap().to_owned();

    // Sessions on every node; a tool call works on each.
    let mut sessions = Vec::new();
    for &id in &ids {
        let mut s = Session::open(
            &reqwest::Client::new(),
            &c.url(id),
            &token,
            "revocation-test",
            Some(CLUSTER_DEADLINES),
        )
        .await
        .unwrap();
        let (status, body) = s
            .request(
                "tools/call",
                json!({"name": "notion-get-self", "arguments": {}}),
            )
            .await
            .unwrap();
        let msg = message_of(&body).unwrap_or_default();
        assert_eq!(status, 200, "node {id}: {body}");
        assert_eq!(msg["result"]["isError"], json!(false), "node {id}: {body}");
        sessions.push((id, s));
    }

    // Agents hammer every node other than the one that revokes, recording each request's
    // send time and whether it was authorized.
    let revoking_node = *ids.iter().find(|&&id| id != leader).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut hammers = Vec::new();
    for (id, mut s) in sessions.into_iter().filter(|(id, _)| *id != revoking_node) {
        let stop = stop.clone();
        hammers.push(tokio::spawn(async move {
            let mut seen: Vec<(Instant, u16)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let status = match s.request("tools/list", json!({})).await {
                    Ok((status, _)) => status,
                    Err(_) => 0,
                };
                seen.push((sent, status));
            }
            (id, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    c.admin_ok(
        revoking_node,
        Method::DELETE,
        &format!("/tenants/demo/tokens/{token_id}"),
        None,
    )
    .await;
    let acked = Instant::now();
    println!(
        "revocation acknowledged by node {revoking_node} (leader {leader}) after {} ms",
        (acked - started).as_millis()
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::SeqCst);

    for h in hammers {
        let (id, seen) = h.await.unwrap();
        let before = seen
            .iter()
            .filter(|(t, s)| *t < started && *s == 200)
            .count();
        let after: Vec<u16> = seen
            .iter()
            .filter(|(t, _)| *t >= acked)
            .map(|(_, s)| *s)
            .collect();
        println!(
            "node {id}: {} requests, {before} authorized before the revocation, {} sent after its acknowledgement",
            seen.len(),
            after.len()
        );
        assert!(before > 0, "node {id} served nothing before the revocation");
        assert!(
            !after.is_empty(),
            "node {id}: nothing was sent after the acknowledgement"
        );
        assert!(
            after.iter().all(|&s| s == 401),
            "node {id} answered a request sent after the acknowledged revocation with {:?}",
            after.iter().filter(|&&s| s != 401).collect::<Vec<_>>()
        );
    }
    // ...and on the node that revoked it, at once.
    let (status, _) = cluster_common::mcp_initialize(&c.url(revoking_node), &token)
        .await
        .unwrap();
    assert_eq!(status, 401);
}
