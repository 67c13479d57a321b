//! The fault schedule, drawn from the seed before the run: each fault has a start and a
//! matching heal; all are healed by the start of the final quiet period.

use std::fmt;

use quire_raft::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One fault (or its heal), applied by the driver between simulation steps.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Cut `node` off from every other node, both ways (turmoil partition).
    Isolate(NodeId),
    /// Undo [`Fault::Isolate`].
    Rejoin(NodeId),
    /// Cut `from → to` only (turmoil one-way partition).
    CutOneWay(NodeId, NodeId),
    /// Undo [`Fault::CutOneWay`].
    RepairOneWay(NodeId, NodeId),
    /// Clog `from → to` in the transport's fault filter: drops, duplicates and delays.
    Clog {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// Chance a request is dropped.
        drop: f64,
        /// Chance a request is sent twice.
        duplicate: f64,
        /// Extra delay range, ms.
        delay_ms: (u64, u64),
    },
    /// Undo [`Fault::Clog`].
    Unclog(NodeId, NodeId),
    /// Crash the node (its unflushed writes are lost, or torn).
    Crash(NodeId),
    /// Restart a crashed node on its disk.
    Restart(NodeId),
    /// Crash every node at once (a power loss).
    PowerLoss,
    /// Restart every crashed node.
    PowerRestore,
    /// Hold every message to and from the node (a process pause), then deliver them.
    Pause(NodeId),
    /// Undo [`Fault::Pause`].
    Resume(NodeId),
    /// Injected disk read/write errors on the node.
    DiskErrors(NodeId),
    /// Undo [`Fault::DiskErrors`].
    DiskOk(NodeId),
    /// Notion answers every request of every integration 429 with this `Retry-After`.
    NotionRateLimited {
        /// Seconds.
        retry_after_s: u64,
    },
    /// Notion answers every request with one of these 5xx statuses.
    NotionServerErrors {
        /// 500, 503, 529 (529 carries `Retry-After: 1`).
        statuses: Vec<u16>,
    },
    /// Undo [`Fault::NotionRateLimited`] / [`Fault::NotionServerErrors`].
    NotionOk,
    /// Crash every node of a region at once (a region lost).
    RegionLoss {
        /// The region.
        region: String,
        /// Its nodes.
        nodes: Vec<NodeId>,
    },
    /// Undo [`Fault::RegionLoss`]: restart its nodes.
    RegionBack {
        /// The region.
        region: String,
        /// Its nodes.
        nodes: Vec<NodeId>,
    },
    /// Heal everything (start of the quiet period).
    HealAll,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Isolate(n) => write!(f, "isolate n{n}"),
            Fault::Rejoin(n) => write!(f, "rejoin n{n}"),
            Fault::CutOneWay(a, b) => write!(f, "cut n{a} -> n{b}"),
            Fault::RepairOneWay(a, b) => write!(f, "repair n{a} -> n{b}"),
            Fault::Clog {
                from,
                to,
                drop,
                duplicate,
                delay_ms,
            } => write!(
                f,
                "clog n{from} -> n{to} drop {drop:.2} duplicate {duplicate:.2} delay {}..{} ms",
                delay_ms.0, delay_ms.1
            ),
            Fault::Unclog(a, b) => write!(f, "unclog n{a} -> n{b}"),
            Fault::Crash(n) => write!(f, "crash n{n}"),
            Fault::Restart(n) => write!(f, "restart n{n}"),
            Fault::PowerLoss => write!(f, "power loss (crash all)"),
            Fault::PowerRestore => write!(f, "power restored (restart all)"),
            Fault::Pause(n) => write!(f, "pause n{n}"),
            Fault::Resume(n) => write!(f, "resume n{n}"),
            Fault::DiskErrors(n) => write!(f, "disk errors on n{n}"),
            Fault::DiskOk(n) => write!(f, "disk ok on n{n}"),
            Fault::NotionRateLimited { retry_after_s } => {
                write!(f, "notion 429 burst retry-after {retry_after_s} s")
            }
            Fault::NotionServerErrors { statuses } => {
                let list: Vec<String> = statuses.iter().map(u16::to_string).collect();
                write!(f, "notion 5xx burst {}", list.join("/"))
            }
            Fault::NotionOk => write!(f, "notion ok"),
            Fault::RegionLoss { region, nodes } => {
                write!(f, "region {region} lost (crash {})", node_list(nodes))
            }
            Fault::RegionBack { region, nodes } => {
                write!(f, "region {region} back (restart {})", node_list(nodes))
            }
            Fault::HealAll => write!(f, "heal all"),
        }
    }
}

fn node_list(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(|n| format!("n{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Chance, in percent, that a run loses a region (once).
pub const REGION_LOSS_PERCENT: u32 = 50;
/// How long a lost region stays down, ms.
pub const REGION_LOSS_MS: (u64, u64) = (1_000, 4_000);

/// The region loss of the run of `seed`, if any (its own stream, so the other faults do not
/// change with the regions): every node of one region crashes at once between
/// [`FIRST_FAULT_MS`] and the heal, and restarts 1-4 s later (by the heal at the latest).
pub fn region_loss(
    seed: u64,
    regions: &std::collections::BTreeMap<NodeId, String>,
    heal_at_ms: u64,
) -> Vec<(u64, Fault)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0072_6567_6c6f_7373);
    let names: std::collections::BTreeSet<&String> = regions.values().collect();
    if names.is_empty()
        || heal_at_ms <= FIRST_FAULT_MS
        || rng.random_range(0..100) >= REGION_LOSS_PERCENT
    {
        return Vec::new();
    }
    let names: Vec<&String> = names.into_iter().collect();
    let region = names[rng.random_range(0..names.len())].clone();
    let nodes: Vec<NodeId> = regions
        .iter()
        .filter(|(_, r)| **r == region)
        .map(|(n, _)| *n)
        .collect();
    let at = rng.random_range(FIRST_FAULT_MS..heal_at_ms);
    let back = (at + rng.random_range(REGION_LOSS_MS.0..REGION_LOSS_MS.1)).min(heal_at_ms);
    vec![
        (
            at,
            Fault::RegionLoss {
                region: region.clone(),
                nodes: nodes.clone(),
            },
        ),
        (back, Fault::RegionBack { region, nodes }),
    ]
}

/// Chance, in percent, that the operator drains a node while it is cut off (once a run).
pub const DARK_DRAIN_PERCENT: u32 = 50;
/// How soon after the node is cut off the operator drains it, ms.
pub const DARK_DRAIN_AFTER_MS: (u64, u64) = (50, 700);
/// An isolation this short is over before the operator would act on it, ms.
pub const DARK_DRAIN_MIN_ISOLATION_MS: u64 = 1_200;

/// The operator drains a node that went dark: `node` is marked draining at `at_ms`, while it
/// is cut off from the others, and undrained once it is back (`until_ms` is its rejoin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DarkDrain {
    /// The node cut off, then drained.
    pub node: NodeId,
    /// When the operator marks it draining, ms.
    pub at_ms: u64,
    /// When it is back in touch with the others, ms.
    pub until_ms: u64,
}

/// The drain of a cut-off node in the run of `seed` with fault schedule `plan`, if any (its
/// own stream): in [`DARK_DRAIN_PERCENT`] of the seeds, one isolation of at least
/// [`DARK_DRAIN_MIN_ISOLATION_MS`] is chosen and its node drained
/// [`DARK_DRAIN_AFTER_MS`] after it was cut off. The shard moves off a node that may still
/// send for up to S (until its view is no longer confirmed current): the case the new
/// owner's hold-off exists for.
pub fn dark_drain(seed: u64, plan: &[(u64, Fault)]) -> Option<DarkDrain> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6461_726b);
    if rng.random_range(0..100) >= DARK_DRAIN_PERCENT {
        return None;
    }
    let isolations: Vec<(u64, u64, NodeId)> = plan
        .iter()
        .filter_map(|(at, f)| match f {
            Fault::Isolate(n) => plan
                .iter()
                .find(|(back, g)| {
                    *back >= *at
                        && (matches!(g, Fault::Rejoin(m) if m == n) || *g == Fault::HealAll)
                })
                .map(|(back, _)| (*at, *back, *n)),
            _ => None,
        })
        .filter(|(at, back, _)| back - at >= DARK_DRAIN_MIN_ISOLATION_MS)
        .collect();
    if isolations.is_empty() {
        return None;
    }
    let (at, back, node) = isolations[rng.random_range(0..isolations.len())];
    Some(DarkDrain {
        node,
        at_ms: at + rng.random_range(DARK_DRAIN_AFTER_MS.0..DARK_DRAIN_AFTER_MS.1),
        until_ms: back,
    })
}

/// Faults start no earlier than this (the cluster forms first).
pub const FIRST_FAULT_MS: u64 = 2_000;
/// Time between two quick restarts (crash, back 20-250 ms later), ms.
pub const QUICK_RESTART_EVERY_MS: (u64, u64) = (1_000, 3_000);

/// Draws the schedule for `nodes` nodes (ids 1..=nodes): faults between
/// [`FIRST_FAULT_MS`] and `heal_at_ms`, each healed by then, sorted by time. `seed` is
/// the run's seed (mixed with a constant so the schedule does not mirror other draws).
pub fn schedule(seed: u64, nodes: u64, heal_at_ms: u64) -> Vec<(u64, Fault)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6661_756c_7473);
    let mut out = Vec::new();
    let mut t = FIRST_FAULT_MS;
    let node = |rng: &mut ChaCha8Rng| rng.random_range(1..=nodes);
    let pair = |rng: &mut ChaCha8Rng| {
        let a = rng.random_range(1..=nodes);
        let mut b = rng.random_range(1..nodes.max(2));
        if b >= a {
            b += 1;
        }
        (a, b.min(nodes.max(2)))
    };
    while t < heal_at_ms {
        let length = rng.random_range(500..4_000);
        let end = (t + length).min(heal_at_ms);
        let kind = rng.random_range(0..17u32);
        let (start, heal) = match kind {
            0 | 1 => {
                let n = node(&mut rng);
                (Fault::Isolate(n), Fault::Rejoin(n))
            }
            2 | 3 => {
                let (a, b) = pair(&mut rng);
                (Fault::CutOneWay(a, b), Fault::RepairOneWay(a, b))
            }
            4 | 5 => {
                let (from, to) = pair(&mut rng);
                let lo = rng.random_range(0..50);
                (
                    Fault::Clog {
                        from,
                        to,
                        drop: f64::from(rng.random_range(0..40u32)) / 100.0,
                        duplicate: f64::from(rng.random_range(0..20u32)) / 100.0,
                        delay_ms: (lo, lo + rng.random_range(0..200)),
                    },
                    Fault::Unclog(from, to),
                )
            }
            6..=8 => {
                let n = node(&mut rng);
                (Fault::Crash(n), Fault::Restart(n))
            }
            9 | 10 => (Fault::PowerLoss, Fault::PowerRestore),
            11 | 12 => {
                let n = node(&mut rng);
                (Fault::Pause(n), Fault::Resume(n))
            }
            13 => {
                let n = node(&mut rng);
                (Fault::DiskErrors(n), Fault::DiskOk(n))
            }
            14 | 15 => (
                Fault::NotionRateLimited {
                    retry_after_s: rng.random_range(1..=3),
                },
                Fault::NotionOk,
            ),
            _ => {
                let all = [500u16, 503, 529];
                let statuses = all
                    .into_iter()
                    .filter(|_| rng.random_bool(0.7))
                    .collect::<Vec<_>>();
                let statuses = if statuses.is_empty() {
                    vec![503]
                } else {
                    statuses
                };
                (Fault::NotionServerErrors { statuses }, Fault::NotionOk)
            }
        };
        out.push((t, start));
        out.push((end, heal));
        t += rng.random_range(300..2_500);
    }
    // Quick restarts (a process that crashed and came straight back) on their own stream,
    // every few seconds, under tool-call load: a data plane that forgot what its previous
    // incarnation sent overspends its integrations' budget here.
    let mut t = FIRST_FAULT_MS + rng.random_range(0..QUICK_RESTART_EVERY_MS.0);
    while t < heal_at_ms {
        let n = node(&mut rng);
        let down = rng.random_range(20..250);
        out.push((t, Fault::Crash(n)));
        out.push(((t + down).min(heal_at_ms), Fault::Restart(n)));
        t += rng.random_range(QUICK_RESTART_EVERY_MS.0..QUICK_RESTART_EVERY_MS.1);
    }
    out.push((heal_at_ms, Fault::HealAll));
    // Stable: a heal and a start at the same time keep their drawing order.
    out.sort_by_key(|(at, _)| *at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_follows_the_seed_and_heals_before_the_quiet_period() {
        let a = schedule(7, 3, 20_000);
        assert_eq!(a, schedule(7, 3, 20_000));
        assert_ne!(a, schedule(8, 3, 20_000));
        assert!(a.len() > 4);
        assert!(a.iter().all(|(at, _)| *at <= 20_000));
        assert_eq!(a.last().map(|(_, f)| f), Some(&Fault::HealAll));
        for (_, f) in &a {
            match f {
                Fault::CutOneWay(x, y) | Fault::Unclog(x, y) => {
                    assert_ne!(x, y);
                    assert!((1..=3).contains(x) && (1..=3).contains(y));
                }
                Fault::Crash(n) | Fault::Isolate(n) => assert!((1..=3).contains(n)),
                _ => {}
            }
        }
    }

    #[test]
    fn a_region_loss_follows_the_seed_takes_a_whole_region_and_ends_by_the_heal() {
        let regions: std::collections::BTreeMap<NodeId, String> = [
            (1, "eu".to_string()),
            (2, "us".to_string()),
            (3, "eu".to_string()),
        ]
        .into();
        let mut lost = 0;
        for seed in 0..40 {
            let r = region_loss(seed, &regions, 20_000);
            assert_eq!(r, region_loss(seed, &regions, 20_000));
            match r.as_slice() {
                [] => {}
                [
                    (at, Fault::RegionLoss { region, nodes }),
                    (back, Fault::RegionBack { .. }),
                ] => {
                    lost += 1;
                    assert!(FIRST_FAULT_MS <= *at && at <= back && *back <= 20_000);
                    let expected: Vec<NodeId> = regions
                        .iter()
                        .filter(|(_, r)| *r == region)
                        .map(|(n, _)| *n)
                        .collect();
                    assert_eq!(nodes, &expected);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!((10..=30).contains(&lost), "{lost} of 40");
    }

    #[test]
    fn a_dark_drain_falls_inside_an_isolation_of_its_node() {
        let mut drained = 0;
        for seed in 0..60 {
            let plan = schedule(seed, 3, 25_000);
            let d = dark_drain(seed, &plan);
            assert_eq!(d, dark_drain(seed, &plan));
            let Some(d) = d else { continue };
            drained += 1;
            let cut = plan
                .iter()
                .filter(|(at, f)| *f == Fault::Isolate(d.node) && *at < d.at_ms)
                .map(|(at, _)| *at)
                .max()
                .expect("the node was cut off before the drain");
            assert!(d.at_ms - cut < DARK_DRAIN_AFTER_MS.1, "{d:?} cut at {cut}");
            assert!(d.at_ms < d.until_ms, "{d:?}");
        }
        assert!((10..=40).contains(&drained), "{drained} of 60");
    }
}
