//! Invariant checkers. [`Observer`] runs between simulation steps and watches every live
//! node's Raft metrics and applied state (election safety: within a term, leaders appear in
//! increasing node-id order — openraft 0.9's default mode allows several leaders per term,
//! ordered by (term, node id); votes never go backwards, across restarts too; state machines
//! agree at every applied index, so committed entries never change); [`check_history`] checks the
//! workload's history at the end (linearizable reads by a visibility oracle, monotonic reads,
//! rejected writes never visible); [`check_final`] checks the converged cluster (no
//! acknowledged write lost, no phantom or rejected tenant, every node in the same state);
//! [`check_notion`] checks what the Notion sandbox received (per-integration budget in every
//! window, across shard handoffs between nodes too; `Retry-After` honoured);
//! [`SendOrder`] checks that an integration's shard owners sent in epoch order (no old
//! owner's request after the new owner's first), as the owners' fences let requests through
//! ([`SendLog`]).
//!
//! To add an invariant: observe what it needs (in [`Observer::observe`] for continuous
//! checks, or in the history / final state), and return a [`Violation`] naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::ServerState;
use quire_raft::NodeId;
use quire_raft::placement::{PlacementState, ShardId, candidates};

use crate::node::{Op, OpResult, Registry};
use crate::notion::{INTEGRATIONS, NotionEvent};
use crate::trace::Trace;

/// A broken invariant: ends the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (a stable, short name).
    pub invariant: &'static str,
    /// Simulated time it was detected, in ms.
    pub at_ms: u64,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant violated: {} (at {} ms simulated): {}",
            self.invariant, self.at_ms, self.detail
        )
    }
}

/// One operation of the workload, as its caller saw it.
#[derive(Debug, Clone)]
pub struct OpRecord {
    /// Admin (client task) that issued it.
    pub admin: u32,
    /// Node it was sent to.
    pub node: NodeId,
    /// What it was.
    pub op: Op,
    /// Simulated time it was invoked, ms.
    pub invoked_ms: u64,
    /// Simulated time it completed, ms, and how (`None`: still pending at the end).
    pub completed: Option<(u64, OpResult)>,
}

impl OpRecord {
    /// The tenant a write creates.
    pub fn tenant(&self) -> Option<&str> {
        match &self.op {
            Op::Create { tenant } | Op::CreateIn { tenant, .. } | Op::CreateInvalid { tenant } => {
                Some(tenant)
            }
            Op::Read | Op::Access(_) => None,
        }
    }

    /// Whether the write is known to be committed, and when that was known (ms). A
    /// `Create` answered `already_exists` was committed too: ids are unique per operation,
    /// so an earlier forwarding attempt of this very write got in first.
    pub fn acked_at(&self) -> Option<u64> {
        match (&self.op, &self.completed) {
            (Op::Create { .. } | Op::CreateIn { .. }, Some((at, OpResult::Written))) => Some(*at),
            (Op::Create { .. } | Op::CreateIn { .. }, Some((at, OpResult::Rejected { kind })))
                if kind == "already_exists" =>
            {
                Some(*at)
            }
            _ => None,
        }
    }
}

/// The workload's history, shared by its tasks.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<Vec<OpRecord>>>);

impl History {
    fn lock(&self) -> MutexGuard<'_, Vec<OpRecord>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an invocation; returns its index.
    pub fn invoke(&self, record: OpRecord) -> usize {
        let mut ops = self.lock();
        ops.push(record);
        ops.len() - 1
    }

    /// Records the completion of operation `index`.
    pub fn complete(&self, index: usize, at_ms: u64, result: OpResult) {
        if let Some(op) = self.lock().get_mut(index) {
            op.completed = Some((at_ms, result));
        }
    }

    /// A copy of every record.
    pub fn records(&self) -> Vec<OpRecord> {
        self.lock().clone()
    }
}

/// SHA-256 (first 16 hex digits) of a node's applied state, over the encoding of
/// [`crate::digest`] (all `BTreeMap`s: the same state gives the same bytes on every node).
pub fn state_digest(state: &quire_raft::State) -> String {
    let mut hex = crate::digest::sha256_hex(state).unwrap_or_else(|e| format!("unencodable {e}"));
    hex.truncate(16);
    hex
}

/// Continuous checks between simulation steps.
#[derive(Default)]
pub struct Observer {
    /// term → leaders seen in it, with the sample they were first seen at.
    leaders: BTreeMap<u64, BTreeMap<NodeId, u64>>,
    /// node → highest vote seen (term, voted-for node) and when.
    votes: BTreeMap<NodeId, ((u64, NodeId), u64)>,
    /// Samples taken so far.
    samples: u64,
    /// (node, incarnation, term) seen leading.
    leading: BTreeSet<(NodeId, u64, u64)>,
    /// applied index → (digest, first node seen there, when).
    digests: BTreeMap<u64, (String, NodeId, u64)>,
    /// node → (incarnation, applied index) at the previous sample.
    previous: BTreeMap<NodeId, (u64, Option<u64>)>,
    /// (node, incarnation, index) already digested.
    digested: BTreeSet<(NodeId, u64, u64)>,
    /// Digests taken (for the report).
    pub digests_taken: u64,
    /// The placement invariants, on every digested state.
    pub placement: PlacementWatch,
}

/// The placement invariants on every applied state observed: **one owner per shard per
/// epoch** — across all nodes, incarnations and states, a (shard, epoch) pair never names two
/// owners (a release, no owner, counts as one), and a shard's epoch never goes down within a
/// node's incarnation (a restarted node replays its log from an older state); **residency
/// respected** — a shard's owner, when set, has labels in the same state, in a region its
/// residency group allows.
#[derive(Default)]
pub struct PlacementWatch {
    /// (shard, epoch) → (the owner it named, the node that showed it, when).
    owners: BTreeMap<(ShardId, u64), (Option<NodeId>, NodeId, u64)>,
    /// (node, incarnation, shard) → highest epoch seen.
    epochs: BTreeMap<(NodeId, u64, ShardId), u64>,
    /// (node, incarnation) → the placement it showed last, already checked: the same again
    /// cannot break anything (pairs recorded are never replaced, epochs did not move).
    last: BTreeMap<(NodeId, u64), PlacementState>,
}

fn owner_name(owner: Option<NodeId>) -> String {
    owner.map_or_else(|| "no owner".to_string(), |n| format!("node {n}"))
}

impl PlacementWatch {
    /// Checks `state`, the placement node `node` (incarnation `incarnation`) has applied.
    pub fn observe(
        &mut self,
        node: NodeId,
        incarnation: u64,
        state: &PlacementState,
        now_ms: u64,
    ) -> Result<(), Violation> {
        if self.last.get(&(node, incarnation)) == Some(state) {
            return Ok(());
        }
        self.check(node, incarnation, state, now_ms)?;
        self.last.insert((node, incarnation), state.clone());
        Ok(())
    }

    fn check(
        &mut self,
        node: NodeId,
        incarnation: u64,
        state: &PlacementState,
        now_ms: u64,
    ) -> Result<(), Violation> {
        for (shard, owner) in &state.shards {
            match self.owners.get(&(shard.clone(), owner.epoch)) {
                Some((named, by, when)) if *named != owner.node => {
                    return Err(Violation {
                        invariant: "one-owner-per-shard-epoch",
                        at_ms: now_ms,
                        detail: format!(
                            "shard {shard} at epoch {} is owned by {} on node {node} (incarnation {incarnation}), but by {} on node {by} at {when} ms",
                            owner.epoch,
                            owner_name(owner.node),
                            owner_name(*named)
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    self.owners
                        .insert((shard.clone(), owner.epoch), (owner.node, node, now_ms));
                }
            }
            let highest = self
                .epochs
                .entry((node, incarnation, shard.clone()))
                .or_insert(owner.epoch);
            if owner.epoch < *highest {
                return Err(Violation {
                    invariant: "one-owner-per-shard-epoch",
                    at_ms: now_ms,
                    detail: format!(
                        "shard {shard} is at epoch {} on node {node} (incarnation {incarnation}), which had shown epoch {}: an epoch went down",
                        owner.epoch, *highest
                    ),
                });
            }
            *highest = owner.epoch;
            if let Some(n) = owner.node {
                let allowed = state
                    .nodes
                    .get(&n)
                    .map(|l| (shard.residency.allows(&l.region), l.region.clone()));
                match allowed {
                    Some((true, _)) => {}
                    Some((false, region)) => {
                        return Err(Violation {
                            invariant: "residency-respected",
                            at_ms: now_ms,
                            detail: format!(
                                "on node {node}, shard {shard} (epoch {}) is owned by node {n} in region {region}, outside its residency",
                                owner.epoch
                            ),
                        });
                    }
                    None => {
                        return Err(Violation {
                            invariant: "residency-respected",
                            at_ms: now_ms,
                            detail: format!(
                                "on node {node}, shard {shard} (epoch {}) is owned by node {n}, which has no labels",
                                owner.epoch
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// (shard, epoch) pairs seen (for the report).
    pub fn epochs_seen(&self) -> usize {
        self.owners.len()
    }
}

/// **Drain completes**: in `state`, no node marked draining owns a shard that another live
/// node — labelled, not draining, in a region the shard's residency allows — could take
/// (`quire_raft::placement::candidates`, the planner's own rule). Checked
/// [`crate::run::DRAIN_BOUND`] after the final heal.
pub fn check_drains(
    state: &PlacementState,
    live: &BTreeSet<NodeId>,
    at_ms: u64,
) -> Result<(), Violation> {
    for (shard, owner) in &state.shards {
        let Some(n) = owner.node.filter(|n| state.is_draining(*n)) else {
            continue;
        };
        let others = candidates(shard, &state.nodes, |m| {
            m != n && live.contains(&m) && !state.is_draining(m)
        });
        if !others.is_empty() {
            return Err(Violation {
                invariant: "drain-completes",
                at_ms,
                detail: format!(
                    "node {n} is draining but still owns shard {shard} (epoch {}), which live node(s) {others:?} could take",
                    owner.epoch
                ),
            });
        }
    }
    Ok(())
}

impl Observer {
    /// Looks at every live node once. A node's applied state is digested when its applied
    /// index was the same at the previous sample too (the state machine and the metrics
    /// openraft publishes are updated by different tasks; a quiet index means both agree).
    pub fn observe(
        &mut self,
        now_ms: u64,
        registry: &Registry,
        trace: &Trace,
    ) -> Result<(), Violation> {
        let at = std::time::Duration::from_millis(now_ms);
        self.samples += 1;
        for (id, node) in registry.all() {
            let m = node.control.raft().metrics().borrow().clone();
            // A node's vote never goes backwards, across restarts too (it is durable before
            // it is granted).
            let vote = (m.vote.leader_id.term, m.vote.leader_id.node_id);
            match self.votes.get(&id) {
                Some(&(before, when)) if vote < before => {
                    return Err(Violation {
                        invariant: "vote-durable",
                        at_ms: now_ms,
                        detail: format!(
                            "node {id} (incarnation {}) has vote term {} for node {}, but had vote term {} for node {} at {when} ms: a vote was lost",
                            node.incarnation, vote.0, vote.1, before.0, before.1
                        ),
                    });
                }
                Some(&(before, _)) if vote == before => {}
                _ => {
                    self.votes.insert(id, (vote, now_ms));
                }
            }
            if m.state == ServerState::Leader {
                // openraft 0.9 (without `single-term-leader`) orders leaders by (term, node
                // id), so a term may have several leaders — but a quorum that granted (t, a)
                // refuses (t, b < a) from then on: in one term, leaders appear in increasing
                // node-id order. A leader first seen after a higher one of the same term
                // (seen at an earlier sample) was elected by a vote that was lost.
                let term = m.current_term;
                let first_seen = self
                    .leaders
                    .entry(term)
                    .or_default()
                    .insert(id, self.samples)
                    .is_none();
                if first_seen {
                    let earlier_higher = self.leaders.get(&term).and_then(|seen| {
                        seen.iter()
                            .find(|(other, sample)| **other > id && **sample < self.samples)
                            .map(|(other, _)| *other)
                    });
                    if let Some(other) = earlier_higher {
                        return Err(Violation {
                            invariant: "election-safety",
                            at_ms: now_ms,
                            detail: format!(
                                "node {id} became leader of term {term} after node {other} led it: a voter granted both (t, {other}) and then (t, {id})"
                            ),
                        });
                    }
                    trace.record(at, &format!("n{id}"), format!("leads term {term}"));
                }
                // openraft restores a leader whose vote is committed as leader of the same
                // term after a restart: worth a line when reading a trace.
                if self.leading.insert((id, node.incarnation, term)) && !first_seen {
                    trace.record(
                        at,
                        &format!("n{id}"),
                        format!(
                            "leads term {term} again after a restart (incarnation {})",
                            node.incarnation
                        ),
                    );
                }
            }
            let applied = m.last_applied.as_ref().map(|l| l.index);
            let sample = (node.incarnation, applied);
            let quiet = self.previous.insert(id, sample) == Some(sample);
            let Some(index) = applied else { continue };
            if !quiet || !self.digested.insert((id, node.incarnation, index)) {
                continue;
            }
            let placement = &mut self.placement;
            let (digest, placed) = node.control.read_applied(|s| {
                (
                    state_digest(s),
                    placement.observe(id, node.incarnation, s.placement(), now_ms),
                )
            });
            placed?;
            self.digests_taken += 1;
            trace.record(
                at,
                &format!("n{id}"),
                format!("applied {index} state {digest}"),
            );
            match self.digests.get(&index) {
                Some((first, other, when)) if *first != digest => {
                    return Err(Violation {
                        invariant: "state-machines-agree",
                        at_ms: now_ms,
                        detail: format!(
                            "at applied index {index}, node {id} has state {digest} but node {other} had state {first} (at {when} ms): a committed entry changed or was lost"
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    self.digests.insert(index, (digest, id, now_ms));
                }
            }
        }
        Ok(())
    }

    /// Leaders seen (term, node), counted once each.
    pub fn terms_led(&self) -> usize {
        self.leaders.values().map(BTreeMap::len).sum()
    }
}

/// Linearizability of reads against writes, by a visibility oracle (tenants are only ever
/// created, so a read's result is a set that must grow with real time):
/// - a read sees every write acknowledged before the read was invoked;
/// - a read sees no write invoked after the read completed, and no tenant nobody created;
/// - a read sees everything a read that completed before it was invoked saw;
/// - a write `apply` rejected is never seen.
pub fn check_history(records: &[OpRecord], end_ms: u64) -> Result<(), Violation> {
    let violation = |invariant, detail| Violation {
        invariant,
        at_ms: end_ms,
        detail,
    };
    // tenant → (invoked, whether rejected by apply)
    let mut writes: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
    for r in records {
        if let Some(t) = r.tenant() {
            let rejected = matches!(r.op, Op::CreateInvalid { .. });
            writes.insert(t, (r.invoked_ms, rejected));
        }
    }
    let mut acked: Vec<(u64, &str)> = records
        .iter()
        .filter_map(|r| r.acked_at().zip(r.tenant()))
        .collect();
    acked.sort();
    let mut reads: Vec<(u64, u64, &BTreeSet<String>, &OpRecord)> = records
        .iter()
        .filter_map(|r| match &r.completed {
            Some((done, OpResult::Read(seen))) => Some((r.invoked_ms, *done, seen, r)),
            _ => None,
        })
        .collect();
    reads.sort_by_key(|(invoked, done, _, r)| (*invoked, *done, r.admin));
    let mut by_completion: Vec<(u64, &BTreeSet<String>, &OpRecord)> = reads
        .iter()
        .map(|(_, done, seen, r)| (*done, *seen, *r))
        .collect();
    by_completion.sort_by_key(|(done, _, r)| (*done, r.invoked_ms, r.admin));

    let mut must_see: BTreeSet<&str> = BTreeSet::new();
    let mut next_ack = 0;
    let mut seen_before: BTreeMap<&str, &OpRecord> = BTreeMap::new();
    let mut next_read = 0;
    for (invoked, done, seen, read) in &reads {
        while next_ack < acked.len() && acked[next_ack].0 < *invoked {
            must_see.insert(acked[next_ack].1);
            next_ack += 1;
        }
        while next_read < by_completion.len() && by_completion[next_read].0 < *invoked {
            let (_, earlier_seen, earlier) = by_completion[next_read];
            for t in earlier_seen {
                seen_before.entry(t.as_str()).or_insert(earlier);
            }
            next_read += 1;
        }
        let describe = |r: &OpRecord| {
            format!(
                "read by admin {} on node {} [{} ms, {} ms]",
                r.admin,
                r.node,
                r.invoked_ms,
                r.completed.as_ref().map(|c| c.0).unwrap_or(0)
            )
        };
        if let Some(missing) = must_see.iter().find(|t| !seen.contains(**t)) {
            return Err(violation(
                "linearizable-read",
                format!(
                    "{} did not see tenant {missing}, whose creation was acknowledged before the read began (stale read)",
                    describe(read)
                ),
            ));
        }
        if let Some((missing, earlier)) = seen_before.iter().find(|(t, _)| !seen.contains(**t)) {
            return Err(violation(
                "monotonic-read",
                format!(
                    "{} did not see tenant {missing}, which the earlier {} already saw",
                    describe(read),
                    describe(earlier)
                ),
            ));
        }
        for t in *seen {
            match writes.get(t.as_str()) {
                None => {
                    return Err(violation(
                        "no-phantom-write",
                        format!("{} saw tenant {t}, which no one created", describe(read)),
                    ));
                }
                Some((_, true)) => {
                    return Err(violation(
                        "rejected-write-invisible",
                        format!(
                            "{} saw tenant {t}, whose creation apply must reject",
                            describe(read)
                        ),
                    ));
                }
                Some((write_invoked, false)) if *write_invoked > *done => {
                    return Err(violation(
                        "linearizable-read",
                        format!(
                            "{} saw tenant {t}, whose creation was invoked at {write_invoked} ms, after the read ended",
                            describe(read)
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// The converged cluster: every node holds every acknowledged tenant, no rejected or
/// phantom tenant, and all nodes are in the same state.
pub fn check_final(
    records: &[OpRecord],
    states: &BTreeMap<NodeId, (Option<u64>, BTreeSet<String>, String)>,
    end_ms: u64,
) -> Result<(), Violation> {
    let violation = |invariant, detail| Violation {
        invariant,
        at_ms: end_ms,
        detail,
    };
    let created: BTreeMap<&str, bool> = records
        .iter()
        .filter_map(|r| {
            r.tenant()
                .map(|t| (t, matches!(r.op, Op::CreateInvalid { .. })))
        })
        .collect();
    for r in records {
        let (Some(at), Some(t)) = (r.acked_at(), r.tenant()) else {
            continue;
        };
        for (id, (_, tenants, _)) in states {
            if !tenants.contains(t) {
                return Err(violation(
                    "no-acknowledged-write-lost",
                    format!(
                        "tenant {t} (created by admin {} through node {}, acknowledged at {at} ms) is missing on node {id}",
                        r.admin, r.node
                    ),
                ));
            }
        }
    }
    for (id, (_, tenants, _)) in states {
        for t in tenants {
            match created.get(t.as_str()) {
                None => {
                    return Err(violation(
                        "no-phantom-write",
                        format!("node {id} holds tenant {t}, which no one created"),
                    ));
                }
                Some(true) => {
                    return Err(violation(
                        "rejected-write-invisible",
                        format!("node {id} holds tenant {t}, whose creation apply must reject"),
                    ));
                }
                Some(false) => {}
            }
        }
    }
    let mut distinct = states
        .iter()
        .map(|(id, (index, _, digest))| (index, digest, id));
    if let Some((index, digest, first)) = distinct.next() {
        for (other_index, other_digest, id) in distinct {
            if (other_index, other_digest) != (index, digest) {
                return Err(violation(
                    "state-machines-agree",
                    format!(
                        "after convergence node {first} is at index {index:?} state {digest} but node {id} at index {other_index:?} state {other_digest}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Requests may arrive at Notion closer together than their permits were granted by up to
/// the network's jitter (a connect and a request, each 1-20 ms on turmoil's links); the
/// bound allows for this much.
pub const NETWORK_SLACK_MS: u64 = 100;
/// Requests arriving this soon after a 429/529 left Notion may have been sent before Quire
/// read it (the answer's trip back, a request already on its way).
pub const IN_FLIGHT_GRACE_MS: u64 = 150;

/// Most requests a token bucket of `rps`/`burst` lets through in any window of `window_ms`
/// (inclusive ends): `burst + rps * window`, the window widened by [`NETWORK_SLACK_MS`].
pub fn budget_bound(rps: u32, burst: u32, window_ms: u64) -> u64 {
    u64::from(burst) + u64::from(rps) * (window_ms + NETWORK_SLACK_MS) / 1000
}

/// The first window over the token-bucket bound in `times` (sorted, ms): `(i, j)` such that
/// the `j - i + 1` requests from `times[i]` to `times[j]` exceed
/// [`budget_bound`]`(rps, burst, times[j] - times[i])`, or `None`. Every window is tried, of
/// every length, in one pass: with `g(k) = 1000 k - rps t_k`, the window `(i, j)` is over the
/// bound exactly when `g(j) - g(i) + 1000 > 1000 burst + rps slack`, so for each `j` it is
/// enough to look at the smallest `g(i)` so far.
pub fn over_budget(times: &[u64], rps: u32, burst: u32) -> Option<(usize, usize)> {
    let g = |k: usize| 1000 * k as i128 - i128::from(rps) * i128::from(times[k]);
    let limit = 1000 * i128::from(burst) + i128::from(rps) * i128::from(NETWORK_SLACK_MS);
    let mut lowest = (i128::MAX, 0);
    for j in 0..times.len() {
        if g(j) < lowest.0 {
            lowest = (g(j), j);
        }
        if g(j) - lowest.0 + 1000 > limit {
            return Some((lowest.1, j));
        }
    }
    None
}

/// What Notion received, per integration, across the whole cluster: in every window, of
/// every length, at most [`budget_bound`] requests — `budget-respected-during-handoff` when
/// the requests of the window over the bound came from more than one node (the
/// integration's shard moved between them), `notion-budget` when one node sent them all;
/// after a 429/529 with `Retry-After`, no request before it elapsed, beyond
/// [`IN_FLIGHT_GRACE_MS`] (`notion-retry-after`). `forgotten_pause(paused, early)` says
/// whether the pause answered to `paused` did not reach the sender of `early` (another node
/// sent it after a handoff, or its node restarted in between): a pause is not carried across
/// a restart or a handoff, so such a request is counted apart, not as a violation.
pub fn check_notion(
    events: &[NotionEvent],
    budgets: &[(u32, u32)],
    forgotten_pause: impl Fn(&NotionEvent, &NotionEvent) -> bool,
) -> Result<u64, Violation> {
    let mut forgotten = 0;
    for (integration, (name, _)) in INTEGRATIONS.iter().enumerate() {
        let Some(&(rps, burst)) = budgets.get(integration) else {
            continue;
        };
        let mut mine: Vec<&NotionEvent> = events
            .iter()
            .filter(|e| e.integration == integration)
            .collect();
        mine.sort_by_key(|e| e.at_ms);
        let times: Vec<u64> = mine.iter().map(|e| e.at_ms).collect();
        if let Some((i, j)) = over_budget(&times, rps, burst) {
            let (start, end) = (times[i], times[j]);
            let window = end - start;
            let senders: BTreeSet<NodeId> = mine[i..=j].iter().filter_map(|e| e.node).collect();
            let names: Vec<String> = senders.iter().map(|n| format!("n{n}")).collect();
            return Err(Violation {
                invariant: if senders.len() > 1 {
                    "budget-respected-during-handoff"
                } else {
                    "notion-budget"
                },
                at_ms: end,
                detail: format!(
                    "integration {name} (budget {rps}/s, burst {burst}): Notion received {} requests in the {window} ms from {start} ms to {end} ms, sent by {}, above the token bucket's bound of {}",
                    j - i + 1,
                    if names.is_empty() {
                        "unknown nodes".to_string()
                    } else {
                        names.join(" ")
                    },
                    budget_bound(rps, burst, window)
                ),
            });
        }
        for paused in mine.iter().filter(|e| matches!(e.status, 429 | 529)) {
            let Some(retry_after_s) = paused.retry_after_s else {
                continue;
            };
            let from = paused.at_ms + IN_FLIGHT_GRACE_MS;
            let until = paused.at_ms + retry_after_s * 1000;
            for early in mine.iter().filter(|e| e.at_ms > from && e.at_ms < until) {
                if forgotten_pause(paused, early) {
                    forgotten += 1;
                    continue;
                }
                return Err(Violation {
                    invariant: "notion-retry-after",
                    at_ms: early.at_ms,
                    detail: format!(
                        "integration {name}: Notion answered {} with Retry-After {retry_after_s} s at {} ms, and received another request at {} ms",
                        paused.status, paused.at_ms, early.at_ms
                    ),
                });
            }
        }
    }
    Ok(forgotten)
}

/// One request an owner let through its fence (right before it goes to Notion): who, for
/// which integration, under which shard and epoch, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// Simulated time, ms.
    pub at_ms: u64,
    /// The sending node.
    pub node: NodeId,
    /// The integration (`tenant/integration`).
    pub integration: String,
    /// The shard it was sent from.
    pub shard: String,
    /// The shard's epoch the sender owned it at.
    pub epoch: u64,
}

/// The requests let through the owners' fences, checked as they pass
/// ([`SendOrder`]; fences pass in simulated-time order, since the simulation runs on one
/// thread): its memory is one entry per integration and shard, whatever the run's length.
#[derive(Clone, Default)]
pub struct SendLog(Arc<Mutex<SendLogInner>>);

#[derive(Default)]
struct SendLogInner {
    order: SendOrder,
    sends: u64,
    violation: Option<Violation>,
}

impl SendLog {
    /// Records one and checks it against those before.
    pub fn record(&self, send: Send) {
        let mut inner = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        inner.sends += 1;
        if inner.violation.is_none()
            && let Err(v) = inner.order.observe(&send)
        {
            inner.violation = Some(v);
        }
    }

    /// Requests recorded so far.
    pub fn len(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).sends
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `senders-in-epoch-order` violation among the requests recorded, if any.
    pub fn violation(&self) -> Option<Violation> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .violation
            .clone()
    }
}

/// The owners of an integration's shard send in epoch order (`senders-in-epoch-order`): no
/// request leaves under an epoch after another node's first request under a later epoch of
/// the same shard. This is the lease argument itself (the old owner stops by `c + S`, the
/// new one starts at `s + S >= c + S`), checked on the time each request passed its fence
/// rather than on Notion's budget, so it fails on any overlap, not only on one that a
/// bucket's burst cannot absorb. Requests at one epoch (would-be owners of a shard without
/// owner, an owner restarting) are not ordered by it.
///
/// Requests are seen in time order; kept per integration and shard: the latest epoch sent
/// under so far, by which node, and its first request under it.
#[derive(Debug, Default)]
pub struct SendOrder {
    latest: BTreeMap<(String, String), (u64, NodeId, u64)>,
}

impl SendOrder {
    /// Checks `s`, which passed its fence no earlier than every request seen before it.
    pub fn observe(&mut self, s: &Send) -> Result<(), Violation> {
        let key = (s.integration.clone(), s.shard.clone());
        match self.latest.get(&key) {
            Some(&(epoch, node, since)) if s.epoch < epoch && s.at_ms > since => Err(Violation {
                invariant: "senders-in-epoch-order",
                at_ms: s.at_ms,
                detail: format!(
                    "integration {}: n{} sent from shard {} under epoch {} at {} ms, after n{node} had sent under epoch {epoch} from {since} ms",
                    s.integration, s.node, s.shard, s.epoch, s.at_ms
                ),
            }),
            Some(&(epoch, _, _)) if s.epoch <= epoch => Ok(()),
            _ => {
                self.latest.insert(key, (s.epoch, s.node, s.at_ms));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(admin: u32, tenant: &str, invoked: u64, done: u64, ok: bool) -> OpRecord {
        OpRecord {
            admin,
            node: 1,
            op: Op::Create {
                tenant: tenant.into(),
            },
            invoked_ms: invoked,
            completed: Some((
                done,
                if ok {
                    OpResult::Written
                } else {
                    OpResult::Failed {
                        why: "timeout".into(),
                    }
                },
            )),
        }
    }

    fn read(admin: u32, seen: &[&str], invoked: u64, done: u64) -> OpRecord {
        OpRecord {
            admin,
            node: 2,
            op: Op::Read,
            invoked_ms: invoked,
            completed: Some((
                done,
                OpResult::Read(seen.iter().map(|s| s.to_string()).collect()),
            )),
        }
    }

    #[test]
    fn a_linearizable_history_passes() {
        let h = vec![
            create(0, "a", 0, 10, true),
            read(1, &["a"], 11, 20),
            create(0, "b", 15, 30, false),
            // "b" is indeterminate: a read may or may not see it, but once seen, it stays.
            read(1, &["a", "b"], 25, 40),
            read(2, &["a", "b"], 41, 50),
        ];
        check_history(&h, 100).unwrap();
    }

    #[test]
    fn a_stale_read_is_caught() {
        let h = vec![create(0, "a", 0, 10, true), read(1, &[], 11, 20)];
        let v = check_history(&h, 100).unwrap_err();
        assert_eq!(v.invariant, "linearizable-read");
    }

    #[test]
    fn a_read_going_back_in_time_is_caught() {
        let h = vec![
            create(0, "a", 0, 100, false),
            read(1, &["a"], 10, 20),
            read(2, &[], 30, 40),
        ];
        assert_eq!(
            check_history(&h, 100).unwrap_err().invariant,
            "monotonic-read"
        );
    }

    #[test]
    fn a_read_of_the_future_or_a_phantom_is_caught() {
        let h = vec![read(1, &["a"], 0, 5), create(0, "a", 10, 20, true)];
        assert_eq!(
            check_history(&h, 100).unwrap_err().invariant,
            "linearizable-read"
        );
        let h = vec![read(1, &["zz"], 0, 5)];
        assert_eq!(
            check_history(&h, 100).unwrap_err().invariant,
            "no-phantom-write"
        );
    }

    #[test]
    fn a_lost_write_is_caught_at_the_end() {
        let h = vec![create(0, "a", 0, 10, true)];
        let mut states = BTreeMap::new();
        states.insert(
            1,
            (Some(5), BTreeSet::from(["a".to_string()]), "x".to_string()),
        );
        states.insert(2, (Some(5), BTreeSet::new(), "x".to_string()));
        assert_eq!(
            check_final(&h, &states, 100).unwrap_err().invariant,
            "no-acknowledged-write-lost"
        );
        states.insert(
            2,
            (Some(5), BTreeSet::from(["a".to_string()]), "y".to_string()),
        );
        assert_eq!(
            check_final(&h, &states, 100).unwrap_err().invariant,
            "state-machines-agree"
        );
    }

    fn notion(at: &[u64]) -> Vec<NotionEvent> {
        at.iter()
            .map(|&at_ms| NotionEvent {
                at_ms,
                integration: 0,
                status: 200,
                retry_after_s: None,
                node: Some(1),
            })
            .collect()
    }

    #[test]
    fn the_budget_checker_allows_a_token_bucket_and_catches_a_second_burst() {
        let budgets = [(3, 5), (3, 5)];
        // A burst of 5, then 3/s: exactly what the bucket allows.
        // (permits every 1/3 s, at whole ms).
        let mut ok: Vec<u64> = vec![0, 0, 0, 0, 0];
        ok.extend((1..=30u64).map(|k| (k * 1000).div_ceil(3)));
        assert_eq!(check_notion(&notion(&ok), &budgets, |_, _| false), Ok(0));
        // A burst, 1 s at 3/s, then a second burst right away (a node restarted with a
        // limiter that forgot what its previous incarnation sent).
        let mut bad: Vec<u64> = vec![0, 0, 0, 0, 0, 334, 667, 1_000];
        bad.extend([1_100, 1_100, 1_100, 1_100, 1_100]);
        let v = check_notion(&notion(&bad), &budgets, |_, _| false).unwrap_err();
        assert_eq!(v.invariant, "notion-budget");
        assert!(v.detail.contains("alpha") && v.detail.contains("n1"), "{v}");
        assert_eq!(budget_bound(3, 5, 1_000), 8);
        assert_eq!(budget_bound(3, 5, 10_000), 35);
    }

    #[test]
    fn every_window_length_is_checked_against_the_exact_bound() {
        // 7 requests in 300 ms: within the 1 s bound (8) but over the 300 ms one
        // (5 + 3 x 0.4 = 6).
        let times = [10_000, 10_050, 10_100, 10_150, 10_200, 10_250, 10_300];
        assert_eq!(over_budget(&times, 3, 5), Some((0, 6)));
        assert_eq!(over_budget(&times[..6], 3, 5), None);
        // The same 7 spread over 700 ms fit (5 + 3 x 0.8 = 7).
        let spread = [0, 100, 200, 300, 400, 500, 700];
        assert_eq!(over_budget(&spread, 3, 5), None);
        // One pass finds a window that starts after a long quiet time.
        let mut late: Vec<u64> = (0..20u64).map(|k| k * 400).collect();
        late.extend([20_000; 9]);
        assert_eq!(over_budget(&late, 3, 5), Some((20, 25)));
        // Brute force agrees on seeded sequences.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let mut t = 0;
            let times: Vec<u64> = (0..rng.random_range(1..40))
                .map(|_| {
                    t += rng.random_range(0..400);
                    t
                })
                .collect();
            let brute = (0..times.len()).any(|i| {
                (i..times.len())
                    .any(|j| (j - i + 1) as u64 > budget_bound(3, 5, times[j] - times[i]))
            });
            assert_eq!(over_budget(&times, 3, 5).is_some(), brute, "{times:?}");
        }
    }

    #[test]
    fn a_budget_overspent_across_a_handoff_names_the_handoff_invariant() {
        let budgets = [(3, 5), (3, 5)];
        // Node 1 spends the burst; node 2, the shard's new owner, spends one more right
        // after: each node kept its own bucket, the integration got two.
        let mut events = notion(&[0, 0, 0, 0, 0, 50, 50, 50, 50, 50]);
        for e in &mut events[5..] {
            e.node = Some(2);
        }
        let v = check_notion(&events, &budgets, |_, _| false).unwrap_err();
        assert_eq!(v.invariant, "budget-respected-during-handoff");
        assert!(v.detail.contains("n1 n2"), "{v}");
        // The same requests spread out (the new owner held off) are within the budget.
        for (k, e) in events[5..].iter_mut().enumerate() {
            e.at_ms = 2_000 + 334 * k as u64;
        }
        assert_eq!(check_notion(&events, &budgets, |_, _| false), Ok(0));
    }

    #[test]
    fn the_retry_after_checker_allows_in_flight_requests_and_catches_early_ones() {
        let budgets = [(3, 5), (3, 5)];
        let mut events = notion(&[1_000, 1_100, 3_000]);
        events[0].status = 429;
        events[0].retry_after_s = Some(2);
        // 1 100 is within the in-flight grace; 3 000 is after Retry-After.
        assert_eq!(check_notion(&events, &budgets, |_, _| false), Ok(0));
        events[2].at_ms = 2_500;
        let v = check_notion(&events, &budgets, |_, _| false).unwrap_err();
        assert_eq!(v.invariant, "notion-retry-after");
        // A pause that did not reach the early request's sender is counted apart.
        assert_eq!(check_notion(&events, &budgets, |_, _| true), Ok(1));
    }

    fn placement() -> PlacementState {
        let mut p = PlacementState::default();
        p.nodes.insert(1, crate::placement::labels("eu"));
        p.nodes.insert(2, crate::placement::labels("eu"));
        p.nodes.insert(3, crate::placement::labels("us"));
        p
    }

    fn shard(group: &str) -> ShardId {
        format!("{group}#7").parse().unwrap()
    }

    fn own(p: &mut PlacementState, s: &ShardId, node: Option<NodeId>, epoch: u64) {
        p.shards
            .insert(s.clone(), quire_raft::placement::ShardOwner { node, epoch });
    }

    #[test]
    fn a_shard_epoch_naming_two_owners_is_caught_across_nodes() {
        let s = shard("*");
        let mut watch = PlacementWatch::default();
        let mut a = placement();
        own(&mut a, &s, Some(1), 1);
        watch.observe(1, 1, &a, 10).unwrap();
        // The same state on another node, and the next epoch: fine.
        watch.observe(2, 1, &a, 11).unwrap();
        own(&mut a, &s, Some(2), 2);
        watch.observe(1, 1, &a, 12).unwrap();
        // A release is an owner too: epoch 3 with no owner, then epoch 3 on node 3.
        own(&mut a, &s, None, 3);
        watch.observe(1, 1, &a, 13).unwrap();
        let mut b = placement();
        own(&mut b, &s, Some(3), 3);
        let v = watch.observe(3, 1, &b, 14).unwrap_err();
        assert_eq!(v.invariant, "one-owner-per-shard-epoch");
        assert!(v.detail.contains("epoch 3"), "{v}");
        assert_eq!(watch.epochs_seen(), 3);
    }

    #[test]
    fn an_epoch_going_down_within_an_incarnation_is_caught_but_not_across_a_restart() {
        let s = shard("*");
        let mut watch = PlacementWatch::default();
        let mut p = placement();
        own(&mut p, &s, Some(1), 1);
        let mut later = p.clone();
        own(&mut later, &s, Some(2), 2);
        watch.observe(1, 1, &later, 10).unwrap();
        // Incarnation 2 replays its log from an older state: allowed.
        watch.observe(1, 2, &p, 20).unwrap();
        let v = watch.observe(1, 1, &p, 21).unwrap_err();
        assert_eq!(v.invariant, "one-owner-per-shard-epoch");
        assert!(v.detail.contains("went down"), "{v}");
    }

    #[test]
    fn an_owner_outside_the_residency_is_caught() {
        let eu = shard("eu");
        let mut p = placement();
        own(&mut p, &eu, Some(2), 1);
        PlacementWatch::default().observe(1, 1, &p, 5).unwrap();
        own(&mut p, &eu, Some(3), 2);
        let v = PlacementWatch::default().observe(1, 1, &p, 6).unwrap_err();
        assert_eq!(v.invariant, "residency-respected");
        assert!(v.detail.contains("region us"), "{v}");
        // An owner without labels cannot be checked: caught too.
        own(&mut p, &eu, Some(9), 3);
        let v = PlacementWatch::default().observe(1, 1, &p, 7).unwrap_err();
        assert_eq!(v.invariant, "residency-respected");
    }

    #[test]
    fn a_drain_is_complete_unless_a_movable_shard_stays_on_the_node() {
        let any = shard("*");
        let us = shard("us");
        let mut p = placement();
        own(&mut p, &any, Some(2), 1);
        own(&mut p, &us, Some(3), 1);
        let live: BTreeSet<NodeId> = [1, 2, 3].into();
        check_drains(&p, &live, 0).unwrap();
        // Node 3 drained: its us shard has nowhere else to go, so the drain is done.
        p.draining.insert(3);
        check_drains(&p, &live, 0).unwrap();
        // Node 2 drained: its shard could go to node 1 (eu) or node 3 (not draining now).
        p.draining.clear();
        p.draining.insert(2);
        let v = check_drains(&p, &live, 0).unwrap_err();
        assert_eq!(v.invariant, "drain-completes");
        assert!(v.detail.contains("*#7"), "{v}");
        // ... unless no other allowed node is live.
        check_drains(&p, &[2].into(), 0).unwrap();
        // Moved off: done.
        own(&mut p, &any, Some(1), 2);
        check_drains(&p, &live, 0).unwrap();
    }

    /// `senders-in-epoch-order` over `sends`, given in time order.
    fn check_senders(sends: &[Send]) -> Result<(), Violation> {
        let mut order = SendOrder::default();
        sends.iter().try_for_each(|s| order.observe(s))
    }

    fn send(at_ms: u64, node: NodeId, epoch: u64) -> Send {
        Send {
            at_ms,
            node,
            integration: "acme/notion".into(),
            shard: "*#3".into(),
            epoch,
        }
    }

    #[test]
    fn an_old_owner_sending_after_the_new_owner_began_is_caught() {
        // n1 at epoch 1 until 1000 ms, n2 at epoch 2 from 1000 ms: in order.
        let ok = [
            send(0, 1, 1),
            send(900, 1, 1),
            send(1_000, 2, 2),
            send(1_000, 1, 1),
        ];
        assert_eq!(check_senders(&ok), Ok(()));
        // n1 still sends at 1200 ms, after n2's first at 1000 ms.
        let late = [send(0, 1, 1), send(1_000, 2, 2), send(1_200, 1, 1)];
        let v = check_senders(&late).unwrap_err();
        assert_eq!(v.invariant, "senders-in-epoch-order");
        assert_eq!(v.at_ms, 1_200);
        assert!(
            v.detail.contains("n1 sent from shard *#3 under epoch 1"),
            "{v}"
        );
        // Back to n1 at a later epoch; one epoch's senders are not ordered among themselves;
        // other shards and integrations are other streams.
        let mut fine = vec![
            send(0, 1, 1),
            send(1_000, 2, 2),
            send(3_000, 1, 3),
            send(3_000, 2, 2),
        ];
        fine.push(send(5_000, 3, 3));
        fine.push(Send {
            shard: "eu#3".into(),
            ..send(6_000, 2, 1)
        });
        assert_eq!(check_senders(&fine), Ok(()));
    }

    #[test]
    fn the_log_checks_as_requests_pass_and_keeps_the_first_violation() {
        let log = SendLog::default();
        assert!(log.is_empty());
        for s in [send(0, 1, 1), send(1_000, 2, 2), send(1_000, 1, 1)] {
            log.record(s);
        }
        assert_eq!(log.violation(), None);
        log.record(send(1_200, 1, 1));
        log.record(send(1_300, 3, 1));
        let v = log.violation().expect("n1 sent late");
        assert_eq!((v.at_ms, log.len()), (1_200, 5));
        assert!(v.detail.contains("n1 sent"), "{v}");
    }
}
