//! The Notion client against a stub server: headers, error objects, Retry-After, bounded
//! 5xx retries, timeouts, the response cap and a pagination walk.

mod common;

use std::time::Duration;

use quire_actors::notion::client::{NotionClient, NotionClientConfig};
use quire_actors::notion::pagination::next_page;
use quire_actors::notion::{NotionError, NotionRequest, NotionToken};
use serde_json::json;

fn token() -> NotionToken {
    NotionToken::new("secret_test")
}

async fn client_for(base: &str, tweak: impl FnOnce(&mut NotionClientConfig)) -> NotionClient {
    let mut cfg = NotionClientConfig {
        base_url: base.to_string(),
        retry_base_ms: 10,
        max_retries: 2,
        request_timeout_ms: 2_000,
        ..Default::default()
    };
    tweak(&mut cfg);
    NotionClient::new(cfg, 42).expect("client")
}

#[tokio::test]
async fn sends_auth_and_version_headers() {
    let (base, stub) = common::serve_stub().await;
    let c = client_for(&base, |_| {}).await;
    let v = c
        .send(&token(), &NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert_eq!(v["id"], "bot");
    let e = c
        .send(
            &NotionToken::new("wrong"),
            &NotionRequest::get("/v1/stub/me"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotionError::Api { status: 401, ref code, .. } if code == "unauthorized"),
        "{e:?}"
    );
    assert_eq!(stub.hits("me"), 1);
}

#[tokio::test]
async fn maps_error_objects_and_plain_bodies() {
    let (base, _stub) = common::serve_stub().await;
    let c = client_for(&base, |cfg| cfg.max_retries = 0).await;
    match c
        .send(&token(), &NotionRequest::get("/v1/stub/missing"))
        .await
    {
        Err(NotionError::Api {
            status,
            code,
            message,
            request_id,
            retry_after,
        }) => {
            assert_eq!((status, code.as_str()), (404, "object_not_found"));
            assert_eq!(message, "Could not find page.");
            assert_eq!(request_id.as_deref(), Some("req-object_not_found"));
            assert_eq!(retry_after, None);
        }
        other => panic!("{other:?}"),
    }
    match c
        .send(&token(), &NotionRequest::get("/v1/stub/always502"))
        .await
    {
        Err(NotionError::Api {
            status: 502,
            code,
            message,
            ..
        }) => {
            assert_eq!(code, "bad_gateway");
            assert!(message.contains("upstream down"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let e = c
        .send(&token(), &NotionRequest::get("/v1/stub/notjson"))
        .await
        .unwrap_err();
    assert!(matches!(e, NotionError::Decode(_)), "{e:?}");
}

#[tokio::test]
async fn rate_limits_carry_retry_after_and_are_not_retried() {
    let (base, stub) = common::serve_stub().await;
    let c = client_for(&base, |_| {}).await;
    match c
        .send(&token(), &NotionRequest::get("/v1/stub/limited"))
        .await
    {
        Err(NotionError::Api {
            status: 429,
            code,
            retry_after,
            ..
        }) => {
            assert_eq!(code, "rate_limited");
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("{other:?}"),
    }
    match c
        .send(&token(), &NotionRequest::get("/v1/stub/overload"))
        .await
    {
        Err(NotionError::Api {
            status: 529,
            code,
            retry_after,
            ..
        }) => {
            assert_eq!(code, "service_overload");
            assert_eq!(retry_after, Some(Duration::from_secs(3)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((stub.hits("limited"), stub.hits("overload")), (1, 1));
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let (base, stub) = common::serve_stub().await;
    let c = client_for(&base, |cfg| cfg.max_retries = 2).await;
    let e = c
        .send(&token(), &NotionRequest::get("/v1/stub/always502"))
        .await
        .unwrap_err();
    assert!(matches!(e, NotionError::Api { status: 502, .. }));
    assert_eq!(stub.hits("always502"), 3, "one try and two retries");
    // Fails twice with 503, then answers.
    let v = c
        .send(&token(), &NotionRequest::get("/v1/stub/flaky"))
        .await
        .unwrap();
    assert_eq!(v["attempt"], 3);
    // 4xx is never retried.
    let e = c
        .send(&token(), &NotionRequest::get("/v1/stub/bad_request"))
        .await
        .unwrap_err();
    assert!(matches!(e, NotionError::Api { status: 400, .. }));
    assert_eq!(stub.hits("bad_request"), 1);
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let (base, _stub) = common::serve_stub().await;
    let c = client_for(&base, |cfg| cfg.request_timeout_ms = 200).await;
    let started = tokio::time::Instant::now();
    let e = c
        .send(&token(), &NotionRequest::get("/v1/stub/slow"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotionError::Timeout { timeout_ms: 200 }),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_large_answer_is_refused() {
    let (base, _stub) = common::serve_stub().await;
    let c = client_for(&base, |cfg| cfg.max_response_bytes = 1024).await;
    let e = c
        .send(&token(), &NotionRequest::get("/v1/stub/big"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotionError::Decode(ref m) if m.contains("1024")),
        "{e:?}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_before_sending() {
    let (base, stub) = common::serve_stub().await;
    let c = client_for(&base, |_| {}).await;
    let req = NotionRequest::get("/v1/users").with_query("page_size", "101");
    let e = c.send(&token(), &req).await.unwrap_err();
    assert!(
        matches!(e, NotionError::Api { status: 400, ref code, .. } if code == "validation_error"),
        "{e:?}"
    );
    assert_eq!(stub.hits("users"), 0);
    for bad in ["ftp://x", "not a url", "http://127.0.0.1:1/v1"] {
        let cfg = NotionClientConfig {
            base_url: bad.into(),
            ..Default::default()
        };
        let e = NotionClient::new(cfg, 0).unwrap_err();
        assert!(e.to_string().contains("base_url"), "{bad}: {e}");
    }
    let e = NotionClient::new(
        NotionClientConfig {
            request_timeout_ms: 0,
            ..Default::default()
        },
        0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("request_timeout_ms"), "{e}");
}

#[tokio::test]
async fn unreachable_notion_is_a_transport_error() {
    // Bind then drop a listener: nothing answers on that port.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client_for(&format!("http://127.0.0.1:{port}"), |_| {}).await;
    let e = c
        .send(&token(), &NotionRequest::get("/v1/users"))
        .await
        .unwrap_err();
    assert!(matches!(e, NotionError::Transport(_)), "{e:?}");
}

#[tokio::test]
async fn pagination_walks_every_page() {
    let (base, stub) = common::serve_stub().await;
    let c = client_for(&base, |_| {}).await;
    for first in [
        NotionRequest::get("/v1/users").with_query("page_size", "3"),
        NotionRequest::post("/v1/search", json!({"page_size": 3})),
    ] {
        let mut req = Some(first);
        let mut ids = Vec::new();
        let mut pages = 0;
        while let Some(r) = req {
            let page = c.send(&token(), &r).await.unwrap();
            for u in page["results"].as_array().unwrap() {
                ids.push(u["id"].as_str().unwrap().to_string());
            }
            pages += 1;
            assert!(pages <= 10, "pagination must end");
            req = next_page(&r, &page);
        }
        assert_eq!(pages, 3);
        assert_eq!(ids, (0..7).map(|i| format!("u{i}")).collect::<Vec<_>>());
    }
    assert_eq!((stub.hits("users"), stub.hits("search")), (3, 3));
}
