//! The forwarding benchmark: what it costs a tool call to reach its integration's shard owner
//! from another node. On a 3-process loopback cluster (mutual TLS between peers) an
//! integration with a high budget serves a workspace; its shard's owner is read from
//! `GET /admin/v1/placement` once the shard is assigned and stable. Every call's audit record
//! is committed through the Raft leader, so an entry node that leads would save its side a
//! hop: the integration is chosen so that the leader is neither entry node. Candidates
//! (`fwd`, `fwd-1`, ... up to [`CANDIDATES`]) are created one at a time until one's shard has
//! a stable owner that is not the leader (the run fails when every candidate's owner leads).
//! One MCP session is opened on that owner (its calls go to the local data plane) and one on
//! the third node, neither owner nor leader (its calls travel to the owner as a `DataCall`),
//! and the two are measured in the same run, interleaved one call at a time in the order
//! L R R L L R R L ... after a warm-up, each session primed with one call before the clock.
//! Every call is `notion-get-self` (one Notion request to the sandbox, its rate limit off and
//! no added latency), answered after its audit record committed, so both sides pay the same
//! audit commit and the difference is the hop to the owner and back.
//!
//! The non-owner's `quire_forwarded_calls_total{outcome="ok"}` (from `/metrics`) must grow
//! by at least the remote side's calls and the owner's not at all, and the shard must have
//! the same owner and epoch at the end: otherwise the sides were not what they claim and the
//! run fails. The leader and the Raft term are read again at the end; a change (the sides may
//! then not have paid the same audit hop throughout) is reported, not failed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use hdrhistogram::Histogram;
use quire_node::local_cluster::LocalCluster;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::admin_writes::{self, RunContext, RunOpts};
use crate::load::{self, Percentiles};
use crate::mcp_client::McpSession;
use crate::placement_view;
use crate::raft_commit::{BenchError, LEADER_TIMEOUT, NODES};
use crate::report;
use crate::report::{Column, Figures};

/// The tool every call makes (one Notion request).
pub const TOOL: &str = crate::audit_commit::TOOL;
/// One tool call taking longer than this fails the call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most measured calls per side.
pub const MAX_CALLS: usize = 1_000_000;
/// The tenant (the cluster's demo tenant) the calls use.
const TENANT: &str = "demo";
/// Most candidate integrations tried for one whose shard owner is not the Raft leader.
pub const CANDIDATES: usize = 6;
/// The shard's owner must stay the same for this long before measuring.
const STABLE_FOR: Duration = Duration::from_secs(3);
/// Pause between placement reads while waiting.
const POLL: Duration = Duration::from_millis(200);
/// Distinct error messages kept per side.
const MAX_ERROR_SAMPLES: usize = 5;

#[derive(clap::Args, Debug, Clone)]
pub struct ForwardingArgs {
    /// Measured calls per side.
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// Calls per side before measuring starts (not counted).
    #[arg(long, default_value_t = 200)]
    pub warmup_calls: usize,
    /// Give up when the integration's shard has no stable owner within this many seconds.
    #[arg(long, default_value_t = 60)]
    pub settle_timeout_secs: u64,
    #[command(flatten)]
    pub run: RunOpts,
}

impl ForwardingArgs {
    /// Checks the arguments, naming the one out of range.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.calls == 0 || self.calls > MAX_CALLS {
            return Err(BenchError::Invalid(format!(
                "--calls must be 1 to {MAX_CALLS}, not {}",
                self.calls
            )));
        }
        if self.warmup_calls > MAX_CALLS {
            return Err(BenchError::Invalid(format!(
                "--warmup-calls must be at most {MAX_CALLS}, not {}",
                self.warmup_calls
            )));
        }
        if self.settle_timeout_secs == 0 || self.settle_timeout_secs > 3600 {
            return Err(BenchError::Invalid(format!(
                "--settle-timeout-secs must be 1 to 3600, not {}",
                self.settle_timeout_secs
            )));
        }
        Ok(())
    }
}

/// One side's measured calls.
#[derive(Debug, Clone, Serialize)]
pub struct SideResult {
    /// `local` (the session is on the shard's owner) or `remote` (on the node that neither
    /// owns the shard nor leads the Raft group).
    pub side: &'static str,
    /// The node the session is on.
    pub node: u64,
    pub ok: u64,
    pub errors: u64,
    /// Latency of the successful measured calls, in microseconds.
    pub latency_us: Percentiles,
    pub error_samples: Vec<String>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardingReport {
    pub benchmark: &'static str,
    #[serde(flatten)]
    pub context: RunContext,
    pub nodes: usize,
    /// The integration the calls use (in the demo tenant) and how many candidates were
    /// created to find it (the earlier ones' shards were owned by the Raft leader).
    pub integration: String,
    pub integrations_tried: usize,
    /// The integration's shard (`group#index`), its owner (the local side's entry node) and
    /// epoch throughout the run.
    pub shard: String,
    pub owner: u64,
    pub epoch: u64,
    /// The remote side's entry node: neither the owner nor the leader.
    pub remote_entry: u64,
    /// The Raft leader and term when the integration was chosen. Each call's audit record is
    /// committed through the leader, so the leader is neither entry node: both sides take the
    /// same hop to it.
    pub leader: u64,
    pub term: u64,
    /// The leader and term read again after the measured calls, and whether the leader
    /// differs (then the sides may not have paid the same audit hop throughout; the run is
    /// still reported).
    pub leader_at_end: u64,
    pub term_at_end: u64,
    pub leader_changed: bool,
    pub calls_per_side: usize,
    pub warmup_calls: usize,
    pub local: SideResult,
    pub remote: SideResult,
    /// Remote over local, for p50, p99 and the mean.
    pub p50_ratio: f64,
    pub p99_ratio: f64,
    pub mean_ratio: f64,
    /// Growth of `quire_forwarded_calls_total{outcome="ok"}` over the calls, on the remote
    /// side's node and on the owner.
    pub forwarded_by_remote_node: u64,
    pub forwarded_by_owner: u64,
    /// Growth of `quire_forward_served_total{outcome="ok"}` on the owner.
    pub served_by_owner: u64,
    /// Tool calls the remote session made while the counters were watched (priming,
    /// warm-up and measured, failed ones included).
    pub remote_calls_made: u64,
}

/// The `i`th candidate integration's id: `fwd`, then `fwd-1`, `fwd-2`, ...
pub fn candidate(i: usize) -> String {
    if i == 0 {
        "fwd".to_owned()
    } else {
        format!("fwd-{i}")
    }
}

/// An integration with the largest budget on the demo tenant (through `node_http`).
async fn provision_integration(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    integration: &str,
) -> Result<(), BenchError> {
    let url = format!("{node_http}/admin/v1/tenants/{TENANT}/integrations");
    let body = json!({"id": integration, "display_name": "forwarding", "notion_token": "secret_sandbox_alpha",
                      "requests_per_second": 1000, "burst": 10000});
    step_ok(http, Method::POST, &url, token, &body).await?;
    Ok(())
}

/// A workspace on `integration`, an agent and its token (through `node_http`).
async fn provision_agent(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    integration: &str,
) -> Result<String, BenchError> {
    let base = format!("{node_http}/admin/v1/tenants/{TENANT}");
    let steps = [
        (
            "workspaces",
            json!({"id": "fwd", "display_name": "forwarding", "integration": integration}),
        ),
        (
            "principals",
            json!({"id": "fwd-agent", "display_name": "forwarding agent"}),
        ),
        (
            "principals/fwd-agent/workspaces",
            json!({"workspace": "fwd"}),
        ),
    ];
    for (path, body) in steps {
        step_ok(http, Method::POST, &format!("{base}/{path}"), token, &body).await?;
    }
    let issued = step_ok(
        http,
        Method::POST,
        &format!("{base}/tokens"),
        token,
        &json!({"principal": "fwd-agent", "workspace": "fwd"}),
    )
    .await?;
    issued["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Step("the token answer has no token".into()))
}

/// An admin request that must succeed (2xx).
async fn step_ok(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, BenchError> {
    let what = format!("{method} {url}");
    let answer = admin_writes::request(http, method, url, token, Some(body))
        .await
        .map_err(BenchError::Step)?;
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        Err(BenchError::Step(answer.describe(&what)))
    }
}

/// The shard of the demo tenant's `integration`, as every node computes it (the tenant has
/// no residency policy).
pub fn integration_shard(integration: &str) -> Result<String, BenchError> {
    use quire_raft::ids::{IntegrationId, TenantId};
    use quire_raft::placement::{Residency, integration_key, shard_of};
    let tenant = TenantId::new(TENANT).map_err(|e| BenchError::Step(e.to_string()))?;
    let integration =
        IntegrationId::new(integration).map_err(|e| BenchError::Step(e.to_string()))?;
    Ok(shard_of(&Residency::any(), &integration_key(&tenant, &integration)).to_string())
}

/// Waits until `shard` has an owner that stays the same (owner and epoch) for
/// [`STABLE_FOR`] with no move planned; returns (owner, epoch).
pub(crate) async fn stable_owner(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    shard: &str,
    timeout: Duration,
) -> Result<(u64, u64), BenchError> {
    let deadline = Instant::now() + timeout;
    let mut since: Option<((u64, u64), Instant)> = None;
    loop {
        let placement = placement_view::fetch(http, node_http, token).await?;
        let now = Instant::now();
        let current = placement_view::owner_of(&placement, shard);
        let settled = placement_view::pending_moves(&placement) == 0;
        since = match (current, since) {
            (Some(c), Some((s, at))) if c == s && settled => Some((s, at)),
            (Some(c), _) if settled => Some((c, now)),
            _ => None,
        };
        if let Some((owner, at)) = since
            && now.duration_since(at) >= STABLE_FOR
        {
            return Ok(owner);
        }
        if now >= deadline {
            return Err(BenchError::Timeout(format!(
                "shard {shard} had no stable owner within {timeout:?} (last seen: owner {}, {} moves pending)",
                current.map_or("none".to_owned(), |(o, e)| format!("{o} at epoch {e}")),
                placement_view::pending_moves(&placement)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The Raft leader and term as node 1 reports them (`GET /admin/v1/nodes`), waiting up to
/// [`LEADER_TIMEOUT`] for a leader.
async fn raft_view(cluster: &LocalCluster) -> Result<(u64, u64), BenchError> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let last = match cluster.admin(1, Method::GET, "/nodes", None).await {
            Ok((200, body)) => {
                let leader = body.get("leader").and_then(Value::as_u64);
                let term = body.get("term").and_then(Value::as_u64);
                match (leader, term) {
                    (Some(id), Some(term)) if cluster.node(id).is_ok() => return Ok((id, term)),
                    _ => body.to_string(),
                }
            }
            Ok((status, body)) => format!("{status} {body}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            return Err(BenchError::NoLeader(last));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The integration a run uses: its shard's stable owner is not the Raft leader.
struct Chosen {
    integration: String,
    /// Candidates created, this one included.
    tried: usize,
    shard: String,
    owner: u64,
    epoch: u64,
    leader: u64,
    term: u64,
}

/// Creates candidate integrations one at a time (through `node_http`) until one's shard has
/// a stable owner that is not the Raft leader, the leader read once the owner is stable.
async fn choose_integration(
    http: &reqwest::Client,
    cluster: &LocalCluster,
    node_http: &str,
    token: &str,
    settle: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Chosen, BenchError> {
    let mut led = String::new();
    for i in 0..CANDIDATES {
        let integration = candidate(i);
        provision_integration(http, node_http, token, &integration).await?;
        let shard = integration_shard(&integration)?;
        progress(&format!(
            "integration {TENANT}/{integration} is on shard {shard}; waiting for a stable owner"
        ));
        let (owner, epoch) = stable_owner(http, node_http, token, &shard, settle).await?;
        let (leader, term) = raft_view(cluster).await?;
        if owner != leader {
            return Ok(Chosen {
                integration,
                tried: i + 1,
                shard,
                owner,
                epoch,
                leader,
                term,
            });
        }
        progress(&format!(
            "shard {shard} is owned by node {owner}, the Raft leader: trying another integration"
        ));
        let sep = if led.is_empty() { "" } else { ", " };
        let _ = write!(led, "{sep}{integration} on {shard} owned by node {owner}");
    }
    Err(BenchError::Step(format!(
        "each of the {CANDIDATES} candidate integrations had its shard owned by the Raft leader \
         ({led}), so none leaves the leader out of both sides"
    )))
}

/// One side while it runs.
struct Side {
    session: McpSession,
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    error_samples: Vec<String>,
    /// Calls made, and those that failed, measured or not.
    calls_made: u64,
    failed: u64,
}

impl Side {
    fn new(session: McpSession) -> Side {
        Side {
            session,
            histogram: load::new_histogram(),
            ok: 0,
            errors: 0,
            error_samples: Vec::new(),
            calls_made: 0,
            failed: 0,
        }
    }

    /// One call; counted (latency or error) when `measured`.
    async fn call(&mut self, measured: bool) {
        let started = Instant::now();
        let outcome = self.session.call_tool(TOOL, json!({})).await;
        let took = started.elapsed();
        self.calls_made += 1;
        self.failed += u64::from(outcome.is_err());
        if !measured {
            return;
        }
        match outcome {
            Ok(_) => {
                self.ok += 1;
                self.histogram.saturating_record(load::micros(took));
            }
            Err(e) => {
                self.errors += 1;
                let message = e.to_string();
                if self.error_samples.len() < MAX_ERROR_SAMPLES
                    && !self.error_samples.contains(&message)
                {
                    self.error_samples.push(message);
                }
            }
        }
    }

    fn result(&self, side: &'static str, node: u64) -> SideResult {
        SideResult {
            side,
            node,
            ok: self.ok,
            errors: self.errors,
            latency_us: Percentiles::of(&self.histogram),
            error_samples: self.error_samples.clone(),
        }
    }
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Growth of `quire_forwarded_calls_total{outcome="ok"}` (or served) between two pages.
fn grew(before: &str, after: &str, name: &str) -> u64 {
    let label = "outcome=\"ok\"";
    let d =
        placement_view::sample(after, name, label) - placement_view::sample(before, name, label);
    d.max(0.0) as u64
}

/// Runs the benchmark. `progress` gets one line per step.
pub async fn run(
    args: &ForwardingArgs,
    quire_bin: PathBuf,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<ForwardingReport, BenchError> {
    args.validate()?;
    let (dir, cluster) = admin_writes::start_cluster(
        &quire_bin,
        args.run.work_dir.as_deref(),
        NODES,
        vec![],
        vec!["--rate-limit".into(), "off".into()],
    )
    .await?;
    let context = RunContext::start(command, &quire_bin, dir.path());
    let outcome = measure(args, &cluster, context, progress).await;
    drop(cluster);
    admin_writes::keep_on_error(dir, outcome)
}

async fn measure(
    args: &ForwardingArgs,
    cluster: &quire_node::local_cluster::LocalCluster,
    mut context: RunContext,
    progress: &mut dyn FnMut(&str),
) -> Result<ForwardingReport, BenchError> {
    let admin = admin_writes::admin_client(Duration::from_secs(30))?;
    let token = cluster.status.admin_token.clone();
    // Admin writes go to the leader of the moment (any node would forward them).
    let (first, _) = raft_view(cluster).await?;
    let admin_http = cluster
        .node(first)
        .map_err(BenchError::Cluster)?
        .http
        .clone();
    let settle = Duration::from_secs(args.settle_timeout_secs);
    let Chosen {
        integration,
        tried,
        shard,
        owner,
        epoch,
        leader,
        term,
    } = choose_integration(&admin, cluster, &admin_http, &token, settle, progress).await?;
    let agent = provision_agent(&admin, &admin_http, &token, &integration).await?;
    let remote_node = cluster
        .status
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|&id| id != owner && id != leader)
        .ok_or_else(|| {
            BenchError::Step(format!(
                "no node is neither the owner {owner} nor the leader {leader}"
            ))
        })?;
    let owner_http = cluster
        .node(owner)
        .map_err(BenchError::Cluster)?
        .http
        .clone();
    let remote_http = cluster
        .node(remote_node)
        .map_err(BenchError::Cluster)?
        .http
        .clone();
    progress(&format!(
        "integration {TENANT}/{integration}, shard {shard}: owner node {owner} at epoch {epoch}, \
         Raft leader node {leader} (term {term}); local session on node {owner}, remote on node {remote_node}"
    ));

    let http = reqwest::Client::builder()
        .build()
        .map_err(BenchError::Http)?;
    let metrics_before = (
        placement_view::metrics(&http, &remote_http).await?,
        placement_view::metrics(&http, &owner_http).await?,
    );
    let mut sides = Vec::with_capacity(2);
    for (name, node_http) in [("local", &owner_http), ("remote", &remote_http)] {
        let mut session = McpSession::open(
            http.clone(),
            &format!("{node_http}/mcp"),
            &agent,
            CALL_TIMEOUT,
        )
        .await
        .map_err(|e| BenchError::Step(format!("opening the {name} MCP session: {e}")))?;
        // The first call, outside the clock and required to succeed: it starts the tenant's
        // actors on the owner and the route on the entry node.
        session
            .call_tool(TOOL, json!({}))
            .await
            .map_err(|e| BenchError::Step(format!("the {name} session's first call: {e}")))?;
        sides.push(Side::new(session));
    }
    let (mut local, mut remote) = match <[Side; 2]>::try_from(sides) {
        Ok([l, r]) => (l, r),
        Err(_) => return Err(BenchError::Step("two sessions were not opened".into())),
    };
    remote.calls_made = 1;
    progress(&format!(
        "{} warm-up + {} measured calls per side, interleaved L R R L",
        args.warmup_calls, args.calls
    ));
    let pairs = args.warmup_calls + args.calls;
    for i in 0..pairs {
        let measured = i >= args.warmup_calls;
        if i % 2 == 0 {
            local.call(measured).await;
            remote.call(measured).await;
        } else {
            remote.call(measured).await;
            local.call(measured).await;
        }
    }
    let (leader_at_end, term_at_end) = raft_view(cluster).await?;
    let leader_changed = leader_at_end != leader;
    if leader_changed {
        progress(&format!(
            "the Raft leader changed during the run: node {leader} (term {term}) before, node {leader_at_end} \
             (term {term_at_end}) after"
        ));
    }
    let metrics_after = (
        placement_view::metrics(&http, &remote_http).await?,
        placement_view::metrics(&http, &owner_http).await?,
    );
    let placement = placement_view::fetch(&admin, &admin_http, &token).await?;
    let after = placement_view::owner_of(&placement, &shard);
    if after != Some((owner, epoch)) {
        return Err(BenchError::Step(format!(
            "shard {shard} moved during the run (owner {owner} at epoch {epoch} before, {after:?} after): \
             the sides were not local and remote throughout"
        )));
    }
    let forwarded_by_remote_node = grew(
        &metrics_before.0,
        &metrics_after.0,
        "quire_forwarded_calls_total",
    );
    let forwarded_by_owner = grew(
        &metrics_before.1,
        &metrics_after.1,
        "quire_forwarded_calls_total",
    );
    let served_by_owner = grew(
        &metrics_before.1,
        &metrics_after.1,
        "quire_forward_served_total",
    );
    let remote_ok_all = remote.calls_made - remote.failed;
    if forwarded_by_remote_node < remote_ok_all || forwarded_by_owner > 0 {
        return Err(BenchError::Step(format!(
            "the calls did not take the paths measured: node {remote_node} forwarded {forwarded_by_remote_node} \
             calls for {remote_ok_all} answered remote calls, the owner {owner} forwarded {forwarded_by_owner}"
        )));
    }
    context.finish();
    let (l, r) = (
        local.result("local", owner),
        remote.result("remote", remote_node),
    );
    let report = ForwardingReport {
        benchmark: "forwarding",
        context,
        nodes: NODES,
        integration,
        integrations_tried: tried,
        shard,
        owner,
        epoch,
        remote_entry: remote_node,
        leader,
        term,
        leader_at_end,
        term_at_end,
        leader_changed,
        calls_per_side: args.calls,
        warmup_calls: args.warmup_calls,
        p50_ratio: ratio(r.latency_us.p50, l.latency_us.p50),
        p99_ratio: ratio(r.latency_us.p99, l.latency_us.p99),
        mean_ratio: ratio(r.latency_us.mean, l.latency_us.mean),
        local: l,
        remote: r,
        forwarded_by_remote_node,
        forwarded_by_owner,
        served_by_owner,
        remote_calls_made: remote.calls_made,
    };
    progress(&report.headline());
    Ok(report)
}

impl ForwardingReport {
    /// One line: the ratios and the added milliseconds.
    pub fn headline(&self) -> String {
        let added = |r: u64, l: u64| (r as f64 - l as f64) / 1000.0;
        let (l, r) = (&self.local.latency_us, &self.remote.latency_us);
        format!(
            "forwarding overhead (remote / local, same run): p50 {}x ({:+.2} ms), p99 {}x ({:+.2} ms), mean {}x ({:+.2} ms)",
            report::ratio(self.p50_ratio),
            added(r.p50, l.p50),
            report::ratio(self.p99_ratio),
            added(r.p99, l.p99),
            report::ratio(self.mean_ratio),
            added(r.mean, l.mean)
        )
    }
}

impl Figures for ForwardingReport {
    const TITLE: &'static str = "Forwarding benchmark";
    const COLUMNS: &'static [Column] = &[
        Column::left("side", 6),
        Column::right("node", 4),
        Column::right("calls", 7),
        Column::right("errors", 6),
        Column::right("mean ms", 8),
        Column::right("p50 ms", 8),
        Column::right("p95 ms", 8),
        Column::right("p99 ms", 8),
        Column::right("max ms", 8),
    ];
    type Row = [String; 9];

    fn rows(&self) -> Vec<[String; 9]> {
        [&self.local, &self.remote]
            .iter()
            .map(|s| {
                let p = &s.latency_us;
                [
                    s.side.to_owned(),
                    s.node.to_string(),
                    s.ok.to_string(),
                    s.errors.to_string(),
                    report::ms(p.mean),
                    report::ms(p.p50),
                    report::ms(p.p95),
                    report::ms(p.p99),
                    report::ms(p.max),
                ]
            })
            .collect()
    }

    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            self.headline(),
            format!(
                "roles: node {} owns the shard (local entry), node {} is the remote entry, node {} led the Raft \
                 group (term {}) when integration {TENANT}/{} was chosen ({} of up to {CANDIDATES} candidates \
                 created): each call's audit record is committed through the leader, which neither entry node is",
                self.owner,
                self.remote_entry,
                self.leader,
                self.term,
                self.integration,
                self.integrations_tried
            ),
            format!(
                "shard {} owned by node {} at epoch {} before and after the run; node {} forwarded {} calls to it \
                 over mutual TLS (quire_forwarded_calls_total{{outcome=\"ok\"}}, {} remote calls made), the owner \
                 served {} forwarded calls and itself forwarded {}",
                self.shard,
                self.owner,
                self.epoch,
                self.remote.node,
                self.forwarded_by_remote_node,
                self.remote_calls_made,
                self.served_by_owner,
                self.forwarded_by_owner
            ),
        ];
        lines.push(if self.leader_changed {
            format!(
                "the Raft leader changed during the run: node {} (term {}) when the integration was chosen, \
                 node {} (term {}) after the measured calls, so the two sides may not have paid the same \
                 audit-commit hop throughout",
                self.leader, self.term, self.leader_at_end, self.term_at_end
            )
        } else if self.term_at_end != self.term {
            format!(
                "node {} led the Raft group at both ends, but the term went from {} to {} during the run \
                 (an election)",
                self.leader, self.term, self.term_at_end
            )
        } else {
            format!(
                "node {} still led the Raft group after the measured calls (term {} throughout)",
                self.leader, self.term
            )
        });
        for s in [&self.local, &self.remote] {
            for e in &s.error_samples {
                lines.push(format!("error ({}): {e}", s.side));
            }
        }
        lines.push(format!(
            "setup: {} quire processes on loopback (mTLS between peers, sled fsync); one integration (budget \
             1000/s, burst 10000) on the Notion sandbox (rate limit off, no added latency), chosen so that its shard's \
             owner is not the Raft leader; one MCP session on the shard's owner (local) and one on the node that \
             neither owns the shard nor leads (remote), one call at a time, interleaved L R R L; \
             each session's first call outside the clock, then {} warm-up and {} measured calls per side; \
             a call is `{TOOL}` (one Notion request), answered after its audit record committed",
            self.nodes, self.warmup_calls, self.calls_per_side
        ));
        lines.extend(self.context.lines());
        lines
    }
}

/// `quire-bench forwarding`.
pub async fn main(args: ForwardingArgs, command: String) -> anyhow::Result<()> {
    if let Err(e) = args.validate() {
        bail!("{e}");
    }
    let quire_bin = admin_writes::quire_bin(args.run.quire_bin.clone())?;
    let report = run(&args, quire_bin, command, &mut admin_writes::progress).await?;
    args.run.emit(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ForwardingArgs {
        ForwardingArgs {
            calls: 10,
            warmup_calls: 0,
            settle_timeout_secs: 60,
            run: RunOpts::default(),
        }
    }

    #[test]
    fn arguments_out_of_range_are_named() {
        assert!(args().validate().is_ok());
        let e = ForwardingArgs { calls: 0, ..args() }
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--calls must be 1 to"), "{e}");
        let e = ForwardingArgs {
            settle_timeout_secs: 0,
            ..args()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("--settle-timeout-secs"), "{e}");
        let e = ForwardingArgs {
            warmup_calls: MAX_CALLS + 1,
            ..args()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("--warmup-calls"), "{e}");
    }

    #[test]
    fn the_shard_is_the_integrations_and_counters_grow() {
        let ids: Vec<String> = (0..CANDIDATES).map(candidate).collect();
        assert_eq!(ids[..3], ["fwd", "fwd-1", "fwd-2"]);
        for id in &ids {
            let shard = integration_shard(id).unwrap();
            let (group, index) = shard.rsplit_once('#').unwrap();
            assert_eq!(group, "*");
            assert!(index.parse::<u16>().unwrap() < 256);
        }
        assert!(integration_shard("not an id!").is_err());
        // With equal capacities the owners are the rendezvous choices: were they all one node,
        // every run that node leads would fail.
        let owners: std::collections::BTreeSet<u64> = ids
            .iter()
            .map(|id| {
                use quire_raft::ids::{IntegrationId, TenantId};
                use quire_raft::placement::{
                    NodeLabels, Residency, integration_key, rendezvous, shard_of,
                };
                let key = integration_key(
                    &TenantId::new(TENANT).unwrap(),
                    &IntegrationId::new(id.as_str()).unwrap(),
                );
                let shard = shard_of(&Residency::any(), &key);
                assert_eq!(shard.to_string(), integration_shard(id).unwrap());
                let nodes = (1..=3).map(|n| (n, NodeLabels::default())).collect();
                rendezvous(&shard, &[1, 2, 3], &nodes).unwrap()
            })
            .collect();
        assert!(owners.len() > 1, "{owners:?}");
        let before = "quire_forwarded_calls_total{outcome=\"ok\"} 3\n";
        let after = "quire_forwarded_calls_total{outcome=\"ok\"} 10\n";
        assert_eq!(grew(before, after, "quire_forwarded_calls_total"), 7);
        assert_eq!(grew(after, before, "quire_forwarded_calls_total"), 0);
        assert_eq!(grew("", after, "quire_forward_served_total"), 0);
        assert_eq!(ratio(3, 2), 1.5);
        assert_eq!(ratio(3, 0), 0.0);
    }
}
