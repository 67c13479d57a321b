//! MCP sessions across a cluster of three real `quire` processes, driven by the official MCP
//! Python SDK (`node/tests/python/mcp_sessions.py`): a session opened on node 1 continues
//! through nodes 2 and 3, is refused (404) to another principal's token on every node,
//! survives a `kill -9` and restart of node 1, and once closed is served by no node.

mod cluster_common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cluster_common::mcp::send_initialize;
use cluster_common::process::{Node, SandboxCommand, python, wait_ready, workspace_root};
use cluster_common::start;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_session_continues_on_every_node_for_its_principal_only_and_survives_a_restart() {
    let mut c = start(3, false).await;
    c.wait_leader(1, None, Duration::from_secs(20))
        .await
        .unwrap();
    let token = c.cluster.status.mcp_token.clone();
    // Another principal of the same tenant and workspace, with a valid MCP token.
    c.admin_ok(
        2,
        Method::POST,
        "/tenants/demo/principals",
        Some(json!({"id": "other", "display_name": "Other"})),
    )
    .await;
    c.admin_ok(
        2,
        Method::POST,
        "/tenants/demo/principals/other/workspaces",
        Some(json!({"workspace": "demo"})),
    )
    .await;
    let issued = c
        .admin_ok(
            2,
            Method::POST,
            "/tenants/demo/tokens",
            Some(json!({"principal": "other", "workspace": "demo"})),
        )
        .await;
    let other_token = issued["token"].as_str().unwrap().to_owned();
    // The other token opens sessions of its own: only the binding refuses it below.
    let (status, body) = cluster_common::mcp_initialize(&c.url(3), &other_token)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    let nodes: Vec<String> = [1, 2, 3].iter().map(|&id| c.url(id)).collect();
    let mut child = tokio::process::Command::new(python())
        .arg(workspace_root().join("node/tests/python/mcp_sessions.py"))
        .arg("--nodes")
        .arg(nodes.join(","))
        .arg("--token")
        .arg(&token)
        .arg("--other-token")
        .arg(&other_token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the Python MCP client");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut phases = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("the Python client finishes within its deadline")
            .expect("read the client's output");
        let Some(line) = line else { break };
        let report: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the client prints JSON lines ({e}): {line}"));
        println!("python: {report}");
        let phase = report["phase"].as_str().unwrap_or_default().to_owned();
        if phase == "restart" {
            let started = tokio::time::Instant::now();
            c.cluster.kill9(1).unwrap();
            c.cluster.start_node(1).unwrap();
            c.cluster
                .wait_ready(1, Duration::from_secs(60))
                .await
                .unwrap();
            println!("node 1 restarted in {} ms", started.elapsed().as_millis());
            stdin.write_all(b"go\n").await.unwrap();
            stdin.flush().await.unwrap();
        }
        phases.push((phase, report));
    }
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python MCP client failed: {phases:?}\n{stderr}"
    );
    let names: Vec<&str> = phases.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "initialized",
            "continued",
            "bound",
            "restart",
            "restarted",
            "closed"
        ]
    );
    let (_, continued) = &phases[1];
    assert_eq!(continued["nodes"], json!([2, 3]));
    let (_, bound) = &phases[2];
    assert_eq!(bound["refused"], json!({"1": 404, "2": 404, "3": 404}));
    let (_, closed) = &phases[5];
    assert_eq!(closed["gone"], json!({"1": 404, "2": 404, "3": 404}));

    // Each refusal is in the tenant's audit trail, naming the other principal and only the
    // start of the session id.
    let session_id = phases[0].1["session_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = c
            .admin_ok(
                3,
                Method::GET,
                "/audit/records?tenant=demo&kind=session&outcome=denied&limit=1000",
                None,
            )
            .await;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        let text = page.to_string();
        assert!(
            !text.contains(&session_id),
            "the audit trail holds a whole session id: {text}"
        );
        if records.len() >= 3 {
            assert!(text.contains("demo/other"), "{text}");
            assert!(
                text.contains(&format!("mcp_session:{}", &session_id[..8])),
                "{text}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "three refusals were not audited: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a sandbox node with the configuration `toml` (its stderr the test's own); returns
/// it, its base URL and the demo token.
async fn sandbox_with(dir: &Path, toml: &str) -> (Node, String, String) {
    let config = dir.join("quire.toml");
    std::fs::write(&config, toml).expect("write the config");
    let mut command = SandboxCommand::new(&dir.join("data"), None, "warn");
    command.command.arg("--config").arg(&config);
    let mut node = command.spawn();
    let ready = wait_ready(&mut node, &cluster_common::client(), None).await;
    let token = ready.client["token"].as_str().expect("a token").to_owned();
    (node, ready.base, token)
}

/// An `initialize` on `base`: its status, its session id, and its body.
async fn initialize(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> (u16, Option<String>, String) {
    let r = send_initialize(
        http,
        base,
        token,
        "limit-test",
        Some(Duration::from_secs(10)),
    )
    .await
    .expect("POST /mcp");
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, id, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_table_refuses_initialize_until_a_session_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, base, token) = sandbox_with(
        dir.path(),
        "[mcp]\nmax_sessions_per_tenant = 2\nmax_sessions = 3\n",
    )
    .await;
    let http = cluster_common::client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, id, body) = initialize(&http, &base, &token).await;
        assert_eq!(status, 200, "{body}");
        ids.push(id.expect("a session id"));
    }
    // The tenant holds two sessions, its limit: the next initialize is refused, names the
    // setting, and hands out no session.
    let (status, id, body) = initialize(&http, &base, &token).await;
    assert_eq!(status, 503, "{body}");
    assert!(id.is_none(), "a refused initialize opens no session");
    assert!(
        body.contains("mcp.max_sessions_per_tenant"),
        "the refusal names the setting: {body}"
    );
    // A full table stays full until sessions close or expire: no Retry-After.
    let r = http
        .post(format!("{base}/mcp"))
        .bearer_auth(&token)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "limit-test", "version": "0"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(!r.headers().contains_key("retry-after"));
    // Closing a session makes room.
    let r = http
        .delete(format!("{base}/mcp"))
        .bearer_auth(&token)
        .header("mcp-session-id", &ids[0])
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "DELETE: {}", r.status());
    let (status, id, body) = initialize(&http, &base, &token).await;
    assert_eq!(status, 200, "{body}");
    assert!(id.is_some());
}

/// A JSON-RPC message to `base`'s MCP endpoint in session `id`; the status.
async fn in_session(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    message: Value,
) -> u16 {
    http.post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .header("mcp-session-id", id)
        .header("mcp-protocol-version", "2025-06-18")
        .timeout(Duration::from_secs(10))
        .json(&message)
        .send()
        .await
        .expect("POST /mcp")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_use_is_refreshed_and_an_idle_one_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    // Unrefreshed, an entry lives 1.25 x 4 s = 5 s.
    let (_node, base, token) =
        sandbox_with(dir.path(), "[mcp]\nsession_idle_timeout_secs = 4\n").await;
    let http = cluster_common::client();
    let (status, id, body) = initialize(&http, &base, &token).await;
    assert_eq!(status, 200, "{body}");
    let id = id.expect("a session id");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(
        in_session(&http, &base, &token, &id, initialized).await,
        202
    );
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    // In use every 1.5 s for 9 s: the requests refresh it, so it outlives 5 s.
    let started = tokio::time::Instant::now();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let status = in_session(&http, &base, &token, &id, list.clone()).await;
        assert_eq!(
            status,
            200,
            "the session in use was lost after {} ms",
            started.elapsed().as_millis()
        );
    }
    // Idle for longer than 1.25 x the timeout: forgotten by the table (the node's memory
    // closed it after 4 s; a restore would have found the entry had it still been there).
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    assert_eq!(in_session(&http, &base, &token, &id, list).await, 404);
}
