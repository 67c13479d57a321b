//! Placement on three real `quire` processes in two regions (nodes 1 and 2 in `region-a`,
//! node 3 in `region-b`, set by `QUIRE_REGION`): every occupied shard gets an owner, a tenant
//! pinned to `region-b` lives on node 3 (and stays there, unplaceable, while node 3 is down),
//! and a stopped node keeps its shards through the grace period, then loses them within a
//! bound. Also drives `quire ctl placement show|rebalance` and `tenants set-residency`.
//!
//! A second cluster drains nodes with `quire ctl nodes drain`: a drained node ends owning no
//! shard (its draining flag in `nodes list`, `placement show` and `/metrics`), gets shards
//! again once undrained, and a node holding a shard pinned to its single-node region cannot
//! be drained: the command fails naming the shard, which stays.

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_common::ctl::{Ctl, CtlOut};
use cluster_common::shards::{Three, metrics_page, move_node_3, node_entry, placement};
use quire_node::local_cluster::LocalCluster;
use quire_raft::TenantId;
use quire_raft::placement::{Residency, shard_of, tenant_key};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

const INTERVAL_MS: u64 = 300;
const SUSPECT_MS: u64 = 1_000;
const GRACE_MS: u64 = 3_000;
/// How long after a node stops its shards must have moved: the grace period, an election if
/// it led, a few rounds.
const MOVE_BOUND: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(100);

fn pinned_residency() -> Residency {
    Residency {
        allowed_regions: ["region-b".to_owned()].into(),
        preferred_region: None,
    }
}

/// Three nodes placing shards every `INTERVAL_MS` (a node suspected after `SUSPECT_MS`, its
/// shards moved after `GRACE_MS`, then the `[placement]` lines of `extra`): nodes 1 and 2 in
/// `region-a`, node 3 in `region-b`.
async fn two_regions(prefix: &str, extra: &str) -> (tempfile::TempDir, LocalCluster) {
    let (dir, mut c) = Three {
        prefix,
        config: &format!(
            "[placement]\ninterval_ms = {INTERVAL_MS}\nsuspect_after_ms = {SUSPECT_MS}\ngrace_ms = {GRACE_MS}\n{extra}"
        ),
        env: &[("QUIRE_REGION", "region-a")],
        sandbox_args: &[],
    }
    .start()
    .await;
    // Node 3 moves to region-b: restarted with another QUIRE_REGION, it records new labels.
    move_node_3(&mut c, "region-b", Duration::from_secs(60)).await;
    (dir, c)
}

/// Creates tenants `any-0` .. `any-{n-1}` (any region) through node 1.
async fn create_anywhere(c: &LocalCluster, n: usize) {
    for i in 0..n {
        let (status, v) = c
            .admin(
                1,
                Method::POST,
                "/tenants",
                Some(json!({"id": format!("any-{i}"), "display_name": "Any"})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{v}");
    }
}

/// Owner of every occupied shard (`None` if unassigned).
fn owners(v: &Value) -> BTreeMap<String, Option<u64>> {
    v["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["occupied"] == Value::Bool(true))
        .map(|s| (s["shard"].as_str().unwrap().to_owned(), s["owner"].as_u64()))
        .collect()
}

/// Waits until node 1's placement shows three labelled nodes, every occupied shard with an
/// owner, no move pending, and `also` holds of the owners; that placement.
async fn wait_settled(
    c: &LocalCluster,
    also: impl Fn(&BTreeMap<String, Option<u64>>) -> bool,
) -> Value {
    wait_for(
        "every shard assigned",
        Duration::from_secs(30),
        async || {
            let v = placement(c, 1).await;
            let o = owners(&v);
            let labelled = v["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().filter(|n| n["region"].is_string()).count() == 3);
            (labelled
                && o.values().all(Option::is_some)
                && v["pending_moves"].as_array().is_some_and(Vec::is_empty)
                && also(&o))
            .then_some(v)
        },
    )
    .await
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> Option<Value>,
) -> Value {
    cluster_common::shards::wait_for(what, timeout, POLL, check).await
}

/// Runs `quire ctl` against node `node` (each request's deadline the default 30 s).
fn ctl_output(c: &LocalCluster, node: u64, args: &[&str]) -> CtlOut {
    let url = &c.node(node).unwrap().http;
    Ctl::new(Some(url), Some(&c.status.admin_token), 30).run(args)
}

/// `ctl_output`, which must succeed; what it printed.
fn ctl(c: &LocalCluster, node: u64, args: &[&str]) -> String {
    let out = ctl_output(c, node, args);
    assert!(out.ok, "quire ctl {args:?}: {}", out.stderr);
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_follow_regions_and_leave_a_stopped_node_after_the_grace_period() {
    let (_dir, mut c) = two_regions("quire-placement-", "").await;

    // Tenants: eight anywhere, one pinned to region-b (created with its residency in one
    // command), one pinned later with set-residency.
    create_anywhere(&c, 8).await;
    let out = ctl(
        &c,
        2,
        &["tenants", "create", "pinned", "--regions", "region-b"],
    );
    assert!(out.contains("regions region-b"), "{out}");
    let (status, v) = c
        .admin(
            1,
            Method::POST,
            "/tenants",
            Some(json!({"id": "later", "display_name": "Later"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{v}");
    let out = ctl(
        &c,
        1,
        &["tenants", "set-residency", "later", "--regions", "region-b"],
    );
    assert!(out.contains("regions region-b"), "{out}");
    let (_, got) = c
        .admin(3, Method::GET, "/tenants/later", None)
        .await
        .unwrap();
    assert_eq!(got["residency"]["regions"], json!(["region-b"]), "{got}");
    // A bad residency is refused with the reason, and changes nothing.
    let (status, v) = c
        .admin(
            1,
            Method::PUT,
            "/tenants/later/residency",
            Some(json!({"regions": ["region-b"], "preferred_region": "region-a"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{v}");

    let pinned = shard_of(
        &pinned_residency(),
        &tenant_key(&TenantId::new("pinned").unwrap()),
    )
    .to_string();
    let later = shard_of(
        &pinned_residency(),
        &tenant_key(&TenantId::new("later").unwrap()),
    )
    .to_string();

    // Every occupied shard gets an owner; the pinned ones live on node 3.
    let settled = wait_settled(&c, |o| {
        !o.is_empty() && o.get(&pinned) == Some(&Some(3)) && o.get(&later) == Some(&Some(3))
    })
    .await;
    let o = owners(&settled);
    println!("placement settled: {o:?}");
    for (shard, owner) in &o {
        if shard.starts_with("region-b#") {
            assert_eq!(*owner, Some(3), "{shard} outside region-b");
        }
    }
    let regions: BTreeMap<u64, String> = settled["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_u64().unwrap(),
                n["region"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        regions,
        BTreeMap::from([
            (1, "region-a".to_owned()),
            (2, "region-a".to_owned()),
            (3, "region-b".to_owned())
        ])
    );
    let nodes = ctl(&c, 2, &["nodes", "list"]);
    assert!(
        nodes.contains("REGION") && nodes.contains("region-b"),
        "{nodes}"
    );
    let shown = ctl(&c, 3, &["placement", "show"]);
    assert!(
        shown.contains("region-b") && shown.contains("0 unassigned"),
        "{shown}"
    );
    let again = ctl(&c, 1, &["placement", "rebalance"]);
    assert!(again.contains("no moves"), "{again}");

    let any_on_3 = o
        .iter()
        .filter(|(s, n)| !s.starts_with("region-b#") && **n == Some(3))
        .count();
    assert!(
        any_on_3 > 0,
        "node 3 owns none of the unpinned shards: {o:?}"
    );

    // Node 3 stops: the pinned shards have nowhere to go and stay, reported unplaceable.
    c.kill9(3).unwrap();
    let stopped = Instant::now();
    let v = wait_for("pinned shards unplaceable", MOVE_BOUND, async || {
        let v = placement(&c, 1).await;
        let unplaceable: Vec<&str> = v["unplaceable"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (unplaceable.contains(&pinned.as_str()) && unplaceable.contains(&later.as_str()))
            .then_some(v)
    })
    .await;
    assert_eq!(owners(&v).get(&pinned), Some(&Some(3)));
    // Past the grace period the controller moves node 3's other shards away, and still
    // leaves the pinned ones on node 3.
    let v = wait_for("node 3's other shards moved", MOVE_BOUND, async || {
        let v = placement(&c, 1).await;
        owners(&v)
            .iter()
            .all(|(s, o)| s.starts_with("region-b#") || o.is_some_and(|n| n != 3))
            .then_some(v)
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(GRACE_MS / 2),
        "node 3's shards moved {} ms after it stopped, inside the grace period",
        stopped.elapsed().as_millis()
    );
    assert_eq!(owners(&v).get(&pinned), Some(&Some(3)), "{v}");
    assert_eq!(owners(&v).get(&later), Some(&Some(3)), "{v}");
    c.start_node(3).unwrap();
    c.wait_ready(3, Duration::from_secs(60)).await.unwrap();

    // Node 2 stops: its shards stay through the grace period, then move; no other shard
    // moves (rendezvous hashing).
    let before = wait_for(
        "node 3 back in the placement",
        Duration::from_secs(30),
        async || {
            let v = placement(&c, 1).await;
            let healthy = v["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(|n| n["health"] == "live"));
            (healthy && v["pending_moves"].as_array().is_some_and(Vec::is_empty)).then_some(v)
        },
    )
    .await;
    let before = owners(&before);
    let on_2: Vec<String> = before
        .iter()
        .filter(|(_, o)| **o == Some(2))
        .map(|(s, _)| s.clone())
        .collect();
    assert!(!on_2.is_empty(), "node 2 owns no shard: {before:?}");
    c.kill9(2).unwrap();
    let stopped = Instant::now();
    let mut last_seen_on_2 = Duration::ZERO;
    let after = wait_for("node 2's shards moved", MOVE_BOUND, async || {
        let v = placement(&c, 1).await;
        let o = owners(&v);
        if o.values().any(|n| *n == Some(2)) {
            last_seen_on_2 = stopped.elapsed();
            return None;
        }
        o.values().all(Option::is_some).then_some(v)
    })
    .await;
    let moved_in = stopped.elapsed();
    println!(
        "node 2's {} shard(s) held for {} ms, moved within {} ms of the stop",
        on_2.len(),
        last_seen_on_2.as_millis(),
        moved_in.as_millis()
    );
    // Silent for longer than suspect_after_ms, node 2 kept its shards: they move only once
    // the grace period since its last answer (shortly before the stop) is over. Half the
    // grace period leaves room for a loaded machine's late probes.
    assert!(
        last_seen_on_2 >= Duration::from_millis(GRACE_MS / 2),
        "shards left node 2 {} ms after it stopped, inside the grace period",
        last_seen_on_2.as_millis()
    );
    let o = owners(&after);
    for (shard, owner) in &before {
        if on_2.contains(shard) {
            assert!(matches!(o[shard], Some(1 | 3)), "{shard} on {:?}", o[shard]);
        } else {
            assert_eq!(
                o[shard], *owner,
                "{shard} moved though node 2 did not own it"
            );
        }
    }
    assert_eq!(o.get(&pinned), Some(&Some(3)));
}

/// A sample of node `node`'s `/metrics` page.
async fn metric(c: &LocalCluster, node: u64, name: &str) -> f64 {
    let parsed = quire_node::metrics::parse(&metrics_page(c, node).await).unwrap();
    parsed
        .value(name, &[])
        .unwrap_or_else(|| panic!("{name} missing from node {node}'s /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_ends_owning_no_shard_and_a_pinned_shard_blocks_a_drain() {
    // Few moves per round, so the drain takes several rounds and shows its progress.
    let (_dir, c) = two_regions("quire-drain-", "max_moves_per_round = 2\n").await;
    create_anywhere(&c, 12).await;
    ctl(
        &c,
        1,
        &["tenants", "create", "pinned", "--regions", "region-b"],
    );
    let pinned = shard_of(
        &pinned_residency(),
        &tenant_key(&TenantId::new("pinned").unwrap()),
    )
    .to_string();
    let mut expected: std::collections::BTreeSet<String> = (0..12)
        .map(|i| {
            let t = TenantId::new(format!("any-{i}")).unwrap();
            shard_of(&Residency::any(), &tenant_key(&t)).to_string()
        })
        .collect();
    expected.insert(pinned.clone());
    // (The cluster's demo tenant and its integration occupy shards too.)
    let settled = wait_settled(&c, |o| {
        expected.iter().all(|s| o.contains_key(s)) && o.get(&pinned) == Some(&Some(3))
    })
    .await;
    let before = owners(&settled);
    let on_2 = before.values().filter(|o| **o == Some(2)).count();
    assert!(on_2 >= 2, "node 2 owns {on_2} shard(s): {before:?}");
    assert_eq!(metric(&c, 2, "quire_shards_owned").await, on_2 as f64);
    assert_eq!(metric(&c, 2, "quire_node_draining").await, 0.0);

    // Drain node 2: it ends owning no shard; only its shards moved, to node 1 or 3.
    let started = Instant::now();
    let CtlOut {
        ok,
        stdout: out,
        stderr: err,
    } = ctl_output(&c, 1, &["nodes", "drain", "2", "--timeout", "60s"]);
    assert!(ok, "drain failed: {out} {err}");
    println!(
        "node 2 drained ({on_2} shards) in {} ms:\n{err}",
        started.elapsed().as_millis()
    );
    assert!(out.contains("node 2 is drained"), "{out}");
    assert!(
        err.contains(&format!("node 2: {on_2} of {on_2} shards moved")),
        "{err}"
    );
    let v = placement(&c, 3).await;
    let after = owners(&v);
    for (shard, owner) in &before {
        if *owner == Some(2) {
            assert!(
                matches!(after[shard], Some(1 | 3)),
                "{shard} on {:?}",
                after[shard]
            );
        } else {
            assert_eq!(
                after[shard], *owner,
                "{shard} moved though node 2 did not own it"
            );
        }
    }
    assert_eq!(node_entry(&v, 2)["draining"], true);
    assert_eq!(node_entry(&v, 2)["shards"], 0);
    // The flag is replicated: every node's list shows it.
    let listed = ctl(&c, 3, &["nodes", "list"]);
    assert!(listed.contains("DRAINING"), "{listed}");
    let shown = ctl(&c, 2, &["placement", "show"]);
    assert!(shown.contains("DRAINING"), "{shown}");
    let (_, members) = c.admin(3, Method::GET, "/nodes", None).await.unwrap();
    let drained: Vec<u64> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["draining"] == true)
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(drained, vec![2], "{members}");
    // The drain is an admin change in the cluster's audit chain.
    wait_for(
        "the drain's audit record",
        Duration::from_secs(10),
        async || {
            let (_, page) = c
                .admin(
                    3,
                    Method::GET,
                    "/audit/records?tenant=_cluster&kind=admin&limit=1000",
                    None,
                )
                .await
                .unwrap();
            page["records"]
                .as_array()?
                .iter()
                .find(|r| r["action"] == "set_node_draining" && r["outcome"] == "ok")
                .cloned()
        },
    )
    .await;
    wait_for("node 2's metrics", Duration::from_secs(10), async || {
        (metric(&c, 2, "quire_node_draining").await == 1.0
            && metric(&c, 2, "quire_shards_owned").await == 0.0)
            .then_some(Value::Null)
    })
    .await;
    assert!(metric(&c, 1, "quire_placement_epoch_max").await >= 2.0);
    // Stays drained: the controller does not move shards back.
    tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS)).await;
    assert_eq!(node_entry(&placement(&c, 1).await, 2)["shards"], 0);

    // Undrain: node 2 receives its rendezvous share again from the next rounds.
    let out = ctl(&c, 2, &["nodes", "undrain", "2"]);
    assert!(out.contains("no longer draining"), "{out}");
    let back = wait_for("node 2 owns shards again", MOVE_BOUND, async || {
        // A round on request as well as the controller's (either may lose to the other).
        let _ = c.admin(1, Method::POST, "/placement/rebalance", None).await;
        let v = placement(&c, 1).await;
        (v["pending_moves"].as_array().is_some_and(Vec::is_empty)
            && node_entry(&v, 2)["shards"].as_u64() > Some(0))
        .then_some(v)
    })
    .await;
    assert_eq!(node_entry(&back, 2)["draining"], false);
    assert_eq!(
        owners(&back),
        before,
        "undrained, every shard is back where it was"
    );

    // Node 3 is the only region-b node: the pinned shard cannot leave it.
    let CtlOut {
        ok,
        stdout: out,
        stderr: err,
    } = ctl_output(&c, 1, &["nodes", "drain", "3", "--timeout", "60s"]);
    assert!(!ok, "draining the only region-b node succeeded: {out}");
    assert!(
        err.contains("cannot be drained") && err.contains(&pinned),
        "{err}"
    );
    let v = placement(&c, 1).await;
    let o = owners(&v);
    assert_eq!(
        o.get(&pinned),
        Some(&Some(3)),
        "the pinned shard left region-b"
    );
    let left_on_3: Vec<&String> = o
        .iter()
        .filter(|(_, n)| **n == Some(3))
        .map(|(s, _)| s)
        .collect();
    assert_eq!(left_on_3, vec![&pinned], "{o:?}");
    assert_eq!(v["drain_blocked"], json!([pinned]));
    ctl(&c, 1, &["nodes", "undrain", "3"]);
    // A node that never started as a member cannot be drained.
    let CtlOut {
        ok,
        stdout: out,
        stderr: err,
    } = ctl_output(&c, 1, &["nodes", "drain", "9", "--no-wait"]);
    assert!(!ok && err.contains("node 9"), "{out} {err}");
}
