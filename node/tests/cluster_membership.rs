//! Membership changes while writes go on: a fourth node joins and becomes a voter, then one of
//! the original followers is removed (its process exits); no acknowledged write is lost.

mod cluster_common;

use std::time::Duration;

use cluster_common::{Answer, TestCluster, acked_set, failure_summary, start};
use reqwest::Method;
use serde_json::Value;

/// Waits until `GET /nodes` on `asked` lists exactly `want` (id, role) pairs.
async fn wait_members(c: &TestCluster, asked: u64, want: &[(u64, &str)], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut want: Vec<(u64, String)> = want.iter().map(|(i, r)| (*i, (*r).to_owned())).collect();
    want.sort();
    loop {
        let last: Value = match c.nodes(asked).await {
            Ok(v) => {
                let mut got: Vec<(u64, String)> = v["members"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .filter_map(|m| {
                                Some((m["id"].as_u64()?, m["role"].as_str()?.to_owned()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                got.sort();
                if got == want {
                    return;
                }
                v
            }
            Err(e) => Value::String(e.to_string()),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET /nodes on node {asked} did not list {want:?} within {timeout:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Found by this test (fixed in b847fe2): the leader stops replicating to a removed node as
/// soon as it appends the configuration without it, so the removed node never applied its
/// removal and kept running and campaigning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_as_voter_and_a_follower_is_removed_during_writes() {
    let mut c = start(3, false).await;
    let ids = c.ids();
    let leader = c
        .wait_leader(1, None, Duration::from_secs(20))
        .await
        .unwrap();
    let writer = c.writer(&ids);
    writer
        .wait_more_acks(10, Duration::from_secs(20))
        .await
        .unwrap();

    // A fourth node joins (through node 1) and becomes a voter.
    let added = c.cluster.add_node().await.unwrap();
    assert_eq!(added, 4);
    let mut roles: Vec<(u64, &str)> = ids
        .iter()
        .map(|&id| (id, if id == leader { "leader" } else { "follower" }))
        .collect();
    roles.push((added, "follower"));
    wait_members(&c, leader, &roles, Duration::from_secs(20)).await;
    wait_members(&c, added, &roles, Duration::from_secs(20)).await;
    writer.add_target(&c, added);
    writer
        .wait_more_acks(10, Duration::from_secs(20))
        .await
        .unwrap();
    let all: Vec<u64> = c.ids();
    c.wait_contains(&all, &acked_set(&writer.records()), Duration::from_secs(20))
        .await
        .unwrap();

    // One of the original followers is removed, asked through the new node (a follower,
    // which forwards to the leader).
    let removed = *ids
        .iter()
        .find(|&&id| id != leader)
        .expect("an original follower");
    writer.remove_target(removed);
    let answer = c
        .request(
            added,
            Method::DELETE,
            &format!("/nodes/{removed}"),
            None,
            Duration::from_secs(20),
        )
        .await;
    assert!(
        matches!(answer, Answer::Status(200, _)),
        "DELETE /nodes/{removed} through node {added}: {answer:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.cluster.is_running(removed) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed node {removed} still runs 20 s later"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("node {removed} was removed and exited");

    let remaining: Vec<u64> = all.iter().copied().filter(|&id| id != removed).collect();
    let leader = c
        .wait_leader(added, None, Duration::from_secs(20))
        .await
        .unwrap();
    let roles: Vec<(u64, &str)> = remaining
        .iter()
        .map(|&id| (id, if id == leader { "leader" } else { "follower" }))
        .collect();
    for &id in &remaining {
        wait_members(&c, id, &roles, Duration::from_secs(20)).await;
    }

    writer
        .wait_more_acks(10, Duration::from_secs(20))
        .await
        .unwrap();
    let records = writer.stop().await;
    let acked = acked_set(&records);
    println!(
        "writes: {} sent, {} acknowledged, failures {:?}",
        records.len(),
        acked.len(),
        failure_summary(&records)
    );
    c.wait_converged(&remaining, &acked, Duration::from_secs(20))
        .await
        .unwrap();
    c.wait_equal_applied(leader, &remaining, Duration::from_secs(20))
        .await
        .unwrap();
}
