//! Usage reports (`GET /admin/v1/usage`, `quire ctl usage`) against the real `quire` binary
//! (`serve --sandbox`): two principals call tools, the report counts each one's calls,
//! errors and Notion requests, and a workspace manager sees its own workspace and is refused
//! another.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
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

fn start_node(dir: &Path) -> Node {
    let data_dir = dir.join("data");
    let stderr_path = dir.join("node.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("QUIRE_LOG", "warn")
        .env_remove("QUIRE_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start quire");
    Node {
        child,
        data_dir,
        stderr_path,
    }
}

/// Base URL, admin token and the demo user's MCP token once the node is ready.
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

async fn admin(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http
        .request(method, format!("{base}/admin/v1{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("admin request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("admin body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn admin_ok(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, v) = admin(http, base, token, method.clone(), path, body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path} answered {status}: {v}"
    );
    v
}

/// Opens an MCP session and calls each of `calls` (tool, arguments) in it.
async fn call_tools(http: &reqwest::Client, base: &str, token: &str, calls: &[(&str, Value)]) {
    let url = format!("{base}/mcp");
    let r = http
        .post(&url)
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "usage-test", "version": "0"}}
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
    assert!(r.status().is_success());
    for (i, (tool, arguments)) in calls.iter().enumerate() {
        let r = post(
            json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                            "params": {"name": tool, "arguments": arguments}}),
        )
        .await
        .expect("tools/call");
        assert_eq!(r.status(), 200, "tools/call {tool}");
        let body = r.text().await.expect("tools/call body");
        assert!(body.contains("\"result\""), "{body}");
    }
}

fn row<'a>(report: &'a Value, group: &str) -> Option<&'a Value> {
    report["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["group"] == group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_each_principals_calls_and_stays_in_the_managers_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path());
    let (base, root, demo_token) = wait_ready(&mut node).await;
    let http = reqwest::Client::new();

    // bob works in the demo workspace too; mgr manages another workspace, "other".
    admin_ok(
        &http,
        &base,
        &root,
        Method::POST,
        "/tenants/demo/workspaces",
        Some(json!({"id": "other", "display_name": "other", "integration": "sandbox-alpha"})),
    )
    .await;
    for p in ["bob", "mgr"] {
        admin_ok(
            &http,
            &base,
            &root,
            Method::POST,
            "/tenants/demo/principals",
            Some(json!({"id": p, "display_name": p})),
        )
        .await;
    }
    admin_ok(
        &http,
        &base,
        &root,
        Method::POST,
        "/tenants/demo/principals/bob/workspaces",
        Some(json!({"workspace": "demo"})),
    )
    .await;
    let bob = admin_ok(
        &http,
        &base,
        &root,
        Method::POST,
        "/tenants/demo/tokens",
        Some(json!({"principal": "bob", "workspace": "demo"})),
    )
    .await;
    let bob_token = bob["token"].as_str().expect("bob's token").to_owned();
    admin_ok(
        &http,
        &base,
        &root,
        Method::POST,
        "/roles",
        Some(json!({"subject": "demo/mgr", "role": "workspace_manager",
                    "scope": {"level": "workspace", "tenant": "demo", "workspace": "other"}})),
    )
    .await;
    let mgr = admin_ok(
        &http,
        &base,
        &root,
        Method::POST,
        "/admin-tokens",
        Some(json!({"display_name": "mgr", "subject": "demo/mgr"})),
    )
    .await;
    let mgr_token = mgr["token"].as_str().expect("mgr's admin token").to_owned();

    // demo-user: three calls, one of them an error (no such page); bob: two calls.
    call_tools(
        &http,
        &base,
        &demo_token,
        &[
            ("notion-get-self", json!({})),
            ("notion-get-self", json!({})),
            (
                "notion-fetch",
                json!({"id": "00000000000000000000000000000000"}),
            ),
        ],
    )
    .await;
    call_tools(
        &http,
        &base,
        &bob_token,
        &[
            ("notion-get-self", json!({})),
            ("notion-get-self", json!({})),
        ],
    )
    .await;

    // Root (every permission): one row per principal.
    let report = admin_ok(
        &http,
        &base,
        &root,
        Method::GET,
        "/usage?tenant=demo&group_by=principal",
        None,
    )
    .await;
    let user = row(&report, "demo/demo-user").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(user["calls"], 3, "{report}");
    assert_eq!(user["errors"], 1, "{report}");
    assert!(
        user["p50_ms"].is_u64() && user["p99_ms"].is_u64(),
        "{report}"
    );
    let b = row(&report, "demo/bob").unwrap_or_else(|| panic!("{report}"));
    assert_eq!(b["calls"], 2, "{report}");
    assert_eq!(b["errors"], 0, "{report}");
    // Each of bob's calls sent one request to Notion; demo-user's failed fetch sent at least one.
    assert_eq!(b["notion_requests"], 2, "{report}");
    assert!(user["notion_requests"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(report["capped"], false);

    // Filtered to one principal, by workspace.
    let report = admin_ok(
        &http,
        &base,
        &root,
        Method::GET,
        "/usage?tenant=demo&principal=demo%2Fbob&group_by=workspace",
        None,
    )
    .await;
    assert_eq!(report["rows"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(row(&report, "demo/demo").unwrap()["calls"], 2, "{report}");

    // The workspace manager of "other": the demo workspace is refused, with the permission
    // named; its own is allowed (and empty); without a filter it sees none of demo's calls.
    let (status, v) = admin(
        &http,
        &base,
        &mgr_token,
        Method::GET,
        "/usage?tenant=demo&workspace=demo",
        None,
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("workspace.analytics.read"),
        "{v}"
    );
    let own = admin_ok(
        &http,
        &base,
        &mgr_token,
        Method::GET,
        "/usage?tenant=demo&workspace=other&group_by=workspace",
        None,
    )
    .await;
    assert_eq!(own["rows"], json!([]), "{own}");
    let all = admin_ok(
        &http,
        &base,
        &mgr_token,
        Method::GET,
        "/usage?group_by=principal",
        None,
    )
    .await;
    assert_eq!(all["rows"], json!([]), "{all}");
    // A tool-calling principal's admin rights are nil: bob has no admin token at all.

    // quire ctl usage: a table, and --json.
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "ctl",
            "--url",
            &base,
            "--token",
            &root,
            "--timeout-secs",
            "20",
            "usage",
            "--tenant",
            "demo",
            "--group-by",
            "principal",
        ])
        .env_remove("QUIRE_ADMIN_TOKEN")
        .env_remove("QUIRE_URL")
        .output()
        .expect("quire ctl usage");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("demo/demo-user") && text.contains("demo/bob"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "ctl",
            "--url",
            &base,
            "--token",
            &root,
            "--timeout-secs",
            "20",
            "--json",
            "usage",
            "--tenant",
            "demo",
            "--group-by",
            "tenant",
        ])
        .env_remove("QUIRE_ADMIN_TOKEN")
        .env_remove("QUIRE_URL")
        .output()
        .expect("quire ctl usage --json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(row(&report, "demo").unwrap()["calls"], 5, "{report}");
}
