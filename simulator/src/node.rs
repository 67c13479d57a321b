//! One simulated Quire node: the host software turmoil runs (and reruns after a crash). It is
//! the production control-plane stack — `ControlPlane` on a `SimEngine` over its `SimDisk`,
//! `GrpcNetwork` + `PeerServer` (tonic) over turmoil TCP through the transport's dialer hook,
//! the shared `LinkFaults` filter, and `quire_node::cluster::Router` for writes and reads —
//! plus a small admin front that takes the workload's requests from an in-memory channel —
//! and the production data plane (`quire_actors::DataPlane`: tenant supervisors, sessions,
//! per-integration limiters, the Notion client over [`TurmoilHttp`]) behind a tool front that
//! runs the agents' calls through the real tool catalogue (`quire_node::tools::call_tool`),
//! with a gateway that calls `DataPlane::call` as `node/src/mcp.rs` does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use openraft::ServerState;
use quire_actors::call::{CallContext, CallError, IntegrationSpec};
use quire_actors::notion::client::NotionClientConfig;
use quire_actors::notion::{NotionRequest, NotionToken};
use quire_actors::supervisor::{DataPlane, DataPlaneConfig, StartOptions};
use quire_node::cluster::Router;
use quire_node::tools::NotionGateway;
use quire_raft::command::Command;
use quire_raft::control::{ReadError, WriteError};
use quire_raft::{ApplyError, ControlPlane, ControlPlaneConfig, NodeId, SimDisk, State, TenantId};
use quire_transport::{
    BoxedPeerIo, DialFuture, Dialer, GrpcNetwork, LinkFaults, PeerServer, TransportConfig,
    TransportSecurity,
};
use tokio::sync::{mpsc, oneshot};

use crate::bugs::Bug;
use crate::notion::{INTEGRATIONS, TurmoilHttp, base_url, budget};
use crate::trace::{Trace, sim_now};

/// The port every simulated node serves the peer service on.
pub const PEER_PORT: u16 = 7000;
/// Requests waiting in one node's admin front.
pub const ADMIN_QUEUE: usize = 256;
/// Tool calls waiting in one node's tool front.
pub const TOOL_QUEUE: usize = 256;
/// The tenant every simulated agent acts for.
pub const SIM_TENANT: &str = "sim-tenant";
/// Longest a data-plane call may take on a node (queueing for a permit included).
pub const CALL_DEADLINE_MS: u64 = 8_000;
/// Cluster name of the simulated cluster.
pub const CLUSTER_NAME: &str = "quire-sim";
/// Wait before reopening after a failed open or a fatal Raft error.
const REOPEN_WAIT: Duration = Duration::from_millis(200);

/// What a simulated node's wall clock reads at simulated time zero (2026-01-01T00:00:00Z).
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;
/// Largest skew of a node's wall clock from simulated time, either way, ms.
pub const MAX_CLOCK_SKEW_MS: i64 = 2_000;

/// A node's wall clock (`quire_raft::Clock`, what stamps and expiry checks read): simulated
/// time plus a skew drawn from the seed for that node (within ±[`MAX_CLOCK_SKEW_MS`]),
/// the same for all its incarnations. It must be read inside the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkewedClock {
    /// Offset from simulated time, ms.
    pub skew_ms: i64,
}

impl SkewedClock {
    /// Node `id`'s clock in the run of `seed`.
    pub fn for_node(seed: u64, id: NodeId) -> SkewedClock {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x636c_6f63_6b00 ^ id);
        SkewedClock {
            skew_ms: rng.random_range(-MAX_CLOCK_SKEW_MS..=MAX_CLOCK_SKEW_MS),
        }
    }
}

impl quire_raft::clock::Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        (SIM_EPOCH_MS + sim_now().as_millis() as u64).saturating_add_signed(self.skew_ms)
    }
}

/// The turmoil host name of node `id`.
pub fn host_name(id: NodeId) -> String {
    format!("node-{id}")
}

/// The peer address of node `id`.
pub fn peer_addr(id: NodeId) -> String {
    format!("{}:{PEER_PORT}", host_name(id))
}

/// What the workload asks a node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `CreateTenant` with a fresh, unique id: applies.
    Create {
        /// The tenant id.
        tenant: String,
    },
    /// `CreateTenant` with a blank display name: `apply` rejects it; it must never show.
    CreateInvalid {
        /// The tenant id.
        tenant: String,
    },
    /// A linearizable read of the set of tenant ids.
    Read,
}

/// How an [`Op`] ended, as its caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The write was committed and applied.
    Written,
    /// The write was committed and `apply` rejected it (`kind` is the rejection's kind).
    Rejected {
        /// `already_exists`, `invalid`, ...
        kind: String,
    },
    /// The read's result.
    Read(BTreeSet<String>),
    /// The outcome is unknown (timeout, node down or crashed, no leader): a write may or may
    /// not have been committed.
    Failed {
        /// A short, reproducible category (never a wall-clock time).
        why: String,
    },
}

/// A request to a node's admin front.
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Where the result goes.
    pub reply: oneshot::Sender<OpResult>,
}

/// A tool call an agent asks a node to run.
pub struct ToolRequest {
    /// Index into [`INTEGRATIONS`].
    pub integration: usize,
    /// The agent's session (the limiter's unit of fairness).
    pub session: String,
    /// The tool's name.
    pub tool: String,
    /// Its arguments.
    pub arguments: serde_json::Value,
    /// Where the outcome goes: `Ok(())` or the tool error's code.
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// A membership change an operator asks the leader to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Remove the node from the group (`ControlPlane::remove`).
    Remove(NodeId),
    /// Add it back: learner, caught up, voter (`ControlPlane::join`).
    Join(NodeId),
}

/// A membership change sent to a node (it must be the leader).
pub struct MemberRequest {
    /// The change.
    pub change: MemberChange,
    /// `Ok(())` or a short reason.
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// Longest a membership change may take on the leader.
pub const MEMBER_CHANGE_TIMEOUT: Duration = Duration::from_secs(8);

/// A running incarnation of a node, as the driver and the workload see it.
#[derive(Clone)]
pub struct LiveNode {
    /// Its control plane.
    pub control: Arc<ControlPlane>,
    /// Its admin front.
    pub requests: mpsc::Sender<Request>,
    /// Its tool front (the data plane).
    pub tools: mpsc::Sender<ToolRequest>,
    /// Its membership front (an operator's `quire ctl nodes` equivalent).
    pub members: mpsc::Sender<MemberRequest>,
    /// Counts this node's incarnations (restarts), from 1.
    pub incarnation: u64,
    /// Its wall clock (skewed from simulated time).
    pub clock: SkewedClock,
}

/// The nodes that are up, by id (shared by the hosts, the workload and the driver).
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<BTreeMap<NodeId, LiveNode>>>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, LiveNode>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live incarnation of `id`.
    pub fn get(&self, id: NodeId) -> Option<LiveNode> {
        self.lock().get(&id).cloned()
    }

    /// Every live node, by id.
    pub fn all(&self) -> Vec<(NodeId, LiveNode)> {
        self.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    pub(crate) fn insert(&self, id: NodeId, node: LiveNode) {
        self.lock().insert(id, node);
    }

    /// Forgets `id` (it crashed or is restarting).
    pub fn remove(&self, id: NodeId) {
        self.lock().remove(&id);
    }

    /// Forgets `id` only if its live incarnation is still `incarnation`.
    pub(crate) fn remove_incarnation(&self, id: NodeId, incarnation: u64) {
        let mut nodes = self.lock();
        if nodes.get(&id).is_some_and(|n| n.incarnation == incarnation) {
            nodes.remove(&id);
        }
    }
}

/// Connects to peers over turmoil TCP.
struct TurmoilDialer;

impl Dialer for TurmoilDialer {
    fn dial(&self, addr: &str) -> DialFuture {
        let addr = addr.to_string();
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as BoxedPeerIo)
        })
    }
}

/// The transport timings under simulation: short enough that a hung connection after a
/// partition is dropped quickly (turmoil never resends a segment lost in a partition).
pub fn transport_config() -> TransportConfig {
    TransportConfig {
        connect_timeout_ms: 500,
        request_timeout_ms: 2_000,
        join_timeout_ms: 10_000,
        backoff_base_ms: 20,
        backoff_max_ms: 400,
        keepalive_interval_ms: 1_000,
        keepalive_timeout_ms: 1_000,
        ..TransportConfig::default()
    }
}

/// Everything a node's host software needs; cloned into each (re)start.
#[derive(Clone)]
pub struct NodeSetup {
    /// The run's seed.
    pub seed: u64,
    /// This node.
    pub id: NodeId,
    /// The static member list (id → peer address).
    pub members: BTreeMap<NodeId, String>,
    /// Its disk (survives crashes).
    pub disk: SimDisk,
    /// The link faults every node's transport applies.
    pub faults: Arc<LinkFaults>,
    /// Where live nodes are published.
    pub registry: Registry,
    /// The run's trace.
    pub trace: Trace,
    /// The planted bug, if any.
    pub bug: Option<Bug>,
    /// Counts starts of this node across crashes (shared by all its incarnations).
    pub starts: Arc<Mutex<u64>>,
    /// Every node's restarts (node, simulated ms), shared by all nodes.
    pub restarts: RestartLog,
}

/// When nodes started again after their first start (node, simulated ms).
#[derive(Clone, Default)]
pub struct RestartLog(Arc<Mutex<Vec<(NodeId, u64)>>>);

impl RestartLog {
    fn push(&self, node: NodeId, at_ms: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((node, at_ms));
    }

    /// Whether `node` started again in `(from_ms, to_ms]`.
    pub fn restarted_between(&self, node: NodeId, from_ms: u64, to_ms: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(n, at)| *n == node && *at > from_ms && *at <= to_ms)
    }
}

fn who(id: NodeId) -> String {
    format!("n{id}")
}

/// The host software of one node: opens the node on its disk, serves until Raft stops on a
/// fatal (storage) error, then reopens — the way a supervisor restarts a crashed process.
/// A turmoil crash cancels it at any await point.
pub async fn run_node(setup: NodeSetup) -> turmoil::Result {
    loop {
        let incarnation = {
            let mut starts = setup.starts.lock().unwrap_or_else(PoisonError::into_inner);
            *starts += 1;
            *starts
        };
        match serve_incarnation(&setup, incarnation).await {
            Ok(()) => {}
            Err(why) => setup.trace.record(
                sim_now(),
                &who(setup.id),
                format!("incarnation {incarnation} stopped: {why}"),
            ),
        }
        setup.registry.remove_incarnation(setup.id, incarnation);
        tokio::time::sleep(REOPEN_WAIT).await;
    }
}

async fn serve_incarnation(setup: &NodeSetup, incarnation: u64) -> Result<(), String> {
    let id = setup.id;
    let me = who(id);
    // A new incarnation: the previous one's unflushed writes are gone (or torn).
    let engine = setup.disk.open();
    let clock = SkewedClock::for_node(setup.seed, id);
    setup.trace.record(
        sim_now(),
        &me,
        format!(
            "start incarnation {incarnation} (wall clock skew {:+} ms)",
            clock.skew_ms
        ),
    );
    if incarnation > 1 {
        setup.restarts.push(id, sim_now().as_millis() as u64);
    }
    let tconfig = transport_config();
    let network = GrpcNetwork::new(id, tconfig.clone(), TransportSecurity::Insecure)
        .map_err(|e| format!("transport config: {e}"))?
        .with_fault_filter(setup.faults.clone())
        .with_dialer(Arc::new(TurmoilDialer));
    let relay = network.peer_client();
    for (peer, addr) in &setup.members {
        relay.learn_peer(*peer, addr);
    }
    let mut config = ControlPlaneConfig::new("unused", id, CLUSTER_NAME, peer_addr(id));
    config.heartbeat_ms = 100;
    config.election_timeout_ms = (400, 800);
    config.snapshot_every_logs = 200;
    let control = Arc::new(
        ControlPlane::open_with(config, engine, network)
            .await
            .map_err(|e| format!("open failed: {}", error_kind(&e.to_string())))?,
    );
    control
        .bootstrap_members(&setup.members)
        .await
        .map_err(|e| format!("bootstrap failed: {}", error_kind(&e.to_string())))?;

    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PEER_PORT))
        .await
        .map_err(|e| format!("bind failed: {e}"))?;
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    let server = PeerServer::new(
        control.clone(),
        tconfig,
        TransportSecurity::Insecure,
        relay.clone(),
    )
    .map_err(|e| format!("server config: {e}"))?;
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let addr = peer_addr(id);
    let server = tokio::spawn(async move {
        server
            .serve_incoming(&addr, incoming, async {
                let _ = server_stopped.await;
            })
            .await
    });

    let router = Router {
        control: control.clone(),
        peers: Some(relay),
        faults: Some(setup.faults.clone()),
        // Request ids follow the run's seed, the node and its incarnation.
        request_ids: quire_node::cluster::RequestIds::seeded(
            setup.seed ^ (setup.id << 48) ^ (incarnation << 32),
        ),
    };
    let data = DataPlane::start_with(
        DataPlaneConfig {
            notion: NotionClientConfig {
                base_url: base_url(),
                request_timeout_ms: 5_000,
                retry_base_ms: 100,
                ..NotionClientConfig::default()
            },
            call_deadline_ms: CALL_DEADLINE_MS,
            seed: setup.seed ^ 0x6461_7461 ^ (setup.id << 48) ^ (incarnation << 32),
            ..DataPlaneConfig::default()
        },
        StartOptions {
            transport: Some(Arc::new(TurmoilHttp)),
            planted_bug_limiters_start_full: setup.bug == Some(Bug::LimiterForgetsState),
        },
    )
    .await
    .map_err(|e| format!("data plane: {}", error_kind(&e.to_string())))?;
    let (requests, mut inbox) = mpsc::channel::<Request>(ADMIN_QUEUE);
    let (tools, mut tool_inbox) = mpsc::channel::<ToolRequest>(TOOL_QUEUE);
    let (members, mut member_inbox) = mpsc::channel::<MemberRequest>(8);
    setup.registry.insert(
        id,
        LiveNode {
            control: control.clone(),
            requests,
            tools,
            members,
            incarnation,
            clock,
        },
    );

    let mut metrics = control.raft().metrics();
    let outcome = loop {
        tokio::select! {
            request = inbox.recv() => {
                let Some(request) = request else { break Ok(()) };
                let router = router.clone();
                let bug = setup.bug;
                tokio::spawn(async move {
                    let result = execute(&router, bug, request.op).await;
                    let _ = request.reply.send(result);
                });
            }
            member = member_inbox.recv() => {
                let Some(member) = member else { break Ok(()) };
                let control = control.clone();
                tokio::spawn(async move {
                    let change = async {
                        // Only a leader a quorum still follows decides (an isolated node may
                        // still think it leads, with a stale view of the members).
                        control
                            .read_index(Duration::from_secs(2))
                            .await
                            .map_err(|e| quire_raft::membership::MembershipError::Raft(e.to_string()))?;
                        match member.change {
                            MemberChange::Remove(n) => control.remove(n).await,
                            MemberChange::Join(n) => control.join(n, &peer_addr(n)).await,
                        }
                    };
                    let result = match tokio::time::timeout(MEMBER_CHANGE_TIMEOUT, change).await {
                        Err(_) => Err("timeout".to_string()),
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(error_kind(&e.to_string())),
                    };
                    let _ = member.reply.send(result);
                });
            }
            tool = tool_inbox.recv() => {
                let Some(tool) = tool else { break Ok(()) };
                let data = data.clone();
                tokio::spawn(async move {
                    let result = run_tool(data, &tool).await;
                    let _ = tool.reply.send(result);
                });
            }
            changed = metrics.changed() => {
                if changed.is_err() {
                    break Err("raft stopped".to_string());
                }
                let m = metrics.borrow().clone();
                if let Err(e) = &m.running_state {
                    break Err(format!("raft stopped on a fatal error: {}", error_kind(&e.to_string())));
                }
                if m.state == ServerState::Shutdown {
                    break Err("raft shut down".to_string());
                }
            }
        }
    };
    setup.registry.remove_incarnation(id, incarnation);
    data.stop().await;
    let _ = stop_server.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = control.raft().shutdown().await;
    outcome
}

/// The data plane as the tool catalogue sees it: every request goes out for one caller
/// (the same shape as `node/src/mcp.rs`'s gateway).
struct SimGateway {
    data: DataPlane,
    ctx: CallContext,
}

impl NotionGateway for SimGateway {
    async fn call(&self, req: NotionRequest) -> Result<serde_json::Value, CallError> {
        self.data.call(&self.ctx, req).await
    }
}

async fn run_tool(data: DataPlane, tool: &ToolRequest) -> Result<(), String> {
    let Some((name, token)) = INTEGRATIONS.get(tool.integration) else {
        return Err("unknown_integration".into());
    };
    let gateway = SimGateway {
        data,
        ctx: CallContext {
            tenant_id: SIM_TENANT.into(),
            workspace_id: format!("ws-{name}"),
            session_id: tool.session.clone(),
            integration: IntegrationSpec {
                id: (*name).to_string(),
                token: NotionToken::new(*token),
                budget: budget(),
            },
        },
    };
    quire_node::tools::call_tool(&gateway, &tool.tool, tool.arguments.clone())
        .await
        .map(|_| ())
        .map_err(|e| e.code.to_string())
}

fn tenant_ids(state: &State) -> BTreeSet<String> {
    state.tenants().map(|t| t.id.as_str().to_string()).collect()
}

async fn execute(router: &Router, bug: Option<Bug>, op: Op) -> OpResult {
    let (tenant, display_name) = match op {
        Op::Read => return read(router, bug).await,
        Op::Create { tenant } => {
            let display_name = format!("Tenant {tenant}");
            (tenant, display_name)
        }
        // Blank: `apply` rejects it.
        Op::CreateInvalid { tenant } => (tenant, " ".to_string()),
    };
    match TenantId::new(&tenant) {
        Ok(tenant) => {
            write(
                router,
                Command::CreateTenant {
                    tenant,
                    display_name,
                },
            )
            .await
        }
        Err(e) => OpResult::Failed {
            why: format!("bad tenant id: {e}"),
        },
    }
}

async fn read(router: &Router, bug: Option<Bug>) -> OpResult {
    if bug == Some(Bug::StaleLocalRead) {
        // PLANTED BUG (simulator only): no read index, just this node's applied state.
        return OpResult::Read(router.control.read_applied(tenant_ids));
    }
    match router.read(tenant_ids).await {
        Ok(ids) => OpResult::Read(ids),
        Err(e) => OpResult::Failed {
            why: read_error_kind(&e),
        },
    }
}

async fn write(router: &Router, cmd: Command) -> OpResult {
    match router.write(cmd).await {
        Ok(_) => OpResult::Written,
        Err(WriteError::Rejected(e)) => OpResult::Rejected {
            kind: apply_error_kind(&e).into(),
        },
        Err(WriteError::NotLeader { .. }) => OpResult::Failed {
            why: "no leader".into(),
        },
        Err(WriteError::Timeout) => OpResult::Failed {
            why: "timeout".into(),
        },
        Err(WriteError::Raft(e)) => OpResult::Failed {
            why: format!("raft: {}", error_kind(&e)),
        },
    }
}

fn apply_error_kind(e: &ApplyError) -> &'static str {
    match e {
        ApplyError::AlreadyExists(_) => "already_exists",
        ApplyError::Invalid(_) => "invalid",
        ApplyError::NotFound(_) => "not_found",
        _ => "other",
    }
}

fn read_error_kind(e: &ReadError) -> String {
    match e {
        ReadError::NotLeader { .. } => "no leader".into(),
        ReadError::Timeout => "timeout".into(),
        ReadError::Raft(e) => format!("raft: {}", error_kind(e)),
    }
}

/// A short, reproducible category of an error message: its first words, without numbers
/// (messages may carry durations or addresses that are fine but noisy).
pub fn error_kind(message: &str) -> String {
    message
        .split_whitespace()
        .take(6)
        .map(|w| {
            w.chars()
                .filter(|c| c.is_ascii_alphabetic() || *c == '-' || *c == '_')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_raft::clock::Clock as _;

    #[test]
    fn node_clocks_are_skewed_by_the_seed_within_the_bound() {
        let skews: Vec<i64> = (1..=9)
            .map(|n| SkewedClock::for_node(7, n).skew_ms)
            .collect();
        assert_eq!(
            skews,
            (1..=9)
                .map(|n| SkewedClock::for_node(7, n).skew_ms)
                .collect::<Vec<_>>()
        );
        assert!(skews.iter().all(|s| s.abs() <= MAX_CLOCK_SKEW_MS));
        assert!(skews.iter().any(|s| *s != skews[0]), "{skews:?}");
        // Outside a simulation, simulated time reads zero.
        let clock = SkewedClock { skew_ms: -1_500 };
        assert_eq!(clock.now_ms(), SIM_EPOCH_MS - 1_500);
    }
}
