//! `DataPlane::call_fenced`: the fence is checked after the rate-limit permit and before the
//! request is sent; a fence that says no fails the call as unavailable and Notion sees
//! nothing; one that says yes lets the call through, counted.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use quire_actors::call::{Budget, CallContext, CallError, Fence, IntegrationSpec};
use quire_actors::limiter::ShardEpoch;
use quire_actors::notion::client::NotionClientConfig;
use quire_actors::notion::{NotionRequest, NotionToken};
use quire_actors::supervisor::{DataPlane, DataPlaneConfig};
use quire_sandbox::{Sandbox, SandboxConfig};

#[tokio::test]
async fn a_closed_fence_stops_the_request_after_the_permit() {
    let sandbox = Sandbox::new(SandboxConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn({
        let s = sandbox.clone();
        async move {
            let _ = quire_sandbox::serve(s, listener).await;
        }
    });
    let alpha = sandbox.integrations()[0].clone();
    let dp = DataPlane::start(DataPlaneConfig {
        notion: NotionClientConfig {
            base_url: base,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let ctx = CallContext {
        tenant_id: "t1".into(),
        workspace_id: "w1".into(),
        session_id: "s1".into(),
        integration: IntegrationSpec {
            id: "int-alpha".into(),
            token: NotionToken::new(alpha.token.clone()),
            budget: Budget::default(),
        },
    };
    let open = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU32::new(0));
    let fence: Fence = {
        let open = open.clone();
        let checks = checks.clone();
        Arc::new(move || {
            checks.fetch_add(1, Ordering::SeqCst);
            if open.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("this node no longer owns the integration's shard".into())
            }
        })
    };
    let sent = Arc::new(AtomicU32::new(0));
    let err = dp
        .call_fenced(
            &ctx,
            NotionRequest::get("/v1/users/me"),
            Duration::from_secs(5),
            sent.clone(),
            fence.clone(),
            ShardEpoch::new("any#0", 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Unavailable(ref m) if m.contains("no longer owns")),
        "{err:?}"
    );
    assert_eq!(
        checks.load(Ordering::SeqCst),
        1,
        "checked once, after the permit"
    );
    assert_eq!(sent.load(Ordering::SeqCst), 0, "nothing counted as sent");
    let requests = |s: &Sandbox| {
        s.stats()
            .integrations
            .get(&alpha.name)
            .map_or(0, |i| i.requests)
    };
    assert_eq!(requests(&sandbox), 0, "Notion saw nothing");

    open.store(true, Ordering::SeqCst);
    let v = dp
        .call_fenced(
            &ctx,
            NotionRequest::get("/v1/users/me"),
            Duration::from_secs(5),
            sent.clone(),
            fence,
            ShardEpoch::new("any#0", 1),
        )
        .await
        .unwrap();
    assert_eq!(v["object"], "user");
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert_eq!(requests(&sandbox), 1);
}
