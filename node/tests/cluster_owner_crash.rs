//! Shard owners on real processes that crash, and residency on real processes in two regions.
//!
//! `the_owners_crash_never_overruns_the_budget`: three `quire` processes (mutual TLS) in two
//! regions (node 3 in `region-a`) and the
//! Notion sandbox enforcing Notion's limit; one integration with a budget of 3 requests/s
//! (burst 3); agents on every node call a read tool in a loop, retrying what Quire says to
//! retry (`retry_after_seconds`, a 503 with `Retry-After`) and moving to the next node when
//! theirs stops answering. The integration's shard owner is killed with SIGKILL; the load
//! goes on until the controller has moved the shard and every agent's calls succeed again.
//! The sandbox never answered 429 and never admitted more in one second than the budget
//! allows (burst + rate), the new owner is alive, and no call failed without being retryable.
//!
//! `a_pinned_tenant_never_leaves_its_region`: nodes 1 and 2 in `region-b`, node 3 in
//! `region-a`; a tenant pinned to `region-a`. Agents on every node call its tools: the B nodes'
//! calls work (forwarded to node 3), and their `/metrics` show no Notion request, no limiter
//! and no tenant supervisor for the tenant. With node 3 stopped the tenant's calls fail on the
//! B nodes with a retryable error naming its residency — never sent from region-b — and work
//! again once node 3 is back.

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_common::mcp::{ACCEPT, CLUSTER_DEADLINES, PROTOCOL_VERSION, Session, message_of};
use cluster_common::shards::{
    Agent, Three, admin_ok, metric, metrics_page, node_entry, owner_of, placement, sandbox_reset,
    sandbox_stats, shard_entry, wait_for,
};
use quire_node::local_cluster::LocalCluster;
use quire_raft::placement::Residency;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

const BUDGET_RPS: u64 = 3;
const BUDGET_BURST: u64 = 3;
const CLIENTS_PER_NODE: usize = 2;
const TOOL: &str = "notion-get-self";
const INTERVAL_MS: u64 = 300;
const SUSPECT_MS: u64 = 1_000;
const GRACE_MS: u64 = 3_000;
/// Generous bounds on waits for a loaded 2-core machine (never on safety assertions).
const SETTLE: Duration = Duration::from_secs(60);
const MOVE_BOUND: Duration = Duration::from_secs(90);
/// Longest an agent waits before a retry, whatever the answer asked.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(200);

/// A cluster of three nodes (mutual TLS, the sandbox at Notion's 3/s with a bucket of 6),
/// placement rounds every 300 ms, a silent node suspected after 1 s and its shards moved
/// after 3 s.
async fn cluster(prefix: &str, extra_env: &[(&str, &str)]) -> (tempfile::TempDir, LocalCluster) {
    let (suspect, grace) = (SUSPECT_MS.to_string(), GRACE_MS.to_string());
    let mut env = vec![
        ("QUIRE_PLACEMENT_SUSPECT_AFTER_MS", suspect.as_str()),
        ("QUIRE_PLACEMENT_GRACE_MS", grace.as_str()),
    ];
    env.extend_from_slice(extra_env);
    Three {
        prefix,
        config: &format!("[placement]\ninterval_ms = {INTERVAL_MS}\n"),
        env: &env,
        sandbox_args: &["--rate-limit", "3", "--burst", "6"],
    }
    .start()
    .await
}

/// An agent of `tenant` in workspace `ws`, calling through `integration` (`notion_token`, with
/// the test's budget).
fn budgeted<'a>(tenant: &'a str, integration: &'a str, notion_token: &'a str) -> Agent<'a> {
    Agent {
        tenant,
        integration,
        workspace: "ws",
        principal: "agent",
        notion_token,
        budget: Some((BUDGET_RPS, BUDGET_BURST)),
    }
}

/// What one tool call came back with, as an agent sees it.
#[derive(Debug, Clone)]
enum Outcome {
    Ok,
    /// A tool error or a 503 that says when to retry: (seconds, the code and message).
    Retry(u64, String),
    /// No HTTP answer (connection refused or reset, deadline).
    NoAnswer(String),
    /// Anything else: a failure an agent cannot act on by retrying.
    Failed(String),
}

/// One `tools/call` of `TOOL` in `session` on node base URL `base`.
async fn call_once(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    session: &str,
    id: u64,
) -> Outcome {
    let sent = http
        .post(format!("{base}/mcp"))
        .bearer_auth(token)
        .header("Accept", ACCEPT)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", PROTOCOL_VERSION)
        .timeout(CLUSTER_DEADLINES.message)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                      "params": {"name": TOOL, "arguments": {}}}))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::NoAnswer(format!("{e:?}")),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match response.text().await {
        Ok(b) => b,
        Err(e) => return Outcome::NoAnswer(format!("reading the body: {e:?}")),
    };
    if status == 503
        && let Some(secs) = retry_after
    {
        return Outcome::Retry(secs, format!("503 {body}"));
    }
    if status != 200 {
        return Outcome::Failed(format!("{status} {body}"));
    }
    let Some(v) = message_of(&body) else {
        return Outcome::Failed(format!("no JSON-RPC message in {body}"));
    };
    if v["result"]["isError"] != Value::Bool(true) && v.get("error").is_none() {
        return Outcome::Ok;
    }
    let err = &v["result"]["structuredContent"];
    match err["retry_after_seconds"].as_u64() {
        Some(secs) => Outcome::Retry(
            secs,
            format!(
                "{}: {}",
                err["code"].as_str().unwrap_or(""),
                err["message"].as_str().unwrap_or("")
            ),
        ),
        None => Outcome::Failed(v.to_string()),
    }
}

/// What one agent did.
#[derive(Debug, Default)]
struct Record {
    /// When each call that succeeded returned.
    ok_at: Vec<Instant>,
    /// Calls answered "retry" (code and message of the first few).
    retried: u64,
    retry_samples: Vec<String>,
    /// Times the agent moved to another node because its own stopped answering.
    moved: u64,
    /// Calls that failed without saying they could be retried.
    failed: Vec<String>,
}

/// An agent that calls `TOOL` in a loop on the nodes `nodes` (starting with the first), as
/// its tenant's `token`, until `stop`: it retries what Quire says to retry after the time it
/// names (at most `MAX_BACKOFF`), and opens a session on the next node when its node stops
/// answering. Only the node in `dead` (0 for none) may stop answering; a live node that does
/// not answer is a failure.
fn agent(
    name: String,
    nodes: Vec<String>,
    node_ids: Vec<u64>,
    token: String,
    dead: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut at = 0usize;
        let mut session: Option<String> = None;
        let mut id = 10u64;
        while !stop.load(Ordering::SeqCst) {
            let base = &nodes[at];
            let node = node_ids[at];
            let is_dead = dead.load(Ordering::SeqCst) == node;
            let Some(sid) = session.clone() else {
                match Session::open(&http, base, &token, &name, Some(CLUSTER_DEADLINES)).await {
                    Ok(s) => session = Some(s.id.clone()),
                    Err(e) => {
                        let e = format!("{e:#}");
                        {
                            let mut r = record.lock().unwrap();
                            if is_dead {
                                r.moved += 1;
                                at = (at + 1) % nodes.len();
                            } else if e.contains("503") {
                                // A node that cannot commit the session right now (an election).
                                r.retried += 1;
                            } else {
                                r.failed
                                    .push(format!("opening a session on node {node}: {e}"));
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                continue;
            };
            id += 1;
            let outcome = call_once(&http, base, &token, &sid, id).await;
            let backoff = {
                let mut r = record.lock().unwrap();
                match outcome {
                    Outcome::Ok => {
                        r.ok_at.push(Instant::now());
                        None
                    }
                    Outcome::Retry(secs, why) => {
                        r.retried += 1;
                        if r.retry_samples.len() < 4 && !r.retry_samples.contains(&why) {
                            r.retry_samples.push(why);
                        }
                        Some(Duration::from_secs(secs).min(MAX_BACKOFF))
                    }
                    Outcome::NoAnswer(_) if dead.load(Ordering::SeqCst) == node => {
                        r.moved += 1;
                        at = (at + 1) % nodes.len();
                        session = None;
                        None
                    }
                    Outcome::NoAnswer(e) => {
                        r.failed.push(format!("node {node} did not answer: {e}"));
                        None
                    }
                    Outcome::Failed(e) => {
                        r.failed.push(format!("node {node}: {e}"));
                        None
                    }
                }
            };
            if let Some(backoff) = backoff {
                tokio::time::sleep(backoff).await;
            }
        }
    })
}

/// Running agents: each one's first node, record and task.
type Agents = Vec<(u64, Arc<Mutex<Record>>, tokio::task::JoinHandle<()>)>;

/// Starts `CLIENTS_PER_NODE` agents on each node of `ids` as `token` (see `agent`): with
/// `ring`, an agent whose node stops answering moves on round the others, else it stays on
/// its node. Returns once every agent has had a call succeed.
async fn start_agents(
    c: &LocalCluster,
    ids: &[u64],
    ring: bool,
    token: &str,
    dead: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Agents {
    let urls: Vec<String> = ids
        .iter()
        .map(|&id| c.node(id).unwrap().http.clone())
        .collect();
    let mut agents = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        for k in 0..CLIENTS_PER_NODE {
            // Each agent starts on its own node.
            let (nodes, node_ids) = if ring {
                let (mut nodes, mut node_ids) = (urls.clone(), ids.to_vec());
                nodes.rotate_left(i);
                node_ids.rotate_left(i);
                (nodes, node_ids)
            } else {
                (vec![urls[i].clone()], vec![id])
            };
            let record = Arc::new(Mutex::new(Record::default()));
            let task = agent(
                format!("n{id}-c{k}"),
                nodes,
                node_ids,
                token.to_owned(),
                dead.clone(),
                stop.clone(),
                record.clone(),
            );
            agents.push((id, record, task));
        }
    }
    wait_for("every agent's first success", SETTLE, POLL, async || {
        agents
            .iter()
            .all(|(_, r, _)| !r.lock().unwrap().ok_at.is_empty())
            .then_some(())
    })
    .await;
    agents
}

/// Stops the agents after their call in flight; what each one did, by its first node.
async fn stop_agents(stop: &AtomicBool, agents: Agents) -> Vec<(u64, Record)> {
    stop.store(true, Ordering::SeqCst);
    let mut records = Vec::new();
    for (id, record, task) in agents {
        tokio::time::timeout(CLUSTER_DEADLINES.message * 2, task)
            .await
            .expect("an agent did not stop")
            .unwrap();
        let r = std::mem::take(&mut *record.lock().unwrap());
        records.push((id, r));
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owners_crash_never_overruns_the_budget() {
    // Each node's Notion requests leave from its own loopback address: the sandbox tells the
    // senders apart.
    let (_dir, mut c) = cluster(
        "quire-owner-crash-",
        &[("QUIRE_NOTION_LOCAL_ADDRESS", "127.0.0.{id}")],
    )
    .await;
    // Two regions: node 3 moves to region-a (nodes 1 and 2 stay in "default"); the tenant
    // has no residency policy, so its shard may fail over across them.
    cluster_common::shards::move_node_3(&mut c, "region-a", SETTLE).await;
    wait_for("node 3's labels in region-a", SETTLE, POLL, async || {
        (node_entry(&placement(&c, 1).await, 3)["region"] == json!("region-a")).then_some(())
    })
    .await;
    // Its own sandbox integration (beta), so nothing else spends from what the sandbox counts.
    let budgeted = budgeted("demo", "budgeted", "secret_sandbox_beta");
    let token = budgeted.provision(&c, 1).await;
    let shard = budgeted.shard(&Residency::default());
    let owner = wait_for("the shard's first owner", SETTLE, POLL, async || {
        owner_of(&placement(&c, 1).await, &shard)
    })
    .await;

    let epoch_of = |map: &Value| shard_entry(map, &shard)["epoch"].as_u64().unwrap_or(0);
    let epoch_before = epoch_of(&placement(&c, 1).await);
    let ids: Vec<u64> = vec![1, 2, 3];
    let dead = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    sandbox_reset(&c).await;
    let load_started = Instant::now();
    // Warm: every agent has succeeded, and the load runs a few seconds at the budget.
    let agents = start_agents(&c, &ids, true, &token, &dead, &stop).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // SIGKILL the owner.
    dead.store(owner, Ordering::SeqCst);
    c.kill9(owner).unwrap();
    let killed_at = Instant::now();
    let live: Vec<u64> = ids.iter().copied().filter(|&id| id != owner).collect();
    let new_owner = wait_for(
        "the shard to leave the killed owner",
        MOVE_BOUND,
        POLL,
        async || owner_of(&placement(&c, live[0]).await, &shard).filter(|&o| o != owner),
    )
    .await;
    let moved_after = killed_at.elapsed();
    // Every agent succeeds again (those of the killed node on another node).
    let resumed = wait_for(
        "every agent's calls to succeed again",
        MOVE_BOUND,
        POLL,
        async || {
            agents
                .iter()
                .all(|(_, r, _)| {
                    r.lock()
                        .unwrap()
                        .ok_at
                        .last()
                        .is_some_and(|t| *t > killed_at + moved_after)
                })
                .then_some(Instant::now())
        },
    )
    .await;
    // A few more seconds at the new owner's pace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let load = load_started.elapsed();
    let records = stop_agents(&stop, agents).await;

    let stats = sandbox_stats(&c).await;
    let beta = &stats["integrations"]["beta"];
    let requests = beta["requests"].as_u64().unwrap_or(0);
    let max = beta["max_per_second"].as_u64().unwrap();
    let ok: usize = records.iter().map(|(_, r)| r.ok_at.len()).sum();
    let retried: u64 = records.iter().map(|(_, r)| r.retried).sum();
    let moved: u64 = records.iter().map(|(_, r)| r.moved).sum();
    let last_before = records
        .iter()
        .flat_map(|(_, r)| r.ok_at.iter().copied())
        .filter(|t| *t <= killed_at)
        .max()
        .unwrap();
    let first_after = records
        .iter()
        .flat_map(|(_, r)| r.ok_at.iter().copied())
        .filter(|t| *t > killed_at)
        .min()
        .expect("no call succeeded after the kill");
    let samples: Vec<&String> = records
        .iter()
        .flat_map(|(_, r)| r.retry_samples.iter())
        .take(6)
        .collect();
    println!(
        "owner node {owner} killed; shard {shard} moved to node {new_owner} {} ms after the kill; \
         first success {} ms after the kill (last before it {} ms before), every agent again \
         within {} ms; {ok} calls served, {retried} answered retry, {moved} moves to another \
         node, in {} ms; Notion saw {requests} requests, at most {max} in one second, {} \
         answered 429; retry answers, e.g.: {samples:#?}",
        moved_after.as_millis(),
        (first_after - killed_at).as_millis(),
        (killed_at - last_before).as_millis(),
        (resumed - killed_at).as_millis(),
        load.as_millis(),
        beta["rate_limited"],
    );
    for (id, r) in &records {
        assert!(
            r.failed.is_empty(),
            "an agent starting on node {id} saw calls fail without a retry: {:?}",
            r.failed
        );
    }
    assert_eq!(
        beta["rate_limited"],
        json!(0),
        "Notion answered 429: {stats}"
    );
    assert!(
        max <= BUDGET_BURST + BUDGET_RPS,
        "{max} requests in one second, over the budget's {} ({stats})",
        BUDGET_BURST + BUDGET_RPS
    );
    let limit = BUDGET_BURST + BUDGET_RPS * (load.as_secs() + 2);
    assert!(
        requests <= limit,
        "{requests} requests in {load:?}, over {limit}"
    );
    assert!(
        requests >= ok as u64,
        "{ok} calls succeeded with {requests} Notion requests"
    );
    // One node sent at a time: the sender changed at most once per move of the shard (two
    // nodes sending at once would switch back and forth), and the new owner did send.
    let epochs = epoch_of(&placement(&c, new_owner).await) - epoch_before;
    let senders = beta["senders"].as_u64().unwrap_or(0);
    let switches = beta["sender_switches"].as_u64().unwrap_or(u64::MAX);
    println!(
        "Notion saw {senders} senders, the sender changing {switches} times, for {epochs} moves"
    );
    assert!(senders >= 2, "the new owner never sent: {stats}");
    assert!(
        switches <= epochs,
        "the sender changed {switches} times for {epochs} moves of the shard: two nodes sent \
         at once ({stats})"
    );
    assert_ne!(new_owner, owner);
    assert!(
        c.is_running(new_owner),
        "the new owner {new_owner} is not running"
    );
    let (status, _) = c
        .admin(new_owner, Method::GET, "/placement", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "the new owner {new_owner} does not answer");
    let page = metrics_page(&c, new_owner).await;
    assert!(
        metric(
            &page,
            "quire_notion_requests_total{integration=\"demo/budgeted\",status=\"200\"}"
        ) > 0.0,
        "the new owner {new_owner} sent nothing for the integration:\n{page}"
    );
}

fn region_a() -> Residency {
    Residency {
        allowed_regions: ["region-a".to_owned()].into(),
        preferred_region: None,
    }
}

/// The shards any region may hold that node `node` owns in a `GET /placement` answer.
fn unpinned_on(v: &Value, node: u64) -> Vec<String> {
    v["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["owner"].as_u64() == Some(node))
        .filter_map(|s| s["shard"].as_str())
        .filter(|s| s.starts_with("*#"))
        .map(str::to_owned)
        .collect()
}

/// Every line of a `/metrics` page that names `integration` (`tenant/integration`).
fn lines_naming<'a>(page: &'a str, integration: &str) -> Vec<&'a str> {
    let label = format!("integration=\"{integration}\"");
    page.lines().filter(|l| l.contains(&label)).collect()
}

/// Calls `TOOL` on node `node` until it gets an answer that is not a 503 or an
/// `audit_unavailable` (an election among the nodes left): the outcome.
async fn answer_on(c: &LocalCluster, node: u64, token: &str, session: &str, id: u64) -> Outcome {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = c.node(node).unwrap().http.clone();
    let deadline = Instant::now() + SETTLE;
    loop {
        match call_once(&http, &base, token, session, id).await {
            Outcome::Retry(secs, why)
                if why.starts_with("503") || why.starts_with("audit_unavailable") =>
            {
                assert!(
                    Instant::now() < deadline,
                    "node {node} kept answering 503: {why}"
                );
                tokio::time::sleep(Duration::from_secs(secs).min(MAX_BACKOFF)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pinned_tenant_never_leaves_its_region() {
    let (_dir, mut c) = cluster("quire-residency-", &[("QUIRE_REGION", "region-b")]).await;
    // Node 3 moves to region-a: restarted with another QUIRE_REGION, it records new labels.
    // Nodes 1 and 2 (region-b) keep a quorum without it.
    cluster_common::shards::move_node_3(&mut c, "region-a", SETTLE).await;

    admin_ok(
        &c,
        1,
        Method::POST,
        "/tenants",
        Some(json!({"id": "pinned", "display_name": "Pinned to region-a"})),
    )
    .await;
    admin_ok(
        &c,
        2,
        Method::PUT,
        "/tenants/pinned/residency",
        Some(json!({"regions": ["region-a"]})),
    )
    .await;
    let pinned = budgeted("pinned", "eu", "secret_sandbox_beta");
    let token = pinned.provision(&c, 1).await;
    // Tenants that may live anywhere: some of their shards land on node 3, and leave it once
    // it has been silent past the grace period — the controller's rounds at work.
    for i in 0..8 {
        admin_ok(
            &c,
            1,
            Method::POST,
            "/tenants",
            Some(json!({"id": format!("any-{i}"), "display_name": "Anywhere"})),
        )
        .await;
    }
    let integration = "pinned/eu";
    let shard = pinned.shard(&region_a());
    wait_for(
        "node 3 in region-a owning the shard",
        SETTLE,
        POLL,
        async || {
            let v = placement(&c, 1).await;
            let regions: BTreeMap<u64, String> = v["nodes"]
                .as_array()?
                .iter()
                .filter_map(|n| Some((n["id"].as_u64()?, n["region"].as_str()?.to_owned())))
                .collect();
            let want = BTreeMap::from([
                (1, "region-b".to_owned()),
                (2, "region-b".to_owned()),
                (3, "region-a".to_owned()),
            ]);
            let settled = v["pending_moves"].as_array().is_some_and(Vec::is_empty)
                && v["unassigned"] == json!(0);
            (regions == want && settled && owner_of(&v, &shard) == Some(3)).then_some(())
        },
    )
    .await;

    let b_nodes = [1u64, 2];
    let mut started_before = BTreeMap::new();
    for &id in &b_nodes {
        let page = metrics_page(&c, id).await;
        started_before.insert(id, metric(&page, "quire_tenant_supervisors_started_total"));
    }

    // Agents on every node call the pinned tenant's tool.
    let ids: Vec<u64> = vec![1, 2, 3];
    let none_dead = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let agents = start_agents(&c, &ids, false, &token, &none_dead, &stop).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ok_by_node: BTreeMap<u64, usize> = BTreeMap::new();
    let mut retried = 0;
    for (id, r) in stop_agents(&stop, agents).await {
        assert!(
            r.failed.is_empty(),
            "calls on node {id} failed: {:?}",
            r.failed
        );
        *ok_by_node.entry(id).or_default() += r.ok_at.len();
        retried += r.retried;
    }
    println!("pinned tenant's calls by entry node {ok_by_node:?}, {retried} answered retry");

    // Region-b nodes forwarded every call and ran nothing for the tenant; node 3 sent them.
    for &id in &b_nodes {
        let page = metrics_page(&c, id).await;
        let named = lines_naming(&page, integration);
        assert!(
            named.is_empty(),
            "region-b node {id} ran a limiter or sent Notion requests for {integration}: {named:#?}"
        );
        let started = metric(&page, "quire_tenant_supervisors_started_total");
        assert_eq!(
            started, started_before[&id],
            "region-b node {id} started a tenant supervisor"
        );
        let forwarded = metric(&page, "quire_forwarded_calls_total{outcome=\"ok\"}");
        assert!(
            forwarded >= ok_by_node[&id] as f64,
            "node {id} answered {} calls but forwarded {forwarded}",
            ok_by_node[&id]
        );
        assert_eq!(
            metric(&page, "quire_forward_served_total{outcome=\"ok\"}"),
            0.0,
            "region-b node {id} served forwarded calls"
        );
    }
    let page = metrics_page(&c, 3).await;
    let sent_by_3 = metric(
        &page,
        &format!("quire_notion_requests_total{{integration=\"{integration}\",status=\"200\"}}"),
    );
    assert!(
        sent_by_3 >= ok_by_node.values().sum::<usize>() as f64,
        "node 3 sent {sent_by_3} requests for {ok_by_node:?} calls:\n{page}"
    );
    assert!(metric(&page, "quire_forward_served_total{outcome=\"ok\"}") > 0.0);
    let sent_before_stop = sandbox_stats(&c).await["integrations"]["beta"]["requests"]
        .as_u64()
        .unwrap();

    // Sessions on the region-b nodes, opened while the cluster is whole.
    let http = cluster_common::client();
    let mut sessions = BTreeMap::new();
    for &id in &b_nodes {
        let s = Session::open(
            &http,
            &c.node(id).unwrap().http,
            &token,
            &format!("b{id}"),
            Some(CLUSTER_DEADLINES),
        )
        .await
        .unwrap();
        sessions.insert(id, s.id.clone());
    }

    // No region-a node is alive: the tenant's calls fail, naming its residency, and stay put.
    c.kill9(3).unwrap();
    let stopped = Instant::now();
    let mut id = 100;
    let mut errors = Vec::new();
    let mut check_calls = async |errors: &mut Vec<String>| {
        for &node in &b_nodes {
            id += 1;
            match answer_on(&c, node, &token, &sessions[&node], id).await {
                Outcome::Retry(_, why) => {
                    assert!(
                        why.starts_with("notion_unavailable:")
                            && why.contains("residency")
                            && why.contains("region-a"),
                        "node {node}'s error does not name the tenant's residency: {why}"
                    );
                    errors.push(why);
                }
                other => panic!("a call on node {node} with no region-a node alive: {other:?}"),
            }
        }
    };
    check_calls(&mut errors).await;
    // Past the grace period the controller moves node 3's other shards away (when it owns
    // any), and would move this one too if it could: it reports it unplaceable and leaves it
    // on node 3.
    let others_on_3: Vec<String> = unpinned_on(&placement(&c, 1).await, 3);
    wait_for(
        "node 3's other shards to move",
        MOVE_BOUND,
        POLL,
        async || {
            let v = placement(&c, 1).await;
            let unplaceable = v["unplaceable"]
                .as_array()?
                .iter()
                .any(|s| s.as_str() == Some(shard.as_str()));
            let past_grace = stopped.elapsed() >= Duration::from_millis(GRACE_MS + 2 * SUSPECT_MS);
            (unplaceable && past_grace && unpinned_on(&v, 3).is_empty()).then_some(())
        },
    )
    .await;
    let others_moved_after = stopped.elapsed();
    for _ in 0..3 {
        check_calls(&mut errors).await;
    }
    for &id in &b_nodes {
        let v = placement(&c, id).await;
        assert_eq!(
            owner_of(&v, &shard),
            Some(3),
            "the shard left region-a: {v}"
        );
        let page = metrics_page(&c, id).await;
        let named = lines_naming(&page, integration);
        assert!(
            named.is_empty(),
            "region-b node {id} ran a limiter or sent Notion requests for {integration}: {named:#?}"
        );
    }
    let sent_while_stopped = sandbox_stats(&c).await["integrations"]["beta"]["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(
        sent_while_stopped, sent_before_stop,
        "Notion got requests for the pinned tenant while no region-a node was alive"
    );
    println!(
        "with node 3 down: {} calls failed on region-b nodes; node 3's {} other shard(s) had \
         moved {} ms after the stop, the pinned one stayed; e.g. {}",
        errors.len(),
        others_on_3.len(),
        others_moved_after.as_millis(),
        errors[0]
    );

    // Node 3 back: the tenant's calls work again from every node.
    c.start_node(3).unwrap();
    c.wait_ready(3, SETTLE).await.unwrap();
    let back = Instant::now();
    for &node in &b_nodes {
        wait_for(
            "the pinned tenant's calls to work again",
            SETTLE,
            POLL,
            async || {
                id += 1;
                match answer_on(&c, node, &token, &sessions[&node], id).await {
                    Outcome::Ok => Some(()),
                    Outcome::Retry(secs, _) => {
                        tokio::time::sleep(Duration::from_secs(secs).min(MAX_BACKOFF)).await;
                        None
                    }
                    other => panic!("a call on node {node} after node 3 restarted: {other:?}"),
                }
            },
        )
        .await;
    }
    println!(
        "calls worked again {} ms after node 3 was ready",
        back.elapsed().as_millis()
    );
    for &id in &b_nodes {
        let page = metrics_page(&c, id).await;
        assert!(lines_naming(&page, integration).is_empty());
    }
}
