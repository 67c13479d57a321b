//! Network partitions through the nodes' fault-injection hook (`POST /admin/v1/test/faults`):
//! an isolated follower neither acknowledges writes nor answers linearizable reads while the
//! majority commits; an isolated leader is replaced, and its own linearizable reads fail
//! rather than answer stale data; after healing, the isolated node catches up.

mod cluster_common;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_common::{Answer, TestCluster, acked_set, failure_summary, start};
use reqwest::Method;

/// What an isolated node may take to give up on a request (forwarding retries included).
const ISOLATED_DEADLINE: Duration = Duration::from_secs(15);

/// A linearizable list of tenants on `id`, which must fail: if it answers, it must at least
/// not miss a write the majority acknowledged (and the test still fails, saying which).
async fn assert_linearizable_read_fails(c: &TestCluster, id: u64, acked: &BTreeSet<String>) {
    let answer = c
        .request(
            id,
            Method::GET,
            "/tenants?limit=1000",
            None,
            ISOLATED_DEADLINE,
        )
        .await;
    if let Answer::Status(status, body) = &answer
        && (200..300).contains(status)
    {
        let listed: BTreeSet<String> = body["tenants"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let stale: Vec<&String> = acked.difference(&listed).take(5).collect();
        panic!(
            "the isolated node {id} answered a linearizable read with {status}; \
             acknowledged writes it misses (stale if not empty): {stale:?}"
        );
    }
    println!("linearizable read on isolated node {id}: {answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_nodes_refuse_and_catch_up_while_the_majority_commits() {
    let c = start(3, true).await;
    let t0 = tokio::time::Instant::now();
    let ids = c.ids();
    let leader = c
        .wait_leader(1, None, Duration::from_secs(20))
        .await
        .unwrap();
    let followers: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    let (isolated, other) = (followers[0], followers[1]);

    // ---- an isolated follower ----
    let writer = c.writer(&[leader, other]);
    writer
        .wait_more_acks(10, Duration::from_secs(20))
        .await
        .unwrap();
    c.isolate(isolated, &[leader, other]).await.unwrap();
    println!(
        "[{} ms] isolated follower {isolated} (leader {leader})",
        t0.elapsed().as_millis()
    );

    let answer = c
        .create_tenant(isolated, "to-isolated-follower", ISOLATED_DEADLINE)
        .await;
    assert!(
        !answer.is_success(),
        "a write sent to the isolated follower {isolated} was acknowledged: {answer:?}"
    );
    println!(
        "[{} ms] write on isolated follower {isolated}: {answer:?}",
        t0.elapsed().as_millis()
    );
    writer
        .wait_more_acks(10, Duration::from_secs(20))
        .await
        .unwrap();
    assert_linearizable_read_fails(&c, isolated, &acked_set(&writer.records())).await;
    // Its local view is allowed to be stale, and is: it missed the majority's writes.
    let local = c.tenants(isolated, "local").await.unwrap();
    let acked = acked_set(&writer.records());
    assert!(
        !acked.is_subset(&local),
        "the isolated follower has every write the majority acknowledged: is it cut off?"
    );

    c.heal(&ids).await.unwrap();
    let acked = acked_set(&writer.records());
    c.wait_contains(&ids, &acked, Duration::from_secs(20))
        .await
        .unwrap();
    println!(
        "[{} ms] follower {isolated} caught up after healing",
        t0.elapsed().as_millis()
    );

    // ---- an isolated leader ----
    let leader = c
        .wait_leader(other, None, Duration::from_secs(20))
        .await
        .unwrap();
    let majority: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    writer.set_targets(&c, &majority);
    c.isolate(leader, &majority).await.unwrap();
    println!(
        "[{} ms] isolated leader {leader}; majority {majority:?}",
        t0.elapsed().as_millis()
    );

    let new_leader = c
        .wait_leader(majority[0], Some(leader), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(majority.contains(&new_leader), "new leader {new_leader}");
    println!(
        "[{} ms] the majority elected node {new_leader}",
        t0.elapsed().as_millis()
    );
    writer
        .wait_more_acks(10, Duration::from_secs(20))
        .await
        .unwrap();
    assert_linearizable_read_fails(&c, leader, &acked_set(&writer.records())).await;
    let answer = c
        .create_tenant(leader, "to-isolated-leader", ISOLATED_DEADLINE)
        .await;
    assert!(
        !answer.is_success(),
        "a write sent to the isolated old leader {leader} was acknowledged: {answer:?}"
    );
    println!(
        "[{} ms] write on isolated leader {leader}: {answer:?}",
        t0.elapsed().as_millis()
    );

    // ---- heal: the old leader catches up and serves linearizable reads again ----
    c.heal(&ids).await.unwrap();
    writer
        .wait_more_acks(5, Duration::from_secs(20))
        .await
        .unwrap();
    let records = writer.stop().await;
    let acked = acked_set(&records);
    println!(
        "[{} ms] writes: {} sent, {} acknowledged, failures {:?}",
        t0.elapsed().as_millis(),
        records.len(),
        acked.len(),
        failure_summary(&records)
    );
    let set = c
        .wait_converged(&ids, &acked, Duration::from_secs(30))
        .await
        .unwrap();
    // Neither refused write left the isolated node, so neither may surface after healing.
    for refused in ["to-isolated-follower", "to-isolated-leader"] {
        assert!(
            !set.contains(refused),
            "{refused} was refused while its node was isolated, yet it was applied after healing"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match c.tenants(leader, "linearizable").await {
            Ok(listed) => {
                assert!(
                    acked.is_subset(&listed),
                    "a linearizable read on healed node {leader} misses {:?}",
                    acked.difference(&listed).take(5).collect::<Vec<_>>()
                );
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the healed node {leader} serves no linearizable read: {e:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
