//! The workload: simulated admins on a client host, each issuing writes (unique
//! `CreateTenant`s, and creates that `apply` rejects) and linearizable reads through random
//! nodes, each with a deadline, recording invocation and completion times (simulated) and
//! outcomes in the [`History`]. After the final heal, a liveness probe must get a write
//! through within [`LIVENESS_BOUND`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quire_raft::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;

use crate::check::{History, OpRecord};
use crate::node::{Op, OpResult, Registry, Request};
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

/// The client host's software: the admins and the liveness probe; ends when all are done.
pub async fn run_workload(w: WorkloadSetup) -> turmoil::Result {
    let mut tasks = Vec::new();
    for admin in 0..ADMINS {
        tasks.push(tokio::spawn(admin_loop(w.clone(), admin)));
    }
    tasks.push(tokio::spawn(liveness_probe(w.clone())));
    for task in tasks {
        task.await?;
    }
    Ok(())
}
