//! Three real `quire` processes over mutual TLS: writes through followers, convergence of
//! every node's applied state, linearizable reads on a follower right after a write on
//! another node, and MCP `initialize` on every node.

mod cluster_common;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_common::{Answer, mcp_initialize, start};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_writes_converge_and_reads_are_linearizable_on_every_node() {
    let c = start(3, false).await;
    let ids = c.ids();
    let leader = c
        .wait_leader(1, None, Duration::from_secs(20))
        .await
        .unwrap();
    let followers: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
    assert_eq!(followers.len(), 2, "three nodes, one leader: {ids:?}");
    println!("leader: node {leader}, followers: {followers:?}");

    // Every node names the same leader.
    for &id in &ids {
        let v = c.nodes(id).await.unwrap();
        assert_eq!(v["leader"].as_u64(), Some(leader), "node {id}: {v}");
        let roles: Vec<(u64, &str)> = v["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| Some((m["id"].as_u64()?, m["role"].as_str()?)))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(u64, &str)> = ids
            .iter()
            .map(|&m| (m, if m == leader { "leader" } else { "follower" }))
            .collect();
        assert_eq!(roles, want, "GET /nodes on node {id}: {v}");
    }

    // Writes through followers (the admin API on a non-leader node forwards them).
    let mut written = BTreeSet::new();
    for (i, &f) in followers.iter().cycle().take(6).enumerate() {
        let tenant = format!("via-follower-{i}");
        let answer = c.create_tenant(f, &tenant, Duration::from_secs(10)).await;
        assert!(
            matches!(answer, Answer::Status(201, _)),
            "creating {tenant} through follower {f}: {answer:?}"
        );
        written.insert(tenant);
    }
    // The same id again is refused, wherever it is sent, and changes nothing.
    let again = c
        .create_tenant(leader, "via-follower-0", Duration::from_secs(10))
        .await;
    assert!(
        matches!(&again, Answer::Status(s, _) if (400..500).contains(s)),
        "a duplicate tenant is refused: {again:?}"
    );

    // A linearizable read on a follower right after a write on another node sees the write.
    for i in 0..8 {
        let writer = ids[i % 3];
        let reader = *followers
            .iter()
            .find(|&&f| f != writer)
            .expect("a follower other than the writer");
        let tenant = format!("lin-{i}");
        let answer = c
            .create_tenant(writer, &tenant, Duration::from_secs(10))
            .await;
        assert!(
            answer.is_success(),
            "creating {tenant} on node {writer}: {answer:?}"
        );
        written.insert(tenant.clone());
        let got = c
            .request(
                reader,
                Method::GET,
                &format!("/tenants/{tenant}"),
                None,
                Duration::from_secs(10),
            )
            .await;
        assert!(
            matches!(&got, Answer::Status(200, v) if v["id"] == tenant.as_str()),
            "linearizable GET /tenants/{tenant} on follower {reader} right after the write on node {writer}: {got:?}"
        );
        let listed = c.tenants(reader, "linearizable").await.unwrap();
        assert!(
            written.is_subset(&listed),
            "a linearizable list on follower {reader} misses {:?}",
            written.difference(&listed).collect::<Vec<_>>()
        );
    }

    // Every node converges to the same tenants (demo + everything written) and applied index.
    let mut expected = written.clone();
    expected.insert("demo".to_owned());
    let set = c
        .wait_converged(&ids, &expected, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(set, expected, "no tenant appears that nobody wrote");
    for &asked in &ids {
        let index = c
            .wait_equal_applied(asked, &ids, Duration::from_secs(20))
            .await
            .unwrap();
        println!("node {asked} sees every member at applied index {index}");
    }

    // An MCP initialize with the cluster's token answers 200 on every node.
    let token = c.cluster.status.mcp_token.clone();
    for &id in &ids {
        let (status, body) = mcp_initialize(&c.url(id), &token).await.unwrap();
        assert_eq!(status, 200, "initialize on node {id}: {body}");
        assert!(
            body.contains("\"protocolVersion\""),
            "initialize on node {id} answers a result: {body}"
        );
    }
    // ...and a wrong token is refused on every node.
    for &id in &ids {
        let (status, _) = mcp_initialize(&c.url(id), "qk_not-a-token").await.unwrap();
        assert_eq!(status, 401, "a wrong MCP token on node {id}");
    }
}
