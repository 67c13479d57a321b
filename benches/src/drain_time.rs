//! The drain-time benchmark: how long a 3-node cluster takes to move every shard off a node an
//! operator drains. `--tenants` tenants are created through the admin API, each with an
//! integration (a tenant and each of its integrations occupy a shard), `--concurrency` writes
//! in flight at a time; once the leader's placement controller has assigned every occupied
//! shard and plans no move, one node is drained (`POST /admin/v1/nodes/{id}/drain`) and
//! `GET /admin/v1/placement` is read every `--poll-ms` until that node owns no shard. The
//! controller moves at most `placement.max_moves_per_round` shards a round, one round every
//! `placement.interval_ms`; both are set for the run in a config file (`QUIRE_CONFIG`) and
//! reported with the figures.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::admin_writes::{self, RunContext, RunOpts};
use crate::placement_view;
use crate::raft_commit::{BenchError, NODES, leader};
use crate::report::{Column, Figures};

/// Tenants a cluster may hold besides the demo tenant.
pub const MAX_TENANTS: usize = quire_raft::command::MAX_TENANTS - 1;
/// Most admin writes in flight at once (the admin API's bound is 64).
pub const MAX_CONCURRENCY: usize = 64;
/// Longest wait allowed for the placement to settle or the drain to finish.
pub const MAX_WAIT_SECS: u64 = 3600;
/// One admin request taking longer than this fails the run.
const TIMEOUT: Duration = Duration::from_secs(60);

fn default_interval_ms() -> u64 {
    quire_node::config::PlacementSection::default().interval_ms
}

fn default_max_moves() -> usize {
    quire_node::config::PlacementSection::default().max_moves_per_round
}

#[derive(clap::Args, Debug, Clone)]
pub struct DrainTimeArgs {
    /// Tenants to create, each with an integration.
    #[arg(long, default_value_t = 300)]
    pub tenants: usize,
    /// Admin writes in flight at once while creating them.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// `placement.interval_ms` of every node: one placement round this often.
    #[arg(long, default_value_t = default_interval_ms())]
    pub interval_ms: u64,
    /// `placement.max_moves_per_round` of every node.
    #[arg(long, default_value_t = default_max_moves())]
    pub max_moves_per_round: usize,
    /// The node to drain (default: the highest-numbered node that does not lead).
    #[arg(long)]
    pub node: Option<u64>,
    /// The placement is read this often while the drain runs, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// Give up when the occupied shards are not all assigned within this many seconds.
    #[arg(long, default_value_t = 120)]
    pub settle_timeout_secs: u64,
    /// Give up when the drained node still owns shards after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub drain_timeout_secs: u64,
    #[command(flatten)]
    pub run: RunOpts,
}

impl DrainTimeArgs {
    /// Checks the arguments, naming the one out of range.
    pub fn validate(&self) -> Result<(), BenchError> {
        let max_ms = quire_node::config::MAX_PLACEMENT_MS;
        let max_moves = quire_raft::placement::MAX_MOVES_PER_COMMAND;
        let bad = |what: &str, range: String, value: String| {
            Err(BenchError::Invalid(format!(
                "{what} must be {range}, not {value}"
            )))
        };
        if self.tenants == 0 || self.tenants > MAX_TENANTS {
            return bad(
                "--tenants",
                format!("1 to {MAX_TENANTS}"),
                self.tenants.to_string(),
            );
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return bad(
                "--concurrency",
                format!("1 to {MAX_CONCURRENCY}"),
                self.concurrency.to_string(),
            );
        }
        if !(100..=max_ms).contains(&self.interval_ms) {
            return bad(
                "--interval-ms",
                format!("100 to {max_ms}"),
                self.interval_ms.to_string(),
            );
        }
        if !(1..=max_moves).contains(&self.max_moves_per_round) {
            return bad(
                "--max-moves-per-round",
                format!("1 to {max_moves}"),
                self.max_moves_per_round.to_string(),
            );
        }
        if let Some(node) = self.node
            && !(1..=NODES as u64).contains(&node)
        {
            return bad("--node", format!("1 to {NODES}"), node.to_string());
        }
        if !(10..=10_000).contains(&self.poll_ms) {
            return bad("--poll-ms", "10 to 10000".into(), self.poll_ms.to_string());
        }
        for (what, secs) in [
            ("--settle-timeout-secs", self.settle_timeout_secs),
            ("--drain-timeout-secs", self.drain_timeout_secs),
        ] {
            if secs == 0 || secs > MAX_WAIT_SECS {
                return bad(what, format!("1 to {MAX_WAIT_SECS}"), secs.to_string());
            }
        }
        Ok(())
    }

    /// The config file every node reads: the placement settings of the run.
    fn config_toml(&self) -> String {
        format!(
            "[placement]\ninterval_ms = {}\nmax_moves_per_round = {}\n",
            self.interval_ms, self.max_moves_per_round
        )
    }
}

/// One reading of the drained node's shards.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Step {
    /// Since the drain request was sent, in ms.
    pub at_ms: f64,
    /// Shards the drained node owned then.
    pub shards_left: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct DrainTimeReport {
    pub benchmark: &'static str,
    #[serde(flatten)]
    pub context: RunContext,
    pub nodes: usize,
    pub tenants: usize,
    /// Occupied shards (tenants' and integrations') once settled.
    pub occupied_shards: u64,
    pub interval_ms: u64,
    pub max_moves_per_round: usize,
    pub poll_ms: u64,
    pub drained_node: u64,
    /// Seconds the tenants and integrations took to create, and the placement to settle
    /// after that.
    pub create_secs: f64,
    pub settle_secs: f64,
    /// Shards per node (id, shards) before the drain and once it finished.
    pub before: Vec<(u64, u64)>,
    pub after: Vec<(u64, u64)>,
    /// Shards the drained node owned when the drain was asked.
    pub shards_moved: u64,
    /// From sending the drain request to its answer, in ms.
    pub drain_request_ms: f64,
    /// From sending the drain request to the first reading with no shard left, in seconds.
    pub seconds_to_empty: f64,
    /// Every reading whose count differed from the one before (the first and last included).
    pub progress: Vec<Step>,
    /// The drops between those readings: each is one round's moves or, when a reading
    /// missed a round, several rounds'.
    pub moves_per_step: Vec<u64>,
    /// The fewest rounds the drain could take: shards moved over `max_moves_per_round`.
    pub min_rounds: u64,
}

/// Creates tenants `d-00000`.. each with integration `i` (sandbox alpha's token).
async fn create_tenants(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    args: &DrainTimeArgs,
) -> Result<(), BenchError> {
    let base = format!("{node_http}/admin/v1/tenants");
    crate::memory::in_batches(args.tenants, args.concurrency, |i| {
        let (http, base, token) = (http.clone(), base.clone(), token.to_owned());
        async move {
            let id = format!("d-{i:05}");
            let steps = [
                (base.clone(), json!({"id": id, "display_name": "drain bench"})),
                (
                    format!("{base}/{id}/integrations"),
                    json!({"id": "i", "display_name": "drain bench", "notion_token": "secret_sandbox_alpha"}),
                ),
            ];
            for (url, body) in steps {
                let answer = admin_writes::request(&http, Method::POST, &url, &token, Some(&body))
                    .await
                    .map_err(BenchError::Step)?;
                if !answer.status.is_success() {
                    return Err(BenchError::Step(answer.describe(&format!("POST {url}"))));
                }
            }
            Ok(())
        }
    })
    .await
}

/// Waits until every occupied shard has an owner and a round would move nothing.
async fn settled(
    http: &reqwest::Client,
    node_http: &str,
    token: &str,
    timeout: Duration,
) -> Result<Value, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = placement_view::fetch(http, node_http, token).await?;
        let (unassigned, pending) = (
            placement_view::unassigned(&p),
            placement_view::pending_moves(&p),
        );
        if unassigned == 0 && pending == 0 && p["occupied"].as_u64().unwrap_or(0) > 0 {
            return Ok(p);
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout(format!(
                "the placement did not settle within {timeout:?} (last seen: {unassigned} occupied shards \
                 without an owner, {pending} moves pending)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The drops between successive readings.
pub fn drops(progress: &[Step]) -> Vec<u64> {
    progress
        .windows(2)
        .map(|w| w[0].shards_left.saturating_sub(w[1].shards_left))
        .filter(|d| *d > 0)
        .collect()
}

/// Runs the benchmark. `progress` gets one line per step.
pub async fn run(
    args: &DrainTimeArgs,
    quire_bin: PathBuf,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<DrainTimeReport, BenchError> {
    args.validate()?;
    let dir = admin_writes::run_dir(&quire_bin, args.run.work_dir.as_deref())?;
    let config = dir.path().join("placement.toml");
    std::fs::write(&config, args.config_toml())
        .map_err(|e| BenchError::Step(format!("cannot write {}: {e}", config.display())))?;
    let env = vec![(
        "QUIRE_CONFIG".to_owned(),
        config.to_string_lossy().into_owned(),
    )];
    let (dir, cluster) = admin_writes::cluster_in(dir, &quire_bin, NODES, env, vec![]).await?;
    let context = RunContext::start(command, &quire_bin, dir.path());
    let outcome = measure(args, &cluster, context, progress).await;
    drop(cluster);
    admin_writes::keep_on_error(dir, outcome)
}

async fn measure(
    args: &DrainTimeArgs,
    cluster: &quire_node::local_cluster::LocalCluster,
    mut context: RunContext,
    progress: &mut dyn FnMut(&str),
) -> Result<DrainTimeReport, BenchError> {
    let http = admin_writes::admin_client(TIMEOUT)?;
    let token = cluster.status.admin_token.clone();
    let first = leader(cluster).await?;
    let leader_http = cluster
        .node(first)
        .map_err(BenchError::Cluster)?
        .http
        .clone();
    progress(&format!(
        "creating {} tenants with an integration each, {} writes at a time (placement.interval_ms {}, \
         max_moves_per_round {})",
        args.tenants, args.concurrency, args.interval_ms, args.max_moves_per_round
    ));
    let started = Instant::now();
    create_tenants(&http, &leader_http, &token, args).await?;
    let create_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let settle = Duration::from_secs(args.settle_timeout_secs);
    let before_p = settled(&http, &leader_http, &token, settle).await?;
    let settle_secs = started.elapsed().as_secs_f64();
    let occupied_shards = before_p["occupied"].as_u64().unwrap_or(0);
    let before = placement_view::shards_per_node(&before_p);
    let drained = match args.node {
        Some(n) => n,
        None => {
            let lead = leader(cluster).await?;
            cluster
                .status
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|&id| id != lead)
                .max()
                .ok_or_else(|| BenchError::Step("no node other than the leader".into()))?
        }
    };
    let on_drained = placement_view::shards_on(&before_p, drained).unwrap_or(0);
    progress(&format!(
        "{create_secs:.1} s to create, {settle_secs:.1} s to settle: {occupied_shards} occupied shards, per node {before:?}; \
         draining node {drained} ({on_drained} shards)"
    ));
    if on_drained == 0 {
        return Err(BenchError::Step(format!(
            "node {drained} owns no shard before the drain, so there is nothing to measure (try more --tenants)"
        )));
    }

    let t0 = Instant::now();
    let url = format!("{leader_http}/admin/v1/nodes/{drained}/drain");
    let answer = admin_writes::request(&http, Method::POST, &url, &token, Some(&json!({})))
        .await
        .map_err(BenchError::Step)?;
    let drain_request_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if !answer.status.is_success() {
        return Err(BenchError::Step(answer.describe(&format!("POST {url}"))));
    }
    let shards_moved = answer.body["shards"].as_u64().unwrap_or(on_drained);
    let mut steps = vec![Step {
        at_ms: 0.0,
        shards_left: shards_moved,
    }];
    let deadline = t0 + Duration::from_secs(args.drain_timeout_secs);
    let poll = Duration::from_millis(args.poll_ms);
    let after_p = loop {
        let p = placement_view::fetch(&http, &leader_http, &token).await?;
        let at = t0.elapsed();
        let left = placement_view::shards_on(&p, drained).unwrap_or(0);
        if steps.last().map(|s| s.shards_left) != Some(left) {
            steps.push(Step {
                at_ms: at.as_secs_f64() * 1000.0,
                shards_left: left,
            });
            progress(&format!(
                "{:.1} s: {left} shards left on node {drained}",
                at.as_secs_f64()
            ));
        }
        if left == 0 {
            break p;
        }
        if placement_view::drain_blocked(&p) > 0 {
            return Err(BenchError::Step(format!(
                "{} shards on node {drained} cannot move (their residency allows no other live node)",
                placement_view::drain_blocked(&p)
            )));
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout(format!(
                "node {drained} still owned {left} of {shards_moved} shards {} s after the drain",
                args.drain_timeout_secs
            )));
        }
        tokio::time::sleep(poll).await;
    };
    let seconds_to_empty = steps.last().map_or(0.0, |s| s.at_ms / 1000.0);
    context.finish();
    let report = DrainTimeReport {
        benchmark: "drain-time",
        context,
        nodes: NODES,
        tenants: args.tenants,
        occupied_shards,
        interval_ms: args.interval_ms,
        max_moves_per_round: args.max_moves_per_round,
        poll_ms: args.poll_ms,
        drained_node: drained,
        create_secs,
        settle_secs,
        before,
        after: placement_view::shards_per_node(&after_p),
        shards_moved,
        drain_request_ms,
        seconds_to_empty,
        moves_per_step: drops(&steps),
        progress: steps,
        min_rounds: shards_moved.div_ceil(args.max_moves_per_round as u64),
    };
    progress(&report.headline());
    Ok(report)
}

impl DrainTimeReport {
    /// One line: shards moved and seconds to empty.
    pub fn headline(&self) -> String {
        format!(
            "drain of node {}: {} shards moved off in {:.2} s ({} steps seen, moves per step {:?}; at most {} \
             moves per round every {} ms, so at least {} rounds)",
            self.drained_node,
            self.shards_moved,
            self.seconds_to_empty,
            self.moves_per_step.len(),
            self.moves_per_step,
            self.max_moves_per_round,
            self.interval_ms,
            self.min_rounds
        )
    }
}

impl Figures for DrainTimeReport {
    const TITLE: &'static str = "Drain-time benchmark";
    const COLUMNS: &'static [Column] = &[
        Column::right("seconds", 10),
        Column::right("shards left", 12),
    ];
    type Row = [String; 2];

    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            self.headline(),
            format!(
                "shards per node (node, shards): {:?} before, {:?} after; {} occupied shards from {} tenants and the demo tenant \
                 (created in {:.1} s, placement settled {:.1} s later); the drain request answered in {:.1} ms",
                self.before,
                self.after,
                self.occupied_shards,
                self.tenants,
                self.create_secs,
                self.settle_secs,
                self.drain_request_ms
            ),
            format!(
                "setup: {} quire processes on loopback (mTLS, sled fsync); {} tenants with an integration each \
                 (a tenant and each integration occupy one of 256 shards); placement.interval_ms {} and \
                 max_moves_per_round {} on every node; GET /admin/v1/placement read every {} ms on the first \
                 leader, so times are within one reading",
                self.nodes, self.tenants, self.interval_ms, self.max_moves_per_round, self.poll_ms
            ),
        ];
        lines.extend(self.context.lines());
        lines
    }

    fn rows(&self) -> Vec<[String; 2]> {
        self.progress
            .iter()
            .map(|s| {
                [
                    format!("{:.2}", s.at_ms / 1000.0),
                    s.shards_left.to_string(),
                ]
            })
            .collect()
    }
}

/// `quire-bench drain-time`.
pub async fn main(args: DrainTimeArgs, command: String) -> anyhow::Result<()> {
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

    fn args() -> DrainTimeArgs {
        DrainTimeArgs {
            tenants: 10,
            concurrency: 4,
            interval_ms: 2_000,
            max_moves_per_round: 64,
            node: None,
            poll_ms: 100,
            settle_timeout_secs: 60,
            drain_timeout_secs: 60,
            run: RunOpts::default(),
        }
    }

    #[test]
    fn arguments_out_of_range_are_named() {
        assert!(args().validate().is_ok());
        let cases: [(DrainTimeArgs, &str); 7] = [
            (
                DrainTimeArgs {
                    tenants: 0,
                    ..args()
                },
                "--tenants must be 1 to",
            ),
            (
                DrainTimeArgs {
                    concurrency: 65,
                    ..args()
                },
                "--concurrency must be 1 to 64",
            ),
            (
                DrainTimeArgs {
                    interval_ms: 99,
                    ..args()
                },
                "--interval-ms must be 100 to",
            ),
            (
                DrainTimeArgs {
                    max_moves_per_round: 0,
                    ..args()
                },
                "--max-moves-per-round must be 1 to",
            ),
            (
                DrainTimeArgs {
                    node: Some(4),
                    ..args()
                },
                "--node must be 1 to 3, not 4",
            ),
            (
                DrainTimeArgs {
                    poll_ms: 0,
                    ..args()
                },
                "--poll-ms",
            ),
            (
                DrainTimeArgs {
                    drain_timeout_secs: 0,
                    ..args()
                },
                "--drain-timeout-secs must be 1 to",
            ),
        ];
        for (a, needle) in cases {
            let e = a.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e} lacks {needle:?}");
        }
    }

    #[test]
    fn the_config_file_carries_the_placement_settings() {
        let toml = DrainTimeArgs {
            interval_ms: 250,
            max_moves_per_round: 8,
            ..args()
        }
        .config_toml();
        let c = quire_node::config::Config::from_toml(&toml).unwrap();
        assert_eq!(c.placement.interval_ms, 250);
        assert_eq!(c.placement.max_moves_per_round, 8);
        assert_eq!(
            args().interval_ms,
            quire_node::config::PlacementSection::default().interval_ms
        );
    }

    #[test]
    fn progress_drops_are_the_moves_between_readings() {
        let s = |at_ms: f64, shards_left: u64| Step { at_ms, shards_left };
        assert_eq!(drops(&[s(0.0, 90), s(1.0, 26), s(2.0, 0)]), vec![64, 26]);
        assert!(drops(&[s(0.0, 5)]).is_empty());
    }
}
