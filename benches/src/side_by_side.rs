//! The MCP side-by-side: Quire on one node, Quire on three nodes, and Notion's own local MCP
//! server (`@notionhq/notion-mcp-server`, `--transport http`), all in one run on the same
//! machine against the same Notion sandbox (rate limit off). For each side and each
//! equivalent operation (retrieve a page, query a data source, search) it runs the closed
//! loop at each concurrency level, then optionally an open-loop sweep of one operation at
//! increasing arrival rates (latency against load). It records the peak resident memory of
//! each side's server processes (`VmHWM`; a cluster's nodes summed).
//!
//! Quire authorizes every call, audits it through Raft before answering, and renders
//! Notion's answer; Notion's server forwards the call and returns Notion's JSON.
//!
//! An integration's budget in Quire is at most 1000 Notion requests/s per node, below what a
//! fast server reaches here (a page read costs Quire 3 Notion requests). So that the budget
//! is not what is measured, Quire's clients are spread over [`INTEGRATIONS`] integrations on
//! the same sandbox token (one workspace and agent token each), every one at that maximum.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quire_node::local_cluster::{LocalCluster, Spec, free_port};
use serde::Serialize;
use serde_json::{Value, json};

use crate::admin_writes;
use crate::cpu::{CpuUse, CpuWindow};
use crate::load::{self, LoadResult, LoadSpec, MAX_WRITERS, OpenLoopResult, OpenLoopSpec, Worker};
use crate::machine::Machine;
use crate::mcp_client::McpSession;
use crate::raft_commit::{BenchError, leader};
use crate::report;

/// The npm package of Notion's local MCP server, and the version measured.
pub const NOTION_PACKAGE: &str = "@notionhq/notion-mcp-server";
pub const NOTION_VERSION: &str = "2.5.2";
/// One tool call taking longer than this counts as an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to start answering.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The sandbox integration both sides use.
pub const SANDBOX_TOKEN: &str = "secret_sandbox_alpha";
/// What the search operation looks for (a title in the sandbox's demo workspace).
pub const SEARCH_QUERY: &str = "Roadmap";
/// Rows or results per query and search call.
pub const PAGE_SIZE: u64 = 10;
/// Quire's largest integration budget (requests/s per node) and burst.
pub const BUDGET_RPS: u64 = 1000;
pub const BUDGET_BURST: u64 = 10_000;
/// Integrations (each with its workspace) Quire's clients are spread over, all on the same
/// sandbox token, so that the budget (per integration and node) is not what is measured:
/// 8 x 1000 requests/s per node.
pub const INTEGRATIONS: usize = 8;
/// Most choices per list option.
pub const MAX_CHOICES: usize = 12;

/// A side of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Quire, one node.
    Quire1,
    /// Quire, three nodes (clients spread over them).
    Quire3,
    /// Notion's local MCP server.
    Notion,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Quire1 => "quire-1-node",
            Side::Quire3 => "quire-3-nodes",
            Side::Notion => "notion-mcp-server",
        }
    }
}

/// An operation, mapped to a tool on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// Retrieve a page.
    Page,
    /// Query a data source (first page of rows).
    Query,
    /// Search by title.
    Search,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Page => "retrieve a page",
            Op::Query => "query a data source",
            Op::Search => "search",
        }
    }

    /// The tool each side calls.
    pub fn tool(self, side: Side) -> &'static str {
        match (side, self) {
            (Side::Notion, Op::Page) => "API-retrieve-a-page",
            (Side::Notion, Op::Query) => "API-query-data-source",
            (Side::Notion, Op::Search) => "API-post-search",
            (_, Op::Page) => "notion-fetch",
            (_, Op::Query) => "notion-query-data-source",
            (_, Op::Search) => "notion-search",
        }
    }

    /// The tool's arguments on each side.
    pub fn arguments(self, side: Side, f: &Fixtures) -> Value {
        match (side, self) {
            (Side::Notion, Op::Page) => json!({"page_id": f.page_id}),
            (_, Op::Page) => json!({"id": f.page_id}),
            (_, Op::Query) => json!({"data_source_id": f.data_source_id, "page_size": PAGE_SIZE}),
            (_, Op::Search) => json!({"query": SEARCH_QUERY, "page_size": PAGE_SIZE}),
        }
    }
}

/// The sandbox objects the operations use (found in its seeded demo workspace).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Fixtures {
    /// The first page a title search for [`SEARCH_QUERY`] finds.
    pub page_id: String,
    /// The demo "Tasks" data source.
    pub data_source_id: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SideBySideSpec {
    pub quire_bin: PathBuf,
    /// Where Notion's server is installed with npm (`<dir>/node_modules/...`).
    pub npm_dir: PathBuf,
    pub sides: Vec<Side>,
    pub ops: Vec<Op>,
    /// Closed-loop concurrency levels (MCP clients).
    pub clients: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Open-loop arrival rates (calls/s) for the latency-against-load sweep; empty: none.
    pub open_rates: Vec<f64>,
    /// The operation of the open-loop sweep.
    pub open_op: Op,
    /// Most calls outstanding in the open loop (MCP sessions in its pool).
    pub open_max_outstanding: usize,
    pub work_dir: Option<PathBuf>,
}

impl SideBySideSpec {
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |v: &[usize]| {
            v.is_empty() || v.len() > MAX_CHOICES || v.iter().any(|&x| x == 0 || x > MAX_WRITERS)
        };
        if bad(&self.clients)
            || self.sides.is_empty()
            || self.ops.is_empty()
            || self.open_rates.len() > MAX_CHOICES
            || self.open_max_outstanding == 0
            || self.open_max_outstanding > MAX_WRITERS
        {
            return Err(BenchError::Levels(self.clients.clone()));
        }
        self.closed_spec().validate()?;
        for &rate in &self.open_rates {
            self.open_spec(rate).validate()?;
        }
        if !self.quire_bin.is_file() {
            return Err(BenchError::MissingBinary(self.quire_bin.clone()));
        }
        Ok(())
    }

    fn closed_spec(&self) -> LoadSpec {
        LoadSpec {
            warmup: self.warmup,
            duration: self.duration,
            op_timeout: CALL_TIMEOUT,
        }
    }

    fn open_spec(&self, rate: f64) -> OpenLoopSpec {
        OpenLoopSpec {
            rate,
            warmup: self.warmup,
            duration: self.duration,
            op_timeout: CALL_TIMEOUT,
        }
    }
}

/// One side, one operation, one concurrency level, closed loop.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedRow {
    pub side: Side,
    pub op: Op,
    pub tool: &'static str,
    #[serde(flatten)]
    pub result: LoadResult,
    /// CPU the side's servers and the sandbox spent per call in the measured window (`None`
    /// where `/proc` could not be read).
    pub cpu: Option<CpuUse>,
}

/// One side, one arrival rate, open loop.
#[derive(Debug, Clone, Serialize)]
pub struct OpenRow {
    pub side: Side,
    pub op: Op,
    #[serde(flatten)]
    pub result: OpenLoopResult,
}

/// What one side cost.
#[derive(Debug, Clone, Serialize)]
pub struct SideFacts {
    pub side: Side,
    /// What was started (the command line of Notion's server, or the cluster's shape).
    pub server: String,
    /// The server processes measured.
    pub pids: Vec<u32>,
    /// Peak resident memory (`VmHWM`) summed over the server processes, in KiB, at the end
    /// of the side (after the open-loop sweep, if any).
    pub peak_rss_kib: u64,
    /// The same when the closed-loop levels were done (before the open-loop sweep).
    pub peak_rss_closed_kib: u64,
    /// Notion requests one call of each operation made (measured on the sandbox).
    pub notion_requests_per_call: Vec<(Op, u64)>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SideBySideReport {
    pub benchmark: &'static str,
    pub command: String,
    pub git_commit: String,
    pub machine: Machine,
    pub load_average_start: String,
    pub load_average_end: String,
    pub quire_bin: PathBuf,
    pub quire_bin_modified: String,
    pub notion_server: String,
    pub node_version: String,
    pub fixtures: Fixtures,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub closed: Vec<ClosedRow>,
    pub open: Vec<OpenRow>,
    pub sides: Vec<SideFacts>,
}

/// Sessions opened on one side, handed back when a worker is dropped, so that each level
/// reuses them instead of opening new ones (Notion's server keeps every session it opened).
#[derive(Clone)]
struct SessionPool {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Bearer tokens; session `i` uses `tokens[i % len]`.
    tokens: Vec<String>,
    opened: usize,
    idle: Arc<Mutex<Vec<McpSession>>>,
}

impl SessionPool {
    fn new(endpoints: Vec<String>, tokens: Vec<String>) -> Result<SessionPool, BenchError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(MAX_WRITERS)
            .build()
            .map_err(BenchError::Http)?;
        Ok(SessionPool {
            http,
            endpoints,
            tokens,
            opened: 0,
            idle: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// `n` sessions, spread over the endpoints (opening more when the pool has too few).
    async fn take(&mut self, n: usize) -> Result<Vec<McpSession>, BenchError> {
        let mut out: Vec<McpSession> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let keep = idle.len().saturating_sub(n);
            idle.split_off(keep)
        };
        while out.len() < n {
            let url = &self.endpoints[self.opened % self.endpoints.len()];
            let token = &self.tokens[self.opened % self.tokens.len()];
            self.opened += 1;
            let s = McpSession::open(self.http.clone(), url, token, CALL_TIMEOUT)
                .await
                .map_err(|e| BenchError::Preflight(format!("opening a session on {url}: {e}")))?;
            out.push(s);
        }
        Ok(out)
    }

    fn workers(&self, sessions: Vec<McpSession>, tool: &'static str, args: &Value) -> Vec<Caller> {
        sessions
            .into_iter()
            .map(|s| Caller {
                session: Some(s),
                home: self.idle.clone(),
                tool,
                args: args.clone(),
            })
            .collect()
    }
}

/// A client calling one tool with fixed arguments; its session goes back to the pool when
/// it is dropped.
pub struct Caller {
    session: Option<McpSession>,
    home: Arc<Mutex<Vec<McpSession>>>,
    tool: &'static str,
    args: Value,
}

impl Drop for Caller {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.home.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    }
}

/// Notion's server returns Notion's error object as the tool's text without `isError`:
/// such an answer is a failed call.
pub fn notion_error(result: &Value) -> Option<String> {
    let text = result.get("content")?.get(0)?.get("text")?.as_str()?;
    let v: Value = serde_json::from_str(text).ok()?;
    (v.get("object").and_then(Value::as_str) == Some("error")).then(|| {
        format!(
            "Notion error {}: {}",
            v.get("status").unwrap_or(&Value::Null),
            v.get("code").and_then(Value::as_str).unwrap_or("")
        )
    })
}

async fn call(session: &mut McpSession, tool: &str, args: Value) -> Result<Value, String> {
    let result = session
        .call_tool(tool, args)
        .await
        .map_err(|e| e.to_string())?;
    match notion_error(&result) {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

impl Worker for Caller {
    async fn call(&mut self) -> Result<(), String> {
        let Some(session) = self.session.as_mut() else {
            return Err("no session".to_owned());
        };
        call(session, self.tool, self.args.clone())
            .await
            .map(|_| ())
    }
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Peak resident memory (`VmHWM`) of a process, in KiB (0 when unreadable).
pub fn peak_rss_kib(pid: u32) -> u64 {
    vm_hwm_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
}

/// `VmHWM` from a `/proc/PID/status` text, in KiB.
pub fn vm_hwm_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_http(url: &str, what: &str) -> Result<(), BenchError> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::Preflight(format!(
                "{what} did not answer {url} within {START_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sandbox's count of requests from the integration both sides use.
async fn sandbox_requests(sandbox: &str) -> Result<u64, BenchError> {
    let v: Value = reqwest::get(format!("{sandbox}/__sandbox/stats"))
        .await
        .map_err(BenchError::Http)?
        .json()
        .await
        .map_err(BenchError::Http)?;
    v["integrations"]["alpha"]["requests"]
        .as_u64()
        .ok_or_else(|| BenchError::Preflight(format!("the sandbox's stats have no count: {v}")))
}

/// Finds the page and data source in the sandbox's demo workspace.
async fn fixtures(sandbox: &str) -> Result<Fixtures, BenchError> {
    let http = reqwest::Client::new();
    let search = async |body: Value| -> Result<String, BenchError> {
        let v: Value = http
            .post(format!("{sandbox}/v1/search"))
            .bearer_auth(SANDBOX_TOKEN)
            .header("Notion-Version", "2025-09-03")
            .json(&body)
            .send()
            .await
            .map_err(BenchError::Http)?
            .json()
            .await
            .map_err(BenchError::Http)?;
        v["results"][0]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| BenchError::Preflight(format!("the sandbox found nothing for {body}")))
    };
    Ok(Fixtures {
        page_id: search(json!({"query": SEARCH_QUERY, "filter": {"property": "object", "value": "page"}, "page_size": 1})).await?,
        data_source_id: search(json!({"filter": {"property": "object", "value": "data_source"}, "page_size": 1})).await?,
    })
}

/// The entry point of Notion's server under `npm_dir`, installing it with npm first if
/// needed. Returns the script and what was done.
pub fn install_notion_server(
    npm_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, BenchError> {
    let package_dir = npm_dir.join("node_modules").join(NOTION_PACKAGE);
    let cli = package_dir.join("bin").join("cli.mjs");
    let installed = std::fs::read_to_string(package_dir.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| v["version"] == NOTION_VERSION);
    let ready = installed && cli.is_file();
    if !command_exists("node") || !(ready || command_exists("npm")) {
        return Err(BenchError::Preflight(
            "Notion's MCP server needs Node.js and npm (Debian: `apt-get install nodejs npm`), \
             or leave it out with --sides quire1,quire3"
                .to_owned(),
        ));
    }
    if ready {
        return Ok(cli);
    }
    std::fs::create_dir_all(npm_dir).map_err(|source| BenchError::WorkDir {
        dir: npm_dir.to_owned(),
        source,
    })?;
    let spec = format!("{NOTION_PACKAGE}@{NOTION_VERSION}");
    progress(&format!(
        "installing {spec} once: npm install --no-audit --no-fund --prefix {} {spec}",
        npm_dir.display()
    ));
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(npm_dir)
        .arg(&spec)
        .output()
        .map_err(|e| BenchError::Preflight(format!("cannot run npm: {e}")))?;
    if !out.status.success() || !cli.is_file() {
        return Err(BenchError::Preflight(format!(
            "npm install {spec} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(500)
                .collect::<String>()
        )));
    }
    Ok(cli)
}

/// Whether `name --version` runs.
pub fn command_exists(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// [`INTEGRATIONS`] integrations on the sandbox token, each with the largest budget Quire
/// accepts and a workspace; one agent with a token per workspace. Returns the tokens.
async fn provision(cluster: &LocalCluster) -> Result<Vec<String>, BenchError> {
    use crate::audit_commit::admin_ok;
    use reqwest::Method;
    admin_ok(
        cluster,
        Method::POST,
        "/tenants/demo/principals",
        json!({"id": "bench-agent", "display_name": "bench agent"}),
    )
    .await?;
    let mut tokens = Vec::new();
    for k in 0..INTEGRATIONS {
        let id = format!("bench-{k}");
        admin_ok(
            cluster,
            Method::POST,
            "/tenants/demo/integrations",
            json!({"id": id, "display_name": id, "notion_token": SANDBOX_TOKEN,
                   "requests_per_second": BUDGET_RPS, "burst": BUDGET_BURST}),
        )
        .await?;
        admin_ok(
            cluster,
            Method::POST,
            "/tenants/demo/workspaces",
            json!({"id": id, "display_name": id, "integration": id}),
        )
        .await?;
        admin_ok(
            cluster,
            Method::POST,
            "/tenants/demo/principals/bench-agent/workspaces",
            json!({"workspace": id}),
        )
        .await?;
        let token = admin_ok(
            cluster,
            Method::POST,
            "/tenants/demo/tokens",
            json!({"principal": "bench-agent", "workspace": id}),
        )
        .await?;
        tokens.push(
            token["token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| BenchError::Preflight("the token answer has no token".into()))?,
        );
    }
    Ok(tokens)
}

/// A side that is up: where its MCP endpoints are, the tokens, and its processes.
struct Running {
    endpoints: Vec<String>,
    tokens: Vec<String>,
    pids: Vec<u32>,
    server: String,
    _cluster: Option<LocalCluster>,
    _child: Option<Guard>,
}

async fn start_side(
    side: Side,
    spec: &SideBySideSpec,
    sandbox: &str,
    dir: &Path,
    notion_cli: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<Running, BenchError> {
    match side {
        Side::Quire1 | Side::Quire3 => {
            let nodes = if side == Side::Quire1 { 1 } else { 3 };
            let cluster = LocalCluster::up(Spec {
                dir: dir.join(side.label()),
                binary: spec.quire_bin.clone(),
                nodes,
                tls: true,
                fault_injection: false,
                // Every node calls the shared sandbox (the cluster's own one stays idle).
                env: vec![("QUIRE_NOTION_BASE_URL".into(), sandbox.to_owned())],
                sandbox_args: vec!["--rate-limit".into(), "off".into()],
            })
            .await
            .map_err(BenchError::Cluster)?;
            leader(&cluster).await?;
            let tokens = provision(&cluster).await?;
            let endpoints = cluster
                .status
                .nodes
                .iter()
                .map(|n| format!("{}/mcp", n.http))
                .collect();
            let pids = cluster.status.nodes.iter().map(|n| n.pid).collect();
            let server = format!(
                "{} on {nodes} node(s) (mTLS between peers, sled fsync), clients spread over the nodes",
                spec.quire_bin.display()
            );
            progress(&format!("{}: {server}", side.label()));
            Ok(Running {
                endpoints,
                tokens,
                pids,
                server,
                _cluster: Some(cluster),
                _child: None,
            })
        }
        Side::Notion => {
            let cli = notion_cli.ok_or_else(|| {
                BenchError::Preflight("Notion's MCP server is not installed".to_owned())
            })?;
            let port = free_port().map_err(BenchError::Cluster)?;
            let token = format!("quire-bench-{}", std::process::id());
            let server = format!(
                "BASE_URL={sandbox} NOTION_TOKEN={SANDBOX_TOKEN} node {} --transport http --port {port} \
                 --auth-token {token}  (what `npx {NOTION_PACKAGE}@{NOTION_VERSION} --transport http` runs)",
                cli.display()
            );
            progress(&format!("{}: {server}", side.label()));
            let log =
                std::fs::File::create(dir.join("notion-mcp-server.log")).map_err(|source| {
                    BenchError::WorkDir {
                        dir: dir.to_owned(),
                        source,
                    }
                })?;
            let child = Command::new("node")
                .arg(cli)
                .args(["--transport", "http", "--port", &port.to_string()])
                .args(["--auth-token", &token])
                .env("BASE_URL", sandbox)
                .env("NOTION_TOKEN", SANDBOX_TOKEN)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|source| BenchError::WorkDir {
                    dir: dir.to_owned(),
                    source,
                })?)
                .stderr(log)
                .spawn()
                .map_err(|e| BenchError::Preflight(format!("cannot start node: {e}")))?;
            let child = Guard(child);
            wait_http(
                &format!("http://127.0.0.1:{port}/health"),
                "Notion's MCP server",
            )
            .await?;
            Ok(Running {
                endpoints: vec![format!("http://127.0.0.1:{port}/mcp")],
                tokens: vec![token],
                pids: vec![child.0.id()],
                server,
                _cluster: None,
                _child: Some(child),
            })
        }
    }
}

/// Starts the sandbox and each side in turn, runs everything, stops it all.
pub async fn run(
    spec: &SideBySideSpec,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<SideBySideReport, BenchError> {
    spec.validate()?;
    let notion_cli = if spec.sides.contains(&Side::Notion) {
        Some(install_notion_server(&spec.npm_dir, progress)?)
    } else {
        None
    };
    let parent = spec.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("quire-bench-mcp-")
        .tempdir_in(&parent)
        .map_err(|source| BenchError::WorkDir {
            dir: parent.clone(),
            source,
        })?;
    let load_average_start = crate::machine::load_average();

    let port = free_port().map_err(BenchError::Cluster)?;
    let sandbox = format!("http://127.0.0.1:{port}");
    let sandbox_log = std::fs::File::create(dir.path().join("sandbox.log")).map_err(|source| {
        BenchError::WorkDir {
            dir: dir.path().to_owned(),
            source,
        }
    })?;
    progress(&format!(
        "{} sandbox --listen 127.0.0.1:{port} --rate-limit off",
        spec.quire_bin.display()
    ));
    let sandbox_child = Guard(
        Command::new(&spec.quire_bin)
            .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--rate-limit", "off"])
            .stdout(Stdio::null())
            .stderr(sandbox_log)
            .spawn()
            .map_err(|e| BenchError::Preflight(format!("cannot start the sandbox: {e}")))?,
    );
    let sandbox_pid = sandbox_child.0.id();
    wait_http(&format!("{sandbox}/__sandbox/stats"), "the Notion sandbox").await?;
    let fixtures = fixtures(&sandbox).await?;
    progress(&format!(
        "fixtures: page {} (first title match for {SEARCH_QUERY:?}), data source {}",
        fixtures.page_id, fixtures.data_source_id
    ));

    let mut closed = Vec::new();
    let mut open = Vec::new();
    let mut sides = Vec::new();
    for &side in &spec.sides {
        let running = start_side(
            side,
            spec,
            &sandbox,
            dir.path(),
            notion_cli.as_deref(),
            progress,
        )
        .await?;
        let mut pool = SessionPool::new(running.endpoints.clone(), running.tokens.clone())?;
        // One call of each operation first: a broken setup fails loudly, and the sandbox
        // says how many Notion requests a call costs.
        let mut per_call = Vec::new();
        for &op in &spec.ops {
            let mut s = pool.take(1).await?;
            let before = sandbox_requests(&sandbox).await?;
            call(&mut s[0], op.tool(side), op.arguments(side, &fixtures))
                .await
                .map_err(|e| {
                    BenchError::Preflight(format!("{} {}: {e}", side.label(), op.tool(side)))
                })?;
            per_call.push((op, sandbox_requests(&sandbox).await?.saturating_sub(before)));
            drop(pool.workers(s, op.tool(side), &Value::Null));
        }
        for &op in &spec.ops {
            let args = op.arguments(side, &fixtures);
            for &clients in &spec.clients {
                let sessions = pool.take(clients).await?;
                let workers = pool.workers(sessions, op.tool(side), &args);
                progress(&format!(
                    "{} {} ({}), {clients} clients: {:?} warm-up + {:?}",
                    side.label(),
                    op.label(),
                    op.tool(side),
                    spec.warmup,
                    spec.duration
                ));
                let window = CpuWindow::start(
                    running.pids.clone(),
                    sandbox_pid,
                    spec.warmup,
                    spec.duration,
                );
                let result = load::run_closed_loop(&spec.closed_spec(), workers).await?;
                let cpu = window.finish(result.ok).await;
                progress(&format!(
                    "  {:.1} calls/s, p50 {} ms, p99 {} ms, {} errors, server CPU {} ms/call",
                    result.ok_per_sec,
                    report::ms(result.latency_us.p50),
                    report::ms(result.latency_us.p99),
                    result.errors,
                    cpu_ms(cpu.map(|c| c.server_ms_per_call))
                ));
                closed.push(ClosedRow {
                    side,
                    op,
                    tool: op.tool(side),
                    result,
                    cpu,
                });
            }
        }
        let peak_rss_closed_kib = running.pids.iter().map(|&p| peak_rss_kib(p)).sum();
        let op = spec.open_op;
        let args = op.arguments(side, &fixtures);
        for &rate in &spec.open_rates {
            let sessions = pool.take(spec.open_max_outstanding).await?;
            let workers = pool.workers(sessions, op.tool(side), &args);
            progress(&format!(
                "{} {} open loop at {rate} calls/s (at most {} outstanding)",
                side.label(),
                op.label(),
                spec.open_max_outstanding
            ));
            let result = load::run_open_loop(&spec.open_spec(rate), workers).await?;
            progress(&format!(
                "  {:.1} calls/s, p50 {} ms, p99 {} ms, {} dropped, {} errors",
                result.ok_per_sec,
                report::ms(result.latency_us.p50),
                report::ms(result.latency_us.p99),
                result.dropped,
                result.errors
            ));
            open.push(OpenRow { side, op, result });
        }
        let peak_rss_kib = running.pids.iter().map(|&p| peak_rss_kib(p)).sum();
        progress(&format!(
            "{}: peak RSS {:.1} MiB over {} process(es)",
            side.label(),
            peak_rss_kib as f64 / 1024.0,
            running.pids.len()
        ));
        sides.push(SideFacts {
            side,
            server: running.server.clone(),
            pids: running.pids.clone(),
            peak_rss_kib,
            peak_rss_closed_kib,
            notion_requests_per_call: per_call,
        });
        drop(pool);
        drop(running);
    }
    Ok(SideBySideReport {
        benchmark: "mcp-side-by-side",
        command,
        git_commit: crate::machine::git_commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
        machine: Machine::current(),
        load_average_start,
        load_average_end: crate::machine::load_average(),
        quire_bin: spec
            .quire_bin
            .canonicalize()
            .unwrap_or_else(|_| spec.quire_bin.clone()),
        quire_bin_modified: crate::machine::modified_utc(&spec.quire_bin),
        notion_server: format!("{NOTION_PACKAGE}@{NOTION_VERSION}"),
        node_version: node_version(),
        fixtures,
        warmup_secs: spec.warmup.as_secs_f64(),
        duration_secs: spec.duration.as_secs_f64(),
        closed,
        open,
        sides,
    })
}

/// A CPU figure in ms with two decimals, `-` when unknown.
fn cpu_ms(ms: Option<f64>) -> String {
    ms.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

/// A ratio of Quire's figure to Notion's at one operation and concurrency level.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ratio {
    pub side: Side,
    pub op: Op,
    pub clients: usize,
    /// Quire's calls/s over Notion's.
    pub throughput: f64,
    /// Quire's p99 over Notion's (below 1: Quire's p99 is lower).
    pub p99: f64,
    /// Quire's server CPU per call over Notion's (below 1: Quire spends less CPU a call);
    /// NaN when either side's CPU is unknown.
    pub cpu_per_call: f64,
}

impl SideBySideReport {
    /// Each Quire side against Notion's server, where both ran the same op and level.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        for q in self.closed.iter().filter(|r| r.side != Side::Notion) {
            let Some(n) = self.closed.iter().find(|n| {
                n.side == Side::Notion && n.op == q.op && n.result.writers == q.result.writers
            }) else {
                continue;
            };
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            out.push(Ratio {
                side: q.side,
                op: q.op,
                clients: q.result.writers,
                throughput: div(q.result.ok_per_sec, n.result.ok_per_sec),
                p99: div(
                    q.result.latency_us.p99 as f64,
                    n.result.latency_us.p99 as f64,
                ),
                cpu_per_call: match (q.cpu, n.cpu) {
                    (Some(a), Some(b)) => div(a.server_ms_per_call, b.server_ms_per_call),
                    _ => f64::NAN,
                },
            });
        }
        out
    }

    fn mapping(&self) -> String {
        let mut out = String::from(
            "| operation | Quire tool | Notion server tool | Notion requests per call (Quire / Notion server) |\n|---|---|---|---|\n",
        );
        let ops: Vec<Op> = self.closed.iter().fold(Vec::new(), |mut v, r| {
            if !v.contains(&r.op) {
                v.push(r.op);
            }
            v
        });
        let per_call = |side: Side, op: Op| {
            self.sides
                .iter()
                .filter(|s| s.side == side)
                .flat_map(|s| s.notion_requests_per_call.iter())
                .find(|(o, _)| *o == op)
                .map_or("-".to_owned(), |(_, n)| n.to_string())
        };
        let quire = if self.sides.iter().any(|s| s.side == Side::Quire1) {
            Side::Quire1
        } else {
            Side::Quire3
        };
        for op in ops {
            let _ = writeln!(
                out,
                "| {} | `{}` | `{}` | {} / {} |",
                op.label(),
                op.tool(Side::Quire1),
                op.tool(Side::Notion),
                per_call(quire, op),
                per_call(Side::Notion, op)
            );
        }
        out
    }

    fn closed_table(&self) -> String {
        let mut out = String::from(
            "| operation | side | clients | calls/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | errors | server CPU ms/call | server cores busy | sandbox CPU ms/call |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.closed {
            let l = &r.result.latency_us;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.op.label(),
                r.side.label(),
                r.result.writers,
                r.result.ok_per_sec,
                report::ms(l.p50),
                report::ms(l.p95),
                report::ms(l.p99),
                report::ms(l.p999),
                report::ms(l.max),
                r.result.errors,
                cpu_ms(r.cpu.map(|c| c.server_ms_per_call)),
                r.cpu
                    .map_or("-".to_owned(), |c| format!("{:.2}", c.server_cores)),
                cpu_ms(r.cpu.map(|c| c.sandbox_ms_per_call)),
            );
        }
        out
    }

    fn open_table(&self) -> String {
        let mut out = String::from(
            "| side | operation | offered calls/s | answered calls/s | p50 ms | p99 ms | p99.9 ms | dropped | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.open {
            let l = &r.result.latency_us;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
                r.side.label(),
                r.op.label(),
                r.result.target_rate,
                r.result.ok_per_sec,
                report::ms(l.p50),
                report::ms(l.p99),
                report::ms(l.p999),
                r.result.dropped,
                r.result.errors
            );
        }
        out
    }

    fn ratio_lines(&self) -> Vec<String> {
        self.ratios()
            .iter()
            .map(|r| {
                format!(
                    "{} / notion-mcp-server, {} at {} clients: {:.2}x the calls/s, p99 {:.2}x, server CPU per call {:.2}x",
                    r.side.label(),
                    r.op.label(),
                    r.clients,
                    r.throughput,
                    r.p99,
                    r.cpu_per_call
                )
            })
            .collect()
    }

    fn notes(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "setup: every side in this run on this machine against one Notion sandbox (rate limit off, \
             seeded demo workspace: page {}, data source {}); MCP Streamable HTTP sessions, closed loop, \
             {}s warm-up + {}s measured per level; Quire's clients spread over {} integrations on the sandbox token, \
             each with the largest budget Quire accepts (1000 requests/s per node); Quire authorizes each call and answers after its audit record committed",
            self.fixtures.page_id,
            self.fixtures.data_source_id,
            self.warmup_secs,
            self.duration_secs,
            INTEGRATIONS
        )];
        lines.push(
            "CPU: user + system time of a side's server processes (`/proc/PID/stat`, a cluster's nodes summed) \
             and of the shared sandbox over each level's measured window, divided by the calls answered in it; \
             unlike calls/s it does not depend on what else shares the machine's two cores"
                .to_owned(),
        );
        for s in &self.sides {
            lines.push(format!(
                "{}: peak RSS {:.1} MiB after the closed loop, {:.1} MiB at the end ({} process(es), VmHWM summed); {}",
                s.side.label(),
                s.peak_rss_closed_kib as f64 / 1024.0,
                s.peak_rss_kib as f64 / 1024.0,
                s.pids.len(),
                s.server
            ));
        }
        for r in self.closed.iter() {
            for e in &r.result.error_samples {
                lines.push(format!(
                    "error ({} {} {} clients): {e}",
                    r.side.label(),
                    r.op.label(),
                    r.result.writers
                ));
            }
        }
        lines.push(format!(
            "Notion's server: {} on node {}",
            self.notion_server, self.node_version
        ));
        lines.extend(admin_writes::ran_on(
            &self.machine,
            (&self.load_average_start, &self.load_average_end),
            None,
            &self.git_commit,
            (&self.quire_bin, &self.quire_bin_modified),
            &self.command,
        ));
        lines
    }

    /// The terminal version (the tables are Markdown too: they read well in a terminal).
    pub fn to_text(&self) -> String {
        let mut out = String::from("MCP side-by-side\n");
        out.push_str(&self.mapping());
        out.push('\n');
        out.push_str(&self.closed_table());
        if !self.open.is_empty() {
            out.push('\n');
            out.push_str(&self.open_table());
        }
        out.push('\n');
        for line in self.ratio_lines().into_iter().chain(self.notes()) {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The same as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("### MCP side-by-side: Quire and Notion's local MCP server\n\n");
        out.push_str("Equivalent operations:\n\n");
        out.push_str(&self.mapping());
        out.push_str("\nClosed loop:\n\n");
        out.push_str(&self.closed_table());
        let ratios = self.ratio_lines();
        if !ratios.is_empty() {
            out.push_str("\nRatios (Quire / Notion's server):\n\n");
            for line in ratios {
                let _ = writeln!(out, "- {line}");
            }
        }
        if !self.open.is_empty() {
            out.push_str("\nOpen loop (latency from each call's intended start):\n\n");
            out.push_str(&self.open_table());
        }
        out.push('\n');
        for line in self.notes() {
            let _ = writeln!(out, "- {line}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notion_errors_in_tool_text_are_failures() {
        let err = json!({"content": [{"type": "text", "text":
            "{\"status\":404,\"code\":\"object_not_found\",\"message\":\"x\",\"object\":\"error\"}"}]});
        assert_eq!(
            notion_error(&err).as_deref(),
            Some("Notion error 404: object_not_found")
        );
        let page =
            json!({"content": [{"type": "text", "text": "{\"object\":\"page\",\"id\":\"x\"}"}]});
        assert_eq!(notion_error(&page), None);
        let markdown = json!({"content": [{"type": "text", "text": "# Roadmap"}]});
        assert_eq!(notion_error(&markdown), None);
    }

    #[test]
    fn reads_vm_hwm() {
        assert_eq!(
            vm_hwm_kib("Name:\tquire\nVmPeak:\t 9 kB\nVmHWM:\t   52340 kB\nVmRSS:\t 1 kB\n"),
            52_340
        );
        assert_eq!(vm_hwm_kib("Name: x\n"), 0);
        assert!(peak_rss_kib(std::process::id()) > 0 || !Path::new("/proc").exists());
    }

    #[test]
    fn both_sides_get_equivalent_arguments() {
        let f = Fixtures {
            page_id: "p".into(),
            data_source_id: "d".into(),
        };
        assert_eq!(
            Op::Page.arguments(Side::Notion, &f),
            json!({"page_id": "p"})
        );
        assert_eq!(Op::Page.arguments(Side::Quire3, &f), json!({"id": "p"}));
        for op in [Op::Query, Op::Search] {
            assert_eq!(
                op.arguments(Side::Notion, &f),
                op.arguments(Side::Quire1, &f)
            );
        }
        assert_eq!(Op::Search.tool(Side::Notion), "API-post-search");
        assert_eq!(Op::Query.tool(Side::Quire1), "notion-query-data-source");
    }
}
