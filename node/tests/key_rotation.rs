//! Master-key rotation against the real `quire` binary: a sandbox node serves tool calls with
//! its integration's Notion token sealed under key A; restarted with a new key B as its master
//! key and A in `previous_master_key_files`, it still serves them (A opens the token);
//! `quire ctl keys rotate` reseals everything under B (progress on stderr) and `keys status`
//! shows A sealing nothing; restarted with B alone it still serves tool calls; started with A
//! alone it refuses, naming B. Started with B alone before the rotation, it refuses too,
//! naming A.

mod cluster_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cluster_common::ctl::{Ctl, CtlOut};
use cluster_common::mcp::{Session, message_of};
use cluster_common::process::{Node, SandboxCommand, wait_ready};
use reqwest::Method;
use serde_json::{Value, json};

/// A sandbox node on `dir/data`, its stderr in `dir/<run>.stderr`, with
/// `QUIRE_MASTER_KEY_FILE` = `key` (none: the sandbox's own `data/master.key`) and `previous`
/// as `QUIRE_PREVIOUS_MASTER_KEY_FILES`.
fn sandbox(dir: &Path, run: &str, key: Option<&Path>, previous: &[&Path]) -> Node {
    std::fs::create_dir_all(dir).expect("create the node dir");
    let stderr_path = dir.join(format!("{run}.stderr"));
    let mut node = SandboxCommand::new(&dir.join("data"), Some(&stderr_path), "warn");
    node.command
        .env_remove("QUIRE_MASTER_KEY_FILE")
        .env_remove("QUIRE_PREVIOUS_MASTER_KEY_FILES");
    if let Some(key) = key {
        node.command.env("QUIRE_MASTER_KEY_FILE", key);
    }
    if !previous.is_empty() {
        let list: Vec<String> = previous.iter().map(|p| p.display().to_string()).collect();
        node.command
            .env("QUIRE_PREVIOUS_MASTER_KEY_FILES", list.join(","));
    }
    node.spawn()
}

/// The node's base URL and client file once it is ready.
async fn ready(node: &mut Node) -> (String, Value) {
    let ready = wait_ready(node, &reqwest::Client::new(), None).await;
    (ready.base, ready.client)
}

/// Waits for a node that must refuse to start to exit; its stderr.
async fn wait_refused(mut node: Node) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            assert!(!status.success(), "quire exited with success");
            return node.stderr();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "quire did not refuse to start within 60 s:\n{}",
            node.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stop(node: Node) {
    drop(node);
}

/// Opens an MCP session with the client file's token and calls `notion-get-self`, which needs
/// the integration's Notion token unsealed; the tool's result.
async fn tool_call(base: &str, client: &Value) -> Value {
    let token = client["token"].as_str().expect("an API token");
    let session = Session::open(
        &reqwest::Client::new(),
        base,
        token,
        "key-rotation-test",
        None,
    )
    .await
    .expect("open an MCP session");
    let (status, body) = session
        .call_tool(1, "notion-get-self", &json!({}))
        .await
        .expect("tools/call");
    assert_eq!(status, 200, "tools/call");
    let msg = message_of(&body).expect("a JSON-RPC answer");
    assert_ne!(
        msg["result"]["isError"],
        json!(true),
        "the tool call failed: {body}"
    );
    msg["result"].clone()
}

fn ctl(base: &str, client: &Value, args: &[&str]) -> CtlOut {
    let token = client["admin_token"].as_str().expect("an admin token");
    let mut ctl = Ctl::new(Some(base), Some(token), 30);
    ctl.command.env("QUIRE_LOG", "warn");
    ctl.run(args)
}

async fn admin_get(base: &str, client: &Value, path: &str) -> Value {
    let token = client["admin_token"].as_str().expect("an admin token");
    let r = reqwest::Client::new()
        .request(Method::GET, format!("{base}/admin/v1{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin API request");
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.expect("admin API body")
}

fn keygen(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .expect("run quire keygen");
    assert!(out.status.success(), "keygen failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reseals_every_secret_online_and_retires_the_old_key() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir = tmp.path().join("node");
    let old_key = dir.join("data").join("master.key");
    let new_key = tmp.path().join("new.key");

    // 1. A sandbox node with its own key (A) serves a tool call.
    let mut node = sandbox(&dir, "first", None, &[]);
    let (base, client) = ready(&mut node).await;
    tool_call(&base, &client).await;
    let status = admin_get(&base, &client, "/keys").await;
    let key_a = status["current_key"].as_str().expect("a key id").to_owned();
    assert_eq!(key_a.len(), 16, "{status}");
    assert_eq!(status["not_current"], 0, "{status}");
    stop(node);

    // 2. Key B made; before any rotation, B alone cannot start: A still seals everything.
    keygen(&new_key);
    let stderr = wait_refused(sandbox(&dir, "b-alone-early", Some(&new_key), &[])).await;
    assert!(
        stderr.contains(&key_a) && stderr.contains("previous_master_key_files"),
        "the refusal names the missing key A ({key_a}):\n{stderr}"
    );

    // 3. B current, A previous: everything still opens.
    let mut node = sandbox(&dir, "ring", Some(&new_key), &[&old_key]);
    let (base, client) = ready(&mut node).await;
    tool_call(&base, &client).await;
    let status = admin_get(&base, &client, "/keys").await;
    let key_b = status["current_key"].as_str().expect("a key id").to_owned();
    assert_ne!(key_b, key_a);
    let sealed_by_a = status["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["key_id"] == key_a.as_str()))
        .and_then(|k| k["secrets"].as_u64())
        .expect("A listed");
    // At least the Notion token and the key check.
    assert!(sealed_by_a >= 2, "{status}");
    assert_eq!(status["safe_to_drop"], json!([]), "{status}");

    // 4. Rotate, online: progress on stderr, then A seals nothing.
    let out = ctl(&base, &client, &["keys", "rotate"]);
    assert!(out.ok, "keys rotate failed: {}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("resealed {sealed_by_a} of {sealed_by_a}")),
        "progress on stderr: {}",
        out.stderr
    );
    assert!(out.stdout.contains(&key_b), "{}", out.stdout);
    tool_call(&base, &client).await;
    let out = ctl(&base, &client, &["keys", "status"]);
    assert!(out.ok, "keys status failed: {}", out.stderr);
    assert!(
        out.stdout.contains("safe to drop") && out.stdout.contains(&key_a),
        "{}",
        out.stdout
    );
    let status = admin_get(&base, &client, "/keys").await;
    assert_eq!(status["not_current"], 0, "{status}");
    assert_eq!(status["safe_to_drop"], json!([key_a.clone()]), "{status}");
    // Rotating again has nothing to do.
    let out = ctl(&base, &client, &["keys", "rotate"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("resealed 0 of 0"), "{}", out.stderr);
    stop(node);

    // 5. B alone: still serves.
    let mut node = sandbox(&dir, "b-alone", Some(&new_key), &[]);
    let (base, client) = ready(&mut node).await;
    tool_call(&base, &client).await;
    let status = admin_get(&base, &client, "/keys").await;
    assert_eq!(status["current_key"], key_b.as_str());
    assert_eq!(status["not_current"], 0, "{status}");
    stop(node);

    // 6. A alone: refused, naming B.
    let stderr = wait_refused(sandbox(&dir, "a-alone", Some(&old_key), &[])).await;
    assert!(
        stderr.contains("wrong master key") && stderr.contains(&key_b),
        "the refusal names the key B ({key_b}) it lacks:\n{stderr}"
    );
}
