//! An integration's rate-limiter state follows its shard when the shard moves: three real
//! `quire` processes (mutual TLS between them; in the first test in two regions) and the Notion sandbox with its own rate limit;
//! one integration with a budget of 3 requests/s and a burst of 12; MCP clients on all three
//! nodes call a tool on it without pause. Under that load the shard's owner is drained (the
//! admin API), so the shard moves to another node while calls keep coming, and the load goes
//! on after the move. Notion (the sandbox) never answers 429 and never admits more in one
//! second than the budget allows; every call that failed told the agent it may retry
//! (`retry_after_seconds`); the old owner handed its limiter to the new one, which adopted it.
//!
//! Why this can fail. The sandbox's bucket (3/s, 14) and Quire's (3/s, 12) refill at the same
//! rate. The test first empties the sandbox's bucket and lets it earn 2 tokens; Quire's starts
//! empty on the owner's first call. From then on, while Quire's sends follow one bucket, the
//! sandbox holds about 2 tokens more than Quire's bucket — slack for network jitter — and
//! never answers 429. Under this load the old owner's bucket is empty when the move is applied
//! (every token is taken as it is earned). Nobody sends for the hold-off S (1 s) and a little
//! more (about 1.5 s in all, measured), so the sandbox holds about 2 + 4.5 tokens when the new
//! owner may send. A new owner whose bucket started full would send its whole burst of 12 at
//! once (twelve clients each have a call waiting), and the sandbox would answer some of them
//! 429 (with a full bucket forced at the adopting node, a run saw 3 answered 429 and the test
//! failed; with the carried snapshot, none). The handed-off snapshot (about empty, refilled
//! during the hold-off, so about 4.5 tokens) keeps the two buckets in step. A pause would
//! carry the same way (the old owner's `Retry-After` is in the snapshot); the actors' tests
//! check that a merge never shortens one.
//!
//! The second test moves the integration without moving a shard: under the same load the
//! tenant's residency changes, so its integration goes to a shard of the new residency that
//! another node has owned for long (a second tenant, already of that residency, has an
//! integration in it). The old shard's owner keeps its shard (a third tenant's integration
//! keeps it occupied, so it is not released), so only its fence's check that the shard is
//! still the tenant's stops the calls queued there for a permit; the new owner holds the
//! tenant's calls S from when it sees the change. With that check taken out of
//! `node/src/forward.rs` a run failed: the old owner went on sending its queued calls beside
//! the new owner, 7 requests in one second and one answered 429 (with it: at most 4, none).

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cluster_common::mcp::Session;
use cluster_common::shards::{
    Agent, Call, Three, admin_ok, call, first_owner, metric, move_node_3, node_entry,
    open_sessions, owner_of, placement, sandbox_reset, sandbox_stats, shard_entry, wait_for,
    wait_metric, wait_owner,
};
use quire_node::local_cluster::LocalCluster;
use quire_raft::placement::{NodeLabels, Residency, ShardId, candidates, rendezvous};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

const BUDGET_RPS: u64 = 3;
const BUDGET_BURST: u64 = 12;
const SANDBOX_BURST: u64 = 14;
/// Tokens the sandbox's bucket holds when the load starts (and about how many it stays ahead
/// of Quire's): room for network jitter, well below the burst a full bucket would send.
const SANDBOX_SLACK: u64 = 2;
/// Enough clients that a full bucket's burst would all go at once (each has one call open).
const CLIENTS_PER_NODE: usize = 4;
/// Load before the drain starts, and after the shard has moved.
const BEFORE: Duration = Duration::from_secs(4);
const AFTER: Duration = Duration::from_secs(6);
const TOOL: &str = "notion-get-self";

/// What one client saw.
#[derive(Default)]
struct Seen {
    ok: u32,
    /// Calls that succeeded after the shard had moved.
    ok_after_move: u32,
    times: Vec<Instant>,
    /// Failed calls that carried `retry_after_seconds`.
    retryable: Vec<String>,
    /// Failed calls that did not.
    failed: Vec<String>,
}

/// Provisions the load's agent and opens four MCP sessions on each node; the agent's token.
async fn agent_and_sessions(c: &LocalCluster, agent: &Agent<'_>) -> Vec<(u64, Session)> {
    let token = agent.provision(c, 1).await;
    let http = cluster_common::client();
    open_sessions(&http, c, &[1, 2, 3], CLIENTS_PER_NODE, &token).await
}

/// Empties the sandbox's bucket for the integration's Notion token (straight to the sandbox,
/// until it answers 429), then lets it earn SANDBOX_SLACK tokens and resets its counters: from
/// here on it holds about that many more than Quire's bucket, which starts empty on the
/// owner's first call (see the module docs). Left alone it would sit full, above anything
/// Quire sends at once, and could not tell a carried bucket from a full one.
async fn sandbox_at_slack(c: &LocalCluster, notion_token: &str) {
    let http = cluster_common::client();
    let mut spent = 0;
    loop {
        let r = http
            .get(format!("{}/v1/users/me", c.status.sandbox_url))
            .bearer_auth(notion_token)
            .header("Notion-Version", "2025-09-03")
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(r.status().is_success(), "{}", r.status());
        spent += 1;
        assert!(
            spent <= 10 * SANDBOX_BURST,
            "the sandbox never answered 429"
        );
    }
    tokio::time::sleep(Duration::from_millis(SANDBOX_SLACK * 1_000 / BUDGET_RPS)).await;
    sandbox_reset(c).await;
}

/// Calls the tool without pause from every session for `BEFORE`, then runs `change` (which
/// returns once the integration has moved), then goes on for `AFTER`. Checks that every failed
/// call told the agent it may retry, that calls succeeded after the move, and that Notion (the
/// sandbox) answered no 429 and never admitted more in one second than the budget allows.
async fn under_load(
    c: &LocalCluster,
    sessions: Vec<(u64, Session)>,
    notion_label: &str,
    change: impl AsyncFnOnce(),
) -> Value {
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (id, session) in sessions {
        let (stop, moved) = (stop.clone(), moved.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut n = 10;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let after_move = moved.load(Ordering::SeqCst);
                match call(&session, n, TOOL).await {
                    Call::Ok => {
                        seen.ok += 1;
                        seen.times.push(Instant::now());
                        if after_move {
                            seen.ok_after_move += 1;
                        }
                    }
                    Call::Retry(secs, err) if secs >= 1 => seen.retryable.push(err),
                    other => seen.failed.push(format!("{other:?}")),
                }
            }
            (id, seen)
        }));
    }

    tokio::time::sleep(BEFORE).await;
    let changed_at = Instant::now();
    change().await;
    moved.store(true, Ordering::SeqCst);
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::SeqCst);

    let mut ok_by_node: BTreeMap<u64, u32> = BTreeMap::new();
    let mut all_times = Vec::new();
    let (mut ok_after_move, mut retryable, mut failed) = (0, Vec::new(), Vec::new());
    for client in clients {
        let (id, seen) = client.await.unwrap();
        *ok_by_node.entry(id).or_default() += seen.ok;
        all_times.extend(seen.times.iter().copied());
        ok_after_move += seen.ok_after_move;
        retryable.extend(
            seen.retryable
                .into_iter()
                .map(|e| format!("node {id}: {e}")),
        );
        failed.extend(seen.failed.into_iter().map(|e| format!("node {id}: {e}")));
    }
    assert!(
        failed.is_empty(),
        "calls failed without retry_after_seconds: {failed:?}"
    );
    assert!(
        ok_after_move > 0,
        "no call succeeded after the move ({ok_by_node:?})"
    );

    let mut bins = BTreeMap::<i64, u32>::new();
    for t in &all_times {
        let ms = if *t >= changed_at {
            t.duration_since(changed_at).as_millis() as i64
        } else {
            -(changed_at.duration_since(*t).as_millis() as i64)
        };
        *bins.entry(ms.div_euclid(250) * 250).or_default() += 1;
    }
    eprintln!("ok completions by 250 ms bin from the change: {bins:?}");
    let stats = sandbox_stats(c).await;
    let seen = &stats["integrations"][notion_label];
    let requests = seen["requests"].as_u64().unwrap_or(0);
    let max = seen["max_per_second"].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "calls by entry node {ok_by_node:?} ({ok_after_move} after the move); {} retryable \
         failures {:?}; Notion saw {requests} requests, at most {max} in one second, {} \
         answered 429",
        retryable.len(),
        retryable.iter().take(5).collect::<Vec<_>>(),
        seen["rate_limited"]
    );
    assert!(
        requests > 0,
        "Notion saw no request for {notion_label}: {stats}"
    );
    assert_eq!(
        seen["rate_limited"],
        json!(0),
        "Notion answered 429: {stats}"
    );
    assert!(
        max <= BUDGET_BURST + BUDGET_RPS,
        "{max} requests in one second, over the budget's {} ({stats})",
        BUDGET_BURST + BUDGET_RPS
    );
    seen.clone()
}

/// Notion saw one node send at a time: the sandbox tells the nodes apart by their source
/// addresses (`127.0.0.{id}`, see `three`), and the sender changed at most `changes` times
/// between consecutive requests — once per move of the integration — where two nodes sending
/// at once would switch back and forth. More than one sender: the new owner did send.
fn one_sender_at_a_time(seen: &Value, changes: u64) {
    let senders = seen["senders"].as_u64().unwrap_or(0);
    let switches = seen["sender_switches"].as_u64().unwrap_or(u64::MAX);
    eprintln!("Notion saw {senders} senders, the sender changing {switches} times");
    assert!(senders >= 2, "the new owner never sent: {seen}");
    assert!(
        switches <= changes,
        "the sender changed {switches} times for {changes} moves of the integration: two \
         nodes sent at once ({seen})"
    );
}

/// The epoch of `shard` in node 1's placement.
async fn epoch_of(c: &LocalCluster, shard: &str) -> u64 {
    shard_entry(&placement(c, 1).await, shard)["epoch"]
        .as_u64()
        .unwrap_or(0)
}

fn three(prefix: &str) -> Three<'_> {
    Three {
        prefix,
        config: "[placement]\ninterval_ms = 300\n\n[security]\nauthz_max_staleness_ms = 1000\n",
        // Each node's Notion requests leave from its own loopback address, so the sandbox
        // tells the senders apart.
        env: &[("QUIRE_NOTION_LOCAL_ADDRESS", "127.0.0.{id}")],
        sandbox_args: &["--rate-limit", "3", "--burst", "14"],
    }
}

const AGENT: Agent<'static> = Agent {
    tenant: "demo",
    integration: "share",
    workspace: "share",
    principal: "share-agent",
    notion_token: "secret_sandbox_alpha",
    budget: Some((BUDGET_RPS, BUDGET_BURST)),
};

/// The owner weighted rendezvous gives `shard` over the three equal nodes of `Three` (all in
/// the region "default"): where the placement controller puts it while all three are live.
fn rendezvous_owner(shard: &ShardId) -> Option<u64> {
    let nodes: BTreeMap<u64, NodeLabels> = (1..=3)
        .map(|id| {
            let labels = NodeLabels {
                region: "default".into(),
                zone: None,
                capacity: 100,
            };
            (id, labels)
        })
        .collect();
    rendezvous(shard, &candidates(shard, &nodes, |_| true), &nodes)
}

/// The agent whose tenant changes its residency (its integration is chosen in the test).
const MOVER: Agent<'static> = Agent {
    tenant: "mover",
    ..AGENT
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_owner_hands_its_limiter_to_the_new_owner_under_load() {
    let (_dir, mut c) = three("quire-handoff-").start().await;
    // Two regions: node 3 moves to region-a (nodes 1 and 2 stay in "default"); the tenant
    // has no residency policy, so its shard may be on either side and move across.
    move_node_3(&mut c, "region-a", Duration::from_secs(30)).await;
    wait_for(
        "node 3's labels in region-a",
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            (node_entry(&placement(&c, 1).await, 3)["region"] == json!("region-a")).then_some(())
        },
    )
    .await;
    let sessions = agent_and_sessions(&c, &AGENT).await;
    let shard = AGENT.shard(&Residency::default());
    let old_owner = first_owner(&c, &shard).await;
    sandbox_at_slack(&c, AGENT.notion_token).await;

    let epoch_before = epoch_of(&c, &shard).await;
    let mut new_owner = 0;
    let seen = under_load(&c, sessions, "alpha", async || {
        let drained_at = Instant::now();
        admin_ok(
            &c,
            1,
            Method::POST,
            &format!("/nodes/{old_owner}/drain"),
            None,
        )
        .await;
        new_owner = wait_owner(
            &c,
            1,
            &shard,
            Some(old_owner),
            Duration::from_secs(30),
            Duration::from_millis(100),
        )
        .await;
        let map = placement(&c, 1).await;
        let region = |id: u64| {
            node_entry(&map, id)["region"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        };
        eprintln!(
            "shard {shard} moved from node {old_owner} ({}) to node {new_owner} ({}) {} ms \
             after the drain",
            region(old_owner),
            region(new_owner),
            drained_at.elapsed().as_millis()
        );
    })
    .await;

    one_sender_at_a_time(&seen, epoch_of(&c, &shard).await - epoch_before);
    // The old owner handed the limiter off and the new owner adopted it; owning no shard
    // now, the drained node retired the tenant's supervisor instead of keeping it until it
    // passivates (five minutes idle by default).
    let old_page = handed_off_and_retired(&c, old_owner, new_owner).await;
    assert_eq!(
        metric(&old_page, "quire_tenant_supervisors_passivated_total"),
        0.0,
        "{old_page}"
    );
}

/// Waits until `new_owner` adopted a handed-off limiter (refusing none), `old_owner` counts
/// it sent, and `old_owner` retired a tenant supervisor; `old_owner`'s metrics page then.
async fn handed_off_and_retired(c: &LocalCluster, old_owner: u64, new_owner: u64) -> String {
    const ADOPTED: &str = "quire_limiter_handoffs_total{outcome=\"adopted\"}";
    const SENT: &str = "quire_limiter_handoffs_total{outcome=\"sent\"}";
    const REFUSED: &str = "quire_limiter_handoffs_total{outcome=\"refused\"}";
    const RETIRED: &str = "quire_tenant_supervisors_retired_total";
    let within = Duration::from_secs(20);
    let new_page = wait_metric(c, new_owner, ADOPTED, 1.0, within).await;
    assert_eq!(metric(&new_page, REFUSED), 0.0, "{new_page}");
    wait_metric(c, old_owner, SENT, 1.0, within).await;
    let old_page = wait_metric(c, old_owner, RETIRED, 1.0, within).await;
    eprintln!(
        "handoffs: node {old_owner} sent {}, node {new_owner} adopted {}; node {old_owner} \
         retired {} tenant supervisors",
        metric(&old_page, SENT),
        metric(&new_page, ADOPTED),
        metric(&old_page, RETIRED)
    );
    old_page
}

/// The residency the tenant moves to: the region every node of `Three` is in.
fn default_region() -> Residency {
    Residency {
        allowed_regions: ["default".to_string()].into_iter().collect(),
        preferred_region: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_residency_change_under_load_moves_the_integration_without_two_senders() {
    let (_dir, c) = three("quire-residency-move-").start().await;
    // A tenant of its own (unlike demo, it has no other integration), so that once its
    // integration moved the old owner serves none of its shards.
    admin_ok(
        &c,
        1,
        Method::POST,
        "/tenants",
        Some(json!({"id": MOVER.tenant, "display_name": "Mover"})),
    )
    .await;
    // An integration whose two shards (before and after the change) the controller gives
    // to different nodes while all three are live.
    let integration = (0..1_000)
        .map(|k| format!("move{k}"))
        .find(|name| {
            let agent = Agent {
                integration: name,
                ..MOVER
            };
            rendezvous_owner(&agent.shard_id(&Residency::default()))
                != rendezvous_owner(&agent.shard_id(&default_region()))
        })
        .expect("an integration whose shards have different owners");
    let mover = Agent {
        integration: &integration,
        ..MOVER
    };
    let sessions = agent_and_sessions(&c, &mover).await;
    let old_shard = mover.shard(&Residency::default());
    let new_shard = mover.shard(&default_region());

    // Two more tenants, each with an integration in one of the two shards: one of the new
    // residency, so the new shard has had its owner (at an epoch long past) before the change;
    // one of any region, so the old shard stays occupied and is not released by the change
    // (its owner is fenced for mover by the residency check alone).
    for (tenant, residency, shard) in [
        (
            "resident",
            Some(json!({"regions": ["default"]})),
            &new_shard,
        ),
        ("stayer", None, &old_shard),
    ] {
        admin_ok(
            &c,
            1,
            Method::POST,
            "/tenants",
            Some(json!({"id": tenant, "display_name": tenant})),
        )
        .await;
        let policy = if residency.is_some() {
            default_region()
        } else {
            Residency::default()
        };
        if let Some(body) = residency {
            admin_ok(
                &c,
                1,
                Method::PUT,
                &format!("/tenants/{tenant}/residency"),
                Some(body),
            )
            .await;
        }
        let neighbour = (0..10_000)
            .map(|k| format!("n{k}"))
            .find(|name| {
                let agent = Agent {
                    tenant,
                    integration: name,
                    ..MOVER
                };
                agent.shard(&policy) == *shard
            })
            .expect("an integration name in the same shard");
        admin_ok(
            &c,
            1,
            Method::POST,
            &format!("/tenants/{tenant}/integrations"),
            Some(json!({"id": neighbour, "display_name": "Neighbour",
                        "notion_token": "secret_sandbox_beta"})),
        )
        .await;
    }
    let old_owner = first_owner(&c, &old_shard).await;
    let new_owner = first_owner(&c, &new_shard).await;
    assert_ne!(
        old_owner, new_owner,
        "shards {old_shard} and {new_shard} have the same owner: the test needs an agent \
         whose two shards land on different nodes"
    );
    sandbox_at_slack(&c, mover.notion_token).await;

    let epochs_before = epoch_of(&c, &old_shard).await + epoch_of(&c, &new_shard).await;
    let seen = under_load(&c, sessions, "alpha", async || {
        admin_ok(
            &c,
            2,
            Method::PUT,
            &format!("/tenants/{}/residency", MOVER.tenant),
            Some(json!({"regions": ["default"]})),
        )
        .await;
        eprintln!(
            "tenant mover's integration moved from shard {old_shard} (node {old_owner}) to \
             {new_shard} (node {new_owner})"
        );
    })
    .await;

    // No shard changed owner: the integration moved with its tenant's residency alone.
    let map = placement(&c, 1).await;
    assert_eq!(owner_of(&map, &new_shard), Some(new_owner), "{map}");
    assert_eq!(owner_of(&map, &old_shard), Some(old_owner), "{map}");
    // One move of the integration (the residency change), and any move of either shard.
    let epochs_after = epoch_of(&c, &old_shard).await + epoch_of(&c, &new_shard).await;
    one_sender_at_a_time(&seen, 1 + epochs_after - epochs_before);
    // The old shard's owner handed mover's limiter to the new shard's owner, and, owning no
    // shard of mover's any more (it still owns the old shard, for "stayer"), retired mover's
    // supervisor.
    let old_page = handed_off_and_retired(&c, old_owner, new_owner).await;
    eprintln!(
        "node {old_owner} fenced {} calls",
        metric(&old_page, "quire_fenced_calls_total")
    );
}
