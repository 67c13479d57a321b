//! A cluster of real `quire` processes on loopback, for `deploy/local-cluster.sh`, the
//! multi-process tests and the benchmarks: a cluster CA and a certificate per node, a Notion
//! sandbox process, node 1 initialised with `quire init`, the others joining it, and a demo
//! tenant provisioned through the admin API. Its state is written to `<dir>/cluster.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where everything lives (created if missing).
    pub dir: PathBuf,
    /// The `quire` binary.
    pub binary: PathBuf,
    pub nodes: usize,
    /// Mutual TLS between peers (otherwise plaintext, with a warning).
    pub tls: bool,
    /// Let the admin API cut links (`peer.fault_injection`).
    pub fault_injection: bool,
    /// Extra environment for every node (e.g. Raft timings through a config file); `{id}` in
    /// a value is replaced by the node's id (e.g. `QUIRE_NOTION_LOCAL_ADDRESS=127.0.0.{id}`,
    /// so that each node's Notion requests leave from its own loopback address).
    pub env: Vec<(String, String)>,
    /// Extra arguments of `quire sandbox` (e.g. `--rate-limit off`).
    pub sandbox_args: Vec<String>,
}

/// One node as `status` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: u64,
    pub pid: u32,
    /// HTTP base URL (`http://127.0.0.1:port`).
    pub http: String,
    /// Peer address (`127.0.0.1:port`).
    pub peer: String,
    pub data_dir: PathBuf,
}

/// `<dir>/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub nodes: Vec<NodeInfo>,
    pub admin_token: String,
    pub mcp_token: String,
    pub sandbox_url: String,
    pub sandbox_pid: u32,
}

/// A running local cluster. Dropping it kills its processes unless it was `detach`ed.
pub struct LocalCluster {
    pub spec: Spec,
    pub status: Status,
    children: Vec<(u64, Child)>,
    sandbox: Option<Child>,
    detached: bool,
}

/// A free loopback port (bound and released; good enough on one machine).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn run(binary: &Path, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<String> {
    let mut command = Command::new(binary);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "`quire {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl LocalCluster {
    fn node_dir(&self, id: u64) -> PathBuf {
        self.spec.dir.join(format!("node-{id}"))
    }

    fn master_key_file(&self) -> PathBuf {
        self.spec.dir.join("master.key")
    }

    /// Starts everything and waits until every node is ready and the demo tenant exists.
    pub async fn up(spec: Spec) -> anyhow::Result<LocalCluster> {
        if spec.nodes == 0 || spec.nodes > 9 {
            bail!("a local cluster has 1 to 9 nodes, not {}", spec.nodes);
        }
        if spec.dir.join("cluster.json").exists() {
            bail!(
                "{} already holds a cluster; run `down` first or use another directory",
                spec.dir.display()
            );
        }
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("cannot create {}", spec.dir.display()))?;
        let mut cluster = LocalCluster {
            status: Status {
                nodes: Vec::new(),
                admin_token: String::new(),
                mcp_token: String::new(),
                sandbox_url: String::new(),
                sandbox_pid: 0,
            },
            spec,
            children: Vec::new(),
            sandbox: None,
            detached: false,
        };
        let bin = cluster.spec.binary.clone();
        let dir = cluster.spec.dir.clone();
        let key = cluster.master_key_file();
        run(&bin, &["keygen", "--out", &key.to_string_lossy()], &[])?;
        if cluster.spec.tls {
            run(
                &bin,
                &["certs", "init", "--out", &dir.join("ca").to_string_lossy()],
                &[],
            )?;
        }

        // The Notion sandbox.
        let sandbox_port = free_port()?;
        let sandbox_log = std::fs::File::create(dir.join("sandbox.log"))?;
        let sandbox = Command::new(&bin)
            .args(["sandbox", "--listen", &format!("127.0.0.1:{sandbox_port}")])
            .args(&cluster.spec.sandbox_args)
            .stdout(Stdio::null())
            .stderr(sandbox_log)
            .spawn()
            .context("cannot start the Notion sandbox")?;
        cluster.status.sandbox_pid = sandbox.id();
        cluster.status.sandbox_url = format!("http://127.0.0.1:{sandbox_port}");
        cluster.sandbox = Some(sandbox);
        let http = reqwest::Client::new();
        let stats = format!("{}/__sandbox/stats", cluster.status.sandbox_url);
        wait_until("the Notion sandbox", Duration::from_secs(30), async || {
            http.get(&stats)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await?;

        // Node 1 starts the cluster; the others join it.
        for id in 1..=cluster.spec.nodes as u64 {
            let info = NodeInfo {
                id,
                pid: 0,
                http: format!("http://127.0.0.1:{}", free_port()?),
                peer: format!("127.0.0.1:{}", free_port()?),
                data_dir: cluster.node_dir(id).join("data"),
            };
            if cluster.spec.tls {
                run(
                    &bin,
                    &[
                        "certs",
                        "node",
                        "--id",
                        &id.to_string(),
                        "--host",
                        "127.0.0.1",
                        "--ca",
                        &dir.join("ca").to_string_lossy(),
                        "--out",
                        &cluster.node_dir(id).join("tls").to_string_lossy(),
                    ],
                    &[],
                )?;
            }
            cluster.status.nodes.push(info);
        }
        let init_args = cluster.node_args(1, false);
        let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
        let mut args = vec!["init"];
        args.extend(init_args.iter().copied());
        run(
            &bin,
            &args,
            &[("QUIRE_MASTER_KEY_FILE", key.to_string_lossy().into_owned())],
        )?;
        cluster.status.admin_token = std::fs::read_to_string(
            cluster.status.nodes[0]
                .data_dir
                .join(crate::init::ADMIN_TOKEN_FILE),
        )?
        .trim()
        .to_owned();
        for id in 1..=cluster.spec.nodes as u64 {
            cluster.start_node(id)?;
        }
        for id in 1..=cluster.spec.nodes as u64 {
            cluster.wait_ready(id, Duration::from_secs(60)).await?;
        }
        cluster.provision_demo().await?;
        cluster.save()?;
        Ok(cluster)
    }

    /// The flags of `quire serve`/`init` for node `id` (with `--join` for joiners).
    fn node_args(&self, id: u64, serve: bool) -> Vec<String> {
        let info = &self.status.nodes[(id - 1) as usize];
        let listen = info.http.trim_start_matches("http://").to_owned();
        let mut args = vec![
            "--data-dir".to_owned(),
            info.data_dir.to_string_lossy().into_owned(),
            "--node-id".to_owned(),
            id.to_string(),
            "--listen".to_owned(),
            listen,
            "--peer-listen".to_owned(),
            info.peer.clone(),
        ];
        if self.spec.tls {
            args.push("--tls-dir".to_owned());
            args.push(self.node_dir(id).join("tls").to_string_lossy().into_owned());
        } else {
            args.push("--insecure-peer".to_owned());
        }
        if serve && id != 1 {
            args.push("--join".to_owned());
            args.push(self.status.nodes[0].peer.clone());
        }
        args
    }

    /// Starts (or restarts) node `id`'s process.
    pub fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.spec.binary.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.node_dir(id).join("node.log"))?;
        let mut command = Command::new(&bin);
        command
            .arg("serve")
            .args(self.node_args(id, true))
            .env("QUIRE_MASTER_KEY_FILE", self.master_key_file())
            .env("QUIRE_NOTION_BASE_URL", &self.status.sandbox_url)
            .env(
                "QUIRE_FAULT_INJECTION",
                self.spec.fault_injection.to_string(),
            )
            .env(
                "QUIRE_LOG",
                std::env::var("QUIRE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.spec.env {
            command.env(k, v.replace("{id}", &id.to_string()));
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        self.status.nodes[(id - 1) as usize].pid = child.id();
        self.children.retain(|(n, _)| *n != id);
        self.children.push((id, child));
        Ok(())
    }

    /// Adds a node that joins through node 1 (or the first node still listed).
    pub async fn add_node(&mut self) -> anyhow::Result<u64> {
        let id = self.status.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        self.status.nodes.push(NodeInfo {
            id,
            pid: 0,
            http: format!("http://127.0.0.1:{}", free_port()?),
            peer: format!("127.0.0.1:{}", free_port()?),
            data_dir: self.node_dir(id).join("data"),
        });
        if self.spec.tls {
            run(
                &self.spec.binary,
                &[
                    "certs",
                    "node",
                    "--id",
                    &id.to_string(),
                    "--host",
                    "127.0.0.1",
                    "--ca",
                    &self.spec.dir.join("ca").to_string_lossy(),
                    "--out",
                    &self.node_dir(id).join("tls").to_string_lossy(),
                ],
                &[],
            )?;
        }
        std::fs::create_dir_all(self.node_dir(id))?;
        self.start_node(id)?;
        self.wait_ready(id, Duration::from_secs(60)).await?;
        self.save()?;
        Ok(id)
    }

    /// `kill -9` of node `id`.
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        if let Some(pos) = self.children.iter().position(|(n, _)| *n == id) {
            let (_, mut child) = self.children.remove(pos);
            child.kill()?;
            child.wait()?;
        } else {
            let pid = self.node(id)?.pid;
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()?;
        }
        Ok(())
    }

    pub fn node(&self, id: u64) -> anyhow::Result<&NodeInfo> {
        self.status
            .nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no node {id}"))
    }

    /// Whether node `id`'s process is still running (it exits when removed from the group).
    pub fn is_running(&mut self, id: u64) -> bool {
        match self.children.iter_mut().find(|(n, _)| *n == id) {
            Some((_, child)) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until node `id` answers `/readyz` with 200.
    pub async fn wait_ready(&mut self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.node(id)?.http);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if !self.is_running(id) && self.children.iter().any(|(n, _)| *n == id) {
                let log =
                    std::fs::read_to_string(self.node_dir(id).join("node.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "node {id} exited: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("node {id} was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An admin API request to node `id`; returns the status code and the JSON body.
    pub async fn admin(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/admin/v1{path}", self.node(id)?.http);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut request = http
            .request(method, &url)
            .bearer_auth(&self.status.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| url.clone())?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn admin_ok(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.admin(id, method, path, Some(body)).await?;
        if !(200..300).contains(&status) {
            bail!("admin {path} answered {status}: {value}");
        }
        Ok(value)
    }

    async fn provision_demo(&mut self) -> anyhow::Result<()> {
        use reqwest::Method;
        self.admin_ok(
            1,
            Method::POST,
            "/tenants",
            json!({"id": "demo", "display_name": "Demo tenant"}),
        )
        .await?;
        self.admin_ok(
            1,
            Method::POST,
            "/tenants/demo/integrations",
            json!({"id": "sandbox-alpha", "display_name": "Notion sandbox (alpha)", "notion_token": "secret_sandbox_alpha"}),
        )
        .await?;
        self.admin_ok(
            1,
            Method::POST,
            "/tenants/demo/workspaces",
            json!({"id": "demo", "display_name": "Demo workspace", "integration": "sandbox-alpha"}),
        )
        .await?;
        self.admin_ok(
            1,
            Method::POST,
            "/tenants/demo/principals",
            json!({"id": "demo-user", "display_name": "Demo user"}),
        )
        .await?;
        self.admin_ok(
            1,
            Method::POST,
            "/tenants/demo/principals/demo-user/workspaces",
            json!({"workspace": "demo"}),
        )
        .await?;
        let token = self
            .admin_ok(
                1,
                Method::POST,
                "/tenants/demo/tokens",
                json!({"principal": "demo-user", "workspace": "demo"}),
            )
            .await?;
        self.status.mcp_token = token["token"]
            .as_str()
            .context("the token response has no token")?
            .to_owned();
        Ok(())
    }

    /// Writes `<dir>/cluster.json`.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = self.spec.dir.join("cluster.json");
        crate::init::write_secret_file(&path, &serde_json::to_string_pretty(&self.status)?)
    }

    /// Leaves the processes running when this handle is dropped.
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Reads `<dir>/cluster.json`.
    pub fn read_status(dir: &Path) -> anyhow::Result<Status> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no local cluster in {} ({} is missing)",
                dir.display(),
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a cluster state file", path.display()))
    }

    /// Stops every process of the cluster in `dir` and removes its state file.
    pub fn down(dir: &Path) -> anyhow::Result<usize> {
        let status = Self::read_status(dir)?;
        let mut stopped = 0;
        for pid in status
            .nodes
            .iter()
            .map(|n| n.pid)
            .chain([status.sandbox_pid])
        {
            if pid != 0
                && Command::new("kill")
                    .arg(pid.to_string())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            {
                stopped += 1;
            }
        }
        std::fs::remove_file(dir.join("cluster.json"))?;
        Ok(stopped)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(child) = &mut self.sandbox {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.spec.dir.join("cluster.json"));
    }
}
