//! The Raft commit benchmark: committed, fsynced control-plane writes per second and their
//! latency at several concurrency levels, on a 3-process loopback cluster started with
//! [`quire_node::local_cluster`] (mTLS between peers, sled with fsync before every ack).
//!
//! One write is one admin API request that commits one Raft entry: each writer edits its own
//! workflow template against the version its last edit returned
//! ([`crate::admin_writes::TemplateWriter`]), so every request counted is a real committed
//! change of the state that does not revoke anything (a revocation's acknowledgement waits
//! out the revocation bound, which would measure that bound, not commits). The revocation
//! acknowledgement is measured apart, on a few tenant deletions ([`Revocations`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quire_node::local_cluster::{LocalCluster, Spec};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::admin_writes::{self, Revocations};
use crate::load::{self, LoadError, LoadResult, LoadSpec, MAX_WRITERS, OpDetail, Worker};
use crate::machine::Machine;
use crate::report;

/// Nodes in the benchmark cluster.
pub const NODES: usize = 3;
/// Most concurrency levels in one run.
pub const MAX_LEVELS: usize = 16;
/// Tenant deletions (revocations) timed one after another after the levels.
pub const REVOCATION_PROBES: usize = 3;
/// One admin request taking longer than this counts as an error.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the cluster to report a leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// First pause before retrying a write answered 503; it doubles up to the maximum.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(2);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(50);
/// Longest error response body kept in an error message, in characters.
const MAX_BODY_CHARS: usize = 200;

/// Which node the writers send to (writes to a follower are forwarded to the leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Leader,
    Follower,
    /// Writer `i` sends to node `i % 3 + 1`.
    All,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Leader => "leader",
            Target::Follower => "follower",
            Target::All => "all nodes",
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RaftCommitSpec {
    pub quire_bin: PathBuf,
    /// Concurrency levels, run in this order on the same cluster.
    pub writers: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    pub target: Target,
    /// Where the cluster's temporary directory is made (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
    /// Also run the same levels against a 3-member etcd cluster in the same run.
    pub with_etcd: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "no quire binary at {}: build it with `cargo build --release --bin quire` \
         (or pass --quire-bin PATH)",
        .0.display()
    )]
    MissingBinary(PathBuf),
    #[error(
        "--writers takes 1 to {MAX_LEVELS} levels of 1 to {MAX_WRITERS} writers each, not {0:?}"
    )]
    Levels(Vec<usize>),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot make the cluster's directory under {}: {source}", .dir.display())]
    WorkDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(reqwest::Error),
    #[error("the cluster failed: {0:#}")]
    Cluster(anyhow::Error),
    #[error("no leader within {LEADER_TIMEOUT:?} (last answer: {0})")]
    NoLeader(String),
    #[error("the first write failed, so the benchmark would measure nothing: {0}")]
    Preflight(String),
    /// An argument out of its range (the message names it and the range).
    #[error("{0}")]
    Invalid(String),
    /// A bounded wait ran out (the message says what was awaited and what was last seen).
    #[error("{0}")]
    Timeout(String),
    /// A setup or measuring step failed (the message says which).
    #[error("{0}")]
    Step(String),
    #[error("{source} (the run's directory, with the nodes' logs, is kept in {})", .dir.display())]
    Kept {
        dir: PathBuf,
        source: Box<BenchError>,
    },
}

/// One concurrency level's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    /// The leader when the level started.
    pub leader: u64,
    /// The nodes the writers sent to.
    pub target_nodes: Vec<u64>,
    #[serde(flatten)]
    pub result: LoadResult,
}

/// Everything a run measured, with what it ran on.
#[derive(Debug, Clone, Serialize)]
pub struct RaftCommitReport {
    pub benchmark: &'static str,
    pub command: String,
    pub git_commit: String,
    pub machine: Machine,
    /// 1/5/15-minute load averages when the cluster started and when the run ended.
    pub load_average_start: String,
    pub load_average_end: String,
    pub quire_bin: PathBuf,
    /// When the quire binary was built (its modification time).
    pub quire_bin_modified: String,
    /// The filesystem holding the nodes' data (fsync means little on tmpfs).
    pub data_filesystem: String,
    pub nodes: usize,
    pub target: Target,
    /// Admin requests one node serves at once; more are answered 503.
    pub admin_in_flight_limit: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub levels: Vec<Level>,
    /// `etcd --version` of the etcd side, when it ran.
    pub etcd_version: Option<String>,
    /// The same levels against etcd (empty without `--with-etcd`).
    pub etcd: Vec<Level>,
    /// The revocation acknowledgement, measured after the levels.
    pub revocations: Revocations,
}

/// A writer that creates a tenant, deletes it, creates the next, ... through the admin API.
pub struct TenantWriter {
    http: reqwest::Client,
    /// `http://host:port/admin/v1`.
    base: String,
    token: String,
    /// `b-<level>-<writer>`.
    prefix: String,
    next: u64,
    pending_delete: Option<String>,
    /// The last write's retries and the duration of its last attempt.
    detail: OpDetail,
}

impl TenantWriter {
    pub fn new(http: reqwest::Client, node_http: &str, token: &str, prefix: String) -> Self {
        TenantWriter {
            http,
            base: format!("{node_http}/admin/v1"),
            token: token.to_owned(),
            prefix,
            next: 0,
            pending_delete: None,
            detail: OpDetail::default(),
        }
    }
}

async fn describe(what: &str, response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = match serde_json::from_str::<Value>(&body) {
        Ok(v) => match (
            v.get("error").and_then(Value::as_str),
            v.get("message").and_then(Value::as_str),
        ) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => v.to_string(),
        },
        Err(_) => body,
    }
    .chars()
    .take(MAX_BODY_CHARS)
    .collect();
    format!("{what} answered {status}: {body}")
}

impl TenantWriter {
    /// One create or delete, retried after a 503 until it is answered otherwise.
    async fn write(&mut self) -> Result<(), String> {
        let (method, url, body, what, tenant) = match &self.pending_delete {
            Some(tenant) => (
                Method::DELETE,
                format!("{}/tenants/{tenant}", self.base),
                None,
                format!("DELETE /tenants/{tenant}"),
                tenant.clone(),
            ),
            None => {
                let tenant = format!("{}-{}", self.prefix, self.next);
                self.next += 1;
                (
                    Method::POST,
                    format!("{}/tenants", self.base),
                    Some(json!({"id": tenant, "display_name": "bench tenant"})),
                    "POST /tenants".to_owned(),
                    tenant,
                )
            }
        };
        let creating = body.is_some();
        let mut backoff = RETRY_BACKOFF_MIN;
        let mut retried = false;
        self.detail = OpDetail::default();
        loop {
            let attempt_started = tokio::time::Instant::now();
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
            let status = response.status();
            // 503 means "retry shortly" (admission limit reached, no leader yet).
            if status == StatusCode::SERVICE_UNAVAILABLE {
                // Read the (small) body so that the connection is reused.
                let _ = response.bytes().await;
                self.detail.retries += 1;
                retried = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                continue;
            }
            // After a 503 the earlier attempt may have committed after all.
            let done_before = retried
                && ((creating && status == StatusCode::CONFLICT)
                    || (!creating && status == StatusCode::NOT_FOUND));
            if status.is_success() || done_before {
                if retried {
                    self.detail.last_attempt = Some(attempt_started.elapsed());
                }
                self.pending_delete = creating.then_some(tenant);
                return Ok(());
            }
            if !creating && status == StatusCode::NOT_FOUND {
                // Already gone: nothing left to delete.
                self.pending_delete = None;
            }
            return Err(describe(&what, response).await);
        }
    }
}

impl Worker for TenantWriter {
    async fn call(&mut self) -> Result<(), String> {
        self.write().await
    }

    fn take_detail(&mut self) -> OpDetail {
        std::mem::take(&mut self.detail)
    }
}

/// The leader node 1 reports (waits until there is one).
pub async fn leader(cluster: &LocalCluster) -> Result<u64, BenchError> {
    let deadline = tokio::time::Instant::now() + LEADER_TIMEOUT;
    loop {
        let last = match cluster.admin(1, Method::GET, "/nodes", None).await {
            Ok((200, body)) => match body.get("leader").and_then(Value::as_u64) {
                Some(id) if cluster.node(id).is_ok() => return Ok(id),
                _ => body.to_string(),
            },
            Ok((status, body)) => format!("{status} {body}"),
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::NoLeader(last));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The filesystem type of the mount holding `path` (from `/proc/mounts`), or "unknown".
pub fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "unknown".to_owned())
}

impl RaftCommitSpec {
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.writers.is_empty()
            || self.writers.len() > MAX_LEVELS
            || self.writers.iter().any(|&w| w == 0 || w > MAX_WRITERS)
        {
            return Err(BenchError::Levels(self.writers.clone()));
        }
        self.load_spec().validate()?;
        if !self.quire_bin.is_file() {
            return Err(BenchError::MissingBinary(self.quire_bin.clone()));
        }
        if self.with_etcd && crate::etcd::version().is_none() {
            return Err(BenchError::Preflight(crate::etcd::INSTALL_HINT.to_owned()));
        }
        Ok(())
    }

    pub(crate) fn load_spec(&self) -> LoadSpec {
        LoadSpec {
            warmup: self.warmup,
            duration: self.duration,
            op_timeout: OP_TIMEOUT,
        }
    }
}

/// Starts the cluster, runs every level, stops the cluster. `progress` gets one line per
/// step (for stderr).
pub async fn run(
    spec: &RaftCommitSpec,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<RaftCommitReport, BenchError> {
    spec.validate()?;
    let parent = spec.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("quire-bench-")
        .tempdir_in(&parent)
        .map_err(|source| BenchError::WorkDir {
            dir: parent.clone(),
            source,
        })?;
    let data_filesystem = filesystem_of(dir.path());
    let load_average_start = crate::machine::load_average();
    progress(&format!(
        "starting a {NODES}-node cluster of {} in {} ({data_filesystem})",
        spec.quire_bin.display(),
        dir.path().display()
    ));
    let cluster = LocalCluster::up(Spec {
        dir: dir.path().join("cluster"),
        binary: spec.quire_bin.clone(),
        nodes: NODES,
        tls: true,
        fault_injection: false,
        env: vec![],
        sandbox_args: Vec::new(),
    })
    .await;
    let cluster = match cluster {
        Ok(cluster) => cluster,
        Err(e) => {
            // Keep the nodes' logs for whoever has to find out why.
            let kept = dir.keep();
            return Err(BenchError::Cluster(
                e.context(format!("logs kept in {}", kept.display())),
            ));
        }
    };
    let http = reqwest::Client::builder()
        .timeout(OP_TIMEOUT)
        .pool_max_idle_per_host(MAX_WRITERS)
        .build()
        .map_err(BenchError::Http)?;
    let token = cluster.status.admin_token.clone();

    let first = leader(&cluster).await?;
    let first_http = cluster
        .node(first)
        .map_err(BenchError::Cluster)?
        .http
        .clone();
    admin_writes::create_bench_tenant(&http, &first_http, &token).await?;

    let mut levels = Vec::with_capacity(spec.writers.len());
    for (level, &writers) in spec.writers.iter().enumerate() {
        let leader = leader(&cluster).await?;
        let ids: Vec<u64> = cluster.status.nodes.iter().map(|n| n.id).collect();
        let follower = ids
            .iter()
            .copied()
            .find(|&id| id != leader)
            .unwrap_or(leader);
        let target_of = |w: usize| match spec.target {
            Target::Leader => leader,
            Target::Follower => follower,
            Target::All => ids[w % ids.len()],
        };
        let mut target_nodes: Vec<u64> = (0..writers).map(target_of).collect();
        target_nodes.sort_unstable();
        target_nodes.dedup();
        let mut urls = std::collections::BTreeMap::new();
        for &id in &ids {
            urls.insert(
                id,
                cluster.node(id).map_err(BenchError::Cluster)?.http.clone(),
            );
        }
        let leader_http = urls.get(&leader).cloned().unwrap_or_default();
        let url_of = |w: usize| urls.get(&target_of(w)).cloned().unwrap_or_default();
        let mut workers =
            admin_writes::template_writers(&http, &leader_http, &token, level, writers, &url_of)
                .await?;
        // One write first, so a broken setup fails loudly instead of measuring errors.
        if let Some(w) = workers.first_mut() {
            w.write().await.map_err(BenchError::Preflight)?;
        }
        progress(&format!(
            "{writers} writers -> node(s) {target_nodes:?} (leader {leader}): {:?} warm-up + {:?}",
            spec.warmup, spec.duration
        ));
        let result = load::run_closed_loop(&spec.load_spec(), workers).await?;
        progress(&format!(
            "{writers} writers: {:.1} writes/s, p99 {} ms, {} errors",
            result.ok_per_sec,
            report::ms(result.latency_us.p99),
            result.errors
        ));
        levels.push(Level {
            leader,
            target_nodes,
            result,
        });
    }
    let revocation_node = leader(&cluster).await?;
    progress(&format!(
        "revocation acknowledgement: {REVOCATION_PROBES} tenant deletions on node {revocation_node}"
    ));
    let revocations = admin_writes::measure_revocations(
        &http,
        &cluster
            .node(revocation_node)
            .map_err(BenchError::Cluster)?
            .http,
        &token,
        REVOCATION_PROBES,
    )
    .await?;
    progress(&revocations.summary());
    drop(cluster);
    let (etcd_version, etcd) = if spec.with_etcd {
        (
            crate::etcd::version(),
            crate::etcd::run(spec, dir.path(), progress).await?,
        )
    } else {
        (None, Vec::new())
    };

    Ok(RaftCommitReport {
        benchmark: "raft-commit",
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
        target: spec.target,
        admin_in_flight_limit: quire_node::admin::MAX_ADMIN_IN_FLIGHT,
        warmup_secs: spec.warmup.as_secs_f64(),
        duration_secs: spec.duration.as_secs_f64(),
        levels,
        etcd_version,
        etcd,
        revocations,
    })
}

impl RaftCommitReport {
    fn results(&self) -> Vec<&LoadResult> {
        self.levels.iter().map(|l| &l.result).collect()
    }

    fn setup(&self) -> String {
        format!(
            "{} quire processes on loopback (mTLS between peers, sled fsync before each ack, data on {}), \
             writers -> {}, closed loop, one write = one committed admin request \
             (an edit of the writer's own workflow template against its version: not a revocation), \
             {}s warm-up + {}s measured per level",
            self.nodes, self.data_filesystem, self.target, self.warmup_secs, self.duration_secs
        )
    }

    /// Quire's writes/s over etcd's at each level both ran.
    pub fn etcd_ratios(&self) -> Vec<(usize, f64)> {
        self.levels
            .iter()
            .filter_map(|q| {
                let e = self
                    .etcd
                    .iter()
                    .find(|e| e.result.writers == q.result.writers)?;
                (e.result.ok_per_sec > 0.0)
                    .then(|| (q.result.writers, q.result.ok_per_sec / e.result.ok_per_sec))
            })
            .collect()
    }

    fn etcd_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "etcd: {} members on loopback ({}), plain HTTP between peers, WAL fsynced before each ack \
             (etcd's default); one write = one put or delete of a small key through etcd's JSON gateway \
             (/v3/kv/put, /v3/kv/deleterange) on the leader",
            NODES,
            self.etcd_version.as_deref().unwrap_or("version unknown")
        )];
        for (writers, ratio) in self.etcd_ratios() {
            lines.push(format!(
                "Quire / etcd at {writers} writers: {}x the committed writes/s",
                report::ratio(ratio)
            ));
        }
        lines
    }

    fn retry_note(&self) -> String {
        format!(
            "a 503 answer (each node admits {} admin requests at once; no leader) is retried \
             after {:?}..{:?} backoff and counted under retries; latency includes the retries",
            self.admin_in_flight_limit, RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX
        )
    }

    /// The terminal version: the table, then what it ran on.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Raft commit benchmark");
        out.push_str(&report::text_table("writes", &self.results()));
        for line in report::attempt_lines(&self.results()) {
            let _ = writeln!(out, "admitted: {line}");
        }
        for line in report::error_lines(&self.results()) {
            let _ = writeln!(out, "error: {line}");
        }
        if !self.etcd.is_empty() {
            let etcd: Vec<&LoadResult> = self.etcd.iter().map(|l| &l.result).collect();
            let _ = writeln!(out, "etcd, same levels, same run:");
            out.push_str(&report::text_table("writes", &etcd));
            for line in self.etcd_lines() {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = writeln!(out, "{}", self.revocations.summary());
        let _ = writeln!(out, "setup:   {}", self.setup());
        let _ = writeln!(out, "retries: {}", self.retry_note());
        let _ = writeln!(out, "machine: {}", self.machine.summary());
        let _ = writeln!(
            out,
            "load:    {} at start, {} at end (1/5/15 min)",
            self.load_average_start, self.load_average_end
        );
        let _ = writeln!(out, "commit:  {}", self.git_commit);
        let _ = writeln!(
            out,
            "quire:   {} (built {})",
            self.quire_bin.display(),
            self.quire_bin_modified
        );
        let _ = writeln!(out, "command: {}", self.command);
        out
    }

    /// The same as Markdown, for a report.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### Raft commit benchmark\n");
        out.push_str(&report::markdown_table("writes", &self.results()));
        let attempts = report::attempt_lines(&self.results());
        if !attempts.is_empty() {
            let _ = writeln!(out, "\nWith retries, the admitted attempt alone:\n");
            for line in attempts {
                let _ = writeln!(out, "- {line}");
            }
        }
        let errors = report::error_lines(&self.results());
        if !errors.is_empty() {
            let _ = writeln!(out, "\nErrors (first of each kind):\n");
            for line in errors {
                let _ = writeln!(out, "- `{line}`");
            }
        }
        if !self.etcd.is_empty() {
            let etcd: Vec<&LoadResult> = self.etcd.iter().map(|l| &l.result).collect();
            let _ = writeln!(out, "\netcd, the same levels in the same run:\n");
            out.push_str(&report::markdown_table("writes", &etcd));
            let _ = writeln!(out);
            for line in self.etcd_lines() {
                let _ = writeln!(out, "- {line}");
            }
        }
        let _ = writeln!(out, "\n- {}", self.revocations.summary());
        let _ = writeln!(out, "- setup: {}", self.setup());
        let _ = writeln!(out, "- retries: {}", self.retry_note());
        let _ = writeln!(out, "- machine: {}", self.machine.summary());
        let _ = writeln!(
            out,
            "- load average (1/5/15 min): {} at start, {} at end",
            self.load_average_start, self.load_average_end
        );
        let _ = writeln!(out, "- commit: `{}`", self.git_commit);
        let _ = writeln!(
            out,
            "- quire: `{}` (built {})",
            self.quire_bin.display(),
            self.quire_bin_modified
        );
        let _ = writeln!(out, "- command: `{}`", self.command);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(writers: Vec<usize>) -> RaftCommitSpec {
        RaftCommitSpec {
            quire_bin: PathBuf::from("/nonexistent/quire"),
            writers,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            target: Target::Leader,
            work_dir: None,
            with_etcd: false,
        }
    }

    #[test]
    fn bad_levels_are_refused_before_anything_starts() {
        for w in [
            vec![],
            vec![0],
            vec![1, MAX_WRITERS + 1],
            vec![1; MAX_LEVELS + 1],
        ] {
            assert!(
                matches!(spec(w.clone()).validate(), Err(BenchError::Levels(_))),
                "{w:?}"
            );
        }
        let mut s = spec(vec![1]);
        s.duration = Duration::ZERO;
        assert!(matches!(s.validate(), Err(BenchError::Load(_))));
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let err = spec(vec![1, 16]).validate().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/quire"), "{text}");
        assert!(text.contains("cargo build --release --bin quire"), "{text}");
    }

    #[test]
    fn filesystem_of_root_is_known_on_linux() {
        if Path::new("/proc/mounts").exists() {
            assert_ne!(filesystem_of(Path::new("/")), "unknown");
        }
    }
}
