//! A cluster formed from a static member list: three `quire serve` processes with the same
//! `[[peer.members]]`, no `init`, no `--join`. The lowest id makes the bootstrap admin token;
//! a write through any node reaches every node.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_group_from_a_static_member_list() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    let out = Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let http_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members: String = (0..3)
        .map(|i| {
            format!(
                "[[peer.members]]\nid = {}\naddr = \"127.0.0.1:{}\"\n",
                i + 1,
                peer_ports[i]
            )
        })
        .collect();
    let mut children = Vec::new();
    for i in 0..3 {
        let config = dir.path().join(format!("node-{}.toml", i + 1));
        std::fs::write(
            &config,
            format!(
                "[node]\nid = {}\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n[security]\nmaster_key_file = \"{}\"\n[peer]\nlisten = \"127.0.0.1:{}\"\ninsecure = true\n{members}",
                i + 1,
                dir.path().join(format!("data-{}", i + 1)).display(),
                http_ports[i],
                key.display(),
                peer_ports[i],
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join(format!("node-{}.log", i + 1))).unwrap();
        children.push(
            Command::new(env!("CARGO_BIN_EXE_quire"))
                .args(["serve", "--config"])
                .arg(&config)
                .env("QUIRE_LOG", "warn")
                .env_remove("QUIRE_MASTER_KEY")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let _nodes = Nodes(children);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for port in &http_ports {
        let url = format!("http://127.0.0.1:{port}/readyz");
        wait_for("every node ready", async || {
            http.get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await;
    }
    let token_file = dir.path().join("data-1/admin-token");
    let token = wait_for("node 1's bootstrap admin token", async || {
        std::fs::read_to_string(&token_file)
            .ok()
            .map(|t| t.trim().to_owned())
    })
    .await;
    assert!(
        !dir.path().join("data-2/admin-token").exists(),
        "only the lowest id makes a token"
    );

    let r = http
        .post(format!(
            "http://127.0.0.1:{}/admin/v1/tenants",
            http_ports[2]
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({"id": "static", "display_name": "Static"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    // ...and the built-in JWT issuer has a signing key, as after `quire init`.
    let keys: serde_json::Value = http
        .get(format!(
            "http://127.0.0.1:{}/admin/v1/jwt/keys",
            http_ports[1]
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys["keys"].as_array().map(Vec::len),
        Some(1),
        "one signing key: {keys}"
    );
    for port in &http_ports {
        let url = format!("http://127.0.0.1:{port}/admin/v1/tenants/static?consistency=local");
        wait_for("the tenant on every node", async || {
            http.get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        })
        .await;
    }
    let nodes: serde_json::Value = http
        .get(format!("http://127.0.0.1:{}/admin/v1/nodes", http_ports[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let members = nodes["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{nodes}");
    assert_eq!(
        members.iter().filter(|m| m["role"] == "leader").count(),
        1,
        "{nodes}"
    );
}
