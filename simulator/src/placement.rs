//! Placement in the simulation: each node carries labels (its region drawn from the seed, two
//! regions over the nodes) and records them with `SetNodeLabels` when it starts, as
//! production's `node/src/placement.rs` does; the leader runs a placement round every
//! [`PLACEMENT_INTERVAL`] of simulated time with production's pure planner
//! (`quire_raft::placement::plan` over `occupied_shards` of its applied state) and proposes its
//! moves as `ApplyPlacement`, which `apply` fences by the shards' epochs. Liveness is what
//! this controller saw: when each member last answered a status request over the peer
//! transport (faults included), every member counted as seen when the node took over.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quire_node::cluster::Router;
use quire_raft::command::Command;
use quire_raft::control::WriteError;
use quire_raft::placement::{Liveness, NodeLabels, PlanConfig, occupied_shards, plan};
use quire_raft::{ApplyError, NodeId};
use quire_transport::PeerClient;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio_util::sync::CancellationToken;

use crate::bugs::Bug;
use crate::trace::{Trace, sim_now};

/// The two regions nodes are placed in.
pub const REGIONS: [&str; 2] = ["eu", "us"];
/// How often the leader runs a placement round (simulated time).
pub const PLACEMENT_INTERVAL: Duration = Duration::from_millis(1_000);
/// The planner's knobs in the simulation (runs are short: a member silent for 2 s receives
/// no shards, one silent for 5 s loses them).
pub const PLAN: PlanConfig = PlanConfig {
    max_moves_per_round: 64,
    suspect_after_ms: 2_000,
    grace_ms: 5_000,
};
/// Wait between attempts to record a node's labels.
const LABELS_RETRY: Duration = Duration::from_millis(300);

/// Each node's region in the run of `seed` with nodes `1..=nodes`: the nodes shuffled by the
/// seed and split in two non-empty groups, the first in [`REGIONS`]`[0]`.
pub fn regions(seed: u64, nodes: u64) -> BTreeMap<NodeId, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_6769_6f6e);
    let mut ids: Vec<NodeId> = (1..=nodes).collect();
    ids.shuffle(&mut rng);
    let split = rng.random_range(1..nodes.max(2)) as usize;
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let region = if i < split { REGIONS[0] } else { REGIONS[1] };
            (*id, region.to_string())
        })
        .collect()
}

/// A node's labels: its region, no zone, the default capacity.
pub fn labels(region: &str) -> NodeLabels {
    NodeLabels {
        region: region.to_string(),
        zone: None,
        capacity: quire_raft::placement::DEFAULT_CAPACITY,
    }
}

/// What one node's placement task needs.
pub struct PlacementTask {
    /// The node.
    pub id: NodeId,
    /// Its labels.
    pub labels: NodeLabels,
    /// Its router (writes go to the leader).
    pub router: Router,
    /// Its peer client (status probes).
    pub peers: PeerClient,
    /// The run's trace.
    pub trace: Trace,
    /// The planted bug, if any.
    pub bug: Option<Bug>,
}

/// Records the node's labels, then runs the controller while the node leads, until
/// `cancel`.
pub async fn run(task: PlacementTask, cancel: CancellationToken) {
    tokio::select! {
        _ = controller(task) => {}
        _ = cancel.cancelled() => {}
    }
}

async fn record_labels(task: &PlacementTask) {
    loop {
        let current = task
            .router
            .control
            .read_applied(|s| s.placement().nodes.get(&task.id).cloned());
        if current.as_ref() == Some(&task.labels) {
            return;
        }
        let cmd = Command::SetNodeLabels {
            node: task.id,
            labels: task.labels.clone(),
        };
        match task.router.write(cmd).await {
            Ok(_) => {
                task.trace.record(
                    sim_now(),
                    &format!("n{}", task.id),
                    format!("labels recorded: region {}", task.labels.region),
                );
                return;
            }
            Err(WriteError::Rejected(_)) => return,
            Err(_) => tokio::time::sleep(LABELS_RETRY).await,
        }
    }
}

async fn controller(task: PlacementTask) {
    record_labels(&task).await;
    let me = format!("n{}", task.id);
    let mut ticks = tokio::time::interval(PLACEMENT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = None;
    let mut last_seen: BTreeMap<NodeId, u64> = BTreeMap::new();
    loop {
        ticks.tick().await;
        let status = task.router.control.status();
        if !status.is_leader {
            term = None;
            continue;
        }
        let members: BTreeMap<NodeId, String> = task
            .router
            .control
            .members()
            .into_iter()
            .map(|m| (m.id, m.addr))
            .collect();
        let now_ms = sim_now().as_millis() as u64;
        if term != Some(status.term) {
            term = Some(status.term);
            last_seen = members.keys().map(|id| (*id, now_ms)).collect();
        }
        let answered = probe(&task, &members).await;
        let now_ms = sim_now().as_millis() as u64;
        last_seen.retain(|id, _| members.contains_key(id));
        for id in members.keys() {
            let seen = last_seen.entry(*id).or_insert(now_ms);
            if answered.contains(id) {
                *seen = now_ms;
            }
        }
        let liveness = Liveness {
            last_seen_ms: last_seen.clone(),
        };
        let bug = task.bug;
        let p = task.router.control.read_applied(|s| {
            let occupied = occupied_shards(s);
            if bug == Some(Bug::PlacementIgnoresDrains) {
                // PLANTED BUG (simulator only): the round plans from a map without the
                // drain marks.
                let mut map = s.placement().clone();
                map.draining.clear();
                plan(&map, &occupied, &liveness, now_ms, &PLAN)
            } else {
                plan(s.placement(), &occupied, &liveness, now_ms, &PLAN)
            }
        });
        if p.moves.is_empty() {
            continue;
        }
        let moves = p.moves.len();
        let outcome = match task
            .router
            .write(Command::ApplyPlacement { moves: p.moves })
            .await
        {
            Ok(_) => format!("placement round: {moves} moves"),
            Err(WriteError::Rejected(ApplyError::Conflict(_))) => {
                format!("placement round: {moves} moves, all stale")
            }
            Err(WriteError::Rejected(e)) => format!(
                "placement round: {moves} moves refused: {}",
                crate::node::error_kind(&e.to_string())
            ),
            Err(_) => format!("placement round: {moves} moves, outcome unknown"),
        };
        task.trace.record(sim_now(), &me, outcome);
    }
}

/// The members that answer a status request now (this node always does).
async fn probe(task: &PlacementTask, members: &BTreeMap<NodeId, String>) -> BTreeSet<NodeId> {
    let mut live = BTreeSet::from([task.id]);
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in members {
        if *id == task.id {
            continue;
        }
        let (id, addr, peers) = (*id, addr.clone(), task.peers.clone());
        asks.spawn(async move {
            let answered = tokio::time::timeout(PLACEMENT_INTERVAL, peers.status(&addr)).await;
            (id, matches!(answered, Ok(Ok(s)) if s.node_id == id))
        });
    }
    while let Some(done) = asks.join_next().await {
        if let Ok((id, true)) = done {
            live.insert(id);
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_follow_the_seed_and_both_hold_a_node() {
        for seed in 0..50 {
            for nodes in 3..=9 {
                let r = regions(seed, nodes);
                assert_eq!(r, regions(seed, nodes));
                assert_eq!(r.len() as u64, nodes);
                for region in REGIONS {
                    assert!(r.values().any(|v| v == region), "{seed} {nodes}: {r:?}");
                }
            }
        }
        assert!((0..20).any(|seed| regions(seed, 3) != regions(0, 3)));
    }
}
