//! Metrics and structured logs of the real `quire` binary (`serve --sandbox` on loopback,
//! JSON logs): after a tool call, `/metrics` parses as the Prometheus text format, has every
//! family the README lists, and its counters moved; the call's JSON log line names the node,
//! tenant, workspace, principal and MCP session.

mod cluster_common;

use std::path::Path;
use std::time::Duration;

use cluster_common::mcp::Session;
use cluster_common::process::{Node, sandbox_in, wait_ready};
use quire_node::metrics::{Parsed, parse};
use serde_json::{Value, json};

/// A sandbox node logging at info, with the log format and the metrics token setting unset
/// unless `extra_env` sets them.
fn start_node(dir: &Path, extra_env: &[(&str, &str)]) -> Node {
    let mut node = sandbox_in(dir, "info");
    node.command
        .env_remove("QUIRE_LOG_FORMAT")
        .env_remove("QUIRE_METRICS_REQUIRE_TOKEN");
    for (k, v) in extra_env {
        node.command.env(k, v);
    }
    node.spawn()
}

/// Opens an MCP session and calls `tool`; returns the session id.
async fn call_tool(http: &reqwest::Client, base: &str, token: &str, tool: &str) -> String {
    let session = Session::initialize(http, base, token, "observability-test", None)
        .await
        .expect("initialize");
    let status = session.initialized().await.expect("initialized");
    assert!((200..300).contains(&status), "initialized");
    let (status, body) = session
        .call_tool(1, tool, &json!({}))
        .await
        .expect("tools/call");
    assert_eq!(status, 200, "tools/call");
    assert!(body.contains("\"result\""), "{body}");
    session.id
}

async fn scrape(http: &reqwest::Client, base: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = http.get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("GET /metrics")
}

async fn metrics(http: &reqwest::Client, base: &str) -> Parsed {
    let r = scrape(http, base, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.expect("metrics body");
    parse(&text).unwrap_or_else(|e| panic!("not the text format: {e}\n{text}"))
}

/// Every family the README lists, with its type.
const FAMILIES: [(&str, &str); 31] = [
    ("quire_tool_calls_total", "counter"),
    ("quire_tool_call_duration_seconds", "histogram"),
    ("quire_admin_requests_total", "counter"),
    ("quire_notion_requests_total", "counter"),
    ("quire_rate_limiter_waiting_calls", "gauge"),
    ("quire_rate_limiter_wait_seconds", "histogram"),
    ("quire_tenant_supervisors_started_total", "counter"),
    ("quire_tenant_supervisors_passivated_total", "counter"),
    ("quire_tenant_supervisors_retired_total", "counter"),
    ("quire_raft_term", "gauge"),
    ("quire_raft_leader_id", "gauge"),
    ("quire_raft_is_leader", "gauge"),
    ("quire_raft_last_log_index", "gauge"),
    ("quire_raft_committed_index", "gauge"),
    ("quire_raft_applied_index", "gauge"),
    ("quire_raft_apply_lag", "gauge"),
    ("quire_raft_snapshot_index", "gauge"),
    ("quire_raft_snapshot_bytes", "gauge"),
    ("quire_raft_snapshots_built_total", "counter"),
    ("quire_raft_follower_matched_index", "gauge"),
    ("quire_raft_follower_lag_entries", "gauge"),
    ("quire_audit_events_total", "counter"),
    ("quire_audit_batch_size", "histogram"),
    ("quire_audit_commit_seconds", "histogram"),
    ("quire_mcp_sessions_open", "gauge"),
    ("quire_tool_calls_in_flight", "gauge"),
    ("quire_shards_owned", "gauge"),
    ("quire_node_draining", "gauge"),
    ("quire_placement_nodes_draining", "gauge"),
    ("quire_placement_epoch_max", "gauge"),
    ("quire_placement_moves_total", "counter"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_after_a_tool_call_and_its_json_log_line_names_who_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path(), &[("QUIRE_LOG_FORMAT", "json")]);
    let ready = wait_ready(&mut node, &reqwest::Client::new(), None).await;
    let (base, admin, token) = (ready.base, ready.admin_token, ready.token);
    let http = reqwest::Client::new();

    let before = metrics(&http, &base).await;
    for (family, kind) in FAMILIES {
        assert_eq!(
            before.types.get(family).map(String::as_str),
            Some(kind),
            "{family} is declared as a {kind}"
        );
    }
    let calls_before = before
        .value(
            "quire_tool_calls_total",
            &[("tool", "notion-get-self"), ("outcome", "ok")],
        )
        .unwrap_or(0.0);

    let session = call_tool(&http, &base, &token, "notion-get-self").await;
    // An admin request, counted by outcome.
    let r = http
        .get(format!("{base}/admin/v1/tenants"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let after = metrics(&http, &base).await;
    assert_eq!(
        after.value(
            "quire_tool_calls_total",
            &[("tool", "notion-get-self"), ("outcome", "ok")]
        ),
        Some(calls_before + 1.0)
    );
    assert_eq!(
        after.value(
            "quire_tool_call_duration_seconds_count",
            &[("tool", "notion-get-self")]
        ),
        Some(calls_before + 1.0)
    );
    assert_eq!(
        after.value(
            "quire_tool_call_duration_seconds_bucket",
            &[("tool", "notion-get-self"), ("le", "+Inf")]
        ),
        Some(calls_before + 1.0)
    );
    let notion_ok: f64 = after
        .samples
        .iter()
        .filter(|s| {
            s.name == "quire_notion_requests_total"
                && s.labels.get("status").map(String::as_str) == Some("200")
        })
        .map(|s| s.value)
        .sum();
    assert!(notion_ok >= 1.0, "a Notion request was counted");
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.name == "quire_rate_limiter_wait_seconds_count" && s.value >= 1.0),
        "the permit wait was observed"
    );
    assert!(after.value("quire_admin_requests_total", &[("outcome", "ok")]) >= Some(1.0));
    assert!(
        after.value("quire_tenant_supervisors_started_total", &[]) >= Some(1.0),
        "the tool call's tenant supervisor was counted"
    );
    assert_eq!(
        after.value("quire_tenant_supervisors_passivated_total", &[]),
        Some(0.0),
        "nothing idles for limits.idle_tenant_ms within this test"
    );
    assert_eq!(after.value("quire_raft_is_leader", &[]), Some(1.0));
    assert_eq!(after.value("quire_raft_leader_id", &[]), Some(1.0));
    let committed = after.value("quire_raft_committed_index", &[]).unwrap();
    let applied = after.value("quire_raft_applied_index", &[]).unwrap();
    assert!(committed >= 1.0 && applied >= 1.0, "{committed} {applied}");
    assert!(
        after
            .value("quire_audit_events_total", &[("outcome", "committed")])
            .unwrap()
            >= 1.0
    );
    assert!(after.value("quire_audit_batch_size_count", &[]).unwrap() >= 1.0);
    assert!(after.value("quire_mcp_sessions_open", &[]).unwrap() >= 1.0);
    // No secret in a label or a value.
    let text = scrape(&http, &base, None).await.text().await.unwrap();
    assert!(!text.contains(&token) && !text.contains(&admin));

    // The tool call's log line, as JSON, carries who and where.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = node
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "tool call" && l["tool"] == "notion-get-self");
        if let Some(line) = found {
            break line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no JSON line for the tool call:\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(line["node"], 1, "{line}");
    assert_eq!(line["session"], format!("session:{session}"), "{line}");
    assert_eq!(line["outcome"], "ok", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    for key in ["tenant", "workspace", "principal"] {
        assert!(
            line[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} in {line}"
        );
    }
    assert!(
        line["spans"]
            .as_array()
            .unwrap()
            .contains(&json!("tool_call"))
    );
    // Every line of the node's log is JSON.
    for l in node.stderr().lines() {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "not JSON: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path(), &[("QUIRE_METRICS_REQUIRE_TOKEN", "true")]);
    let ready = wait_ready(&mut node, &reqwest::Client::new(), None).await;
    let (base, admin, token) = (ready.base, ready.admin_token, ready.token);
    let http = reqwest::Client::new();
    assert_eq!(scrape(&http, &base, None).await.status(), 401);
    assert_eq!(scrape(&http, &base, Some(&token)).await.status(), 401);
    let r = scrape(&http, &base, Some(&admin)).await;
    assert_eq!(r.status(), 200);
    parse(&r.text().await.unwrap()).unwrap();
}
