//! Identity and audit under simulation: what the nodes decided about each tool call
//! ([`AuthzLog`]), the revocations the sim admins made and when each was acknowledged
//! ([`RevocationLog`]), the agents' API tokens ([`Credentials`]), and the two checkers:
//! [`check_revocations`] ("no authorization after an acknowledged revocation", and expiries
//! decided by the deciding node's clock) and [`check_audit`] ("every acknowledged tool call
//! has exactly one audit record, and every chain verifies").
//!
//! The rules the nodes follow are production's: `security.authz_max_staleness_ms`
//! ([`AUTHZ_MAX_STALENESS`]) bounds how stale a node's access rules may be when it
//! authorizes (`quire_node::freshness::Freshness`, run by each simulated node on its
//! `Router`), and a revocation is acknowledged only that long after it committed (the rule
//! of `App::write` in `node/src/app.rs`, with its `is_revocation`). So a call a node
//! *received* after a revocation's acknowledgement is decided against state that holds the
//! revocation, whatever the node's wall clock says (the bound is measured in elapsed
//! simulated time, which all nodes share; only wall clocks are skewed).
//!
//! Expiries (of tokens and role bindings) are decided by the deciding node's wall clock,
//! which is skewed by up to ±[`crate::node::MAX_CLOCK_SKEW_MS`]: the checker applies the same
//! rule with the `now_ms` that node used, not simulated true time. A token may thus still be
//! honoured by a node whose clock runs late for up to the skew after it expired in true time;
//! that is the tolerance the invariant allows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quire_raft::NodeId;
use quire_raft::audit::{AuditChain, GENESIS_HASH, verify_chain};

use crate::check::Violation;
use crate::workload::ToolRecord;

/// The revocation bound of every simulated node (`security.authz_max_staleness_ms`,
/// production's default).
pub const AUTHZ_MAX_STALENESS: Duration = Duration::from_millis(1_000);
/// Audit events waiting in one node's batcher (`limits.audit_queue_capacity`).
pub const AUDIT_QUEUE: usize = 1_024;
/// Most audit events in one `AppendAudit` (`limits.audit_max_batch`).
pub const AUDIT_MAX_BATCH: usize = 64;
/// The principal of agent `agent`.
pub fn agent_principal(agent: u32) -> String {
    format!("agent{agent}")
}

/// One authorization decision a node took for a tool call (allowed or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzRecord {
    /// The call's id (the agent's).
    pub call_id: String,
    /// The deciding node.
    pub node: NodeId,
    /// Simulated time the node received the call, ms.
    pub received_ms: u64,
    /// The deciding node's wall clock when it decided (what expiries were judged by), ms.
    pub node_now_ms: u64,
    /// The token it authenticated (`None`: unknown, revoked or expired).
    pub token_id: Option<String>,
    /// The token's principal.
    pub principal: Option<String>,
    /// The token's workspace.
    pub workspace: Option<String>,
    /// Whether the call was authorized.
    pub allowed: bool,
    /// The role binding the decision relied on, if any.
    pub binding: Option<u64>,
    /// That binding's expiry (wall-clock ms), as committed.
    pub binding_expires_at_ms: Option<u64>,
    /// The decision's reason.
    pub reason: String,
}

/// Every authorization decision, in the order taken (shared by all nodes).
#[derive(Clone, Default)]
pub struct AuthzLog(Arc<Mutex<Vec<AuthzRecord>>>);

impl AuthzLog {
    /// Records a decision.
    pub fn push(&self, record: AuthzRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// A copy of every decision.
    pub fn records(&self) -> Vec<AuthzRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The role binding a decision's reason names (`... (binding #N)`), if any.
pub fn binding_of_reason(reason: &str) -> Option<u64> {
    let (_, rest) = reason.rsplit_once("(binding #")?;
    rest.trim_end_matches(')').parse().ok()
}

/// What a revocation took away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// An API token (`RevokeToken`).
    Token(String),
    /// A role binding (`RevokeRole`).
    Binding(u64),
    /// Everything of a principal in a workspace (`AddRestriction` with no permission).
    Restriction {
        /// The principal.
        principal: String,
        /// The workspace.
        workspace: String,
    },
}

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Revoked::Token(t) => write!(f, "token {t}"),
            Revoked::Binding(b) => write!(f, "role binding #{b}"),
            Revoked::Restriction {
                principal,
                workspace,
            } => write!(f, "restriction of {principal} in {workspace}"),
        }
    }
}

/// A revocation a sim admin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationRecord {
    /// What it revoked.
    pub what: Revoked,
    /// The node it went through.
    pub node: NodeId,
    /// Simulated time it was invoked, ms.
    pub invoked_ms: u64,
    /// Simulated time its acknowledgement arrived, ms (`None`: not acknowledged).
    pub acked_ms: Option<u64>,
}

/// Every revocation, in the order invoked.
#[derive(Clone, Default)]
pub struct RevocationLog(Arc<Mutex<Vec<RevocationRecord>>>);

impl RevocationLog {
    /// Records a revocation.
    pub fn push(&self, record: RevocationRecord) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    /// A copy of every revocation.
    pub fn records(&self) -> Vec<RevocationRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An agent's API token for one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The token's id.
    pub token_id: String,
    /// Its secret (only its hash is in the replicated state).
    pub secret: String,
    /// Whether a node refused it (revoked or expired): the admin issues another.
    pub refused: bool,
}

/// The agents' tokens, by (agent, integration index).
#[derive(Clone, Default)]
pub struct Credentials(Arc<Mutex<BTreeMap<(u32, usize), Credential>>>);

impl Credentials {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(u32, usize), Credential>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The agent's token for the integration's workspace, if it has one.
    pub fn get(&self, agent: u32, integration: usize) -> Option<Credential> {
        self.lock().get(&(agent, integration)).cloned()
    }

    /// Gives the agent a token.
    pub fn set(&self, agent: u32, integration: usize, credential: Credential) {
        self.lock().insert((agent, integration), credential);
    }

    /// Marks the token `token_id` refused.
    pub fn refused(&self, token_id: &str) {
        for c in self.lock().values_mut() {
            if c.token_id == token_id {
                c.refused = true;
            }
        }
    }

    /// Every (agent, integration) whose token was refused.
    pub fn to_reissue(&self) -> Vec<(u32, usize)> {
        self.lock()
            .iter()
            .filter(|(_, c)| c.refused)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// No tool call a node received after a revocation's acknowledgement is authorized with
/// what was revoked (`no-authz-after-revocation`): not with a revoked token, not through a
/// revoked role binding, not despite a restriction. And an expiry is honoured by the
/// deciding node's clock (`expiry-by-node-clock`): no call is authorized with a token, or
/// through a binding, that had expired by the clock of the node that decided.
/// `token_expiry` gives the tokens' committed expiries (token id → expiry, wall-clock ms).
pub fn check_revocations(
    decisions: &[AuthzRecord],
    revocations: &[RevocationRecord],
    token_expiry: &BTreeMap<String, Option<u64>>,
    end_ms: u64,
) -> Result<(), Violation> {
    let mut acked: Vec<(u64, &RevocationRecord)> = revocations
        .iter()
        .filter_map(|r| r.acked_ms.map(|at| (at, r)))
        .collect();
    acked.sort_by_key(|(at, _)| *at);
    for d in decisions.iter().filter(|d| d.allowed) {
        let describe = || {
            format!(
                "call {} received by node {} at {} ms ({}; {})",
                d.call_id,
                d.node,
                d.received_ms,
                d.token_id.as_deref().unwrap_or("?"),
                d.reason
            )
        };
        for (at, r) in acked.iter().take_while(|(at, _)| *at < d.received_ms) {
            let relied = match &r.what {
                Revoked::Token(t) => d.token_id.as_deref() == Some(t.as_str()),
                Revoked::Binding(b) => d.binding == Some(*b),
                Revoked::Restriction {
                    principal,
                    workspace,
                } => {
                    d.principal.as_deref() == Some(principal.as_str())
                        && d.workspace.as_deref() == Some(workspace.as_str())
                }
            };
            if relied {
                return Err(Violation {
                    invariant: "no-authz-after-revocation",
                    at_ms: end_ms,
                    detail: format!(
                        "{} was authorized, but the {} (through node {}, invoked at {} ms) was acknowledged at {at} ms",
                        describe(),
                        r.what,
                        r.node,
                        r.invoked_ms
                    ),
                });
            }
        }
        let expired = |expiry: Option<u64>| expiry.is_some_and(|e| d.node_now_ms >= e);
        if let Some(t) = &d.token_id
            && let Some(expiry) = token_expiry.get(t)
            && expired(*expiry)
        {
            return Err(Violation {
                invariant: "expiry-by-node-clock",
                at_ms: end_ms,
                detail: format!(
                    "{} was authorized at node clock {} ms, but the token expired at {} ms",
                    describe(),
                    d.node_now_ms,
                    expiry.unwrap_or(0)
                ),
            });
        }
        if let Some(b) = d.binding
            && expired(d.binding_expires_at_ms)
        {
            return Err(Violation {
                invariant: "expiry-by-node-clock",
                at_ms: end_ms,
                detail: format!(
                    "{} was authorized through role binding #{b} at node clock {} ms, but it expired at {} ms",
                    describe(),
                    d.node_now_ms,
                    d.binding_expires_at_ms.unwrap_or(0)
                ),
            });
        }
    }
    Ok(())
}

/// In the converged state: every chain verifies from its anchor (`audit-chain-verifies`);
/// no call id has two tool records (`audit-record-once`); every acknowledged tool call has
/// its record, naming its tool (`audit-complete`).
pub fn check_audit(
    calls: &[ToolRecord],
    chains: &[(String, AuditChain)],
    end_ms: u64,
) -> Result<(), Violation> {
    let violation = |invariant, detail| Violation {
        invariant,
        at_ms: end_ms,
        detail,
    };
    // call id → (tool, records)
    let mut recorded: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for (name, chain) in chains {
        let anchor_hash = if chain.anchor_seq == 0 {
            GENESIS_HASH
        } else {
            chain.anchor_hash.as_str()
        };
        if let Err(e) = verify_chain(&chain.records, Some((chain.anchor_seq, anchor_hash))) {
            return Err(violation(
                "audit-chain-verifies",
                format!("chain {name:?} does not verify: {e}"),
            ));
        }
        for r in chain.records.iter().filter(|r| r.event.kind == "tool") {
            let Some(call) = r.event.resource.as_deref() else {
                continue;
            };
            let entry = recorded.entry(call).or_insert((&r.event.action, 0));
            entry.1 += 1;
            if entry.1 > 1 {
                return Err(violation(
                    "audit-record-once",
                    format!(
                        "call {call} has {} tool records (the latest is record {} of chain {name:?})",
                        entry.1, r.seq
                    ),
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for c in calls.iter().filter(|c| c.acknowledged()) {
        if !seen.insert(c.call_id.as_str()) {
            return Err(violation(
                "audit-record-once",
                format!("call id {} was used twice", c.call_id),
            ));
        }
        match recorded.get(c.call_id.as_str()) {
            Some((tool, _)) if *tool == c.tool => {}
            Some((tool, _)) => {
                return Err(violation(
                    "audit-complete",
                    format!(
                        "call {} ({} by agent {} on node {}) is recorded as {tool}",
                        c.call_id, c.tool, c.agent, c.node
                    ),
                ));
            }
            None => {
                return Err(violation(
                    "audit-complete",
                    format!(
                        "call {} ({} by agent {} on node {}, invoked at {} ms) was acknowledged at {} ms but has no audit record",
                        c.call_id,
                        c.tool,
                        c.agent,
                        c.node,
                        c.invoked_ms,
                        c.completed.as_ref().map_or(0, |(at, _, _)| *at)
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(call: &str, received_ms: u64, token: &str, binding: Option<u64>) -> AuthzRecord {
        AuthzRecord {
            call_id: call.into(),
            node: 1,
            received_ms,
            node_now_ms: 1_000 + received_ms,
            token_id: Some(token.into()),
            principal: Some("agent0".into()),
            workspace: Some("ws-alpha".into()),
            allowed: true,
            binding,
            binding_expires_at_ms: None,
            reason: String::new(),
        }
    }

    fn revocation(what: Revoked, acked_ms: Option<u64>) -> RevocationRecord {
        RevocationRecord {
            what,
            node: 2,
            invoked_ms: 0,
            acked_ms,
        }
    }

    #[test]
    fn reasons_name_their_binding() {
        assert_eq!(
            binding_of_reason("sim-tenant/agent0 holds workspace_manager at x (binding #17)"),
            Some(17)
        );
        assert_eq!(binding_of_reason("a member (standard_user) of x"), None);
    }

    #[test]
    fn authorizations_after_an_acknowledged_revocation_are_caught() {
        let none = BTreeMap::new();
        let revs = vec![
            revocation(Revoked::Token("tk1".into()), Some(500)),
            revocation(Revoked::Binding(9), Some(700)),
            revocation(Revoked::Token("tk3".into()), None),
        ];
        // Before the acknowledgement, or unacknowledged: allowed.
        let ok = vec![
            decision("c1", 400, "tk1", None),
            decision("c2", 600, "tk2", Some(9)),
            decision("c3", 9_000, "tk3", None),
        ];
        assert!(check_revocations(&ok, &revs, &none, 0).is_ok());
        let bad = vec![decision("c4", 501, "tk1", None)];
        let v = check_revocations(&bad, &revs, &none, 0).unwrap_err();
        assert_eq!(v.invariant, "no-authz-after-revocation");
        let bad = vec![decision("c5", 800, "tk2", Some(9))];
        assert!(check_revocations(&bad, &revs, &none, 0).is_err());
        let restricted = vec![revocation(
            Revoked::Restriction {
                principal: "agent0".into(),
                workspace: "ws-alpha".into(),
            },
            Some(100),
        )];
        assert!(check_revocations(&ok, &restricted, &none, 0).is_err());
        // A denied call is never a violation.
        let mut denied = decision("c6", 501, "tk1", None);
        denied.allowed = false;
        assert!(check_revocations(&[denied], &revs, &none, 0).is_ok());
    }

    fn tool_call(call_id: &str, acknowledged: bool) -> ToolRecord {
        ToolRecord {
            agent: 0,
            node: 1,
            integration: 0,
            tool: "notion-search",
            invoked_ms: 10,
            call_id: call_id.into(),
            completed: Some((20, Ok(()), acknowledged)),
        }
    }

    /// The chains of a state that appended one tool record per call id, in one batch.
    fn chains(calls: &[&str]) -> Vec<(String, AuditChain)> {
        let mut state = quire_raft::State::default();
        let tenant = quire_raft::TenantId::new("sim-tenant").unwrap();
        let events = calls
            .iter()
            .map(|c| quire_raft::audit::AuditEvent {
                at_ms: 1,
                node: 1,
                principal: "sim-tenant/agent0".into(),
                tenant: Some(tenant.clone()),
                workspace: Some("ws-alpha".into()),
                kind: "tool".into(),
                action: "notion-search".into(),
                resource: Some((*c).into()),
                outcome: "ok".into(),
                latency_ms: Some(3),
                notion_requests: None,
                justification: None,
                severity: quire_raft::audit::Severity::Info,
            })
            .collect();
        quire_raft::apply(&mut state, &quire_raft::Command::AppendAudit { events }).unwrap();
        state
            .audit()
            .chains()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect()
    }

    #[test]
    fn acknowledged_calls_need_exactly_one_record_and_chains_must_verify() {
        let calls = vec![tool_call("c0", true), tool_call("c1", false)];
        assert!(check_audit(&calls, &chains(&["c0"]), 0).is_ok());
        // An unacknowledged call may or may not have its record.
        assert!(check_audit(&calls, &chains(&["c0", "c1"]), 0).is_ok());
        let v = check_audit(&calls, &chains(&["c1"]), 0).unwrap_err();
        assert_eq!(v.invariant, "audit-complete");
        let v = check_audit(&calls, &chains(&["c0", "c0"]), 0).unwrap_err();
        assert_eq!(v.invariant, "audit-record-once");
        let mut changed = chains(&["c0", "c1"]);
        if let Some(r) = changed[0].1.records.front_mut() {
            r.event.outcome = "error:internal".into();
        }
        let v = check_audit(&calls, &changed, 0).unwrap_err();
        assert_eq!(v.invariant, "audit-chain-verifies");
    }

    #[test]
    fn expiries_are_judged_by_the_deciding_node_clock() {
        let d = decision("c1", 400, "tk1", Some(3)); // node clock 1_400
        let tokens = BTreeMap::from([("tk1".to_string(), Some(1_401))]);
        assert!(check_revocations(std::slice::from_ref(&d), &[], &tokens, 0).is_ok());
        let tokens = BTreeMap::from([("tk1".to_string(), Some(1_400))]);
        let v = check_revocations(std::slice::from_ref(&d), &[], &tokens, 0).unwrap_err();
        assert_eq!(v.invariant, "expiry-by-node-clock");
        let mut d = d;
        d.binding_expires_at_ms = Some(1_000);
        assert!(check_revocations(&[d], &[], &BTreeMap::new(), 0).is_err());
    }
}
