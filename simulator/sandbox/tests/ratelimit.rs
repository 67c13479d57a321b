//! The per-integration token bucket, 429 with Retry-After, and the stats endpoint.

mod common;

use common::*;
use quire_sandbox::{RateLimitConfig, SandboxConfig, SandboxStats};
use reqwest::Method;

#[tokio::test]
async fn burst_is_limited_and_counted() {
    let config = SandboxConfig {
        rate_limit: Some(RateLimitConfig {
            requests_per_second: 3.0,
            capacity: 10,
        }),
        ..SandboxConfig::default()
    };
    let s = start(config).await;
    let started = tokio::time::Instant::now();
    let (mut ok, mut limited) = (0u64, 0u64);
    for _ in 0..25 {
        let r = s.get("/v1/users/me", ALPHA).await;
        if r.status == 429 {
            r.expect_error(429, "rate_limited");
            let secs: u64 = r
                .retry_after
                .as_deref()
                .expect("Retry-After")
                .parse()
                .expect("integer seconds");
            assert!(secs >= 1);
            limited += 1;
        } else {
            assert_eq!(r.status, 200, "{}", r.body);
            ok += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(ok >= 10, "the bucket starts full: {ok}");
    assert!(
        (ok as f64) <= 10.0 + 3.0 * elapsed + 1.0,
        "{ok} admitted in {elapsed}s"
    );
    assert!(limited > 0);
    // Beta has its own bucket.
    assert_eq!(s.get("/v1/users/me", BETA).await.status, 200);

    let stats: SandboxStats = serde_json::from_value(
        s.raw(Method::GET, "/__sandbox/stats", None, None, None)
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(stats, s.sandbox.stats());
    let alpha = stats.integrations["alpha"];
    assert_eq!(alpha.requests, ok);
    assert_eq!(alpha.rate_limited, limited);
    assert!(
        alpha.max_per_second >= 10 && alpha.max_per_second <= 13,
        "{alpha:?}"
    );
    assert_eq!(stats.integrations["beta"].requests, 1);

    s.raw(Method::POST, "/__sandbox/stats/reset", None, None, None)
        .await
        .ok();
    let stats = s.sandbox.stats();
    assert_eq!(stats.integrations["alpha"], Default::default());
}

#[tokio::test]
async fn unauthenticated_requests_are_not_counted() {
    let s = start(SandboxConfig::default()).await;
    for _ in 0..3 {
        s.raw(Method::GET, "/v1/users/me", None, Some("2025-09-03"), None)
            .await
            .expect_error(401, "unauthorized");
    }
    let stats = s.sandbox.stats();
    assert_eq!(stats.integrations["alpha"].requests, 0);
    assert_eq!(stats.integrations["beta"].requests, 0);
}

#[tokio::test]
async fn seeded_latency_is_applied() {
    let s = start(SandboxConfig {
        latency_ms: Some((60, 80)),
        ..unlimited()
    })
    .await;
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        s.get("/v1/users/me", ALPHA).await.ok();
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(180),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn senders_and_their_switches_are_counted_by_source_address_or_client_header() {
    let s = start(unlimited()).await;
    // Two hosts, as the sandbox sees them: 127.0.0.1 and 127.0.0.2 (both loopback).
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .expect("a client")
    };
    let (a, b) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let get = async |client: &reqwest::Client, header: Option<&str>| {
        let mut req = client
            .get(format!("{}/v1/users/me", s.base))
            .bearer_auth(ALPHA)
            .header("Notion-Version", "2025-09-03");
        if let Some(name) = header {
            req = req.header(quire_sandbox::CLIENT_HEADER, name);
        }
        let status = req.send().await.expect("answered").status();
        assert_eq!(status, 200);
    };
    // a a b b a: two senders, two switches (a new connection from the same host is the
    // same sender).
    get(&a, None).await;
    get(&from([127, 0, 0, 1]), None).await;
    get(&b, None).await;
    get(&b, None).await;
    get(&a, None).await;
    let alpha = s.sandbox.stats().integrations["alpha"];
    assert_eq!((alpha.senders, alpha.sender_switches), (2, 2), "{alpha:?}");
    // A harness names senders with the header, whatever the address.
    get(&a, Some("n7")).await;
    get(&b, Some("n7")).await;
    let alpha = s.sandbox.stats().integrations["alpha"];
    assert_eq!((alpha.senders, alpha.sender_switches), (3, 3), "{alpha:?}");
    // Beta counts its own; a reset forgets them.
    assert_eq!(s.sandbox.stats().integrations["beta"].senders, 0);
    s.sandbox.reset_stats();
    let alpha = s.sandbox.stats().integrations["alpha"];
    assert_eq!((alpha.senders, alpha.sender_switches), (0, 0), "{alpha:?}");
}
