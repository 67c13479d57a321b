//! The audit group-commit benchmark: audited tool calls per second on a 3-process loopback
//! cluster, where every call answers only after its audit record is committed through Raft
//! (so calls/s is committed audit records/s), with the audit batcher grouping records
//! (`limits.audit_max_batch`, default 512) against one record per Raft entry (batch 1), both
//! sides in the same run on the same machine.
//!
//! The clients are real MCP sessions (Streamable HTTP) spread over the three nodes, closed
//! loop, each calling `notion-get-self` (one Notion request to the sandbox, its rate limit
//! off, the integration's budget at its maximum), so the work per call is what an agent's
//! cheapest call costs: bearer auth, the role decision, the limiter, the Notion request, and
//! the audit commit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quire_node::local_cluster::{LocalCluster, Spec};
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use crate::admin_writes;
use crate::load::{self, LoadResult, LoadSpec, MAX_WRITERS, Worker};
use crate::machine::Machine;
use crate::mcp_client::McpSession;
use crate::raft_commit::{BenchError, NODES, filesystem_of, leader};
use crate::report;

/// One tool call taking longer than this counts as an error.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The tool every client calls.
pub const TOOL: &str = "notion-get-self";
/// Most concurrency levels or batch sizes in one run.
pub const MAX_CHOICES: usize = 8;

/// What to run.
#[derive(Debug, Clone)]
pub struct AuditCommitSpec {
    pub quire_bin: PathBuf,
    /// Concurrency levels (MCP clients), run in this order on each side's cluster.
    pub clients: Vec<usize>,
    /// The sides: `limits.audit_max_batch` of each cluster.
    pub batches: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    pub work_dir: Option<PathBuf>,
}

impl AuditCommitSpec {
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |v: &[usize], max: usize| {
            v.is_empty() || v.len() > MAX_CHOICES || v.iter().any(|&x| x == 0 || x > max)
        };
        if bad(&self.clients, MAX_WRITERS) || bad(&self.batches, quire_raft::audit::MAX_AUDIT_BATCH)
        {
            return Err(BenchError::Levels(
                self.clients.iter().chain(&self.batches).copied().collect(),
            ));
        }
        self.load_spec().validate()?;
        if !self.quire_bin.is_file() {
            return Err(BenchError::MissingBinary(self.quire_bin.clone()));
        }
        Ok(())
    }

    fn load_spec(&self) -> LoadSpec {
        LoadSpec {
            warmup: self.warmup,
            duration: self.duration,
            op_timeout: CALL_TIMEOUT,
        }
    }
}

/// One side (one batch size) at one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct AuditLevel {
    pub max_batch: usize,
    #[serde(flatten)]
    pub result: LoadResult,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct AuditCommitReport {
    pub benchmark: &'static str,
    pub command: String,
    pub git_commit: String,
    pub machine: Machine,
    pub load_average_start: String,
    pub load_average_end: String,
    pub quire_bin: PathBuf,
    pub quire_bin_modified: String,
    pub data_filesystem: String,
    pub nodes: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub levels: Vec<AuditLevel>,
}

/// A client: one MCP session on one node, calling [`TOOL`] in a loop.
pub struct ToolCaller {
    session: McpSession,
}

impl Worker for ToolCaller {
    async fn call(&mut self) -> Result<(), String> {
        self.session
            .call_tool(TOOL, json!({}))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

pub async fn admin_ok(
    cluster: &LocalCluster,
    method: Method,
    path: &str,
    body: Value,
) -> Result<Value, BenchError> {
    match cluster.admin(1, method.clone(), path, Some(body)).await {
        Ok((status, v)) if (200..300).contains(&status) => Ok(v),
        Ok((status, v)) => Err(BenchError::Preflight(format!(
            "{method} {path}: {status} {v}"
        ))),
        Err(e) => Err(BenchError::Cluster(e)),
    }
}

/// The integration every call uses (in the demo tenant).
const INTEGRATION: &str = "bench";
/// Longest wait for the integration's shard to have an owner that holds still.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An integration with the largest budget, a workspace on it, an agent and its token.
pub async fn provision(cluster: &LocalCluster) -> Result<String, BenchError> {
    admin_ok(
        cluster,
        Method::POST,
        "/tenants/demo/integrations",
        json!({"id": INTEGRATION, "display_name": "bench", "notion_token": "secret_sandbox_alpha",
               "requests_per_second": 1000, "burst": 10000}),
    )
    .await?;
    admin_ok(
        cluster,
        Method::POST,
        "/tenants/demo/workspaces",
        json!({"id": "bench", "display_name": "bench", "integration": "bench"}),
    )
    .await?;
    admin_ok(
        cluster,
        Method::POST,
        "/tenants/demo/principals",
        json!({"id": "bench-agent", "display_name": "bench agent"}),
    )
    .await?;
    admin_ok(
        cluster,
        Method::POST,
        "/tenants/demo/principals/bench-agent/workspaces",
        json!({"workspace": "bench"}),
    )
    .await?;
    let token = admin_ok(
        cluster,
        Method::POST,
        "/tenants/demo/tokens",
        json!({"principal": "bench-agent", "workspace": "bench"}),
    )
    .await?;
    token["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Preflight("the token answer has no token".into()))
}

/// Starts one cluster per side, runs every level on it, stops it.
pub async fn run(
    spec: &AuditCommitSpec,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<AuditCommitReport, BenchError> {
    spec.validate()?;
    let parent = spec.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let load_average_start = crate::machine::load_average();
    let mut data_filesystem = String::new();
    let mut levels = Vec::new();
    for &max_batch in &spec.batches {
        let dir = tempfile::Builder::new()
            .prefix("quire-bench-audit-")
            .tempdir_in(&parent)
            .map_err(|source| BenchError::WorkDir {
                dir: parent.clone(),
                source,
            })?;
        data_filesystem = filesystem_of(dir.path());
        progress(&format!(
            "audit_max_batch {max_batch}: starting a {NODES}-node cluster in {} ({data_filesystem})",
            dir.path().display()
        ));
        let cluster = match LocalCluster::up(Spec {
            dir: dir.path().join("cluster"),
            binary: spec.quire_bin.clone(),
            nodes: NODES,
            tls: true,
            fault_injection: false,
            env: vec![("QUIRE_AUDIT_MAX_BATCH".into(), max_batch.to_string())],
            sandbox_args: vec!["--rate-limit".into(), "off".into()],
        })
        .await
        {
            Ok(c) => c,
            Err(e) => {
                let kept = dir.keep();
                return Err(BenchError::Cluster(
                    e.context(format!("logs kept in {}", kept.display())),
                ));
            }
        };
        leader(&cluster).await?;
        let token = provision(&cluster).await?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(MAX_WRITERS)
            .build()
            .map_err(BenchError::Http)?;
        // The integration's shard gets its first owner from the leader's placement round; a
        // call caught by that move is refused as retryable, which would count as an error
        // here. Measure once the owner has held still.
        let shard = crate::forwarding::integration_shard(INTEGRATION)?;
        let node_http = &cluster.node(1).map_err(BenchError::Cluster)?.http;
        crate::forwarding::stable_owner(
            &http,
            node_http,
            &cluster.status.admin_token,
            &shard,
            SETTLE_TIMEOUT,
        )
        .await?;
        let urls: Vec<String> = cluster
            .status
            .nodes
            .iter()
            .map(|n| format!("{}/mcp", n.http))
            .collect();
        // One call first, so a broken setup fails loudly instead of measuring errors.
        let mut first = McpSession::open(http.clone(), &urls[0], &token, CALL_TIMEOUT)
            .await
            .map_err(|e| BenchError::Preflight(e.to_string()))?;
        first
            .call_tool(TOOL, json!({}))
            .await
            .map_err(|e| BenchError::Preflight(e.to_string()))?;
        for &clients in &spec.clients {
            let mut workers = Vec::with_capacity(clients);
            for c in 0..clients {
                let mut session =
                    McpSession::open(http.clone(), &urls[c % urls.len()], &token, CALL_TIMEOUT)
                        .await
                        .map_err(|e| BenchError::Preflight(e.to_string()))?;
                // Each client's first call, outside the clock: it opens the session's actors
                // on its node and the route to the integration's owner.
                session
                    .call_tool(TOOL, json!({}))
                    .await
                    .map_err(|e| BenchError::Preflight(e.to_string()))?;
                workers.push(ToolCaller { session });
            }
            progress(&format!(
                "audit_max_batch {max_batch}, {clients} clients over {} nodes: {:?} warm-up + {:?}",
                urls.len(),
                spec.warmup,
                spec.duration
            ));
            let result = load::run_closed_loop(&spec.load_spec(), workers).await?;
            progress(&format!(
                "audit_max_batch {max_batch}, {clients} clients: {:.1} audited calls/s, p99 {} ms, {} errors",
                result.ok_per_sec,
                report::ms(result.latency_us.p99),
                result.errors
            ));
            levels.push(AuditLevel { max_batch, result });
        }
        drop(cluster);
    }
    Ok(AuditCommitReport {
        benchmark: "audit-commit",
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
        data_filesystem,
        nodes: NODES,
        warmup_secs: spec.warmup.as_secs_f64(),
        duration_secs: spec.duration.as_secs_f64(),
        levels,
    })
}

impl AuditCommitReport {
    /// For each concurrency level: the grouped side's throughput over the batch-1 side's.
    pub fn ratios(&self) -> Vec<(usize, usize, usize, f64)> {
        let mut out = Vec::new();
        let Some(&AuditLevel {
            max_batch: base, ..
        }) = self.levels.iter().min_by_key(|l| l.max_batch)
        else {
            return out;
        };
        for l in self.levels.iter().filter(|l| l.max_batch != base) {
            if let Some(b) = self
                .levels
                .iter()
                .find(|b| b.max_batch == base && b.result.writers == l.result.writers)
                && b.result.ok_per_sec > 0.0
            {
                out.push((
                    l.result.writers,
                    l.max_batch,
                    base,
                    l.result.ok_per_sec / b.result.ok_per_sec,
                ));
            }
        }
        out
    }

    fn table(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            let _ = writeln!(
                out,
                "| audit_max_batch | clients | audited calls/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|"
            );
        } else {
            let _ = writeln!(
                out,
                "{:>15} {:>8} {:>16} {:>8} {:>8} {:>7}",
                "audit_max_batch", "clients", "audited calls/s", "p50 ms", "p99 ms", "errors"
            );
        }
        for l in &self.levels {
            let r = &l.result;
            let (p50, p99) = (report::ms(r.latency_us.p50), report::ms(r.latency_us.p99));
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {p50} | {p99} | {} |",
                    l.max_batch, r.writers, r.ok_per_sec, r.errors
                );
            } else {
                let _ = writeln!(
                    out,
                    "{:>15} {:>8} {:>16.1} {p50:>8} {p99:>8} {:>7}",
                    l.max_batch, r.writers, r.ok_per_sec, r.errors
                );
            }
        }
        out
    }

    fn notes(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "setup: {} quire processes on loopback (mTLS between peers, sled fsync before each ack, data on {}), \
             MCP clients spread over the nodes, closed loop, one call = `{TOOL}` answered after its audit \
             record committed; {}s warm-up + {}s measured per level; sandbox rate limit off, integration budget 1000/s per node",
            self.nodes, self.data_filesystem, self.warmup_secs, self.duration_secs
        )];
        for (clients, batch, base, ratio) in self.ratios() {
            lines.push(format!(
                "group commit: at {clients} clients, audit_max_batch {batch} gives {ratio:.2}x the calls/s of {base}"
            ));
        }
        for l in &self.levels {
            for e in &l.result.error_samples {
                lines.push(format!("error (batch {}): {e}", l.max_batch));
            }
        }
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

    /// The terminal version.
    pub fn to_text(&self) -> String {
        let mut out = String::from("Audit group-commit benchmark\n");
        out.push_str(&self.table(false));
        for line in self.notes() {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// The same as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("### Audit group-commit benchmark\n\n");
        out.push_str(&self.table(true));
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
    fn bad_levels_and_batches_are_refused() {
        let spec = |clients: Vec<usize>, batches: Vec<usize>| AuditCommitSpec {
            quire_bin: PathBuf::from("/nonexistent/quire"),
            clients,
            batches,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            work_dir: None,
        };
        assert!(matches!(
            spec(vec![], vec![1]).validate(),
            Err(BenchError::Levels(_))
        ));
        assert!(matches!(
            spec(vec![4], vec![0]).validate(),
            Err(BenchError::Levels(_))
        ));
        assert!(matches!(
            spec(vec![4], vec![1_001]).validate(),
            Err(BenchError::Levels(_))
        ));
        assert!(matches!(
            spec(vec![4], vec![1, 512]).validate(),
            Err(BenchError::MissingBinary(_))
        ));
    }
}
