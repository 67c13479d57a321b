//! Each simulated Notion request goes out from the node that owns its integration's shard,
//! as `node/src/forward.rs` sends production's: the entry node routes it from its applied
//! shard map (the owner, or for a shard without owner the would-be owner, with
//! `quire_raft::handoff::effective_owner` over `quire_raft::placement::shard_of` of the
//! integration's key inside the tenant's residency); the owner serves it through its own data
//! plane, and another node forwards it to the owner as a `DataCall` over the simulated network
//! (the peer transport, its link faults included) naming the shard's epoch.
//!
//! The owner serves only at exactly that epoch (else `WrongOwner`, one retry by the entry node
//! after applying the index the owner reports), with its view confirmed current within S
//! (`Freshness`, S = [`AUTHZ_MAX_STALENESS`]), after the new owner's hold-off
//! (`quire_raft::handoff::HoldOff`), and under a fence checked after the rate-limit permit,
//! right before sending (`DataPlane::call_fenced`): still the owner at that epoch, view still
//! current. The planted bugs `stale-owner-not-fenced` and `handoff-skips-hold-off` take out
//! the fence and the hold-off.
//!
//! Kept simpler than production (what the checkers do not depend on): no bound on forwarded
//! calls served, no forwarding metrics, errors cross the wire as a reduced set.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use quire_actors::call::{CallContext, CallError, Fence, IntegrationSpec};
use quire_actors::notion::{HttpMethod, NotionError, NotionRequest, NotionToken};
use quire_actors::supervisor::DataPlane;
use quire_node::cluster::Router;
use quire_node::freshness::Freshness;
use quire_raft::handoff::{HoldOff, effective_owner, sends_for};
use quire_raft::ids::{TenantId, WorkspaceId};
use quire_raft::placement::{ShardId, integration_key, shard_of};
use quire_raft::{NodeId, State};
use quire_transport::{DataCallHandler, DataCallOutcome, DataCallRefusal};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::access::AUTHZ_MAX_STALENESS;
use crate::bugs::Bug;
use crate::check::{Send, SendLog};
use crate::node::{CALL_DEADLINE_MS, peer_addr};
use crate::notion::{INTEGRATIONS, budget};
use crate::trace::{Trace, sim_now};

/// Longest the entry node waits to apply the index a refusing owner reports.
const CATCH_UP_WAIT: Duration = Duration::from_millis(1_000);

/// Where one integration's requests go, as a node's applied state says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The integration's shard.
    pub shard: ShardId,
    /// Its owner (or would-be owner).
    pub owner: NodeId,
    /// The shard's epoch.
    pub epoch: u64,
}

/// The route of `ctx`'s integration in `state` (production's `forward::route_in`).
pub fn route_in(state: &State, tenant: &str, workspace: &str, me: NodeId) -> Result<Route, String> {
    let (Ok(tenant), Ok(workspace)) = (TenantId::new(tenant), WorkspaceId::new(workspace)) else {
        return Err("bad tenant or workspace id".into());
    };
    let ws = state
        .workspace(&tenant, &workspace)
        .ok_or_else(|| "the workspace has no Notion integration".to_string())?;
    let p = state.placement();
    let shard = shard_of(
        &p.residency_of(&tenant),
        &integration_key(&tenant, &ws.integration_id),
    );
    let (owner, epoch) = effective_owner(p, &shard, me)
        .ok_or_else(|| format!("no allowed node for shard {shard}"))?;
    Ok(Route {
        shard,
        owner,
        epoch,
    })
}

/// A node's forwarding: its data plane, its view, its hold-offs.
pub struct Forward {
    /// This node.
    pub id: NodeId,
    /// Its router (control plane and peers).
    pub router: Router,
    /// Its data plane.
    pub data: DataPlane,
    /// Its view of the access rules and shard map, confirmed current within S.
    pub freshness: Arc<Freshness>,
    /// The planted bug, if any.
    pub bug: Option<Bug>,
    /// The run's trace.
    pub trace: Trace,
    /// Every node's requests let through a fence.
    pub sends: SendLog,
    hold_off: Mutex<HoldOff<Instant>>,
    /// (shard, epoch) pairs this incarnation has traced itself the owner of.
    announced: Mutex<BTreeSet<(ShardId, u64)>>,
}

/// The wire form of a forwarded call.
#[derive(Debug, Serialize, Deserialize)]
struct ForwardedCall {
    shard: ShardId,
    epoch: u64,
    tenant_id: String,
    workspace_id: String,
    session_id: String,
    integration_id: String,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    deadline_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Reply {
    Ok { value: Value },
    Failed { error: WireError },
    WrongOwner { applied_index: Option<u64> },
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
        retry_after_ms: Option<u64>,
    },
    NotionTimeout {
        timeout_ms: u64,
    },
    Other {
        message: String,
    },
    Retry {
        message: String,
    },
}

fn to_wire(e: CallError) -> WireError {
    match e {
        CallError::RateLimited {
            retry_after_seconds,
        } => WireError::RateLimited {
            retry_after_seconds,
        },
        CallError::Notion(NotionError::Api {
            status,
            code,
            message,
            retry_after,
            ..
        }) => WireError::NotionApi {
            status,
            code,
            message,
            retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        },
        CallError::Notion(NotionError::Timeout { timeout_ms }) => {
            WireError::NotionTimeout { timeout_ms }
        }
        CallError::Retry { why, .. } => WireError::Retry { message: why },
        other => WireError::Other {
            message: other.to_string(),
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
            retry_after_ms,
        } => CallError::Notion(NotionError::Api {
            status,
            code,
            message,
            request_id: None,
            retry_after: retry_after_ms.map(Duration::from_millis),
        }),
        WireError::NotionTimeout { timeout_ms } => {
            CallError::Notion(NotionError::Timeout { timeout_ms })
        }
        WireError::Other { message } => CallError::Unavailable(message),
        WireError::Retry { message } => retry(message),
    }
}

fn retry(why: String) -> CallError {
    CallError::Retry {
        why,
        retry_after_seconds: 1,
    }
}

/// Why the owner side did not run a call.
enum NotServed {
    WrongOwner,
    Failed(CallError),
}

impl Forward {
    /// A node's forwarding over its router, data plane and freshness.
    pub fn new(
        id: NodeId,
        router: Router,
        data: DataPlane,
        freshness: Arc<Freshness>,
        bug: Option<Bug>,
        trace: Trace,
        sends: SendLog,
    ) -> Self {
        Self {
            id,
            router,
            data,
            freshness,
            bug,
            trace,
            sends,
            hold_off: Mutex::new(HoldOff::default()),
            announced: Mutex::new(BTreeSet::new()),
        }
    }

    fn applied_index(&self) -> Option<u64> {
        self.router
            .control
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
    }

    /// Sends `req` for `ctx` from the owner of its integration's shard (this node, or the
    /// owner over the peer transport).
    pub async fn call(
        self: &Arc<Self>,
        ctx: &CallContext,
        req: NotionRequest,
    ) -> Result<Value, CallError> {
        let deadline = Instant::now() + Duration::from_millis(CALL_DEADLINE_MS);
        for attempt in 0..2 {
            let route = self
                .router
                .control
                .read_applied(|s| route_in(s, &ctx.tenant_id, &ctx.workspace_id, self.id))
                .map_err(CallError::Unavailable)?;
            let refused = if route.owner == self.id {
                match self
                    .serve_owned(&route.shard, route.epoch, ctx, req.clone(), deadline)
                    .await
                {
                    Ok(v) => return Ok(v),
                    Err(NotServed::Failed(e)) => return Err(e),
                    Err(NotServed::WrongOwner) => None,
                }
            } else {
                match self.forward_to(&route, ctx, &req, deadline).await {
                    Ok(result) => return result,
                    Err(applied_index) => applied_index,
                }
            };
            if attempt == 0 {
                let wait = CATCH_UP_WAIT.min(deadline.saturating_duration_since(Instant::now()));
                let _ = self
                    .router
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
        ))
    }

    /// Forwards to the route's owner: `Ok` with its answer, or `Err` with the index the
    /// owner applied when it refused as not the owner at that epoch.
    async fn forward_to(
        &self,
        route: &Route,
        ctx: &CallContext,
        req: &NotionRequest,
        deadline: Instant,
    ) -> Result<Result<Value, CallError>, Option<u64>> {
        let Some(peers) = self.router.peers.as_ref() else {
            return Ok(Err(retry("no peer transport".into())));
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
        let payload = match serde_json::to_vec(&call) {
            Ok(p) => p,
            Err(e) => return Ok(Err(CallError::Unavailable(format!("encoding: {e}")))),
        };
        let outcome = peers
            .data_call(
                &peer_addr(route.owner),
                payload,
                left + Duration::from_millis(500),
            )
            .await;
        match outcome {
            Ok(DataCallOutcome::Ok(bytes)) => match serde_json::from_slice::<Reply>(&bytes) {
                Ok(Reply::Ok { value }) => Ok(Ok(value)),
                Ok(Reply::Failed { error }) => Ok(Err(from_wire(error))),
                Ok(Reply::WrongOwner { applied_index }) => Err(applied_index),
                Err(e) => Ok(Err(retry(format!("unreadable answer: {e}")))),
            },
            Ok(DataCallOutcome::Refused(why)) => Ok(Err(retry(format!("refused: {why}")))),
            Err(quire_transport::TransportError::Timeout { .. }) => {
                Ok(Err(CallError::Notion(NotionError::Timeout {
                    timeout_ms: left.as_millis() as u64,
                })))
            }
            Err(e) => Ok(Err(retry(format!(
                "node {} could not be reached: {}",
                route.owner,
                crate::node::error_kind(&e.to_string())
            )))),
        }
    }

    /// When this node may send for `tenant` from `shard` at `epoch`, if its applied state
    /// names it the owner at exactly that epoch and the shard is still the tenant's.
    fn owns(&self, shard: &ShardId, epoch: u64, tenant: &TenantId) -> Option<Instant> {
        let me = self.id;
        let now = Instant::now();
        let at = self.router.control.read_applied(|s| {
            let p = s.placement();
            sends_for(p, shard, epoch, tenant, me).then(|| {
                self.hold_off
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .may_send_at(p, shard, tenant, me, epoch, now, AUTHZ_MAX_STALENESS)
            })
        })?;
        let first = self
            .announced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((shard.clone(), epoch));
        if first {
            let wait = at.saturating_duration_since(now).as_millis();
            self.trace.record(
                sim_now(),
                &format!("n{me}"),
                format!("owns shard {shard} at epoch {epoch}: may send in {wait} ms"),
            );
        }
        Some(at)
    }

    /// The fence checked right before each request leaves: still the owner at `epoch` of
    /// the tenant's shard, with a view confirmed current within S. `moved` is set when it
    /// refused because the shard has another owner or epoch now, or is no longer the
    /// tenant's (its residency changed).
    fn fence(
        &self,
        shard: &ShardId,
        epoch: u64,
        tenant: &TenantId,
        moved: Arc<AtomicBool>,
    ) -> Fence {
        let me = self.id;
        let control = self.router.control.clone();
        let freshness = self.freshness.clone();
        let shard = shard.clone();
        let tenant = tenant.clone();
        Arc::new(move || {
            let owns =
                control.read_applied(|s| sends_for(s.placement(), &shard, epoch, &tenant, me));
            if !owns {
                moved.store(true, Ordering::SeqCst);
                Err(format!("no longer owns shard {shard} at epoch {epoch}"))
            } else if !freshness.is_fresh() {
                Err(format!("view of shard {shard} not confirmed current"))
            } else {
                Ok(())
            }
        })
    }

    /// Runs a call for a shard this node should own at `epoch`: ownership, freshness, the
    /// hold-off, then the local data plane under the fence.
    async fn serve_owned(
        &self,
        shard: &ShardId,
        epoch: u64,
        ctx: &CallContext,
        req: NotionRequest,
        deadline: Instant,
    ) -> Result<Value, NotServed> {
        let unfenced = self.bug == Some(Bug::StaleOwnerNotFenced);
        let tenant = TenantId::new(ctx.tenant_id.as_str())
            .map_err(|_| NotServed::Failed(retry("the caller's tenant id is not valid".into())))?;
        self.owns(shard, epoch, &tenant)
            .ok_or(NotServed::WrongOwner)?;
        // PLANTED BUG `stale-owner-not-fenced` (simulator only) sends from a view never
        // confirmed current, and without the fence below.
        if !unfenced && self.freshness.ensure(&self.router).await.is_err() {
            return Err(NotServed::Failed(retry(
                "this node cannot confirm its view of the shard map current".into(),
            )));
        }
        let may_send_at = self
            .owns(shard, epoch, &tenant)
            .ok_or(NotServed::WrongOwner)?;
        // PLANTED BUG `handoff-skips-hold-off` (simulator only) sends at once.
        if may_send_at > Instant::now() && self.bug != Some(Bug::HandoffSkipsHoldOff) {
            if may_send_at >= deadline {
                return Err(NotServed::Failed(retry(format!(
                    "shard {shard} just moved to this node, which waits for the previous owner \
                     to stop"
                ))));
            }
            tokio::time::sleep_until(may_send_at).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let moved = Arc::new(AtomicBool::new(false));
        let checked: Fence = if unfenced {
            Arc::new(|| Ok(()))
        } else {
            self.fence(shard, epoch, &tenant, moved.clone())
        };
        // What passes the fence leaves for Notion: recorded for `senders-in-epoch-order`.
        let (sends, me) = (self.sends.clone(), self.id);
        let (integration, shard_name) = (
            format!("{}/{}", ctx.tenant_id, ctx.integration.id),
            shard.to_string(),
        );
        let fence: Fence = Arc::new(move || {
            checked()?;
            sends.record(Send {
                at_ms: sim_now().as_millis() as u64,
                node: me,
                integration: integration.clone(),
                shard: shard_name.clone(),
                epoch,
            });
            Ok(())
        });
        let sent = Arc::new(AtomicU32::new(0));
        let at = quire_actors::limiter::ShardEpoch::new(shard.to_string(), epoch);
        let result = self.data.call_fenced(ctx, req, left, sent, fence, at).await;
        match result {
            Err(CallError::Unavailable(_)) if moved.load(Ordering::SeqCst) => {
                self.trace.record(
                    sim_now(),
                    &format!("n{}", self.id),
                    format!("fenced: shard {shard} left epoch {epoch}"),
                );
                Err(NotServed::WrongOwner)
            }
            other => other.map_err(NotServed::Failed),
        }
    }

    /// Serves one forwarded call (the owner's side).
    async fn serve_forwarded(self: Arc<Self>, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let call: ForwardedCall = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
        let method = HttpMethod::from_name(&call.method).ok_or("unknown method")?;
        let token = INTEGRATIONS
            .iter()
            .find(|(name, _)| *name == call.integration_id)
            .map(|(_, token)| *token)
            .ok_or("unknown integration")?;
        let ctx = CallContext {
            tenant_id: call.tenant_id,
            workspace_id: call.workspace_id,
            session_id: call.session_id,
            integration: IntegrationSpec {
                id: call.integration_id,
                token: NotionToken::new(token),
                budget: budget(),
            },
        };
        let req = NotionRequest {
            method,
            path: call.path,
            query: call.query,
            body: call.body,
        };
        let deadline = Instant::now() + Duration::from_millis(call.deadline_ms);
        let reply = match self
            .serve_owned(&call.shard, call.epoch, &ctx, req, deadline)
            .await
        {
            Ok(value) => Reply::Ok { value },
            Err(NotServed::Failed(e)) => Reply::Failed { error: to_wire(e) },
            Err(NotServed::WrongOwner) => Reply::WrongOwner {
                applied_index: self.applied_index(),
            },
        };
        serde_json::to_vec(&reply).map_err(|e| e.to_string())
    }
}

/// Serves the `DataCall`s other nodes send; registered with the peer server before the
/// node's data plane exists (calls are refused as busy until [`ForwardService::set`]).
#[derive(Default)]
pub struct ForwardService {
    forward: OnceLock<Arc<Forward>>,
}

impl ForwardService {
    /// Starts serving forwarded calls with `forward`.
    pub fn set(&self, forward: Arc<Forward>) {
        let _ = self.forward.set(forward);
    }
}

impl DataCallHandler for ForwardService {
    fn handle(
        &self,
        _from: Option<NodeId>,
        payload: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, DataCallRefusal>> {
        let forward = self.forward.get().cloned();
        Box::pin(async move {
            let Some(forward) = forward else {
                return Err(DataCallRefusal::Busy("the node is starting".into()));
            };
            forward
                .serve_forwarded(payload)
                .await
                .map_err(DataCallRefusal::Invalid)
        })
    }
}
