//! Faults switched on and off at run time (the simulator's Notion 429 and 5xx bursts), and
//! the observer that sees every authenticated request with its answer.

mod common;

use std::sync::{Arc, Mutex};

use common::{ALPHA, BETA, start, unlimited};
use quire_sandbox::{NotionFault, RequestSeen};

#[tokio::test]
async fn runtime_faults_switch_on_and_off_and_every_answer_is_observed() {
    let server = start(unlimited()).await;
    let seen: Arc<Mutex<Vec<RequestSeen>>> = Arc::default();
    {
        let seen = seen.clone();
        server
            .sandbox
            .set_observer(Some(Arc::new(move |r| seen.lock().unwrap().push(r))));
    }
    server.get("/v1/users/me", ALPHA).await.ok();

    server
        .sandbox
        .set_fault(Some(NotionFault::RateLimited { retry_after_s: 3 }));
    let reply = server.get("/v1/users/me", BETA).await;
    reply.expect_error(429, "rate_limited");
    assert_eq!(reply.retry_after.as_deref(), Some("3"));

    server.sandbox.set_fault(Some(NotionFault::ServerErrors {
        statuses: vec![503],
    }));
    server
        .get("/v1/users/me", ALPHA)
        .await
        .expect_error(503, "service_unavailable");

    server.sandbox.set_fault(None);
    assert_eq!(server.sandbox.fault(), None);
    server.get("/v1/users/me", ALPHA).await.ok();
    // Not authenticated: not an integration's request, not observed.
    server
        .get("/v1/users/me", "secret_nope")
        .await
        .expect_error(401, "unauthorized");

    let seen = seen.lock().unwrap().clone();
    let summary: Vec<(&str, u16, Option<u64>)> = seen
        .iter()
        .map(|r| (r.integration.as_str(), r.status, r.retry_after_s))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("alpha", 200, None),
            ("beta", 429, Some(3)),
            ("alpha", 503, None),
            ("alpha", 200, None),
        ]
    );
    let stats = server.sandbox.stats();
    assert_eq!(stats.integrations["beta"].rate_limited, 1);
}
