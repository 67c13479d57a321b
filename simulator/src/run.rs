//! One simulation run: builds the turmoil world from the seed, runs the nodes and the
//! workload, applies the fault schedule, runs the checkers, and reports.
//!
//! Run one simulation per process: tokio numbers tasks from one process-wide counter, and a
//! second run in the same process diverges from a first run in a fresh one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quire_raft::{NodeId, SimDisk, SimFaults, seed_runtime_rng};
use quire_transport::{LinkFaults, LinkRule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::access::{AuthzLog, Credentials, RevocationLog, check_audit, check_revocations};
use crate::bugs::Bug;
use crate::check::{
    History, Observer, SendLog, Violation, check_drains, check_final, check_history, check_notion,
    state_digest,
};
use crate::faults::{Fault, dark_drain, region_loss, schedule};
use crate::node::{NodeSetup, Registry, RestartLog, SIM_TENANT, host_name, peer_addr, run_node};
use crate::notion::{
    INTEGRATIONS, NOTION_HOST, NotionLog, SandboxHandle, SandboxSetup, budget, run_sandbox,
};
use crate::trace::Trace;
use crate::workload::{
    LIVENESS_BOUND, TOOL_LIVENESS_BOUND, ToolHistory, WorkloadSetup, run_workload,
};

/// Fewest nodes a run accepts.
pub const MIN_NODES: u64 = 3;
/// Most nodes a run accepts.
pub const MAX_NODES: u64 = 9;
/// Shortest run, simulated seconds (faults need room before the quiet period).
pub const MIN_DURATION_S: u64 = 15;
/// Longest run, simulated seconds.
pub const MAX_DURATION_S: u64 = 3_600;
/// The final quiet period: no faults, everything healed.
pub const QUIET_S: u64 = 10;
/// After the workload ends, the cluster must converge (every node up, same applied index
/// and state) within this bound.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(15);
/// After the final heal, a draining node owns no shard another allowed live node could take
/// within this bound (checked once, on the most advanced live node's applied state).
pub const DRAIN_BOUND: Duration = Duration::from_secs(8);
/// Observe the nodes every this many steps (ms at a 1 ms tick).
const OBSERVE_EVERY_STEPS: u64 = 5;
/// turmoil's tick.
pub const TICK: Duration = Duration::from_millis(1);
/// turmoil's message latency range.
pub const LATENCY_MS: (u64, u64) = (1, 20);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// The seed every random choice follows.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: u64,
    /// Simulated seconds of workload (the last [`QUIET_S`] without faults).
    pub duration_s: u64,
    /// A planted bug to turn on.
    pub bug: Option<Bug>,
    /// Add membership changes to the faults (an operator removes a node and joins it back);
    /// on unless `--no-membership`.
    pub membership: bool,
}

impl RunOptions {
    /// Checks the bounds; the error says which and what to pass.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_NODES..=MAX_NODES).contains(&self.nodes) {
            return Err(format!(
                "--nodes must be {MIN_NODES} to {MAX_NODES}, got {}",
                self.nodes
            ));
        }
        if !(MIN_DURATION_S..=MAX_DURATION_S).contains(&self.duration_s) {
            return Err(format!(
                "--duration must be {MIN_DURATION_S} to {MAX_DURATION_S} simulated seconds, got {}",
                self.duration_s
            ));
        }
        Ok(())
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "quire-sim run --seed {} --nodes {} --duration {}",
            self.seed, self.nodes, self.duration_s
        );
        if let Some(bug) = self.bug {
            cmd.push_str(&format!(" --bug {bug}"));
        }
        if !self.membership {
            cmd.push_str(" --no-membership");
        }
        cmd
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// The options it ran with.
    pub options: RunOptions,
    /// The application-level trace.
    pub trace: Trace,
    /// The first invariant broken, if any.
    pub violation: Option<Violation>,
    /// Simulated time at the end.
    pub simulated: Duration,
    /// Operations invoked / writes acknowledged / reads completed / operations failed.
    pub ops: OpCounts,
    /// Faults applied (heals included).
    pub faults_applied: usize,
    /// Terms that had a leader.
    pub terms_led: usize,
    /// State digests compared.
    pub digests_taken: u64,
    /// When the liveness probe got a write through, ms after the final heal.
    pub liveness_ms: Option<u64>,
    /// The agents' tool calls.
    pub tools: ToolCounts,
    /// When a tool call for every integration had succeeded, ms after the final heal.
    pub tool_liveness_ms: Option<u64>,
    /// Placement rounds and what the checkers saw of them.
    pub placement: PlacementCounts,
}

/// Placement in a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlacementCounts {
    /// Rounds whose `ApplyPlacement` committed.
    pub rounds: usize,
    /// Moves in those rounds.
    pub moves: usize,
    /// (shard, epoch) pairs the one-owner checker saw.
    pub epochs: usize,
}

/// Counts the applied rounds (`placement round: N moves`) in a trace's text.
pub fn placement_rounds(trace_text: &str) -> (usize, usize) {
    let mut rounds = 0;
    let mut moves = 0;
    for line in trace_text.lines() {
        let Some((_, rest)) = line.split_once("placement round: ") else {
            continue;
        };
        if let Some(n) = rest
            .strip_suffix(" moves")
            .and_then(|n| n.parse::<usize>().ok())
        {
            rounds += 1;
            moves += n;
        }
    }
    (rounds, moves)
}

/// Counts of the agents' tool calls and of what Notion received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ToolCounts {
    /// Tool calls invoked.
    pub invoked: usize,
    /// Tool calls that succeeded.
    pub ok: usize,
    /// Tool calls that failed (tool error, node down, deadline).
    pub failed: usize,
    /// Requests Notion (the sandbox) received.
    pub notion_requests: usize,
    /// Of which answered 429 or 529.
    pub notion_throttled: usize,
    /// Of which answered 500 or 503.
    pub notion_errors: usize,
    /// Requests sent during a `Retry-After` pause by a node the pause did not reach: another
    /// node, after the integration's shard moved, or one that restarted after the pause began
    /// (a pause is not carried across a handoff or a restart; see the README).
    pub pauses_forgotten: u64,
    /// Tool calls the nodes acknowledged (each must have one audit record).
    pub acknowledged: usize,
    /// Authorization decisions taken / of which refusals.
    pub decisions: usize,
    /// Of which refused (unknown, revoked or expired token; restriction).
    pub refused: usize,
    /// Revocations made / acknowledged.
    pub revocations: usize,
    /// Of which acknowledged.
    pub revocations_acked: usize,
    /// Audit records in the converged state.
    pub audit_records: usize,
}

/// Counts of the workload's operations.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpCounts {
    /// Invoked.
    pub invoked: usize,
    /// Writes acknowledged.
    pub writes_acked: usize,
    /// Writes rejected by `apply`, as expected.
    pub writes_rejected: usize,
    /// Reads completed.
    pub reads: usize,
    /// Failed or timed out (outcome unknown).
    pub failed: usize,
}

/// A run could not be set up (not an invariant violation).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The options are out of bounds.
    #[error("{0}")]
    InvalidOptions(String),
}

struct Driver {
    sandbox: SandboxHandle,
    sim_faults_torn: bool,
    disks: BTreeMap<NodeId, SimDisk>,
    link_faults: Arc<LinkFaults>,
    registry: Registry,
    trace: Trace,
    down: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    isolated: BTreeSet<NodeId>,
    one_way: BTreeSet<(NodeId, NodeId)>,
    nodes: u64,
}

impl Driver {
    fn others(&self, n: NodeId) -> impl Iterator<Item = NodeId> + use<> {
        let nodes = self.nodes;
        (1..=nodes).filter(move |m| *m != n)
    }

    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, n: NodeId) {
        if self.down.insert(n) {
            self.registry.remove(n);
            sim.crash(host_name(n));
            if let Some(disk) = self.disks.get(&n) {
                disk.crash();
            }
        }
    }

    fn restart(&mut self, sim: &mut turmoil::Sim<'_>, n: NodeId) {
        if self.down.remove(&n) {
            sim.bounce(host_name(n));
        }
    }

    fn disk_faults(&self, n: NodeId, errors: bool) {
        if let Some(disk) = self.disks.get(&n) {
            let p = if errors { 0.02 } else { 0.0 };
            disk.set_faults(SimFaults {
                torn_writes: self.sim_faults_torn,
                read_error_probability: p,
                write_error_probability: p,
            });
        }
    }

    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, fault: &Fault) {
        match fault {
            Fault::Isolate(n) => {
                if self.isolated.insert(*n) {
                    for m in self.others(*n) {
                        sim.partition(host_name(*n), host_name(m));
                    }
                }
            }
            Fault::Rejoin(n) => {
                if self.isolated.remove(n) {
                    for m in self.others(*n) {
                        if !self.isolated.contains(&m) {
                            sim.repair(host_name(*n), host_name(m));
                        }
                    }
                }
            }
            Fault::CutOneWay(a, b) => {
                if self.one_way.insert((*a, *b)) {
                    sim.partition_oneway(host_name(*a), host_name(*b));
                }
            }
            Fault::RepairOneWay(a, b) => {
                if self.one_way.remove(&(*a, *b))
                    && !self.isolated.contains(a)
                    && !self.isolated.contains(b)
                {
                    sim.repair_oneway(host_name(*a), host_name(*b));
                }
            }
            Fault::Clog {
                from,
                to,
                drop,
                duplicate,
                delay_ms,
            } => {
                let rule = LinkRule {
                    cut: false,
                    drop_probability: *drop,
                    duplicate_probability: *duplicate,
                    delay_ms: Some(*delay_ms),
                };
                // The schedule only draws valid rules.
                let _ = self.link_faults.set_rule(*from, *to, rule);
            }
            Fault::Unclog(from, to) => {
                let _ = self.link_faults.set_rule(*from, *to, LinkRule::default());
            }
            Fault::Crash(n) => self.crash(sim, *n),
            Fault::Restart(n) => self.restart(sim, *n),
            Fault::PowerLoss => {
                for n in 1..=self.nodes {
                    self.crash(sim, n);
                }
            }
            Fault::RegionLoss { nodes, .. } => {
                for n in nodes {
                    self.crash(sim, *n);
                }
            }
            Fault::RegionBack { nodes, .. } => {
                for n in nodes {
                    self.restart(sim, *n);
                }
            }
            Fault::PowerRestore => {
                for n in 1..=self.nodes {
                    self.restart(sim, n);
                }
            }
            Fault::Pause(n) => {
                if self.paused.insert(*n) {
                    for m in self.others(*n) {
                        sim.hold(host_name(*n), host_name(m));
                    }
                }
            }
            Fault::Resume(n) => {
                if self.paused.remove(n) {
                    for m in self.others(*n) {
                        if !self.paused.contains(&m) {
                            sim.release(host_name(*n), host_name(m));
                        }
                    }
                }
            }
            Fault::NotionRateLimited { retry_after_s } => {
                self.sandbox
                    .set_fault(Some(quire_sandbox::NotionFault::RateLimited {
                        retry_after_s: *retry_after_s,
                    }));
            }
            Fault::NotionServerErrors { statuses } => {
                self.sandbox
                    .set_fault(Some(quire_sandbox::NotionFault::ServerErrors {
                        statuses: statuses.clone(),
                    }));
            }
            Fault::NotionOk => self.sandbox.set_fault(None),
            Fault::DiskErrors(n) => self.disk_faults(*n, true),
            Fault::DiskOk(n) => self.disk_faults(*n, false),
            Fault::HealAll => {
                for a in 1..=self.nodes {
                    for b in self.others(a) {
                        sim.release(host_name(a), host_name(b));
                        sim.repair(host_name(a), host_name(b));
                    }
                    self.disk_faults(a, false);
                }
                self.paused.clear();
                self.isolated.clear();
                self.one_way.clear();
                self.link_faults.heal_all();
                self.sandbox.set_fault(None);
                for n in 1..=self.nodes {
                    self.restart(sim, n);
                }
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs one simulation. Call it once per process (see the module docs).
pub fn run(options: RunOptions) -> Result<RunReport, RunError> {
    options.validate().map_err(RunError::InvalidOptions)?;
    let seed = options.seed;
    let nodes = options.nodes;
    let stop_at = Duration::from_secs(options.duration_s);
    let heal_at = stop_at - Duration::from_secs(QUIET_S);
    // openraft's election timeouts follow the seed (every host runs on this thread).
    seed_runtime_rng(seed);
    let mut setup_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0073_6574_7570);
    let torn_writes = setup_rng.random_bool(0.5);

    let trace = Trace::default();
    let registry = Registry::default();
    let history = History::default();
    let liveness = Arc::new(Mutex::new(None));
    let tool_liveness = Arc::new(Mutex::new(None));
    let tools = ToolHistory::default();
    let sandbox = SandboxHandle::default();
    let notion_log = NotionLog::default();
    let sends = SendLog::default();
    let restarts = RestartLog::default();
    let authz = AuthzLog::default();
    let revocations = RevocationLog::default();
    let link_faults = Arc::new(LinkFaults::new(setup_rng.random()));
    let members: BTreeMap<NodeId, String> = (1..=nodes).map(|n| (n, peer_addr(n))).collect();
    let regions = crate::placement::regions(seed, nodes);

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(LATENCY_MS.0))
        .max_message_latency(Duration::from_millis(LATENCY_MS.1))
        .simulation_duration(stop_at + CONVERGE_BOUND + Duration::from_secs(60))
        .build();

    let mut disks = BTreeMap::new();
    for n in 1..=nodes {
        let disk = SimDisk::with_label(setup_rng.random(), host_name(n));
        disk.set_faults(SimFaults {
            torn_writes,
            ..SimFaults::default()
        });
        if options.bug == Some(Bug::AckBeforeDurable) {
            // PLANTED BUG (simulator only).
            disk.set_bug_ack_before_flush(true);
        }
        disks.insert(n, disk.clone());
        let setup = NodeSetup {
            seed,
            id: n,
            members: members.clone(),
            disk,
            faults: link_faults.clone(),
            registry: registry.clone(),
            trace: trace.clone(),
            bug: options.bug,
            starts: Arc::new(Mutex::new(0)),
            restarts: restarts.clone(),
            authz: authz.clone(),
            region: regions.get(&n).cloned().unwrap_or_default(),
            sends: sends.clone(),
        };
        sim.host(host_name(n), move || run_node(setup.clone()));
    }
    let sandbox_setup = SandboxSetup {
        seed: setup_rng.random(),
        handle: sandbox.clone(),
        log: notion_log.clone(),
        trace: trace.clone(),
    };
    sim.host(NOTION_HOST, move || run_sandbox(sandbox_setup.clone()));
    let plan = {
        let mut plan = schedule(seed, nodes, ms(heal_at));
        plan.extend(region_loss(seed, &regions, ms(heal_at)));
        // Stable: the region loss goes after the other faults of the same millisecond.
        plan.sort_by_key(|(at, _)| *at);
        plan
    };
    let dark = dark_drain(seed, &plan);
    sim.client(
        "client",
        run_workload(WorkloadSetup {
            seed,
            nodes,
            stop_at,
            heal_at,
            registry: registry.clone(),
            history: history.clone(),
            trace: trace.clone(),
            liveness: liveness.clone(),
            tools: tools.clone(),
            tool_liveness: tool_liveness.clone(),
            membership: options.membership,
            credentials: Credentials::default(),
            revocations: revocations.clone(),
            dark_drain: dark,
        }),
    );
    trace.record(
        Duration::ZERO,
        "sim",
        format!(
            "seed {seed} nodes {nodes} duration {} s torn-writes {torn_writes} bug {}",
            options.duration_s,
            options.bug.map(|b| b.name()).unwrap_or("none")
        ) + if options.membership {
            " membership-changes"
        } else {
            ""
        },
    );

    trace.record(
        Duration::ZERO,
        "sim",
        format!(
            "regions {}",
            regions
                .iter()
                .map(|(n, r)| format!("n{n} {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    // A panic in a node (openraft asserts its own invariants) ends the run as a violation;
    // keep its message (one simulation per process: the hook is process-wide).
    let panic_note: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    {
        let panic_note = panic_note.clone();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let location = info
                .location()
                .map(|l| {
                    format!(
                        " at {}:{}",
                        l.file().rsplit("/src/").next().unwrap_or(l.file()),
                        l.line()
                    )
                })
                .unwrap_or_default();
            let mut note = panic_note.lock().unwrap_or_else(PoisonError::into_inner);
            if note.is_none() {
                *note = Some(format!(
                    "{}{location}",
                    payload.lines().next().unwrap_or("")
                ));
            }
        }));
    }
    let mut driver = Driver {
        sandbox: sandbox.clone(),
        sim_faults_torn: torn_writes,
        disks,
        link_faults,
        registry: registry.clone(),
        trace: trace.clone(),
        down: BTreeSet::new(),
        paused: BTreeSet::new(),
        isolated: BTreeSet::new(),
        one_way: BTreeSet::new(),
        nodes,
    };
    let mut observer = Observer::default();
    let mut next_fault = 0;
    let mut steps = 0u64;
    let mut violation = None;
    let mut workload_done = false;
    let mut converged = false;
    let mut done_at = Duration::ZERO;
    let mut drains_checked = false;

    while violation.is_none() {
        let now = sim.elapsed();
        while next_fault < plan.len() && plan[next_fault].0 <= ms(now) {
            let fault = &plan[next_fault].1;
            driver.trace.record(now, "faults", fault.to_string());
            driver.apply(&mut sim, fault);
            next_fault += 1;
        }
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step()));
        let stepped = match stepped {
            Ok(stepped) => stepped,
            Err(_) => {
                let note = panic_note
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .unwrap_or_else(|| "unknown panic".into());
                let at = ms(sim.elapsed());
                let v = Violation {
                    invariant: "no-panic",
                    at_ms: at,
                    detail: format!("a node panicked: {note}"),
                };
                trace.record(sim.elapsed(), "check", format!("FAILED {v}"));
                // The simulation is broken mid-step: leave its runtimes alone (dropping them
                // could panic again); the process ends after the report.
                std::mem::forget(sim);
                return Ok(RunReport {
                    options,
                    trace,
                    violation: Some(v),
                    simulated: Duration::from_millis(at),
                    ops: OpCounts {
                        invoked: history.records().len(),
                        ..OpCounts::default()
                    },
                    faults_applied: next_fault,
                    terms_led: observer.terms_led(),
                    digests_taken: observer.digests_taken,
                    liveness_ms: None,
                    tools: ToolCounts::default(),
                    tool_liveness_ms: None,
                    placement: PlacementCounts::default(),
                });
            }
        };
        match stepped {
            Ok(finished) => {
                if finished && !workload_done {
                    workload_done = true;
                    done_at = sim.elapsed();
                    trace.record(done_at, "sim", "workload done; waiting for convergence");
                }
            }
            Err(e) => {
                violation = Some(Violation {
                    invariant: "host-software-runs",
                    at_ms: ms(sim.elapsed()),
                    detail: format!("a simulated host failed: {e}"),
                });
                break;
            }
        }
        steps += 1;
        if steps.is_multiple_of(OBSERVE_EVERY_STEPS) {
            if let Err(v) = observer.observe(ms(sim.elapsed()), &registry, &trace) {
                violation = Some(v);
                break;
            }
            if !drains_checked && sim.elapsed() >= heal_at + DRAIN_BOUND {
                drains_checked = true;
                if let Err(v) = check_drains_now(&registry, ms(sim.elapsed()), &trace) {
                    violation = Some(v);
                    break;
                }
            }
            if workload_done {
                if cluster_converged(&registry, nodes) {
                    converged = true;
                    break;
                }
                if sim.elapsed() > done_at + CONVERGE_BOUND {
                    break;
                }
            }
        }
    }
    let end = sim.elapsed();
    let records = history.records();
    let liveness = liveness
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if violation.is_none() {
        violation = match &liveness {
            Some(Ok(_)) => None,
            Some(Err(why)) => Some(Violation {
                invariant: "liveness-after-heal",
                at_ms: ms(heal_at + LIVENESS_BOUND),
                detail: why.clone(),
            }),
            None => Some(Violation {
                invariant: "liveness-after-heal",
                at_ms: ms(end),
                detail: "the liveness probe never finished".into(),
            }),
        };
    }
    let tool_liveness = tool_liveness
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if violation.is_none() {
        violation = match &tool_liveness {
            Some(Ok(_)) => None,
            Some(Err(why)) => Some(Violation {
                invariant: "tool-liveness-after-heal",
                at_ms: ms(heal_at + TOOL_LIVENESS_BOUND),
                detail: why.clone(),
            }),
            None => Some(Violation {
                invariant: "tool-liveness-after-heal",
                at_ms: ms(end),
                detail: "the tool liveness probe never finished".into(),
            }),
        };
    }
    let events = notion_log.events();
    let budgets: Vec<(u32, u32)> = INTEGRATIONS
        .iter()
        .map(|_| {
            let b = budget();
            (b.requests_per_second, b.burst)
        })
        .collect();
    let mut pauses_forgotten = 0;
    match check_notion(&events, &budgets, |paused, early| {
        early.node != paused.node
            || early
                .node
                .is_some_and(|n| restarts.restarted_between(n, paused.at_ms, early.at_ms))
    }) {
        Ok(forgotten) => pauses_forgotten = forgotten,
        Err(v) => {
            if violation.is_none() {
                violation = Some(v);
            }
        }
    }
    if violation.is_none() {
        violation = sends.violation();
    }
    if violation.is_none() && !converged {
        violation = Some(Violation {
            invariant: "convergence-after-heal",
            at_ms: ms(end),
            detail: format!(
                "{} s after the workload ended, the nodes were not all up at the same applied index: {}",
                CONVERGE_BOUND.as_secs(),
                describe_nodes(&registry, nodes)
            ),
        });
    }
    if violation.is_none() {
        violation = check_history(&records, ms(end)).err();
    }
    if violation.is_none() {
        let states = registry
            .all()
            .into_iter()
            .map(|(id, node)| {
                let index = node
                    .control
                    .raft()
                    .metrics()
                    .borrow()
                    .last_applied
                    .as_ref()
                    .map(|l| l.index);
                let (tenants, digest) = node.control.read_applied(|s| {
                    (
                        s.tenants()
                            .map(|t| t.id.as_str().to_string())
                            .filter(|t| t != SIM_TENANT)
                            .collect::<BTreeSet<_>>(),
                        state_digest(s),
                    )
                });
                (id, (index, tenants, digest))
            })
            .collect();
        violation = check_final(&records, &states, ms(end)).err();
    }
    // The access invariants, against the converged state (every node holds the same one).
    let decisions = authz.records();
    let revocation_records = revocations.records();
    let tool_records = tools.records();
    let mut audit_records = 0;
    if violation.is_none()
        && let Some((_, node)) = registry.all().into_iter().next()
    {
        let (token_expiry, chains) = node.control.read_applied(|s| {
            let tokens: BTreeMap<String, Option<u64>> = quire_raft::TenantId::new(SIM_TENANT)
                .map(|t| {
                    s.tokens(&t)
                        .map(|k| (k.token_id.as_str().to_string(), k.expires_at_ms))
                        .collect()
                })
                .unwrap_or_default();
            let chains: Vec<_> = s
                .audit()
                .chains()
                .map(|(name, chain)| (name.clone(), chain.clone()))
                .collect();
            (tokens, chains)
        });
        audit_records = chains.iter().map(|(_, c)| c.records.len()).sum();
        violation = check_revocations(&decisions, &revocation_records, &token_expiry, ms(end))
            .and_then(|()| check_audit(&tool_records, &chains, ms(end)))
            .err();
    }
    match &violation {
        Some(v) => trace.record(end, "check", format!("FAILED {v}")),
        None => trace.record(end, "check", "all invariants held"),
    }

    let mut ops = OpCounts {
        invoked: records.len(),
        ..OpCounts::default()
    };
    for r in &records {
        match &r.completed {
            Some((_, crate::node::OpResult::Written)) => ops.writes_acked += 1,
            Some((_, crate::node::OpResult::Rejected { kind })) if kind == "already_exists" => {
                ops.writes_acked += 1
            }
            Some((_, crate::node::OpResult::Rejected { .. })) => ops.writes_rejected += 1,
            Some((_, crate::node::OpResult::Read(_))) => ops.reads += 1,
            _ => ops.failed += 1,
        }
    }
    let tool_counts = ToolCounts {
        invoked: tool_records.len(),
        ok: tool_records.iter().filter(|r| r.succeeded()).count(),
        failed: tool_records.iter().filter(|r| !r.succeeded()).count(),
        acknowledged: tool_records.iter().filter(|r| r.acknowledged()).count(),
        decisions: decisions.len(),
        refused: decisions.iter().filter(|d| !d.allowed).count(),
        revocations: revocation_records.len(),
        revocations_acked: revocation_records
            .iter()
            .filter(|r| r.acked_ms.is_some())
            .count(),
        audit_records,
        notion_requests: events.len(),
        notion_throttled: events
            .iter()
            .filter(|e| matches!(e.status, 429 | 529))
            .count(),
        notion_errors: events
            .iter()
            .filter(|e| matches!(e.status, 500 | 503))
            .count(),
        pauses_forgotten,
    };
    let (rounds, moves) = placement_rounds(&trace.text());
    let placement = PlacementCounts {
        rounds,
        moves,
        epochs: observer.placement.epochs_seen(),
    };
    // Drop the nodes' handles before the runtimes go (with the sim).
    for (id, _) in registry.all() {
        registry.remove(id);
    }
    Ok(RunReport {
        options,
        trace,
        violation,
        simulated: end,
        ops,
        faults_applied: next_fault,
        terms_led: observer.terms_led(),
        digests_taken: observer.digests_taken,
        liveness_ms: liveness.and_then(|l| l.ok()),
        tools: tool_counts,
        tool_liveness_ms: tool_liveness.and_then(|l| l.ok()),
        placement,
    })
}

/// The drain check on the live node with the highest applied index: live nodes are those
/// up and members of the group it sees.
fn check_drains_now(registry: &Registry, now_ms: u64, trace: &Trace) -> Result<(), Violation> {
    let all = registry.all();
    let Some((_, node)) = all.iter().max_by_key(|(id, node)| {
        let applied = node.control.status().applied_index;
        (applied, std::cmp::Reverse(*id))
    }) else {
        return Ok(());
    };
    let members: BTreeSet<NodeId> = node.control.members().into_iter().map(|m| m.id).collect();
    let live: BTreeSet<NodeId> = all
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| members.contains(id))
        .collect();
    let (draining, result) = node.control.read_applied(|s| {
        let p = s.placement();
        (p.draining.clone(), check_drains(p, &live, now_ms))
    });
    if result.is_ok() && !draining.is_empty() {
        let list: Vec<String> = draining.iter().map(|n| format!("n{n}")).collect();
        trace.record(
            Duration::from_millis(now_ms),
            "check",
            format!("drain of {} complete", list.join(" ")),
        );
    }
    result
}

fn cluster_converged(registry: &Registry, nodes: u64) -> bool {
    let all = registry.all();
    if all.len() as u64 != nodes {
        return false;
    }
    let views: BTreeSet<_> = all
        .iter()
        .map(|(_, node)| {
            let m = node.control.raft().metrics().borrow().clone();
            (
                m.last_applied.map(|l| l.index),
                m.last_log_index,
                m.current_leader,
            )
        })
        .collect();
    views.len() == 1 && views.iter().all(|(_, _, leader)| leader.is_some())
}

fn describe_nodes(registry: &Registry, nodes: u64) -> String {
    (1..=nodes)
        .map(|n| match registry.get(n) {
            None => format!("n{n} down"),
            Some(node) => {
                let m = node.control.raft().metrics().borrow().clone();
                format!(
                    "n{n} {:?} term {} applied {:?} last log {:?} leader {:?}",
                    m.state,
                    m.current_term,
                    m.last_applied.map(|l| l.index),
                    m.last_log_index,
                    m.current_leader
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_applied_rounds_are_counted() {
        let text = "  146 n3       placement round: 4 moves\n\
                    1151 n3       placement round: 25 moves, all stale\n\
                    2000 n1       placement round: 3 moves refused: node is draining\n\
                    2614 n3       placement round: 22 moves\n\
                    3000 n3       placement round: 2 moves, outcome unknown\n";
        assert_eq!(placement_rounds(text), (2, 26));
    }
}
