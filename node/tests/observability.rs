//! Metrics and structured logs of the real `quire` binary (`serve --sandbox` on loopback,
//! JSON logs): after a tool call, `/metrics` parses as the Prometheus text format, has every
//! family the README lists, and its counters moved; the call's JSON log line names the node,
//! tenant, workspace, principal and MCP session.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quire_node::metrics::{Parsed, parse};
use serde_json::{Value, json};

struct Node {
    child: Child,
    data_dir: PathBuf,
    stderr_path: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

fn start_node(dir: &Path, extra_env: &[(&str, &str)]) -> Node {
    let data_dir = dir.join("data");
    let stderr_path = dir.join("node.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_quire"));
    command
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("QUIRE_LOG", "info")
        .env_remove("QUIRE_MASTER_KEY")
        .env_remove("QUIRE_LOG_FORMAT")
        .env_remove("QUIRE_METRICS_REQUIRE_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let child = command.spawn().expect("start quire");
    Node {
        child,
        data_dir,
        stderr_path,
    }
}

/// Base URL, admin token and MCP token once the node is ready.
async fn wait_ready(node: &mut Node) -> (String, String, String) {
    let path = node.data_dir.join("client.json");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not become ready within 60 s:\n{}",
            node.stderr()
        );
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("quire exited early with {status}:\n{}", node.stderr());
        }
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(client) = serde_json::from_str::<Value>(&text)
            && let Some(admin) = client["admin_token"].as_str()
        {
            let url = client["mcp_url"].as_str().unwrap_or_default();
            let base = url.trim_end_matches("/mcp").to_owned();
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                let token = client["token"].as_str().unwrap_or_default().to_owned();
                return (base, admin.to_owned(), token);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens an MCP session and calls `tool`; returns the session id.
async fn call_tool(http: &reqwest::Client, base: &str, token: &str, tool: &str) -> String {
    let url = format!("{base}/mcp");
    let r = http
        .post(&url)
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "observability-test", "version": "0"}}
        }))
        .send()
        .await
        .expect("initialize");
    assert_eq!(r.status(), 200, "initialize");
    let session = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("mcp-session-id")
        .to_owned();
    let post = |message: Value| {
        http.post(&url)
            .bearer_auth(token)
            .header("Accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .json(&message)
            .send()
    };
    let r = post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .expect("initialized");
    assert!(r.status().is_success(), "initialized");
    let r = post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": tool, "arguments": {}}}))
    .await
    .expect("tools/call");
    assert_eq!(r.status(), 200, "tools/call");
    let body = r.text().await.expect("tools/call body");
    assert!(body.contains("\"result\""), "{body}");
    session
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
const FAMILIES: [(&str, &str); 18] = [
    ("quire_tool_calls_total", "counter"),
    ("quire_tool_call_duration_seconds", "histogram"),
    ("quire_admin_requests_total", "counter"),
    ("quire_notion_requests_total", "counter"),
    ("quire_rate_limiter_waiting_calls", "gauge"),
    ("quire_rate_limiter_wait_seconds", "histogram"),
    ("quire_raft_term", "gauge"),
    ("quire_raft_leader_id", "gauge"),
    ("quire_raft_is_leader", "gauge"),
    ("quire_raft_last_log_index", "gauge"),
    ("quire_raft_committed_index", "gauge"),
    ("quire_raft_applied_index", "gauge"),
    ("quire_raft_apply_lag", "gauge"),
    ("quire_raft_snapshot_index", "gauge"),
    ("quire_audit_events_total", "counter"),
    ("quire_audit_batch_size", "histogram"),
    ("quire_audit_commit_seconds", "histogram"),
    ("quire_mcp_sessions_open", "gauge"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_after_a_tool_call_and_its_json_log_line_names_who_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path(), &[("QUIRE_LOG_FORMAT", "json")]);
    let (base, admin, token) = wait_ready(&mut node).await;
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
    let (base, admin, token) = wait_ready(&mut node).await;
    let http = reqwest::Client::new();
    assert_eq!(scrape(&http, &base, None).await.status(), 401);
    assert_eq!(scrape(&http, &base, Some(&token)).await.status(), 401);
    let r = scrape(&http, &base, Some(&admin)).await;
    assert_eq!(r.status(), 200);
    parse(&r.text().await.unwrap()).unwrap();
}
