//! `quire-bench`: runs Quire's benchmarks and prints their figures with the machine, the
//! commit and the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use quire_bench::audit_commit::{self, AuditCommitSpec};
use quire_bench::raft_commit::{self, RaftCommitSpec, Target};

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
}

/// `quire` next to this executable.
fn default_quire_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = me
        .parent()
        .context("this executable's path has no directory")?;
    Ok(dir.join(format!("quire{}", std::env::consts::EXE_SUFFIX)))
}

fn write_file(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

async fn raft_commit(args: RaftCommitArgs, command: String) -> anyhow::Result<()> {
    let quire_bin = match args.quire_bin {
        Some(path) => path,
        None => default_quire_bin()?,
    };
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
    };
    let report =
        raft_commit::run(&spec, command, &mut |line| eprintln!("quire-bench: {line}")).await?;
    print!("{}", report.to_text());
    let markdown = report.to_markdown();
    match &args.markdown {
        Some(path) => write_file(path, &markdown)?,
        None => print!("\n{markdown}"),
    }
    if let Some(path) = &args.json {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

async fn audit_commit(args: AuditCommitArgs, command: String) -> anyhow::Result<()> {
    let quire_bin = match args.quire_bin {
        Some(path) => path,
        None => default_quire_bin()?,
    };
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
    let report =
        audit_commit::run(&spec, command, &mut |line| eprintln!("quire-bench: {line}")).await?;
    print!("{}", report.to_text());
    let markdown = report.to_markdown();
    match &args.markdown {
        Some(path) => write_file(path, &markdown)?,
        None => print!("\n{markdown}"),
    }
    if let Some(path) = &args.json {
        write_file(path, &serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let command = quire_bench::report::command_line(std::env::args());
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::RaftCommit(args) => raft_commit(args, command).await,
        Command::AuditCommit(args) => audit_commit(args, command).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quire-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
