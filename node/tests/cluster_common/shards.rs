//! What the tests that watch shards and their owners share (`cluster_forwarding`,
//! `cluster_handoff`, `cluster_stop`, `cluster_owner_crash`, `cluster_placement`,
//! `cluster_metrics`): three real `quire` processes started with a config file and extra
//! environment, an agent provisioned in a tenant with its own integration, the shard map read
//! from `GET /admin/v1/placement`, waits with deadlines, MCP clients on every node, and
//! counters read from `/metrics` and from the sandbox.

use std::path::PathBuf;
use std::time::Duration;

use quire_node::local_cluster::{LocalCluster, Spec};
use quire_raft::placement::{Residency, ShardId, integration_key, shard_of};
use quire_raft::{IntegrationId, TenantId};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::mcp::{CLUSTER_DEADLINES, Session, message_of};

/// How a cluster of three is started.
pub struct Three<'a> {
    /// The temp dir's name starts with it.
    pub prefix: &'a str,
    /// The TOML every node reads through `QUIRE_CONFIG`.
    pub config: &'a str,
    /// Environment every node gets besides `QUIRE_CONFIG`.
    pub env: &'a [(&'a str, &'a str)],
    /// Arguments of the Notion sandbox (`--rate-limit`, `--burst`).
    pub sandbox_args: &'a [&'a str],
}

impl Three<'_> {
    /// Starts three `quire` processes with mutual TLS between them in a new temp dir (the
    /// cluster in its `cluster` folder); the dir lives as long as the handle returned with it.
    pub async fn start(&self) -> (tempfile::TempDir, LocalCluster) {
        let dir = tempfile::Builder::new()
            .prefix(self.prefix)
            .tempdir()
            .expect("create a temp dir");
        let config = dir.path().join("quire.toml");
        std::fs::write(&config, self.config).expect("write the config file");
        let mut env = vec![(
            "QUIRE_CONFIG".to_owned(),
            config.to_string_lossy().into_owned(),
        )];
        env.extend(
            self.env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let spec = Spec {
            dir: dir.path().join("cluster"),
            binary: PathBuf::from(env!("CARGO_BIN_EXE_quire")),
            nodes: 3,
            tls: true,
            fault_injection: false,
            env,
            sandbox_args: self.sandbox_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let cluster = LocalCluster::up(spec)
            .await
            .unwrap_or_else(|e| panic!("the local cluster did not start: {e:#}"));
        (dir, cluster)
    }
}

/// Restarts node 3 of `c` in region `region` (`QUIRE_REGION`): it records its new labels.
/// Nodes 1 and 2 keep a quorum meanwhile.
pub async fn move_node_3(c: &mut LocalCluster, region: &str, ready_within: Duration) {
    c.kill9(3).expect("kill node 3");
    c.spec.env.push(("QUIRE_REGION".into(), region.into()));
    c.start_node(3).expect("start node 3");
    c.wait_ready(3, ready_within)
        .await
        .expect("node 3 ready again");
}

/// An admin request to node `via` that must be answered 2xx; the answer.
pub async fn admin_ok(
    c: &LocalCluster,
    via: u64,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let (status, v) = c
        .admin(via, method.clone(), path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on node {via}: {e:#}"));
    assert!(
        (200..300).contains(&status),
        "{method} {path} on node {via}: {status} {v}"
    );
    v
}

/// An agent and what it calls through: an integration in `tenant` with `notion_token` (and
/// `budget`, requests per second and burst, when given), a workspace on it, and a principal
/// in the workspace.
pub struct Agent<'a> {
    pub tenant: &'a str,
    pub integration: &'a str,
    pub workspace: &'a str,
    pub principal: &'a str,
    pub notion_token: &'a str,
    pub budget: Option<(u64, u64)>,
}

impl Agent<'_> {
    /// Creates the integration, workspace and principal through node `via`; a token for the
    /// principal in the workspace.
    pub async fn provision(&self, c: &LocalCluster, via: u64) -> String {
        let base = format!("/tenants/{}", self.tenant);
        let mut integration = json!({"id": self.integration, "display_name": self.integration,
                                     "notion_token": self.notion_token});
        if let Some((rps, burst)) = self.budget {
            integration["requests_per_second"] = json!(rps);
            integration["burst"] = json!(burst);
        }
        let post = async |path: String, body: Value| {
            admin_ok(c, via, Method::POST, &path, Some(body)).await
        };
        post(format!("{base}/integrations"), integration).await;
        post(
            format!("{base}/workspaces"),
            json!({"id": self.workspace, "display_name": self.workspace,
                   "integration": self.integration}),
        )
        .await;
        post(
            format!("{base}/principals"),
            json!({"id": self.principal, "display_name": self.principal}),
        )
        .await;
        post(
            format!("{base}/principals/{}/workspaces", self.principal),
            json!({"workspace": self.workspace}),
        )
        .await;
        let issued = post(
            format!("{base}/tokens"),
            json!({"principal": self.principal, "workspace": self.workspace}),
        )
        .await;
        issued["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {issued}"))
            .to_owned()
    }

    /// The shard of the agent's integration for a tenant of `residency`.
    pub fn shard(&self, residency: &Residency) -> String {
        self.shard_id(residency).to_string()
    }

    /// [`Agent::shard`], as the placement's type.
    pub fn shard_id(&self, residency: &Residency) -> ShardId {
        let tenant = TenantId::new(self.tenant).expect("a valid tenant id");
        let integration = IntegrationId::new(self.integration).expect("a valid integration id");
        shard_of(residency, &integration_key(&tenant, &integration))
    }
}

/// `GET /admin/v1/placement` on node `via`, which must answer 200.
pub async fn placement(c: &LocalCluster, via: u64) -> Value {
    let (status, v) = c
        .admin(via, Method::GET, "/placement", None)
        .await
        .unwrap_or_else(|e| panic!("GET /placement on node {via}: {e:#}"));
    assert_eq!(status, 200, "GET /placement on node {via}: {v}");
    v
}

/// The entry of `shard` in a `GET /placement` answer (`Null` if not listed).
pub fn shard_entry(v: &Value, shard: &str) -> Value {
    v["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["shard"] == Value::String(shard.to_owned()))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The owner of `shard` in a `GET /placement` answer (`None` if unassigned or not listed).
pub fn owner_of(v: &Value, shard: &str) -> Option<u64> {
    shard_entry(v, shard)["owner"].as_u64()
}

/// The entry of node `id` in a `GET /placement` answer (`Null` if not listed).
pub fn node_entry(v: &Value, id: u64) -> Value {
    v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == json!(id))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Runs `check` every `every` until it gives a value; panics naming `what` after `timeout`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// Waits until node `via`'s placement gives `shard` an owner other than `not`; the owner.
pub async fn wait_owner(
    c: &LocalCluster,
    via: u64,
    shard: &str,
    not: Option<u64>,
    timeout: Duration,
    every: Duration,
) -> u64 {
    let what = match not {
        Some(n) => format!("shard {shard} to leave node {n}"),
        None => format!("shard {shard} to get an owner"),
    };
    wait_for(&what, timeout, every, async || {
        owner_of(&placement(c, via).await, shard).filter(|o| Some(*o) != not)
    })
    .await
}

/// The owner node 1's placement gives `shard` once it has one (within 30 s).
pub async fn first_owner(c: &LocalCluster, shard: &str) -> u64 {
    wait_owner(
        c,
        1,
        shard,
        None,
        Duration::from_secs(30),
        Duration::from_millis(200),
    )
    .await
}

/// Opens `per_node` MCP sessions (clients `n{id}-c{k}`) with `token` on each of `nodes`.
pub async fn open_sessions(
    http: &reqwest::Client,
    c: &LocalCluster,
    nodes: &[u64],
    per_node: usize,
    token: &str,
) -> Vec<(u64, Session)> {
    let mut sessions = Vec::new();
    for &id in nodes {
        let url = c.node(id).expect("a known node").http.clone();
        for k in 0..per_node {
            let session = Session::open(
                http,
                &url,
                token,
                &format!("n{id}-c{k}"),
                Some(CLUSTER_DEADLINES),
            )
            .await
            .unwrap_or_else(|e| panic!("an MCP session on node {id}: {e:#}"));
            sessions.push((id, session));
        }
    }
    sessions
}

/// How one tool call ended, as an agent sees it.
#[derive(Debug)]
pub enum Call {
    Ok,
    /// A tool error carrying `retry_after_seconds`: those seconds and the error.
    Retry(u64, String),
    /// Anything else: an HTTP failure, a JSON-RPC error, a tool error an agent cannot retry.
    Failed(String),
}

/// `tools/call` of `tool` (no arguments) with JSON-RPC id `id` in `session`.
pub async fn call(session: &Session, id: u64, tool: &str) -> Call {
    let v = match session.call_tool(id, tool, &json!({})).await {
        Ok((200, body)) => message_of(&body).unwrap_or_default(),
        other => return Call::Failed(format!("{other:?}")),
    };
    if v["result"]["isError"] == Value::Bool(true) {
        let err = &v["result"]["structuredContent"];
        return match err["retry_after_seconds"].as_u64() {
            Some(secs) => Call::Retry(secs, err.to_string()),
            None => Call::Failed(v.to_string()),
        };
    }
    if v.get("error").is_some() || v.get("result").is_none() {
        return Call::Failed(v.to_string());
    }
    Call::Ok
}

/// Node `node`'s `/metrics` page.
pub async fn metrics_page(c: &LocalCluster, node: u64) -> String {
    let url = format!("{}/metrics", c.node(node).expect("a known node").http);
    super::client()
        .get(&url)
        .bearer_auth(&c.status.admin_token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `name{labels} value` lines of a Prometheus page, summed by exact name and label text.
pub fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| *k == name_and_labels)
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// Node `node`'s `/metrics` page once `name_and_labels` reads at least `min` there (polled
/// every 200 ms); panics with the last page after `within`.
pub async fn wait_metric(
    c: &LocalCluster,
    node: u64,
    name_and_labels: &str,
    min: f64,
    within: Duration,
) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let page = metrics_page(c, node).await;
        if metric(&page, name_and_labels) >= min {
            return page;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("node {node}'s {name_and_labels} stayed below {min} for {within:?}:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sandbox's request counters (`GET /__sandbox/stats`).
pub async fn sandbox_stats(c: &LocalCluster) -> Value {
    let url = format!("{}/__sandbox/stats", c.status.sandbox_url);
    super::client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Resets the sandbox's request counters.
pub async fn sandbox_reset(c: &LocalCluster) {
    let url = format!("{}/__sandbox/stats/reset", c.status.sandbox_url);
    super::client()
        .post(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
}
