//! End-to-end tests of the real `quire` binary: `serve --sandbox` on loopback, driven over
//! HTTP and by the official MCP Python SDK.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Node {
    child: Child,
    data_dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_owned()
}

fn start_node(data_dir: &Path) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("QUIRE_LOG", "warn")
        .env_remove("QUIRE_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start quire");
    Node {
        child,
        data_dir: data_dir.to_owned(),
    }
}

/// Waits until the node wrote client.json and answers /readyz with 200.
async fn wait_ready(node: &mut Node, previous_url: Option<&str>) -> Value {
    let path = node.data_dir.join("client.json");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not become ready within 60 s"
        );
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("quire exited early with {status}");
        }
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(client) = serde_json::from_str::<Value>(&text)
        {
            let url = client["mcp_url"].as_str().unwrap_or_default().to_owned();
            if previous_url != Some(url.as_str()) {
                let base = url.trim_end_matches("/mcp");
                if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                    && r.status() == 200
                {
                    return client;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("QUIRE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the MCP SDK: run `bash scripts/test.sh` (it creates .venv with `mcp`), or set QUIRE_TEST_PYTHON"
    );
    venv
}

async fn initialize(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    version: &str,
) -> reqwest::Response {
    let mut request = http
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .json(&serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
        }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST /mcp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_sdk_drives_every_tool_and_a_burst_stays_under_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path());
    wait_ready(&mut node, None).await;
    let output = Command::new(python())
        .arg(workspace_root().join("node/tests/python/mcp_e2e.py"))
        .arg(dir.path().join("client.json"))
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python MCP client failed:\n{stderr}\n{stdout}"
    );
    let report: Value =
        serde_json::from_str(stdout.trim()).expect("the client prints one JSON object");
    println!("python MCP client report: {report}");
    assert_eq!(report["sandbox_429s"], 0);
    assert_eq!(report["burst_calls"], 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_versions_tokens_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path());
    let client = wait_ready(&mut node, None).await;
    let url = client["mcp_url"].as_str().unwrap().to_owned();
    let token = client["token"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();

    // No token: 401 with a Bearer challenge; nothing about the tools leaks.
    let r = initialize(&http, &url, None, "2025-06-18").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    for version in ["2025-06-18", "2025-11-25"] {
        let r = initialize(&http, &url, Some(&token), version).await;
        assert_eq!(r.status(), 200, "initialize with {version}");
        assert!(
            r.headers().contains_key("mcp-session-id"),
            "{version} opens a session"
        );
        let body = r.text().await.unwrap();
        assert!(
            body.contains(&format!("\"protocolVersion\":\"{version}\"")),
            "{version}: {body}"
        );
    }

    // Restart on the same data dir: the token and the demo tenant survive.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status();
    let status = node.child.wait().expect("wait for quire");
    assert!(status.success(), "quire stopped with {status} on SIGTERM");
    let mut node = start_node(dir.path());
    let again = wait_ready(&mut node, Some(&url)).await;
    assert_eq!(
        again["token"], client["token"],
        "the token of the first start still works"
    );
    let url = again["mcp_url"].as_str().unwrap();
    let r = initialize(&http, url, Some(&token), "2025-11-25").await;
    assert_eq!(r.status(), 200);
    drop(node);

    // The same data dir under another cluster name, or with another master key: refused.
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("QUIRE_CLUSTER_NAME", "another-cluster")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another-cluster"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("QUIRE_MASTER_KEY", "11".repeat(32))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong master key"), "{err}");
}

#[test]
fn bad_config_and_missing_key_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quire.toml");
    std::fs::write(&config, "[node]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("QUIRE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no master key"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("QUIRE_MASTER_KEY", "not a key")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("QUIRE_MASTER_KEY"), "{err}");
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["serve", "--sandbox", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains(&addr),
        "{err}"
    );
}
