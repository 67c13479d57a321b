//! The workload: simulated admins on a client host, each issuing writes (unique
//! `CreateTenant`s, and creates that `apply` rejects) and linearizable reads through random
//! nodes, each with a deadline, recording invocation and completion times (simulated) and
//! outcomes in the [`History`]. After the final heal, a liveness probe must get a write
//! through within [`LIVENESS_BOUND`].
//!
//! Simulated agents call Notion tools (the real tool catalogue on the nodes' data planes)
//! for the sandbox's integrations, each call sent to the integration's designated node
//! ([`designated_node`]) with a deadline; outcomes go to the [`ToolHistory`] and the trace.
//! After the final heal, a tool call for every integration must succeed within
//! [`TOOL_LIVENESS_BOUND`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quire_raft::NodeId;
use quire_raft::placement::Residency;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;

use crate::access::{
    Credential, Credentials, RevocationLog, RevocationRecord, Revoked, agent_principal,
};
use crate::check::{History, OpRecord};
use crate::node::{
    AccessOp, BindingInfo, MemberChange, MemberRequest, Op, OpResult, Registry, Request,
    SIM_TENANT, ToolReply, ToolRequest,
};
use crate::notion::{INTEGRATIONS, budget, designated_node};
use crate::trace::{Trace, sim_now};

/// Admins issuing operations concurrently.
pub const ADMINS: u32 = 4;
/// Deadline of one operation, as the admin waits for it.
pub const OP_DEADLINE: Duration = Duration::from_secs(5);
/// Longest pause between two operations of one admin, ms.
pub const MAX_THINK_MS: u64 = 150;
/// Shortest pause between two operations of one admin, ms.
pub const MIN_THINK_MS: u64 = 20;
/// After the final heal, a write must succeed within this bound.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(10);
/// After the final heal, a node the operator removed must be back in the group within this.
pub const MEMBERSHIP_BOUND: Duration = Duration::from_secs(10);
/// Agents calling Notion tools concurrently.
pub const AGENTS: u32 = 4;
/// Deadline of one tool call, as the agent waits for it (the node's data plane answers by
/// its own, shorter deadline).
pub const TOOL_DEADLINE: Duration = Duration::from_secs(10);
/// After the final heal, a tool call for every integration must succeed within this bound
/// (a Notion pause of up to a few seconds may still be running).
pub const TOOL_LIVENESS_BOUND: Duration = Duration::from_secs(15);
/// Agents work in phases, all together (the phases' offset follows the seed): busy for this
/// long (more calls than the budget serves), then idle for [`AGENT_IDLE_MS`] (the buckets
/// refill), so bursts are spent often.
pub const AGENT_BUSY_MS: u64 = 2_000;
/// See [`AGENT_BUSY_MS`].
pub const AGENT_IDLE_MS: u64 = 2_000;
/// Tool calls one agent keeps in flight at most (an agent that waits on a slow node still
/// calls through the others, and calls the slow one again).
pub const AGENT_PARALLEL_CALLS: usize = 3;
/// The tools agents call (read-only; each sends one or a few Notion requests).
pub const AGENT_TOOLS: [&str; 3] = ["notion-get-self", "notion-search", "notion-get-users"];

/// One tool call of an agent, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRecord {
    /// The agent (the liveness probe is agent [`AGENTS`]).
    pub agent: u32,
    /// The node it was sent to.
    pub node: NodeId,
    /// Index into [`INTEGRATIONS`].
    pub integration: usize,
    /// The tool.
    pub tool: &'static str,
    /// Simulated time it was invoked, ms.
    pub invoked_ms: u64,
    /// The call's unique id (its audit record's `resource`).
    pub call_id: String,
    /// When it completed and how: `Ok(())` or why it failed, and whether the node answered
    /// it as done ([`crate::node::ToolReply::acknowledged`]).
    pub completed: Option<(u64, Result<(), String>, bool)>,
}

impl ToolRecord {
    /// Whether the node acknowledged the call (answered it as done).
    pub fn acknowledged(&self) -> bool {
        matches!(self.completed, Some((_, _, true)))
    }

    /// Whether it succeeded.
    pub fn succeeded(&self) -> bool {
        matches!(self.completed, Some((_, Ok(()), true)))
    }
}

/// The agents' tool calls, shared by their tasks.
#[derive(Clone, Default)]
pub struct ToolHistory(Arc<Mutex<Vec<ToolRecord>>>);

impl ToolHistory {
    /// Records a call and gives it its id (`c<index>`); returns its index.
    fn push(&self, mut record: ToolRecord) -> usize {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        record.call_id = format!("c{}", calls.len());
        calls.push(record);
        calls.len() - 1
    }

    fn call_id(&self, index: usize) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .map(|c| c.call_id.clone())
            .unwrap_or_default()
    }

    fn complete(&self, index: usize, at_ms: u64, result: Result<(), String>, acknowledged: bool) {
        if let Some(call) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(index)
        {
            call.completed = Some((at_ms, result, acknowledged));
        }
    }

    /// A copy of every record.
    pub fn records(&self) -> Vec<ToolRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the workload needs.
#[derive(Clone)]
pub struct WorkloadSetup {
    /// The run's seed.
    pub seed: u64,
    /// Node ids are 1..=nodes.
    pub nodes: u64,
    /// Stop issuing operations at this simulated time.
    pub stop_at: Duration,
    /// Faults are all healed at this simulated time.
    pub heal_at: Duration,
    /// Live nodes.
    pub registry: Registry,
    /// Where operations are recorded.
    pub history: History,
    /// The run's trace.
    pub trace: Trace,
    /// When the liveness probe succeeded (ms after the heal), or why it failed.
    pub liveness: Arc<Mutex<Option<Result<u64, String>>>>,
    /// The agents' tool calls.
    pub tools: ToolHistory,
    /// When a tool call for every integration had succeeded after the final heal (ms after
    /// it), or why not.
    pub tool_liveness: Arc<Mutex<Option<Result<u64, String>>>>,
    /// Whether the operator changes the membership (remove a node, join it back).
    pub membership: bool,
    /// The agents' API tokens.
    pub credentials: Credentials,
    /// The sim admins' revocations.
    pub revocations: RevocationLog,
    /// The operator's drain of a node that went dark, if the seed has one.
    pub dark_drain: Option<crate::faults::DarkDrain>,
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Create { tenant } => format!("create {tenant}"),
        Op::CreateIn { tenant, residency } => {
            format!("create {tenant} in {}", residency.group())
        }
        Op::CreateInvalid { tenant } => format!("create-invalid {tenant}"),
        Op::Read => "read".into(),
        Op::Access(access) => access_text(access),
    }
}

fn access_text(op: &AccessOp) -> String {
    match op {
        AccessOp::Plain(quire_raft::Command::SetNodeDraining { node, draining }) => {
            format!("{} n{node}", if *draining { "drain" } else { "undrain" })
        }
        AccessOp::Plain(cmd) => cmd.kind().to_string(),
        AccessOp::IssueToken {
            principal,
            workspace,
            token_id,
            ttl_ms,
            ..
        } => format!(
            "issue token {token_id} for {principal} in {workspace}{}",
            ttl_ms.map(|t| format!(" ttl {t} ms")).unwrap_or_default()
        ),
        AccessOp::AssignRole {
            principal,
            workspace,
            ttl_ms,
        } => format!(
            "assign workspace_manager to {principal} in {workspace}{}",
            ttl_ms.map(|t| format!(" ttl {t} ms")).unwrap_or_default()
        ),
        AccessOp::RevokeToken { token_id } => format!("revoke token {token_id}"),
        AccessOp::RevokeRole { binding } => format!("revoke role binding #{binding}"),
        AccessOp::Restrict {
            principal,
            workspace,
        } => format!("restrict {principal} in {workspace}"),
        AccessOp::Bindings => "read role bindings".into(),
    }
}

fn result_text(result: &OpResult) -> String {
    match result {
        OpResult::Written => "ok".into(),
        OpResult::Rejected { kind } => format!("rejected {kind}"),
        OpResult::Read(ids) => format!("read {} tenants", ids.len()),
        OpResult::Bindings(b) => format!("read {} role bindings", b.len()),
        OpResult::Failed { why } => format!("failed {why}"),
    }
}

/// Sends `op` to `node` and waits (within the deadline) for its result, recording both ends.
async fn call(w: &WorkloadSetup, admin: u32, node: NodeId, op: Op) -> OpResult {
    let who = format!("admin{admin}");
    let invoked = sim_now();
    w.trace
        .record(invoked, &who, format!("n{node} <- {}", op_text(&op)));
    let index = w.history.invoke(OpRecord {
        admin,
        node,
        op: op.clone(),
        invoked_ms: invoked.as_millis() as u64,
        completed: None,
    });
    let result = match w.registry.get(node) {
        None => OpResult::Failed {
            why: "node down".into(),
        },
        Some(live) => {
            let (reply, answer) = oneshot::channel();
            match live.requests.try_send(Request { op, reply }) {
                Err(_) => OpResult::Failed {
                    why: "node busy or down".into(),
                },
                Ok(()) => match tokio::time::timeout(OP_DEADLINE, answer).await {
                    Err(_) => OpResult::Failed {
                        why: "deadline".into(),
                    },
                    Ok(Err(_)) => OpResult::Failed {
                        why: "node crashed".into(),
                    },
                    Ok(Ok(result)) => result,
                },
            }
        }
    };
    let done = sim_now();
    w.trace
        .record(done, &who, format!("n{node} -> {}", result_text(&result)));
    w.history
        .complete(index, done.as_millis() as u64, result.clone());
    result
}

async fn admin_loop(w: WorkloadSetup, admin: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(w.seed.wrapping_mul(31).wrapping_add(u64::from(admin)));
    let mut n = 0u64;
    while sim_now() < w.stop_at {
        n += 1;
        let node = rng.random_range(1..=w.nodes);
        let op = match rng.random_range(0..100u32) {
            0..40 => Op::Create {
                tenant: format!("t{admin}-{n}"),
            },
            40..55 => Op::CreateIn {
                tenant: format!("t{admin}-{n}"),
                residency: residency(&mut rng),
            },
            55..65 => Op::CreateInvalid {
                tenant: format!("bad{admin}-{n}"),
            },
            _ => Op::Read,
        };
        call(&w, admin, node, op).await;
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(MIN_THINK_MS..=MAX_THINK_MS),
        ))
        .await;
    }
}

/// A residency policy drawn for a tenant the admins create: pinned to one region, or both
/// regions with a preferred one.
fn residency(rng: &mut ChaCha8Rng) -> Residency {
    let [a, b] = crate::placement::REGIONS;
    let (one, other) = if rng.random_bool(0.5) { (a, b) } else { (b, a) };
    if rng.random_bool(0.5) {
        Residency {
            allowed_regions: [one.to_string()].into(),
            preferred_region: None,
        }
    } else {
        Residency {
            allowed_regions: [one.to_string(), other.to_string()].into(),
            preferred_region: Some(one.to_string()),
        }
    }
}

async fn liveness_probe(w: WorkloadSetup) {
    tokio::time::sleep(w.heal_at.saturating_sub(sim_now())).await;
    let healed = sim_now();
    let deadline = tokio::time::Instant::now() + LIVENESS_BOUND;
    let mut attempt = 0u64;
    let outcome = loop {
        attempt += 1;
        let node = 1 + attempt % w.nodes;
        let op = Op::Create {
            tenant: format!("live-{attempt}"),
        };
        let call = call(&w, ADMINS, node, op);
        match tokio::time::timeout_at(deadline, call).await {
            Ok(OpResult::Written) => break Ok((sim_now() - healed).as_millis() as u64),
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => {
                break Err(format!(
                    "no write succeeded within {} s of the final heal ({attempt} attempts)",
                    LIVENESS_BOUND.as_secs()
                ));
            }
        }
    };
    *w.liveness.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
}

/// Sends one tool call to the integration's designated node with the agent's token for its
/// workspace, and waits (within the deadline) for its answer, recording both ends. An agent
/// without a usable token does not call (`Err("no token")`, not recorded).
async fn call_tool(
    w: &WorkloadSetup,
    agent: u32,
    integration: usize,
    tool: &'static str,
    arguments: serde_json::Value,
) -> Result<(), String> {
    let Some(credential) = w.credentials.get(agent, integration).filter(|c| !c.refused) else {
        return Err("no token".into());
    };
    let who = format!("agent{agent}");
    let node = designated_node(integration, w.nodes);
    let name = INTEGRATIONS.get(integration).map_or("?", |(n, _)| *n);
    let invoked = sim_now();
    let index = w.tools.push(ToolRecord {
        agent,
        node,
        integration,
        tool,
        invoked_ms: invoked.as_millis() as u64,
        call_id: String::new(),
        completed: None,
    });
    let call_id = w.tools.call_id(index);
    w.trace.record(
        invoked,
        &who,
        format!("n{node} <- {tool} {name} {call_id} {}", credential.token_id),
    );
    let refused = |why: &str| ToolReply {
        result: Err(why.to_string()),
        acknowledged: false,
    };
    let reply = match w.registry.get(node) {
        None => refused("node down"),
        Some(live) => {
            let (reply, answer) = oneshot::channel();
            let request = ToolRequest {
                integration,
                session: format!("agent{agent}"),
                tool: tool.to_string(),
                arguments,
                call_id: call_id.clone(),
                secret: credential.secret.clone(),
                reply,
            };
            match live.tools.try_send(request) {
                Err(_) => refused("node busy or down"),
                Ok(()) => match tokio::time::timeout(TOOL_DEADLINE, answer).await {
                    Err(_) => refused("deadline"),
                    Ok(Err(_)) => refused("node crashed"),
                    Ok(Ok(reply)) => reply,
                },
            }
        }
    };
    let done = sim_now();
    let text = match &reply.result {
        Ok(()) => "ok".to_string(),
        Err(why) => format!("failed {why}"),
    };
    let ack = if reply.acknowledged {
        ""
    } else {
        " (not acknowledged)"
    };
    w.trace
        .record(done, &who, format!("n{node} -> {call_id} {text}{ack}"));
    if reply.result.as_ref().err().map(String::as_str) == Some("invalid_token") {
        w.credentials.refused(&credential.token_id);
    }
    w.tools.complete(
        index,
        done.as_millis() as u64,
        reply.result.clone(),
        reply.acknowledged,
    );
    if reply.acknowledged {
        reply.result
    } else {
        reply.result.and(Err("not acknowledged".into()))
    }
}

async fn agent_loop(w: WorkloadSetup, agent: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(
        w.seed
            .wrapping_mul(53)
            .wrapping_add(0x0061_6765_6e74)
            .wrapping_add(u64::from(agent)),
    );
    let cycle = AGENT_BUSY_MS + AGENT_IDLE_MS;
    let offset = ChaCha8Rng::seed_from_u64(w.seed ^ 0x0070_6861_7365).random_range(0..cycle);
    let calls = Arc::new(tokio::sync::Semaphore::new(AGENT_PARALLEL_CALLS));
    while sim_now() < w.stop_at {
        let now_ms = sim_now().as_millis() as u64;
        let in_cycle = (now_ms + offset) % cycle;
        if in_cycle >= AGENT_BUSY_MS {
            let idle = cycle - in_cycle;
            tokio::time::sleep(Duration::from_millis(idle + rng.random_range(0..50))).await;
            continue;
        }
        let integration = rng.random_range(0..INTEGRATIONS.len());
        let tool = AGENT_TOOLS[rng.random_range(0..AGENT_TOOLS.len())];
        let arguments = match tool {
            "notion-search" => serde_json::json!({ "query": "", "page_size": 10 }),
            "notion-get-users" => serde_json::json!({ "page_size": 10 }),
            _ => serde_json::json!({}),
        };
        if w.credentials
            .get(agent, integration)
            .is_none_or(|c| c.refused)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let Ok(permit) = calls.clone().acquire_owned().await else {
            return;
        };
        let call = w.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = call_tool(&call, agent, integration, tool, arguments).await;
        });
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(MIN_THINK_MS..=MAX_THINK_MS),
        ))
        .await;
    }
    // Wait for the calls still running.
    let _ = calls.acquire_many(AGENT_PARALLEL_CALLS as u32).await;
}

async fn tool_liveness_probe(w: WorkloadSetup) {
    tokio::time::sleep(w.heal_at.saturating_sub(sim_now())).await;
    let healed = sim_now();
    let deadline = tokio::time::Instant::now() + TOOL_LIVENESS_BOUND;
    let mut pending: Vec<usize> = (0..INTEGRATIONS.len()).collect();
    let mut attempts = 0u64;
    let outcome = loop {
        let Some(&integration) = pending.first() else {
            break Ok((sim_now() - healed).as_millis() as u64);
        };
        attempts += 1;
        let call = call_tool(
            &w,
            AGENTS,
            integration,
            "notion-get-self",
            serde_json::json!({}),
        );
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(())) => {
                pending.remove(0);
            }
            Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => {
                let names: Vec<&str> = pending
                    .iter()
                    .filter_map(|i| INTEGRATIONS.get(*i).map(|(n, _)| *n))
                    .collect();
                break Err(format!(
                    "no tool call for {} succeeded within {} s of the final heal ({attempts} attempts)",
                    names.join(", "),
                    TOOL_LIVENESS_BOUND.as_secs()
                ));
            }
        }
    };
    *w.tool_liveness
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(outcome);
}

/// Asks the current leader for `change`, again and again until it is made or `until`.
async fn change_members(w: &WorkloadSetup, change: MemberChange, until: Duration) -> bool {
    let text = match change {
        MemberChange::Remove(n) => format!("remove n{n}"),
        MemberChange::Join(n) => format!("join n{n}"),
    };
    loop {
        let leader = w.registry.all().into_iter().find(|(id, node)| {
            let m = node.control.raft().metrics().borrow().clone();
            m.state == openraft::ServerState::Leader && m.current_leader == Some(*id)
        });
        if let Some((id, node)) = leader {
            w.trace
                .record(sim_now(), "operator", format!("n{id} <- {text}"));
            let (reply, answer) = oneshot::channel();
            let outcome = match node.members.try_send(MemberRequest { change, reply }) {
                Err(_) => Err("node busy or down".to_string()),
                Ok(()) => answer.await.unwrap_or_else(|_| Err("node crashed".into())),
            };
            let done = match &outcome {
                Ok(()) => "ok".to_string(),
                Err(why) => format!("failed {why}"),
            };
            w.trace
                .record(sim_now(), "operator", format!("n{id} -> {done}"));
            if outcome.is_ok() {
                return true;
            }
        }
        if sim_now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Membership changes as a fault: now and then, an operator removes a node from the group
/// through the leader and, a few seconds later, adds it back (join); the join is retried
/// until it is made (after the final heal at the latest).
async fn operator(w: WorkloadSetup) {
    let mut rng = ChaCha8Rng::seed_from_u64(w.seed ^ 0x006f_7065_7261);
    let mut next = Duration::from_millis(rng.random_range(3_000..6_000));
    while next + Duration::from_secs(4) < w.heal_at {
        tokio::time::sleep(next.saturating_sub(sim_now())).await;
        let n = rng.random_range(1..=w.nodes);
        // A remove whose answer was lost may still have been made: join it back whatever
        // the answer (a join of a node that is a voter already changes nothing).
        change_members(
            &w,
            MemberChange::Remove(n),
            sim_now() + Duration::from_secs(3),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
        let until = w.heal_at + MEMBERSHIP_BOUND;
        if !change_members(&w, MemberChange::Join(n), until).await {
            w.trace.record(
                sim_now(),
                "operator",
                format!(
                    "n{n} could not join again within {} s of the final heal",
                    MEMBERSHIP_BOUND.as_secs()
                ),
            );
        }
        next = sim_now() + Duration::from_millis(rng.random_range(3_000..8_000));
    }
}

/// Drains start no earlier than this, ms (the nodes record their labels first).
pub const FIRST_DRAIN_MS: u64 = 2_000;
/// How long a node stays drained before the operator undrains it, ms.
pub const DRAIN_HOLD_MS: (u64, u64) = (1_500, 5_000);
/// Time between an undrain and the next drain, ms.
pub const DRAIN_GAP_MS: (u64, u64) = (500, 3_000);

/// Marks `node` draining (or not) through random nodes (never `avoid`) until written,
/// refused, or `until`.
async fn set_draining(
    w: &WorkloadSetup,
    rng: &mut ChaCha8Rng,
    node: NodeId,
    draining: bool,
    until: Duration,
    avoid: Option<NodeId>,
) -> bool {
    let cmd = quire_raft::Command::SetNodeDraining { node, draining };
    while sim_now() < until {
        let via = rng.random_range(1..=w.nodes);
        if Some(via) == avoid && w.nodes > 1 {
            continue;
        }
        match access_call_as(w, "operator", via, AccessOp::Plain(cmd.clone())).await {
            OpResult::Written => return true,
            OpResult::Rejected { .. } => return false,
            OpResult::Failed { .. } => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => return false,
        }
    }
    false
}

/// Drains as an operator makes them: now and then a node is marked draining
/// (`SetNodeDraining`, what `quire ctl nodes drain` proposes) and undrained a few seconds
/// later; in half the seeds the last drain is left on through the end of the run, so the
/// drain must complete after the final heal. Only drains before the heal.
async fn drainer(w: WorkloadSetup) {
    let mut rng = ChaCha8Rng::seed_from_u64(w.seed ^ 0x0064_7261_696e);
    let keep_last = rng.random_bool(0.5);
    let last_start = w.heal_at.saturating_sub(Duration::from_millis(500));
    let mut next = Duration::from_millis(FIRST_DRAIN_MS + rng.random_range(0..2_000));
    while next < last_start {
        tokio::time::sleep(next.saturating_sub(sim_now())).await;
        let n = rng.random_range(1..=w.nodes);
        if !set_draining(&w, &mut rng, n, true, w.heal_at, None).await {
            next = sim_now() + Duration::from_millis(rng.random_range(500..2_000));
            continue;
        }
        let hold = Duration::from_millis(rng.random_range(DRAIN_HOLD_MS.0..DRAIN_HOLD_MS.1));
        // The last drain: undrained, it would leave no room for another before the heal.
        let last = sim_now() + hold + Duration::from_millis(DRAIN_GAP_MS.1) >= last_start;
        if keep_last && last {
            w.trace
                .record(sim_now(), "operator", format!("n{n} stays drained"));
            return;
        }
        tokio::time::sleep(hold).await;
        // Undrained even after the heal: the mark must not outlive the operator's intent.
        set_draining(&w, &mut rng, n, false, w.stop_at, None).await;
        next = sim_now() + Duration::from_millis(rng.random_range(DRAIN_GAP_MS.0..DRAIN_GAP_MS.1));
    }
}

/// The operator drains a node that went dark ([`crate::faults::dark_drain`]): marked
/// draining through the other nodes while it is cut off, undrained 0.5-1.5 s after it is
/// back in touch.
async fn dark_drainer(w: WorkloadSetup) {
    let Some(d) = w.dark_drain else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(w.seed ^ 0x6461_726b_6f70);
    tokio::time::sleep(Duration::from_millis(d.at_ms).saturating_sub(sim_now())).await;
    w.trace.record(
        sim_now(),
        "operator",
        format!("n{} went dark: drain it", d.node),
    );
    let written = set_draining(
        &w,
        &mut rng,
        d.node,
        true,
        Duration::from_millis(d.until_ms).min(w.heal_at),
        Some(d.node),
    )
    .await;
    if !written {
        return;
    }
    let back = d.until_ms + rng.random_range(500..1_500);
    tokio::time::sleep(Duration::from_millis(back).saturating_sub(sim_now())).await;
    set_draining(&w, &mut rng, d.node, false, w.stop_at, None).await;
}

/// The client host's software: the admins, the agents, the operator and the liveness
/// probes; ends when all are done.
pub async fn run_workload(w: WorkloadSetup) -> turmoil::Result {
    let mut tasks = Vec::new();
    for admin in 0..ADMINS {
        tasks.push(tokio::spawn(admin_loop(w.clone(), admin)));
    }
    for agent in 0..AGENTS {
        tasks.push(tokio::spawn(agent_loop(w.clone(), agent)));
    }
    tasks.push(tokio::spawn(access_admin(w.clone())));
    tasks.push(tokio::spawn(liveness_probe(w.clone())));
    tasks.push(tokio::spawn(tool_liveness_probe(w.clone())));
    if w.membership {
        tasks.push(tokio::spawn(operator(w.clone())));
    }
    tasks.push(tokio::spawn(drainer(w.clone())));
    tasks.push(tokio::spawn(dark_drainer(w.clone())));
    for task in tasks {
        task.await?;
    }
    Ok(())
}

/// Sends a sim admin's access change (or read) to `node` and waits (within the deadline)
/// for its result; traced (the tenant History holds only the tenant admins' operations).
async fn access_call(w: &WorkloadSetup, node: NodeId, op: AccessOp) -> OpResult {
    access_call_as(w, "secadmin", node, op).await
}

/// [`access_call`] traced as `who`.
async fn access_call_as(w: &WorkloadSetup, who: &str, node: NodeId, op: AccessOp) -> OpResult {
    w.trace
        .record(sim_now(), who, format!("n{node} <- {}", access_text(&op)));
    let result = match w.registry.get(node) {
        None => OpResult::Failed {
            why: "node down".into(),
        },
        Some(live) => {
            let (reply, answer) = oneshot::channel();
            match live.requests.try_send(Request {
                op: Op::Access(op),
                reply,
            }) {
                Err(_) => OpResult::Failed {
                    why: "node busy or down".into(),
                },
                Ok(()) => match tokio::time::timeout(OP_DEADLINE, answer).await {
                    Err(_) => OpResult::Failed {
                        why: "deadline".into(),
                    },
                    Ok(Err(_)) => OpResult::Failed {
                        why: "node crashed".into(),
                    },
                    Ok(Ok(result)) => result,
                },
            }
        }
    };
    w.trace.record(
        sim_now(),
        who,
        format!("n{node} -> {}", result_text(&result)),
    );
    result
}

/// Chance, in percent, that a token or a role binding the sim admin gives is short-lived.
pub const SHORT_LIVED_PERCENT: u32 = 40;
/// Lifetime of a short-lived token or role binding, ms (near the nodes' clock skew, so
/// expiry decisions meet it).
pub const SHORT_TTL_MS: (u64, u64) = (1_500, 6_000);
/// Most restrictions the sim admin sets in a run (each takes a workspace from an agent).
pub const MAX_RESTRICTIONS: u32 = 2;

/// The security admin's state: what it issued and assigned.
struct AccessAdmin {
    rng: ChaCha8Rng,
    generation: u64,
    restrictions: u32,
}

impl AccessAdmin {
    fn node(&mut self, w: &WorkloadSetup) -> NodeId {
        self.rng.random_range(1..=w.nodes)
    }

    fn ttl(&mut self, agent: u32) -> Option<u64> {
        // The liveness probe's own token and roles never expire.
        (agent < AGENTS && self.rng.random_range(0..100) < SHORT_LIVED_PERCENT)
            .then(|| self.rng.random_range(SHORT_TTL_MS.0..=SHORT_TTL_MS.1))
    }

    /// Issues a fresh token to `agent` for `integration`'s workspace; true if written.
    async fn issue(&mut self, w: &WorkloadSetup, agent: u32, integration: usize) -> bool {
        self.generation += 1;
        let name = INTEGRATIONS.get(integration).map_or("?", |(n, _)| *n);
        let token_id = format!("tk-{agent}-{name}-{}", self.generation);
        let secret = format!("qk_sim_{}_{}", w.seed, self.generation);
        let op = AccessOp::IssueToken {
            principal: agent_principal(agent),
            workspace: format!("ws-{name}"),
            token_id: token_id.clone(),
            secret_hash: quire_raft::hash_api_token(&secret),
            ttl_ms: self.ttl(agent),
        };
        let node = self.node(w);
        if access_call(w, node, op).await == OpResult::Written {
            w.credentials.set(
                agent,
                integration,
                Credential {
                    token_id,
                    secret,
                    refused: false,
                },
            );
            return true;
        }
        false
    }

    async fn assign(&mut self, w: &WorkloadSetup, agent: u32, integration: usize) -> bool {
        let name = INTEGRATIONS.get(integration).map_or("?", |(n, _)| *n);
        let op = AccessOp::AssignRole {
            principal: agent_principal(agent),
            workspace: format!("ws-{name}"),
            ttl_ms: self.ttl(agent),
        };
        let node = self.node(w);
        matches!(access_call(w, node, op).await, OpResult::Written)
    }

    /// Makes one revocation and records it (acknowledged or not).
    async fn revoke(&mut self, w: &WorkloadSetup, what: Revoked) {
        let op = match &what {
            Revoked::Token(token_id) => AccessOp::RevokeToken {
                token_id: token_id.clone(),
            },
            Revoked::Binding(binding) => AccessOp::RevokeRole { binding: *binding },
            Revoked::Restriction {
                principal,
                workspace,
            } => AccessOp::Restrict {
                principal: principal.clone(),
                workspace: workspace.clone(),
            },
        };
        let node = self.node(w);
        let invoked_ms = sim_now().as_millis() as u64;
        let result = access_call(w, node, op).await;
        let acked_ms = (result == OpResult::Written).then(|| sim_now().as_millis() as u64);
        if let Some(at) = acked_ms {
            w.trace.record(
                sim_now(),
                "secadmin",
                format!("{what} acknowledged at {at} ms"),
            );
        }
        w.revocations.push(RevocationRecord {
            what,
            node,
            invoked_ms,
            acked_ms,
        });
    }

    async fn bindings(&mut self, w: &WorkloadSetup) -> Option<Vec<BindingInfo>> {
        let node = self.node(w);
        match access_call(w, node, AccessOp::Bindings).await {
            OpResult::Bindings(b) => Some(b),
            _ => None,
        }
    }
}

/// Until `op` is written (or was already), through random nodes.
async fn until_written(w: &WorkloadSetup, admin: &mut AccessAdmin, op: AccessOp) {
    loop {
        let node = admin.node(w);
        match access_call(w, node, op.clone()).await {
            OpResult::Written => return,
            OpResult::Rejected { kind } if kind == "already_exists" => return,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The access setup: the agents' tenant, a workspace per integration, a principal per agent
/// (the liveness probe's included) that is a member of every workspace with a token for
/// each, and workspace_manager roles for the agents. Each step is retried until written.
async fn access_setup(w: &WorkloadSetup, admin: &mut AccessAdmin) {
    let ids = (
        quire_raft::TenantId::new(SIM_TENANT),
        INTEGRATIONS
            .iter()
            .map(|(name, _)| {
                Ok((
                    quire_raft::IntegrationId::new(*name)?,
                    quire_raft::WorkspaceId::new(format!("ws-{name}"))?,
                ))
            })
            .collect::<Result<Vec<_>, quire_raft::IdError>>(),
        (0..=AGENTS)
            .map(|a| quire_raft::PrincipalId::new(agent_principal(a)))
            .collect::<Result<Vec<_>, _>>(),
    );
    let (Ok(tenant), Ok(spaces), Ok(principals)) = ids else {
        w.trace
            .record(sim_now(), "secadmin", "access setup: bad ids");
        return;
    };
    let mut steps = vec![quire_raft::Command::CreateTenant {
        tenant: tenant.clone(),
        display_name: "Simulated agents".into(),
    }];
    // Only its hash matters here: the simulated data planes hold the sandbox tokens.
    let key = quire_raft::MasterKey::from_bytes([7; 32]);
    for ((integration, workspace), (name, token)) in spaces.iter().zip(INTEGRATIONS) {
        let Ok(sealed_token) = key.seal(
            token.as_bytes(),
            &quire_raft::seal::integration_aad(SIM_TENANT, name),
            &mut admin.rng,
        ) else {
            return;
        };
        steps.push(quire_raft::Command::AddIntegration {
            tenant: tenant.clone(),
            integration: integration.clone(),
            display_name: format!("Sandbox {name}"),
            sealed_token,
            budget: quire_raft::Budget {
                requests_per_second: budget().requests_per_second,
                burst: budget().burst,
            },
        });
        steps.push(quire_raft::Command::CreateWorkspace {
            tenant: tenant.clone(),
            workspace: workspace.clone(),
            display_name: format!("Workspace {name}"),
            integration: integration.clone(),
        });
    }
    for principal in &principals {
        steps.push(quire_raft::Command::CreatePrincipal {
            tenant: tenant.clone(),
            principal: principal.clone(),
            display_name: format!("Agent {}", principal.as_str()),
        });
        for (_, workspace) in &spaces {
            steps.push(quire_raft::Command::GrantWorkspace {
                tenant: tenant.clone(),
                principal: principal.clone(),
                workspace: workspace.clone(),
            });
        }
    }
    for step in steps {
        until_written(w, admin, AccessOp::Plain(step)).await;
    }
    for agent in 0..=AGENTS {
        for integration in 0..INTEGRATIONS.len() {
            while !admin.issue(w, agent, integration).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for agent in 0..AGENTS {
        for integration in 0..INTEGRATIONS.len() {
            while !admin.assign(w, agent, integration).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    w.trace.record(sim_now(), "secadmin", "access setup done");
}

/// Security admins revoking at once (each through its own random nodes).
pub const REVOKERS: u64 = 2;

/// The security admins: one sets up access; then, until the workload stops, [`REVOKERS`]
/// of them revoke tokens, role bindings and (at most [`MAX_RESTRICTIONS`] times in all)
/// everything of an agent in a workspace, and assign new roles, while a token desk issues
/// new tokens to agents whose token a node refused (revoked or expired).
async fn access_admin(w: WorkloadSetup) {
    let admin = |n: u64| AccessAdmin {
        rng: ChaCha8Rng::seed_from_u64(w.seed ^ 0x0073_6563_7572 ^ (n << 40)),
        generation: n << 32,
        restrictions: 0,
    };
    let mut desk = admin(0);
    access_setup(&w, &mut desk).await;
    let mut tasks = Vec::new();
    for n in 1..=REVOKERS {
        tasks.push(tokio::spawn(revoker(w.clone(), admin(n))));
    }
    while sim_now() < w.stop_at {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (agent, integration) in w.credentials.to_reissue() {
            desk.issue(&w, agent, integration).await;
        }
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn revoker(w: WorkloadSetup, mut admin: AccessAdmin) {
    let per_revoker = MAX_RESTRICTIONS.div_ceil(REVOKERS as u32);
    while sim_now() < w.stop_at {
        let pause = admin.rng.random_range(200..800);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let agent = admin.rng.random_range(0..AGENTS);
        let integration = admin.rng.random_range(0..INTEGRATIONS.len());
        let name = INTEGRATIONS.get(integration).map_or("?", |(n, _)| *n);
        match admin.rng.random_range(0..100u32) {
            0..45 => {
                if let Some(c) = w.credentials.get(agent, integration) {
                    admin.revoke(&w, Revoked::Token(c.token_id)).await;
                }
            }
            45..75 => {
                let Some(bindings) = admin.bindings(&w).await else {
                    continue;
                };
                let mine: Vec<u64> = bindings
                    .iter()
                    .filter(|b| b.principal != agent_principal(AGENTS))
                    .map(|b| b.id)
                    .collect();
                if !mine.is_empty() {
                    let binding = mine[admin.rng.random_range(0..mine.len())];
                    admin.revoke(&w, Revoked::Binding(binding)).await;
                }
            }
            75..95 => {
                admin.assign(&w, agent, integration).await;
            }
            _ if admin.restrictions < per_revoker => {
                admin.restrictions += 1;
                admin
                    .revoke(
                        &w,
                        Revoked::Restriction {
                            principal: agent_principal(agent),
                            workspace: format!("ws-{name}"),
                        },
                    )
                    .await;
            }
            _ => {}
        }
    }
}
