//! The actor tree that carries Notion calls: a node supervisor, one tenant supervisor per
//! tenant (created on its first call), and under each tenant one workspace session per
//! workspace and one rate limiter per integration.
//!
//! No actor is registered by name (ractor's registry is process-wide and the simulator runs
//! many nodes in one process): children are spawned unnamed and kept as `ActorRef`s in
//! `BTreeMap`s. A child that fails is restarted by its supervisor; calls that were in flight
//! in it are answered [`CallError::Unavailable`] (their reply ports are dropped with the
//! child's state), and every caller also waits with a deadline, so nothing hangs.
//!
//! **Passivation.** A tenant supervisor that has been idle for
//! [`DataPlaneConfig::idle_tenant_ms`] stops, and the tenant's next call starts a new one
//! (0: never). Idle means all of:
//! - no call for the tenant arrived (and no pause from elsewhere) for `idle_tenant_ms`;
//! - no call of the tenant is anywhere in the tree: in a session's mailbox or backlog,
//!   running, waiting for a permit, or its last request still finishing in the background
//!   after the caller's deadline (its 429 must still reach the limiter);
//! - every limiter of the tenant is *settled*: no pause left and a full bucket
//!   ([`LimiterState::settled_in`] is zero). A limiter paused by a 429/529, or one whose
//!   bucket is not full, keeps its tenant alive until the pause ends and the bucket has
//!   refilled. The next incarnation's limiters start empty, which is at least as
//!   conservative as the full bucket they replace, and record the shard epoch of the call
//!   that starts them (or of the handoff snapshot that does: a snapshot holds at most a full
//!   bucket); the epoch a passivated limiter recorded needs no keeping, since forgetting it
//!   only ever leads to an empty bucket. A `Retry-After` still running is never forgotten
//!   because the tenant never stops while one runs.
//!
//! The tenant checks this itself on a `tokio::time` timer (one pending at a time) and then
//! offers to stop, telling the node supervisor how many messages it has received. The node
//! stops it only if it has routed it exactly that many (calls and pauses), so nothing sent
//! after the check can be lost with it; otherwise the offer is stale and the tenant stays.
//! The node counts a passivation apart from a restart (it is not a failure), and
//! [`crate::stats::NotionStats::tenants`] counts starts and passivations.
//!
//! **Retirement.** A node that no longer owns any shard of a tenant's integrations (they
//! moved to other nodes, or the tenant's residency moved them) retires the tenant's
//! supervisor at once ([`DataPlane::retire_tenant`]) instead of waiting `idle_tenant_ms`:
//! the same offer and check as passivation, but a limiter whose bucket is not yet full does
//! not hold it (its successor, should the shard come back, starts empty: never more
//! permissive). A call anywhere in the tree, or a limiter with a pause left or calls
//! queued, still does: the tenant is then [`Retired::Busy`] and the caller may ask again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::call::{Budget, CallContext, CallError, Fence};
use crate::limiter::{
    self, Limiter, LimiterArgs, LimiterConfig, LimiterMsg, LimiterSnapshot, LimiterState,
    ShardEpoch,
};
use crate::notion::client::{self, NotionClient, NotionClientConfig};
use crate::notion::{HttpTransport, NotionError, NotionRequest};
use crate::stats::{self, NotionStats};

/// Workspace sessions one tenant may have at once.
pub const MAX_WORKSPACES_PER_TENANT: usize = 1024;
/// Integrations (rate limiters) one tenant may have at once.
pub const MAX_INTEGRATIONS_PER_TENANT: usize = 256;
/// Calls a workspace session holds waiting for an in-flight slot.
pub const MAX_BACKLOG_PER_SESSION: usize = 1024;
/// Times a call is sent again after Notion answered 429/529 (each after the pause).
pub const MAX_RATE_LIMIT_RETRIES: u32 = 3;
/// Calls one node's data plane holds at once, all tenants together. It bounds the actors'
/// mailboxes (ractor's are unbounded): a call beyond it is refused at once.
pub const MAX_CALLS_IN_FLIGHT_PER_NODE: usize = 65_536;
/// Longest deadline a call may have.
pub const MAX_CALL_DEADLINE_MS: u64 = 3_600_000;
/// Longest id (tenant, workspace, session, integration) accepted.
pub const MAX_ID_BYTES: usize = 256;
/// Slack on a caller's RPC beyond the call's deadline: the actors answer by the deadline;
/// this only catches an actor that died holding the call.
const RPC_GRACE: Duration = Duration::from_secs(2);
/// A stopping supervisor waits this long, at most, for its children to stop.
const STOP_CHILDREN_WITHIN: Duration = Duration::from_secs(5);
/// Longest accepted [`DataPlaneConfig::idle_tenant_ms`] (one day).
pub const MAX_IDLE_TENANT_MS: u64 = 86_400_000;
/// Shortest wait before a tenant checks again whether it is idle.
const MIN_IDLE_RECHECK: Duration = Duration::from_millis(1);

/// How the data plane runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlaneConfig {
    pub notion: NotionClientConfig,
    pub limiter: LimiterConfig,
    /// Longest a call may take, queueing for a permit included.
    pub call_deadline_ms: u64,
    /// Notion calls one workspace session runs at once (waiting for a permit counts).
    pub max_in_flight_per_session: usize,
    pub max_tenants: usize,
    /// A tenant supervisor idle this long stops (passivates) and the tenant's next call
    /// starts a new one; 0: never. See the module docs for what idle means.
    pub idle_tenant_ms: u64,
    /// Seeds the Notion client's retry jitter.
    pub seed: u64,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            notion: NotionClientConfig::default(),
            limiter: LimiterConfig::default(),
            call_deadline_ms: 60_000,
            max_in_flight_per_session: 64,
            max_tenants: 10_000,
            idle_tenant_ms: 300_000,
            seed: 0,
        }
    }
}

/// Seams chosen when a data plane starts, beside its configuration.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// How the Notion client sends its requests; `None`: reqwest (production).
    pub transport: Option<Arc<dyn HttpTransport>>,
    /// SIMULATOR ONLY (the planted bug `limiter-forgets-state`): every limiter starts with
    /// a full bucket, as if nothing had been sent before this data plane started — so a
    /// node restarting right after its previous incarnation spent the burst sends another.
    /// Production never sets it.
    #[doc(hidden)]
    pub planted_bug_limiters_start_full: bool,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("custom_transport", &self.transport.is_some())
            .field(
                "planted_bug_limiters_start_full",
                &self.planted_bug_limiters_start_full,
            )
            .finish()
    }
}

/// Why the data plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid data plane configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Notion(#[from] NotionError),
    #[error("could not start the node supervisor: {0}")]
    Spawn(String),
}

/// Counts of the tree's actors, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataPlaneStats {
    pub tenants: usize,
    pub sessions: usize,
    pub limiters: usize,
    /// Children restarted after a failure, all levels together.
    pub restarts: u64,
    /// Tenant supervisors stopped because they were idle (not failures, not restarts).
    pub passivated: u64,
    /// Tenant supervisors stopped because this node serves none of their shards any more
    /// ([`DataPlane::retire_tenant`]).
    pub retired: u64,
}

/// What [`DataPlane::retire_tenant`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// No supervisor of the tenant runs on this node.
    NotRunning,
    /// Its supervisor stopped, with its sessions and limiters.
    Stopped,
    /// Still running: a call of the tenant is in the tree (or arrived meanwhile), or one of
    /// its limiters has a pause left or calls queued. Ask again later.
    Busy,
}

/// Why a tenant supervisor offers to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopOffer {
    /// It has been idle `idle_tenant_ms` with settled limiters.
    Idle,
    /// The node asked it to retire and nothing holds it.
    Retire,
}

/// One call travelling down the tree.
struct CallJob {
    ctx: CallContext,
    req: NotionRequest,
    deadline: Instant,
    reply: RpcReplyPort<Result<Value, CallError>>,
    /// Counts the requests this call sends to Notion (retries included), if asked.
    sent: Option<Arc<AtomicU32>>,
    /// Checked after each permit, right before the request goes to Notion.
    fence: Option<Fence>,
    /// The shard epoch the call is sent under (with the fence); its limiter empties on the
    /// first permit under an epoch it has not sent under (`limiter::TokenBucket::enter`).
    at: Option<ShardEpoch>,
    /// Set by the tenant supervisor that routes the call: a clone of its [`TenantState`]'s
    /// `calls`, held until the call and any request of it still on its way have ended.
    hold: Option<Arc<()>>,
}

fn unavailable_reply(job: CallJob, why: &str) {
    let _ = job.reply.send(Err(CallError::Unavailable(why.to_string())));
}

// ---------------------------------------------------------------------------------------
// Node supervisor

enum NodeMsg {
    Call(Box<CallJob>),
    CrashTenant {
        tenant_id: String,
        reply: RpcReplyPort<bool>,
    },
    CrashSession {
        tenant_id: String,
        workspace_id: String,
        reply: RpcReplyPort<bool>,
    },
    Limiter {
        tenant_id: String,
        integration_id: String,
        reply: RpcReplyPort<Option<ActorRef<LimiterMsg>>>,
    },
    Pause {
        tenant_id: String,
        integration_id: String,
        retry_after: Duration,
        reply: RpcReplyPort<bool>,
    },
    /// A tenant supervisor offers to stop (idle, or asked to retire) after receiving
    /// `received` messages.
    TenantStop {
        tenant_id: String,
        actor: ActorId,
        received: u64,
        why: StopOffer,
        reply: Option<RpcReplyPort<Retired>>,
    },
    /// Retire the tenant's supervisor if nothing holds it (see the module docs).
    Retire {
        tenant_id: String,
        reply: RpcReplyPort<Retired>,
    },
    Stats(RpcReplyPort<DataPlaneStats>),
    /// Another node's limiter snapshot for one of the tenant's integrations (a handoff).
    Adopt {
        tenant_id: String,
        adopt: AdoptJob,
    },
}

/// A handoff snapshot on its way to a tenant's limiter.
struct AdoptJob {
    integration_id: String,
    /// The integration's budget on this node now.
    budget: Budget,
    snapshot: LimiterSnapshot,
    /// The shard epoch the snapshot was sent for (the receiver's epoch as the shard's owner).
    at: ShardEpoch,
    reply: RpcReplyPort<Result<Adopted, CallError>>,
}

/// What adopting a handoff snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// No limiter for the integration here: one started from the snapshot.
    Started,
    /// The existing limiter took it by the epoch rules (`limiter::TokenBucket::adopt`): its
    /// tokens replace the limiter's if it was sent for an epoch the limiter has not sent
    /// under, else merged (the fewer tokens); the longer pause either way.
    Merged,
}

struct NodeSupervisor;

struct NodeArgs {
    client: NotionClient,
    stats: Arc<NotionStats>,
    limiter: LimiterConfig,
    limiters_start_full: bool,
    max_in_flight_per_session: usize,
    max_tenants: usize,
    idle_tenant: Option<Duration>,
}

struct TenantEntry {
    actor: ActorRef<TenantMsg>,
    /// Messages sent to it that it counts as received (calls and pauses).
    routed: u64,
}

struct NodeState {
    args: NodeArgs,
    tenants: BTreeMap<String, TenantEntry>,
    by_id: BTreeMap<ActorId, String>,
    restarts: u64,
    passivated: u64,
    retired: u64,
}

impl Drop for NodeState {
    fn drop(&mut self) {
        for tenant in self.tenants.values() {
            tenant.actor.stop(Some("node supervisor stopped".into()));
        }
    }
}

impl NodeState {
    fn tenant_args(&self, myself: &ActorRef<NodeMsg>, tenant_id: &str) -> TenantArgs {
        TenantArgs {
            tenant_id: tenant_id.to_string(),
            node: myself.clone(),
            idle: self.args.idle_tenant,
            limiters_start_full: self.args.limiters_start_full,
            client: self.args.client.clone(),
            stats: self.args.stats.clone(),
            limiter: self.args.limiter,
            max_in_flight_per_session: self.args.max_in_flight_per_session,
        }
    }

    async fn spawn_tenant(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        tenant_id: &str,
    ) -> Result<ActorRef<TenantMsg>, CallError> {
        let (tenant, _) = Actor::spawn_linked(
            None,
            TenantSupervisor,
            self.tenant_args(myself, tenant_id),
            myself.get_cell(),
        )
        .await
        .map_err(|e| CallError::Unavailable(format!("cannot start tenant supervisor: {e}")))?;
        self.args.stats.tenant_started();
        self.by_id.insert(tenant.get_id(), tenant_id.to_string());
        self.tenants.insert(
            tenant_id.to_string(),
            TenantEntry {
                actor: tenant.clone(),
                routed: 0,
            },
        );
        Ok(tenant)
    }

    async fn tenant(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        tenant_id: &str,
    ) -> Result<ActorRef<TenantMsg>, CallError> {
        if let Some(t) = self.tenants.get(tenant_id) {
            return Ok(t.actor.clone());
        }
        if self.tenants.len() >= self.args.max_tenants {
            return Err(CallError::Unavailable(format!(
                "this node already serves {} tenants (max_tenants)",
                self.args.max_tenants
            )));
        }
        self.spawn_tenant(myself, tenant_id).await
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<NodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        Ok(NodeState {
            args,
            tenants: BTreeMap::new(),
            by_id: BTreeMap::new(),
            restarts: 0,
            passivated: 0,
            retired: 0,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        // Tenants stop in tenant-id order, not in ractor's child-table order (a `HashMap`,
        // which differs between processes): the calls they fail are answered in the same
        // order on every run, which the simulator's replay relies on.
        for tenant in state.tenants.values() {
            tenant.actor.stop(Some("node supervisor stopped".into()));
        }
        let deadline = tokio::time::Instant::now() + STOP_CHILDREN_WITHIN;
        for tenant in state.tenants.values() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = tenant.actor.wait(Some(left)).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        msg: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeMsg::Call(job) => match state.tenant(&myself, &job.ctx.tenant_id).await {
                Ok(tenant) => {
                    let tenant_id = job.ctx.tenant_id.clone();
                    match tenant.send_message(TenantMsg::Call(job)) {
                        Ok(()) => {
                            if let Some(entry) = state.tenants.get_mut(&tenant_id) {
                                entry.routed += 1;
                            }
                        }
                        Err(ractor::MessagingErr::SendErr(TenantMsg::Call(job))) => {
                            unavailable_reply(*job, "the tenant's supervisor is restarting");
                        }
                        Err(_) => {}
                    }
                }
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            },
            NodeMsg::CrashTenant { tenant_id, reply } => {
                let found = state
                    .tenants
                    .get(&tenant_id)
                    .is_some_and(|t| t.actor.send_message(TenantMsg::Crash).is_ok());
                let _ = reply.send(found);
            }
            NodeMsg::CrashSession {
                tenant_id,
                workspace_id,
                reply,
            } => match state.tenants.get(&tenant_id) {
                Some(t) => {
                    let _ = t.actor.send_message(TenantMsg::CrashSession {
                        workspace_id,
                        reply,
                    });
                }
                None => {
                    let _ = reply.send(false);
                }
            },
            NodeMsg::Limiter {
                tenant_id,
                integration_id,
                reply,
            } => match state.tenants.get(&tenant_id) {
                Some(t) => {
                    let _ = t.actor.send_message(TenantMsg::Limiter {
                        integration_id,
                        reply,
                    });
                }
                None => {
                    let _ = reply.send(None);
                }
            },
            NodeMsg::Pause {
                tenant_id,
                integration_id,
                retry_after,
                reply,
            } => match state.tenants.get_mut(&tenant_id) {
                Some(t) => {
                    // Counted like a call: an idle offer made before the tenant saw this
                    // pause is stale, so the pause is never stopped with the tenant.
                    if t.actor
                        .send_message(TenantMsg::Pause {
                            integration_id,
                            retry_after,
                            reply,
                        })
                        .is_ok()
                    {
                        t.routed += 1;
                    }
                }
                None => {
                    let _ = reply.send(false);
                }
            },
            NodeMsg::Adopt { tenant_id, adopt } => match state.tenant(&myself, &tenant_id).await {
                Ok(tenant) => {
                    // Counted like a call: it may start or change a limiter, so an idle
                    // offer made before the tenant saw it is stale.
                    match tenant.send_message(TenantMsg::Adopt(adopt)) {
                        Ok(()) => {
                            if let Some(entry) = state.tenants.get_mut(&tenant_id) {
                                entry.routed += 1;
                            }
                        }
                        Err(ractor::MessagingErr::SendErr(TenantMsg::Adopt(adopt))) => {
                            let _ = adopt.reply.send(Err(CallError::Unavailable(
                                "the tenant's supervisor is restarting".into(),
                            )));
                        }
                        Err(_) => {}
                    }
                }
                Err(e) => {
                    let _ = adopt.reply.send(Err(e));
                }
            },
            NodeMsg::TenantStop {
                tenant_id,
                actor,
                received,
                why,
                reply,
            } => {
                let current = state
                    .tenants
                    .get(&tenant_id)
                    .is_some_and(|t| t.actor.get_id() == actor && t.routed == received);
                let mut outcome = Retired::Busy;
                if current && let Some(t) = state.tenants.remove(&tenant_id) {
                    // Out of the map first: the tenant's next call starts a new supervisor.
                    // Its end is then no failure to restart (`by_id` no longer names it).
                    state.by_id.remove(&actor);
                    match why {
                        StopOffer::Idle => {
                            state.passivated += 1;
                            state.args.stats.tenant_passivated();
                            tracing::debug!(tenant = %tenant_id, "tenant supervisor idle; passivating it");
                            t.actor.stop(Some("passivated: idle".into()));
                        }
                        StopOffer::Retire => {
                            state.retired += 1;
                            state.args.stats.tenant_retired();
                            tracing::debug!(tenant = %tenant_id, "no shard of the tenant is served here; retiring its supervisor");
                            t.actor.stop(Some("retired: its shards moved away".into()));
                        }
                    }
                    outcome = Retired::Stopped;
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            NodeMsg::Retire { tenant_id, reply } => match state.tenants.get(&tenant_id) {
                // Not counted as routed: asking is no activity, and the tenant's offer
                // must match what was routed to it.
                Some(t) => {
                    if let Err(ractor::MessagingErr::SendErr(TenantMsg::Retire(reply))) =
                        t.actor.send_message(TenantMsg::Retire(reply))
                    {
                        let _ = reply.send(Retired::Busy);
                    }
                }
                None => {
                    let _ = reply.send(Retired::NotRunning);
                }
            },
            NodeMsg::Stats(reply) => {
                // Asked off the node's mailbox so a slow tenant never holds up calls.
                let tenants: Vec<ActorRef<TenantMsg>> =
                    state.tenants.values().map(|t| t.actor.clone()).collect();
                let mut total = DataPlaneStats {
                    tenants: tenants.len(),
                    restarts: state.restarts,
                    passivated: state.passivated,
                    retired: state.retired,
                    ..Default::default()
                };
                tokio::spawn(async move {
                    for t in tenants {
                        if let Ok(CallResult::Success(s)) =
                            t.call(TenantMsg::Stats, Some(Duration::from_secs(5))).await
                        {
                            total.sessions += s.sessions;
                            total.limiters += s.limiters;
                            total.restarts += s.restarts;
                        }
                    }
                    let _ = reply.send(total);
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(tenant_id) = state.by_id.remove(&cell.get_id()) {
                    tracing::warn!(tenant = %tenant_id, error = %err, "tenant supervisor failed; restarting it");
                    state.tenants.remove(&tenant_id);
                    state.restarts += 1;
                    if let Err(e) = state.spawn_tenant(&myself, &tenant_id).await {
                        tracing::error!(tenant = %tenant_id, error = %e, "tenant supervisor did not restart; the next call retries");
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(tenant_id) = state.by_id.remove(&cell.get_id()) {
                    state.tenants.remove(&tenant_id);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Tenant supervisor

enum TenantMsg {
    Call(Box<CallJob>),
    /// Test hook: fail (panic) while handling this message.
    Crash,
    CrashSession {
        workspace_id: String,
        reply: RpcReplyPort<bool>,
    },
    Limiter {
        integration_id: String,
        reply: RpcReplyPort<Option<ActorRef<LimiterMsg>>>,
    },
    /// Notion asked another node to slow down for this integration.
    Pause {
        integration_id: String,
        retry_after: Duration,
        reply: RpcReplyPort<bool>,
    },
    /// Another node's limiter snapshot (a shard handoff).
    Adopt(AdoptJob),
    /// Timer: is the tenant idle (see the module docs)?
    IdleCheck,
    /// The node asks the tenant to retire (see the module docs).
    Retire(RpcReplyPort<Retired>),
    Stats(RpcReplyPort<DataPlaneStats>),
}

struct TenantSupervisor;

struct TenantArgs {
    tenant_id: String,
    /// The node supervisor, told when this tenant is idle.
    node: ActorRef<NodeMsg>,
    /// `idle_tenant_ms`; `None`: never passivate.
    idle: Option<Duration>,
    /// The planted bug `limiter-forgets-state` (simulator only): limiters start full.
    /// Otherwise every limiter starts with an empty bucket: this data plane cannot know what
    /// a previous incarnation of the node (or of this tenant supervisor) sent just before.
    limiters_start_full: bool,
    client: NotionClient,
    stats: Arc<NotionStats>,
    limiter: LimiterConfig,
    max_in_flight_per_session: usize,
}

enum Child {
    Session(String),
    Limiter(String),
}

struct LimiterEntry {
    actor: ActorRef<LimiterMsg>,
    budget: Budget,
}

struct TenantState {
    args: TenantArgs,
    sessions: BTreeMap<String, ActorRef<SessionMsg>>,
    limiters: BTreeMap<String, LimiterEntry>,
    children: BTreeMap<ActorId, Child>,
    restarts: u64,
    /// Calls and pauses received from the node supervisor (its `routed` for this tenant).
    received: u64,
    /// When the last call or pause arrived.
    last_call: Instant,
    /// One clone in each call routed and not yet over (see [`CallJob::hold`]): the tenant
    /// has no call anywhere in its tree when this is the only reference.
    calls: Arc<()>,
    /// Whether an [`TenantMsg::IdleCheck`] timer is pending.
    check_pending: bool,
}

impl Drop for TenantState {
    fn drop(&mut self) {
        // Runs on a clean stop and on a failure alike: no child outlives its tenant.
        for s in self.sessions.values() {
            s.stop(Some("tenant supervisor stopped".into()));
        }
        for l in self.limiters.values() {
            l.actor.stop(Some("tenant supervisor stopped".into()));
        }
    }
}

impl TenantState {
    fn session_args(&self, workspace_id: &str) -> SessionArgs {
        SessionArgs {
            tenant_id: self.args.tenant_id.clone(),
            workspace_id: workspace_id.to_string(),
            client: self.args.client.clone(),
            stats: self.args.stats.clone(),
            max_in_flight: self.args.max_in_flight_per_session,
        }
    }

    async fn spawn_session(
        &mut self,
        me: ActorCell,
        workspace_id: &str,
    ) -> Result<ActorRef<SessionMsg>, CallError> {
        let (s, _) = Actor::spawn_linked(None, Session, self.session_args(workspace_id), me)
            .await
            .map_err(|e| CallError::Unavailable(format!("cannot start workspace session: {e}")))?;
        self.children
            .insert(s.get_id(), Child::Session(workspace_id.to_string()));
        self.sessions.insert(workspace_id.to_string(), s.clone());
        Ok(s)
    }

    async fn spawn_limiter(
        &mut self,
        me: ActorCell,
        args: LimiterArgs,
    ) -> Result<ActorRef<LimiterMsg>, CallError> {
        let id = args.integration_id.clone();
        let budget = args.start.budget;
        let (l, _) = Actor::spawn_linked(None, Limiter, args, me)
            .await
            .map_err(|e| CallError::Unavailable(format!("cannot start rate limiter: {e}")))?;
        self.children.insert(l.get_id(), Child::Limiter(id.clone()));
        self.limiters.insert(
            id,
            LimiterEntry {
                actor: l.clone(),
                budget,
            },
        );
        Ok(l)
    }

    /// Arms the idle check `after` from now, unless one is pending or passivation is off.
    fn arm_idle_check(&mut self, myself: &ActorRef<TenantMsg>, after: Duration) {
        if self.args.idle.is_none() || self.check_pending {
            return;
        }
        self.check_pending = true;
        myself.send_after(after.max(MIN_IDLE_RECHECK), || TenantMsg::IdleCheck);
    }

    /// How long until this tenant may be idle: zero when it is idle now.
    async fn idle_in(&self, idle: Duration) -> Duration {
        let now = Instant::now();
        let quiet_at = self.last_call + idle;
        if quiet_at > now {
            return quiet_at - now;
        }
        // A call still somewhere in the tree, or a limiter not known to be quiet: look again
        // a whole idle time later.
        match self.quiet_limiters().await {
            Some(states) => states
                .iter()
                .map(LimiterState::settled_in)
                .max()
                .unwrap_or(Duration::ZERO),
            None => idle,
        }
    }

    /// The state of every limiter of this tenant, if no call of it is anywhere in its tree and
    /// none of its limiters has calls queued; `None` otherwise, or if a limiter does not answer
    /// (it is not known to be quiet). What passivation and retirement both start from.
    async fn quiet_limiters(&self) -> Option<Vec<LimiterState>> {
        if Arc::strong_count(&self.calls) > 1 {
            return None;
        }
        let mut states = Vec::with_capacity(self.limiters.len());
        for entry in self.limiters.values() {
            match limiter::state(&entry.actor).await {
                Ok(s) if s.queued == 0 => states.push(s),
                _ => return None,
            }
        }
        Some(states)
    }

    /// Whether something keeps this tenant from retiring: a call somewhere in its tree, or a
    /// limiter with a pause left or calls queued (or one that does not answer).
    async fn held(&self) -> bool {
        self.quiet_limiters()
            .await
            .is_none_or(|states| states.iter().any(|s| s.paused_for.is_some()))
    }

    /// Starts the integration's limiter from `adopt`'s snapshot, or merges it into the one
    /// running (after switching it to the current budget).
    async fn adopt(&mut self, me: ActorCell, adopt: &AdoptJob) -> Result<Adopted, CallError> {
        limiter::validate_budget(&adopt.budget).map_err(|e| {
            CallError::Notion(NotionError::invalid_request(format!(
                "integration {}'s budget is unusable: {e}",
                adopt.integration_id
            )))
        })?;
        if let Some(entry) = self.limiters.get_mut(&adopt.integration_id) {
            if entry.budget != adopt.budget {
                entry.budget = adopt.budget;
                let _ = entry
                    .actor
                    .send_message(LimiterMsg::SetBudget(adopt.budget));
            }
            return if limiter::adopt(&entry.actor, adopt.snapshot, Some(adopt.at.clone())) {
                Ok(Adopted::Merged)
            } else {
                Err(CallError::Unavailable(
                    "the integration's rate limiter is restarting".into(),
                ))
            };
        }
        if self.limiters.len() >= MAX_INTEGRATIONS_PER_TENANT {
            return Err(CallError::Unavailable(format!(
                "the tenant already uses {MAX_INTEGRATIONS_PER_TENANT} integrations on this node"
            )));
        }
        let args = LimiterArgs::adopted(
            adopt.integration_id.clone(),
            adopt.budget,
            self.args.limiter,
            adopt.snapshot,
        )
        .at(Some(adopt.at.clone()));
        self.spawn_limiter(me, args).await?;
        Ok(Adopted::Started)
    }

    async fn route(
        &mut self,
        me: ActorCell,
        job: &CallJob,
    ) -> Result<(ActorRef<SessionMsg>, ActorRef<LimiterMsg>), CallError> {
        let integration = &job.ctx.integration;
        limiter::validate_budget(&integration.budget).map_err(|e| {
            CallError::Notion(NotionError::invalid_request(format!(
                "integration {}'s budget is unusable: {e}",
                integration.id
            )))
        })?;
        let limiter = match self.limiters.get_mut(&integration.id) {
            Some(entry) => {
                if entry.budget != integration.budget {
                    entry.budget = integration.budget;
                    let _ = entry
                        .actor
                        .send_message(LimiterMsg::SetBudget(integration.budget));
                }
                entry.actor.clone()
            }
            None => {
                if self.limiters.len() >= MAX_INTEGRATIONS_PER_TENANT {
                    return Err(CallError::Unavailable(format!(
                        "the tenant already uses {MAX_INTEGRATIONS_PER_TENANT} integrations on \
                         this node"
                    )));
                }
                // Empty, not full: the first permit comes after 1/rps (333 ms at the default
                // 3/s). A node that restarts, or a tenant supervisor restarted after a
                // failure, must not send a full burst right after its predecessor did.
                // Started for the call's shard epoch, so that call does not empty it again.
                let args = if self.args.limiters_start_full {
                    // PLANTED BUG (simulator only): forgets what was sent before.
                    LimiterArgs::fresh(
                        integration.id.clone(),
                        integration.budget,
                        self.args.limiter,
                    )
                } else {
                    LimiterArgs::restarted(
                        integration.id.clone(),
                        integration.budget,
                        self.args.limiter,
                    )
                }
                .at(job.at.clone());
                self.spawn_limiter(me.clone(), args).await?
            }
        };
        let session = match self.sessions.get(&job.ctx.workspace_id) {
            Some(s) => s.clone(),
            None => {
                if self.sessions.len() >= MAX_WORKSPACES_PER_TENANT {
                    return Err(CallError::Unavailable(format!(
                        "the tenant already has {MAX_WORKSPACES_PER_TENANT} workspace sessions \
                         on this node"
                    )));
                }
                self.spawn_session(me, &job.ctx.workspace_id).await?
            }
        };
        Ok((session, limiter))
    }
}

impl Actor for TenantSupervisor {
    type Msg = TenantMsg;
    type State = TenantState;
    type Arguments = TenantArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TenantMsg>,
        args: TenantArgs,
    ) -> Result<TenantState, ActorProcessingErr> {
        Ok(TenantState {
            args,
            sessions: BTreeMap::new(),
            limiters: BTreeMap::new(),
            children: BTreeMap::new(),
            restarts: 0,
            received: 0,
            last_call: Instant::now(),
            calls: Arc::new(()),
            check_pending: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<TenantMsg>,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(idle) = state.args.idle {
            state.arm_idle_check(&myself, idle);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TenantMsg>,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        // Sessions (by workspace id), then limiters (by integration id), one after the
        // other: the calls in flight are failed in that order on every run. ractor would
        // otherwise kill the children in the order of its child table, a `HashMap`.
        let deadline = tokio::time::Instant::now() + STOP_CHILDREN_WITHIN;
        let cells = state
            .sessions
            .values()
            .map(ActorRef::get_cell)
            .chain(state.limiters.values().map(|l| l.actor.get_cell()));
        for cell in cells {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = cell.kill_and_wait(Some(left)).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TenantMsg>,
        msg: TenantMsg,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TenantMsg::Call(mut job) => {
                state.received += 1;
                state.last_call = Instant::now();
                job.hold = Some(state.calls.clone());
                if let Some(idle) = state.args.idle {
                    state.arm_idle_check(&myself, idle);
                }
                match state.route(myself.get_cell(), &job).await {
                    Ok((session, limiter)) => {
                        if let Err(ractor::MessagingErr::SendErr(SessionMsg::Call {
                            job, ..
                        })) = session.send_message(SessionMsg::Call { job, limiter })
                        {
                            unavailable_reply(*job, "the workspace session is restarting");
                        }
                    }
                    Err(e) => {
                        let _ = job.reply.send(Err(e));
                    }
                }
            }
            TenantMsg::Pause {
                integration_id,
                retry_after,
                reply,
            } => {
                state.received += 1;
                state.last_call = Instant::now();
                if let Some(idle) = state.args.idle {
                    state.arm_idle_check(&myself, idle);
                }
                let found = match state.limiters.get(&integration_id) {
                    Some(entry) => {
                        limiter::pause(&entry.actor, retry_after);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
            TenantMsg::Adopt(adopt) => {
                state.received += 1;
                state.last_call = Instant::now();
                if let Some(idle) = state.args.idle {
                    state.arm_idle_check(&myself, idle);
                }
                let result = state.adopt(myself.get_cell(), &adopt).await;
                let _ = adopt.reply.send(result);
            }
            TenantMsg::IdleCheck => {
                state.check_pending = false;
                if let Some(idle) = state.args.idle {
                    let wait = state.idle_in(idle).await;
                    if wait.is_zero() {
                        // The node stops this tenant only if nothing reached it since; if
                        // something did, that message re-armed the check.
                        let _ = state.args.node.send_message(NodeMsg::TenantStop {
                            tenant_id: state.args.tenant_id.clone(),
                            actor: myself.get_id(),
                            received: state.received,
                            why: StopOffer::Idle,
                            reply: None,
                        });
                    } else {
                        state.arm_idle_check(&myself, wait);
                    }
                }
            }
            TenantMsg::Retire(reply) => {
                if state.held().await {
                    let _ = reply.send(Retired::Busy);
                } else if let Err(ractor::MessagingErr::SendErr(NodeMsg::TenantStop {
                    reply: Some(reply),
                    ..
                })) = state.args.node.send_message(NodeMsg::TenantStop {
                    tenant_id: state.args.tenant_id.clone(),
                    actor: myself.get_id(),
                    received: state.received,
                    why: StopOffer::Retire,
                    reply: Some(reply),
                }) {
                    let _ = reply.send(Retired::Busy);
                }
            }
            TenantMsg::Crash => {
                panic!(
                    "tenant supervisor {} asked to fail (test hook)",
                    state.args.tenant_id
                );
            }
            TenantMsg::CrashSession {
                workspace_id,
                reply,
            } => {
                let found = match state.sessions.get(&workspace_id) {
                    Some(s) => s.send_message(SessionMsg::Crash).is_ok(),
                    None => false,
                };
                let _ = reply.send(found);
            }
            TenantMsg::Limiter {
                integration_id,
                reply,
            } => {
                let _ = reply.send(state.limiters.get(&integration_id).map(|e| e.actor.clone()));
            }
            TenantMsg::Stats(reply) => {
                let _ = reply.send(DataPlaneStats {
                    tenants: 1,
                    sessions: state.sessions.len(),
                    limiters: state.limiters.len(),
                    restarts: state.restarts,
                    passivated: 0,
                    retired: 0,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<TenantMsg>,
        event: SupervisionEvent,
        state: &mut TenantState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err)),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let Some(child) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        match child {
            Child::Session(workspace_id) => {
                state.sessions.remove(&workspace_id);
                if let Some(err) = failure {
                    tracing::warn!(tenant = %state.args.tenant_id, workspace = %workspace_id, error = %err, "workspace session failed; restarting it");
                    state.restarts += 1;
                    if let Err(e) = state.spawn_session(myself.get_cell(), &workspace_id).await {
                        tracing::error!(error = %e, "workspace session did not restart; the next call retries");
                    }
                }
            }
            Child::Limiter(integration_id) => {
                let entry = state.limiters.remove(&integration_id);
                if let (Some(err), Some(entry)) = (failure, entry) {
                    tracing::warn!(tenant = %state.args.tenant_id, integration = %integration_id, error = %err, "rate limiter failed; restarting it with an empty bucket");
                    state.restarts += 1;
                    // The lost limiter's permits may have been spent: start empty.
                    let args =
                        LimiterArgs::restarted(integration_id, entry.budget, state.args.limiter);
                    if let Err(e) = state.spawn_limiter(myself.get_cell(), args).await {
                        tracing::error!(error = %e, "rate limiter did not restart; the next call retries");
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Workspace session

enum SessionMsg {
    Call {
        job: Box<CallJob>,
        limiter: ActorRef<LimiterMsg>,
    },
    /// A call's task finished.
    Done,
    /// Test hook: fail (panic) while handling this message.
    Crash,
}

struct Session;

struct DoneGuard(ActorRef<SessionMsg>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        // A stopped session has no slots to free.
        let _ = self.0.send_message(SessionMsg::Done);
    }
}

struct SessionArgs {
    tenant_id: String,
    workspace_id: String,
    client: NotionClient,
    stats: Arc<NotionStats>,
    max_in_flight: usize,
}

struct SessionState {
    args: SessionArgs,
    /// The calls running now. Dropping the set (when the session stops or fails) aborts
    /// them, which drops their reply ports: their callers get `Unavailable`.
    tasks: JoinSet<()>,
    in_flight: usize,
    backlog: VecDeque<(Box<CallJob>, ActorRef<LimiterMsg>)>,
}

impl SessionState {
    fn start(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        job: Box<CallJob>,
        lim: ActorRef<LimiterMsg>,
    ) {
        let client = self.args.client.clone();
        let stats = self.args.stats.clone();
        let me = myself.clone();
        self.in_flight += 1;
        self.tasks.spawn(async move {
            // Tells the session the slot is free however the task ends (answer, panic,
            // abort).
            let _done = DoneGuard(me);
            let CallJob {
                ctx,
                req,
                deadline,
                reply,
                sent,
                fence,
                at,
                hold,
            } = *job;
            let counters = Counters {
                stats: &stats,
                sent: sent.as_deref(),
                hold: hold.as_ref(),
            };
            let result = execute(
                &client,
                &lim,
                &ctx,
                &req,
                deadline,
                counters,
                Owned {
                    fence: fence.as_ref(),
                    at: at.as_ref(),
                },
            )
            .await;
            let _ = reply.send(result);
        });
    }
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        Ok(SessionState {
            args,
            tasks: JoinSet::new(),
            in_flight: 0,
            backlog: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Call { job, limiter } => {
                if state.in_flight < state.args.max_in_flight.max(1) {
                    state.start(&myself, job, limiter);
                } else if state.backlog.len() < MAX_BACKLOG_PER_SESSION {
                    state.backlog.push_back((job, limiter));
                } else {
                    let _ = job.reply.send(Err(CallError::RateLimited {
                        retry_after_seconds: 1,
                    }));
                }
            }
            SessionMsg::Done => {
                state.in_flight = state.in_flight.saturating_sub(1);
                while state.tasks.try_join_next().is_some() {}
                let now = Instant::now();
                while state.in_flight < state.args.max_in_flight.max(1) {
                    let Some((job, limiter)) = state.backlog.pop_front() else {
                        break;
                    };
                    if job.deadline <= now {
                        let _ = job.reply.send(Err(CallError::RateLimited {
                            retry_after_seconds: 1,
                        }));
                        continue;
                    }
                    if job.reply.is_closed() {
                        continue;
                    }
                    state.start(&myself, job, limiter);
                }
            }
            SessionMsg::Crash => {
                panic!(
                    "workspace session {}/{} asked to fail (test hook)",
                    state.args.tenant_id, state.args.workspace_id
                );
            }
        }
        Ok(())
    }
}

/// How long Notion asked to wait after a 429/529 (1 s when it did not say).
fn retry_after_of(err: &NotionError) -> Duration {
    match err {
        NotionError::Api {
            retry_after: Some(d),
            ..
        } => *d,
        _ => Duration::from_secs(1),
    }
}

/// Where a call's requests and waits are counted.
#[derive(Clone, Copy)]
struct Counters<'a> {
    stats: &'a Arc<NotionStats>,
    sent: Option<&'a AtomicU32>,
    /// The call's hold on its tenant (see [`CallJob::hold`]).
    hold: Option<&'a Arc<()>>,
}

/// What a call of a shard's owner is sent under (both `None` for a call outside ownership).
#[derive(Clone, Copy)]
struct Owned<'a> {
    /// Checked after each permit, right before the request leaves.
    fence: Option<&'a Fence>,
    /// The shard epoch each permit is taken under.
    at: Option<&'a ShardEpoch>,
}

/// Counts a call as waiting for a permit while it lives (dropped: the wait ended).
struct Waiting<'a> {
    stats: &'a NotionStats,
    integration: &'a str,
    since: Instant,
}

impl<'a> Waiting<'a> {
    fn start(stats: &'a NotionStats, integration: &'a str) -> Self {
        stats.wait_started(integration);
        Self {
            stats,
            integration,
            since: Instant::now(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.stats
            .wait_ended(self.integration, self.since.elapsed());
    }
}

/// One call: permit → Notion → (429/529: pause the integration, wait, again; 5xx: back off,
/// again under a new permit) → answer. Every request sent holds a permit.
async fn execute(
    client: &NotionClient,
    limiter: &ActorRef<LimiterMsg>,
    ctx: &CallContext,
    req: &NotionRequest,
    deadline: Instant,
    counters: Counters<'_>,
    owned: Owned<'_>,
) -> Result<Value, CallError> {
    let Owned { fence, at } = owned;
    client::validate_request(req)?;
    let integration = ctx.integration.id.as_str();
    let mut rate_limited = 0u32;
    let mut server_errors = 0u32;
    loop {
        {
            let _waiting = Waiting::start(counters.stats, integration);
            limiter::acquire_at(limiter, &ctx.session_id, deadline, at).await?;
        }
        // The caller's fence (the node's shard ownership) is checked after the permit, the
        // last moment before the request leaves: a stale owner sends nothing.
        if let Some(fence) = fence {
            fence().map_err(CallError::Unavailable)?;
        }
        let now = Instant::now();
        // The request runs in its own task: when the caller's deadline passes first, the
        // request already on its way is not abandoned but finishes in the background (within
        // the client's own request timeout), so a 429/529 Notion sends it still pauses the
        // integration. Dropping it would lose that Retry-After and let the next requests go
        // out during Notion's pause.
        if let Some(sent) = counters.sent {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        let mut sending = tokio::spawn({
            let client = client.clone();
            let token = ctx.integration.token.clone();
            let req = req.clone();
            let stats = counters.stats.clone();
            let integration = integration.to_owned();
            async move {
                let result = client.send_once(&token, &req).await;
                stats.request_sent(&integration, stats::status_label(&result));
                result
            }
        });
        let sent = tokio::time::timeout_at(deadline, &mut sending).await;
        let err = match sent {
            Ok(Ok(Ok(value))) => return Ok(value),
            Ok(Ok(Err(e))) => e,
            Ok(Err(join)) => NotionError::Transport(format!("the request task failed: {join}")),
            Err(_) => {
                let limiter = limiter.clone();
                // The tenant stays up until this request has ended: its 429 must pause a
                // live limiter, not one already passivated.
                let hold = counters.hold.cloned();
                tokio::spawn(async move {
                    let _hold = hold;
                    if let Ok(Err(e)) = sending.await
                        && client::is_rate_limit(&e)
                    {
                        limiter::pause(&limiter, retry_after_of(&e));
                    }
                });
                return Err(CallError::Notion(NotionError::Timeout {
                    timeout_ms: deadline.saturating_duration_since(now).as_millis() as u64,
                }));
            }
        };
        if client::is_rate_limit(&err) {
            let wait = retry_after_of(&err);
            limiter::pause(limiter, wait);
            if rate_limited < MAX_RATE_LIMIT_RETRIES && Instant::now() + wait < deadline {
                rate_limited += 1;
                continue;
            }
            return Err(err.into());
        }
        if client::is_retryable(&err) && server_errors < client.config().max_retries {
            let delay = client.backoff(server_errors);
            if Instant::now() + delay >= deadline {
                return Err(err.into());
            }
            tokio::time::sleep(delay).await;
            server_errors += 1;
            continue;
        }
        return Err(err.into());
    }
}

// ---------------------------------------------------------------------------------------
// Public handle

/// The data plane of one node: cheap to clone, shared by every request handler.
#[derive(Clone)]
pub struct DataPlane {
    node: ActorRef<NodeMsg>,
    admission: Arc<tokio::sync::Semaphore>,
    call_deadline: Duration,
    stats: Arc<NotionStats>,
    handle: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("node", &self.node.get_id())
            .finish()
    }
}

fn validate_id(what: &str, id: &str) -> Result<(), CallError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(CallError::Notion(NotionError::invalid_request(format!(
            "{what} must be 1..={MAX_ID_BYTES} bytes without control characters"
        ))));
    }
    Ok(())
}

impl DataPlane {
    /// Starts the node supervisor (unnamed), sending to Notion with reqwest. Tenants start
    /// on their first call; each integration's limiter starts with an empty bucket (see
    /// [`crate::limiter`]).
    pub async fn start(config: DataPlaneConfig) -> Result<DataPlane, StartError> {
        Self::start_with(config, StartOptions::default()).await
    }

    /// Starts the node supervisor with the seams of `options` (the simulator's transport).
    pub async fn start_with(
        config: DataPlaneConfig,
        options: StartOptions,
    ) -> Result<DataPlane, StartError> {
        if config.call_deadline_ms == 0 || config.call_deadline_ms > MAX_CALL_DEADLINE_MS {
            return Err(StartError::Config(format!(
                "call_deadline_ms {} is outside 1..={MAX_CALL_DEADLINE_MS}",
                config.call_deadline_ms
            )));
        }
        if config.max_in_flight_per_session == 0 {
            return Err(StartError::Config(
                "max_in_flight_per_session must be at least 1".into(),
            ));
        }
        if config.max_tenants == 0 {
            return Err(StartError::Config("max_tenants must be at least 1".into()));
        }
        if config.idle_tenant_ms > MAX_IDLE_TENANT_MS {
            return Err(StartError::Config(format!(
                "idle_tenant_ms {} is above {MAX_IDLE_TENANT_MS} (0 turns passivation off)",
                config.idle_tenant_ms
            )));
        }
        if config.limiter.queue_capacity == 0 || config.limiter.per_session_capacity == 0 {
            return Err(StartError::Config(
                "limiter queue_capacity and per_session_capacity must be at least 1".into(),
            ));
        }
        let client = match options.transport {
            Some(transport) => {
                NotionClient::with_transport(config.notion.clone(), config.seed, transport)?
            }
            None => NotionClient::new(config.notion.clone(), config.seed)?,
        };
        let stats = Arc::new(NotionStats::default());
        let (node, handle) = Actor::spawn(
            None,
            NodeSupervisor,
            NodeArgs {
                client,
                stats: stats.clone(),
                limiter: config.limiter,
                limiters_start_full: options.planted_bug_limiters_start_full,
                max_in_flight_per_session: config.max_in_flight_per_session,
                max_tenants: config.max_tenants,
                idle_tenant: (config.idle_tenant_ms > 0)
                    .then(|| Duration::from_millis(config.idle_tenant_ms)),
            },
        )
        .await
        .map_err(|e| StartError::Spawn(e.to_string()))?;
        Ok(DataPlane {
            node,
            admission: Arc::new(tokio::sync::Semaphore::new(MAX_CALLS_IN_FLIGHT_PER_NODE)),
            call_deadline: Duration::from_millis(config.call_deadline_ms),
            stats,
            handle: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Calls Notion for `ctx` with the configured deadline.
    pub async fn call(&self, ctx: &CallContext, req: NotionRequest) -> Result<Value, CallError> {
        self.call_with_deadline(ctx, req, self.call_deadline).await
    }

    /// [`DataPlane::call`], adding to `sent` each request it sends to Notion (retries after
    /// 429/529 and 5xx included; a call refused by the rate limiter sends none).
    pub async fn call_counting(
        &self,
        ctx: &CallContext,
        req: NotionRequest,
        sent: Arc<AtomicU32>,
    ) -> Result<Value, CallError> {
        self.call_inner(ctx, req, self.call_deadline, Some(sent), None, None)
            .await
    }

    /// [`DataPlane::call_counting`] within `deadline` (clamped to the configured call
    /// deadline), for the owner of the integration's shard at `at`, with `fence` checked after
    /// each rate-limit permit and before the request is sent: when it answers `Err(why)` the
    /// call fails with [`CallError::Unavailable`] and nothing more goes to Notion. The first
    /// permit under a shard epoch the integration's limiter has not sent under (nor adopted
    /// a snapshot for) empties its bucket first (see [`crate::limiter`]).
    pub async fn call_fenced(
        &self,
        ctx: &CallContext,
        req: NotionRequest,
        deadline: Duration,
        sent: Arc<AtomicU32>,
        fence: Fence,
        at: ShardEpoch,
    ) -> Result<Value, CallError> {
        let deadline = deadline.min(self.call_deadline);
        self.call_inner(ctx, req, deadline, Some(sent), Some(fence), Some(at))
            .await
    }

    /// This data plane's Notion request and rate-limiter counters (for the node's metrics).
    pub fn notion_stats(&self) -> Arc<NotionStats> {
        self.stats.clone()
    }

    /// Calls Notion for `ctx`, answering by `deadline` from now at the latest (plus a short
    /// grace if an actor died holding the call). A deadline above [`MAX_CALL_DEADLINE_MS`]
    /// is clamped to it.
    pub async fn call_with_deadline(
        &self,
        ctx: &CallContext,
        req: NotionRequest,
        deadline: Duration,
    ) -> Result<Value, CallError> {
        self.call_inner(ctx, req, deadline, None, None, None).await
    }

    async fn call_inner(
        &self,
        ctx: &CallContext,
        req: NotionRequest,
        deadline: Duration,
        sent: Option<Arc<AtomicU32>>,
        fence: Option<Fence>,
        at: Option<ShardEpoch>,
    ) -> Result<Value, CallError> {
        validate_id("tenant_id", &ctx.tenant_id)?;
        validate_id("workspace_id", &ctx.workspace_id)?;
        validate_id("session_id", &ctx.session_id)?;
        validate_id("integration id", &ctx.integration.id)?;
        client::validate_request(&req)?;
        let Ok(_admitted) = self.admission.try_acquire() else {
            return Err(CallError::Unavailable(format!(
                "this node already holds {MAX_CALLS_IN_FLIGHT_PER_NODE} calls; retry shortly or \
                 on another node"
            )));
        };
        let deadline = deadline.min(Duration::from_millis(MAX_CALL_DEADLINE_MS));
        let deadline_at = Instant::now() + deadline;
        let ctx = ctx.clone();
        let result = self
            .node
            .call(
                |reply| {
                    NodeMsg::Call(Box::new(CallJob {
                        ctx,
                        req,
                        deadline: deadline_at,
                        reply,
                        sent,
                        fence,
                        at,
                        hold: None,
                    }))
                },
                Some(deadline + RPC_GRACE),
            )
            .await;
        match result {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => Err(CallError::Unavailable(
                "the data plane did not answer before the call's deadline".into(),
            )),
            Ok(CallResult::SenderError) => Err(CallError::Unavailable(
                "the actor serving the call stopped before answering (it is being restarted)"
                    .into(),
            )),
            Err(_) => Err(CallError::Unavailable("the data plane is stopped".into())),
        }
    }

    async fn limiter_ref(
        &self,
        tenant_id: &str,
        integration_id: &str,
    ) -> Option<ActorRef<LimiterMsg>> {
        let (tenant_id, integration_id) = (tenant_id.to_string(), integration_id.to_string());
        match self
            .node
            .call(
                |reply| NodeMsg::Limiter {
                    tenant_id,
                    integration_id,
                    reply,
                },
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(CallResult::Success(found)) => found,
            _ => None,
        }
    }

    /// The state of `tenant_id`'s limiter for `integration_id`, if it exists on this node.
    pub async fn limiter_state(
        &self,
        tenant_id: &str,
        integration_id: &str,
    ) -> Option<LimiterState> {
        let l = self.limiter_ref(tenant_id, integration_id).await?;
        limiter::state(&l).await.ok()
    }

    /// The bucket state a handoff carries (tokens, remaining pause), if the limiter exists
    /// on this node.
    pub async fn limiter_snapshot(
        &self,
        tenant_id: &str,
        integration_id: &str,
    ) -> Option<LimiterSnapshot> {
        let l = self.limiter_ref(tenant_id, integration_id).await?;
        limiter::snapshot(&l, None).await.ok()
    }

    /// [`DataPlane::limiter_snapshot`] for a handoff of what this node sent as the shard's
    /// owner at `at`: a limiter that never sent under `at` first empties, as a call under it
    /// would, so it never hands off tokens earned before this node's tenure.
    pub async fn limiter_snapshot_at(
        &self,
        tenant_id: &str,
        integration_id: &str,
        at: &ShardEpoch,
    ) -> Option<LimiterSnapshot> {
        let l = self.limiter_ref(tenant_id, integration_id).await?;
        limiter::snapshot(&l, Some(at)).await.ok()
    }

    /// Adopts the limiter snapshot another node handed off for `tenant_id`'s
    /// `integration_id` (its shard moved here at `at`), under the integration's current
    /// `budget` on this node: with no limiter here one starts from the snapshot (tokens at
    /// most the burst). A running limiter that has not sent under `at` (this node owned the
    /// shard at an earlier epoch, and the sender since) takes the snapshot's tokens; one that
    /// has keeps the fewer tokens of the two; the longer pause stays either way. Never more
    /// permissive than the sender's bucket or this node's sends under `at`.
    pub async fn adopt_limiter_snapshot(
        &self,
        tenant_id: &str,
        integration_id: &str,
        budget: Budget,
        snapshot: LimiterSnapshot,
        at: ShardEpoch,
    ) -> Result<Adopted, CallError> {
        validate_id("tenant_id", tenant_id)?;
        validate_id("integration id", integration_id)?;
        let (tenant_id, integration_id) = (tenant_id.to_string(), integration_id.to_string());
        match self
            .node
            .call(
                |reply| NodeMsg::Adopt {
                    tenant_id,
                    adopt: AdoptJob {
                        integration_id,
                        budget,
                        snapshot,
                        at,
                        reply,
                    },
                },
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => Err(CallError::Unavailable(
                "the data plane did not take the snapshot in time".into(),
            )),
            Ok(CallResult::SenderError) => Err(CallError::Unavailable(
                "the tenant's supervisor stopped before taking the snapshot".into(),
            )),
            Err(_) => Err(CallError::Unavailable("the data plane is stopped".into())),
        }
    }

    /// Stops `tenant_id`'s supervisor, its sessions and limiters, unless something holds it
    /// (see the module docs): for a node that serves none of the tenant's shards any more.
    /// Its next call here starts a new one (with empty buckets).
    pub async fn retire_tenant(&self, tenant_id: &str) -> Result<Retired, CallError> {
        validate_id("tenant_id", tenant_id)?;
        let tenant_id = tenant_id.to_string();
        match self
            .node
            .call(
                |reply| NodeMsg::Retire { tenant_id, reply },
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(CallResult::Success(r)) => Ok(r),
            // The tenant stopped (or failed) while answering: ask again.
            Ok(CallResult::SenderError) => Ok(Retired::Busy),
            Ok(CallResult::Timeout) => Err(CallError::Unavailable(
                "the data plane did not answer the retirement in time".into(),
            )),
            Err(_) => Err(CallError::Unavailable("the data plane is stopped".into())),
        }
    }

    /// Pauses an integration's limiter on this node for `retry_after` (e.g. when another
    /// node saw Notion's 429/529). Returns whether the limiter exists here.
    pub async fn pause_integration(
        &self,
        tenant_id: &str,
        integration_id: &str,
        retry_after: Duration,
    ) -> bool {
        // Through the node and tenant supervisors, not straight to the limiter: the pause
        // then counts as activity, and a tenant passivating concurrently cannot lose it.
        let (tenant_id, integration_id) = (tenant_id.to_string(), integration_id.to_string());
        matches!(
            self.node
                .call(
                    |reply| NodeMsg::Pause {
                        tenant_id,
                        integration_id,
                        retry_after,
                        reply,
                    },
                    Some(Duration::from_secs(5)),
                )
                .await,
            Ok(CallResult::Success(true))
        )
    }

    /// Counts of tenants, sessions, limiters and restarts.
    pub async fn stats(&self) -> Result<DataPlaneStats, CallError> {
        match self
            .node
            .call(NodeMsg::Stats, Some(Duration::from_secs(10)))
            .await
        {
            Ok(CallResult::Success(s)) => Ok(s),
            _ => Err(CallError::Unavailable("the data plane is stopped".into())),
        }
    }

    /// Makes the workspace session of `tenant_id`/`workspace_id` fail (panic), as a test of
    /// supervision. Returns whether the session existed.
    #[doc(hidden)]
    pub async fn crash_session_for_test(&self, tenant_id: &str, workspace_id: &str) -> bool {
        let (tenant_id, workspace_id) = (tenant_id.to_string(), workspace_id.to_string());
        matches!(
            self.node
                .call(
                    |reply| NodeMsg::CrashSession {
                        tenant_id,
                        workspace_id,
                        reply,
                    },
                    Some(Duration::from_secs(5)),
                )
                .await,
            Ok(CallResult::Success(true))
        )
    }

    /// Makes the supervisor of `tenant_id` fail (panic), as a test of supervision: its
    /// sessions and limiters stop with it and it is restarted empty. Returns whether the
    /// tenant existed.
    #[doc(hidden)]
    pub async fn crash_tenant_for_test(&self, tenant_id: &str) -> bool {
        let tenant_id = tenant_id.to_string();
        matches!(
            self.node
                .call(
                    |reply| NodeMsg::CrashTenant { tenant_id, reply },
                    Some(Duration::from_secs(5)),
                )
                .await,
            Ok(CallResult::Success(true))
        )
    }

    /// Stops the tree; calls in flight are answered `Unavailable`. Idempotent.
    pub async fn stop(&self) {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = self
            .node
            .stop_and_wait(
                Some("data plane stopped".into()),
                Some(Duration::from_secs(10)),
            )
            .await;
        if let Some(h) = handle {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::TOKEN_MICROS;

    const BUDGET: Budget = Budget {
        requests_per_second: 2,
        burst: 5,
    };

    fn snap(tokens: u64, pause_ms: u64) -> LimiterSnapshot {
        LimiterSnapshot {
            budget: BUDGET,
            tokens_micros: tokens * TOKEN_MICROS,
            pause_remaining_ms: pause_ms,
        }
    }

    fn x(epoch: u64) -> ShardEpoch {
        ShardEpoch::new("eu#7", epoch)
    }

    async fn plane() -> DataPlane {
        passivating_plane(0).await
    }

    async fn passivating_plane(idle_tenant_ms: u64) -> DataPlane {
        DataPlane::start(DataPlaneConfig {
            notion: NotionClientConfig {
                base_url: "http://127.0.0.1:9".into(),
                ..Default::default()
            },
            idle_tenant_ms,
            ..Default::default()
        })
        .await
        .expect("data plane starts")
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_starts_a_missing_limiter_within_the_current_budget() {
        let dp = plane().await;
        let small = Budget {
            requests_per_second: 1,
            burst: 2,
        };
        // Five tokens there, a burst of two here: two.
        assert_eq!(
            dp.adopt_limiter_snapshot("t1", "t1/a", small, snap(5, 0), x(1))
                .await
                .expect("adopted"),
            Adopted::Started
        );
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.budget, small);
        assert_eq!(s.tokens_micros, 2 * TOKEN_MICROS);
        assert_eq!(s.paused_for, None);
        // A pause carries over into a new limiter, with an empty bucket.
        dp.adopt_limiter_snapshot("t1", "t1/b", BUDGET, snap(5, 4_000), x(1))
            .await
            .expect("adopted");
        let s = dp.limiter_state("t1", "t1/b").await.expect("a limiter");
        assert_eq!(s.paused_for, Some(Duration::from_secs(4)));
        assert_eq!(s.tokens_micros, 0);
        // A budget this data plane cannot use is refused, and no limiter starts.
        let zero = Budget {
            requests_per_second: 0,
            burst: 1,
        };
        assert!(
            dp.adopt_limiter_snapshot("t1", "t1/c", zero, snap(1, 0), x(1))
                .await
                .is_err()
        );
        assert!(dp.limiter_state("t1", "t1/c").await.is_none());
        dp.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_merges_into_a_running_limiter_never_more_permissively() {
        let dp = plane().await;
        // Running here with a full bucket; the previous owner had spent all but one token.
        dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(5, 0), x(1))
            .await
            .expect("adopted");
        assert_eq!(
            dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(1, 0), x(1))
                .await
                .expect("adopted"),
            Adopted::Merged
        );
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.tokens_micros, TOKEN_MICROS, "the fuller bucket won");
        // A later, fuller snapshot does not refill it.
        dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(5, 0), x(1))
            .await
            .expect("adopted");
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(
            s.tokens_micros, TOKEN_MICROS,
            "a fuller snapshot added tokens"
        );

        // Paused 3 s here; a snapshot with a shorter pause and a full bucket changes
        // nothing; one with a longer pause extends it.
        assert!(
            dp.pause_integration("t1", "t1/a", Duration::from_secs(3))
                .await
        );
        dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(5, 1_000), x(1))
            .await
            .expect("adopted");
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.paused_for, Some(Duration::from_secs(3)));
        assert_eq!(s.tokens_micros, 0);
        dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(0, 7_000), x(1))
            .await
            .expect("adopted");
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.paused_for, Some(Duration::from_secs(7)));
        // The merged snapshot is what a further handoff carries on.
        let out = dp.limiter_snapshot("t1", "t1/a").await.expect("a snapshot");
        assert_eq!(out.pause_remaining_ms, 7_000);
        assert_eq!(out.tokens_micros, 0);
        dp.stop().await;
    }

    /// A fence that refuses after the permit: the call takes a token and sends nothing.
    fn closed() -> Fence {
        Arc::new(|| Err("not sending (test)".into()))
    }

    fn ctx() -> CallContext {
        CallContext {
            tenant_id: "t1".into(),
            workspace_id: "w1".into(),
            session_id: "s1".into(),
            integration: crate::call::IntegrationSpec {
                id: "t1/a".into(),
                token: crate::notion::NotionToken::new("secret_test"),
                budget: BUDGET,
            },
        }
    }

    /// Takes one permit for `t1/a` under `at` (nothing is sent), and returns how long it
    /// waited for it.
    async fn permit(dp: &DataPlane, at: ShardEpoch) -> Duration {
        let started = Instant::now();
        let sent = Arc::new(AtomicU32::new(0));
        let e = dp
            .call_fenced(
                &ctx(),
                NotionRequest::get("/v1/users/me"),
                Duration::from_secs(30),
                sent.clone(),
                closed(),
                at,
            )
            .await
            .expect_err("the fence is closed");
        assert!(
            matches!(e, CallError::Unavailable(ref m) if m.contains("test")),
            "{e:?}"
        );
        assert_eq!(sent.load(Ordering::SeqCst), 0);
        started.elapsed()
    }

    /// This node owned the shard at epoch 1 and spent its burst there, then lost it; ten
    /// seconds later its limiter is full again.
    async fn returning_owner() -> DataPlane {
        let dp = plane().await;
        // A new limiter starts empty: the first permit comes after 1/rps (2/s here).
        assert_eq!(permit(&dp, x(1)).await, Duration::from_millis(500));
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.epoch, Some(x(1)));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.tokens_micros, 5 * TOKEN_MICROS);
        dp
    }

    #[tokio::test(start_paused = true)]
    async fn a_returning_owner_without_a_push_starts_empty() {
        let dp = returning_owner().await;
        // Back at epoch 3, the epoch-2 owner's snapshot lost: the full bucket is not used.
        assert_eq!(permit(&dp, x(3)).await, Duration::from_millis(500));
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.epoch, Some(x(3)));
        assert_eq!(s.tokens_micros, 0);
        // Further permits at epoch 3 come at the rate, not all at once.
        assert_eq!(permit(&dp, x(3)).await, Duration::from_millis(500));
        // The snapshot arriving late, after those sends, merges: the fewer tokens.
        dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(5, 0), x(3))
            .await
            .expect("adopted");
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.tokens_micros, 0, "a late snapshot added tokens");
        dp.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_returning_owner_with_a_push_takes_the_pushers_tokens() {
        let dp = returning_owner().await;
        // The epoch-2 owner left two tokens: they replace the five earned here.
        assert_eq!(
            dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(2, 0), x(3))
                .await
                .expect("adopted"),
            Adopted::Merged
        );
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!((s.tokens_micros, s.epoch), (2 * TOKEN_MICROS, Some(x(3))));
        // Two permits at once, the third after 1/rps.
        assert_eq!(permit(&dp, x(3)).await, Duration::ZERO);
        assert_eq!(permit(&dp, x(3)).await, Duration::ZERO);
        assert_eq!(permit(&dp, x(3)).await, Duration::from_millis(500));
        // A snapshot for an earlier epoch adds nothing.
        dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(5, 0), x(2))
            .await
            .expect("adopted");
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!((s.tokens_micros, s.epoch), (0, Some(x(3))));
        dp.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_outlasts_a_new_epoch() {
        let dp = returning_owner().await;
        assert!(
            dp.pause_integration("t1", "t1/a", Duration::from_secs(3))
                .await
        );
        // Back at epoch 3: the pause (3 s), then a token from empty at 2/s.
        assert_eq!(permit(&dp, x(3)).await, Duration::from_millis(3_500));
        // A pushed snapshot for epoch 4 with a shorter pause and a full bucket keeps a pause
        // running here, and the bucket empty under it.
        assert!(
            dp.pause_integration("t1", "t1/a", Duration::from_secs(4))
                .await
        );
        dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(5, 1_000), x(4))
            .await
            .expect("adopted");
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!(s.paused_for, Some(Duration::from_secs(4)));
        assert_eq!(s.tokens_micros, 0);
        assert_eq!(permit(&dp, x(4)).await, Duration::from_millis(4_500));
        dp.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_passivated_tenants_limiters_come_back_empty_or_from_the_push_at_its_epoch() {
        let dp = passivating_plane(1_000).await;
        assert_eq!(permit(&dp, x(1)).await, Duration::from_millis(500));
        // Idle 1 s with a full bucket (5 tokens at 2/s): passivated.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let s = dp.stats().await.expect("stats");
        assert_eq!((s.tenants, s.passivated), (0, 1), "{s:?}");
        assert!(dp.limiter_state("t1", "t1/a").await.is_none());
        // The next incarnation starts empty, even at the epoch it sent under before.
        assert_eq!(permit(&dp, x(1)).await, Duration::from_millis(500));
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!((s.tokens_micros, s.epoch), (0, Some(x(1))));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(dp.stats().await.expect("stats").passivated, 2);
        // A snapshot pushed for epoch 2 while no limiter runs starts one from it, at that
        // epoch: the calls of epoch 2 take its two tokens, then wait for the rate.
        assert_eq!(
            dp.adopt_limiter_snapshot("t1", "t1/a", BUDGET, snap(2, 0), x(2))
                .await
                .expect("adopted"),
            Adopted::Started
        );
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert_eq!((s.tokens_micros, s.epoch), (2 * TOKEN_MICROS, Some(x(2))));
        assert_eq!(permit(&dp, x(2)).await, Duration::ZERO);
        assert_eq!(permit(&dp, x(2)).await, Duration::ZERO);
        assert_eq!(permit(&dp, x(2)).await, Duration::from_millis(500));
        dp.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_retired_tenant_stops_at_once_unless_a_pause_holds_it() {
        // Passivation off: only a retirement stops the tenant.
        let dp = plane().await;
        assert_eq!(
            dp.retire_tenant("t1").await.expect("asked"),
            Retired::NotRunning
        );
        assert_eq!(permit(&dp, x(1)).await, Duration::from_millis(500));
        // Paused: held (the pause must run out somewhere), whatever the bucket.
        assert!(
            dp.pause_integration("t1", "t1/a", Duration::from_secs(2))
                .await
        );
        assert_eq!(dp.retire_tenant("t1").await.expect("asked"), Retired::Busy);
        assert!(dp.limiter_state("t1", "t1/a").await.is_some());
        // Pause over, bucket far from full: retired now, not once refilled.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let s = dp.limiter_state("t1", "t1/a").await.expect("a limiter");
        assert!(s.settled_in() > Duration::ZERO, "{s:?}");
        assert_eq!(
            dp.retire_tenant("t1").await.expect("asked"),
            Retired::Stopped
        );
        let s = dp.stats().await.expect("stats");
        assert_eq!(
            (s.tenants, s.limiters, s.retired, s.passivated),
            (0, 0, 1, 0)
        );
        assert_eq!(dp.notion_stats().tenants().retired, 1);
        assert_eq!(
            dp.retire_tenant("t1").await.expect("asked"),
            Retired::NotRunning
        );
        // Back on the next call, with an empty bucket even at the epoch it sent under.
        assert_eq!(permit(&dp, x(1)).await, Duration::from_millis(500));
        assert_eq!(dp.stats().await.expect("stats").tenants, 1);
        dp.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_the_tree_holds_a_retiring_tenant() {
        let dp = plane().await;
        assert_eq!(permit(&dp, x(1)).await, Duration::from_millis(500));
        // A second call waits 500 ms for its permit: retiring meanwhile is refused, and
        // the call goes through.
        let waiting = {
            let dp = dp.clone();
            tokio::spawn(async move { permit(&dp, x(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(dp.retire_tenant("t1").await.expect("asked"), Retired::Busy);
        assert_eq!(
            waiting.await.expect("the call ends"),
            Duration::from_millis(500)
        );
        assert_eq!(
            dp.retire_tenant("t1").await.expect("asked"),
            Retired::Stopped
        );
        dp.stop().await;
    }
}
