//! Any node serves any tool call: each Notion request goes out from the node that owns its
//! integration's shard, so one integration's budget is spent by one rate limiter in the
//! cluster, not one per node.
//!
//! For each request the entry node computes the integration's shard
//! (`quire_raft::placement::shard_of` over `integration_key`, inside the tenant's residency)
//! and its owner and epoch from its applied state. A shard never assigned (or released) has a
//! would-be owner every node computes alike from its applied state alone: weighted rendezvous
//! over the labelled, non-draining, non-stopping nodes the residency allows (liveness
//! ignored), at the shard's epoch — so calls work before the controller's first round and on
//! a single node.
//! If this node owns the shard, the call goes to the local data plane; otherwise it travels to
//! the owner as a `DataCall` with the shard, the epoch, the call's context and the time left.
//!
//! **Fencing.** The owner serves a forwarded call only if its own applied state names it the
//! owner at exactly that epoch; otherwise it answers `WrongOwner` with what its state says
//! and the index it applied, and the entry node, after applying that index (bounded wait),
//! retries once against the owner it now sees — else the call fails as retryable
//! `unavailable`. Right before each request is sent (after the rate-limit permit) the owner
//! checks again (`DataPlane::call_fenced`): still the owner at that epoch, and its view
//! confirmed current within the freshness bound. A stale owner sends nothing.
//!
//! **Hold-off (the lease argument).** Let S be `security.authz_max_staleness_ms`. An owner
//! sends only while its applied state is confirmed current within S (`Freshness`): a
//! confirmation started at `t` proves the state holds everything committed before `t`. Say
//! the shard moves from A to B in an entry committed at `c`. A sends at `t'` only with a
//! confirmation started at or after `t' - S`; if `t' >= c + S`, that confirmation started
//! after `c`, so A's state holds the move and A's fence refuses. So A sends nothing after
//! `c + S`. B first sees the new epoch at some `s >= c` and sends nothing for that shard
//! until `s + S >= c + S`. So the two never send in the same window (elapsed time on each
//! node's monotonic clock; the rates are assumed to agree, as for revocation). A node does
//! not remember what it saw before it started, so after a start it holds off S on each shard
//! it owns; the same holds for shards without an owner whenever the labels, drains or
//! residencies that decide their would-be owner change.
//!
//! **Handoff.** When a shard moves, the old owner hands its integrations' rate-limiter state
//! to the new one over the same `DataCall` (`crate::handoff`), once its applied state holds
//! the move — the state this fence reads, so the old owner has stopped sending by then. The
//! new owner's hold-off is the window in which that push normally arrives.
//!
//! **Wire.** A `DataCall` payload is a [`DataMessage`], JSON tagged by `kind`: `call` (a
//! forwarded call) or `limiter_handoff`. A forwarded call without `kind` (as nodes sent it
//! before the tag) still decodes as a call, and a node that predates the tag ignores it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use quire_actors::call::{CallContext, CallError, Fence};
use quire_actors::limiter::ShardEpoch;
use quire_actors::notion::{HttpMethod, NotionError, NotionRequest};
use quire_actors::stats::Histogram;
use quire_raft::NodeId;
use quire_raft::handoff::{HoldOff, effective_owner, sends_for};
use quire_raft::ids::{TenantId, WorkspaceId};
use quire_raft::placement::{Residency, ShardId, integration_key, shard_of};
use quire_raft::state::State;
use quire_transport::{DataCallHandler, DataCallOutcome, DataCallRefusal};

use crate::app::App;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Forwarded calls one node serves at once; beyond it a call is refused as busy (retryable).
/// Below the peer server's per-connection bound, so Raft's requests always find room.
pub const MAX_FORWARDED_CALLS_SERVED: usize = 64;
/// Largest forwarded call (its Notion request body included) sent or accepted.
pub const MAX_FORWARD_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Longest the entry node waits to apply the index a refusing owner reports before retrying.
const CATCH_UP_WAIT: Duration = Duration::from_millis(1_000);

/// Where one integration's requests go, as this node's applied state says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    shard: ShardId,
    owner: NodeId,
    epoch: u64,
}

fn route_in(state: &State, tenant: &str, workspace: &str, me: NodeId) -> Result<Route, CallError> {
    let (Ok(tenant), Ok(workspace)) = (TenantId::new(tenant), WorkspaceId::new(workspace)) else {
        return Err(CallError::Unavailable(
            "the caller's tenant or workspace id is not valid".into(),
        ));
    };
    let Some(ws) = state.workspace(&tenant, &workspace) else {
        return Err(CallError::Unavailable(format!(
            "workspace {tenant}/{workspace} has no Notion integration (it may have been removed)"
        )));
    };
    let p = state.placement();
    let residency = p.residency_of(&tenant);
    let shard = shard_of(&residency, &integration_key(&tenant, &ws.integration_id));
    match effective_owner(p, &shard, me) {
        Some((owner, epoch)) => Ok(Route {
            shard,
            owner,
            epoch,
        }),
        None => Err(CallError::Unavailable(format!(
            "no allowed node for shard {shard}: tenant {tenant}'s residency ({}) allows no \
             labelled, non-draining node; add a node in an allowed region or change the \
             tenant's residency",
            residency_text(&residency)
        ))),
    }
}

fn residency_text(r: &Residency) -> String {
    if r.allowed_regions.is_empty() {
        "any region".into()
    } else {
        let regions: Vec<&str> = r.allowed_regions.iter().map(String::as_str).collect();
        format!("regions {}", regions.join(", "))
    }
}

/// Counters of forwarding for `/metrics`.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Entry node: outcome → forwarded calls.
    pub forwarded: BTreeMap<&'static str, u64>,
    /// Owner: outcome → forwarded calls served.
    pub served: BTreeMap<&'static str, u64>,
    /// Calls refused (or stopped before sending) because this node was not the owner at the
    /// epoch asked, or its view was not current.
    pub fenced: u64,
    /// Entry node: round-trip time of forwarded calls.
    pub latency: Option<Histogram>,
}

/// The node's forwarding state: hold-offs, the bound on calls served, counters.
pub struct Forward {
    hold_off: Mutex<HoldOff<Instant>>,
    serving: Arc<tokio::sync::Semaphore>,
    stats: Mutex<ForwardStats>,
    /// Rate-limiter handoffs when a shard this node served moves.
    pub handoff: crate::handoff::Handoff,
}

impl Default for Forward {
    fn default() -> Self {
        Self {
            hold_off: Mutex::new(HoldOff::default()),
            serving: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDED_CALLS_SERVED)),
            stats: Mutex::new(ForwardStats::default()),
            handoff: crate::handoff::Handoff::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Forward {
    /// Reads the counters (for `/metrics`).
    pub fn with_stats<R>(&self, f: impl FnOnce(&ForwardStats) -> R) -> R {
        f(&lock(&self.stats))
    }

    fn count_forwarded(&self, outcome: &'static str, took: Option<Duration>) {
        let mut s = lock(&self.stats);
        *s.forwarded.entry(outcome).or_default() += 1;
        if let Some(took) = took {
            s.latency
                .get_or_insert_with(|| Histogram::new(&crate::metrics::LATENCY_BUCKETS_SECONDS))
                .observe(took.as_secs_f64());
        }
    }

    fn count_served(&self, outcome: &'static str) {
        *lock(&self.stats).served.entry(outcome).or_default() += 1;
    }

    fn count_fenced(&self) {
        lock(&self.stats).fenced += 1;
    }

    /// When this node may first send for `tenant` in `route` (which it owns), recording what
    /// it sees now.
    fn may_send_at(
        &self,
        state: &State,
        route: &Route,
        tenant: &TenantId,
        bound: Duration,
    ) -> Instant {
        lock(&self.hold_off).may_send_at(
            state.placement(),
            &route.shard,
            tenant,
            route.owner,
            route.epoch,
            Instant::now(),
            bound,
        )
    }
}

/// What a `DataCall`'s opaque payload carries (serde_json, tagged by `kind`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum DataMessage {
    /// A Notion call for a shard the receiver should own.
    Call(ForwardedCall),
    /// Rate-limiter snapshots of a shard that moved to the receiver (`crate::handoff`).
    LimiterHandoff(crate::handoff::LimiterHandoff),
}

/// Decodes a `DataCall` payload; one without `kind` is a forwarded call as nodes sent it
/// before the tag.
fn decode_message(bytes: &[u8]) -> Result<DataMessage, serde_json::Error> {
    serde_json::from_slice::<DataMessage>(bytes).or_else(|tagged| {
        serde_json::from_slice::<ForwardedCall>(bytes)
            .map(DataMessage::Call)
            .map_err(|_| tagged)
    })
}

/// The wire form of a forwarded call (serde_json inside `DataCall`'s opaque payload).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForwardedCall {
    shard: ShardId,
    epoch: u64,
    tenant_id: String,
    workspace_id: String,
    session_id: String,
    /// The integration the entry node resolved (`tenant/integration`); the owner resolves
    /// the integration (and unseals its token) from its own state and refuses a mismatch,
    /// so Notion tokens never travel between nodes.
    integration_id: String,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    /// Time left before the caller's deadline when sent.
    deadline_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ForwardedReply {
    Ok {
        value: Value,
        sent: u32,
    },
    Failed {
        error: WireError,
        sent: u32,
    },
    /// The receiver does not own the shard at that epoch; its state says `owner` at `epoch`
    /// as of `applied_index`.
    WrongOwner {
        owner: Option<NodeId>,
        epoch: u64,
        applied_index: Option<u64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireError {
    RateLimited {
        retry_after_seconds: u64,
    },
    NotionApi {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        retry_after_ms: Option<u64>,
    },
    NotionTimeout {
        timeout_ms: u64,
    },
    NotionTransport {
        message: String,
    },
    NotionDecode {
        message: String,
    },
    Unavailable {
        message: String,
    },
    Retry {
        message: String,
        retry_after_seconds: u64,
    },
}

/// A call worth retrying after `seconds` (the owner could not take it now).
fn retry(why: String, seconds: u64) -> CallError {
    CallError::Retry {
        why,
        retry_after_seconds: seconds,
    }
}

fn to_wire(e: &CallError) -> WireError {
    match e {
        CallError::RateLimited {
            retry_after_seconds,
        } => WireError::RateLimited {
            retry_after_seconds: *retry_after_seconds,
        },
        CallError::Notion(NotionError::Api {
            status,
            code,
            message,
            request_id,
            retry_after,
        }) => WireError::NotionApi {
            status: *status,
            code: code.clone(),
            message: message.clone(),
            request_id: request_id.clone(),
            retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        },
        CallError::Notion(NotionError::Timeout { timeout_ms }) => WireError::NotionTimeout {
            timeout_ms: *timeout_ms,
        },
        CallError::Notion(NotionError::Transport(m)) => {
            WireError::NotionTransport { message: m.clone() }
        }
        CallError::Notion(NotionError::Decode(m)) => WireError::NotionDecode { message: m.clone() },
        CallError::Unavailable(m) => WireError::Unavailable { message: m.clone() },
        CallError::Retry {
            why,
            retry_after_seconds,
        } => WireError::Retry {
            message: why.clone(),
            retry_after_seconds: *retry_after_seconds,
        },
    }
}

fn from_wire(e: WireError) -> CallError {
    match e {
        WireError::RateLimited {
            retry_after_seconds,
        } => CallError::RateLimited {
            retry_after_seconds,
        },
        WireError::NotionApi {
            status,
            code,
            message,
            request_id,
            retry_after_ms,
        } => CallError::Notion(NotionError::Api {
            status,
            code,
            message,
            request_id,
            retry_after: retry_after_ms.map(Duration::from_millis),
        }),
        WireError::NotionTimeout { timeout_ms } => {
            CallError::Notion(NotionError::Timeout { timeout_ms })
        }
        WireError::NotionTransport { message } => {
            CallError::Notion(NotionError::Transport(message))
        }
        WireError::NotionDecode { message } => CallError::Notion(NotionError::Decode(message)),
        WireError::Unavailable { message } => CallError::Unavailable(message),
        WireError::Retry {
            message,
            retry_after_seconds,
        } => retry(message, retry_after_seconds),
    }
}

fn applied_index(app: &App) -> Option<u64> {
    app.control
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index)
}

/// Why the owner side did not run a call.
enum NotServed {
    /// This node is not the owner at that epoch.
    WrongOwner {
        owner: Option<NodeId>,
        epoch: u64,
    },
    Failed(CallError),
}

/// The fence checked right before each request leaves: still the owner at `epoch` of the
/// shard `tenant`'s integrations go to, with a view confirmed current within the freshness
/// bound. `moved` is set when the fence refused because the shard has another owner or epoch
/// now, or the tenant's residency changed (its integrations go to another shard), `stale`
/// when this node's view was not confirmed current.
fn fence(
    app: &Arc<App>,
    shard: &ShardId,
    epoch: u64,
    tenant: &TenantId,
    moved: Arc<AtomicBool>,
    stale: Arc<AtomicBool>,
) -> Fence {
    let me = app.config.node.id;
    let control = app.control.clone();
    let freshness = app.freshness.clone();
    let app = Arc::downgrade(app);
    let shard = shard.clone();
    let tenant = tenant.clone();
    Arc::new(move || {
        let owns = control.read_applied(|s| sends_for(s.placement(), &shard, epoch, &tenant, me));
        let why = if !owns {
            moved.store(true, Ordering::SeqCst);
            format!(
                "this node no longer serves the integration from shard {shard} at epoch \
                 {epoch} (the shard moved, or the tenant's residency changed); retry"
            )
        } else if !freshness.is_fresh() {
            stale.store(true, Ordering::SeqCst);
            format!("this node's view of the shard map is not confirmed current (shard {shard})")
        } else {
            return Ok(());
        };
        if let Some(app) = app.upgrade() {
            app.forward.count_fenced();
        }
        Err(why)
    })
}

/// Runs a call for a shard this node should own at `epoch`: checks ownership and freshness,
/// waits out the hold-off, and sends through the local data plane under the fence.
async fn serve_owned(
    app: &Arc<App>,
    shard: &ShardId,
    epoch: u64,
    ctx: &CallContext,
    req: NotionRequest,
    deadline: Instant,
    sent: Arc<AtomicU32>,
) -> Result<Value, NotServed> {
    let me = app.config.node.id;
    let Ok(tenant) = TenantId::new(ctx.tenant_id.as_str()) else {
        return Err(NotServed::Failed(CallError::Unavailable(
            "the caller's tenant id is not valid".into(),
        )));
    };
    let check = |app: &App| {
        app.control.read_applied(|s| {
            let eff = effective_owner(s.placement(), shard, me);
            // A tenant whose residency changed sends from a shard of its new residency: the
            // entry node, told this one does not serve it, catches up and routes again.
            if sends_for(s.placement(), shard, epoch, &tenant, me) {
                let route = Route {
                    shard: shard.clone(),
                    owner: me,
                    epoch,
                };
                Ok(app
                    .forward
                    .may_send_at(s, &route, &tenant, app.freshness.max_staleness()))
            } else {
                let (owner, epoch) = match eff {
                    Some((o, e)) => (Some(o), e),
                    None => (None, s.placement().owner(shard).epoch),
                };
                Err(NotServed::WrongOwner { owner, epoch })
            }
        })
    };
    check(app)?;
    // The owner sends only with its view confirmed current within the bound.
    app.freshness.ensure(&app.router).await.map_err(|e| {
        NotServed::Failed(retry(
            format!("this node cannot confirm its view of the shard map current: {e}"),
            1,
        ))
    })?;
    let may_send_at = check(app)?;
    // Remembered as served here at this epoch: if the shard moves, its limiter is handed off.
    app.forward
        .handoff
        .record(&ctx.tenant_id, &ctx.integration.id, shard, epoch);
    if may_send_at > Instant::now() {
        if may_send_at >= deadline {
            return Err(NotServed::Failed(retry(
                format!(
                    "shard {shard} just moved to this node, which waits for the previous \
                     owner to stop before sending"
                ),
                1,
            )));
        }
        tokio::time::sleep_until(may_send_at).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let moved = Arc::new(AtomicBool::new(false));
    let stale = Arc::new(AtomicBool::new(false));
    // Under (shard, epoch): the integration's limiter, if it has not sent under this epoch
    // (this node owned the shard before, another node since), starts over empty unless the
    // previous owner's snapshot for this epoch came first (`quire_actors::limiter`).
    let result = app
        .data
        .call_fenced(
            ctx,
            req,
            left,
            sent,
            fence(app, shard, epoch, &tenant, moved.clone(), stale.clone()),
            ShardEpoch::new(shard.to_string(), epoch),
        )
        .await;
    match result {
        // The shard moved while the call waited for its permit: nothing was sent for it, so
        // the caller may go to the new owner.
        Err(CallError::Unavailable(_)) if moved.load(Ordering::SeqCst) => {
            Err(check(app).err().unwrap_or(NotServed::WrongOwner {
                owner: Some(me),
                epoch,
            }))
        }
        // Nothing was sent under a view not confirmed current; a moment later it may be.
        Err(CallError::Unavailable(why)) if stale.load(Ordering::SeqCst) => {
            Err(NotServed::Failed(retry(why, 1)))
        }
        other => other.map_err(NotServed::Failed),
    }
}

/// Sends `req` for `ctx` from the node that owns the integration's shard (this one, or the
/// owner over the peer transport), adding to `sent` the requests sent to Notion.
pub async fn call(
    app: &Arc<App>,
    ctx: &CallContext,
    req: NotionRequest,
    sent: Arc<AtomicU32>,
) -> Result<Value, CallError> {
    let deadline = Instant::now() + Duration::from_millis(app.config.limits.call_deadline_ms);
    let me = app.config.node.id;
    for attempt in 0..2 {
        let route = app
            .control
            .read_applied(|s| route_in(s, &ctx.tenant_id, &ctx.workspace_id, me))?;
        let refused = if route.owner == me {
            match serve_owned(
                app,
                &route.shard,
                route.epoch,
                ctx,
                req.clone(),
                deadline,
                sent.clone(),
            )
            .await
            {
                Ok(v) => return Ok(v),
                Err(NotServed::Failed(e)) => return Err(e),
                Err(NotServed::WrongOwner { .. }) => None,
            }
        } else {
            match forward_to(app, &route, ctx, &req, deadline, &sent).await {
                Forwarded::Done(result) => return result,
                Forwarded::WrongOwner { applied_index } => applied_index,
            }
        };
        if attempt == 0 {
            // Catch up with what the refuser knows, then look again.
            let wait = CATCH_UP_WAIT.min(deadline.saturating_duration_since(Instant::now()));
            let _ = app
                .control
                .raft()
                .wait(Some(wait))
                .applied_index_at_least(refused, "applied the owner's index")
                .await;
            if refused.is_none() {
                tokio::time::sleep(Duration::from_millis(50).min(wait)).await;
            }
        }
    }
    Err(retry(
        "the integration's shard is moving between nodes".into(),
        1,
    ))
}

enum Forwarded {
    Done(Result<Value, CallError>),
    WrongOwner { applied_index: Option<u64> },
}

async fn forward_to(
    app: &Arc<App>,
    route: &Route,
    ctx: &CallContext,
    req: &NotionRequest,
    deadline: Instant,
    sent: &Arc<AtomicU32>,
) -> Forwarded {
    let started = Instant::now();
    let unavailable = |m: String| Forwarded::Done(Err(retry(m, 1)));
    let Some(peers) = app.router.peers.as_ref() else {
        return unavailable(format!(
            "node {} owns the integration's shard, but this node has no peer transport",
            route.owner
        ));
    };
    let addr = app
        .control
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&route.owner)
        .map(|n| n.addr.clone());
    let Some(addr) = addr else {
        return unavailable(format!(
            "node {} owns the integration's shard but is not a member of the group; retry \
             shortly",
            route.owner
        ));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let call = ForwardedCall {
        shard: route.shard.clone(),
        epoch: route.epoch,
        tenant_id: ctx.tenant_id.clone(),
        workspace_id: ctx.workspace_id.clone(),
        session_id: ctx.session_id.clone(),
        integration_id: ctx.integration.id.clone(),
        method: req.method.as_str().into(),
        path: req.path.clone(),
        query: req.query.clone(),
        body: req.body.clone(),
        deadline_ms: left.as_millis() as u64,
    };
    let payload = match serde_json::to_vec(&DataMessage::Call(call)) {
        Ok(p) if p.len() <= MAX_FORWARD_PAYLOAD_BYTES => p,
        Ok(p) => {
            return Forwarded::Done(Err(CallError::Notion(NotionError::invalid_request(
                format!(
                    "the request is {} bytes, over the {MAX_FORWARD_PAYLOAD_BYTES} bytes a call \
                     may carry",
                    p.len()
                ),
            ))));
        }
        Err(e) => return unavailable(format!("the call could not be encoded: {e}")),
    };
    // A little beyond the owner's own deadline, so its answer (even a timeout) gets back.
    let outcome = peers
        .data_call(&addr, payload, left + Duration::from_millis(500))
        .await;
    let took = Some(started.elapsed());
    let fwd = &app.forward;
    match outcome {
        Ok(DataCallOutcome::Ok(bytes)) => match serde_json::from_slice::<ForwardedReply>(&bytes) {
            Ok(ForwardedReply::Ok { value, sent: n }) => {
                sent.fetch_add(n, Ordering::Relaxed);
                fwd.count_forwarded("ok", took);
                Forwarded::Done(Ok(value))
            }
            Ok(ForwardedReply::Failed { error, sent: n }) => {
                sent.fetch_add(n, Ordering::Relaxed);
                fwd.count_forwarded("error", took);
                Forwarded::Done(Err(from_wire(error)))
            }
            Ok(ForwardedReply::WrongOwner {
                owner,
                epoch,
                applied_index,
            }) => {
                fwd.count_forwarded("wrong_owner", took);
                tracing::debug!(
                    shard = %route.shard, asked = route.owner, ?owner, epoch,
                    "the node asked does not own the shard at that epoch"
                );
                Forwarded::WrongOwner { applied_index }
            }
            Err(e) => {
                fwd.count_forwarded("invalid", took);
                unavailable(format!("node {}'s answer was unreadable: {e}", route.owner))
            }
        },
        Ok(DataCallOutcome::Refused(why)) => {
            fwd.count_forwarded("refused", took);
            unavailable(format!("node {} refused the call: {why}", route.owner))
        }
        Err(quire_transport::TransportError::Overloaded(why)) => {
            fwd.count_forwarded("busy", took);
            unavailable(format!(
                "node {}, which owns the integration's shard, is busy ({why}); retry shortly",
                route.owner
            ))
        }
        Err(quire_transport::TransportError::Timeout { .. }) => {
            fwd.count_forwarded("timeout", took);
            Forwarded::Done(Err(CallError::Notion(NotionError::Timeout {
                timeout_ms: left.as_millis() as u64,
            })))
        }
        Err(e) => {
            fwd.count_forwarded("unreachable", took);
            unavailable(unreachable_owner(route, &e.to_string()))
        }
    }
}

/// Why a call failed when the shard's owner could not be reached. For a tenant pinned to
/// regions it names the residency: no node outside those regions takes the call, so while
/// none of them is alive the call waits for one (it never moves to another region).
fn unreachable_owner(route: &Route, error: &str) -> String {
    let residency = &route.shard.residency;
    if residency.allowed_regions.is_empty() {
        format!(
            "node {}, which owns the integration's shard, could not be reached: {error}; retry \
             shortly",
            route.owner
        )
    } else {
        format!(
            "node {}, which owns the integration's shard {}, could not be reached: {error}; the \
             tenant's residency allows {} only, so no node of another region sends its calls; \
             retry once a node of an allowed region is up",
            route.owner,
            route.shard,
            residency_text(residency)
        )
    }
}

/// Serves the `DataCall`s other nodes send. Registered with the peer server when it starts,
/// before the node's [`App`] exists: until [`ForwardService::set_app`], calls are refused as
/// busy.
#[derive(Default)]
pub struct ForwardService {
    app: OnceLock<Arc<App>>,
}

impl ForwardService {
    /// Starts serving forwarded calls with `app`, and handing off the rate limiters of
    /// shards that move away from this node (`crate::handoff`).
    pub fn set_app(&self, app: Arc<App>) {
        if self.app.set(app.clone()).is_ok() {
            crate::handoff::spawn(app);
        }
    }
}

impl DataCallHandler for ForwardService {
    fn handle(
        &self,
        from: Option<NodeId>,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, DataCallRefusal>> {
        let app = self.app.get().cloned();
        Box::pin(async move {
            let Some(app) = app else {
                return Err(DataCallRefusal::Busy(
                    "this node is still starting; retry shortly".into(),
                ));
            };
            serve_forwarded(&app, from, payload).await
        })
    }
}

async fn serve_forwarded(
    app: &Arc<App>,
    from: Option<NodeId>,
    payload: Vec<u8>,
) -> Result<Vec<u8>, DataCallRefusal> {
    let fwd = &app.forward;
    if payload.len() > MAX_FORWARD_PAYLOAD_BYTES {
        fwd.count_served("invalid");
        return Err(DataCallRefusal::Invalid(format!(
            "a forwarded call may carry at most {MAX_FORWARD_PAYLOAD_BYTES} bytes"
        )));
    }
    // Counted like the node's own tool calls: a stopping node finishes it before it stops.
    // Counted before readiness is checked, so a drain that starts in between still waits
    // for it.
    let _in_flight = app.metrics.call_started();
    if !app.is_ready() {
        fwd.count_served("busy");
        return Err(DataCallRefusal::Busy(
            "this node is starting or stopping; retry shortly".into(),
        ));
    }
    let Ok(_serving) = fwd.serving.clone().try_acquire_owned() else {
        fwd.count_served("busy");
        return Err(DataCallRefusal::Busy(format!(
            "this node already serves {MAX_FORWARDED_CALLS_SERVED} forwarded calls"
        )));
    };
    let call = match decode_message(&payload) {
        Ok(DataMessage::Call(call)) => call,
        Ok(DataMessage::LimiterHandoff(handoff)) => {
            return crate::handoff::serve(app, from, handoff).await;
        }
        Err(e) => {
            fwd.count_served("invalid");
            return Err(DataCallRefusal::Invalid(format!(
                "undecodable forwarded call: {e}"
            )));
        }
    };
    let Some(method) = HttpMethod::from_name(&call.method) else {
        fwd.count_served("invalid");
        return Err(DataCallRefusal::Invalid(format!(
            "unknown method {:?}",
            call.method
        )));
    };
    let encode = |reply: &ForwardedReply| {
        serde_json::to_vec(reply)
            .map_err(|e| DataCallRefusal::Refused(format!("encoding the answer: {e}")))
    };
    // The integration comes from this node's own state (the token is unsealed here).
    let integration = match app.integration_spec(&call.tenant_id, &call.workspace_id) {
        Ok(spec) if spec.id == call.integration_id => spec,
        Ok(spec) => {
            fwd.count_served("error");
            return encode(&ForwardedReply::Failed {
                error: WireError::Unavailable {
                    message: format!(
                        "the workspace's integration is {} here, not {}; retry shortly",
                        spec.id, call.integration_id
                    ),
                },
                sent: 0,
            });
        }
        Err(message) => {
            fwd.count_served("error");
            return encode(&ForwardedReply::Failed {
                error: WireError::Unavailable { message },
                sent: 0,
            });
        }
    };
    let ctx = CallContext {
        tenant_id: call.tenant_id,
        workspace_id: call.workspace_id,
        session_id: call.session_id,
        integration,
    };
    let req = NotionRequest {
        method,
        path: call.path,
        query: call.query,
        body: call.body,
    };
    let deadline = Instant::now()
        + Duration::from_millis(call.deadline_ms.min(app.config.limits.call_deadline_ms));
    let sent = Arc::new(AtomicU32::new(0));
    let result = serve_owned(
        app,
        &call.shard,
        call.epoch,
        &ctx,
        req,
        deadline,
        sent.clone(),
    )
    .await;
    let sent = sent.load(Ordering::Relaxed);
    let reply = match result {
        Ok(value) => {
            fwd.count_served("ok");
            ForwardedReply::Ok { value, sent }
        }
        Err(NotServed::Failed(e)) => {
            fwd.count_served("error");
            ForwardedReply::Failed {
                error: to_wire(&e),
                sent,
            }
        }
        Err(NotServed::WrongOwner { owner, epoch }) => {
            fwd.count_served("wrong_owner");
            fwd.count_fenced();
            tracing::debug!(
                shard = %call.shard, asked_epoch = call.epoch, ?owner, epoch, ?from,
                "refused a forwarded call: not the owner at that epoch"
            );
            ForwardedReply::WrongOwner {
                owner,
                epoch,
                applied_index: applied_index(app),
            }
        }
    };
    encode(&reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_raft::placement::{NodeLabels, PlacementState};

    #[test]
    fn an_unreachable_owner_of_a_pinned_shard_names_the_residency() {
        let pinned = Residency {
            allowed_regions: ["eu-west".to_owned(), "eu-north".to_owned()].into(),
            preferred_region: None,
        };
        let route = Route {
            shard: ShardId {
                residency: pinned,
                index: 7,
            },
            owner: 3,
            epoch: 2,
        };
        let why = unreachable_owner(&route, "connection refused");
        assert!(why.contains("node 3"), "{why}");
        assert!(why.contains("connection refused"), "{why}");
        assert!(
            why.contains("residency allows regions eu-north, eu-west only"),
            "{why}"
        );
        let anywhere = Route {
            shard: ShardId {
                residency: Residency::default(),
                index: 7,
            },
            owner: 3,
            epoch: 2,
        };
        let why = unreachable_owner(&anywhere, "connection refused");
        assert!(!why.contains("residency"), "{why}");
        assert!(why.contains("could not be reached"), "{why}");
    }

    #[test]
    fn call_errors_survive_the_wire() {
        let errors = [
            CallError::RateLimited {
                retry_after_seconds: 7,
            },
            CallError::Notion(NotionError::Api {
                status: 429,
                code: "rate_limited".into(),
                message: "slow down".into(),
                request_id: Some("r1".into()),
                retry_after: Some(Duration::from_secs(2)),
            }),
            CallError::Notion(NotionError::Timeout { timeout_ms: 5 }),
            CallError::Notion(NotionError::Transport("t".into())),
            CallError::Notion(NotionError::Decode("d".into())),
            CallError::Unavailable("u".into()),
            CallError::Retry {
                why: "w".into(),
                retry_after_seconds: 1,
            },
        ];
        for e in errors {
            let bytes = serde_json::to_vec(&to_wire(&e)).unwrap_or_default();
            let back: WireError = serde_json::from_slice(&bytes).expect("decodes");
            assert_eq!(format!("{:?}", from_wire(back)), format!("{e:?}"));
        }
    }

    fn sample_call() -> ForwardedCall {
        ForwardedCall {
            shard: shard_of(&Residency::default(), "demo/share"),
            epoch: 3,
            tenant_id: "demo".into(),
            workspace_id: "w".into(),
            session_id: "s".into(),
            integration_id: "demo/share".into(),
            method: "GET".into(),
            path: "/v1/users/me".into(),
            query: vec![("a".into(), "b".into())],
            body: Some(serde_json::json!({"x": [1, 2]})),
            deadline_ms: 900,
        }
    }

    #[test]
    fn data_messages_are_tagged_and_an_untagged_call_still_decodes() {
        // A call as nodes sent it before the tag.
        let old = serde_json::to_vec(&sample_call()).unwrap_or_default();
        let Ok(DataMessage::Call(c)) = decode_message(&old) else {
            panic!("an untagged call did not decode as a call");
        };
        assert_eq!((c.epoch, c.path.as_str()), (3, "/v1/users/me"));
        // A tagged call names its kind, and still reads as a call to a node that predates
        // the tag (the extra field is ignored).
        let new = serde_json::to_vec(&DataMessage::Call(sample_call())).unwrap_or_default();
        let v: Value = serde_json::from_slice(&new).unwrap_or_default();
        assert_eq!(v["kind"], "call");
        assert!(serde_json::from_slice::<ForwardedCall>(&new).is_ok());
        assert!(matches!(decode_message(&new), Ok(DataMessage::Call(_))));
        // A handoff round-trips.
        let h = crate::handoff::LimiterHandoff {
            shard: shard_of(&Residency::default(), "demo/share"),
            epoch: 4,
            applied_index: 77,
            limiters: vec![crate::handoff::HandedOffLimiter {
                tenant_id: "demo".into(),
                integration_id: "demo/share".into(),
                tokens_micros: 1_500_000,
                pause_remaining_ms: 2_000,
            }],
        };
        let bytes = serde_json::to_vec(&DataMessage::LimiterHandoff(h.clone())).unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(v["kind"], "limiter_handoff");
        let Ok(DataMessage::LimiterHandoff(back)) = decode_message(&bytes) else {
            panic!("a handoff did not decode");
        };
        assert_eq!(back, h);
        // An unknown kind without a call's fields is refused.
        assert!(decode_message(br#"{"kind":"something_else"}"#).is_err());
    }

    #[test]
    fn a_shard_without_owner_goes_to_the_same_allowed_node_everywhere() {
        let mut p = PlacementState::default();
        for (id, region) in [(1, "eu"), (2, "eu"), (3, "us")] {
            p.nodes.insert(
                id,
                NodeLabels {
                    region: region.into(),
                    zone: None,
                    capacity: 100,
                },
            );
        }
        let eu = Residency {
            allowed_regions: ["eu".to_owned()].into(),
            preferred_region: None,
        };
        for key in ["a", "b", "c", "d", "e", "f"] {
            let shard = shard_of(&eu, key);
            let (owner, epoch) = effective_owner(&p, &shard, 9).expect("an allowed node");
            assert!(owner == 1 || owner == 2, "{owner} is outside the residency");
            assert_eq!(epoch, 0);
            // A draining node is never the would-be owner.
            let mut drained = p.clone();
            drained.draining.insert(owner);
            let (other, _) = effective_owner(&drained, &shard, 9).expect("the other eu node");
            assert_ne!(other, owner);
        }
        let nowhere = Residency {
            allowed_regions: ["ap".to_owned()].into(),
            preferred_region: None,
        };
        assert_eq!(effective_owner(&p, &shard_of(&nowhere, "a"), 9), None);
        // Before any node recorded labels, each node serves its own calls.
        let empty = PlacementState::default();
        assert_eq!(
            effective_owner(&empty, &shard_of(&eu, "a"), 9),
            Some((9, 0))
        );
    }
}
