//! Each of Notion's error codes, answered as Notion answers them.

mod common;

use common::*;
use quire_sandbox::SandboxConfig;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn missing_version_and_auth() {
    let s = start(unlimited()).await;
    let root = s.sandbox.demo().root_page_id;
    let path = format!("/v1/pages/{root}");
    let r = s.raw(Method::GET, &path, Some(ALPHA), None, None).await;
    r.expect_error(400, "missing_version");
    let r = s
        .raw(Method::GET, &path, Some(ALPHA), Some("2022-06-28"), None)
        .await;
    r.expect_error(400, "validation_error");
    let r = s
        .raw(Method::GET, &path, None, Some("2025-09-03"), None)
        .await;
    r.expect_error(401, "unauthorized");
    let r = s
        .raw(
            Method::GET,
            &path,
            Some("secret_wrong"),
            Some("2025-09-03"),
            None,
        )
        .await;
    r.expect_error(401, "unauthorized");
    let page = s.get(&path, ALPHA).await.ok();
    assert_eq!(page["object"], "page");
    assert_eq!(page["id"], root);
}

#[tokio::test]
async fn unshared_objects_are_not_found() {
    let s = start(unlimited()).await;
    let demo = s.sandbox.demo();
    let r = s
        .get(&format!("/v1/pages/{}", demo.alpha_only_page_id), BETA)
        .await;
    let msg = r.expect_error(404, "object_not_found");
    assert!(msg.contains(&demo.alpha_only_page_id), "{msg}");
    assert!(msg.contains("shared with your integration"), "{msg}");
    s.get(&format!("/v1/databases/{}", demo.database_id), BETA)
        .await
        .expect_error(404, "object_not_found");
    // Beta sees its own subtree, including descendants of the shared page.
    let beta = s
        .get(&format!("/v1/pages/{}", demo.beta_page_id), BETA)
        .await
        .ok();
    assert_eq!(title_of(&beta), "Product");
    let children = s
        .get(&format!("/v1/blocks/{}/children", demo.beta_page_id), BETA)
        .await
        .ok();
    let child_page = children["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "child_page")
        .expect("a child page");
    s.get(
        &format!("/v1/pages/{}", child_page["id"].as_str().unwrap()),
        BETA,
    )
    .await
    .ok();
    // An id that exists nowhere is not found either.
    s.get("/v1/pages/00000000-0000-4000-8000-000000000000", ALPHA)
        .await
        .expect_error(404, "object_not_found");
}

#[tokio::test]
async fn validation_errors() {
    let s = start(unlimited()).await;
    let demo = s.sandbox.demo();
    let ds = &demo.data_source_id;
    s.post(
        &format!("/v1/data_sources/{ds}/query"),
        ALPHA,
        json!({"page_size": 101}),
    )
    .await
    .expect_error(400, "validation_error");
    s.get(
        &format!("/v1/blocks/{}/children?page_size=500", demo.root_page_id),
        ALPHA,
    )
    .await
    .expect_error(400, "validation_error");
    let msg = s
        .get("/v1/pages/not-a-uuid", ALPHA)
        .await
        .expect_error(400, "validation_error");
    assert!(msg.contains("path failed validation"), "{msg}");
    // Ids without dashes are accepted.
    let nodash: String = demo.root_page_id.chars().filter(|c| *c != '-').collect();
    let page = s.get(&format!("/v1/pages/{nodash}"), ALPHA).await.ok();
    assert_eq!(page["id"], demo.root_page_id);

    let too_many: Vec<_> = (0..101)
        .map(|_| json!({"paragraph": {"rich_text": text("x")}}))
        .collect();
    let path = format!("/v1/blocks/{}/children", demo.root_page_id);
    let before = s.get(&path, ALPHA).await.ok()["results"]
        .as_array()
        .unwrap()
        .len();
    s.patch(&path, ALPHA, json!({"children": too_many}))
        .await
        .expect_error(400, "validation_error");
    let long = "y".repeat(2001);
    let msg = s
        .patch(
            &path,
            ALPHA,
            json!({"children": [{"paragraph": {"rich_text": text(&long)}}]}),
        )
        .await
        .expect_error(400, "validation_error");
    assert!(msg.contains("2000"), "{msg}");
    // 1000 blocks counting nested ones: 100 toggles with 10 children each is 1100.
    let nested: Vec<_> = (0..100)
        .map(|_| {
            let kids: Vec<_> = (0..10)
                .map(|_| json!({"paragraph": {"rich_text": text("k")}}))
                .collect();
            json!({"toggle": {"rich_text": text("t"), "children": kids}})
        })
        .collect();
    let msg = s
        .patch(&path, ALPHA, json!({"children": nested}))
        .await
        .expect_error(400, "validation_error");
    assert!(msg.contains("1000"), "{msg}");
    s.patch(
        &path,
        ALPHA,
        json!({"children": [{"child_page": {"title": "x"}}]}),
    )
    .await
    .expect_error(400, "validation_error");
    // Nothing was appended by the rejected requests.
    let after = s.get(&path, ALPHA).await.ok()["results"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}

#[tokio::test]
async fn invalid_json_payload_limit_and_url() {
    let s = start(unlimited()).await;
    let r = s
        .raw(
            Method::POST,
            "/v1/search",
            Some(ALPHA),
            Some("2025-09-03"),
            Some(b"{\"query\": ".to_vec()),
        )
        .await;
    r.expect_error(400, "invalid_json");
    let big = format!(
        "{{\"query\": \"{}\"}}",
        "z".repeat(quire_sandbox::MAX_PAYLOAD_BYTES + 10)
    );
    let r = s
        .raw(
            Method::POST,
            "/v1/search",
            Some(ALPHA),
            Some("2025-09-03"),
            Some(big.into_bytes()),
        )
        .await;
    let msg = r.expect_error(400, "validation_error");
    assert!(msg.contains("too large"), "{msg}");
    s.get("/v1/nothing-here", ALPHA)
        .await
        .expect_error(400, "invalid_request_url");
    s.call(Method::DELETE, "/v1/search", ALPHA, None)
        .await
        .expect_error(400, "invalid_request_url");
}

#[tokio::test]
async fn injected_failures_follow_the_seed() {
    let config = SandboxConfig {
        error_rate: 0.5,
        error_statuses: vec![500, 503, 529],
        ..unlimited()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let s = start(config.clone()).await;
        let mut seen = Vec::new();
        for _ in 0..30 {
            let r = s.get("/v1/users/me", ALPHA).await;
            match r.status {
                200 => seen.push(200),
                500 => {
                    r.expect_error(500, "internal_server_error");
                    seen.push(500);
                }
                503 => {
                    r.expect_error(503, "service_unavailable");
                    seen.push(503);
                }
                529 => {
                    r.expect_error(529, "service_overload");
                    let secs: u64 = r
                        .retry_after
                        .as_deref()
                        .expect("Retry-After")
                        .parse()
                        .unwrap();
                    assert!(secs >= 1);
                    seen.push(529);
                }
                other => panic!("unexpected status {other}: {}", r.body),
            }
        }
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1], "same seed, same failures");
    assert!(
        runs[0].contains(&200) && runs[0].iter().any(|s| *s != 200),
        "{:?}",
        runs[0]
    );
    let all = SandboxConfig {
        error_rate: 1.0,
        error_statuses: vec![503],
        ..unlimited()
    };
    let s = start(all).await;
    s.get("/v1/users/me", ALPHA)
        .await
        .expect_error(503, "service_unavailable");
}
