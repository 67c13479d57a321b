//! `quire-bench`: runs Quire's benchmarks and prints their figures with the machine, the
//! commit and the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use quire_bench::admin_writes::{emit, progress, quire_bin, write_file};
use quire_bench::audit_commit::{self, AuditCommitSpec};
use quire_bench::raft_commit::{self, RaftCommitSpec, Target};
use quire_bench::side_by_side::{self, Op, Side, SideBySideSpec};

#[derive(Parser)]
#[command(name = "quire-bench", about = "Quire benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Committed, fsynced Raft writes per second and their latency on a 3-process loopback
    /// cluster, at each concurrency level.
    RaftCommit(RaftCommitArgs),
    /// Audited MCP tool calls per second on a 3-process loopback cluster (each answered
    /// after its audit record committed), with the audit group commit against one record per
    /// Raft entry, both in the same run.
    AuditCommit(AuditCommitArgs),
    /// Quire (one node, three nodes) against Notion's own local MCP server
    /// (`@notionhq/notion-mcp-server --transport http`) on the same Notion sandbox, in one
    /// run: tool calls/s and latency at equal concurrency for equivalent operations, an
    /// optional open-loop sweep, and peak memory.
    McpSideBySide(SideBySideArgs),
    /// Kills the leader of a 3-process cluster with `kill -9` several times while writes
    /// go to the followers: time to the first acknowledged write and to a new leader.
    Failover(quire_bench::failover::FailoverArgs),
    /// Share of one integration's Notion budget used, and Notion's 429s, with MCP clients on
    /// every node of a 3-node cluster asking for far more than the budget.
    BudgetShare(quire_bench::budget_share::BudgetShareArgs),
    /// Resident memory of one node idle, after creating tenants and after opening MCP
    /// sessions; per tenant and per session.
    Memory(quire_bench::memory::MemoryArgs),
    /// Latency of a tool call whose shard owner is the entry node against one forwarded to
    /// the owner over the peer transport, interleaved in one run on a 3-node cluster.
    Forwarding(quire_bench::forwarding::ForwardingArgs),
    /// Time to move every shard off a drained node of a 3-node cluster holding many
    /// tenants, with the progress seen in `GET /admin/v1/placement`.
    DrainTime(quire_bench::drain_time::DrainTimeArgs),
    /// Runs the side-by-side (with its open-loop sweep), the Raft commit benchmark,
    /// failover, budget-share, memory, forwarding and drain-time with modest durations and writes
    /// benches/REPORT.md, the JSON and a latency chart (SVG).
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct SideBySideArgs {
    /// The sides, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "quire1,quire3,notion"
    )]
    sides: Vec<Side>,
    /// The operations, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "page,query,search"
    )]
    ops: Vec<Op>,
    /// Closed-loop concurrency levels (MCP clients), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Measured seconds per level.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Seconds per level before measuring starts.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Open-loop arrival rates (calls/s), comma-separated; none by default.
    #[arg(long, value_delimiter = ',')]
    open_rates: Vec<f64>,
    /// The operation of the open-loop sweep.
    #[arg(long, value_enum, default_value_t = Op::Page)]
    open_op: Op,
    /// Most calls outstanding in the open loop; a call due beyond it is dropped.
    #[arg(long, default_value_t = 64)]
    open_max_outstanding: usize,
    /// Where Notion's server is installed with npm (default: target/bench-cache/npm).
    #[arg(long, value_name = "DIR")]
    npm_dir: Option<PathBuf>,
    /// The quire binary (default: `quire` next to this executable).
    #[arg(long)]
    quire_bin: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the Markdown to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write the open-loop sweep's latency chart (SVG) to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Where the clusters' temporary directories are made.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The report to write.
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/REPORT.md"))]
    markdown: PathBuf,
    /// Where the JSON and the chart go.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/report"))]
    out_dir: PathBuf,
    /// Measured seconds per level.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Seconds per level before measuring starts.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Closed-loop MCP clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Open-loop arrival rates (calls/s) of the latency-against-load sweep.
    #[arg(long, value_delimiter = ',', default_value = "100,200,400,800,1200")]
    open_rates: Vec<f64>,
    /// Raft commit writers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    raft_writers: Vec<usize>,
    /// Where Notion's server is installed with npm (default: target/bench-cache/npm).
    #[arg(long, value_name = "DIR")]
    npm_dir: Option<PathBuf>,
    /// The quire binary (default: `quire` next to this executable).
    #[arg(long)]
    quire_bin: Option<PathBuf>,
    /// Where the clusters' temporary directories are made.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct AuditCommitArgs {
    /// Concurrency levels (MCP clients over the three nodes), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    clients: Vec<usize>,
    /// The sides: `limits.audit_max_batch` of each cluster, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,512")]
    batches: Vec<usize>,
    /// Measured seconds per level.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds per level before measuring starts.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// The quire binary (default: `quire` next to this executable).
    #[arg(long)]
    quire_bin: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the Markdown to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Where the clusters' temporary directories are made.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RaftCommitArgs {
    /// Concurrency levels (closed-loop writers), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    writers: Vec<usize>,
    /// Measured seconds per level.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds per level before measuring starts.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// The node the writers send to (a follower forwards to the leader).
    #[arg(long, value_enum, default_value_t = Target::Leader)]
    target: Target,
    /// The quire binary (default: `quire` next to this executable, i.e. target/release/quire
    /// for a release build).
    #[arg(long)]
    quire_bin: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the Markdown to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Where the cluster's temporary directory is made (default: the system temp dir).
    /// Put it on the disk you want to measure: fsync on tmpfs costs nothing.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Then run the same levels against a 3-member etcd cluster on loopback (Debian's
    /// `etcd-server`) in the same run, and print the ratios.
    #[arg(long)]
    with_etcd: bool,
}

/// `target/bench-cache/npm`, from this executable's place in `target/<profile>/`.
fn default_npm_dir() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this executable's path")?;
    let target = me
        .parent()
        .and_then(Path::parent)
        .context("this executable is not inside a target/<profile>/ directory")?;
    Ok(target.join("bench-cache").join("npm"))
}

async fn raft_commit(args: RaftCommitArgs, command: String) -> anyhow::Result<()> {
    let quire_bin = quire_bin(args.quire_bin)?;
    if args.duration_secs == 0 {
        bail!("--duration-secs must be at least 1");
    }
    let spec = RaftCommitSpec {
        quire_bin,
        writers: args.writers,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        target: args.target,
        work_dir: args.work_dir,
        with_etcd: args.with_etcd,
    };
    let report = raft_commit::run(&spec, command, &mut progress).await?;
    emit(
        &report.to_text(),
        &report.to_markdown(),
        &report,
        args.markdown.as_deref(),
        args.json.as_deref(),
    )
}

async fn audit_commit(args: AuditCommitArgs, command: String) -> anyhow::Result<()> {
    let quire_bin = quire_bin(args.quire_bin)?;
    if args.duration_secs == 0 {
        bail!("--duration-secs must be at least 1");
    }
    let spec = AuditCommitSpec {
        quire_bin,
        clients: args.clients,
        batches: args.batches,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        work_dir: args.work_dir,
    };
    let report = audit_commit::run(&spec, command, &mut progress).await?;
    emit(
        &report.to_text(),
        &report.to_markdown(),
        &report,
        args.markdown.as_deref(),
        args.json.as_deref(),
    )
}

async fn mcp_side_by_side(args: SideBySideArgs, command: String) -> anyhow::Result<()> {
    if args.duration_secs == 0 {
        bail!("--duration-secs must be at least 1");
    }
    let spec = SideBySideSpec {
        quire_bin: quire_bin(args.quire_bin)?,
        npm_dir: match args.npm_dir {
            Some(path) => path,
            None => default_npm_dir()?,
        },
        sides: args.sides,
        ops: args.ops,
        clients: args.clients,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        open_rates: args.open_rates,
        open_op: args.open_op,
        open_max_outstanding: args.open_max_outstanding,
        work_dir: args.work_dir,
    };
    let report = side_by_side::run(&spec, command, &mut progress).await?;
    print!("{}", report.to_text());
    if let Some(path) = &args.markdown {
        write_file(path, &report.to_markdown())?;
    }
    if let Some(path) = &args.json {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = &args.svg {
        write_file(path, &quire_bench::report_cmd::chart(&report))?;
    }
    Ok(())
}

async fn report(args: ReportArgs, command: String) -> anyhow::Result<()> {
    quire_bench::report_cmd::run(report_spec(args)?, command).await
}

fn report_spec(args: ReportArgs) -> anyhow::Result<quire_bench::report_cmd::ReportSpec> {
    if args.duration_secs == 0 {
        bail!("--duration-secs must be at least 1");
    }
    Ok(quire_bench::report_cmd::ReportSpec {
        quire_bin: quire_bin(args.quire_bin)?,
        npm_dir: match args.npm_dir {
            Some(path) => path,
            None => default_npm_dir()?,
        },
        markdown: args.markdown,
        out_dir: args.out_dir,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        clients: args.clients,
        open_rates: args.open_rates,
        raft_writers: args.raft_writers,
        work_dir: args.work_dir,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = quire_bench::report::command_line(std::env::args());
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::RaftCommit(args) => raft_commit(args, command).await,
        Command::AuditCommit(args) => audit_commit(args, command).await,
        Command::McpSideBySide(args) => mcp_side_by_side(args, command).await,
        Command::Report(args) => report(args, command).await,
        Command::Failover(args) => quire_bench::failover::main(args, command).await,
        Command::BudgetShare(args) => quire_bench::budget_share::main(args, command).await,
        Command::Memory(args) => quire_bench::memory::main(args, command).await,
        Command::Forwarding(args) => quire_bench::forwarding::main(args, command).await,
        Command::DrainTime(args) => quire_bench::drain_time::main(args, command).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quire-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
