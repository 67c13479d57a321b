//! `quire-sim`: run one seed, sweep many, list the planted bugs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use quire_sim::{Bug, RunOptions};

#[derive(Parser)]
#[command(
    name = "quire-sim",
    about = "Deterministic whole-cluster failure simulator for Quire"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one seed: a cluster under faults drawn from the seed, checked by the invariant
    /// checkers. Exits non-zero on a violation and prints the command that replays it.
    Run {
        /// The seed every random choice follows.
        #[arg(long)]
        seed: u64,
        /// Number of nodes (3 to 9).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Simulated seconds of workload (15 to 3600); the last 10 are fault-free.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Write the application-level trace to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Run the seed again in a child process and fail if the traces differ.
        #[arg(long)]
        check_determinism: bool,
        /// Turn on a planted bug (see `quire-sim bugs`).
        #[arg(long)]
        bug: Option<Bug>,
        /// Leave membership changes (remove a node, join it back) out of the faults; they
        /// are in by default.
        #[arg(long)]
        no_membership: bool,
    },
    /// Run seeds A..B (B excluded; A..=B includes it), one child process per seed, J at a
    /// time. Exits non-zero if any seed failed and lists their replay commands.
    Sweep {
        /// The seed range, `A..B` or `A..=B`.
        #[arg(long)]
        seeds: String,
        /// Child processes at a time.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Simulated seconds per seed.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Turn on a planted bug in every seed.
        #[arg(long)]
        bug: Option<Bug>,
        /// Start no more seeds once one has failed (those running finish).
        #[arg(long)]
        fail_fast: bool,
        /// Leave membership changes (remove a node, join it back) out of the faults; they
        /// are in by default.
        #[arg(long)]
        no_membership: bool,
        /// Run every seed twice, the second time in a fresh process, and fail a seed whose
        /// traces differ (doubles the sweep's time).
        #[arg(long)]
        check_determinism: bool,
    },
    /// List the planted bugs.
    Bugs,
}

/// Most seeds one sweep runs.
const MAX_SWEEP_SEEDS: u64 = 1_000_000;
/// Most child processes at a time.
const MAX_JOBS: usize = 64;

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run {
            seed,
            nodes,
            duration,
            trace,
            check_determinism,
            bug,
            no_membership,
        } => run_one(
            RunOptions {
                seed,
                nodes,
                duration_s: duration,
                bug,
                membership: !no_membership,
            },
            trace,
            check_determinism,
        ),
        Cmd::Sweep {
            seeds,
            jobs,
            nodes,
            duration,
            bug,
            fail_fast,
            no_membership,
            check_determinism,
        } => sweep(
            &seeds,
            SweepOptions {
                jobs,
                nodes,
                duration_s: duration,
                bug,
                fail_fast,
                membership: !no_membership,
                check_determinism,
            },
        ),
        Cmd::Bugs => {
            let width = Bug::ALL.iter().map(|b| b.name().len()).max().unwrap_or(0);
            for bug in Bug::ALL {
                let status = if bug.is_available() {
                    ""
                } else {
                    " [not available yet]"
                };
                println!("{:<width$}  {}{status}", bug.name(), bug.description());
            }
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("quire-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the CLI edge measures wall time for the speed ratio; it never enters the trace"
)]
fn wall_now() -> std::time::Instant {
    std::time::Instant::now()
}

fn run_one(
    options: RunOptions,
    trace_file: Option<PathBuf>,
    check_determinism: bool,
) -> anyhow::Result<bool> {
    options.validate().map_err(anyhow::Error::msg)?;
    let started = wall_now();
    let report = quire_sim::run(options.clone())?;
    let wall = started.elapsed();
    let hash = report.trace.sha256();
    if let Some(path) = &trace_file {
        std::fs::write(path, report.trace.text())
            .with_context(|| format!("cannot write the trace to {}", path.display()))?;
    }
    let ops = report.ops;
    println!(
        "seed {} nodes {} duration {} s{}{}",
        options.seed,
        options.nodes,
        options.duration_s,
        options.bug.map(|b| format!(" bug {b}")).unwrap_or_default(),
        if options.membership {
            ""
        } else {
            " no membership changes"
        }
    );
    println!(
        "ops: {} invoked, {} writes acknowledged, {} rejected by apply, {} reads, {} failed or timed out",
        ops.invoked, ops.writes_acked, ops.writes_rejected, ops.reads, ops.failed
    );
    println!(
        "faults applied: {}; terms with a leader: {}; state digests compared: {}; liveness: {}",
        report.faults_applied,
        report.terms_led,
        report.digests_taken,
        report
            .liveness_ms
            .map(|ms| format!("write ok {ms} ms after the final heal"))
            .unwrap_or_else(|| "no write after the final heal".into())
    );
    let tools = report.tools;
    println!(
        "tool calls: {} invoked, {} ok, {} failed; Notion received {} requests ({} answered 429/529, {} 500/503); pauses forgotten on restart or handoff: {}; tool liveness: {}",
        tools.invoked,
        tools.ok,
        tools.failed,
        tools.notion_requests,
        tools.notion_throttled,
        tools.notion_errors,
        tools.pauses_forgotten,
        report
            .tool_liveness_ms
            .map(|ms| format!("every integration ok {ms} ms after the final heal"))
            .unwrap_or_else(|| "not reached".into())
    );
    println!(
        "access: {} authorization decisions ({} refused); {} revocations ({} acknowledged); {} tool calls acknowledged; {} audit records in the converged state",
        tools.decisions,
        tools.refused,
        tools.revocations,
        tools.revocations_acked,
        tools.acknowledged,
        tools.audit_records
    );
    println!(
        "placement: {} rounds applied ({} shard moves); {} (shard, epoch) pairs checked",
        report.placement.rounds, report.placement.moves, report.placement.epochs
    );
    println!(
        "simulated {:.1} s in {:.1} s wall: {:.1}x",
        report.simulated.as_secs_f64(),
        wall.as_secs_f64(),
        report.simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    );
    println!("trace: {} lines", report.trace.len());
    println!("trace sha256: {hash}");
    let mut ok = true;
    if let Some(v) = &report.violation {
        ok = false;
        println!("FAILED: {v}");
    }
    if check_determinism {
        ok &= replay_matches(&options, &report.trace.text(), &hash)?;
    }
    if ok {
        println!("PASSED");
    } else {
        println!("replay: {}", options.replay_command());
    }
    Ok(ok)
}

/// Runs the same seed in a child process (one simulation per process) and compares traces.
fn replay_matches(options: &RunOptions, trace: &str, hash: &str) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot find the quire-sim executable")?;
    let file = std::env::temp_dir().join(format!(
        "quire-sim-replay-{}-{}.trace",
        options.seed,
        std::process::id()
    ));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(run_args(options)).arg("--trace").arg(&file);
    let out = cmd.output().context("cannot start the replay process")?;
    let replayed = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "the replay wrote no trace ({}); its stderr: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let _ = std::fs::remove_file(&file);
    if replayed == trace {
        println!("determinism: the replay in a fresh process gave the same trace ({hash})");
        return Ok(true);
    }
    let first_diff = trace
        .lines()
        .zip(replayed.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b);
    println!("DETERMINISM FAILED: the replay's trace differs");
    match first_diff {
        Some((i, (a, b))) => {
            println!("  first difference at line {}:", i + 1);
            println!("    run:    {a}");
            println!("    replay: {b}");
        }
        None => println!(
            "  one trace is a prefix of the other ({} vs {} lines)",
            trace.lines().count(),
            replayed.lines().count()
        ),
    }
    Ok(false)
}

fn run_args(options: &RunOptions) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--seed".into(),
        options.seed.to_string(),
        "--nodes".into(),
        options.nodes.to_string(),
        "--duration".into(),
        options.duration_s.to_string(),
    ];
    if let Some(bug) = options.bug {
        args.push("--bug".into());
        args.push(bug.name().into());
    }
    if !options.membership {
        args.push("--no-membership".into());
    }
    args
}

fn parse_seeds(text: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        bail!("--seeds must be A..B or A..=B (e.g. 1..101), got {text:?}");
    };
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .with_context(|| format!("--seeds: {s:?} is not a seed number"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    let end = if inclusive { b.saturating_add(1) } else { b };
    if end <= a {
        bail!("--seeds {text:?} is empty");
    }
    if end - a > MAX_SWEEP_SEEDS {
        bail!("--seeds covers more than {MAX_SWEEP_SEEDS} seeds; split the sweep");
    }
    Ok((a, end))
}

/// How a sweep runs its seeds.
struct SweepOptions {
    jobs: usize,
    nodes: u64,
    duration_s: u64,
    bug: Option<Bug>,
    fail_fast: bool,
    membership: bool,
    check_determinism: bool,
}

fn sweep(seeds: &str, sweep: SweepOptions) -> anyhow::Result<bool> {
    let SweepOptions {
        jobs,
        nodes,
        duration_s,
        bug,
        fail_fast,
        membership,
        check_determinism,
    } = sweep;
    let (start, end) = parse_seeds(seeds)?;
    if !(1..=MAX_JOBS).contains(&jobs) {
        bail!("--jobs must be 1 to {MAX_JOBS}, got {jobs}");
    }
    RunOptions {
        seed: start,
        nodes,
        duration_s,
        bug,
        membership,
    }
    .validate()
    .map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe().context("cannot find the quire-sim executable")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the sweep's runtime")?;
    let total = end - start;
    let started = wall_now();
    let failures = runtime.block_on(async move {
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs));
        let mut tasks = tokio::task::JoinSet::new();
        let mut failed = Vec::new();
        for seed in start..end {
            let permit = limit.clone().acquire_owned().await;
            // Report whatever finished while waiting for a slot.
            while let Some(done) = tasks.try_join_next() {
                if let Some(f) = report_seed(done, total)? {
                    failed.push(f);
                }
            }
            if fail_fast && !failed.is_empty() {
                println!("fail-fast: not starting seeds {seed}..{end}");
                break;
            }
            let options = RunOptions {
                seed,
                nodes,
                duration_s,
                bug,
                membership,
            };
            let exe = exe.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let mut args = run_args(&options);
                if check_determinism {
                    args.push("--check-determinism".into());
                }
                let out = tokio::process::Command::new(exe)
                    .args(args)
                    .kill_on_drop(true)
                    .output()
                    .await;
                (options, out)
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Some(f) = report_seed(done, total)? {
                failed.push(f);
            }
        }
        anyhow::Ok(failed)
    });
    let failures = failures?;
    let wall = started.elapsed();
    let ran = DONE.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "sweep: {ran} of {total} seeds in {:.1} s wall, {} failed",
        wall.as_secs_f64(),
        failures.len()
    );
    for (options, why) in &failures {
        println!("  seed {}: {why}", options.seed);
        let check = if why.starts_with("DETERMINISM") {
            " --check-determinism"
        } else {
            ""
        };
        println!("    replay: {}{check}", options.replay_command());
    }
    Ok(failures.is_empty())
}

type SeedOutcome = (RunOptions, std::io::Result<std::process::Output>);

static DONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn report_seed(
    done: Result<SeedOutcome, tokio::task::JoinError>,
    total: u64,
) -> anyhow::Result<Option<(RunOptions, String)>> {
    let (options, out) = done.context("a sweep task failed")?;
    let n = DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let out = out.with_context(|| format!("cannot run seed {}", options.seed))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ratio = stdout
        .lines()
        .find(|l| l.starts_with("simulated "))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?");
    if out.status.success() {
        println!("[{n}/{total}] seed {} ok ({ratio})", options.seed);
        return Ok(None);
    }
    let why = stdout
        .lines()
        .find(|l| l.starts_with("FAILED") || l.starts_with("DETERMINISM"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").to_string();
            format!("exit {:?}: {last}", out.status.code())
        });
    println!("[{n}/{total}] seed {} {why}", options.seed);
    Ok(Some((options, why)))
}
