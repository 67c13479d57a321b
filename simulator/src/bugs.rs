//! Planted bugs: runtime switches, available only to the simulator, that break a guarantee on
//! purpose so a test can show the checkers catch it. Production code never sets them.

use std::fmt;
use std::str::FromStr;

/// A planted bug (`quire-sim bugs` lists them; `--bug NAME` turns one on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// The simulated disk acknowledges a flush before the writes it covers are durable
    /// (`SimDisk::set_bug_ack_before_flush`): a crash loses acknowledged log entries and votes.
    AckBeforeDurable,
    /// Reads are served from the receiving node's local applied state, without the leader's
    /// read index (`ControlPlane::read_applied` instead of `Router::read`): a lagging or
    /// partitioned node answers with stale data.
    StaleLocalRead,
    /// The per-integration Notion rate limiters of a data plane start full, as if nothing had
    /// been sent before it started (`StartOptions::planted_bug_limiters_start_full`): a node
    /// that restarts right after its previous incarnation spent the burst sends another.
    LimiterForgetsState,
    /// Tool calls are authorized against the node's applied state without confirming it
    /// current within the revocation bound (no `Freshness::ensure`): a partitioned, paused or
    /// lagging node keeps honouring a token, role or restriction whose revocation was
    /// acknowledged elsewhere.
    AuthzIgnoresStaleness,
    /// A tool call is answered before its audit record is committed (the record is queued
    /// and committed afterwards): a crash or partition loses records of acknowledged calls.
    AuditAfterAnswer,
    /// The simulated leader's placement rounds plan from the shard map without its drain
    /// marks (`quire_raft::placement::plan` given a map whose `draining` is empty): a drained
    /// node keeps its shards, and a round that picks it as a target is refused by `apply`.
    PlacementIgnoresDrains,
    /// The owner of an integration's shard sends without confirming its view of the shard
    /// map current and without the fence before each request (`simulator/src/forward.rs`):
    /// an owner cut off from the group, or whose calls waited for permits across a move,
    /// keeps sending after the shard moved, beside the new owner.
    StaleOwnerNotFenced,
    /// The new owner of an integration's shard sends at once instead of holding off S after
    /// it first sees the move (`simulator/src/forward.rs`): it sends while the previous owner
    /// may still be sending.
    HandoffSkipsHoldOff,
}

impl Bug {
    /// Every planted bug, in a fixed order.
    pub const ALL: [Bug; 8] = [
        Bug::AckBeforeDurable,
        Bug::StaleLocalRead,
        Bug::LimiterForgetsState,
        Bug::AuthzIgnoresStaleness,
        Bug::AuditAfterAnswer,
        Bug::PlacementIgnoresDrains,
        Bug::StaleOwnerNotFenced,
        Bug::HandoffSkipsHoldOff,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeDurable => "ack-before-durable",
            Bug::StaleLocalRead => "stale-local-read",
            Bug::LimiterForgetsState => "limiter-forgets-state",
            Bug::AuthzIgnoresStaleness => "authz-ignores-staleness",
            Bug::AuditAfterAnswer => "audit-after-answer",
            Bug::PlacementIgnoresDrains => "placement-ignores-drains",
            Bug::StaleOwnerNotFenced => "stale-owner-not-fenced",
            Bug::HandoffSkipsHoldOff => "handoff-skips-hold-off",
        }
    }

    /// What it breaks, and which checker should catch it.
    pub fn description(self) -> &'static str {
        match self {
            Bug::AckBeforeDurable => {
                "the simulated disk acknowledges a flush before it is durable; caught by: no acknowledged write lost, committed entries never change, one leader per term"
            }
            Bug::StaleLocalRead => {
                "reads are served from the local applied state without a read index; caught by: linearizable reads (visibility oracle, monotonic reads)"
            }
            Bug::LimiterForgetsState => {
                "the Notion rate limiters start full when a node restarts, forgetting what the previous incarnation sent; caught by: per-integration budget (notion-budget)"
            }
            Bug::AuthzIgnoresStaleness => {
                "tool calls are authorized against the local applied state without the freshness barrier; caught by: no authorization after an acknowledged revocation (no-authz-after-revocation)"
            }
            Bug::AuditAfterAnswer => {
                "tool calls are answered before their audit record commits; caught by: every acknowledged tool call has exactly one audit record (audit-complete)"
            }
            Bug::PlacementIgnoresDrains => {
                "placement rounds plan from the shard map without its drain marks; caught by: drain completes (drain-completes)"
            }
            Bug::StaleOwnerNotFenced => {
                "a shard's owner sends without a view confirmed current and without the fence before each request; caught by: senders in epoch order (senders-in-epoch-order), budget respected during handoff (budget-respected-during-handoff)"
            }
            Bug::HandoffSkipsHoldOff => {
                "a shard's new owner sends at once instead of holding off S; caught by: senders in epoch order (senders-in-epoch-order)"
            }
        }
    }

    /// Whether the simulator can run with this bug on today (every planted bug can; kept
    /// for bugs whose part of Quire is not simulated yet).
    pub fn is_available(self) -> bool {
        true
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown or unavailable bug name.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BugError(String);

impl FromStr for Bug {
    type Err = BugError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bug = Bug::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
                BugError(format!(
                    "unknown bug {s:?}; planted bugs are: {} (see `quire-sim bugs`)",
                    names.join(", ")
                ))
            })?;
        if !bug.is_available() {
            return Err(BugError(format!(
                "bug {s:?} needs the data plane in the simulation, which is not simulated yet"
            )));
        }
        Ok(bug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_bugs_are_refused() {
        for bug in Bug::ALL {
            assert!(bug.is_available());
            assert_eq!(bug.name().parse::<Bug>().unwrap(), bug);
        }
        let err = "nope".parse::<Bug>().unwrap_err();
        assert!(err.to_string().contains("ack-before-durable"), "{err}");
    }
}
