//! The node's metrics, served at `GET /metrics` in the Prometheus text exposition format
//! (0.0.4).
//!
//! One [`NodeMetrics`] per node, held by its [`App`] (never process-wide: the simulator runs
//! many nodes in one process). The HTTP front and the MCP handler add to it as requests end;
//! everything else — Raft (openraft's metrics watch), the data plane's Notion counters
//! (`quire_actors::stats`), the audit batcher's counters — is read when the page is scraped.
//!
//! Labels are bounded: tool names from the catalogue (`unknown` otherwise), tool error codes,
//! HTTP status classes, Notion statuses, integration ids, node ids. Never a token, a principal
//! or free text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use quire_actors::stats::Histogram;

use crate::app::App;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) of tool-call durations and audit commit latency.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of audit batch sizes (events per `AppendAudit`).
pub const BATCH_SIZE_BUCKETS: [f64; 10] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

#[derive(Debug, Default)]
struct Counters {
    /// (tool, outcome) → calls.
    tool_calls: BTreeMap<(String, String), u64>,
    /// tool → durations.
    tool_durations: BTreeMap<String, Histogram>,
    /// outcome → admin API requests.
    admin_requests: BTreeMap<&'static str, u64>,
}

/// The counters one node keeps for its `/metrics` page.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    counters: Mutex<Counters>,
    open_sessions: AtomicI64,
    calls_in_flight: AtomicI64,
}

impl NodeMetrics {
    /// A tool call ended with `outcome` (`ok`, `denied`, or a tool error code) after `took`.
    pub fn tool_call(&self, tool: &str, outcome: &str, took: Duration) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.tool_calls
            .entry((tool.to_owned(), outcome.to_owned()))
            .or_default() += 1;
        c.tool_durations
            .entry(tool.to_owned())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS_SECONDS))
            .observe(took.as_secs_f64());
    }

    /// An admin API request was answered with `status`.
    pub fn admin_request(&self, status: StatusCode) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        *c.admin_requests.entry(admin_outcome(status)).or_default() += 1;
    }

    /// An MCP session opened; it counts as open until the returned guard is dropped.
    pub fn session_opened(self: &std::sync::Arc<Self>) -> SessionGuard {
        self.open_sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }

    /// MCP sessions open on this node now.
    pub fn open_sessions(&self) -> i64 {
        self.open_sessions.load(Ordering::Relaxed)
    }

    /// A tool call or workflow run started; it counts as in flight until the returned guard
    /// is dropped (a stopping node waits for these before it ends its MCP sessions).
    pub fn call_started(self: &std::sync::Arc<Self>) -> CallGuard {
        self.calls_in_flight.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.clone())
    }

    /// Tool calls and workflow runs in flight on this node now.
    pub fn calls_in_flight(&self) -> i64 {
        self.calls_in_flight.load(Ordering::SeqCst)
    }
}

/// Counts one tool call or workflow run as in flight while it lives.
#[derive(Debug)]
pub struct CallGuard(std::sync::Arc<NodeMetrics>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.calls_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts one MCP session as open while it lives.
#[derive(Debug)]
pub struct SessionGuard(std::sync::Arc<NodeMetrics>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.open_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bounded outcome label of an admin API answer.
pub fn admin_outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        401 | 403 => "denied",
        404 => "not_found",
        409 | 412 => "conflict",
        429 | 503 => "unavailable",
        400..=499 => "invalid",
        _ => "error",
    }
}

/// Counts every admin API answer by outcome.
pub async fn count_admin(
    State(app): State<std::sync::Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    app.metrics.admin_request(response.status());
    response
}

/// `GET /metrics`.
pub async fn serve(State(app): State<std::sync::Arc<App>>, headers: HeaderMap) -> Response {
    if app.config.metrics.require_token && !has_admin_bearer(&app, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            "metrics.require_token is on: send an admin token as a bearer token\n",
        )
            .into_response();
    }
    let body = render(&app);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

/// Whether the request carries a valid admin token (any admin principal may scrape).
fn has_admin_bearer(app: &App, headers: &HeaderMap) -> bool {
    let Some(secret) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    crate::admin::authenticate_admin(app, secret.trim()).is_some()
}

/// The whole `/metrics` page.
pub fn render(app: &App) -> String {
    let mut out = Page::default();
    render_tools(&mut out, &app.metrics);
    render_notion(&mut out, app);
    render_raft(&mut out, app);
    render_audit(&mut out, app);
    render_placement(&mut out, app);
    render_forward(&mut out, app);
    render_handoff(&mut out, app);
    out.family(
        "quire_mcp_sessions_open",
        "gauge",
        "MCP sessions open on this node.",
    );
    out.sample(
        "quire_mcp_sessions_open",
        &[],
        app.metrics.open_sessions() as f64,
    );
    out.family(
        "quire_tool_calls_in_flight",
        "gauge",
        "Tool calls and workflow runs in progress on this node.",
    );
    out.sample(
        "quire_tool_calls_in_flight",
        &[],
        app.metrics.calls_in_flight() as f64,
    );
    out.text
}

fn render_forward(out: &mut Page, app: &App) {
    app.forward.with_stats(|s| {
        out.family(
            "quire_forwarded_calls_total",
            "counter",
            "Notion calls this node sent to their shard's owner, by outcome (ok, error, wrong_owner, busy, timeout, unreachable, refused, invalid).",
        );
        for (outcome, n) in &s.forwarded {
            out.sample("quire_forwarded_calls_total", &[("outcome", outcome)], *n as f64);
        }
        out.family(
            "quire_forward_served_total",
            "counter",
            "Notion calls other nodes forwarded to this one, by outcome (ok, error, wrong_owner, busy, invalid).",
        );
        for (outcome, n) in &s.served {
            out.sample("quire_forward_served_total", &[("outcome", outcome)], *n as f64);
        }
        out.family(
            "quire_fenced_calls_total",
            "counter",
            "Calls this node refused or stopped before sending because it did not own the shard at the epoch asked, or its view was not current.",
        );
        out.sample("quire_fenced_calls_total", &[], s.fenced as f64);
        out.family(
            "quire_forward_duration_seconds",
            "histogram",
            "Round trip of forwarded Notion calls, from the entry node.",
        );
        if let Some(h) = &s.latency {
            out.histogram("quire_forward_duration_seconds", &[], h);
        }
    });
}

fn render_handoff(out: &mut Page, app: &App) {
    out.family(
        "quire_limiter_handoffs_total",
        "counter",
        "Rate-limiter snapshots handed off when an integration's shard moved, by outcome: sent (the new owner adopted it) and failed (not delivered, or refused) on the old owner; adopted and refused (not the shard's owner at that epoch, or an unknown integration) on the new owner.",
    );
    for (outcome, n) in app.forward.handoff.counts() {
        out.sample(
            "quire_limiter_handoffs_total",
            &[("outcome", outcome)],
            n as f64,
        );
    }
}

fn render_tools(out: &mut Page, metrics: &NodeMetrics) {
    let c = metrics.counters.lock().unwrap_or_else(|p| p.into_inner());
    out.family(
        "quire_tool_calls_total",
        "counter",
        "MCP tool calls by tool and outcome (ok, denied, or the tool error code).",
    );
    for ((tool, outcome), n) in &c.tool_calls {
        out.sample(
            "quire_tool_calls_total",
            &[("tool", tool), ("outcome", outcome)],
            *n as f64,
        );
    }
    out.family(
        "quire_tool_call_duration_seconds",
        "histogram",
        "Time from a tool call's arrival to its answer, its audit commit included.",
    );
    for (tool, h) in &c.tool_durations {
        out.histogram("quire_tool_call_duration_seconds", &[("tool", tool)], h);
    }
    out.family(
        "quire_admin_requests_total",
        "counter",
        "Admin API requests by outcome (ok, denied, invalid, not_found, conflict, unavailable, error).",
    );
    for (outcome, n) in &c.admin_requests {
        out.sample(
            "quire_admin_requests_total",
            &[("outcome", outcome)],
            *n as f64,
        );
    }
}

fn render_notion(out: &mut Page, app: &App) {
    let stats = app.data.notion_stats().snapshot();
    out.family(
        "quire_notion_requests_total",
        "counter",
        "Requests sent to Notion by integration and status (HTTP status, or timeout, transport, decode).",
    );
    for (integration, s) in &stats {
        for (status, n) in &s.requests_by_status {
            out.sample(
                "quire_notion_requests_total",
                &[("integration", integration), ("status", status)],
                *n as f64,
            );
        }
    }
    out.family(
        "quire_rate_limiter_waiting_calls",
        "gauge",
        "Calls waiting for a permit from an integration's rate limiter.",
    );
    for (integration, s) in &stats {
        out.sample(
            "quire_rate_limiter_waiting_calls",
            &[("integration", integration)],
            s.waiting as f64,
        );
    }
    out.family(
        "quire_rate_limiter_wait_seconds",
        "histogram",
        "How long calls waited for a rate-limiter permit (granted or refused).",
    );
    for (integration, s) in &stats {
        out.histogram(
            "quire_rate_limiter_wait_seconds",
            &[("integration", integration)],
            &s.wait_seconds,
        );
    }
    let tenants = app.data.notion_stats().tenants();
    out.family(
        "quire_tenant_supervisors_started_total",
        "counter",
        "Tenant supervisors started (first call, first call after a passivation, restart after a failure).",
    );
    out.sample(
        "quire_tenant_supervisors_started_total",
        &[],
        tenants.started as f64,
    );
    out.family(
        "quire_tenant_supervisors_passivated_total",
        "counter",
        "Idle tenant supervisors stopped (limits.idle_tenant_ms); not failures.",
    );
    out.sample(
        "quire_tenant_supervisors_passivated_total",
        &[],
        tenants.passivated as f64,
    );
    out.family(
        "quire_tenant_supervisors_retired_total",
        "counter",
        "Tenant supervisors stopped because this node no longer owns a shard of any of the tenant's integrations (after their handoff).",
    );
    out.sample(
        "quire_tenant_supervisors_retired_total",
        &[],
        tenants.retired as f64,
    );
}

fn render_raft(out: &mut Page, app: &App) {
    let status = app.control.status();
    // openraft's metrics watch, read now: snapshot and replication progress.
    let (snapshot_index, committed) = {
        let m = app.control.raft().metrics().borrow().clone();
        let committed = status.is_leader.then(|| {
            let matched: Vec<u64> = status
                .voters
                .iter()
                .map(|id| {
                    if *id == status.node_id {
                        status.last_log_index.unwrap_or(0)
                    } else {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(id))
                            .and_then(|l| l.as_ref())
                            .map_or(0, |l| l.index)
                    }
                })
                .collect();
            quorum_index(matched)
        });
        (m.snapshot.as_ref().map(|l| l.index), committed.flatten())
    };
    let gauge = |out: &mut Page, name: &str, help: &str, value: Option<u64>| {
        out.family(name, "gauge", help);
        if let Some(v) = value {
            out.sample(name, &[], v as f64);
        }
    };
    gauge(
        out,
        "quire_raft_term",
        "Current Raft term.",
        Some(status.term),
    );
    gauge(
        out,
        "quire_raft_leader_id",
        "Node id of the leader this node knows of (absent when none).",
        status.leader,
    );
    gauge(
        out,
        "quire_raft_is_leader",
        "1 on the leader, 0 elsewhere.",
        Some(u64::from(status.is_leader)),
    );
    gauge(
        out,
        "quire_raft_last_log_index",
        "Index of this node's last log entry.",
        status.last_log_index,
    );
    gauge(
        out,
        "quire_raft_committed_index",
        "Highest index held by a quorum of voters (reported by the leader only).",
        committed,
    );
    gauge(
        out,
        "quire_raft_applied_index",
        "Index of the last entry applied to this node's state machine.",
        status.applied_index,
    );
    gauge(
        out,
        "quire_raft_apply_lag",
        "Entries in this node's log not yet applied (last log index - applied index).",
        Some(
            status
                .last_log_index
                .unwrap_or(0)
                .saturating_sub(status.applied_index.unwrap_or(0)),
        ),
    );
    gauge(
        out,
        "quire_raft_snapshot_index",
        "Last log index included in this node's latest snapshot (absent before the first).",
        snapshot_index,
    );
    render_raft_snapshot_and_followers(out, app);
}

/// The latest snapshot's size and the builds, as the store recorded them (nothing is
/// serialised here), and on the leader each follower's replication progress.
fn render_raft_snapshot_and_followers(out: &mut Page, app: &App) {
    let snapshot = app.control.snapshot_stats();
    out.family(
        "quire_raft_snapshot_bytes",
        "gauge",
        "Size in bytes of the latest snapshot this node built, installed or loaded at start (0 before any).",
    );
    out.sample("quire_raft_snapshot_bytes", &[], snapshot.bytes as f64);
    out.family(
        "quire_raft_snapshots_built_total",
        "counter",
        "Snapshots this node built since it started.",
    );
    out.sample(
        "quire_raft_snapshots_built_total",
        &[],
        snapshot.built as f64,
    );
    // openraft reports replication progress only on the leader; it includes the leader.
    let (me, last_log_index, replication) = {
        let m = app.control.raft().metrics();
        let m = m.borrow();
        (m.id, m.last_log_index.unwrap_or(0), m.replication.clone())
    };
    let followers: Vec<(String, u64)> = replication
        .into_iter()
        .flatten()
        .filter(|(id, _)| *id != me)
        .map(|(id, matched)| (id.to_string(), matched.map_or(0, |l| l.index)))
        .collect();
    out.family(
        "quire_raft_follower_matched_index",
        "gauge",
        "On the leader: the last log index each follower holds (0 until it holds one).",
    );
    for (node, matched) in &followers {
        out.sample(
            "quire_raft_follower_matched_index",
            &[("node", node)],
            *matched as f64,
        );
    }
    out.family(
        "quire_raft_follower_lag_entries",
        "gauge",
        "On the leader: entries each follower lacks (leader's last log index - its matched index).",
    );
    for (node, matched) in &followers {
        out.sample(
            "quire_raft_follower_lag_entries",
            &[("node", node)],
            last_log_index.saturating_sub(*matched) as f64,
        );
    }
}

/// The index a quorum of voters holds, given each voter's matched index.
fn quorum_index(mut matched: Vec<u64>) -> Option<u64> {
    let quorum = matched.len() / 2 + 1;
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(quorum - 1).copied()
}

fn render_audit(out: &mut Page, app: &App) {
    let stats = &app.audit.stats;
    out.family(
        "quire_audit_events_total",
        "counter",
        "Audit events this node handed to the trail, by outcome (committed or failed).",
    );
    out.sample(
        "quire_audit_events_total",
        &[("outcome", "committed")],
        stats.events.load(Ordering::Relaxed) as f64,
    );
    out.sample(
        "quire_audit_events_total",
        &[("outcome", "failed")],
        stats.failed.load(Ordering::Relaxed) as f64,
    );
    let (sizes, latency) = stats.histograms();
    out.family(
        "quire_audit_batch_size",
        "histogram",
        "Audit events per committed AppendAudit batch.",
    );
    out.histogram("quire_audit_batch_size", &[], &sizes);
    out.family(
        "quire_audit_commit_seconds",
        "histogram",
        "Time to commit one audit batch through Raft (committed or not).",
    );
    out.histogram("quire_audit_commit_seconds", &[], &latency);
}

/// The shard map as this node applied it: what this node owns, whether it is draining, and
/// how far the map has moved (no per-shard or per-tenant labels).
fn render_placement(out: &mut Page, app: &App) {
    let me = app.config.node.id;
    let (owned, draining, nodes_draining, epoch_max, moves) = app.control.read_applied(|s| {
        let p = s.placement();
        (
            crate::placement::shards_owned(s, me),
            p.is_draining(me),
            p.draining.len(),
            p.shards.values().map(|o| o.epoch).max().unwrap_or(0),
            p.shards.values().map(|o| o.epoch).sum::<u64>(),
        )
    });
    out.family(
        "quire_shards_owned",
        "gauge",
        "Shards this node owns in the applied shard map.",
    );
    out.sample("quire_shards_owned", &[], owned as f64);
    out.family(
        "quire_node_draining",
        "gauge",
        "1 while this node is being drained (it receives no shards), else 0.",
    );
    out.sample("quire_node_draining", &[], if draining { 1.0 } else { 0.0 });
    out.family(
        "quire_placement_nodes_draining",
        "gauge",
        "Nodes of the cluster being drained.",
    );
    out.sample("quire_placement_nodes_draining", &[], nodes_draining as f64);
    out.family(
        "quire_placement_epoch_max",
        "gauge",
        "Highest shard epoch in the applied shard map.",
    );
    out.sample("quire_placement_epoch_max", &[], epoch_max as f64);
    out.family(
        "quire_placement_moves_total",
        "counter",
        "Changes of a shard's owner the applied shard map has recorded (the sum of the shards' epochs).",
    );
    out.sample("quire_placement_moves_total", &[], moves as f64);
}

/// A page of the text exposition format being written.
#[derive(Default)]
struct Page {
    text: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let cumulative = h.cumulative();
        for (i, count) in cumulative.iter().enumerate() {
            let le = h
                .bounds()
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| format_value(*b));
            let _ = write!(self.text, "{name}_bucket");
            write_labels(&mut self.text, labels, Some(&le));
            let _ = writeln!(self.text, " {count}");
        }
        let _ = write!(self.text, "{name}_sum");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", format_value(h.sum()));
        let _ = write!(self.text, "{name}_count");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", h.count());
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
    }
    out.push('}');
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A parsed sample of the text format: its name, labels and value (for tests and tools).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page: `# TYPE` declarations and samples. Refuses lines that are not
/// in the text format, so a test that parses a page also checks its syntax.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Parsed {
    /// The value of the sample `name` whose labels include every pair of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

/// Parses a page of the text exposition format.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    for (n, line) in text.lines().enumerate() {
        let at = n + 1;
        if line.is_empty() || line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {at}: malformed TYPE: {line}"));
            };
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("line {at}: unknown type {kind}"));
            }
            parsed.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name_and_labels, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {at}: no value: {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| format!("line {at}: bad value {v:?}"))?,
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            None => (name_and_labels, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("line {at}: unclosed labels: {line}"))?;
                (
                    name,
                    parse_labels(body).map_err(|e| format!("line {at}: {e}"))?,
                )
            }
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("line {at}: bad metric name {name:?}"));
        }
        parsed.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(parsed)
}

fn parse_labels(body: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return Err(format!("label {key} has no quoted value"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => return Err(format!("label {key}'s value is not closed")),
            }
        }
        labels.insert(key, value);
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return Err(format!("unexpected {c:?} after a label")),
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_labels_render_and_parse_back() {
        let mut page = Page::default();
        page.family("x_seconds", "histogram", "a test");
        let mut h = Histogram::new(&[0.5, 1.0]);
        h.observe(0.2);
        h.observe(3.0);
        page.histogram("x_seconds", &[("tool", "a\"b")], &h);
        page.family("y_total", "counter", "another");
        page.sample("y_total", &[("k", "v\\w\nz")], 7.0);
        let parsed = parse(&page.text).unwrap();
        assert_eq!(parsed.types["x_seconds"], "histogram");
        assert_eq!(
            parsed.value("x_seconds_bucket", &[("tool", "a\"b"), ("le", "0.5")]),
            Some(1.0)
        );
        assert_eq!(
            parsed.value("x_seconds_bucket", &[("le", "+Inf")]),
            Some(2.0)
        );
        assert_eq!(parsed.value("x_seconds_count", &[]), Some(2.0));
        assert_eq!(parsed.value("x_seconds_sum", &[]), Some(3.2));
        assert_eq!(parsed.value("y_total", &[("k", "v\\w\nz")]), Some(7.0));
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse("x{a=\"b\" 1\n").is_err());
        assert!(parse("x one\n").is_err());
        assert!(parse("# TYPE x weird\n").is_err());
        assert!(parse("bad-name 1\n").is_err());
    }

    #[test]
    fn the_committed_index_is_what_a_quorum_holds() {
        assert_eq!(quorum_index(vec![7]), Some(7));
        assert_eq!(quorum_index(vec![9, 4, 7]), Some(7));
        assert_eq!(quorum_index(vec![9, 4, 7, 8, 2]), Some(7));
        assert_eq!(quorum_index(vec![9, 4, 7, 8]), Some(7));
        assert_eq!(quorum_index(Vec::new()), None);
    }

    #[test]
    fn admin_outcomes_are_a_closed_set() {
        assert_eq!(admin_outcome(StatusCode::OK), "ok");
        assert_eq!(admin_outcome(StatusCode::ACCEPTED), "ok");
        assert_eq!(admin_outcome(StatusCode::FORBIDDEN), "denied");
        assert_eq!(admin_outcome(StatusCode::BAD_REQUEST), "invalid");
        assert_eq!(admin_outcome(StatusCode::INTERNAL_SERVER_ERROR), "error");
    }
}
