//! The same seed gives the same workspace; another seed gives another.

mod common;

use common::*;
use quire_sandbox::SandboxConfig;
use serde_json::json;

async fn snapshot(seed: u64) -> (quire_sandbox::DemoIds, Vec<serde_json::Value>) {
    let s = start(SandboxConfig {
        seed,
        ..unlimited()
    })
    .await;
    let demo = s.sandbox.demo();
    let mut seen = Vec::new();
    seen.push(
        s.get(&format!("/v1/blocks/{}/children", demo.root_page_id), ALPHA)
            .await
            .ok(),
    );
    seen.push(
        s.post(
            &format!("/v1/data_sources/{}/query", demo.data_source_id),
            ALPHA,
            json!({"page_size": 20}),
        )
        .await
        .ok(),
    );
    seen.push(
        s.post("/v1/search", ALPHA, json!({"query": "roadmap"}))
            .await
            .ok(),
    );
    seen.push(s.get("/v1/users", ALPHA).await.ok());
    (demo, seen)
}

#[tokio::test]
async fn same_seed_same_workspace() {
    let (a, sa) = snapshot(7).await;
    let (b, sb) = snapshot(7).await;
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    let (c, _) = snapshot(8).await;
    assert_ne!(a.root_page_id, c.root_page_id);
    assert_eq!(a.user_ids.len(), 5);
    assert_eq!(s_integrations(), ["alpha", "beta"]);
}

fn s_integrations() -> Vec<String> {
    quire_sandbox::Sandbox::new(SandboxConfig::default())
        .integrations()
        .into_iter()
        .map(|i| i.name)
        .collect()
}
