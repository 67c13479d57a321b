//! When an integration's shard moves to another node, its rate limiter's state goes with it
//! (make-before-break): the old owner hands the new one a [`LimiterSnapshot`] — tokens left
//! and the pause Notion asked for (a 429's `Retry-After`) — so the new owner neither forgets a
//! pause nor starts a burst the old owner already spent.
//!
//! **Old owner.** Every call this node serves as its shard's owner records the integration
//! with the shard and epoch ([`Handoff::record`]). A watcher on the applied log notices when
//! the applied state gives a recorded shard another owner (or epoch). That state is exactly
//! what the fence before every send reads (`forward.rs`), so by then this node sends nothing
//! more for the integration: requests already past the fence took their tokens before, and
//! the snapshot, taken now, counts them. Each is taken as of the epoch the integration was
//! last served at here (`DataPlane::limiter_snapshot_at`): a limiter that never sent under it
//! first empties, as a call under it would, so it never hands off tokens it earned before
//! that tenure. The snapshots of the moved shard's integrations go to
//! the new owner in one `DataCall` (`LimiterHandoff`, at most [`MAX_LIMITERS_PER_HANDOFF`]
//! each), with the index of the applied state that holds the move. At most
//! [`MAX_HANDOFFS_IN_FLIGHT`] pushes run at once (one beyond that is dropped and counted as
//! failed), each within [`HANDOFF_TIMEOUT`]; a push never blocks placement or calls. An
//! integration whose limiter is gone here (its tenant passivated, so it was unpaused with a
//! full bucket) has nothing to carry: the new owner starts it empty, as after a restart.
//! [`LATE_PAUSE_CHECK`] after the first push the old owner looks again and sends the limiters
//! paused by then: a request already on its way when the move was applied may bring back a
//! 429 after the snapshot (a pause answered later than that is not carried).
//!
//! A residency change moves a tenant's integrations to shards of the new residency without
//! any shard changing owner: the watcher treats an integration whose shard under the applied
//! policy is no longer the one it was served at like a moved one, and hands its limiter (taken
//! as of the shard and epoch it was served at here) to the new shard's owner; one whose new
//! shard is this node's stays where it is.
//!
//! **Retirement.** After the second look (or at once, for a handoff not sent because too many
//! were in flight), a tenant of the handed-off integrations that this
//! node no longer owns any shard of (asked of the applied state just before) has its
//! supervisor retired (`DataPlane::retire_tenant`): its sessions and limiters stop now, not
//! `limits.idle_tenant_ms` later. A call still in its tree or a pause still running holds it;
//! it is asked again every [`RETIRE_RETRY`] for up to [`RETIRE_PATIENCE`], after which
//! ordinary passivation stops it once idle. Should a shard come back, the tenant's next call
//! starts a new supervisor with empty buckets (never more permissive than the one retired).
//!
//! **New owner.** It first applies the sender's index (bounded wait), then adopts a snapshot
//! only if its own applied state names it the shard's owner at exactly the epoch the sender
//! saw, and the integration hashes to that shard there; otherwise it refuses. Adopting
//! (`DataPlane::adopt_limiter_snapshot`, for that shard and epoch) starts the limiter from the
//! snapshot when there is none; a running one that has not sent under that epoch (this node
//! owned the shard earlier, and its bucket refilled while the sender spent it) takes the
//! snapshot's tokens; one that already sent under it keeps the fewer tokens; the longer pause
//! stays either way. The push normally arrives within the new owner's hold-off S
//! (`forward.rs`); one that arrives later merges. A failed or late push costs nothing but the
//! state it carried: the new owner's first call at the new epoch empties the limiter it has
//! (an old one included, whatever it refilled to) or starts one empty
//! (`quire_actors::limiter`), so a returning owner never adds a second burst to the one the
//! previous owner spent.
//!
//! `quire_limiter_handoffs_total{outcome}` counts snapshots: `sent` (the new owner adopted
//! it) and `failed` (not delivered, or refused) on the old owner; `adopted` and `refused` on
//! the new owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use quire_actors::call::Budget;
use quire_actors::limiter::{LimiterSnapshot, ShardEpoch};
use quire_actors::supervisor::Retired;
use quire_raft::NodeId;
use quire_raft::ids::{IntegrationId, TenantId};
use quire_raft::placement::{PlacementState, ShardId, integration_key, shard_of};
use quire_transport::{DataCallOutcome, DataCallRefusal};

use crate::app::App;

/// Limiter snapshots one handoff message carries at most (more go in several messages).
pub const MAX_LIMITERS_PER_HANDOFF: usize = 512;
/// Handoff pushes one node runs at once.
pub const MAX_HANDOFFS_IN_FLIGHT: usize = 8;
/// Longest one push may take, the receiver's wait to catch up included.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(3);
/// When the old owner looks again for pauses that came back after its first push.
const LATE_PAUSE_CHECK: Duration = Duration::from_secs(1);
/// Longest the receiver waits to apply the index the sender saw the move at.
const CATCH_UP_WAIT: Duration = Duration::from_millis(1_500);
/// How often a tenant whose supervisor is held (a call, a pause) is asked again to retire.
const RETIRE_RETRY: Duration = Duration::from_secs(1);
/// How long it is asked at most; after that it passivates when idle.
const RETIRE_PATIENCE: Duration = Duration::from_secs(60);
/// Integrations remembered as served here (beyond it the least recently served half is
/// forgotten; a forgotten one is not handed off, and its new owner starts it empty).
const MAX_RECORDS: usize = 65_536;

/// One integration's limiter on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedOffLimiter {
    pub tenant_id: String,
    /// The data plane's integration id (`tenant/integration`).
    pub integration_id: String,
    pub tokens_micros: u64,
    pub pause_remaining_ms: u64,
}

/// The `limiter_handoff` data message: the limiters of integrations of `shard`, which the
/// sender's applied state (up to `applied_index`) gives to the receiver at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimiterHandoff {
    pub shard: ShardId,
    pub epoch: u64,
    pub applied_index: u64,
    pub limiters: Vec<HandedOffLimiter>,
}

/// The receiver's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffReply {
    pub adopted: u32,
    pub refused: u32,
    /// Why the first refused snapshot was refused.
    pub why: Option<String>,
}

/// An integration served here, handed off: (tenant, data plane integration id) and the
/// shard and epoch this node last served it at (the shard differs from the one it is handed
/// off for after a residency change).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServedAt {
    tenant: String,
    integration: String,
    shard: ShardId,
    epoch: u64,
}

#[derive(Debug, Clone)]
struct Served {
    shard: ShardId,
    epoch: u64,
    at: Instant,
}

/// The node's handoff state: what it served as owner, the bound on pushes, counters.
pub struct Handoff {
    /// (tenant, data plane integration id) → the shard and epoch it was last served at.
    served: Mutex<BTreeMap<(String, String), Served>>,
    pushing: Arc<tokio::sync::Semaphore>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Handoff {
    fn default() -> Self {
        Self {
            served: Mutex::new(BTreeMap::new()),
            pushing: Arc::new(tokio::sync::Semaphore::new(MAX_HANDOFFS_IN_FLIGHT)),
            counts: Mutex::new(BTreeMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The outcomes `quire_limiter_handoffs_total` reports.
pub const OUTCOMES: [&str; 4] = ["sent", "adopted", "refused", "failed"];

impl Handoff {
    /// This node, as owner of `shard` at `epoch`, serves a call of `tenant`'s `integration`.
    pub fn record(&self, tenant: &str, integration: &str, shard: &ShardId, epoch: u64) {
        let now = Instant::now();
        let mut served = lock(&self.served);
        let key = (tenant.to_owned(), integration.to_owned());
        if let Some(s) = served.get_mut(&key) {
            if s.shard != *shard || s.epoch != epoch {
                s.shard = shard.clone();
                s.epoch = epoch;
            }
            s.at = now;
            return;
        }
        if served.len() >= MAX_RECORDS {
            let mut ages: Vec<Instant> = served.values().map(|s| s.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            served.retain(|_, s| s.at > cut);
        }
        served.insert(
            key,
            Served {
                shard: shard.clone(),
                epoch,
                at: now,
            },
        );
    }

    fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            *lock(&self.counts).entry(outcome).or_default() += n;
        }
    }

    /// Snapshots handed off, by outcome (every outcome of [`OUTCOMES`], zero included).
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let c = lock(&self.counts);
        OUTCOMES
            .iter()
            .map(|o| (*o, c.get(o).copied().unwrap_or(0)))
            .collect()
    }

    /// Integrations recorded as served here whose shard the applied shard map `p` gives to
    /// another node — or which the tenant's residency moved to a shard another node owns:
    /// forgotten here, and returned grouped by (new owner, shard, epoch), each with the shard
    /// and epoch it was last served at here. One the residency moved to a shard this node
    /// owns is forgotten too (its next call records it there) and not handed off.
    fn take_moved(
        &self,
        p: &PlacementState,
        me: NodeId,
    ) -> BTreeMap<(NodeId, ShardId, u64), Vec<ServedAt>> {
        let mut moved: BTreeMap<(NodeId, ShardId, u64), Vec<ServedAt>> = BTreeMap::new();
        lock(&self.served).retain(|(tenant, integration), s| {
            let shard = current_shard(p, tenant, &s.shard).unwrap_or_else(|| s.shard.clone());
            match quire_raft::handoff::effective_owner(p, &shard, me) {
                Some((owner, _)) if owner == me => shard == s.shard,
                Some((owner, epoch)) => {
                    moved
                        .entry((owner, shard, epoch))
                        .or_default()
                        .push(ServedAt {
                            tenant: tenant.clone(),
                            integration: integration.clone(),
                            shard: s.shard.clone(),
                            epoch: s.epoch,
                        });
                    false
                }
                // No allowed node: nobody to hand it to.
                None => false,
            }
        });
        moved
    }
}

/// The shard an integration of `tenant` served here from `served` goes to under `p`: the
/// same index (it comes from the integration's key alone), in the tenant's residency now.
/// `None` if the tenant id does not parse.
fn current_shard(p: &PlacementState, tenant: &str, served: &ShardId) -> Option<ShardId> {
    let tenant = TenantId::new(tenant).ok()?;
    Some(ShardId {
        residency: p.residency_of(&tenant),
        index: served.index,
    })
}

/// The ids behind a data plane integration id (`tenant/integration`, as `App` makes it).
fn integration_ids(tenant: &str, integration: &str) -> Result<(TenantId, IntegrationId), String> {
    let tenant_id = TenantId::new(tenant).map_err(|e| e.to_string())?;
    let name = integration
        .strip_prefix(tenant)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| format!("integration {integration} is not the tenant's"))?;
    let integration = IntegrationId::new(name).map_err(|e| e.to_string())?;
    Ok((tenant_id, integration))
}

/// Whether node `me` owns, under the applied `state`, the shard of any of `tenant`'s
/// integrations (false for a tenant that no longer exists).
fn owns_a_shard_of(state: &quire_raft::state::State, tenant: &str, me: NodeId) -> bool {
    let Ok(tenant) = TenantId::new(tenant) else {
        return false;
    };
    let p = state.placement();
    let residency = p.residency_of(&tenant);
    state.integrations(&tenant).any(|i| {
        let shard = shard_of(&residency, &integration_key(&tenant, &i.id));
        quire_raft::handoff::effective_owner(p, &shard, me).is_some_and(|(owner, _)| owner == me)
    })
}

/// Starts the watcher that hands off limiters when this node's applied state moves a shard
/// it served away; it ends with the node.
pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        let mut metrics = app.control.raft().metrics();
        let mut seen: Option<u64> = None;
        loop {
            let applied = metrics.borrow_and_update().last_applied.map(|l| l.index);
            if applied != seen {
                seen = applied;
                hand_off_moved(&app);
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = app.shutdown.cancelled() => return,
            }
        }
    });
}

fn hand_off_moved(app: &Arc<App>) {
    let me = app.config.node.id;
    let (moved, applied_index) = app.control.read_applied_indexed(|state, index| {
        (app.forward.handoff.take_moved(state.placement(), me), index)
    });
    for ((owner, shard, epoch), integrations) in moved {
        for chunk in integrations.chunks(MAX_LIMITERS_PER_HANDOFF) {
            let handoff = &app.forward.handoff;
            let Ok(permit) = handoff.pushing.clone().try_acquire_owned() else {
                handoff.count("failed", chunk.len() as u64);
                tracing::warn!(
                    %shard, to = owner, limiters = chunk.len(),
                    "not handing off rate limiters: {MAX_HANDOFFS_IN_FLIGHT} handoffs already \
                     in flight; the new owner starts them empty"
                );
                // Their tenants' supervisors still go if nothing here needs them.
                let app = app.clone();
                let tenants: BTreeSet<String> = chunk.iter().map(|s| s.tenant.clone()).collect();
                tokio::spawn(async move { retire(&app, tenants).await });
                continue;
            };
            let app = app.clone();
            let shard = shard.clone();
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                let n = chunk.len() as u64;
                let first = push(
                    &app,
                    owner,
                    shard.clone(),
                    epoch,
                    applied_index,
                    chunk.clone(),
                    false,
                );
                if tokio::time::timeout(HANDOFF_TIMEOUT, first).await.is_err() {
                    app.forward.handoff.count("failed", n);
                    tracing::warn!(
                        %shard, to = owner,
                        "rate limiter handoff timed out after {HANDOFF_TIMEOUT:?}"
                    );
                }
                drop(permit);
                // A request already on its way when the move was applied may bring back a
                // 429 after the snapshot: its pause goes after the first push.
                tokio::time::sleep(LATE_PAUSE_CHECK).await;
                let tenants: BTreeSet<String> = chunk.iter().map(|s| s.tenant.clone()).collect();
                if let Ok(permit) = app.forward.handoff.pushing.clone().try_acquire_owned() {
                    let late = push(&app, owner, shard, epoch, applied_index, chunk, true);
                    let _ = tokio::time::timeout(HANDOFF_TIMEOUT, late).await;
                    drop(permit);
                }
                retire(&app, tenants).await;
            });
        }
    }
}

/// Retires the supervisors of `tenants` that this node no longer serves any shard of (the
/// placement agent's stop; `quire_actors::supervisor`, "Retirement"): their limiters were
/// handed off just before. One held by a call or a pause is asked again every
/// [`RETIRE_RETRY`], up to [`RETIRE_PATIENCE`]; beyond that ordinary passivation
/// (`limits.idle_tenant_ms`) stops it once idle.
async fn retire(app: &Arc<App>, tenants: BTreeSet<String>) {
    let me = app.config.node.id;
    let started = Instant::now();
    let mut left: Vec<String> = tenants.into_iter().collect();
    while !left.is_empty() {
        let mut busy = Vec::new();
        for tenant in left {
            if app.shutdown.is_cancelled() {
                return;
            }
            // Asked just before each retirement: a shard that came back keeps its tenant.
            if app
                .control
                .read_applied(|state| owns_a_shard_of(state, &tenant, me))
            {
                continue;
            }
            match app.data.retire_tenant(&tenant).await {
                Ok(Retired::Stopped) => {
                    tracing::debug!(%tenant, "retired the tenant's supervisor: its shards moved away");
                }
                Ok(Retired::NotRunning) => {}
                Ok(Retired::Busy) => busy.push(tenant),
                Err(e) => {
                    tracing::debug!(%tenant, "not retiring the tenant's supervisor: {e}");
                }
            }
        }
        if busy.is_empty() || started.elapsed() >= RETIRE_PATIENCE {
            return;
        }
        left = busy;
        tokio::select! {
            _ = tokio::time::sleep(RETIRE_RETRY) => {}
            _ = app.shutdown.cancelled() => return,
        }
    }
}

fn peer_addr(app: &App, node: NodeId) -> Option<String> {
    app.control
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&node)
        .map(|n| n.addr.clone())
}

/// Takes the snapshots of `integrations` (with `only_paused`, only those paused now) and
/// sends them to `owner`; counts the outcome.
async fn push(
    app: &Arc<App>,
    owner: NodeId,
    shard: ShardId,
    epoch: u64,
    applied_index: u64,
    integrations: Vec<ServedAt>,
    only_paused: bool,
) {
    let handoff = &app.forward.handoff;
    let mut limiters = Vec::with_capacity(integrations.len());
    for served in integrations {
        // Taken as of the epoch it was served at here: a limiter that never sent under it
        // (its calls ended before the permit) hands off an empty bucket, not tokens it earned
        // before this node's tenure, which the new owner, back at a later epoch, would take.
        let at = ShardEpoch::new(served.shard.to_string(), served.epoch);
        // None: no limiter here any more (passivated unpaused and full): nothing to carry.
        if let Some(s) = app
            .data
            .limiter_snapshot_at(&served.tenant, &served.integration, &at)
            .await
            && (!only_paused || s.pause_remaining_ms > 0)
        {
            limiters.push(HandedOffLimiter {
                tenant_id: served.tenant,
                integration_id: served.integration,
                tokens_micros: s.tokens_micros,
                pause_remaining_ms: s.pause_remaining_ms,
            });
        }
    }
    if limiters.is_empty() {
        return;
    }
    let n = limiters.len() as u64;
    let fail = |why: String| {
        handoff.count("failed", n);
        tracing::warn!(%shard, to = owner, limiters = n, "rate limiter handoff failed: {why}");
    };
    let (Some(peers), Some(addr)) = (app.router.peers.as_ref(), peer_addr(app, owner)) else {
        return fail(format!("node {owner} is not reachable from here"));
    };
    let message = crate::forward::DataMessage::LimiterHandoff(LimiterHandoff {
        shard: shard.clone(),
        epoch,
        applied_index,
        limiters,
    });
    let payload = match serde_json::to_vec(&message) {
        Ok(p) => p,
        Err(e) => return fail(format!("encoding: {e}")),
    };
    match peers.data_call(&addr, payload, HANDOFF_TIMEOUT).await {
        Ok(DataCallOutcome::Ok(bytes)) => match serde_json::from_slice::<HandoffReply>(&bytes) {
            Ok(reply) => {
                handoff.count("sent", u64::from(reply.adopted));
                handoff.count("failed", u64::from(reply.refused));
                if reply.refused > 0 {
                    tracing::warn!(
                        %shard, to = owner, refused = reply.refused,
                        why = reply.why.as_deref().unwrap_or(""),
                        "the new owner refused rate limiter snapshots"
                    );
                } else {
                    tracing::debug!(%shard, to = owner, adopted = reply.adopted, "handed off rate limiters");
                }
            }
            Err(e) => fail(format!("unreadable answer: {e}")),
        },
        Ok(DataCallOutcome::Refused(why)) => fail(format!("refused: {why}")),
        Err(e) => fail(e.to_string()),
    }
}

/// Serves a `limiter_handoff` another node sent (see the module docs).
pub async fn serve(
    app: &Arc<App>,
    from: Option<NodeId>,
    handoff: LimiterHandoff,
) -> Result<Vec<u8>, DataCallRefusal> {
    let counts = &app.forward.handoff;
    let n = handoff.limiters.len();
    if n > MAX_LIMITERS_PER_HANDOFF {
        counts.count("refused", n as u64);
        return Err(DataCallRefusal::Invalid(format!(
            "a handoff carries at most {MAX_LIMITERS_PER_HANDOFF} limiters, not {n}"
        )));
    }
    let _ = app
        .control
        .raft()
        .wait(Some(CATCH_UP_WAIT))
        .applied_index_at_least(Some(handoff.applied_index), "applied the handoff's index")
        .await;
    let me = app.config.node.id;
    let mut reply = HandoffReply {
        adopted: 0,
        refused: 0,
        why: None,
    };
    fn refuse(reply: &mut HandoffReply, why: String) {
        reply.refused += 1;
        reply.why.get_or_insert(why);
    }
    for l in handoff.limiters {
        // Resolved from this node's own applied state: the owner at that epoch, the
        // integration in that shard, and its budget here.
        let checked = app.control.read_applied(|s| {
            let p = s.placement();
            if quire_raft::handoff::effective_owner(p, &handoff.shard, me)
                != Some((me, handoff.epoch))
            {
                let o = p.owner(&handoff.shard);
                return Err(format!(
                    "node {me} does not own shard {} at epoch {} (its state: {:?} at epoch {})",
                    handoff.shard, handoff.epoch, o.node, o.epoch
                ));
            }
            let (tenant, integration) = integration_ids(&l.tenant_id, &l.integration_id)?;
            if shard_of(
                &p.residency_of(&tenant),
                &integration_key(&tenant, &integration),
            ) != handoff.shard
            {
                return Err(format!(
                    "integration {} is not in shard {}",
                    l.integration_id, handoff.shard
                ));
            }
            let found = s
                .integration(&tenant, &integration)
                .ok_or_else(|| format!("integration {} does not exist here", l.integration_id))?;
            Ok(Budget {
                requests_per_second: found.budget.requests_per_second,
                burst: found.budget.burst,
            })
        });
        let budget = match checked {
            Ok(b) => b,
            Err(why) => {
                refuse(&mut reply, why);
                continue;
            }
        };
        let snapshot = LimiterSnapshot {
            budget,
            tokens_micros: l.tokens_micros,
            pause_remaining_ms: l.pause_remaining_ms,
        };
        let at = ShardEpoch::new(handoff.shard.to_string(), handoff.epoch);
        match app
            .data
            .adopt_limiter_snapshot(&l.tenant_id, &l.integration_id, budget, snapshot, at)
            .await
        {
            Ok(how) => {
                reply.adopted += 1;
                tracing::debug!(
                    integration = %l.integration_id, ?how, ?from,
                    tokens_micros = l.tokens_micros, pause_ms = l.pause_remaining_ms,
                    "adopted a handed-off rate limiter"
                );
            }
            Err(e) => refuse(&mut reply, e.to_string()),
        }
    }
    counts.count("adopted", u64::from(reply.adopted));
    counts.count("refused", u64::from(reply.refused));
    if reply.refused > 0 {
        tracing::info!(
            shard = %handoff.shard, epoch = handoff.epoch, ?from, refused = reply.refused,
            why = reply.why.as_deref().unwrap_or(""),
            "refused handed-off rate limiter snapshots"
        );
    }
    serde_json::to_vec(&reply)
        .map_err(|e| DataCallRefusal::Refused(format!("encoding the answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_raft::placement::{NodeLabels, Residency, ShardOwner};

    fn map(owners: &[(&ShardId, NodeId, u64)]) -> PlacementState {
        let mut p = PlacementState::default();
        for id in 1..=3 {
            p.nodes.insert(
                id,
                NodeLabels {
                    region: "eu".into(),
                    zone: None,
                    capacity: 100,
                },
            );
        }
        for (shard, node, epoch) in owners {
            p.shards.insert(
                (*shard).clone(),
                ShardOwner {
                    node: Some(*node),
                    epoch: *epoch,
                },
            );
        }
        p
    }

    fn served(t: &str, i: &str, shard: &ShardId, epoch: u64) -> ServedAt {
        ServedAt {
            tenant: t.to_owned(),
            integration: i.to_owned(),
            shard: shard.clone(),
            epoch,
        }
    }

    #[test]
    fn a_moved_shard_hands_off_what_was_served_here_once() {
        let shard = |name: &str| shard_of(&Residency::default(), &format!("integration:t/{name}"));
        let (a, b) = (shard("a"), shard("b"));
        assert_ne!(a, b);
        // Another integration of shard a.
        let a2 = (0..10_000)
            .map(|k| format!("a{k}"))
            .find(|name| shard(name) == a)
            .expect("a name in shard a");
        let a2 = format!("t/{a2}");
        let h = Handoff::default();
        h.record("t", "t/a", &a, 1);
        h.record("t", &a2, &a, 1);
        h.record("t", "t/b", &b, 4);
        // Nothing moved: nothing to hand off, everything still remembered.
        assert!(h.take_moved(&map(&[(&a, 1, 1), (&b, 1, 4)]), 1).is_empty());
        // Shard a moved to node 2 at epoch 2: both of its integrations go there, once.
        let moved = map(&[(&a, 2, 2), (&b, 1, 4)]);
        let out: Vec<_> = h.take_moved(&moved, 1).into_iter().collect();
        assert_eq!(
            out,
            vec![(
                (2, a.clone(), 2),
                vec![served("t", "t/a", &a, 1), served("t", &a2, &a, 1)]
            )]
        );
        assert!(h.take_moved(&moved, 1).is_empty(), "handed off twice");
        // Shard b is still here; once it moves, it goes to its new owner.
        let out: Vec<_> = h
            .take_moved(&map(&[(&a, 2, 2), (&b, 3, 5)]), 1)
            .into_keys()
            .collect();
        assert_eq!(out, vec![(3, b, 5)]);
        // A shard moved back here and served again is remembered at its new epoch.
        h.record("t", "t/a", &a, 3);
        assert!(h.take_moved(&map(&[(&a, 1, 3)]), 1).is_empty());
        let out: Vec<_> = h.take_moved(&map(&[(&a, 3, 4)]), 1).into_iter().collect();
        assert_eq!(
            out,
            vec![((3, a.clone(), 4), vec![served("t", "t/a", &a, 3)])]
        );
    }

    #[test]
    fn a_residency_change_hands_off_to_the_new_shards_owner_unless_it_is_this_node() {
        let eu = Residency::default();
        let us = Residency {
            allowed_regions: ["us".to_owned()].into(),
            preferred_region: None,
        };
        let (a_eu, b_eu) = (
            shard_of(&eu, "integration:t/a"),
            shard_of(&eu, "integration:t/b"),
        );
        let (a_us, b_us) = (
            shard_of(&us, "integration:t/a"),
            shard_of(&us, "integration:t/b"),
        );
        assert_eq!(a_eu.index, a_us.index);
        let h = Handoff::default();
        h.record("t", "t/a", &a_eu, 1);
        h.record("t", "t/b", &b_eu, 2);
        // Node 1 owns both old shards, node 2 the new one of a, node 1 that of b.
        let mut p = map(&[(&a_eu, 1, 1), (&b_eu, 1, 2), (&a_us, 2, 7), (&b_us, 1, 9)]);
        assert!(h.take_moved(&p, 1).is_empty(), "nothing moved yet");
        p.residency.insert(TenantId::new("t").expect("id"), us);
        let out: Vec<_> = h.take_moved(&p, 1).into_iter().collect();
        // a goes to node 2 for its new shard, taken as of where it was served here; b's new
        // shard is this node's: forgotten, not handed off.
        assert_eq!(
            out,
            vec![((2, a_us, 7), vec![served("t", "t/a", &a_eu, 1)])]
        );
        assert!(h.take_moved(&p, 1).is_empty(), "handed off twice");
        assert!(lock(&h.served).is_empty());
    }

    #[test]
    fn a_data_plane_integration_id_gives_back_its_ids() {
        let (t, i) = integration_ids("acme", "acme/notion").expect("ids");
        assert_eq!((t.as_str(), i.as_str()), ("acme", "notion"));
        for (tenant, integration) in [
            ("acme", "acmex/notion"),
            ("acme", "other/notion"),
            ("acme", "acme/"),
        ] {
            assert!(
                integration_ids(tenant, integration).is_err(),
                "{integration}"
            );
        }
    }

    #[test]
    fn counts_report_every_outcome() {
        let h = Handoff::default();
        h.count("sent", 2);
        h.count("adopted", 0);
        assert_eq!(
            h.counts(),
            vec![("sent", 2), ("adopted", 0), ("refused", 0), ("failed", 0)]
        );
    }
}
