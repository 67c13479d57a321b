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
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;

use crate::check::{History, OpRecord};
use crate::node::{MemberChange, MemberRequest, Op, OpResult, Registry, Request, ToolRequest};
use crate::notion::{INTEGRATIONS, designated_node};
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
    /// When it completed and how: `Ok(())` or why it failed.
    pub completed: Option<(u64, Result<(), String>)>,
}

/// The agents' tool calls, shared by their tasks.
#[derive(Clone, Default)]
pub struct ToolHistory(Arc<Mutex<Vec<ToolRecord>>>);

impl ToolHistory {
    fn push(&self, record: ToolRecord) -> usize {
        let mut calls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        calls.push(record);
        calls.len() - 1
    }

    fn complete(&self, index: usize, at_ms: u64, result: Result<(), String>) {
        if let Some(call) = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(index)
        {
            call.completed = Some((at_ms, result));
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
}

fn op_text(op: &Op) -> String {
    match op {
        Op::Create { tenant } => format!("create {tenant}"),
        Op::CreateInvalid { tenant } => format!("create-invalid {tenant}"),
        Op::Read => "read".into(),
    }
}

fn result_text(result: &OpResult) -> String {
    match result {
        OpResult::Written => "ok".into(),
        OpResult::Rejected { kind } => format!("rejected {kind}"),
        OpResult::Read(ids) => format!("read {} tenants", ids.len()),
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
            0..55 => Op::Create {
                tenant: format!("t{admin}-{n}"),
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

/// Sends one tool call to the integration's designated node and waits (within the
/// deadline) for its outcome, recording both ends.
async fn call_tool(
    w: &WorkloadSetup,
    agent: u32,
    integration: usize,
    tool: &'static str,
    arguments: serde_json::Value,
) -> Result<(), String> {
    let who = format!("agent{agent}");
    let node = designated_node(integration, w.nodes);
    let name = INTEGRATIONS.get(integration).map_or("?", |(n, _)| *n);
    let invoked = sim_now();
    w.trace
        .record(invoked, &who, format!("n{node} <- {tool} {name}"));
    let index = w.tools.push(ToolRecord {
        agent,
        node,
        integration,
        tool,
        invoked_ms: invoked.as_millis() as u64,
        completed: None,
    });
    let result = match w.registry.get(node) {
        None => Err("node down".to_string()),
        Some(live) => {
            let (reply, answer) = oneshot::channel();
            let request = ToolRequest {
                integration,
                session: format!("agent{agent}"),
                tool: tool.to_string(),
                arguments,
                reply,
            };
            match live.tools.try_send(request) {
                Err(_) => Err("node busy or down".to_string()),
                Ok(()) => match tokio::time::timeout(TOOL_DEADLINE, answer).await {
                    Err(_) => Err("deadline".to_string()),
                    Ok(Err(_)) => Err("node crashed".to_string()),
                    Ok(Ok(result)) => result,
                },
            }
        }
    };
    let done = sim_now();
    let text = match &result {
        Ok(()) => "ok".to_string(),
        Err(why) => format!("failed {why}"),
    };
    w.trace.record(done, &who, format!("n{node} -> {text}"));
    w.tools
        .complete(index, done.as_millis() as u64, result.clone());
    result
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
        let _ = call_tool(&w, agent, integration, tool, arguments).await;
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(MIN_THINK_MS..=MAX_THINK_MS),
        ))
        .await;
    }
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
    tasks.push(tokio::spawn(liveness_probe(w.clone())));
    tasks.push(tokio::spawn(tool_liveness_probe(w.clone())));
    if w.membership {
        tasks.push(tokio::spawn(operator(w.clone())));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}
