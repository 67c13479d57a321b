//! Raft observability on `/metrics`, on three real `quire` processes over mutual TLS that
//! snapshot every 20 entries: the leader reports each follower's matched index and lag (0 once
//! writes stop; growing for a follower that is down, back to 0 once it has caught up),
//! followers report no follower series, and every node reports the size of the snapshot it
//! built or installed.

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::time::Duration;

use cluster_common::shards::Three;
use quire_node::local_cluster::LocalCluster;
use quire_node::metrics::{Parsed, parse};
use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

const SNAPSHOT_EVERY_LOGS: u64 = 20;
const DEADLINE: Duration = Duration::from_secs(30);

async fn scrape(c: &LocalCluster, node: u64) -> Parsed {
    let url = format!("{}/metrics", c.node(node).unwrap().http);
    let r = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&c.status.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    let text = r.text().await.unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{url} is not the text format: {e}\n{text}"))
}

/// The follower series of a page: node label → (matched index, lag).
fn followers(page: &Parsed) -> Vec<(String, f64, f64)> {
    page.samples
        .iter()
        .filter(|s| s.name == "quire_raft_follower_matched_index")
        .map(|s| {
            let node = s.labels["node"].clone();
            let lag = page
                .value("quire_raft_follower_lag_entries", &[("node", &node)])
                .unwrap_or_else(|| panic!("no lag for follower {node}"));
            (node, s.value, lag)
        })
        .collect()
}

/// Scrapes `node` until `check` accepts its page; the page.
async fn wait_page(
    c: &LocalCluster,
    node: u64,
    what: &str,
    check: impl Fn(&Parsed) -> bool,
) -> Parsed {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let page = scrape(c, node).await;
        if check(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "node {node}: timed out waiting for {what}; followers {:?}, last log {:?}",
            followers(&page),
            page.value("quire_raft_last_log_index", &[])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_tenants(c: &LocalCluster, via: u64, prefix: &str, n: u64) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let (status, v) = c
            .admin(
                via,
                Method::POST,
                "/tenants",
                Some(json!({"id": id, "display_name": format!("Tenant {id}")})),
            )
            .await
            .unwrap();
        assert!((200..300).contains(&status), "create {id}: {status} {v}");
    }
}

/// Every follower caught up: one series per follower, each matched at the leader's last log
/// index with lag 0.
fn caught_up(page: &Parsed, want: &[String]) -> bool {
    let last = page.value("quire_raft_last_log_index", &[]);
    let f = followers(page);
    let nodes: Vec<&String> = f.iter().map(|(n, _, _)| n).collect();
    nodes == want.iter().collect::<Vec<_>>()
        && f.iter()
            .all(|(_, matched, lag)| *lag == 0.0 && Some(*matched) == last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reports_followers_progress_and_every_node_its_snapshot_size() {
    let (_dir, mut c) = Three {
        prefix: "quire-metrics-",
        config: &format!("[raft]\nsnapshot_every_logs = {SNAPSHOT_EVERY_LOGS}\n"),
        env: &[],
        sandbox_args: &[],
    }
    .start()
    .await;

    // Enough entries for every node to pass its snapshot threshold.
    create_tenants(&c, 1, "bulk", 2 * SNAPSHOT_EVERY_LOGS).await;

    let mut leader = None;
    for id in 1..=3 {
        if scrape(&c, id).await.value("quire_raft_is_leader", &[]) == Some(1.0) {
            leader = Some(id);
        }
    }
    let leader = leader.expect("a leader among the three nodes");
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let other_labels: Vec<String> = others.iter().map(u64::to_string).collect();

    // The leader: both followers, caught up once the writes stop.
    let page = wait_page(&c, leader, "both followers at lag 0", |p| {
        caught_up(p, &other_labels)
    })
    .await;
    assert_eq!(page.types["quire_raft_follower_lag_entries"], "gauge");
    assert!(page.value("quire_raft_snapshots_built_total", &[]) >= Some(1.0));

    // Every node: a snapshot of a non-zero size, built or installed, and its index.
    for id in 1..=3 {
        let page = wait_page(&c, id, "a snapshot", |p| {
            p.value("quire_raft_snapshot_bytes", &[]) > Some(0.0)
        })
        .await;
        assert_eq!(page.types["quire_raft_snapshot_bytes"], "gauge");
        assert!(
            page.value("quire_raft_snapshot_index", &[]) >= Some(SNAPSHOT_EVERY_LOGS as f64),
            "node {id}: {:?}",
            page.value("quire_raft_snapshot_index", &[])
        );
        if id != leader {
            // Declared, but no series: only the leader tracks replication.
            assert_eq!(page.types["quire_raft_follower_matched_index"], "gauge");
            assert_eq!(followers(&page), Vec::new(), "follower {id}");
        }
    }

    // A follower down: its lag grows with every entry committed without it; the other's is 0.
    let down = others[1];
    c.kill9(down).unwrap();
    create_tenants(&c, leader, "while-down", 5).await;
    let page = scrape(&c, leader).await;
    let lag = |node: u64| {
        page.value(
            "quire_raft_follower_lag_entries",
            &[("node", &node.to_string())],
        )
        .unwrap()
    };
    assert!(
        lag(down) >= 5.0,
        "lag of the stopped node {down}: {}",
        lag(down)
    );
    let up = others[0];
    let page = wait_page(&c, leader, "the running follower at lag 0", |p| {
        p.value(
            "quire_raft_follower_lag_entries",
            &[("node", &up.to_string())],
        ) == Some(0.0)
    })
    .await;
    assert!(
        page.value(
            "quire_raft_follower_lag_entries",
            &[("node", &down.to_string())]
        ) >= Some(5.0)
    );

    // Back: it catches up.
    c.start_node(down).unwrap();
    c.wait_ready(down, DEADLINE).await.unwrap();
    wait_page(&c, leader, "both followers at lag 0 again", |p| {
        caught_up(p, &other_labels)
    })
    .await;
}
