//! Built-in JWTs on a cluster of three real `quire` processes: a token issued through one
//! node is accepted by every node (the issuer and audience are cluster-wide, the keys
//! replicated); once its revocation is acknowledged on a third node, every node refuses it;
//! and a key rotated on one node signs tokens every node accepts.

mod cluster_common;

use std::time::Duration;

use cluster_common::mcp::send_initialize;
use cluster_common::start;
use reqwest::Method;
use serde_json::json;

/// The status of an MCP `initialize` with `token` at node `base`.
async fn initialize(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    send_initialize(
        http,
        base,
        token,
        "cluster-jwt-test",
        Some(Duration::from_secs(20)),
    )
    .await
    .expect("POST /mcp")
    .status()
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_issued_on_one_node_works_on_every_node_until_revoked_on_another() {
    let c = start(3, false).await;
    let ids = c.ids();
    assert_eq!(ids.len(), 3);
    c.wait_leader(1, None, Duration::from_secs(20))
        .await
        .expect("a leader");
    let http = reqwest::Client::new();

    // `quire init` gave the cluster its signing key; every node lists the same one.
    let keys = c.admin_ok(ids[1], Method::GET, "/jwt/keys", None).await;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    let issuer = keys["issuer"].clone();

    let issued = c
        .admin_ok(
            ids[0],
            Method::POST,
            "/tenants/demo/jwt",
            Some(json!({"principal": "demo-user", "workspace": "demo", "ttl_secs": 600})),
        )
        .await;
    assert_eq!(issued["issuer"], issuer);
    let token = issued["token"].as_str().expect("a token").to_owned();
    for &id in &ids {
        assert_eq!(
            initialize(&http, &c.url(id), &token).await,
            200,
            "node {id}"
        );
    }

    // Revoked through the third node: once acknowledged, refused everywhere.
    let revoked = c
        .admin_ok(
            ids[2],
            Method::POST,
            "/jwt/revocations",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(revoked["tenant"], "demo");
    for &id in &ids {
        assert_eq!(
            initialize(&http, &c.url(id), &token).await,
            401,
            "node {id}"
        );
    }

    // A rotation on the second node: the first node signs with the new key, all accept it.
    let rotated = c
        .admin_ok(
            ids[1],
            Method::POST,
            "/jwt/keys/rotate",
            Some(json!({"alg": "ES256"})),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let token = loop {
        // Node 1 signs with the key it has applied; wait until that is the new one.
        let issued = c
            .admin_ok(
                ids[0],
                Method::POST,
                "/tenants/demo/jwt",
                Some(json!({"principal": "demo-user", "workspace": "demo"})),
            )
            .await;
        if issued["kid"] == rotated["kid"] {
            break issued["token"].as_str().expect("a token").to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} never signed with {}",
            ids[0],
            rotated["kid"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for &id in &ids {
        assert_eq!(
            initialize(&http, &c.url(id), &token).await,
            200,
            "node {id}"
        );
    }
}
