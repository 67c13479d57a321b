//! The placement controller: each node records its own labels (region, zone, capacity) in
//! the replicated state when it starts; the leader, every `placement.interval_ms`, asks every
//! member for its status over the peer transport, remembers when each last answered, plans a
//! round of shard moves from the applied state (`quire_raft::placement::plan`) and proposes
//! it as `ApplyPlacement`, which the state machine fences by the shards' epochs.
//!
//! A new leader knows nothing of who was dead before it: it counts every member as seen when
//! it took over, so a member's grace period never starts before the controller could see it.
//!
//! A node asked to stop marks itself stopping (`SetNodeStopping`, see `serve.rs`) and clears
//! its mark when it starts again, after recording its labels. The leader runs a round as soon
//! as it applies a new stopping mark, and again after each round that moved shards off a
//! stopping node, instead of waiting for the next tick, so the stopping node's shards move
//! while it still serves them.
//! `GET /admin/v1/placement` and `POST /admin/v1/placement/rebalance` ([`snapshot`],
//! [`rebalance`]) probe the members once; a member that does not answer counts as suspect
//! there (its shards are held), so only the leader's controller, which remembers, moves
//! shards away from a dead node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use quire_raft::command::Command;
use quire_raft::placement::{
    Liveness, NodeHealth, Plan, PlanConfig, SHARD_COUNT, ShardId, candidates, occupied_shards, plan,
};
use quire_raft::types::NodeId;
use quire_raft::{State, WriteError};

use crate::app::App;
use crate::config::Config;

/// How long the node waits between attempts to record its labels.
const LABELS_RETRY: Duration = Duration::from_millis(500);

/// The planner's settings from the configuration.
pub fn plan_config(config: &Config) -> PlanConfig {
    PlanConfig {
        max_moves_per_round: config.placement.max_moves_per_round,
        suspect_after_ms: config.placement.suspect_after_ms,
        grace_ms: config.placement.grace_ms,
    }
}

/// Starts the node's placement task: records its labels, then runs the controller while it
/// leads. Stops with the node.
pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        tokio::select! {
            _ = run(app.clone()) => {},
            _ = app.shutdown.cancelled() => {},
        }
    });
}

async fn run(app: Arc<App>) {
    record_labels(&app).await;
    clear_stopping(&app).await;
    let interval = Duration::from_millis(app.config.placement.interval_ms);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = Seen::default();
    let mut stopping_seen = BTreeMap::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {},
            _ = stopping_changed(&app, &mut stopping_seen) => {},
        }
        let status = app.control.status();
        if !status.is_leader {
            seen.term = None;
            continue;
        }
        let now_ms = app.clock.now_ms();
        if seen.term != Some(status.term) {
            seen.take_over(status.term, &members(&app), now_ms);
        }
        let live = probe(&app).await;
        let now_ms = app.clock.now_ms();
        seen.update(&members(&app), &live, now_ms);
        match round(&app, &seen.liveness(), now_ms).await {
            Ok(r) if r.applied => tracing::info!(
                moved = r.plan.moves.len(),
                pending = r.plan.pending.len(),
                unplaceable = r.plan.unplaceable.len(),
                drain_blocked = r.plan.drain_blocked.len(),
                "placement round applied"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("placement round failed: {e}"),
        }
    }
}

/// Records this node's labels, retrying until they are committed (a node without labels
/// owns no shard).
async fn record_labels(app: &App) {
    let node = app.config.node.id;
    let labels = app.config.node_labels();
    loop {
        let current = app
            .control
            .read_applied(|s| s.placement().nodes.get(&node).cloned());
        if current.as_ref() == Some(&labels) {
            return;
        }
        match app
            .router
            .write(Command::SetNodeLabels {
                node,
                labels: labels.clone(),
            })
            .await
        {
            Ok(_) => {
                tracing::info!(
                    region = %labels.region,
                    zone = ?labels.zone,
                    capacity = labels.capacity,
                    "node labels recorded"
                );
                return;
            }
            Err(WriteError::Rejected(e)) => {
                tracing::error!("the cluster refused this node's labels: {e}");
                return;
            }
            Err(e) => {
                tracing::debug!("cannot record the node's labels yet: {e}");
                tokio::time::sleep(LABELS_RETRY).await;
            }
        }
    }
}

/// Clears this node's stopping mark (left by its previous run's stop), retrying until it is
/// committed: a node marked stopping receives no shards.
async fn clear_stopping(app: &App) {
    let node = app.config.node.id;
    loop {
        if !app
            .control
            .read_applied(|s| s.placement().is_stopping(node))
        {
            return;
        }
        match app
            .router
            .write(Command::SetNodeStopping {
                node,
                stopping: false,
            })
            .await
        {
            Ok(_) => {
                tracing::info!("stopping mark cleared: this node receives shards again");
                return;
            }
            Err(WriteError::Rejected(e)) => {
                tracing::error!("the cluster refused to clear this node's stopping mark: {e}");
                return;
            }
            Err(e) => {
                tracing::debug!("cannot clear the node's stopping mark yet: {e}");
                tokio::time::sleep(LABELS_RETRY).await;
            }
        }
    }
}

/// How often the leader's controller looks for stopping nodes between its rounds.
const STOPPING_POLL: Duration = Duration::from_millis(50);

/// Resolves when this node leads and a stopping node's count of shards it could give away
/// changed (a new mark, or a round moved some) and is above zero: time for a round now.
async fn stopping_changed(app: &App, seen: &mut BTreeMap<NodeId, usize>) {
    loop {
        tokio::time::sleep(STOPPING_POLL).await;
        if !app.control.status().is_leader {
            seen.clear();
            continue;
        }
        let now: BTreeMap<NodeId, usize> = app.control.read_applied(|s| {
            s.placement()
                .stopping
                .iter()
                .map(|n| (*n, movable_shards(s, *n)))
                .collect()
        });
        let changed = now
            .iter()
            .any(|(n, left)| *left > 0 && seen.get(n) != Some(left));
        *seen = now;
        if changed {
            return;
        }
    }
}

/// How many shards `node` owns that another labelled node, neither draining nor stopping,
/// could take (its residency allows it; liveness is not known here). A stopping node waits
/// for these to move; the others stay with it.
pub fn movable_shards(state: &State, node: NodeId) -> usize {
    let p = state.placement();
    p.shards
        .iter()
        .filter(|(shard, o)| {
            o.node == Some(node)
                && !candidates(shard, &p.nodes, |n| n != node && !p.is_leaving(n)).is_empty()
        })
        .count()
}

/// When each member last answered, as the leader's controller remembers it.
#[derive(Debug, Default)]
struct Seen {
    /// The term this node leads in (`None` while it does not lead).
    term: Option<u64>,
    last_seen_ms: BTreeMap<NodeId, u64>,
}

impl Seen {
    fn take_over(&mut self, term: u64, members: &BTreeMap<NodeId, String>, now_ms: u64) {
        self.term = Some(term);
        self.last_seen_ms = members.keys().map(|id| (*id, now_ms)).collect();
    }

    fn update(&mut self, members: &BTreeMap<NodeId, String>, live: &BTreeSet<NodeId>, now_ms: u64) {
        self.last_seen_ms.retain(|id, _| members.contains_key(id));
        for id in members.keys() {
            let seen = self.last_seen_ms.entry(*id).or_insert(now_ms);
            if live.contains(id) {
                *seen = now_ms;
            }
        }
    }

    fn liveness(&self) -> Liveness {
        Liveness {
            last_seen_ms: self.last_seen_ms.clone(),
        }
    }
}

/// The group's members and their peer addresses.
fn members(app: &App) -> BTreeMap<NodeId, String> {
    app.control
        .members()
        .into_iter()
        .map(|m| (m.id, m.addr))
        .collect()
}

/// The members that answer a status request now (this node always does).
async fn probe(app: &App) -> BTreeSet<NodeId> {
    let me = app.config.node.id;
    let mut live = BTreeSet::from([me]);
    let Some(peers) = &app.router.peers else {
        return live;
    };
    let timeout = Duration::from_millis(app.config.placement.interval_ms.max(500));
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in members(app) {
        if id == me {
            continue;
        }
        let peers = peers.clone();
        asks.spawn(async move {
            let answered = tokio::time::timeout(timeout, peers.status(&addr)).await;
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

/// A liveness for a single probe: members that answered are live, the others suspect (so
/// their shards are held, not moved, by a round run on demand).
fn probed_liveness(app: &App, live: &BTreeSet<NodeId>, now_ms: u64) -> Liveness {
    let suspect_ms = now_ms.saturating_sub(app.config.placement.suspect_after_ms + 1);
    Liveness {
        last_seen_ms: members(app)
            .into_keys()
            .map(|id| {
                (
                    id,
                    if live.contains(&id) {
                        now_ms
                    } else {
                        suspect_ms
                    },
                )
            })
            .collect(),
    }
}

/// What one round did.
#[derive(Debug)]
pub struct Round {
    /// The plan; its `moves` were proposed.
    pub plan: Plan,
    /// Whether the moves committed (`false` if every one was stale: another round won).
    pub applied: bool,
}

/// Plans one round from this node's applied state and proposes its moves.
async fn round(app: &App, liveness: &Liveness, now_ms: u64) -> Result<Round, WriteError> {
    let cfg = plan_config(&app.config);
    let p = app
        .control
        .read_applied(|s| plan(s.placement(), &occupied_shards(s), liveness, now_ms, &cfg));
    if p.moves.is_empty() {
        return Ok(Round {
            plan: p,
            applied: false,
        });
    }
    let applied = match app
        .router
        .write(Command::ApplyPlacement {
            moves: p.moves.clone(),
        })
        .await
    {
        Ok(_) => true,
        Err(WriteError::Rejected(quire_raft::ApplyError::Conflict(e))) => {
            tracing::debug!("placement round lost to another: {e}");
            false
        }
        Err(e) => return Err(e),
    };
    Ok(Round { plan: p, applied })
}

/// Runs one round now (`quire ctl placement rebalance`), with the members that answer a
/// probe as live and the others as suspect.
pub async fn rebalance(app: &App) -> Result<Round, WriteError> {
    let live = probe(app).await;
    let now_ms = app.clock.now_ms();
    let liveness = probed_liveness(app, &live, now_ms);
    round(app, &liveness, now_ms).await
}

/// How many shards `node` owns in `state`'s map.
pub fn shards_owned(state: &State, node: NodeId) -> usize {
    state
        .placement()
        .shards
        .values()
        .filter(|o| o.node == Some(node))
        .count()
}

fn shard_list(shards: &[ShardId]) -> Vec<String> {
    shards.iter().map(ToString::to_string).collect()
}

fn moves_json(moves: &[quire_raft::placement::ShardMove]) -> Vec<Value> {
    moves
        .iter()
        .map(|m| {
            json!({
                "shard": m.shard.to_string(),
                "from": m.from,
                "to": m.to,
                "expected_epoch": m.expected_epoch,
            })
        })
        .collect()
}

/// The placement as `state` holds it and as a round planned now would change it.
pub fn placement_json(
    state: &State,
    members: &BTreeMap<NodeId, String>,
    liveness: &Liveness,
    now_ms: u64,
    cfg: &PlanConfig,
) -> Value {
    let placement = state.placement();
    let occupied = occupied_shards(state);
    let p = plan(placement, &occupied, liveness, now_ms, cfg);
    let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut shards = Vec::new();
    for (shard, owner) in &placement.shards {
        if let Some(node) = owner.node {
            *per_node.entry(node).or_default() += 1;
        }
        shards.push(json!({
            "shard": shard.to_string(),
            "owner": owner.node,
            "epoch": owner.epoch,
            "occupied": occupied.contains(shard),
        }));
    }
    let ids: BTreeSet<NodeId> = members
        .keys()
        .chain(placement.nodes.keys())
        .chain(per_node.keys())
        .copied()
        .collect();
    let nodes: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let labels = placement.nodes.get(&id);
            let health = match liveness.health(id, now_ms, cfg) {
                NodeHealth::Live => "live",
                NodeHealth::Suspect => "suspect",
                NodeHealth::Dead if members.contains_key(&id) => "dead",
                NodeHealth::Dead => "not a member",
            };
            let blocked: Vec<String> = p
                .drain_blocked
                .iter()
                .filter(|s| placement.owner(s).node == Some(id))
                .map(ToString::to_string)
                .collect();
            json!({
                "id": id,
                "region": labels.map(|l| l.region.clone()),
                "zone": labels.and_then(|l| l.zone.clone()),
                "capacity": labels.map(|l| l.capacity),
                "health": health,
                "draining": placement.is_draining(id),
                "stopping": placement.is_stopping(id),
                "shards": per_node.get(&id).copied().unwrap_or(0),
                "drain_blocked": blocked,
            })
        })
        .collect();
    let unassigned = occupied
        .iter()
        .filter(|s| placement.owner(s).node.is_none())
        .count();
    json!({
        "shards_per_group": SHARD_COUNT,
        "occupied": occupied.len(),
        "unassigned": unassigned,
        "nodes": nodes,
        "shards": shards,
        "unplaceable": shard_list(&p.unplaceable),
        "held": shard_list(&p.held),
        "drain_blocked": shard_list(&p.drain_blocked),
        "pending_moves": moves_json(&p.moves.iter().chain(&p.pending).cloned().collect::<Vec<_>>()),
    })
}

/// `GET /admin/v1/placement`: the map as this node applied it, each node's shards and
/// health (from one probe), unplaceable and held shards, and the moves a round would make.
pub async fn snapshot(app: &App) -> Value {
    let live = probe(app).await;
    let now_ms = app.clock.now_ms();
    let liveness = probed_liveness(app, &live, now_ms);
    let members = members(app);
    let cfg = plan_config(&app.config);
    app.control
        .read_applied(|s| placement_json(s, &members, &liveness, now_ms, &cfg))
}

/// The answer of `POST /admin/v1/placement/rebalance`.
pub fn round_json(r: &Round) -> Value {
    json!({
        "applied": r.applied,
        "moves": moves_json(&r.plan.moves),
        "pending_moves": r.plan.pending.len(),
        "unplaceable": shard_list(&r.plan.unplaceable),
        "held": shard_list(&r.plan.held),
        "drain_blocked": shard_list(&r.plan.drain_blocked),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quire_raft::placement::{NodeLabels, Residency};
    use quire_raft::{TenantId, apply};

    const CFG: PlanConfig = PlanConfig {
        max_moves_per_round: 100,
        suspect_after_ms: 1_000,
        grace_ms: 5_000,
    };

    fn members(ids: &[NodeId]) -> BTreeMap<NodeId, String> {
        ids.iter()
            .map(|id| (*id, format!("127.0.0.1:{id}")))
            .collect()
    }

    #[test]
    fn the_controller_remembers_when_each_member_last_answered() {
        let mut seen = Seen::default();
        seen.take_over(4, &members(&[1, 2, 3]), 1_000);
        assert_eq!(seen.term, Some(4));
        // Node 3 does not answer; node 4 joined and answers.
        seen.update(&members(&[1, 2, 3, 4]), &BTreeSet::from([1, 2, 4]), 3_000);
        let l = seen.liveness();
        assert_eq!(l.last_seen_ms[&3], 1_000, "counted from the takeover");
        assert_eq!(l.last_seen_ms[&4], 3_000);
        assert_eq!(l.health(3, 3_000, &CFG), NodeHealth::Suspect);
        assert_eq!(l.health(3, 6_001, &CFG), NodeHealth::Dead);
        // Node 2 left the group: it is forgotten, and counts as dead.
        seen.update(&members(&[1, 3, 4]), &BTreeSet::from([1, 4]), 4_000);
        assert!(!seen.last_seen_ms.contains_key(&2));
        assert_eq!(seen.liveness().health(2, 4_000, &CFG), NodeHealth::Dead);
    }

    #[test]
    fn the_placement_view_shows_nodes_shards_and_what_a_round_would_do() {
        let mut s = State::new();
        for (node, region) in [(1, "eu"), (2, "us")] {
            apply(
                &mut s,
                &Command::SetNodeLabels {
                    node,
                    labels: NodeLabels {
                        region: region.into(),
                        zone: None,
                        capacity: 100,
                    },
                },
            )
            .unwrap();
        }
        apply(
            &mut s,
            &Command::CreateTenantIn {
                tenant: TenantId::new("acme").unwrap(),
                display_name: "Acme".into(),
                residency: Residency {
                    allowed_regions: ["eu".to_owned()].into(),
                    preferred_region: None,
                },
            },
        )
        .unwrap();
        apply(
            &mut s,
            &Command::CreateTenant {
                tenant: TenantId::new("free").unwrap(),
                display_name: "Free".into(),
            },
        )
        .unwrap();
        // Node 1 (the only eu node) is silent past the grace period; node 2 answers.
        let liveness = Liveness {
            last_seen_ms: [(1, 0), (2, 10_000)].into(),
        };
        let v = placement_json(&s, &members(&[1, 2]), &liveness, 10_000, &CFG);
        assert_eq!(v["occupied"], 2);
        assert_eq!(v["unassigned"], 2);
        assert_eq!(v["unplaceable"], json!(["eu#".to_owned() + &acme_index()]));
        let pending = v["pending_moves"].as_array().unwrap();
        assert_eq!(pending.len(), 1, "{v}");
        assert_eq!(pending[0]["to"], 2);
        let health: Vec<(u64, String)> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_u64().unwrap(),
                    n["health"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(health, vec![(1, "dead".into()), (2, "live".into())]);
    }

    #[test]
    fn the_placement_view_shows_a_drain_and_the_shards_blocking_it() {
        let mut s = State::new();
        for (node, region) in [(1, "eu"), (2, "us")] {
            apply(
                &mut s,
                &Command::SetNodeLabels {
                    node,
                    labels: NodeLabels {
                        region: region.into(),
                        zone: None,
                        capacity: 100,
                    },
                },
            )
            .unwrap();
        }
        apply(
            &mut s,
            &Command::CreateTenantIn {
                tenant: TenantId::new("acme").unwrap(),
                display_name: "Acme".into(),
                residency: Residency {
                    allowed_regions: ["eu".to_owned()].into(),
                    preferred_region: None,
                },
            },
        )
        .unwrap();
        let liveness = Liveness {
            last_seen_ms: [(1, 0), (2, 0)].into(),
        };
        let p = plan(s.placement(), &occupied_shards(&s), &liveness, 0, &CFG);
        apply(&mut s, &Command::ApplyPlacement { moves: p.moves }).unwrap();
        assert_eq!(shards_owned(&s, 1), 1);
        apply(
            &mut s,
            &Command::SetNodeDraining {
                node: 1,
                draining: true,
            },
        )
        .unwrap();
        let v = placement_json(&s, &members(&[1, 2]), &liveness, 0, &CFG);
        let blocked = json!(["eu#".to_owned() + &acme_index()]);
        assert_eq!(v["drain_blocked"], blocked, "{v}");
        assert_eq!(v["nodes"][0]["draining"], true);
        assert_eq!(v["nodes"][0]["shards"], 1);
        assert_eq!(v["nodes"][0]["drain_blocked"], blocked);
        assert_eq!(v["nodes"][1]["draining"], false);
        assert_eq!(v["nodes"][1]["drain_blocked"], json!([]));
        assert_eq!(v["pending_moves"], json!([]), "never moved out of eu");
    }

    fn acme_index() -> String {
        quire_raft::placement::shard_index("tenant:acme").to_string()
    }
}
