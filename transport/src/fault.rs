//! The fault-filter hook: before each request leaves, the client asks a [`FaultFilter`]
//! whether to deliver, drop, delay or duplicate it. [`LinkFaults`] is the filter tests and
//! the simulator use: per-link rules, settable at run time, random choices from a seeded RNG.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quire_raft::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::TransportError;

/// Which RPC is about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RpcKind {
    /// Raft AppendEntries (and heartbeats).
    AppendEntries,
    /// Raft Vote.
    Vote,
    /// Raft InstallSnapshot (one chunk).
    InstallSnapshot,
    /// A forwarded write.
    ForwardWrite,
    /// A read-index request.
    ReadIndex,
    /// A join request.
    Join,
    /// A remove request.
    Remove,
    /// A status request.
    Status,
    /// A data-plane call served by another node.
    DataCall,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Send it.
    Deliver,
    /// Do not send it; the caller sees the peer as unreachable after a short wait.
    Drop,
    /// Send it after this long (the delay counts against the request's deadline).
    Delay(Duration),
    /// Send it twice; the caller gets the second answer.
    Duplicate,
}

/// Decides the fate of each request before it is sent. Without a filter, all are delivered.
/// Requests to an address whose node id the client does not know yet are not filtered.
pub trait FaultFilter: Send + Sync + 'static {
    /// The action for one request from `from` to `to`.
    fn on_send(&self, from: NodeId, to: NodeId, rpc: RpcKind) -> FaultAction;
}

/// The rule for one directed link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkRule {
    /// Every request is dropped.
    pub cut: bool,
    /// Chance in [0, 1] that a request is dropped.
    pub drop_probability: f64,
    /// Chance in [0, 1] that a request is sent twice.
    pub duplicate_probability: f64,
    /// Each request is delayed by a uniform draw from this range (min, max), in ms.
    pub delay_ms: Option<(u64, u64)>,
}

impl LinkRule {
    fn validate(&self) -> Result<(), TransportError> {
        for (name, p) in [
            ("drop_probability", self.drop_probability),
            ("duplicate_probability", self.duplicate_probability),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(TransportError::InvalidConfig(format!(
                    "{name} must be in [0, 1], got {p}"
                )));
            }
        }
        if let Some((min, max)) = self.delay_ms
            && min > max
        {
            return Err(TransportError::InvalidConfig(format!(
                "delay_ms range ({min}, {max}) must have min <= max"
            )));
        }
        Ok(())
    }

    fn is_noop(&self) -> bool {
        *self == LinkRule::default()
    }
}

struct LinkState {
    rules: BTreeMap<(NodeId, NodeId), LinkRule>,
    rng: ChaCha8Rng,
}

/// Per-link fault rules (keyed by `(from, to)`), changeable while the cluster runs. Random
/// drops, duplicates and delays draw from one RNG seeded at construction, so a run
/// reproduces from its seed when requests are sent in the same order.
pub struct LinkFaults {
    state: Mutex<LinkState>,
}

impl std::fmt::Debug for LinkFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkFaults")
            .field("rules", &self.lock().rules)
            .finish_non_exhaustive()
    }
}

impl LinkFaults {
    /// No faults yet; random choices seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(LinkState {
                rules: BTreeMap::new(),
                rng: ChaCha8Rng::seed_from_u64(seed),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // A panic elsewhere while holding the lock leaves the rules intact; keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the rule for `from → to` (a default rule removes it).
    pub fn set_rule(&self, from: NodeId, to: NodeId, rule: LinkRule) -> Result<(), TransportError> {
        rule.validate()?;
        let mut state = self.lock();
        if rule.is_noop() {
            state.rules.remove(&(from, to));
        } else {
            state.rules.insert((from, to), rule);
        }
        Ok(())
    }

    /// The rule for `from → to`.
    pub fn rule(&self, from: NodeId, to: NodeId) -> LinkRule {
        self.lock()
            .rules
            .get(&(from, to))
            .cloned()
            .unwrap_or_default()
    }

    fn update(&self, from: NodeId, to: NodeId, f: impl FnOnce(&mut LinkRule)) {
        let mut state = self.lock();
        let rule = state.rules.entry((from, to)).or_default();
        f(rule);
        if rule.is_noop() {
            state.rules.remove(&(from, to));
        }
    }

    /// Cuts `from → to` (requests that way are dropped; the other way still works).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.update(from, to, |r| r.cut = true);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&self, a: NodeId, b: NodeId) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts both directions between `node` and each of `peers`.
    pub fn isolate(&self, node: NodeId, peers: &[NodeId]) {
        for &peer in peers {
            self.cut_both(node, peer);
        }
    }

    /// Restores `from → to` (clears the cut; other rules stay).
    pub fn heal(&self, from: NodeId, to: NodeId) {
        self.update(from, to, |r| r.cut = false);
    }

    /// Restores both directions between `a` and `b`.
    pub fn heal_both(&self, a: NodeId, b: NodeId) {
        self.heal(a, b);
        self.heal(b, a);
    }

    /// Removes every rule.
    pub fn heal_all(&self) {
        self.lock().rules.clear();
    }

    /// Drops requests `from → to` with probability `p`.
    pub fn set_drop_probability(
        &self,
        from: NodeId,
        to: NodeId,
        p: f64,
    ) -> Result<(), TransportError> {
        let rule = LinkRule {
            drop_probability: p,
            ..self.rule(from, to)
        };
        self.set_rule(from, to, rule)
    }

    /// Sends requests `from → to` twice with probability `p`.
    pub fn set_duplicate_probability(
        &self,
        from: NodeId,
        to: NodeId,
        p: f64,
    ) -> Result<(), TransportError> {
        let rule = LinkRule {
            duplicate_probability: p,
            ..self.rule(from, to)
        };
        self.set_rule(from, to, rule)
    }

    /// Delays requests `from → to` by a uniform draw from `[min_ms, max_ms]` (`None` clears).
    pub fn set_delay_ms(
        &self,
        from: NodeId,
        to: NodeId,
        range: Option<(u64, u64)>,
    ) -> Result<(), TransportError> {
        let rule = LinkRule {
            delay_ms: range,
            ..self.rule(from, to)
        };
        self.set_rule(from, to, rule)
    }
}

impl FaultFilter for LinkFaults {
    fn on_send(&self, from: NodeId, to: NodeId, _rpc: RpcKind) -> FaultAction {
        let mut state = self.lock();
        let Some(rule) = state.rules.get(&(from, to)).cloned() else {
            return FaultAction::Deliver;
        };
        if rule.cut {
            return FaultAction::Drop;
        }
        if rule.drop_probability > 0.0 && state.rng.random_bool(rule.drop_probability) {
            return FaultAction::Drop;
        }
        if rule.duplicate_probability > 0.0 && state.rng.random_bool(rule.duplicate_probability) {
            return FaultAction::Duplicate;
        }
        if let Some((min, max)) = rule.delay_ms {
            let ms = state.rng.random_range(min..=max);
            return FaultAction::Delay(Duration::from_millis(ms));
        }
        FaultAction::Deliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_is_one_way_and_heals() {
        let f = LinkFaults::new(1);
        assert_eq!(f.on_send(1, 2, RpcKind::Vote), FaultAction::Deliver);
        f.cut(1, 2);
        assert_eq!(f.on_send(1, 2, RpcKind::Vote), FaultAction::Drop);
        assert_eq!(f.on_send(2, 1, RpcKind::Vote), FaultAction::Deliver);
        f.heal(1, 2);
        assert_eq!(f.on_send(1, 2, RpcKind::Vote), FaultAction::Deliver);
        assert_eq!(f.rule(1, 2), LinkRule::default());
        f.isolate(3, &[1, 2]);
        for (a, b) in [(3, 1), (1, 3), (3, 2), (2, 3)] {
            assert_eq!(f.on_send(a, b, RpcKind::AppendEntries), FaultAction::Drop);
        }
        assert_eq!(
            f.on_send(1, 2, RpcKind::AppendEntries),
            FaultAction::Deliver
        );
        f.heal_all();
        assert_eq!(
            f.on_send(3, 1, RpcKind::AppendEntries),
            FaultAction::Deliver
        );
    }

    #[test]
    fn random_drops_follow_the_seed() {
        let draw = |seed| {
            let f = LinkFaults::new(seed);
            f.set_drop_probability(1, 2, 0.5).unwrap();
            (0..200)
                .map(|_| f.on_send(1, 2, RpcKind::AppendEntries) == FaultAction::Drop)
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        let dropped = a.iter().filter(|d| **d).count();
        assert!((60..140).contains(&dropped), "dropped {dropped} of 200");
    }

    #[test]
    fn delays_stay_in_range_and_bad_rules_are_refused() {
        let f = LinkFaults::new(3);
        f.set_delay_ms(1, 2, Some((5, 9))).unwrap();
        for _ in 0..50 {
            match f.on_send(1, 2, RpcKind::Status) {
                FaultAction::Delay(d) => assert!((5..=9).contains(&(d.as_millis() as u64))),
                other => panic!("expected a delay, got {other:?}"),
            }
        }
        assert!(f.set_drop_probability(1, 2, 1.5).is_err());
        assert!(f.set_drop_probability(1, 2, f64::NAN).is_err());
        assert!(f.set_delay_ms(1, 2, Some((9, 5))).is_err());
        // Refused rules changed nothing.
        assert_eq!(f.rule(1, 2).delay_ms, Some((5, 9)));
        f.set_duplicate_probability(2, 1, 1.0).unwrap();
        assert_eq!(f.on_send(2, 1, RpcKind::Vote), FaultAction::Duplicate);
    }
}
