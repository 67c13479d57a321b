//! Who sends an integration's Notion requests, and from when: the pure rules behind
//! `node/src/forward.rs` (whose module doc states the lease argument), kept here so the node
//! and the simulator decide alike from an applied [`PlacementState`].
//!
//! - [`effective_owner`]: a shard's owner and epoch, or for a shard without owner its
//!   would-be owner ([`would_be_owner`]: weighted rendezvous over the labelled, non-draining,
//!   non-stopping nodes its residency allows — stopping ones if no other is left — liveness
//!   ignored) at the shard's epoch.
//! - [`HoldOff`]: when a node that owns a shard may first send for it — S (the freshness
//!   bound) after it first saw itself owner at that epoch, so the previous owner, fenced
//!   within S of the move's commit, has stopped. Generic over the clock's instant type so the
//!   node (tokio's `Instant`) and tests share it.
//! - [`serves_tenant`]: whether a shard is still where a tenant's integrations go. A shard
//!   belongs to one residency, so when a tenant's residency changes its integrations move to
//!   shards of the new one (the same index) without any shard changing owner: the old shard's
//!   owner is fenced by this check, and the new shard's owner holds off S for that tenant
//!   from when it first saw the change ([`HoldOff`] again), so the two never send for one
//!   integration in the same window.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Add;
use std::time::Duration;

use crate::ids::TenantId;
use crate::placement::{NodeLabels, PlacementState, Residency, ShardId, candidates, rendezvous};
use crate::types::NodeId;

/// Hold-off records kept before those older than the bound are forgotten.
pub const MAX_HOLD_OFF_RECORDS: usize = 4_096;

/// The node a shard without owner goes to: weighted rendezvous over the labelled,
/// non-draining, non-stopping nodes its residency allows (whatever owner the map names), or
/// the non-draining ones if only stopping nodes are left.
pub fn would_be_owner(p: &PlacementState, shard: &ShardId) -> Option<NodeId> {
    let mut cands = candidates(shard, &p.nodes, |n| !p.is_leaving(n));
    if cands.is_empty() {
        // A stopping node that is the last one the residency allows keeps serving it.
        cands = candidates(shard, &p.nodes, |n| !p.is_draining(n));
    }
    rendezvous(shard, &cands, &p.nodes)
}

/// A shard's owner and epoch, or the would-be owner of one without. Before any node has
/// recorded its labels (the first moments of a new cluster), node `me` serves its own calls.
/// `None`: the shard has no owner and its residency allows no labelled, non-draining node.
pub fn effective_owner(p: &PlacementState, shard: &ShardId, me: NodeId) -> Option<(NodeId, u64)> {
    let o = p.owner(shard);
    match o.node {
        Some(n) => Some((n, o.epoch)),
        None if p.nodes.is_empty() => Some((me, o.epoch)),
        None => would_be_owner(p, shard).map(|n| (n, o.epoch)),
    }
}

/// Whether `shard` is where `tenant`'s integrations go under `p`: its residency is the
/// tenant's (a tenant without a policy lives in the shards of [`Residency::default`]).
pub fn serves_tenant(p: &PlacementState, tenant: &TenantId, shard: &ShardId) -> bool {
    match p.residency.get(tenant) {
        Some(r) => *r == shard.residency,
        None => shard.residency == Residency::default(),
    }
}

/// Whether node `me` sends `tenant`'s integrations from `shard` at `epoch` under `p`: the
/// shard's effective owner at exactly that epoch, and still the tenant's shard. What an
/// owner checks before serving and in its fence before every request.
pub fn sends_for(
    p: &PlacementState,
    shard: &ShardId,
    epoch: u64,
    tenant: &TenantId,
    me: NodeId,
) -> bool {
    effective_owner(p, shard, me) == Some((me, epoch)) && serves_tenant(p, tenant, shard)
}

/// What decides the would-be owner of shards without one.
#[derive(Debug, Clone, PartialEq, Default)]
struct Inputs {
    nodes: BTreeMap<NodeId, NodeLabels>,
    draining: BTreeSet<NodeId>,
    stopping: BTreeSet<NodeId>,
    residency: BTreeMap<TenantId, Residency>,
    residency_changes: BTreeMap<TenantId, u64>,
}

/// One node's memory of when it first saw itself the owner of each shard (see the module
/// doc). A new node (or a restarted one) starts empty, so it holds off S on every shard.
#[derive(Debug, Clone)]
pub struct HoldOff<T> {
    /// (shard, epoch) this node owns → when it first saw itself the owner.
    owned_since: BTreeMap<(ShardId, u64), T>,
    /// The would-be-owner inputs last seen, and since when.
    inputs: Option<(Inputs, T)>,
    /// Tenant → when this node first saw its residency change (added, changed or removed).
    residency_changed: BTreeMap<TenantId, T>,
}

impl<T> Default for HoldOff<T> {
    fn default() -> Self {
        Self {
            owned_since: BTreeMap::new(),
            inputs: None,
            residency_changed: BTreeMap::new(),
        }
    }
}

impl<T: Copy + Ord + Add<Duration, Output = T>> HoldOff<T> {
    /// When this node may first send for `tenant`'s integrations in `shard`, which `owner`
    /// (this node) owns at `epoch` in `p` (as [`effective_owner`] says), given that it sees
    /// `p` at `now`: S (`bound`) after it first saw itself owner of the shard at that epoch,
    /// or after it first saw the inputs that make it the would-be owner, or after it first
    /// saw the tenant's current residency, whichever is later.
    ///
    /// - A shard never assigned (epoch 0) had no owner before; only would-be owners under
    ///   older inputs may still send, and they stop within S of the inputs changing.
    /// - A released shard (epoch above 0, no owner) had an owner until the release, which
    ///   stops within S of it: held off from the release as well as from the inputs.
    /// - A shard assigned for the first time (epoch 1) to the node that was its would-be
    ///   owner under the current inputs needs no new wait: before the assignment the only
    ///   sender the current inputs allowed was this node, and senders under older inputs
    ///   stopped within S of this node first seeing the current ones; so it keeps the time it
    ///   first saw those inputs. That is the first placement of every new tenant's shards,
    ///   which would otherwise stall its calls for S.
    /// - A tenant whose residency changed sends from shards of the new residency, which may
    ///   have had the same owner for long; the owner of its old shard stops within S of the
    ///   change ([`serves_tenant`] in its fence), so the tenant's calls wait S from when this
    ///   node first saw the change. Other tenants of the shard do not wait.
    #[allow(clippy::too_many_arguments)]
    pub fn may_send_at(
        &mut self,
        p: &PlacementState,
        shard: &ShardId,
        tenant: &TenantId,
        owner: NodeId,
        epoch: u64,
        now: T,
        bound: Duration,
    ) -> T {
        let inputs_since = self.inputs_since(p, now);
        if self.owned_since.len() >= MAX_HOLD_OFF_RECORDS {
            self.owned_since.retain(|_, at| *at + bound > now);
        }
        if self.residency_changed.len() >= MAX_HOLD_OFF_RECORDS {
            self.residency_changed.retain(|_, at| *at + bound > now);
        }
        let key = (shard.clone(), epoch);
        let since = if p.owner(shard).node.is_some() {
            let was_would_be_owner =
                epoch == 1 && !p.nodes.is_empty() && would_be_owner(p, shard) == Some(owner);
            *self
                .owned_since
                .entry(key)
                .or_insert(if was_would_be_owner {
                    inputs_since
                } else {
                    now
                })
        } else if epoch == 0 {
            inputs_since
        } else {
            (*self.owned_since.entry(key).or_insert(now)).max(inputs_since)
        };
        let since = match self.residency_changed.get(tenant) {
            Some(changed) => since.max(*changed),
            None => since,
        };
        since + bound
    }

    /// When this node first saw the would-be-owner inputs `p` holds (now, if they changed).
    fn inputs_since(&mut self, p: &PlacementState, now: T) -> T {
        let same = self.inputs.as_ref().is_some_and(|(i, _)| {
            i.nodes == p.nodes
                && i.draining == p.draining
                && i.stopping == p.stopping
                && i.residency == p.residency
                && i.residency_changes == p.residency_changes
        });
        if !same {
            if let Some((old, _)) = &self.inputs {
                // Tenants whose residency `SetTenantResidency` changed (even to and fro)
                // since this node last looked, or that lost it. A tenant created with a
                // residency had no sender before, so its calls do not wait.
                let mut changed: BTreeSet<&TenantId> = BTreeSet::new();
                for (t, r) in &old.residency {
                    if p.residency.get(t) != Some(r) {
                        changed.insert(t);
                    }
                }
                for (t, n) in &p.residency_changes {
                    if old.residency_changes.get(t) != Some(n) {
                        changed.insert(t);
                    }
                }
                for t in changed {
                    self.residency_changed.insert(t.clone(), now);
                }
            }
            self.inputs = Some((
                Inputs {
                    nodes: p.nodes.clone(),
                    draining: p.draining.clone(),
                    stopping: p.stopping.clone(),
                    residency: p.residency.clone(),
                    residency_changes: p.residency_changes.clone(),
                },
                now,
            ));
        }
        self.inputs.as_ref().map_or(now, |(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{ShardOwner, shard_of};

    fn labelled(ids: &[NodeId]) -> PlacementState {
        let mut p = PlacementState::default();
        for &id in ids {
            p.nodes.insert(
                id,
                NodeLabels {
                    region: "eu".into(),
                    zone: None,
                    capacity: 100,
                },
            );
        }
        p
    }

    /// Time as milliseconds since an origin (any `Ord + Add<Duration>` type works).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Ms(u64);

    impl Add<Duration> for Ms {
        type Output = Ms;
        fn add(self, d: Duration) -> Ms {
            Ms(self.0 + d.as_millis() as u64)
        }
    }

    fn ask(h: &mut HoldOff<Ms>, p: &PlacementState, shard: &ShardId, me: NodeId, at: u64) -> u64 {
        let (owner, epoch) = effective_owner(p, shard, me).expect("an owner");
        h.may_send_at(p, shard, &tenant(), owner, epoch, Ms(at), S)
            .0
    }

    fn tenant() -> TenantId {
        TenantId::new("acme").expect("a tenant id")
    }

    const S: Duration = Duration::from_secs(1);

    fn with_owner(
        p: &PlacementState,
        shard: &ShardId,
        node: Option<NodeId>,
        epoch: u64,
    ) -> PlacementState {
        let mut q = p.clone();
        q.shards.insert(shard.clone(), ShardOwner { node, epoch });
        q
    }

    #[test]
    fn the_hold_off_covers_every_earlier_sender_and_only_those() {
        let p = labelled(&[1, 2, 3]);
        let shard = shard_of(&Residency::default(), "tenant/integration");
        let me = would_be_owner(&p, &shard).expect("a would-be owner");
        let other = *p.nodes.keys().find(|&&n| n != me).expect("another node");

        // Never assigned: held off S after the inputs were first seen, however often asked.
        let mut h = HoldOff::default();
        assert_eq!(ask(&mut h, &p, &shard, me, 0), 1_000);
        assert_eq!(ask(&mut h, &p, &shard, me, 1_500), 1_000);

        // First assigned to its would-be owner: no new wait.
        let assigned = with_owner(&p, &shard, Some(me), 1);
        assert_eq!(ask(&mut h, &assigned, &shard, me, 2_000), 1_000);

        // Assigned elsewhere first, then moved here: S after this node first saw the move.
        let mut h2 = HoldOff::default();
        ask(
            &mut h2,
            &with_owner(&p, &shard, Some(other), 1),
            &shard,
            me,
            0,
        );
        let moved = with_owner(&p, &shard, Some(me), 2);
        assert_eq!(ask(&mut h2, &moved, &shard, me, 5_000), 6_000);
        assert_eq!(ask(&mut h2, &moved, &shard, me, 5_900), 6_000);

        // The inputs changed just before the first assignment: S after they changed.
        let mut h3 = HoldOff::default();
        ask(&mut h3, &p, &shard, me, 0);
        let mut relabelled = assigned.clone();
        relabelled.nodes.get_mut(&other).expect("labelled").capacity = 50;
        assert_eq!(ask(&mut h3, &relabelled, &shard, me, 3_000), 4_000);

        // Assigned for the first time to a node that was not the would-be owner: S after.
        let mut h4 = HoldOff::default();
        ask(&mut h4, &p, &shard, me, 0);
        let elsewhere = with_owner(&p, &shard, Some(other), 1);
        assert_eq!(ask(&mut h4, &elsewhere, &shard, other, 3_000), 4_000);

        // Released after an owner: its would-be owner waits S from the release, even with
        // inputs seen long before.
        let released = with_owner(&p, &shard, None, 2);
        assert_eq!(effective_owner(&released, &shard, other), Some((me, 2)));
        assert_eq!(ask(&mut h, &released, &shard, me, 9_000), 10_000);
        assert_eq!(ask(&mut h, &released, &shard, me, 9_500), 10_000);

        // A restarted node remembers nothing: S from its first look.
        let mut fresh = HoldOff::default();
        assert_eq!(ask(&mut fresh, &moved, &shard, me, 7_000), 8_000);
    }

    #[test]
    fn a_tenant_whose_residency_changed_waits_in_its_new_shard_and_its_old_one_refuses() {
        let p = labelled(&[1, 2, 3]);
        let acme = tenant();
        let other = TenantId::new("globex").expect("a tenant id");
        let eu = Residency {
            allowed_regions: ["eu".to_string()].into_iter().collect(),
            preferred_region: None,
        };
        let key = "integration:acme/notion";
        let old_shard = shard_of(&Residency::default(), key);
        let new_shard = shard_of(&eu, key);
        assert_eq!(old_shard.index, new_shard.index);
        // Node 1 has owned the eu shard (epoch 3) for long; both tenants send from it at once.
        let owned = with_owner(&p, &new_shard, Some(1), 3);
        let mut h = HoldOff::default();
        assert_eq!(
            h.may_send_at(&owned, &new_shard, &other, 1, 3, Ms(0), S),
            Ms(1_000)
        );
        assert_eq!(
            h.may_send_at(&owned, &new_shard, &other, 1, 3, Ms(5_000), S),
            Ms(1_000)
        );
        assert!(serves_tenant(&owned, &acme, &old_shard));
        assert!(!serves_tenant(&owned, &acme, &new_shard));

        // acme's residency becomes eu: its old shard no longer serves it (the old owner's
        // fence), and node 1 holds acme's calls S from when it saw the change; globex's not.
        let mut moved = owned.clone();
        moved.residency.insert(acme.clone(), eu.clone());
        moved.residency_changes.insert(acme.clone(), 1);
        assert!(!serves_tenant(&moved, &acme, &old_shard));
        assert!(serves_tenant(&moved, &acme, &new_shard));
        assert_eq!(
            h.may_send_at(&moved, &new_shard, &acme, 1, 3, Ms(6_000), S),
            Ms(7_000)
        );
        assert_eq!(
            h.may_send_at(&moved, &new_shard, &acme, 1, 3, Ms(6_500), S),
            Ms(7_000)
        );
        assert_eq!(
            h.may_send_at(&moved, &new_shard, &other, 1, 3, Ms(6_500), S),
            Ms(1_000)
        );

        // Changed to any region and back to eu while node 1 did not look: the same residency
        // as it last saw, but the count of changes tells it that acme sent from elsewhere.
        let mut back = moved.clone();
        back.residency_changes.insert(acme.clone(), 3);
        assert_eq!(
            h.may_send_at(&back, &new_shard, &acme, 1, 3, Ms(9_000), S),
            Ms(10_000)
        );

        // A tenant created with a residency had no sender before: no wait.
        let mut created = back.clone();
        let initech = TenantId::new("initech").expect("a tenant id");
        created.residency.insert(initech.clone(), eu);
        assert_eq!(
            h.may_send_at(&created, &new_shard, &initech, 1, 3, Ms(12_000), S),
            Ms(1_000)
        );
    }

    #[test]
    fn the_effective_owner_is_the_map_s_or_the_same_would_be_owner_everywhere() {
        let mut p = labelled(&[1, 2, 3]);
        let shard = shard_of(&Residency::default(), "tenant/integration");
        let would = would_be_owner(&p, &shard).expect("a would-be owner");
        for me in 1..=3 {
            assert_eq!(effective_owner(&p, &shard, me), Some((would, 0)));
        }
        // A draining node is never the would-be owner.
        p.draining.insert(would);
        let next = would_be_owner(&p, &shard).expect("another node");
        assert_ne!(next, would);
        // The map's owner wins, whatever the would-be owner.
        let owned = with_owner(&p, &shard, Some(would), 4);
        assert_eq!(effective_owner(&owned, &shard, 2), Some((would, 4)));
        // No labels yet: each node serves its own calls.
        assert_eq!(
            effective_owner(&PlacementState::default(), &shard, 7),
            Some((7, 0))
        );
        // Labels, but none the residency allows: nowhere to go.
        let us_only = shard_of(
            &Residency {
                allowed_regions: ["us".to_string()].into_iter().collect(),
                preferred_region: None,
            },
            "tenant/integration",
        );
        assert_eq!(effective_owner(&labelled(&[1, 2]), &us_only, 1), None);
    }
}
