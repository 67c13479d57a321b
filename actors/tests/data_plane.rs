//! The actor tree against a stub Notion: routing, 429 handling through the limiter,
//! supervision (a failed session is restarted; its calls in flight fail cleanly).

mod common;

use std::time::Duration;

use quire_actors::call::{Budget, CallContext, CallError, IntegrationSpec};
use quire_actors::notion::client::NotionClientConfig;
use quire_actors::notion::{NotionError, NotionRequest, NotionToken};
use quire_actors::supervisor::{DataPlane, DataPlaneConfig, StartError, StartOptions};
use tokio::time::Instant;

fn ctx(tenant: &str, workspace: &str, session: &str) -> CallContext {
    CallContext {
        tenant_id: tenant.into(),
        workspace_id: workspace.into(),
        session_id: session.into(),
        integration: IntegrationSpec {
            id: format!("{tenant}-int"),
            token: NotionToken::new("secret_test"),
            budget: Budget::default(),
        },
    }
}

async fn start(base: &str) -> DataPlane {
    DataPlane::start(DataPlaneConfig {
        notion: NotionClientConfig {
            base_url: base.into(),
            retry_base_ms: 10,
            ..Default::default()
        },
        call_deadline_ms: 10_000,
        seed: 7,
        ..Default::default()
    })
    .await
    .expect("data plane starts")
}

#[tokio::test]
async fn calls_route_through_tenants_sessions_and_limiters() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let v = dp
        .call(&ctx("t1", "w1", "s1"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert_eq!(v["id"], "bot");
    dp.call(&ctx("t1", "w2", "s1"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    dp.call(&ctx("t2", "w1", "s9"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    let e = dp
        .call(
            &ctx("t2", "w1", "s9"),
            NotionRequest::get("/v1/stub/missing"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::Notion(NotionError::Api { status: 404, .. })),
        "{e:?}"
    );
    let stats = dp.stats().await.unwrap();
    assert_eq!(
        (
            stats.tenants,
            stats.sessions,
            stats.limiters,
            stats.restarts
        ),
        (2, 3, 2, 0)
    );
    let l = dp
        .limiter_state("t1", "t1-int")
        .await
        .expect("limiter exists");
    assert_eq!(l.granted, 2);
    assert_eq!(stub.hits("me"), 3);
    dp.stop().await;
    let e = dp
        .call(&ctx("t1", "w1", "s1"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn a_429_pauses_the_integration_then_the_call_is_sent_again() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let t0 = Instant::now();
    let v = dp
        .call(
            &ctx("t1", "w1", "s1"),
            NotionRequest::get("/v1/stub/limited_once"),
        )
        .await
        .unwrap();
    assert_eq!(v["id"], "after-pause");
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(stub.hits("limited_once"), 2);
    // A 429 that keeps coming: bounded retries, then Notion's answer.
    let e = dp
        .call_with_deadline(
            &ctx("t1", "w1", "s1"),
            NotionRequest::get("/v1/stub/limited"),
            Duration::from_secs(3),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::Notion(NotionError::Api { status: 429, .. })),
        "{e:?}"
    );
    assert_eq!(
        stub.hits("limited"),
        1,
        "Retry-After 7 s is past the 3 s deadline: no resend"
    );
    let l = dp.limiter_state("t1", "t1-int").await.unwrap();
    assert!(
        l.paused_for.is_some_and(|d| d > Duration::from_secs(5)),
        "{l:?}"
    );
    // While paused, a call with a short deadline is refused at once, nothing sent.
    let asked = Instant::now();
    let e = dp
        .call_with_deadline(
            &ctx("t1", "w1", "s2"),
            NotionRequest::get("/v1/stub/me"),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::RateLimited { retry_after_seconds } if retry_after_seconds >= 5),
        "{e:?}"
    );
    assert!(asked.elapsed() < Duration::from_millis(500));
    assert_eq!(stub.hits("me"), 0);
    dp.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_under_new_permits() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let v = dp
        .call(&ctx("t1", "w1", "s1"), NotionRequest::get("/v1/stub/flaky"))
        .await
        .unwrap();
    assert_eq!(v["attempt"], 3);
    assert_eq!(dp.limiter_state("t1", "t1-int").await.unwrap().granted, 3);
    assert_eq!(stub.hits("flaky"), 3);
    dp.stop().await;
}

#[tokio::test]
async fn a_failed_session_is_restarted_and_its_calls_fail_cleanly() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let c = ctx("t1", "w1", "s1");
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let dp = dp.clone();
            let c = c.clone();
            tokio::spawn(async move { dp.call(&c, NotionRequest::get("/v1/stub/slow")).await })
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    while stub.hits("slow") < 3 {
        assert!(Instant::now() < until, "slow calls never reached the stub");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let crashed_at = Instant::now();
    assert!(dp.crash_session_for_test("t1", "w1").await);
    for t in slow {
        let r = t.await.unwrap();
        assert!(matches!(r, Err(CallError::Unavailable(_))), "{r:?}");
    }
    assert!(
        crashed_at.elapsed() < Duration::from_secs(2),
        "failed promptly, not at the deadline"
    );
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let s = dp.stats().await.unwrap();
        if s.restarts == 1 && s.sessions == 1 {
            break;
        }
        assert!(Instant::now() < until, "session not restarted: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The restarted session serves the workspace again.
    let v = dp
        .call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert_eq!(v["id"], "bot");
    assert!(!dp.crash_session_for_test("t1", "nope").await);
    dp.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_sends_nothing() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let e = dp
        .call(&ctx("", "w1", "s1"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("tenant_id"), "{e}");
    let mut c = ctx("t1", "w1", "s1");
    c.integration.budget = Budget {
        requests_per_second: 0,
        burst: 5,
    };
    let e = dp
        .call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("requests_per_second"), "{e}");
    let e = dp
        .call(
            &ctx("t1", "w1", "s1"),
            NotionRequest::get("/v1/users").with_query("page_size", "0"),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("page_size"), "{e}");
    assert_eq!(stub.hits("me") + stub.hits("users"), 0);
    let bad = DataPlane::start(DataPlaneConfig {
        max_in_flight_per_session: 0,
        ..Default::default()
    })
    .await;
    assert!(matches!(bad, Err(StartError::Config(_))));
    let bad = DataPlane::start(DataPlaneConfig {
        notion: NotionClientConfig {
            base_url: "nope".into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    assert!(matches!(bad, Err(StartError::Notion(_))));
    dp.stop().await;
}

#[tokio::test]
async fn the_tenant_limit_holds() {
    let (base, _stub) = common::serve_stub().await;
    let dp = DataPlane::start(DataPlaneConfig {
        notion: NotionClientConfig {
            base_url: base,
            ..Default::default()
        },
        max_tenants: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    dp.call(&ctx("t1", "w1", "s1"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    let e = dp
        .call(&ctx("t2", "w1", "s1"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::Unavailable(ref m) if m.contains("max_tenants")),
        "{e:?}"
    );
    dp.stop().await;
}

#[tokio::test]
async fn in_flight_calls_per_session_are_bounded() {
    let (base, stub) = common::serve_stub().await;
    for (max_in_flight, at_least, at_most) in [(1, 900, 2_000), (3, 300, 800)] {
        let dp = DataPlane::start(DataPlaneConfig {
            notion: NotionClientConfig {
                base_url: base.clone(),
                ..Default::default()
            },
            max_in_flight_per_session: max_in_flight,
            ..Default::default()
        })
        .await
        .unwrap();
        let started = Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let dp = dp.clone();
                let mut c = ctx("t1", "w1", &format!("s{i}"));
                // A budget that never holds a call up (limiters start empty: at 3/s the
                // permits alone would space the calls 333 ms apart).
                c.integration.budget = Budget {
                    requests_per_second: 1_000,
                    burst: 10,
                };
                tokio::spawn(async move { dp.call(&c, NotionRequest::get("/v1/stub/delay")).await })
            })
            .collect();
        for c in calls {
            c.await.unwrap().unwrap();
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(at_least) && took <= Duration::from_millis(at_most),
            "max_in_flight {max_in_flight}: 3 calls of 300 ms took {took:?}"
        );
        dp.stop().await;
    }
    assert_eq!(stub.hits("delay"), 6);
}

#[tokio::test]
async fn a_429_that_arrives_after_the_callers_deadline_still_pauses_the_integration() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let c = ctx("t1", "w1", "s1");
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    // Let the bucket refill, so the next request goes out at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Notion answers 429 (Retry-After 7 s) 400 ms after the request; the caller gives up at
    // 100 ms. The request is not abandoned: its 429 still pauses the integration.
    let e = dp
        .call_with_deadline(
            &c,
            NotionRequest::get("/v1/stub/slow_limited"),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::Notion(NotionError::Timeout { .. })),
        "{e:?}"
    );
    let t0 = Instant::now();
    loop {
        let snap = dp.limiter_snapshot("t1", "t1-int").await.unwrap();
        if snap.pause_remaining_ms > 5_000 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the late 429 never paused the integration: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stub.hits("slow_limited"), 1);
    dp.stop().await;
}

#[tokio::test]
async fn a_pause_from_elsewhere_holds_the_integration() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let c = ctx("t1", "w1", "s1");
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert!(
        !dp.pause_integration("t1", "nope", Duration::from_secs(1))
            .await
    );
    assert!(
        dp.pause_integration("t1", "t1-int", Duration::from_secs(1))
            .await
    );
    let snap = dp.limiter_snapshot("t1", "t1-int").await.unwrap();
    assert!(
        snap.pause_remaining_ms > 500 && snap.pause_remaining_ms <= 1000,
        "{snap:?}"
    );
    assert_eq!(snap.tokens_micros, 0);
    let t0 = Instant::now();
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(stub.hits("me"), 2);
    // An absurd deadline is clamped, not an overflow.
    dp.call_with_deadline(&c, NotionRequest::get("/v1/stub/me"), Duration::MAX)
        .await
        .unwrap();
    dp.stop().await;
}

#[tokio::test]
async fn a_failed_tenant_is_restarted_with_empty_buckets() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let c = ctx("t1", "w1", "s1");
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    let slow = {
        let (dp, c) = (dp.clone(), c.clone());
        tokio::spawn(async move { dp.call(&c, NotionRequest::get("/v1/stub/slow")).await })
    };
    let until = Instant::now() + Duration::from_secs(5);
    while stub.hits("slow") < 1 {
        assert!(Instant::now() < until, "slow call never reached the stub");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let crashed_at = Instant::now();
    assert!(dp.crash_tenant_for_test("t1").await);
    let r = slow.await.unwrap();
    assert!(matches!(r, Err(CallError::Unavailable(_))), "{r:?}");
    assert!(crashed_at.elapsed() < Duration::from_secs(2));
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let s = dp.stats().await.unwrap();
        if s.restarts == 1 && s.tenants == 1 && s.sessions == 0 && s.limiters == 0 {
            break;
        }
        assert!(Instant::now() < until, "tenant not restarted empty: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The restarted tenant serves calls; its new limiter started empty (no burst).
    let t0 = Instant::now();
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "waited for a token: {:?}",
        t0.elapsed()
    );
    assert!(!dp.crash_tenant_for_test("nope").await);
    dp.stop().await;
}

/// A data plane cannot know what its node's previous incarnation sent just before it
/// started: every limiter starts empty, so the first call waits for one token (1/rps) and
/// the burst is earned, not assumed. The simulator's planted bug starts them full.
#[tokio::test]
async fn limiters_start_empty_unless_the_planted_bug_is_on() {
    let (base, stub) = common::serve_stub().await;
    for start_full in [false, true] {
        let dp = DataPlane::start_with(
            DataPlaneConfig {
                notion: NotionClientConfig {
                    base_url: base.clone(),
                    ..Default::default()
                },
                ..Default::default()
            },
            StartOptions {
                planted_bug_limiters_start_full: start_full,
                ..StartOptions::default()
            },
        )
        .await
        .unwrap();
        let c = ctx("t1", "w1", "s1");
        let t0 = Instant::now();
        let calls: Vec<_> = (0..5)
            .map(|_| {
                let dp = dp.clone();
                let c = c.clone();
                tokio::spawn(async move { dp.call(&c, NotionRequest::get("/v1/stub/me")).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let took = t0.elapsed();
        if start_full {
            // The whole burst of 5 at once.
            assert!(took < Duration::from_millis(300), "{took:?}");
        } else {
            // Five tokens earned at 3/s: the fifth after 5/3 s.
            assert!(took >= Duration::from_millis(1_600), "{took:?}");
            assert!(took < Duration::from_millis(3_000), "{took:?}");
        }
        dp.stop().await;
    }
    assert_eq!(stub.hits("me"), 10);
}

#[tokio::test]
async fn notion_requests_are_counted_by_integration_and_status_with_retries() {
    let (base, stub) = common::serve_stub().await;
    let dp = start(&base).await;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    // A 429, then the same request again after Retry-After: two requests for one call.
    dp.call_counting(
        &ctx("t1", "w1", "s1"),
        NotionRequest::get("/v1/stub/limited_once"),
        sent.clone(),
    )
    .await
    .unwrap();
    assert_eq!(sent.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stub.hits("limited_once"), 2);
    dp.call(
        &ctx("t1", "w1", "s1"),
        NotionRequest::get("/v1/stub/missing"),
    )
    .await
    .unwrap_err();
    let stats = dp.notion_stats().snapshot();
    let int = &stats["t1-int"];
    assert_eq!(int.requests_by_status.get("429"), Some(&1));
    assert_eq!(int.requests_by_status.get("200"), Some(&1));
    assert_eq!(int.requests_by_status.get("404"), Some(&1));
    assert_eq!(int.waiting, 0, "nothing waits for a permit any more");
    assert_eq!(
        int.wait_seconds.count(),
        3,
        "one permit wait per request sent"
    );
    assert!(
        int.wait_seconds.sum() >= 1.0,
        "the resend waited out Retry-After: {}",
        int.wait_seconds.sum()
    );
    dp.stop().await;
}

#[tokio::test]
async fn a_stopping_data_plane_fails_its_calls_in_workspace_order() {
    // ractor keeps a supervisor's children in a `HashMap`, whose order differs from one map
    // to the next; the supervisors stop their children in id order instead, so the calls in
    // flight fail in the same order on every run (the simulator's replay depends on it).
    let (base, stub) = common::serve_stub().await;
    for round in 0..6u64 {
        let dp = start(&base).await;
        let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls: Vec<_> = ["w3", "w1", "w4", "w2"]
            .into_iter()
            .map(|w| {
                let dp = dp.clone();
                let failed = failed.clone();
                let mut c = ctx("t1", w, w);
                c.integration.budget = Budget {
                    requests_per_second: 1_000,
                    burst: 10,
                };
                tokio::spawn(async move {
                    let result = dp.call(&c, NotionRequest::get("/v1/stub/slow")).await;
                    failed.lock().unwrap().push(w);
                    result
                })
            })
            .collect();
        let sent = 4 * (round + 1);
        let waited = Instant::now();
        while stub.hits("slow") < sent {
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "round {round}: {} of {sent} calls reached the stub",
                stub.hits("slow")
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        dp.stop().await;
        for c in calls {
            let result = c.await.unwrap();
            assert!(
                matches!(result, Err(CallError::Unavailable(_))),
                "round {round}: {result:?}"
            );
        }
        assert_eq!(
            *failed.lock().unwrap(),
            ["w1", "w2", "w3", "w4"],
            "round {round}"
        );
    }
}

/// A data plane whose tenants passivate after `idle_ms`, and a budget that refills its
/// bucket in 10 ms, so only the idle time and pauses decide when a tenant goes.
async fn start_passivating(base: &str, idle_ms: u64) -> DataPlane {
    DataPlane::start(DataPlaneConfig {
        notion: NotionClientConfig {
            base_url: base.into(),
            retry_base_ms: 10,
            ..Default::default()
        },
        call_deadline_ms: 10_000,
        idle_tenant_ms: idle_ms,
        seed: 7,
        ..Default::default()
    })
    .await
    .expect("data plane starts")
}

fn quick_ctx(tenant: &str) -> CallContext {
    let mut c = ctx(tenant, "w1", "s1");
    c.integration.budget = Budget {
        requests_per_second: 1_000,
        burst: 10,
    };
    c
}

/// Waits (polling) until `tenant`'s supervisor is gone, at most `within`; returns when.
async fn passivated_within(dp: &DataPlane, passivations: u64, within: Duration) -> Instant {
    let until = Instant::now() + within;
    loop {
        let s = dp.stats().await.expect("data plane stats");
        if s.passivated >= passivations {
            assert_eq!(s.passivated, passivations, "{s:?}");
            return Instant::now();
        }
        assert!(
            Instant::now() < until,
            "no passivation within {within:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_idle_tenant_passivates_and_its_next_call_starts_it_again() {
    let (base, stub) = common::serve_stub().await;
    let dp = start_passivating(&base, 300).await;
    let c = quick_ctx("t1");
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    let answered = Instant::now();
    dp.call(&quick_ctx("t2"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    let s = dp.stats().await.unwrap();
    assert_eq!((s.tenants, s.limiters, s.passivated), (2, 2, 0), "{s:?}");
    let counts = dp.notion_stats().tenants();
    assert_eq!((counts.started, counts.passivated), (2, 0));

    let gone = passivated_within(&dp, 2, Duration::from_secs(5)).await;
    assert!(
        gone.duration_since(answered) >= Duration::from_millis(300),
        "passivated after {:?}, before the idle time",
        gone.duration_since(answered)
    );
    let s = dp.stats().await.unwrap();
    assert_eq!(
        (s.tenants, s.sessions, s.limiters, s.restarts),
        (0, 0, 0, 0),
        "passivations are not restarts: {s:?}"
    );
    assert!(dp.limiter_state("t1", "t1-int").await.is_none());
    let counts = dp.notion_stats().tenants();
    assert_eq!((counts.started, counts.passivated), (2, 2));

    // The next call starts a new supervisor and succeeds.
    let v = dp
        .call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert_eq!(v["id"], "bot");
    assert_eq!(stub.hits("me"), 3);
    let s = dp.stats().await.unwrap();
    assert_eq!((s.tenants, s.limiters, s.restarts), (1, 1, 0), "{s:?}");
    let counts = dp.notion_stats().tenants();
    assert_eq!((counts.started, counts.passivated), (3, 2));
    dp.stop().await;
}

#[tokio::test]
async fn passivation_off_or_out_of_bounds() {
    let (base, _stub) = common::serve_stub().await;
    let dp = start_passivating(&base, 0).await;
    dp.call(&quick_ctx("t1"), NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    // 0 turns passivation off: nothing is even checked, so the tenant is still there
    // well after any idle time the other tests use.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = dp.stats().await.unwrap();
    assert_eq!((s.tenants, s.passivated), (1, 0), "{s:?}");
    dp.stop().await;
    let bad = DataPlane::start(DataPlaneConfig {
        idle_tenant_ms: quire_actors::supervisor::MAX_IDLE_TENANT_MS + 1,
        ..Default::default()
    })
    .await;
    assert!(
        matches!(bad, Err(StartError::Config(ref m)) if m.contains("idle_tenant_ms")),
        "{bad:?}"
    );
}

#[tokio::test]
async fn a_tenant_with_a_call_in_flight_does_not_passivate() {
    let (base, stub) = common::serve_stub().await;
    let dp = start_passivating(&base, 200).await;
    let c = quick_ctx("t1");
    // The stub answers `slow` after 5 s: 25 idle times with the call in flight.
    let slow = {
        let (dp, c) = (dp.clone(), c.clone());
        tokio::spawn(async move { dp.call(&c, NotionRequest::get("/v1/stub/slow")).await })
    };
    let until = Instant::now() + Duration::from_secs(5);
    while stub.hits("slow") < 1 {
        assert!(Instant::now() < until, "slow call never reached the stub");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.is_finished() {
            break;
        }
        let s = dp.stats().await.unwrap();
        assert_eq!((s.tenants, s.passivated), (1, 0), "{s:?}");
    }
    let v = slow.await.unwrap().unwrap();
    assert_eq!(v["slow"], true, "the call in flight was not cut short");
    let done = Instant::now();
    let gone = passivated_within(&dp, 1, Duration::from_secs(5)).await;
    assert!(gone.duration_since(done) < Duration::from_secs(5));
    assert_eq!(dp.notion_stats().tenants().passivated, 1);
    dp.stop().await;
}

#[tokio::test]
async fn a_paused_integration_keeps_its_tenant_until_the_pause_ends() {
    let (base, stub) = common::serve_stub().await;
    let dp = start_passivating(&base, 200).await;
    let c = quick_ctx("t1");
    // Notion answers 429 with Retry-After 7 s; the caller gives up before that.
    let e = dp
        .call_with_deadline(
            &c,
            NotionRequest::get("/v1/stub/limited"),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, CallError::Notion(NotionError::Api { status: 429, .. })),
        "{e:?}"
    );
    let limited_at = Instant::now();
    assert_eq!(stub.hits("limited"), 1);
    let gone = passivated_within(&dp, 1, Duration::from_secs(12)).await;
    let kept = gone.duration_since(limited_at);
    assert!(
        kept >= Duration::from_millis(6_500),
        "passivated {kept:?} into a 7 s pause: the next incarnation would forget it"
    );

    // A pause from elsewhere (another node saw the 429) counts the same way.
    dp.call(&c, NotionRequest::get("/v1/stub/me"))
        .await
        .unwrap();
    assert!(
        dp.pause_integration("t1", "t1-int", Duration::from_millis(1_500))
            .await
    );
    let paused_at = Instant::now();
    let gone = passivated_within(&dp, 2, Duration::from_secs(6)).await;
    assert!(
        gone.duration_since(paused_at) >= Duration::from_millis(1_400),
        "passivated {:?} into a 1.5 s pause",
        gone.duration_since(paused_at)
    );
    // Gone, the tenant has no limiter left to pause.
    assert!(
        !dp.pause_integration("t1", "t1-int", Duration::from_secs(1))
            .await
    );
    dp.stop().await;
}
