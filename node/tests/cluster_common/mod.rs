//! Helpers shared by the multi-process cluster tests (`cluster_*.rs`): starting a local
//! cluster of real `quire` processes in a temp dir, a background writer that creates tenants
//! round-robin over a changing set of nodes and records which writes were acknowledged,
//! reads of each node's applied state, convergence checks with deadlines, link cuts, and the
//! node logs printed when a test fails.
//!
//! Its submodules serve the tests that drive one node or talk to nodes as clients:
//! `process` starts a single `quire serve --sandbox` and waits until it is ready, `admin` is
//! a client of one node's admin API, `ctl` runs `quire ctl`, `mcp` opens MCP sessions
//! over Streamable HTTP, and `shards` serves the tests that watch shards and their owners.
//!
//! Every wait here has a deadline; nothing sleeps to synchronise.

#![allow(dead_code)] // each test binary uses a different subset

pub mod admin;
pub mod ctl;
pub mod mcp;
pub mod process;
pub mod shards;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use quire_node::local_cluster::{LocalCluster, Spec};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long one write of the background writer may take before it counts as failed.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(8);
/// How long an admin request of a test's own scenario (not the background writer) may take.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(20);
/// How long a read of one node's state may take.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Tenants asked for per page when listing (the admin API's maximum).
const PAGE_ITEMS: usize = 1_000;
/// Pages read at most when listing tenants (bounds a runaway listing).
const MAX_PAGES: usize = 100;

/// A local cluster in its own temp dir. When a test panics while it is alive, the tail of
/// every node's log is printed, and the directory is kept (its path is printed).
pub struct TestCluster {
    pub cluster: LocalCluster,
    dir: Option<tempfile::TempDir>,
    http: reqwest::Client,
}

/// Starts `nodes` real `quire` processes with mutual TLS between them.
pub async fn start(nodes: usize, fault_injection: bool) -> TestCluster {
    let dir = tempfile::Builder::new()
        .prefix("quire-cluster-")
        .tempdir()
        .expect("create a temp dir");
    let started = Instant::now();
    let spec = Spec {
        dir: dir.path().to_owned(),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_quire")),
        nodes,
        tls: true,
        fault_injection,
        env: Vec::new(),
        sandbox_args: Vec::new(),
    };
    let cluster = match LocalCluster::up(spec).await {
        Ok(c) => c,
        Err(e) => {
            let kept = dir.keep();
            print_logs(&kept, nodes as u64);
            panic!(
                "the local cluster did not start: {e:#} (logs in {})",
                kept.display()
            );
        }
    };
    println!(
        "cluster of {nodes} up in {} ms in {}",
        started.elapsed().as_millis(),
        cluster.spec.dir.display()
    );
    TestCluster {
        cluster,
        dir: Some(dir),
        http: client(),
    }
}

/// A reqwest client without proxies (everything is on loopback).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build a reqwest client")
}

fn print_logs(dir: &std::path::Path, max_id: u64) {
    for id in 1..=max_id {
        let path = dir.join(format!("node-{id}")).join("node.log");
        let Ok(log) = std::fs::read_to_string(&path) else {
            continue;
        };
        // Routine lines say nothing about a failure; colours make the rest hard to read.
        let lines: Vec<String> = log
            .lines()
            .filter(|l| !l.contains("admin change applied") && !l.contains("startup begin"))
            .map(strip_ansi)
            .collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        eprintln!(
            "---- last {} lines of {} ----\n{}",
            tail.len(),
            path.display(),
            tail.join("\n")
        );
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an escape sequence up to its final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let max_id = self.cluster.status.nodes.iter().map(|n| n.id).max();
            let kept = dir.keep();
            print_logs(&kept, max_id.unwrap_or(0));
            eprintln!(
                "the cluster's directory is kept for inspection: {}",
                kept.display()
            );
        }
    }
}

/// What a node answered to one request: a status code, or no answer within the deadline.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16, Value),
    /// A transport error or the deadline passed.
    NoAnswer(String),
}

impl Answer {
    pub fn is_success(&self) -> bool {
        matches!(self, Answer::Status(s, _) if (200..300).contains(s))
    }
}

/// One admin API request with a deadline.
pub async fn admin_request(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    deadline: Duration,
) -> Answer {
    let mut request = http
        .request(method, format!("{base}/admin/v1{path}"))
        .bearer_auth(token)
        .timeout(deadline);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Answer::NoAnswer(format!("timeout: {e}")),
        Err(e) => return Answer::NoAnswer(format!("connection: {e}")),
    };
    let status = response.status().as_u16();
    match response.text().await {
        Ok(text) => Answer::Status(
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ),
        Err(e) => Answer::NoAnswer(format!("status {status}, body unreadable: {e}")),
    }
}

impl TestCluster {
    pub fn dir(&self) -> PathBuf {
        self.cluster.spec.dir.clone()
    }

    pub fn url(&self, id: u64) -> String {
        self.cluster.node(id).expect("a known node").http.clone()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.cluster.status.nodes.iter().map(|n| n.id).collect()
    }

    /// An admin request to node `id` with a deadline.
    pub async fn request(
        &self,
        id: u64,
        method: Method,
        path: &str,
        body: Option<Value>,
        deadline: Duration,
    ) -> Answer {
        admin_request(
            &self.http,
            &self.url(id),
            &self.cluster.status.admin_token,
            method,
            path,
            body,
            deadline,
        )
        .await
    }

    /// An admin request to node `id` that must be answered 2xx within `ADMIN_DEADLINE`; the
    /// answer. Panics otherwise.
    pub async fn admin_ok(
        &self,
        id: u64,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        match self
            .request(id, method.clone(), path, body, ADMIN_DEADLINE)
            .await
        {
            Answer::Status(code, v) if (200..300).contains(&code) => v,
            other => panic!("{method} {path} on node {id}: {other:?}"),
        }
    }

    /// Creates tenant `tenant` through node `id`.
    pub async fn create_tenant(&self, id: u64, tenant: &str, deadline: Duration) -> Answer {
        self.request(
            id,
            Method::POST,
            "/tenants",
            Some(json!({"id": tenant, "display_name": format!("Tenant {tenant}")})),
            deadline,
        )
        .await
    }

    /// Every tenant id node `id` lists, read with `consistency` ("local" or "linearizable").
    pub async fn tenants(&self, id: u64, consistency: &str) -> anyhow::Result<BTreeSet<String>> {
        list_tenants(
            &self.http,
            &self.url(id),
            &self.cluster.status.admin_token,
            consistency,
        )
        .await
    }

    /// `GET /admin/v1/nodes` on node `id`.
    pub async fn nodes(&self, id: u64) -> anyhow::Result<Value> {
        match self
            .request(id, Method::GET, "/nodes", None, READ_DEADLINE)
            .await
        {
            Answer::Status(200, v) => Ok(v),
            other => bail!("GET /nodes on node {id}: {other:?}"),
        }
    }

    /// Waits until node `asked` names a leader (other than `not`) that itself says it leads.
    pub async fn wait_leader(
        &self,
        asked: u64,
        not: Option<u64>,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            match self.nodes(asked).await {
                Ok(v) => match v["leader"].as_u64() {
                    Some(l) if Some(l) != not => return Ok(l),
                    _ => last = v.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!("node {asked} named no new leader within {timeout:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every node in `ids` lists (locally) the same tenants, a set holding all of
    /// `must_have`; returns that set. Only for when no writes are in flight.
    pub async fn wait_converged(
        &self,
        ids: &[u64],
        must_have: &BTreeSet<String>,
        timeout: Duration,
    ) -> anyhow::Result<BTreeSet<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut sets = BTreeMap::new();
            let mut problems = Vec::new();
            for &id in ids {
                match self.tenants(id, "local").await {
                    Ok(set) => {
                        problems.extend(lacking(id, must_have, &set));
                        sets.insert(id, set);
                    }
                    Err(e) => problems.push(format!("node {id}: {e:#}")),
                }
            }
            let first = sets.values().next().cloned();
            if problems.is_empty()
                && let Some(first) = first
            {
                if sets.values().all(|s| *s == first) {
                    return Ok(first);
                }
                problems.push(format!(
                    "the nodes list different sets: {:?}",
                    sets.iter()
                        .map(|(id, s)| (*id, s.len()))
                        .collect::<Vec<_>>()
                ));
            }
            if Instant::now() >= deadline {
                bail!(
                    "nodes {ids:?} did not converge within {timeout:?}: {}",
                    problems.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every node in `ids` lists (locally) all of `must_have`; unlike
    /// `wait_converged` it does not need the nodes to agree, so writes may go on meanwhile.
    pub async fn wait_contains(
        &self,
        ids: &[u64],
        must_have: &BTreeSet<String>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<u64> = ids.to_vec();
        loop {
            let mut problems = Vec::new();
            let mut still = Vec::new();
            for &id in &pending {
                match self.tenants(id, "local").await {
                    Ok(set) => {
                        if let Some(problem) = lacking(id, must_have, &set) {
                            problems.push(problem);
                            still.push(id);
                        }
                    }
                    Err(e) => {
                        problems.push(format!("node {id}: {e:#}"));
                        still.push(id);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nodes {pending:?} did not catch up within {timeout:?}: {}",
                    problems.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `GET /nodes` on `asked` shows every member in `ids` reachable with one
    /// applied index; returns it.
    pub async fn wait_equal_applied(
        &self,
        asked: u64,
        ids: &[u64],
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let mut want = ids.to_vec();
        want.sort_unstable();
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            match self.nodes(asked).await {
                Ok(v) => {
                    let applied: BTreeMap<u64, Option<u64>> = v["members"]
                        .as_array()
                        .map(|ms| {
                            ms.iter()
                                .filter_map(|m| {
                                    Some((m["id"].as_u64()?, m["applied_index"].as_u64()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let listed: Vec<u64> = applied.keys().copied().collect();
                    let values: BTreeSet<Option<u64>> = applied.values().copied().collect();
                    if listed == want
                        && values.len() == 1
                        && let Some(Some(index)) = values.into_iter().next()
                    {
                        return Ok(index);
                    }
                    last = v.to_string();
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!(
                    "GET /nodes on node {asked} did not show equal applied indexes for {ids:?} within {timeout:?}; last: {last}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Cuts every link between `id` and the other nodes in `others` (both directions).
    pub async fn isolate(&self, id: u64, others: &[u64]) -> anyhow::Result<()> {
        self.faults(id, json!({"cut": others, "heal": false}))
            .await?;
        for &other in others {
            self.faults(other, json!({"cut": [id], "heal": false}))
                .await?;
        }
        Ok(())
    }

    /// Heals every cut link on every node in `ids`.
    pub async fn heal(&self, ids: &[u64]) -> anyhow::Result<()> {
        for &id in ids {
            self.faults(id, json!({"heal": true})).await?;
        }
        Ok(())
    }

    async fn faults(&self, id: u64, body: Value) -> anyhow::Result<()> {
        match self
            .request(id, Method::POST, "/test/faults", Some(body), READ_DEADLINE)
            .await
        {
            Answer::Status(200, _) => Ok(()),
            other => bail!("POST /test/faults on node {id}: {other:?}"),
        }
    }

    /// A background writer over nodes `targets` (change them through `Writer::set_targets`).
    pub fn writer(&self, targets: &[u64]) -> Writer {
        let targets: BTreeMap<u64, String> = targets.iter().map(|&id| (id, self.url(id))).collect();
        Writer::start(self.cluster.status.admin_token.clone(), targets)
    }
}

/// What node `id`, which lists `set`, lacks of `must_have`, said in a line (`None` if nothing).
fn lacking(id: u64, must_have: &BTreeSet<String>, set: &BTreeSet<String>) -> Option<String> {
    let missing: Vec<&String> = must_have.difference(set).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "node {id} lacks {} acknowledged tenants, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        )
    })
}

/// How long a listing retries a page the node answered 503.
const READ_RETRY_WINDOW: Duration = Duration::from_secs(30);

/// Every tenant id the node at `base` lists, page by page.
pub async fn list_tenants(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    consistency: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/tenants?consistency={consistency}&limit={PAGE_ITEMS}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        // A linearizable read answers 503 ("retry") while the leader cannot confirm its
        // lease (an election, a follower just back): retried for a while, like a client would.
        let retry_until = tokio::time::Instant::now() + READ_RETRY_WINDOW;
        let body = loop {
            let answer =
                admin_request(http, base, token, Method::GET, &path, None, READ_DEADLINE).await;
            match answer {
                Answer::Status(200, body) => break body,
                Answer::Status(503, _) if tokio::time::Instant::now() < retry_until => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => bail!("GET {path} on {base}: {other:?}"),
            }
        };
        let tenants = body["tenants"]
            .as_array()
            .with_context(|| format!("no tenants array in {body}"))?;
        for t in tenants {
            out.insert(
                t["id"]
                    .as_str()
                    .with_context(|| format!("a tenant without an id: {t}"))?
                    .to_owned(),
            );
        }
        match body["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(out),
        }
    }
    bail!("more than {MAX_PAGES} pages of tenants on {base}")
}

/// One write of the background writer.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub tenant: String,
    pub node: u64,
    pub started: Instant,
    pub finished: Instant,
    pub answer: Answer,
}

impl WriteRecord {
    pub fn acknowledged(&self) -> bool {
        self.answer.is_success()
    }
}

/// Creates tenants `w-1, w-2, ...` one at a time, round-robin over its target nodes, each
/// with `WRITE_DEADLINE`, and records every outcome.
pub struct Writer {
    targets: Arc<Mutex<BTreeMap<u64, String>>>,
    records: Arc<Mutex<Vec<WriteRecord>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Writer {
    fn start(token: String, targets: BTreeMap<u64, String>) -> Writer {
        let targets = Arc::new(Mutex::new(targets));
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let targets = targets.clone();
            let records = records.clone();
            let stop = stop.clone();
            async move {
                let http = client();
                let mut n: u64 = 0;
                let mut turn: usize = 0;
                while !stop.load(Ordering::SeqCst) {
                    let target = {
                        let t = targets.lock().expect("targets lock");
                        if t.is_empty() {
                            None
                        } else {
                            turn = turn.wrapping_add(1);
                            t.iter()
                                .nth(turn % t.len())
                                .map(|(id, url)| (*id, url.clone()))
                        }
                    };
                    let Some((node, url)) = target else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    n += 1;
                    let tenant = format!("w-{n}");
                    let started = Instant::now();
                    let answer = admin_request(
                        &http,
                        &url,
                        &token,
                        Method::POST,
                        "/tenants",
                        Some(json!({"id": tenant, "display_name": format!("Written {n}")})),
                        WRITE_DEADLINE,
                    )
                    .await;
                    let failed = !answer.is_success();
                    records.lock().expect("records lock").push(WriteRecord {
                        tenant,
                        node,
                        started,
                        finished: Instant::now(),
                        answer,
                    });
                    if failed {
                        // Do not spin on a node that refuses at once (e.g. a dead one).
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Writer {
            targets,
            records,
            stop,
            task,
        }
    }

    /// The nodes written to from now on.
    pub fn set_targets(&self, cluster: &TestCluster, ids: &[u64]) {
        let mut t = self.targets.lock().expect("targets lock");
        *t = ids.iter().map(|&id| (id, cluster.url(id))).collect();
    }

    pub fn remove_target(&self, id: u64) {
        self.targets.lock().expect("targets lock").remove(&id);
    }

    pub fn add_target(&self, cluster: &TestCluster, id: u64) {
        self.targets
            .lock()
            .expect("targets lock")
            .insert(id, cluster.url(id));
    }

    /// Every write so far.
    pub fn records(&self) -> Vec<WriteRecord> {
        self.records.lock().expect("records lock").clone()
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.records
            .lock()
            .expect("records lock")
            .iter()
            .filter(|r| r.acknowledged())
            .count()
    }

    /// Waits until `more` writes beyond those acknowledged now are acknowledged.
    pub async fn wait_more_acks(&self, more: usize, timeout: Duration) -> anyhow::Result<()> {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + timeout;
        while self.acknowledged() < target {
            if Instant::now() >= deadline {
                let recent: Vec<String> = self
                    .records()
                    .iter()
                    .rev()
                    .take(5)
                    .map(|r| format!("{} via node {}: {:?}", r.tenant, r.node, r.answer))
                    .collect();
                bail!(
                    "fewer than {more} writes were acknowledged within {timeout:?}; last writes: {recent:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops after the write in flight and returns every record.
    pub async fn stop(self) -> Vec<WriteRecord> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(WRITE_DEADLINE * 2, self.task).await;
        self.records.lock().expect("records lock").clone()
    }
}

/// The tenants of the acknowledged writes among `records`.
pub fn acked_set(records: &[WriteRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r.acknowledged())
        .map(|r| r.tenant.clone())
        .collect()
}

/// A short summary of the failures among `records` (status or error, and how many).
pub fn failure_summary(records: &[WriteRecord]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| !r.acknowledged()) {
        let key = match &r.answer {
            Answer::Status(s, v) => format!("{s} {}", v["error"].as_str().unwrap_or("")),
            Answer::NoAnswer(e) if e.starts_with("timeout") => "no answer (timeout)".to_owned(),
            Answer::NoAnswer(_) => "no answer (connection)".to_owned(),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// Writes that came back 409 `already_exists` although each tenant id is written once: the
/// cluster applied the same request twice (a retry inside the cluster after the first attempt
/// had committed).
pub fn duplicate_applies(records: &[WriteRecord]) -> Vec<&WriteRecord> {
    records
        .iter()
        .filter(|r| matches!(&r.answer, Answer::Status(409, v) if v["error"] == "already_exists"))
        .collect()
}

/// An MCP `initialize` POST to node base URL `base` with `token`; returns the status and body.
pub async fn mcp_initialize(base: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let response = mcp::send_initialize(
        &client(),
        base,
        token,
        "cluster-test",
        Some(Duration::from_secs(10)),
    )
    .await
    .with_context(|| format!("POST {base}/mcp"))?;
    let status = response.status().as_u16();
    let body = response.text().await.context("the initialize body")?;
    Ok((status, body))
}
