//! The HTTP front over TLS, on the real `quire` binary: `/healthz`, `/readyz` and `/mcp` over
//! HTTPS with a client that trusts only the test CA, TLS 1.2 refused by default, the
//! certificate replaced on disk and reloaded on SIGHUP without a restart (a bad file keeps
//! the old one), plain HTTP off loopback refused at start, the official MCP Python SDK over
//! HTTPS, and the data dir's format version (recorded, migrated once, a newer one refused).

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cluster_common::process::{Node, SandboxCommand, python, wait_ready};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

fn quire(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(args)
        .output()
        .expect("run quire");
    assert!(
        out.status.success(),
        "quire {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `quire certs http` for 127.0.0.1 into `out`, signed by the CA in `ca`.
fn issue(ca: &Path, out: &Path) {
    quire(&[
        "certs",
        "http",
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
        "--ca",
        ca.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
}

fn leaf_of(pem_file: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(pem_file).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate")
        .unwrap()
}

/// Replaces a file atomically (as a rotation tool would).
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// A TLS handshake with the node: the leaf certificate it served, or the error.
async fn handshake(
    addr: &str,
    ca_pem: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (_, connection) = tls.get_ref();
    Ok(connection
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("the server sent a certificate")
        .clone()
        .into_owned())
}

/// A client that trusts only the test CA.
fn https_client(ca_pem: &Path) -> reqwest::Client {
    let certs = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca_pem).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ca_pem: PathBuf,
    tls: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let ca = root.join("ca");
    quire(&["certs", "init", "--out", ca.to_str().unwrap()]);
    let tls = root.join("tls");
    issue(&ca, &tls);
    Setup {
        ca_pem: ca.join("ca.pem"),
        _dir: dir,
        root,
        tls,
    }
}

/// A sandbox node on `data_dir` serving HTTPS with the setup's certificate, its stderr the
/// test's own; `min_version` is `QUIRE_TLS_MIN_VERSION` (unset with `None`).
fn start_tls_node(s: &Setup, data_dir: &Path, min_version: Option<&str>) -> Node {
    let mut node = SandboxCommand::new(data_dir, None, "warn");
    node.command
        .env("QUIRE_TLS_CERT_FILE", s.tls.join("http.pem"))
        .env("QUIRE_TLS_KEY_FILE", s.tls.join("http.key"))
        .env_remove("QUIRE_ALLOW_PLAIN_HTTP");
    match min_version {
        Some(v) => node.command.env("QUIRE_TLS_MIN_VERSION", v),
        None => node.command.env_remove("QUIRE_TLS_MIN_VERSION"),
    };
    node.spawn()
}

fn hup(node: &Node) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(node.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Handshakes until the node serves `want` (or the deadline passes).
async fn wait_for_leaf(addr: &str, ca_pem: &Path, want: &CertificateDer<'static>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = handshake(addr, ca_pem, &[&rustls::version::TLS13]).await;
        if got.as_ref() == Ok(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not serve the new certificate within 15 s: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_front_serves_mcp_refuses_tls12_and_rotates_its_certificate_on_sighup() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let s = setup();
    let data_dir = s.root.join("data");
    let mut node = start_tls_node(&s, &data_dir, None);
    let http = https_client(&s.ca_pem);
    let client = wait_ready(&mut node, &http, None).await.client;
    let url = client["mcp_url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let base = url.trim_end_matches("/mcp").to_owned();
    let addr = base.trim_start_matches("https://").to_owned();

    // /healthz and /mcp over HTTPS.
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
    let r = http
        .post(&url)
        .bearer_auth(client["token"].as_str().unwrap())
        .header("Accept", "application/json, text/event-stream")
        .json(&serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "https-test", "version": "0"}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("mcp-session-id"));
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("\"protocolVersion\":\"2025-11-25\"")
    );

    // A client that does not trust the CA is refused; so is plain HTTP.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(
                quire_transport::tls::generate_ca("other")
                    .unwrap()
                    .cert_pem
                    .as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status() != 200),
        "plain HTTP answered on the TLS port"
    );

    // TLS 1.3 is served; TLS 1.2 is refused by default.
    let first = handshake(&addr, &s.ca_pem, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(first, leaf_of(&s.tls.join("http.pem")));
    let err = handshake(&addr, &s.ca_pem, &[&rustls::version::TLS12])
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("version") || err.contains("alert"),
        "{err}"
    );

    // Rotate: new files in place, SIGHUP, the new certificate is served by the same process.
    let rotated = s.root.join("tls-2");
    issue(&s.root.join("ca"), &rotated);
    let second = leaf_of(&rotated.join("http.pem"));
    assert_ne!(first, second);
    replace(&rotated.join("http.key"), &s.tls.join("http.key"));
    replace(&rotated.join("http.pem"), &s.tls.join("http.pem"));
    hup(&node);
    wait_for_leaf(&addr, &s.ca_pem, &second).await;
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A broken certificate file: logged, the node keeps serving the last good certificate.
    std::fs::write(s.tls.join("http.pem"), "not a certificate").unwrap();
    hup(&node);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        handshake(&addr, &s.ca_pem, &[&rustls::version::TLS13]).await,
        Ok(second.clone())
    );
    assert!(node.child.try_wait().unwrap().is_none(), "the node exited");

    // A change on disk alone (no signal) is picked up by the poll.
    let third_dir = s.root.join("tls-3");
    issue(&s.root.join("ca"), &third_dir);
    let third = leaf_of(&third_dir.join("http.pem"));
    replace(&third_dir.join("http.key"), &s.tls.join("http.key"));
    replace(&third_dir.join("http.pem"), &s.tls.join("http.pem"));
    wait_for_leaf(&addr, &s.ca_pem, &third).await;

    // `quire ctl` over HTTPS with --ca-file (a wrong token is refused by the server, so the
    // TLS connection itself worked); without it, the private CA is not trusted.
    let ctl = |ca: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
        cmd.args([
            "ctl", "--url", &base, "--token", "qa_wrong", "cluster", "status",
        ]);
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.env_remove("QUIRE_CA_FILE").output().unwrap()
    };
    let out = ctl(Some(&s.ca_pem));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("HTTP 401"), "{err}");
    let out = ctl(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--ca-file"), "{err}");
    let admin_token = client["admin_token"]
        .as_str()
        .expect("client.json has an admin token");
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["ctl", "--url", &base, "--json", "cluster", "status"])
        .arg("--ca-file")
        .arg(&s.ca_pem)
        .env("QUIRE_ADMIN_TOKEN", admin_token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["node_id"], 1, "{status}");

    // SIGTERM still stops the node gracefully.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(node.child.id().to_string())
        .status();
    let status = node.child.wait().unwrap();
    assert!(status.success(), "quire stopped with {status} on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_served_only_when_allowed() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let s = setup();
    let data_dir = s.root.join("data");
    let mut node = start_tls_node(&s, &data_dir, Some("1.2"));
    let client = wait_ready(&mut node, &https_client(&s.ca_pem), None)
        .await
        .client;
    let addr = client["mcp_url"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .trim_end_matches("/mcp")
        .to_owned();
    let leaf = leaf_of(&s.tls.join("http.pem"));
    assert_eq!(
        handshake(&addr, &s.ca_pem, &[&rustls::version::TLS12]).await,
        Ok(leaf.clone())
    );
    assert_eq!(
        handshake(&addr, &s.ca_pem, &[&rustls::version::TLS13]).await,
        Ok(leaf)
    );
}

#[test]
fn plain_http_off_loopback_and_bad_tls_files_refuse_to_start() {
    let s = setup();
    let serve = |listen: &str, env: &[(&str, &Path)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quire"));
        cmd.args(["serve", "--sandbox", "--listen", listen, "--data-dir"])
            .arg(s.root.join("data"))
            .env_remove("QUIRE_TLS_CERT_FILE")
            .env_remove("QUIRE_TLS_KEY_FILE")
            .env_remove("QUIRE_ALLOW_PLAIN_HTTP");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            !out.status.success(),
            "quire serve --listen {listen} started"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Not loopback, no TLS, no allow_plain_http: refused before binding anything.
    let err = serve("0.0.0.0:0", &[]);
    for needle in [
        "0.0.0.0:0",
        "node.tls_cert_file",
        "node.tls_key_file",
        "node.allow_plain_http",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // A certificate without its key, and a key that does not load.
    let err = serve(
        "127.0.0.1:0",
        &[("QUIRE_TLS_CERT_FILE", &s.tls.join("http.pem"))],
    );
    assert!(err.contains("node.tls_key_file"), "{err}");
    let bad = s.root.join("bad.key");
    std::fs::write(&bad, "not a key").unwrap();
    let err = serve(
        "127.0.0.1:0",
        &[
            ("QUIRE_TLS_CERT_FILE", &s.tls.join("http.pem")),
            ("QUIRE_TLS_KEY_FILE", &bad),
        ],
    );
    assert!(
        err.contains("node.tls_key_file") && err.contains("bad.key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_without_a_format_is_migrated_once_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = |log: &Path| {
        let mut node = SandboxCommand::new(&data, Some(log), "info");
        node.command
            .env_remove("QUIRE_TLS_CERT_FILE")
            .env_remove("QUIRE_TLS_KEY_FILE");
        node.spawn()
    };
    let stop = |mut node: Node| {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(node.child.id().to_string())
            .status();
        assert!(node.child.wait().unwrap().success());
    };
    let http = reqwest::Client::new();
    let format = data.join("FORMAT");

    // A new data dir records the current format.
    let first_log = dir.path().join("first.log");
    let mut node = start(&first_log);
    wait_ready(&mut node, &http, None).await;
    stop(node);
    assert_eq!(
        std::fs::read_to_string(&format).unwrap(),
        "quire-data-dir 1\n"
    );
    let log = std::fs::read_to_string(&first_log).unwrap();
    assert!(
        log.contains("new data directory: format version 1"),
        "{log}"
    );

    // A data dir from before the file existed: migrated (logged) at the next start, once.
    std::fs::remove_file(&format).unwrap();
    std::fs::remove_file(data.join("client.json")).unwrap();
    let second_log = dir.path().join("second.log");
    let mut node = start(&second_log);
    wait_ready(&mut node, &http, None).await;
    stop(node);
    assert_eq!(
        std::fs::read_to_string(&format).unwrap(),
        "quire-data-dir 1\n"
    );
    let log = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        log.contains("migrated the data directory from format version 1 (no FORMAT file) to 1"),
        "{log}"
    );
    let third_log = dir.path().join("third.log");
    std::fs::remove_file(data.join("client.json")).unwrap();
    let mut node = start(&third_log);
    wait_ready(&mut node, &http, None).await;
    stop(node);
    let log = std::fs::read_to_string(&third_log).unwrap();
    assert!(!log.contains("migrat"), "{log}");

    // A newer format: refused, naming both versions, and left as it was.
    std::fs::write(&format, "quire-data-dir 99\n").unwrap();
    let before: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args([
            "serve",
            "--sandbox",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("QUIRE_TLS_CERT_FILE")
        .env_remove("QUIRE_TLS_KEY_FILE")
        .env_remove("QUIRE_MASTER_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("format version 99") && err.contains("version 1 that this quire"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&format).unwrap(),
        "quire-data-dir 99\n"
    );
    let after: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_mcp_sdk_works_over_https_trusting_the_ca() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let s = setup();
    let data_dir = s.root.join("data");
    let mut node = start_tls_node(&s, &data_dir, None);
    wait_ready(&mut node, &https_client(&s.ca_pem), None).await;
    let output = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_https.py"))
        .arg(data_dir.join("client.json"))
        .arg(&s.ca_pem)
        .env_remove("SSL_CERT_FILE")
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python MCP client failed over HTTPS:\n{stderr}\n{stdout}"
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    println!("python MCP client over HTTPS: {report}");
    assert_eq!(report["untrusted_refused"], true);
    assert!(report["tools"].as_u64().unwrap() >= 15, "{report}");
    assert_eq!(
        report["stateless_protocol_version"], "2026-07-28",
        "{report}"
    );
}
