//! Backup and restore, and moving a tenant, against the real `quire` binary: a sandbox node
//! with a second tenant (a sealed Notion token, a principal, an API token) and audit records
//! is backed up with `quire ctl backup`; the file holds no Notion token in clear; a copy with
//! one byte changed and a wrong master key are refused by `quire restore`; the backup restored
//! into a fresh data dir serves the same tenants, its API tokens open MCP sessions and every
//! audit chain verifies, also on a second node that joins the restored one. A tenant exported from the first node imports into a fresh node with
//! the same master key with its audit chain's records unchanged (the import audited next), and
//! is refused by a node with another key.

mod cluster_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

const NOTION_TOKEN: &str = "secret_backup_plaintext_4f9a1c2e7b";

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

fn spawn(dir: &Path, args: &[&str], key: Option<&str>) -> Node {
    std::fs::create_dir_all(dir).expect("create the node dir");
    let data_dir = dir.join("data");
    let stderr_path = dir.join("node.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_quire"));
    command
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(&data_dir)
        .env("QUIRE_LOG", "warn")
        .env_remove("QUIRE_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    if let Some(key) = key {
        command.env("QUIRE_MASTER_KEY", key);
    }
    Node {
        child: command.spawn().expect("start quire"),
        data_dir,
        stderr_path,
    }
}

fn sandbox_node(dir: &Path, key: Option<&str>) -> Node {
    spawn(dir, &["--sandbox", "--listen", "127.0.0.1:0"], key)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits for `base`/readyz to answer 200.
async fn wait_readyz(node: &mut Node, base: impl Fn() -> Option<String>) -> String {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stderr = || std::fs::read_to_string(&node.stderr_path).unwrap_or_default();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not become ready within 60 s:\n{}",
            stderr()
        );
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("quire exited early with {status}:\n{}", stderr());
        }
        if let Some(base) = base()
            && let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return base;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sandbox node's base URL and client file once it is ready.
async fn wait_sandbox(node: &mut Node) -> (String, Value) {
    let path = node.data_dir.join("client.json");
    let read = || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .filter(|c| c["admin_token"].is_string())
    };
    let base = wait_readyz(node, || {
        read().map(|c| {
            c["mcp_url"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches("/mcp")
                .to_owned()
        })
    })
    .await;
    (base, read().expect("client.json"))
}

async fn api(base: &str, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new()
        .request(method.clone(), format!("{base}/admin/v1{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin API request");
    let status = response.status();
    let text = response.text().await.expect("admin API body");
    assert!(
        status.is_success(),
        "{method} {path} answered {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn quire(args: &[&str], key: Option<&str>) -> Out {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quire"));
    command
        .args(args)
        .env("QUIRE_LOG", "warn")
        .env_remove("QUIRE_ADMIN_TOKEN")
        .env_remove("QUIRE_URL")
        .env_remove("QUIRE_MASTER_KEY");
    if let Some(key) = key {
        command.env("QUIRE_MASTER_KEY", key);
    }
    let out = command.output().expect("run quire");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ctl(base: &str, token: &str, args: &[&str]) -> Out {
    let mut all = vec![
        "ctl",
        "--url",
        base,
        "--token",
        token,
        "--timeout-secs",
        "30",
    ];
    all.extend_from_slice(args);
    quire(&all, None)
}

/// Tenant `beta`: an integration with a known Notion token, a workspace, a principal with
/// an API token (returned), and the audit records these admin commands leave.
async fn provision_beta(base: &str, root: &str) -> String {
    api(
        base,
        root,
        Method::POST,
        "/tenants",
        Some(json!({"id": "beta", "display_name": "Beta"})),
    )
    .await;
    api(
        base,
        root,
        Method::POST,
        "/tenants/beta/integrations",
        Some(json!({"id": "notion", "display_name": "Notion", "notion_token": NOTION_TOKEN})),
    )
    .await;
    api(
        base,
        root,
        Method::POST,
        "/tenants/beta/workspaces",
        Some(json!({"id": "docs", "display_name": "Docs", "integration": "notion"})),
    )
    .await;
    api(
        base,
        root,
        Method::POST,
        "/tenants/beta/principals",
        Some(json!({"id": "bob", "display_name": "Bob"})),
    )
    .await;
    api(
        base,
        root,
        Method::POST,
        "/tenants/beta/principals/bob/workspaces",
        Some(json!({"workspace": "docs"})),
    )
    .await;
    let issued = api(
        base,
        root,
        Method::POST,
        "/tenants/beta/tokens",
        Some(json!({"principal": "bob", "workspace": "docs"})),
    )
    .await;
    issued["token"].as_str().expect("a token secret").to_owned()
}

async fn tenant_ids(base: &str, token: &str) -> Vec<String> {
    let v = api(base, token, Method::GET, "/tenants", None).await;
    v["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect()
}

async fn assert_mcp_works(base: &str, token: &str) {
    let (status, body) = cluster_common::mcp_initialize(base, token)
        .await
        .expect("MCP initialize");
    assert_eq!(status, 200, "initialize answered {status}: {body}");
    assert!(body.contains("protocolVersion"), "{body}");
}

fn assert_verifies(base: &str, token: &str) {
    let out = ctl(base, token, &["audit", "verify"]);
    assert!(
        out.ok,
        "audit verify failed:\n{}\n{}",
        out.stdout, out.stderr
    );
}

/// The audit records of an export file (its body's `audit.records`).
fn export_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read the export");
    let body = text.split_once('\n').expect("two lines").1;
    let slice: Value = serde_json::from_str(body.trim_end()).expect("the export's body");
    slice["audit"]["records"]
        .as_array()
        .expect("records")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_and_a_tenant_moves_with_its_chain() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut a = sandbox_node(&dir.path().join("a"), None);
    let (base, client) = wait_sandbox(&mut a).await;
    let root = client["admin_token"]
        .as_str()
        .expect("admin token")
        .to_owned();
    let demo_token = client["token"].as_str().expect("MCP token").to_owned();
    let key = std::fs::read_to_string(a.data_dir.join("master.key"))
        .expect("the sandbox's master key")
        .trim()
        .to_owned();
    let beta_token = provision_beta(&base, &root).await;
    assert_mcp_works(&base, &beta_token).await;
    // A tenant named like the import route stays reachable.
    api(
        &base,
        &root,
        Method::POST,
        "/tenants",
        Some(json!({"id": "import", "display_name": "Import"})),
    )
    .await;
    let got = api(&base, &root, Method::GET, "/tenants/import", None).await;
    assert_eq!(got["id"], "import", "{got}");
    let tenants_before = tenant_ids(&base, &root).await;
    assert!(
        tenants_before.contains(&"beta".to_owned()),
        "{tenants_before:?}"
    );

    // Backup.
    let backup = dir.path().join("cluster.backup");
    let backup_s = backup.to_str().expect("utf-8 path");
    let out = ctl(&base, &root, &["backup", "--out", backup_s]);
    assert!(out.ok, "backup failed: {}", out.stderr);
    assert!(out.stdout.contains("log index"), "{}", out.stdout);
    assert!(out.stdout.contains("sha256"), "{}", out.stdout);
    assert!(out.stderr.contains("bytes written"), "{}", out.stderr);
    let bytes = std::fs::read(&backup).expect("the backup file");
    assert!(!bytes.is_empty());
    assert!(
        !String::from_utf8_lossy(&bytes).contains(NOTION_TOKEN),
        "the backup reveals a Notion token"
    );
    assert!(!String::from_utf8_lossy(&bytes).contains(&beta_token));
    let again = ctl(&base, &root, &["backup", "--out", backup_s]);
    assert!(!again.ok, "a backup overwrote a file without --force");
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert!(ctl(&base, &root, &["backup", "--out", backup_s, "--force"]).ok);
    let bytes = std::fs::read(&backup).expect("the backup file");

    // A changed byte, a wrong key and a non-empty data dir are refused.
    let mut damaged = bytes.clone();
    let at = damaged.len() / 2;
    damaged[at] = if damaged[at] == b'a' { b'b' } else { b'a' };
    let damaged_path = dir.path().join("damaged.backup");
    std::fs::write(&damaged_path, &damaged).expect("write the damaged copy");
    let refused_dir = dir.path().join("refused");
    let out = quire(
        &[
            "restore",
            "--from",
            damaged_path.to_str().expect("utf-8"),
            "--data-dir",
            refused_dir.join("data").to_str().expect("utf-8"),
        ],
        Some(&key),
    );
    assert!(!out.ok, "a damaged backup was restored");
    assert!(out.stderr.contains("checksum"), "{}", out.stderr);
    let other_key = "11".repeat(32);
    let out = quire(
        &[
            "restore",
            "--from",
            backup_s,
            "--data-dir",
            refused_dir.join("data").to_str().expect("utf-8"),
        ],
        Some(&other_key),
    );
    assert!(!out.ok, "a backup was restored under another master key");
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    let out = quire(
        &[
            "restore",
            "--from",
            backup_s,
            "--data-dir",
            a.data_dir.to_str().expect("utf-8"),
        ],
        Some(&key),
    );
    assert!(!out.ok, "a restore wrote into a used data dir");
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);

    // Restore into a fresh dir, serve it, and let a second node join it.
    let r_dir = dir.path().join("restored");
    let r_data = r_dir.join("data");
    let peer1 = format!("127.0.0.1:{}", free_port());
    let node1 = ["--node-id", "1", "--peer-listen", &peer1, "--insecure-peer"];
    let mut restore_args = vec![
        "restore",
        "--from",
        backup_s,
        "--data-dir",
        r_data.to_str().expect("utf-8"),
    ];
    restore_args.extend_from_slice(&node1);
    let out = quire(&restore_args, Some(&key));
    assert!(out.ok, "restore failed: {}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("restored cluster"), "{}", out.stdout);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve_args = vec!["--listen", listen.as_str()];
    serve_args.extend_from_slice(&node1);
    let mut r = spawn(&r_dir, &serve_args, Some(&key));
    let r_base = format!("http://{listen}");
    wait_readyz(&mut r, || Some(r_base.clone())).await;
    assert_eq!(tenant_ids(&r_base, &root).await, tenants_before);
    assert_mcp_works(&r_base, &beta_token).await;
    assert_mcp_works(&r_base, &demo_token).await;
    assert_verifies(&r_base, &root);
    let listen2 = format!("127.0.0.1:{}", free_port());
    let peer2 = format!("127.0.0.1:{}", free_port());
    let mut r2 = spawn(
        &dir.path().join("restored-2"),
        &[
            "--listen",
            &listen2,
            "--node-id",
            "2",
            "--peer-listen",
            &peer2,
            "--insecure-peer",
            "--join",
            &peer1,
        ],
        Some(&key),
    );
    let r2_base = format!("http://{listen2}");
    wait_readyz(&mut r2, || Some(r2_base.clone())).await;
    assert_eq!(tenant_ids(&r2_base, &root).await, tenants_before);
    assert_mcp_works(&r2_base, &beta_token).await;
    assert_verifies(&r2_base, &root);
    drop(r2);
    drop(r);

    // Export beta from the first node.
    let export = dir.path().join("beta.export");
    let export_s = export.to_str().expect("utf-8");
    let out = ctl(
        &base,
        &root,
        &["tenants", "export", "beta", "--out", export_s],
    );
    assert!(out.ok, "export failed: {}", out.stderr);
    let exported = export_records(&export);
    assert!(exported.len() >= 5, "{} records", exported.len());

    // A principal without the tenant's admin role may take neither.
    let issued = ctl(
        &base,
        &root,
        &[
            "--json",
            "admin-tokens",
            "issue",
            "--name",
            "bob",
            "--subject",
            "beta/bob",
        ],
    );
    assert!(issued.ok, "{}", issued.stderr);
    let bob: Value = serde_json::from_str(&issued.stdout).expect("JSON");
    let bob = bob["token"].as_str().expect("a secret").to_owned();
    let denied = ctl(&base, &bob, &["tenants", "export", "beta"]);
    assert!(!denied.ok, "a principal without a role exported its tenant");
    assert!(
        denied.stderr.contains("tenant.users.manage"),
        "{}",
        denied.stderr
    );
    let denied_out = dir.path().join("denied.backup");
    let denied = ctl(
        &base,
        &bob,
        &["backup", "--out", denied_out.to_str().expect("utf-8")],
    );
    assert!(!denied.ok, "a principal without a role took a backup");
    assert!(
        denied.stderr.contains("system.configure"),
        "{}",
        denied.stderr
    );
    assert!(!denied_out.exists());

    // A node under another master key refuses it.
    let mut c = sandbox_node(&dir.path().join("c"), None);
    let (c_base, c_client) = wait_sandbox(&mut c).await;
    let c_root = c_client["admin_token"]
        .as_str()
        .expect("admin token")
        .to_owned();
    let out = ctl(&c_base, &c_root, &["tenants", "import", export_s]);
    assert!(!out.ok, "an import under another master key was accepted");
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    drop(c);

    // A fresh node with the same master key imports it with its chain unchanged.
    let mut d = sandbox_node(&dir.path().join("d"), Some(&key));
    let (d_base, d_client) = wait_sandbox(&mut d).await;
    let d_root = d_client["admin_token"]
        .as_str()
        .expect("admin token")
        .to_owned();
    let out = ctl(&d_base, &d_root, &["tenants", "import", export_s]);
    assert!(out.ok, "import failed: {}\n{}", out.stdout, out.stderr);
    assert!(
        tenant_ids(&d_base, &d_root)
            .await
            .contains(&"beta".to_owned())
    );
    let chain = api(
        &d_base,
        &d_root,
        Method::GET,
        "/audit/records?tenant=beta&limit=1000",
        None,
    )
    .await;
    let records = chain["records"].as_array().expect("records").clone();
    assert_eq!(records.len(), exported.len() + 1, "{chain}");
    assert_eq!(&records[..exported.len()], &exported[..]);
    assert_eq!(records[exported.len()]["action"], "import_tenant");
    assert_verifies(&d_base, &d_root);
    assert_mcp_works(&d_base, &beta_token).await;

    // Importing it again is refused.
    let out = ctl(&d_base, &d_root, &["tenants", "import", export_s]);
    assert!(!out.ok, "the same tenant was imported twice");
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
}
