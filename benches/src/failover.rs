//! The failover benchmark: on a 3-process loopback cluster, writes go to the followers while
//! the leader is killed with `kill -9`, again and again (the killed node is restarted and
//! caught up before the next kill). For each kill it reports the time from the kill to the
//! first acknowledged write *sent after* the kill, and to the first `/nodes` answer from a
//! surviving node naming a new leader.
//!
//! Writes are probes sent open loop (one every `--probe-interval-ms`, alternating between
//! the two followers of the moment, each a single attempt with its own timeout), so a write
//! stuck on the dead leader does not hold back the next one: the first acknowledgement after
//! the kill is found within one interval. One probe is one admin request that commits one
//! Raft entry and revokes nothing: it grants a principal the workspace it already has
//! (`POST /tenants/bench/principals/probe/workspaces`; the command is proposed and committed
//! whatever its result, and leaves the state as it was).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::bail;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::admin_writes::{self, BENCH_TENANT, RunContext, RunOpts, max, median, request_ok};
use crate::raft_commit::{BenchError, NODES, leader};
use crate::report::{Column, Figures};

/// Most kills in one run.
pub const MAX_KILLS: usize = 50;
/// The failover goal the report compares with.
pub const GOAL: Duration = Duration::from_secs(2);
/// The workspace the probe principal is granted, again and again.
const WORKSPACE: &str = "w-failover";
const PRINCIPAL: &str = "probe";

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// How many times the leader is killed.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// A probe write is sent every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    pub probe_interval_ms: u64,
    /// One probe taking longer than this fails.
    #[arg(long, default_value_t = 5)]
    pub probe_timeout_secs: u64,
    /// Seconds of probes (which must succeed) before each kill.
    #[arg(long, default_value_t = 2)]
    pub settle_secs: u64,
    /// Give up on a kill when no write is acknowledged within this many seconds.
    #[arg(long, default_value_t = 30)]
    pub give_up_secs: u64,
    #[command(flatten)]
    pub run: RunOpts,
}

/// One kill's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    pub killed: u64,
    /// The leader a surviving node named first after the kill.
    pub new_leader: Option<u64>,
    /// From the kill to the first `/nodes` answer naming another leader, in ms.
    pub new_leader_ms: Option<f64>,
    /// From the kill to the first acknowledged write sent after it, in ms.
    pub first_write_ms: Option<f64>,
    /// Probes sent after the kill that failed before that first acknowledgement.
    pub failed_probes: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    pub benchmark: &'static str,
    #[serde(flatten)]
    pub context: RunContext,
    pub nodes: usize,
    pub probe_interval_ms: u64,
    pub kills: Vec<Kill>,
}

/// One probe: when it was sent, when its answer came, whether it was acknowledged.
#[derive(Debug, Clone, Copy)]
struct Probe {
    sent: Instant,
    done: Instant,
    ok: bool,
}

/// Sends a probe every `interval` to `targets` in turn until aborted; each result goes
/// into `log`.
async fn probe_loop(
    http: reqwest::Client,
    targets: Vec<String>,
    token: String,
    interval: Duration,
    log: Arc<Mutex<Vec<Probe>>>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = tokio::task::JoinSet::new();
    let body = json!({"workspace": WORKSPACE});
    for i in 0usize.. {
        tick.tick().await;
        while in_flight.try_join_next().is_some() {}
        let url = format!(
            "{}/admin/v1/tenants/{BENCH_TENANT}/principals/{PRINCIPAL}/workspaces",
            targets[i % targets.len()]
        );
        let (http, token, body, log) = (http.clone(), token.clone(), body.clone(), log.clone());
        in_flight.spawn(async move {
            let sent = Instant::now();
            let ok = http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let done = Instant::now();
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Probe { sent, done, ok });
        });
    }
}

/// Asks `node_http`'s `/nodes` for the leader every 20 ms until aborted; records (answer
/// time, leader).
async fn leader_poll(
    http: reqwest::Client,
    node_http: String,
    token: String,
    log: Arc<Mutex<Vec<(Instant, u64)>>>,
) {
    loop {
        if let Ok(r) = http
            .get(format!("{node_http}/admin/v1/nodes"))
            .bearer_auth(&token)
            .send()
            .await
            && let Ok(v) = r.json::<Value>().await
            && let Some(id) = v.get("leader").and_then(Value::as_u64)
        {
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((Instant::now(), id));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs every kill and returns the figures. `progress` gets one line per step.
pub async fn run(
    args: &FailoverArgs,
    quire_bin: PathBuf,
    command: String,
    progress: &mut dyn FnMut(&str),
) -> Result<FailoverReport, BenchError> {
    if args.kills == 0 || args.kills > MAX_KILLS || args.probe_interval_ms == 0 {
        return Err(BenchError::Levels(vec![args.kills]));
    }
    let (dir, mut cluster) = admin_writes::start_cluster(
        &quire_bin,
        args.run.work_dir.as_deref(),
        NODES,
        vec![],
        vec![],
    )
    .await?;
    let mut context = RunContext::start(command, &quire_bin, dir.path());
    let token = cluster.status.admin_token.clone();
    let http = admin_writes::admin_client(Duration::from_secs(args.probe_timeout_secs.max(1)))?;
    let first = leader(&cluster).await?;
    let setup = cluster
        .node(first)
        .map_err(BenchError::Cluster)?
        .http
        .clone();
    admin_writes::create_bench_tenant(&http, &setup, &token).await?;
    admin_writes::create_bench_workspace(&http, &setup, &token, WORKSPACE).await?;
    let base = format!("{setup}/admin/v1/tenants/{BENCH_TENANT}/principals");
    request_ok(
        &http,
        Method::POST,
        &base,
        &token,
        Some(&json!({"id": PRINCIPAL, "display_name": "probe"})),
    )
    .await?;
    request_ok(
        &http,
        Method::POST,
        &format!("{base}/{PRINCIPAL}/workspaces"),
        &token,
        Some(&json!({"workspace": WORKSPACE})),
    )
    .await?;

    let interval = Duration::from_millis(args.probe_interval_ms);
    let give_up = Duration::from_secs(args.give_up_secs);
    let mut kills = Vec::with_capacity(args.kills);
    for k in 1..=args.kills {
        let killed = leader(&cluster).await?;
        let ids: Vec<u64> = cluster.status.nodes.iter().map(|n| n.id).collect();
        let mut survivors = Vec::new();
        for &id in ids.iter().filter(|&&id| id != killed) {
            survivors.push(cluster.node(id).map_err(BenchError::Cluster)?.http.clone());
        }
        let probes = Arc::new(Mutex::new(Vec::new()));
        let leaders = Arc::new(Mutex::new(Vec::new()));
        let prober = tokio::spawn(probe_loop(
            http.clone(),
            survivors.clone(),
            token.clone(),
            interval,
            probes.clone(),
        ));
        let pollers: Vec<_> = survivors
            .iter()
            .map(|s| {
                tokio::spawn(leader_poll(
                    http.clone(),
                    s.clone(),
                    token.clone(),
                    leaders.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        let acked_before = probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|p| p.ok)
            .count();
        if acked_before == 0 {
            prober.abort();
            pollers.iter().for_each(|p| p.abort());
            return Err(BenchError::Preflight(format!(
                "kill {k}: no write was acknowledged by the followers in the {} s before the kill",
                args.settle_secs
            )));
        }
        progress(&format!(
            "kill {k}/{}: kill -9 of leader {killed} ({acked_before} writes acknowledged before)",
            args.kills
        ));
        let t0 = Instant::now();
        cluster.kill9(killed).map_err(BenchError::Cluster)?;
        let deadline = t0 + give_up;
        let (mut first_write, mut new_leader) = (None, None);
        while Instant::now() < deadline && (first_write.is_none() || new_leader.is_none()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if first_write.is_none() {
                first_write = probes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .filter(|p| p.ok && p.sent >= t0)
                    .map(|p| p.done)
                    .min();
            }
            if new_leader.is_none() {
                new_leader = leaders
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .filter(|(at, id)| *at >= t0 && *id != killed)
                    .min_by_key(|(at, _)| *at)
                    .copied();
            }
        }
        // Let the probes in flight finish, so the failures before the first ack are known.
        tokio::time::sleep(interval * 2).await;
        prober.abort();
        pollers.iter().for_each(|p| p.abort());
        let failed_probes = first_write.map_or(0, |at| {
            probes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|p| !p.ok && p.sent >= t0 && p.sent < at)
                .count() as u64
        });
        let kill = Kill {
            killed,
            new_leader: new_leader.map(|(_, id)| id),
            new_leader_ms: new_leader.map(|(at, _)| ms(at - t0)),
            first_write_ms: first_write.map(|at| ms(at - t0)),
            failed_probes,
        };
        progress(&format!(
            "kill {k}: new leader {} after {}, first write acknowledged after {}",
            kill.new_leader.map_or("none".into(), |id| id.to_string()),
            kill.new_leader_ms
                .map_or("never".into(), |v| format!("{v:.0} ms")),
            kill.first_write_ms
                .map_or("never".into(), |v| format!("{v:.0} ms")),
        ));
        kills.push(kill);
        cluster.start_node(killed).map_err(BenchError::Cluster)?;
        cluster
            .wait_ready(killed, Duration::from_secs(60))
            .await
            .map_err(BenchError::Cluster)?;
    }
    drop(cluster);
    context.finish();
    Ok(FailoverReport {
        benchmark: "failover",
        context,
        nodes: NODES,
        probe_interval_ms: args.probe_interval_ms,
        kills,
    })
}

impl FailoverReport {
    fn write_times(&self) -> Vec<f64> {
        self.kills.iter().filter_map(|k| k.first_write_ms).collect()
    }

    fn leader_times(&self) -> Vec<f64> {
        self.kills.iter().filter_map(|k| k.new_leader_ms).collect()
    }

    /// Median and max of the time to the first acknowledged write, in ms, and how many
    /// kills never saw one.
    pub fn first_write_summary(&self) -> (f64, f64, usize) {
        let t = self.write_times();
        (median(&t), max(&t), self.kills.len() - t.len())
    }
}

impl Figures for FailoverReport {
    const TITLE: &'static str = "Failover benchmark";
    const COLUMNS: &'static [Column] = &[
        Column::right("kill", 4),
        Column::right("killed leader", 13),
        Column::right("new leader", 10),
        Column::right("new leader ms", 13),
        Column::right("first write ms", 14),
        Column::right("failed probes", 13),
    ];
    type Row = [String; 6];

    fn lines(&self) -> Vec<String> {
        let (w_med, w_max, never) = self.first_write_summary();
        let l = self.leader_times();
        let goal_ms = ms(GOAL);
        let verdict = if never == 0 && w_max < goal_ms {
            "under"
        } else {
            "NOT under"
        };
        let mut lines = vec![
            format!(
                "first acknowledged write after kill -9 of the leader: median {w_med:.0} ms, max {w_max:.0} ms \
                 over {} kills ({verdict} the {goal_ms:.0} ms goal{})",
                self.kills.len(),
                if never > 0 {
                    format!("; {never} kill(s) saw no write acknowledged")
                } else {
                    String::new()
                }
            ),
            format!(
                "new leader named by a surviving node's /nodes: median {:.0} ms, max {:.0} ms",
                median(&l),
                max(&l)
            ),
            format!(
                "setup: {} quire processes on loopback (mTLS, sled fsync, default Raft timings: heartbeat 100 ms, \
                 election timeout 400-800 ms); a probe write every {} ms to the followers in turn (re-granting a \
                 principal its workspace: one committed Raft entry, not a revocation), each a single attempt; \
                 the killed node is restarted and ready before the next kill",
                self.nodes, self.probe_interval_ms
            ),
        ];
        lines.extend(self.context.lines());
        lines
    }

    fn rows(&self) -> Vec<[String; 6]> {
        let opt = |v: Option<f64>| v.map_or("never".to_owned(), |v| format!("{v:.0}"));
        self.kills
            .iter()
            .enumerate()
            .map(|(i, k)| {
                [
                    (i + 1).to_string(),
                    k.killed.to_string(),
                    k.new_leader.map_or("-".to_owned(), |id| id.to_string()),
                    opt(k.new_leader_ms),
                    opt(k.first_write_ms),
                    k.failed_probes.to_string(),
                ]
            })
            .collect()
    }
}

/// `quire-bench failover`.
pub async fn main(args: FailoverArgs, command: String) -> anyhow::Result<()> {
    if args.kills == 0 || args.kills > MAX_KILLS {
        bail!("--kills must be 1 to {MAX_KILLS}");
    }
    let quire_bin = admin_writes::quire_bin(args.run.quire_bin.clone())?;
    let report = run(&args, quire_bin, command, &mut admin_writes::progress).await?;
    args.run.emit(&report)
}
