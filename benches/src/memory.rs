//! The memory benchmark: resident memory (`VmRSS` from `/proc/PID/status`) of one node
//! (a one-node cluster) idle, after creating tenants through the admin API, and after
//! opening MCP sessions that stay open; the cost per tenant and per session is the growth
//! over the step divided by the count. RSS includes what the allocator keeps and sled's
//! page cache, so read the per-item figures as what a node's footprint grows by, not as
//! the size of a data structure.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::admin_writes::{self, RunContext, RunOpts, proc_status_kib};
use crate::mcp_client::McpSession;
use crate::raft_commit::{BenchError, leader};
use crate::report::{Column, Figures};

/// Tenants a cluster may hold (`quire_raft::command::MAX_TENANTS`); the demo tenant is one.
pub const MAX_TENANTS: usize = quire_raft::command::MAX_TENANTS;
/// Sessions one tenant may hold open (`mcp.max_sessions_per_tenant`, default).
pub const MAX_SESSIONS: usize = 1_000;
/// Pause before each reading, so background work settles.
const SETTLE: Duration = Duration::from_secs(2);
/// One request taking longer than this fails the run.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// Tenants to create (at most 9,999: a cluster holds 10,000 with the demo tenant).
    #[arg(long, default_value_t = MAX_TENANTS - 1)]
    pub tenants: usize,
    /// MCP sessions to open and keep (at most 1,000, the per-tenant limit).
    #[arg(long, default_value_t = MAX_SESSIONS)]
    pub sessions: usize,
    /// Requests in flight at once while creating (below the admin API's 64).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[command(flatten)]
    pub run: RunOpts,
}

/// Everything a run measured (KiB).
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub benchmark: &'static str,
    #[serde(flatten)]
    pub context: RunContext,
    pub tenants: usize,
    pub sessions: usize,
    pub rss_idle_kib: u64,
    pub rss_tenants_kib: u64,
    pub rss_sessions_kib: u64,
    /// Peak resident memory (`VmHWM`) at the end.
    pub peak_kib: u64,
    /// Seconds the tenant creations and the session openings took.
    pub tenants_secs: f64,
    pub sessions_secs: f64,
}

/// Runs `jobs` (each an async step) `concurrency` at a time; the first error stops it.
pub async fn in_batches<F, Fut>(count: usize, concurrency: usize, job: F) -> Result<(), BenchError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        if set.len() >= concurrency
            && let Some(done) = set.join_next().await
        {
            done.map_err(|e| BenchError::Preflight(e.to_string()))??;
        }
        set.spawn(job(i));
    }
    while let Some(done) = set.join_next().await {
        done.map_err(|e| BenchError::Preflight(e.to_string()))??;
    }
    Ok(())
}

/// Runs the benchmark. `progress` gets one line per step. The sessions stay open until
/// the last reading.
pub async fn run(
    args: &MemoryArgs,
    quire_bin: PathBuf,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<MemoryReport, BenchError> {
    if args.tenants == 0
        || args.tenants >= MAX_TENANTS
        || args.sessions == 0
        || args.sessions > MAX_SESSIONS
        || args.concurrency == 0
        || args.concurrency > 64
    {
        return Err(BenchError::Levels(vec![
            args.tenants,
            args.sessions,
            args.concurrency,
        ]));
    }
    let (dir, cluster) =
        admin_writes::start_cluster(&quire_bin, args.run.work_dir.as_deref(), 1, vec![], vec![])
            .await?;
    let mut context = RunContext::start(command, &quire_bin, dir.path());
    leader(&cluster).await?;
    let node = cluster.node(1).map_err(BenchError::Cluster)?.clone();
    let pid = node.pid;
    let http = admin_writes::admin_client(TIMEOUT)?;
    tokio::time::sleep(SETTLE).await;
    let rss_idle_kib = proc_status_kib(pid, "VmRSS");
    progress(&format!(
        "idle: {:.1} MiB; creating {} tenants, {} at a time",
        rss_idle_kib as f64 / 1024.0,
        args.tenants,
        args.concurrency
    ));

    let started = tokio::time::Instant::now();
    let url = format!("{}/admin/v1/tenants", node.http);
    let token = cluster.status.admin_token.clone();
    in_batches(args.tenants, args.concurrency, |i| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            admin_writes::request_ok(
                &http,
                Method::POST,
                &url,
                &token,
                Some(&json!({"id": format!("m-{i:05}"), "display_name": "memory bench"})),
            )
            .await
            .map(|_| ())
        }
    })
    .await?;
    let tenants_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_tenants_kib = proc_status_kib(pid, "VmRSS");
    progress(&format!(
        "{} tenants in {tenants_secs:.1} s: {:.1} MiB; opening {} MCP sessions",
        args.tenants,
        rss_tenants_kib as f64 / 1024.0,
        args.sessions
    ));

    let started = tokio::time::Instant::now();
    let mcp_http = reqwest::Client::builder()
        .build()
        .map_err(BenchError::Http)?;
    let mcp_url = format!("{}/mcp", node.http);
    let sessions = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.sessions)));
    in_batches(args.sessions, args.concurrency, |_| {
        let (http, url, token, sessions) = (
            mcp_http.clone(),
            mcp_url.clone(),
            cluster.status.mcp_token.clone(),
            sessions.clone(),
        );
        async move {
            let s = McpSession::open(http, &url, &token, TIMEOUT)
                .await
                .map_err(|e| BenchError::Preflight(format!("opening an MCP session: {e}")))?;
            sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(s);
            Ok(())
        }
    })
    .await?;
    let sessions_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_sessions_kib = proc_status_kib(pid, "VmRSS");
    let peak_kib = proc_status_kib(pid, "VmHWM");
    progress(&format!(
        "{} sessions in {sessions_secs:.1} s: {:.1} MiB",
        args.sessions,
        rss_sessions_kib as f64 / 1024.0
    ));
    drop(sessions);
    drop(cluster);
    context.finish();
    Ok(MemoryReport {
        benchmark: "memory",
        context,
        tenants: args.tenants,
        sessions: args.sessions,
        rss_idle_kib,
        rss_tenants_kib,
        rss_sessions_kib,
        peak_kib,
        tenants_secs,
        sessions_secs,
    })
}

/// `(to - from) / count` in KiB (negative when memory was given back).
pub fn per_item_kib(from: u64, to: u64, count: usize) -> f64 {
    (to as f64 - from as f64) / count.max(1) as f64
}

impl MemoryReport {
    pub fn per_tenant_kib(&self) -> f64 {
        per_item_kib(self.rss_idle_kib, self.rss_tenants_kib, self.tenants)
    }

    pub fn per_session_kib(&self) -> f64 {
        per_item_kib(self.rss_tenants_kib, self.rss_sessions_kib, self.sessions)
    }
}

impl Figures for MemoryReport {
    const TITLE: &'static str = "Memory benchmark (one node)";
    const COLUMNS: &'static [Column] = &[
        Column::left("step", 22),
        Column::right("RSS MiB", 9),
        Column::right("delta MiB", 10),
        Column::right("per item", 20),
    ];
    type Row = [String; 4];

    fn rows(&self) -> Vec<[String; 4]> {
        let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
        vec![
            [
                "idle".into(),
                mib(self.rss_idle_kib),
                "-".into(),
                "-".into(),
            ],
            [
                format!("+ {} tenants", self.tenants),
                mib(self.rss_tenants_kib),
                format!(
                    "{:.1}",
                    (self.rss_tenants_kib as f64 - self.rss_idle_kib as f64) / 1024.0
                ),
                format!("{:.2} KiB / tenant", self.per_tenant_kib()),
            ],
            [
                format!("+ {} MCP sessions", self.sessions),
                mib(self.rss_sessions_kib),
                format!(
                    "{:.1}",
                    (self.rss_sessions_kib as f64 - self.rss_tenants_kib as f64) / 1024.0
                ),
                format!("{:.2} KiB / session", self.per_session_kib()),
            ],
        ]
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "peak (VmHWM) {:.1} MiB; tenants created in {:.1} s, sessions opened in {:.1} s",
                self.peak_kib as f64 / 1024.0,
                self.tenants_secs,
                self.sessions_secs
            ),
            "setup: a one-node cluster (sled fsync); tenants created through the admin API (one committed \
             write each), MCP sessions opened by one agent token (initialize + initialized; each session \
             is a committed entry of the replicated session table) and kept open; VmRSS read 2 s after each step"
                .to_owned(),
        ];
        lines.extend(self.context.lines());
        lines
    }
}

/// `quire-bench memory`.
pub async fn main(args: MemoryArgs, command: String) -> anyhow::Result<()> {
    if args.tenants == 0 || args.tenants >= MAX_TENANTS {
        bail!("--tenants must be 1 to {}", MAX_TENANTS - 1);
    }
    if args.sessions == 0 || args.sessions > MAX_SESSIONS {
        bail!("--sessions must be 1 to {MAX_SESSIONS}");
    }
    let quire_bin = admin_writes::quire_bin(args.run.quire_bin.clone())?;
    let report = run(&args, quire_bin, command, &mut admin_writes::progress).await?;
    args.run.emit(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_item_growth() {
        assert_eq!(per_item_kib(1_000, 3_000, 1_000), 2.0);
        assert_eq!(per_item_kib(3_000, 2_000, 500), -2.0);
        assert_eq!(per_item_kib(0, 10, 0), 10.0);
    }
}
