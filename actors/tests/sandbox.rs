//! The Notion client and the data plane against the Notion sandbox (`quire-sandbox`):
//! Notion's error objects, Retry-After on 429, pagination, and 40 concurrent calls that
//! stay within the integration's budget so Notion's own limiter never fires.

use std::time::Duration;

use quire_actors::call::{Budget, CallContext, IntegrationSpec};
use quire_actors::notion::client::{NotionClient, NotionClientConfig};
use quire_actors::notion::pagination::next_page;
use quire_actors::notion::{NotionError, NotionRequest, NotionToken};
use quire_actors::supervisor::{DataPlane, DataPlaneConfig};
use quire_sandbox::{RateLimitConfig, Sandbox, SandboxConfig};

async fn serve(config: SandboxConfig) -> (Sandbox, String) {
    let sandbox = Sandbox::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = sandbox.clone();
    tokio::spawn(async move {
        let _ = quire_sandbox::serve(s, listener).await;
    });
    (sandbox, format!("http://{addr}"))
}

fn client(base: &str) -> NotionClient {
    NotionClient::new(
        NotionClientConfig {
            base_url: base.into(),
            retry_base_ms: 10,
            ..Default::default()
        },
        1,
    )
    .expect("client")
}

#[tokio::test]
async fn sandbox_errors_map_to_notion_errors() {
    let (sandbox, base) = serve(SandboxConfig::default()).await;
    let c = client(&base);
    let alpha = NotionToken::new(sandbox.integrations()[0].token.clone());
    let me = c
        .send(&alpha, &NotionRequest::get("/v1/users/me"))
        .await
        .unwrap();
    assert_eq!(me["object"], "user");
    let e = c
        .send(
            &NotionToken::new("secret_wrong"),
            &NotionRequest::get("/v1/users/me"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotionError::Api { status: 401, ref code, .. } if code == "unauthorized"),
        "{e:?}"
    );
    let e = c
        .send(
            &alpha,
            &NotionRequest::get("/v1/pages/00000000-0000-0000-0000-000000000000"),
        )
        .await
        .unwrap_err();
    match e {
        NotionError::Api {
            status: 404,
            code,
            request_id,
            ..
        } => {
            assert_eq!(code, "object_not_found");
            assert!(request_id.is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sandbox_429_carries_retry_after() {
    let (sandbox, base) = serve(SandboxConfig {
        rate_limit: Some(RateLimitConfig {
            requests_per_second: 0.5,
            capacity: 2,
        }),
        ..Default::default()
    })
    .await;
    let c = client(&base);
    let alpha = NotionToken::new(sandbox.integrations()[0].token.clone());
    let mut limited = None;
    for _ in 0..5 {
        if let Err(e) = c.send(&alpha, &NotionRequest::get("/v1/users/me")).await {
            limited = Some(e);
            break;
        }
    }
    match limited {
        Some(NotionError::Api {
            status: 429,
            code,
            retry_after,
            ..
        }) => {
            assert_eq!(code, "rate_limited");
            assert!(
                retry_after.is_some_and(|d| d >= Duration::from_secs(1)),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a 429, got {other:?}"),
    }
}

#[tokio::test]
async fn sandbox_server_errors_are_retried_a_bounded_number_of_times() {
    let (sandbox, base) = serve(SandboxConfig {
        error_rate: 1.0,
        error_statuses: vec![503],
        rate_limit: None,
        ..Default::default()
    })
    .await;
    let c = NotionClient::new(
        NotionClientConfig {
            base_url: base,
            retry_base_ms: 5,
            max_retries: 2,
            ..Default::default()
        },
        9,
    )
    .expect("client");
    let alpha = sandbox.integrations()[0].clone();
    let e = c
        .send(
            &NotionToken::new(alpha.token.clone()),
            &NotionRequest::get("/v1/users/me"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, NotionError::Api { status: 503, .. }), "{e:?}");
    let stats = sandbox.stats();
    assert_eq!(
        stats.integrations[&alpha.name].requests, 3,
        "one try and two retries"
    );
}

/// Walks `/v1/search` page by page; returns the ids seen and the number of pages.
async fn walk(c: &NotionClient, token: &NotionToken, page_size: u64) -> (Vec<String>, usize) {
    let mut req = Some(NotionRequest::post(
        "/v1/search",
        serde_json::json!({"page_size": page_size}),
    ));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(r) = req {
        let page = c.send(token, &r).await.expect("page");
        for item in page["results"].as_array().expect("results") {
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        pages += 1;
        assert!(pages <= 1000, "pagination must end");
        req = next_page(&r, &page);
    }
    (seen, pages)
}

#[tokio::test]
async fn sandbox_pagination_walk() {
    // The raw client has no limiter of its own: walk without the sandbox's rate limit.
    let (sandbox, base) = serve(SandboxConfig {
        rate_limit: None,
        ..Default::default()
    })
    .await;
    let c = client(&base);
    let alpha = NotionToken::new(sandbox.integrations()[0].token.clone());
    let (big, big_pages) = walk(&c, &alpha, 100).await;
    let (small, small_pages) = walk(&c, &alpha, 7).await;
    assert!(big.len() >= 3, "demo content has objects: {}", big.len());
    assert_eq!(
        small, big,
        "the same objects in the same order, whatever the page size"
    );
    assert_eq!(big_pages, big.len().div_ceil(100).max(1));
    assert_eq!(small_pages, small.len().div_ceil(7).max(1));
    let mut dedup = small.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), small.len(), "no object twice");
}

/// 40 calls at once on one integration: the limiter (starting empty) spaces them at 3/s,
/// below the sandbox's bucket (3/s, capacity 10), so Notion never answers 429.
#[tokio::test]
async fn forty_concurrent_calls_stay_within_notions_limit() {
    let (sandbox, base) = serve(SandboxConfig::default()).await;
    let alpha = sandbox.integrations()[0].clone();
    let dp = DataPlane::start(DataPlaneConfig {
        notion: NotionClientConfig {
            base_url: base,
            ..Default::default()
        },
        seed: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let dp = dp.clone();
            let ctx = CallContext {
                tenant_id: "t1".into(),
                workspace_id: format!("w{}", i % 2),
                session_id: format!("s{}", i % 4),
                integration: IntegrationSpec {
                    id: "int-alpha".into(),
                    token: NotionToken::new(alpha.token.clone()),
                    budget: Budget::default(),
                },
            };
            tokio::spawn(async move { dp.call(&ctx, NotionRequest::get("/v1/users/me")).await })
        })
        .collect();
    for c in calls {
        let v = c.await.unwrap().expect("every call succeeds");
        assert_eq!(v["object"], "user");
    }
    let stats = sandbox.stats();
    let s = stats.integrations.get(&alpha.name).expect("alpha stats");
    assert_eq!(s.requests, 40);
    assert_eq!(s.rate_limited, 0, "the sandbox never had to say 429");
    assert!(
        s.max_per_second <= 13,
        "max_per_second {}",
        s.max_per_second
    );
    let l = dp.limiter_state("t1", "int-alpha").await.unwrap();
    assert_eq!((l.granted, l.rejected, l.queued), (40, 0, 0));
    dp.stop().await;
}
