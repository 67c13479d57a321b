//! The budget-share benchmark: how much of one integration's Notion budget a 3-node cluster
//! uses, and whether Notion answers 429, when MCP clients on every node ask for far more
//! than the budget. The Notion sandbox runs with its own rate limit on (Notion's published
//! limit: 3 requests/s on average, bursts allowed), so a request over it is answered 429.
//!
//! One integration with budget R/s (burst B) serves a workspace; an agent's MCP sessions,
//! `--clients-per-node` on each node, call `notion-get-self` (one Notion request per call)
//! closed loop. After the warm-up the sandbox's counters are reset, and at the end of the
//! measured window read (`GET /__sandbox/stats`): requests it admitted, requests it answered
//! 429, and the most it admitted in any one second.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::admin_writes::{self, RunContext, RunOpts, request_ok};
use crate::load::{self, LoadResult, LoadSpec, Worker};
use crate::mcp_client::McpSession;
use crate::raft_commit::{BenchError, NODES, leader};
use crate::report::{Column, Figures};

/// The tool every client calls (one Notion request).
pub const TOOL: &str = crate::audit_commit::TOOL;
/// One tool call taking longer than this counts as an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// The sandbox integration whose token the bench integration uses.
const SANDBOX_INTEGRATION: &str = "alpha";

#[derive(clap::Args, Debug, Clone)]
pub struct BudgetShareArgs {
    /// The integration's budget, requests/s.
    #[arg(long, default_value_t = 3)]
    pub budget: u32,
    /// The integration's burst.
    #[arg(long, default_value_t = 5)]
    pub burst: u32,
    /// MCP clients (closed loop) on each of the 3 nodes.
    #[arg(long, default_value_t = 4)]
    pub clients_per_node: usize,
    /// The sandbox's own limit, requests/s per integration (`quire sandbox --rate-limit`).
    #[arg(long, default_value = "3")]
    pub sandbox_rate_limit: String,
    /// The sandbox's bucket capacity (`quire sandbox --burst`).
    #[arg(long, default_value_t = 10)]
    pub sandbox_burst: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Seconds before measuring starts.
    #[arg(long, default_value_t = 3)]
    pub warmup_secs: u64,
    #[command(flatten)]
    pub run: RunOpts,
}

/// A client: one MCP session calling [`TOOL`] in a loop.
struct Caller {
    session: McpSession,
}

impl Worker for Caller {
    async fn call(&mut self) -> Result<(), String> {
        self.session
            .call_tool(TOOL, json!({}))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The sandbox's counters for the integration over the measured window.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct SandboxCounts {
    /// Requests admitted (not answered 429).
    pub requests: u64,
    /// Requests answered 429.
    pub rate_limited: u64,
    /// Most requests admitted in any one second.
    pub max_per_second: u64,
    /// Seconds between the reset and the read.
    pub window_secs: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetShareReport {
    pub benchmark: &'static str,
    #[serde(flatten)]
    pub context: RunContext,
    pub nodes: usize,
    pub budget: u32,
    pub burst: u32,
    pub sandbox_rate_limit: String,
    pub sandbox_burst: u32,
    pub clients_per_node: usize,
    pub sandbox: SandboxCounts,
    /// Requests admitted per second over the budget.
    pub share_of_budget: f64,
    /// The MCP side: tool calls answered, failed, latency.
    pub calls: LoadResult,
}

/// Creates the integration (budget R, burst B), a workspace on it, an agent and its token.
async fn provision(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    budget: u32,
    burst: u32,
) -> Result<String, BenchError> {
    let base = format!("{node_http}/admin/v1/tenants/demo");
    let steps = [
        (
            "integrations",
            json!({"id": "share", "display_name": "budget share", "notion_token": "secret_sandbox_alpha",
                   "requests_per_second": budget, "burst": burst}),
        ),
        (
            "workspaces",
            json!({"id": "share", "display_name": "budget share", "integration": "share"}),
        ),
        (
            "principals",
            json!({"id": "share-agent", "display_name": "budget share agent"}),
        ),
        (
            "principals/share-agent/workspaces",
            json!({"workspace": "share"}),
        ),
    ];
    for (path, body) in steps {
        request_ok(
            http,
            Method::POST,
            &format!("{base}/{path}"),
            token,
            Some(&body),
        )
        .await?;
    }
    let issued = request_ok(
        http,
        Method::POST,
        &format!("{base}/tokens"),
        token,
        Some(&json!({"principal": "share-agent", "workspace": "share"})),
    )
    .await?;
    issued["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Preflight("the token answer has no token".into()))
}

/// The alpha integration's counters in a `/__sandbox/stats` answer.
pub fn counts_of(stats: &Value) -> SandboxCounts {
    let i = &stats["integrations"][SANDBOX_INTEGRATION];
    SandboxCounts {
        requests: i["requests"].as_u64().unwrap_or(0),
        rate_limited: i["rate_limited"].as_u64().unwrap_or(0),
        max_per_second: i["max_per_second"].as_u64().unwrap_or(0),
        window_secs: 0.0,
    }
}

/// Runs the benchmark. `progress` gets one line per step.
pub async fn run(
    args: &BudgetShareArgs,
    quire_bin: PathBuf,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<BudgetShareReport, BenchError> {
    let load_spec = LoadSpec {
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        op_timeout: CALL_TIMEOUT,
    };
    load_spec.validate()?;
    if args.clients_per_node == 0 || args.clients_per_node * NODES > load::MAX_WRITERS {
        return Err(BenchError::Levels(vec![args.clients_per_node]));
    }
    let sandbox_args = vec![
        "--rate-limit".to_owned(),
        args.sandbox_rate_limit.clone(),
        "--burst".to_owned(),
        args.sandbox_burst.to_string(),
    ];
    let (dir, cluster) = admin_writes::start_cluster(
        &quire_bin,
        args.run.work_dir.as_deref(),
        NODES,
        vec![],
        sandbox_args,
    )
    .await?;
    let mut context = RunContext::start(command, &quire_bin, dir.path());
    let admin = admin_writes::admin_client(Duration::from_secs(30))?;
    let first = leader(&cluster).await?;
    let first_http = cluster
        .node(first)
        .map_err(BenchError::Cluster)?
        .http
        .clone();
    let token = provision(
        &admin,
        &first_http,
        &cluster.status.admin_token,
        args.budget,
        args.burst,
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(load::MAX_WRITERS)
        .build()
        .map_err(BenchError::Http)?;
    let urls: Vec<String> = cluster
        .status
        .nodes
        .iter()
        .map(|n| format!("{}/mcp", n.http))
        .collect();
    let mut workers = Vec::new();
    for url in &urls {
        for _ in 0..args.clients_per_node {
            let session = McpSession::open(http.clone(), url, &token, CALL_TIMEOUT)
                .await
                .map_err(|e| BenchError::Preflight(e.to_string()))?;
            workers.push(Caller { session });
        }
    }
    // One call first, so a broken setup fails loudly instead of measuring errors.
    let mut check = McpSession::open(http.clone(), &urls[0], &token, CALL_TIMEOUT)
        .await
        .map_err(|e| BenchError::Preflight(e.to_string()))?;
    check
        .call_tool(TOOL, json!({}))
        .await
        .map_err(|e| BenchError::Preflight(e.to_string()))?;
    progress(&format!(
        "budget {}/s burst {} for {} clients over {} nodes (sandbox limit {}/s, burst {}): {:?} warm-up + {:?}",
        args.budget,
        args.burst,
        workers.len(),
        urls.len(),
        args.sandbox_rate_limit,
        args.sandbox_burst,
        load_spec.warmup,
        load_spec.duration
    ));
    let stats_url = format!("{}/__sandbox/stats", cluster.status.sandbox_url);
    let sandbox = {
        let (http, stats_url) = (http.clone(), stats_url.clone());
        let (warmup, duration) = (load_spec.warmup, load_spec.duration);
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            http.post(format!("{stats_url}/reset"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let reset_at = tokio::time::Instant::now();
            tokio::time::sleep(duration).await;
            let stats: Value = http
                .get(&stats_url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let mut counts = counts_of(&stats);
            counts.window_secs = reset_at.elapsed().as_secs_f64();
            Ok::<_, String>(counts)
        })
    };
    let calls = load::run_closed_loop(&load_spec, workers).await?;
    let counts = sandbox
        .await
        .map_err(|e| BenchError::Preflight(e.to_string()))?
        .map_err(|e| BenchError::Preflight(format!("reading the sandbox's stats: {e}")))?;
    drop(cluster);
    context.finish();
    let share_of_budget = if counts.window_secs > 0.0 {
        counts.requests as f64 / counts.window_secs / f64::from(args.budget)
    } else {
        0.0
    };
    let report = BudgetShareReport {
        benchmark: "budget-share",
        context,
        nodes: NODES,
        budget: args.budget,
        burst: args.burst,
        sandbox_rate_limit: args.sandbox_rate_limit.clone(),
        sandbox_burst: args.sandbox_burst,
        clients_per_node: args.clients_per_node,
        sandbox: counts,
        share_of_budget,
        calls,
    };
    progress(&report.headline());
    Ok(report)
}

impl BudgetShareReport {
    /// Notion requests served per second.
    pub fn served_per_sec(&self) -> f64 {
        if self.sandbox.window_secs > 0.0 {
            self.sandbox.requests as f64 / self.sandbox.window_secs
        } else {
            0.0
        }
    }

    /// One line: share of the budget, 429s, max in a second.
    pub fn headline(&self) -> String {
        format!(
            "{:.2} Notion requests/s served for a budget of {}/s: {:.0}% of the budget used, {} answered 429 \
             (goal: at least 95% and 0), at most {} in any one second",
            self.served_per_sec(),
            self.budget,
            self.share_of_budget * 100.0,
            self.sandbox.rate_limited,
            self.sandbox.max_per_second
        )
    }
}

impl Figures for BudgetShareReport {
    const TITLE: &'static str = "Budget-share benchmark";
    // The table is printed in the Markdown only (see `to_text`), so no column has a width.
    const COLUMNS: &'static [Column] = &[
        Column::right("budget /s", 0),
        Column::right("served /s", 0),
        Column::right("share of budget", 0),
        Column::right("429s", 0),
        Column::right("max in 1 s", 0),
        Column::right("calls ok", 0),
        Column::right("calls failed", 0),
    ];
    type Row = [String; 7];

    fn rows(&self) -> Vec<[String; 7]> {
        vec![[
            self.budget.to_string(),
            format!("{:.2}", self.served_per_sec()),
            format!("{:.0}%", self.share_of_budget * 100.0),
            self.sandbox.rate_limited.to_string(),
            self.sandbox.max_per_second.to_string(),
            self.calls.ok.to_string(),
            self.calls.errors.to_string(),
        ]]
    }

    /// The terminal shows the title and the lines, without the table.
    fn to_text(&self) -> String {
        let mut out = format!("{}\n", Self::TITLE);
        for line in self.lines() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    fn lines(&self) -> Vec<String> {
        let c = &self.calls;
        let mut lines = vec![
            self.headline(),
            format!(
                "sandbox over {:.1} s: {} requests admitted, {} answered 429",
                self.sandbox.window_secs, self.sandbox.requests, self.sandbox.rate_limited
            ),
            format!(
                "MCP side: {} calls answered ({:.2}/s), {} failed, p50 {} ms, p99 {} ms, max {} ms",
                c.ok,
                c.ok_per_sec,
                c.errors,
                crate::report::ms(c.latency_us.p50),
                crate::report::ms(c.latency_us.p99),
                crate::report::ms(c.latency_us.max)
            ),
        ];
        for e in &c.error_samples {
            lines.push(format!("error: {e}"));
        }
        lines.push(format!(
            "setup: {} quire processes on loopback; one integration, budget {}/s burst {}; {} MCP clients on each \
             node calling `{TOOL}` (one Notion request) closed loop; the sandbox's own limit {}/s burst {} \
             (Notion's published average is 3/s); each node runs its own limiter for the integration",
            self.nodes,
            self.budget,
            self.burst,
            self.clients_per_node,
            self.sandbox_rate_limit,
            self.sandbox_burst
        ));
        lines.extend(self.context.lines());
        lines
    }
}

/// `quire-bench budget-share`.
pub async fn main(args: BudgetShareArgs, command: String) -> anyhow::Result<()> {
    if args.duration_secs == 0 || args.budget == 0 {
        bail!("--duration-secs and --budget must be at least 1");
    }
    let quire_bin = admin_writes::quire_bin(args.run.quire_bin.clone())?;
    let report = run(&args, quire_bin, command, &mut admin_writes::progress).await?;
    args.run.emit(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_stats_are_read_for_alpha() {
        let stats = json!({"integrations": {
            "alpha": {"requests": 60, "rate_limited": 2, "max_per_second": 8},
            "beta": {"requests": 1, "rate_limited": 0, "max_per_second": 1}}});
        let c = counts_of(&stats);
        assert_eq!((c.requests, c.rate_limited, c.max_per_second), (60, 2, 8));
        assert_eq!(counts_of(&json!({})), SandboxCounts::default());
    }
}
