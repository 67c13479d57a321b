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
use quire_node::audit_log::AuditLog;
use quire_node::cluster::Router;
use quire_node::freshness::Freshness;
use quire_node::tools::NotionGateway;
use quire_raft::audit::{AuditEvent, Severity};
use quire_raft::clock::Clock as _;
use quire_raft::command::Command;
use quire_raft::control::{ReadError, WriteError};
use quire_raft::rbac::{Permission, Role, RoleScope, Subject, authorize};
use quire_raft::{ApplyError, ControlPlane, ControlPlaneConfig, NodeId, SimDisk, State, TenantId};
use quire_raft::{PrincipalId, TokenId, WorkspaceId};
use quire_transport::{
    BoxedPeerIo, DialFuture, Dialer, GrpcNetwork, LinkFaults, PeerServer, TransportConfig,
    TransportSecurity,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::access::{
    AUDIT_MAX_BATCH, AUDIT_QUEUE, AUTHZ_MAX_STALENESS, AuthzLog, AuthzRecord, binding_of_reason,
};
use crate::bugs::Bug;
use crate::forward::{Forward, ForwardService};
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
    /// `CreateTenantIn` with a fresh, unique id and a residency policy: applies.
    CreateIn {
        /// The tenant id.
        tenant: String,
        /// Where its shards may live.
        residency: quire_raft::placement::Residency,
    },
    /// `CreateTenant` with a blank display name: `apply` rejects it; it must never show.
    CreateInvalid {
        /// The tenant id.
        tenant: String,
    },
    /// A linearizable read of the set of tenant ids (the access tenant [`SIM_TENANT`] left out).
    Read,
    /// An access change of a sim admin: the node stamps it with its own wall clock.
    Access(AccessOp),
}

/// An access change (or read) of a sim admin, in [`SIM_TENANT`]. Times (`issued_at_ms`,
/// `granted_at_ms`, `set_at_ms`, expiries) are stamped by the receiving node's skewed clock,
/// as a production node stamps what its admin API proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessOp {
    /// A command without stamps, as it is.
    Plain(Command),
    /// `IssueToken` for a principal in a workspace, with scopes to read through MCP.
    IssueToken {
        /// Principal.
        principal: String,
        /// Workspace.
        workspace: String,
        /// New token id.
        token_id: String,
        /// `hash_api_token(secret)`.
        secret_hash: String,
        /// Lifetime from the node's now, if any.
        ttl_ms: Option<u64>,
    },
    /// `AssignRole` workspace_manager to a principal in a workspace.
    AssignRole {
        /// Principal.
        principal: String,
        /// Workspace.
        workspace: String,
        /// Lifetime from the node's now, if any.
        ttl_ms: Option<u64>,
    },
    /// `RevokeToken`.
    RevokeToken {
        /// The token.
        token_id: String,
    },
    /// `RevokeRole`.
    RevokeRole {
        /// The binding.
        binding: u64,
    },
    /// `AddRestriction` denying a principal everything in a workspace.
    Restrict {
        /// Principal.
        principal: String,
        /// Workspace.
        workspace: String,
    },
    /// A linearizable read of every role binding in [`SIM_TENANT`].
    Bindings,
}

/// A role binding as a sim admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInfo {
    /// Its id.
    pub id: u64,
    /// Its principal.
    pub principal: String,
    /// The workspace it is bound at (`None`: another scope).
    pub workspace: Option<String>,
    /// Its expiry (wall-clock ms), if any.
    pub expires_at_ms: Option<u64>,
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
    /// The role bindings read.
    Bindings(Vec<BindingInfo>),
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
    /// The call's unique id (the audit record's `resource`).
    pub call_id: String,
    /// The bearer secret of the agent's API token.
    pub secret: String,
    /// Where the answer goes.
    pub reply: oneshot::Sender<ToolReply>,
}

/// How a node answered a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolReply {
    /// `Ok(())` or the error's code (`unavailable`, `invalid_token`, `permission_denied`,
    /// `audit_unavailable`, or the tool's own).
    pub result: Result<(), String>,
    /// Whether the node answered the call as done: it ran, and (without planted bugs) its
    /// audit record committed.
    pub acknowledged: bool,
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
    /// Every node's authorization decisions.
    pub authz: AuthzLog,
    /// Its region (its placement labels; [`crate::placement::regions`]).
    pub region: String,
    /// Every node's requests let through an owner's fence.
    pub sends: crate::check::SendLog,
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
    // Calls other nodes forward to this one (served once the data plane is up).
    let forwarding = Arc::new(ForwardService::default());
    let server = PeerServer::new(
        control.clone(),
        tconfig,
        TransportSecurity::Insecure,
        relay.clone(),
    )
    .map_err(|e| format!("server config: {e}"))?
    .with_data_calls(forwarding.clone());
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
    // The access rules confirmed current within the revocation bound, and the audit
    // group-commit batcher: production's own (`node/src/freshness.rs`, `node/src/audit_log.rs`)
    // on this node's router.
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    let freshness = Freshness::start(router.clone(), AUTHZ_MAX_STALENESS, background.clone());
    let audit = Arc::new(AuditLog::start(
        router.clone(),
        AUDIT_QUEUE,
        AUDIT_MAX_BATCH,
        background.clone(),
    ));
    // Placement: the node's labels, then the leader's rounds (`simulator/src/placement.rs`).
    if let Some(peers) = router.peers.clone() {
        let task = crate::placement::PlacementTask {
            id,
            labels: crate::placement::labels(&setup.region),
            router: router.clone(),
            peers,
            trace: setup.trace.clone(),
            bug: setup.bug,
        };
        tokio::spawn(crate::placement::run(task, background.clone()));
    }
    let data = DataPlane::start_with(
        DataPlaneConfig {
            notion: NotionClientConfig {
                base_url: base_url(),
                request_timeout_ms: 5_000,
                retry_base_ms: 100,
                ..NotionClientConfig::default()
            },
            call_deadline_ms: CALL_DEADLINE_MS,
            // Passivation off: no idle timers, so a seed replays as it did before it existed.
            idle_tenant_ms: 0,
            seed: setup.seed ^ 0x6461_7461 ^ (setup.id << 48) ^ (incarnation << 32),
            ..DataPlaneConfig::default()
        },
        StartOptions {
            transport: Some(Arc::new(TurmoilHttp { node: id })),
            planted_bug_limiters_start_full: setup.bug == Some(Bug::LimiterForgetsState),
        },
    )
    .await
    .map_err(|e| format!("data plane: {}", error_kind(&e.to_string())))?;
    let forward = Arc::new(Forward::new(
        id,
        router.clone(),
        data.clone(),
        freshness.clone(),
        setup.bug,
        setup.trace.clone(),
        setup.sends.clone(),
    ));
    forwarding.set(forward.clone());
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
                    let result = execute(&router, bug, clock, request.op).await;
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
                let front = ToolFront {
                    id,
                    forward: forward.clone(),
                    router: router.clone(),
                    freshness: freshness.clone(),
                    audit: audit.clone(),
                    clock,
                    bug: setup.bug,
                    authz: setup.authz.clone(),
                };
                tokio::spawn(front.serve(tool));
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
    background.cancel();
    data.stop().await;
    let _ = stop_server.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = control.raft().shutdown().await;
    outcome
}

/// The data plane as the tool catalogue sees it: every request goes out for one caller from
/// its integration's shard owner (the same shape as `node/src/mcp.rs`'s gateway over
/// `node/src/forward.rs`).
struct SimGateway {
    forward: Arc<Forward>,
    ctx: CallContext,
}

impl NotionGateway for SimGateway {
    async fn call(&self, req: NotionRequest) -> Result<serde_json::Value, CallError> {
        self.forward.call(&self.ctx, req).await
    }
}

async fn run_tool(forward: Arc<Forward>, tool: &ToolRequest) -> Result<(), String> {
    let Some((name, token)) = INTEGRATIONS.get(tool.integration) else {
        return Err("unknown_integration".into());
    };
    let gateway = SimGateway {
        forward,
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

/// What a node's tool front needs to serve one call.
struct ToolFront {
    id: NodeId,
    forward: Arc<Forward>,
    router: Router,
    freshness: Arc<Freshness>,
    audit: Arc<AuditLog>,
    clock: SkewedClock,
    bug: Option<Bug>,
    authz: AuthzLog,
}

/// Who a valid token names, and what was decided for it.
struct Decided {
    token_id: String,
    principal: String,
    workspace: String,
    decision: Option<quire_raft::rbac::Decision>,
    binding_expires_at_ms: Option<u64>,
}

impl ToolFront {
    /// One tool call, the way production serves it (`node/src/auth.rs` `require_bearer`,
    /// then `node/src/mcp.rs` `call_tool`): confirm the access rules current within the
    /// bound, authenticate the token against the applied state, decide `notion.read` in its
    /// workspace with `quire_raft::rbac::authorize`, run the tool, commit its audit record
    /// and only then answer (fail closed).
    async fn serve(self, tool: ToolRequest) {
        let received_ms = sim_now().as_millis() as u64;
        let answer = |result: Result<(), String>, acknowledged: bool| ToolReply {
            result,
            acknowledged,
        };
        if self.bug != Some(Bug::AuthzIgnoresStaleness)
            && self.freshness.ensure(&self.router).await.is_err()
        {
            let _ = tool.reply.send(answer(Err("unavailable".into()), false));
            return;
        }
        // PLANTED BUG `authz-ignores-staleness` (simulator only) skips the barrier above.
        let now_ms = self.clock.now_ms();
        let decided = self
            .router
            .control
            .read_applied(|state| decide(state, &tool.secret, now_ms));
        let mut record = AuthzRecord {
            call_id: tool.call_id.clone(),
            node: self.id,
            received_ms,
            node_now_ms: now_ms,
            token_id: None,
            principal: None,
            workspace: None,
            allowed: false,
            binding: None,
            binding_expires_at_ms: None,
            reason: "unknown, revoked or expired token".into(),
        };
        let Some(decided) = decided else {
            self.authz.push(record);
            let _ = tool.reply.send(answer(Err("invalid_token".into()), false));
            return;
        };
        record.token_id = Some(decided.token_id.clone());
        record.principal = Some(decided.principal.clone());
        record.workspace = Some(decided.workspace.clone());
        let event =
            |outcome: String, latency_ms: Option<u64>, justification: Option<String>| AuditEvent {
                at_ms: self.clock.now_ms(),
                node: self.id,
                principal: format!("{SIM_TENANT}/{}", decided.principal),
                tenant: TenantId::new(SIM_TENANT).ok(),
                workspace: Some(decided.workspace.clone()),
                kind: "tool".into(),
                action: tool.tool.clone(),
                resource: Some(tool.call_id.clone()),
                outcome,
                latency_ms,
                notion_requests: None,
                justification,
                severity: if latency_ms.is_none() {
                    Severity::Warning
                } else {
                    Severity::Info
                },
            };
        match &decided.decision {
            Some(d) if d.allowed => {
                record.allowed = true;
                record.binding = binding_of_reason(&d.reason);
                record.binding_expires_at_ms = decided.binding_expires_at_ms;
                record.reason = d.reason.clone();
                self.authz.push(record);
            }
            other => {
                let reason = other.as_ref().map_or_else(
                    || "the token lacks the scope notion_workspace_read".to_string(),
                    |d| d.reason.clone(),
                );
                record.reason = reason.clone();
                self.authz.push(record);
                // A refusal is audited without waiting (`QuireMcp::audit_denial`).
                let _ = self
                    .audit
                    .record(event("denied".into(), None, Some(reason)));
                let _ = tool
                    .reply
                    .send(answer(Err("permission_denied".into()), false));
                return;
            }
        }
        let started = sim_now();
        let result = run_tool(self.forward.clone(), &tool).await;
        let latency = (sim_now() - started).as_millis() as u64;
        let outcome = match &result {
            Ok(()) => "ok".to_string(),
            Err(code) => format!("error:{code}"),
        };
        let event = event(outcome, Some(latency), None);
        if self.bug == Some(Bug::AuditAfterAnswer) {
            // PLANTED BUG (simulator only): answer first, commit the record afterwards.
            let _ = tool.reply.send(answer(result, true));
            let _ = self.audit.commit(event).await;
            return;
        }
        match self.audit.commit(event).await {
            Ok(()) => {
                let _ = tool.reply.send(answer(result, true));
            }
            Err(_) => {
                let _ = tool
                    .reply
                    .send(answer(Err("audit_unavailable".into()), false));
            }
        }
    }
}

/// Authenticates an opaque token against `state` (the rule of `App::authenticate_opaque`,
/// `node/src/app.rs`: known by its hash, valid at the node's `now_ms`, its principal still a
/// member of its workspace) and decides `notion.read` in its workspace (`None` inside when
/// the token lacks the scopes, as `node/src/mcp.rs` refuses before deciding).
fn decide(state: &State, secret: &str, now_ms: u64) -> Option<Decided> {
    let token = state.token_by_hash(&quire_raft::hash_api_token(secret))?;
    if !token.is_valid_at(now_ms) {
        return None;
    }
    let principal = state.principal(&token.tenant, &token.principal)?;
    if !principal.workspaces.contains(&token.workspace_id) {
        return None;
    }
    let scoped = [quire_node::mcp::SCOPE_MCP, quire_node::mcp::SCOPE_READ]
        .iter()
        .all(|s| token.scopes.contains(*s));
    let decision = scoped.then(|| {
        authorize(
            state,
            &Subject::tenant(token.tenant.clone(), token.principal.clone()),
            Permission::NotionRead,
            &RoleScope::Workspace {
                tenant: token.tenant.clone(),
                workspace: token.workspace_id.clone(),
            },
            now_ms,
        )
    });
    let binding_expires_at_ms = decision
        .as_ref()
        .and_then(|d| binding_of_reason(&d.reason))
        .and_then(|b| state.access().binding(b))
        .and_then(|b| b.expires_at_ms);
    Some(Decided {
        binding_expires_at_ms,
        token_id: token.token_id.as_str().to_string(),
        principal: token.principal.as_str().to_string(),
        workspace: token.workspace_id.as_str().to_string(),
        decision,
    })
}

fn tenant_ids(state: &State) -> BTreeSet<String> {
    state
        .tenants()
        .map(|t| t.id.as_str().to_string())
        .filter(|t| t != SIM_TENANT)
        .collect()
}

async fn execute(router: &Router, bug: Option<Bug>, clock: SkewedClock, op: Op) -> OpResult {
    let (tenant, display_name) = match op {
        Op::Read => return read(router, bug).await,
        Op::CreateIn { tenant, residency } => {
            return match TenantId::new(&tenant) {
                Ok(id) => {
                    let cmd = Command::CreateTenantIn {
                        tenant: id,
                        display_name: format!("Tenant {tenant}"),
                        residency,
                    };
                    write(router, cmd).await
                }
                Err(e) => OpResult::Failed {
                    why: format!("bad tenant id: {e}"),
                },
            };
        }
        Op::Access(access) => return execute_access(router, clock, access).await,
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

fn ids_error(e: impl std::fmt::Display) -> OpResult {
    OpResult::Failed {
        why: format!("bad id: {e}"),
    }
}

/// Builds an access command, stamped by this node's clock, and writes it; a revocation is
/// acknowledged only [`AUTHZ_MAX_STALENESS`] after it committed (the rule of `App::write`,
/// `node/src/app.rs`, with its `is_revocation`).
async fn execute_access(router: &Router, clock: SkewedClock, op: AccessOp) -> OpResult {
    let now_ms = clock.now_ms();
    let Ok(tenant) = TenantId::new(SIM_TENANT) else {
        return ids_error("tenant");
    };
    let scope = |workspace: &str| {
        WorkspaceId::new(workspace).map(|workspace| RoleScope::Workspace {
            tenant: tenant.clone(),
            workspace,
        })
    };
    let subject =
        |principal: &str| PrincipalId::new(principal).map(|p| Subject::tenant(tenant.clone(), p));
    let cmd = match op {
        AccessOp::Plain(cmd) => cmd,
        AccessOp::Bindings => {
            let read = router
                .read(|state| {
                    state
                        .access()
                        .all_bindings()
                        .filter(|b| b.subject.tenant.as_ref() == Some(&tenant))
                        .map(|b| BindingInfo {
                            id: b.id,
                            principal: b.subject.principal.as_str().to_string(),
                            workspace: match &b.scope {
                                RoleScope::Workspace { workspace, .. } => {
                                    Some(workspace.as_str().to_string())
                                }
                                _ => None,
                            },
                            expires_at_ms: b.expires_at_ms,
                        })
                        .collect::<Vec<_>>()
                })
                .await;
            return match read {
                Ok(bindings) => OpResult::Bindings(bindings),
                Err(e) => OpResult::Failed {
                    why: read_error_kind(&e),
                },
            };
        }
        AccessOp::IssueToken {
            principal,
            workspace,
            token_id,
            secret_hash,
            ttl_ms,
        } => {
            let (Ok(principal), Ok(workspace), Ok(token_id)) = (
                PrincipalId::new(principal),
                WorkspaceId::new(workspace),
                TokenId::new(token_id),
            ) else {
                return ids_error("token");
            };
            Command::IssueToken {
                tenant,
                principal,
                workspace,
                token_id,
                secret_hash,
                scopes: [quire_node::mcp::SCOPE_MCP, quire_node::mcp::SCOPE_READ]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                issued_at_ms: now_ms,
                expires_at_ms: ttl_ms.map(|t| now_ms + t),
            }
        }
        AccessOp::AssignRole {
            principal,
            workspace,
            ttl_ms,
        } => {
            let (Ok(subject), Ok(scope)) = (subject(&principal), scope(&workspace)) else {
                return ids_error("role");
            };
            Command::AssignRole {
                subject,
                role: Role::WorkspaceManager,
                scope,
                granted_at_ms: now_ms,
                expires_at_ms: ttl_ms.map(|t| now_ms + t),
                justification: None,
            }
        }
        AccessOp::RevokeToken { token_id } => match TokenId::new(token_id) {
            Ok(token_id) => Command::RevokeToken { tenant, token_id },
            Err(e) => return ids_error(e),
        },
        AccessOp::RevokeRole { binding } => Command::RevokeRole { binding },
        AccessOp::Restrict {
            principal,
            workspace,
        } => {
            let (Ok(subject), Ok(scope)) = (subject(&principal), scope(&workspace)) else {
                return ids_error("restriction");
            };
            Command::AddRestriction {
                subject,
                permission: None,
                scope,
                set_at_ms: now_ms,
                justification: "simulated incident response".into(),
            }
        }
    };
    let revokes = quire_node::app::is_revocation(&cmd);
    let result = write(router, cmd).await;
    if revokes && matches!(result, OpResult::Written) {
        tokio::time::sleep(AUTHZ_MAX_STALENESS).await;
    }
    result
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
