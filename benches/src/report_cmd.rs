//! `quire-bench report`: runs the side-by-side with Notion's MCP server (closed loop and an
//! open-loop sweep), the Raft commit benchmark and the failover, budget-share, memory,
//! forwarding and drain-time scenarios (`report_scenarios`) with modest durations, and writes
//! `benches/REPORT.md`, the JSON of each run and the latency-against-load charts (SVG) to
//! `benches/report/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::chart::{self, Series};
use crate::raft_commit::{self, RaftCommitSpec, Target};
use crate::side_by_side::{self, Op, Side, SideBySideReport, SideBySideSpec};

/// What `quire-bench report` runs and where it writes.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    pub quire_bin: PathBuf,
    pub npm_dir: PathBuf,
    pub markdown: PathBuf,
    pub out_dir: PathBuf,
    pub warmup: Duration,
    pub duration: Duration,
    pub clients: Vec<usize>,
    pub open_rates: Vec<f64>,
    pub raft_writers: Vec<usize>,
    pub work_dir: Option<PathBuf>,
}

/// Open calls the sweep allows outstanding.
pub const OPEN_MAX_OUTSTANDING: usize = 64;

fn series(report: &SideBySideReport, p99: bool) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in &report.open {
        let y = if p99 {
            r.result.latency_us.p99
        } else {
            r.result.latency_us.p50
        } as f64
            / 1000.0;
        let name = r.side.label().to_owned();
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((r.result.target_rate, y)),
            None => out.push(Series {
                name,
                points: vec![(r.result.target_rate, y)],
            }),
        }
    }
    out
}

/// The open-loop sweep's p99 latency against offered load, one line per side.
pub fn chart(report: &SideBySideReport) -> String {
    let op = report.open.first().map_or("", |r| r.op.label());
    chart::latency_chart(
        &format!("p99 latency against offered load ({op}, open loop)"),
        "p99 latency, ms (log scale)",
        &series(report, true),
    )
}

fn p50_chart(report: &SideBySideReport) -> String {
    let op = report.open.first().map_or("", |r| r.op.label());
    chart::latency_chart(
        &format!("p50 latency against offered load ({op}, open loop)"),
        "p50 latency, ms (log scale)",
        &series(report, false),
    )
}

/// The headline: each Quire side against Notion's server at the highest concurrency level
/// both ran, per operation.
pub fn headline(report: &SideBySideReport) -> Vec<String> {
    let ratios = report.ratios();
    let top = ratios.iter().map(|r| r.clients).max();
    ratios
        .iter()
        .filter(|r| Some(r.clients) == top)
        .map(|r| {
            format!(
                "{} vs Notion's server, {} at {} clients: **{:.2}x** the calls/s, p99 **{:.2}x**, server CPU per call **{:.2}x**",
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

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs everything and writes the report.
pub async fn run(spec: ReportSpec, command: String) -> anyhow::Result<()> {
    let mut progress = crate::admin_writes::progress;
    std::fs::create_dir_all(&spec.out_dir)
        .with_context(|| format!("cannot create {}", spec.out_dir.display()))?;
    let mut sides = vec![Side::Quire1, Side::Quire3];
    let mut skipped = None;
    if side_by_side::command_exists("node") {
        sides.push(Side::Notion);
    } else {
        skipped = Some(
            "Notion's MCP server was not run: Node.js is not installed (Debian: `apt-get install nodejs npm`)",
        );
        progress(skipped.unwrap_or_default());
    }
    let mcp_spec = SideBySideSpec {
        quire_bin: spec.quire_bin.clone(),
        npm_dir: spec.npm_dir.clone(),
        sides,
        ops: vec![Op::Page, Op::Query, Op::Search],
        clients: spec.clients.clone(),
        warmup: spec.warmup,
        duration: spec.duration,
        open_rates: spec.open_rates.clone(),
        open_op: Op::Page,
        open_max_outstanding: OPEN_MAX_OUTSTANDING,
        work_dir: spec.work_dir.clone(),
    };
    let mcp = side_by_side::run(&mcp_spec, command.clone(), &mut progress).await?;
    write(
        &spec.out_dir.join("mcp-side-by-side.json"),
        &serde_json::to_string_pretty(&mcp)?,
    )?;
    write(&spec.out_dir.join("latency-p99.svg"), &chart(&mcp))?;
    write(&spec.out_dir.join("latency-p50.svg"), &p50_chart(&mcp))?;

    let raft_spec = RaftCommitSpec {
        quire_bin: spec.quire_bin.clone(),
        writers: spec.raft_writers.clone(),
        warmup: spec.warmup,
        duration: spec.duration,
        target: Target::Leader,
        work_dir: spec.work_dir.clone(),
        with_etcd: crate::etcd::version().is_some(),
    };
    let raft = raft_commit::run(&raft_spec, command.clone(), &mut progress).await?;
    write(
        &spec.out_dir.join("raft-commit.json"),
        &serde_json::to_string_pretty(&raft)?,
    )?;

    let scenarios = crate::report_scenarios::run(
        &crate::report_scenarios::ScenarioSpec {
            quire_bin: spec.quire_bin.clone(),
            work_dir: spec.work_dir.clone(),
            out_dir: spec.out_dir.clone(),
            kills: 3,
            budget_duration: spec.duration * 2,
            tenants: crate::memory::MAX_TENANTS - 1,
            sessions: crate::memory::MAX_SESSIONS,
            forwarding_calls: 1_000,
            drain_tenants: 300,
        },
        &command,
        &mut progress,
    )
    .await?;

    let chart_dir = relative(&spec.out_dir, &spec.markdown);
    let mut md = String::from("# Quire benchmark report\n\n");
    md.push_str(
        "Written by `benches/report.sh` (a release build, then `target/release/quire-bench report`); \
         every figure below comes from the run that wrote this file. The machine is small and may \
         be shared: compare sides within this run, as ratios, not with other machines.\n\n",
    );
    md.push_str("## Headline\n\n");
    let lines = headline(&mcp);
    if lines.is_empty() {
        md.push_str("- no ratio: Notion's server was not run\n");
    }
    for line in lines {
        let _ = writeln!(md, "- {line}");
    }
    for s in &mcp.sides {
        let _ = writeln!(
            md,
            "- {}: peak memory {:.0} MiB after the closed loop, {:.0} MiB after the open-loop sweep \
             ({} process(es), VmHWM summed)",
            s.side.label(),
            s.peak_rss_closed_kib as f64 / 1024.0,
            s.peak_rss_kib as f64 / 1024.0,
            s.pids.len()
        );
    }
    let best = raft
        .levels
        .iter()
        .map(|l| l.result.ok_per_sec)
        .fold(0.0_f64, f64::max);
    let _ = writeln!(
        md,
        "- Raft commit: up to {best:.0} committed, fsynced writes/s on 3 processes (levels {:?} writers)",
        spec.raft_writers
    );
    if raft.etcd.is_empty() {
        let _ = writeln!(
            md,
            "- etcd was not run side by side: {}",
            crate::etcd::INSTALL_HINT
        );
    }
    for (writers, ratio) in raft.etcd_ratios() {
        let _ = writeln!(
            md,
            "- Raft commit vs etcd (3 members, same run) at {writers} writers: **{}x** etcd's committed writes/s",
            crate::report::ratio(ratio)
        );
    }
    for line in &scenarios.headline {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(
        md,
        "- goals (issue 7): at least 10x the calls/s of Notion's server at equal concurrency with a lower p99; \
         the ratios above say where Quire stands"
    );
    if let Some(note) = skipped {
        let _ = writeln!(md, "- {note}");
    }
    let _ = writeln!(md, "\n## Machine and commands\n");
    let _ = writeln!(md, "- machine: {}", mcp.machine.summary());
    let _ = writeln!(
        md,
        "- load average (1/5/15 min): {} at start, {} at end",
        mcp.load_average_start, raft.load_average_end
    );
    let _ = writeln!(md, "- commit: `{}`", mcp.git_commit);
    let _ = writeln!(md, "- command: `{command}`");
    let _ = writeln!(
        md,
        "- the same runs alone: `quire-bench mcp-side-by-side --clients {} --duration-secs {} --warmup-secs {} --open-rates {}` and \
         `quire-bench raft-commit --writers {} --duration-secs {} --warmup-secs {}`",
        join(&spec.clients),
        spec.duration.as_secs(),
        spec.warmup.as_secs(),
        join(&spec.open_rates),
        join(&spec.raft_writers),
        spec.duration.as_secs(),
        spec.warmup.as_secs()
    );
    let _ = writeln!(md, "\n## Latency against load\n");
    let _ = writeln!(
        md,
        "Open loop: calls start on a fixed schedule whatever the answers do, latency runs from each \
         call's intended start (queueing counts), at most {OPEN_MAX_OUTSTANDING} calls outstanding \
         (a call due beyond that is dropped and counted).\n"
    );
    let _ = writeln!(
        md,
        "![p99 latency against offered load]({chart_dir}/latency-p99.svg)\n"
    );
    let _ = writeln!(
        md,
        "![p50 latency against offered load]({chart_dir}/latency-p50.svg)\n"
    );
    md.push_str("## Figures\n\n");
    md.push_str(&mcp.to_markdown());
    md.push('\n');
    md.push_str(&raft.to_markdown());
    md.push('\n');
    md.push_str(&scenarios.markdown);
    let _ = writeln!(
        md,
        "\nJSON: `{chart_dir}/mcp-side-by-side.json`, `{chart_dir}/raft-commit.json`, {}.",
        scenarios
            .json_files
            .iter()
            .map(|f| format!("`{chart_dir}/{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    write(&spec.markdown, &md)?;
    print!("{md}");
    progress(&format!("wrote {}", spec.markdown.display()));
    Ok(())
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `dir` as seen from the directory of `file` (for links in the Markdown), or `dir` itself.
fn relative(dir: &Path, file: &Path) -> String {
    let base = file.parent().unwrap_or(Path::new("."));
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let (dir, base) = (canon(dir), canon(base));
    dir.strip_prefix(&base)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_to_the_report() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("report");
        std::fs::create_dir_all(&out).unwrap();
        assert_eq!(relative(&out, &d.path().join("REPORT.md")), "report");
        assert_eq!(join(&[1, 8, 32]), "1,8,32");
    }
}
