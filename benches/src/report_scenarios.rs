//! The failover, budget-share, memory, forwarding and drain-time benchmarks as
//! `quire-bench report` runs them: short runs, each written as JSON next to the report, their
//! headline lines and their Markdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admin_writes::{RunOpts, write_file};
use crate::budget_share::{self, BudgetShareArgs};
use crate::drain_time::{self, DrainTimeArgs};
use crate::failover::{self, FailoverArgs};
use crate::forwarding::{self, ForwardingArgs};
use crate::memory::{self, MemoryArgs};
use crate::report::Figures;

/// What the report runs.
#[derive(Debug, Clone)]
pub struct ScenarioSpec {
    pub quire_bin: PathBuf,
    pub work_dir: Option<PathBuf>,
    /// Where the JSON goes.
    pub out_dir: PathBuf,
    /// Leader kills of the failover run.
    pub kills: usize,
    /// Measured seconds of the budget-share run (after 3 s of warm-up).
    pub budget_duration: Duration,
    pub tenants: usize,
    pub sessions: usize,
    /// Measured calls per side of the forwarding run.
    pub forwarding_calls: usize,
    /// Tenants of the drain-time run.
    pub drain_tenants: usize,
}

/// Headline lines (Markdown, one item each) and the figures' Markdown.
#[derive(Debug, Clone, Default)]
pub struct ScenarioOutput {
    pub headline: Vec<String>,
    pub markdown: String,
    /// The JSON files written, relative to the output directory.
    pub json_files: Vec<String>,
}

impl ScenarioOutput {
    /// Adds one run: `report` written as JSON to `name` in `out_dir`, its `headline`, and its
    /// Markdown (after a blank line when figures are there already).
    fn add(
        &mut self,
        out_dir: &Path,
        name: &str,
        report: &impl Figures,
        headline: String,
    ) -> anyhow::Result<()> {
        save(&out_dir.join(name), report)?;
        self.headline.push(headline);
        if !self.markdown.is_empty() {
            self.markdown.push('\n');
        }
        self.markdown.push_str(&report.to_markdown());
        self.json_files.push(name.to_owned());
        Ok(())
    }
}

/// Runs failover, budget-share, memory, forwarding and drain-time in turn and writes
/// `failover.json`, `budget-share.json`, `memory.json`, `forwarding.json` and
/// `drain-time.json` to the output directory.
pub async fn run(
    spec: &ScenarioSpec,
    command: &str,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<ScenarioOutput> {
    let mut out = ScenarioOutput::default();

    let f = failover::run(
        &FailoverArgs {
            kills: spec.kills,
            probe_interval_ms: 20,
            probe_timeout_secs: 5,
            settle_secs: 2,
            give_up_secs: 30,
            run: RunOpts::in_dir(spec.work_dir.clone()),
        },
        spec.quire_bin.clone(),
        command.to_owned(),
        progress,
    )
    .await?;
    let (median, max, never) = f.first_write_summary();
    let headline = format!(
        "Failover (kill -9 of the leader, {} times): first acknowledged write after **{median:.0} ms** median, \
         **{max:.0} ms** max{} (goal under {} ms)",
        f.kills.len(),
        if never > 0 {
            format!(", {never} kill(s) without one")
        } else {
            String::new()
        },
        failover::GOAL.as_millis()
    );
    out.add(&spec.out_dir, "failover.json", &f, headline)?;

    let b = budget_share::run(
        &BudgetShareArgs {
            budget: 3,
            burst: 5,
            clients_per_node: 4,
            sandbox_rate_limit: "3".into(),
            sandbox_burst: 10,
            duration_secs: spec.budget_duration.as_secs().max(1),
            warmup_secs: 3,
            run: RunOpts::in_dir(spec.work_dir.clone()),
        },
        spec.quire_bin.clone(),
        command.to_owned(),
        progress,
    )
    .await?;
    let headline = format!(
        "Budget share (one integration at 3/s, MCP clients on all 3 nodes): **{:.0}%** of the budget used, \
         **{}** answered 429 by Notion's limit (goals: at least 95% and 0)",
        b.share_of_budget * 100.0,
        b.sandbox.rate_limited
    );
    out.add(&spec.out_dir, "budget-share.json", &b, headline)?;

    let m = memory::run(
        &MemoryArgs {
            tenants: spec.tenants,
            sessions: spec.sessions,
            concurrency: 32,
            run: RunOpts::in_dir(spec.work_dir.clone()),
        },
        spec.quire_bin.clone(),
        command.to_owned(),
        progress,
    )
    .await?;
    let headline = format!(
        "Memory of one node: {:.0} MiB idle, **{:.1} KiB per tenant** ({} tenants), **{:.1} KiB per open MCP \
         session** ({} sessions)",
        m.rss_idle_kib as f64 / 1024.0,
        m.per_tenant_kib(),
        m.tenants,
        m.per_session_kib(),
        m.sessions
    );
    out.add(&spec.out_dir, "memory.json", &m, headline)?;

    let f = forwarding::run(
        &ForwardingArgs {
            calls: spec.forwarding_calls,
            warmup_calls: (spec.forwarding_calls / 10).max(1),
            settle_timeout_secs: 60,
            run: RunOpts::in_dir(spec.work_dir.clone()),
        },
        spec.quire_bin.clone(),
        command.to_owned(),
        progress,
    )
    .await?;
    let headline = format!(
        "Forwarding to the shard's owner over mutual TLS ({} calls a side, interleaved): remote / local p50 \
         **{}x** ({:.2} ms against {:.2} ms), p99 **{}x**",
        f.calls_per_side,
        crate::report::ratio(f.p50_ratio),
        f.remote.latency_us.p50 as f64 / 1000.0,
        f.local.latency_us.p50 as f64 / 1000.0,
        crate::report::ratio(f.p99_ratio)
    );
    out.add(&spec.out_dir, "forwarding.json", &f, headline)?;

    let defaults = quire_node::config::PlacementSection::default();
    let d = drain_time::run(
        &DrainTimeArgs {
            tenants: spec.drain_tenants,
            concurrency: 32,
            interval_ms: defaults.interval_ms,
            max_moves_per_round: defaults.max_moves_per_round,
            node: None,
            poll_ms: 100,
            settle_timeout_secs: 120,
            drain_timeout_secs: 300,
            run: RunOpts::in_dir(spec.work_dir.clone()),
        },
        spec.quire_bin.clone(),
        command.to_owned(),
        progress,
    )
    .await?;
    let headline = format!(
        "Drain of one node of 3 ({} tenants): **{} shards** moved off in **{:.1} s** (at most {} moves a round, \
         one round every {} ms)",
        d.tenants, d.shards_moved, d.seconds_to_empty, d.max_moves_per_round, d.interval_ms
    );
    out.add(&spec.out_dir, "drain-time.json", &d, headline)?;
    Ok(out)
}

fn save<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_file(path, &serde_json::to_string_pretty(value)?)
}
