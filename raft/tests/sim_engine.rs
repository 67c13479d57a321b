//! The storage engine contract, checked on both engines (sled in a temp dir, and the
//! simulated disk), and the simulated disk's crash semantics and faults.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::ops::Bound;

use quire_raft::engine::{
    EngineError, EngineTree, SimDisk, SimEngine, SimFaults, SledEngine, StorageEngine, WriteBatch,
};
use tempfile::TempDir;

fn k(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The key-value contract every engine keeps.
async fn contract<E: StorageEngine>(engine: E) {
    let a = engine.open_tree("a").unwrap();
    let b = engine.open_tree("b").unwrap();
    assert_eq!(a.get(b"x").unwrap(), None);
    assert_eq!(a.first().unwrap(), None);
    assert_eq!(a.last().unwrap(), None);

    // Trees are separate namespaces.
    a.insert(b"x", b"1").unwrap();
    assert_eq!(a.get(b"x").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(b.get(b"x").unwrap(), None);
    a.insert(b"x", b"2").unwrap();
    assert_eq!(a.get(b"x").unwrap().as_deref(), Some(&b"2"[..]));
    a.remove(b"x").unwrap();
    a.remove(b"never-there").unwrap();
    assert_eq!(a.get(b"x").unwrap(), None);

    // Range scans in key order, whatever the insertion order.
    for n in [5u64, 1, 9, 3, 7, 256] {
        b.insert(&k(n), format!("v{n}").as_bytes()).unwrap();
    }
    let keys = |pairs: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<u64> {
        pairs
            .into_iter()
            .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
            .collect()
    };
    let all = b.range(Bound::Unbounded, Bound::Unbounded).unwrap();
    assert_eq!(all[0].1, b"v1".to_vec());
    assert_eq!(keys(all), vec![1, 3, 5, 7, 9, 256]);
    let (s, e) = (k(3), k(9));
    assert_eq!(
        keys(
            b.range(Bound::Included(&s[..]), Bound::Excluded(&e[..]))
                .unwrap()
        ),
        vec![3, 5, 7]
    );
    assert_eq!(
        keys(
            b.range(Bound::Excluded(&s[..]), Bound::Included(&e[..]))
                .unwrap()
        ),
        vec![5, 7, 9]
    );
    assert_eq!(
        keys(b.range(Bound::Unbounded, Bound::Included(&s[..])).unwrap()),
        vec![1, 3]
    );
    // Empty and inverted ranges yield nothing (and do not panic).
    assert!(
        b.range(Bound::Included(&e[..]), Bound::Excluded(&s[..]))
            .unwrap()
            .is_empty()
    );
    assert!(
        b.range(Bound::Excluded(&s[..]), Bound::Excluded(&s[..]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(b.first().unwrap().unwrap().0, k(1).to_vec());
    assert_eq!(b.last().unwrap().unwrap().0, k(256).to_vec());

    // Batches apply in order.
    let mut batch = WriteBatch::new();
    batch.insert(k(1), b"one".to_vec());
    batch.remove(k(5));
    batch.insert(k(2), b"two".to_vec());
    batch.remove(k(2));
    batch.insert(k(100), b"hundred".to_vec());
    assert_eq!(batch.len(), 5);
    b.apply_batch(batch).unwrap();
    assert_eq!(b.get(&k(1)).unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(b.get(&k(5)).unwrap(), None);
    assert_eq!(b.get(&k(2)).unwrap(), None);
    assert_eq!(
        keys(b.range(Bound::Unbounded, Bound::Unbounded).unwrap()),
        vec![1, 3, 7, 9, 100, 256]
    );
    engine.flush().await.unwrap();
}

#[tokio::test]
async fn sled_engine_keeps_the_contract() {
    let dir = TempDir::new().unwrap();
    contract(SledEngine::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn sim_engine_keeps_the_contract() {
    contract(SimEngine::new(1)).await;
}

#[tokio::test]
async fn flushed_writes_survive_a_crash_and_unflushed_ones_do_not() {
    let disk = SimDisk::new(2);
    let engine = disk.open();
    let t = engine.open_tree("t").unwrap();
    t.insert(b"durable", b"1").unwrap();
    engine.flush().await.unwrap();
    t.insert(b"volatile", b"2").unwrap();
    t.remove(b"durable").unwrap();
    assert_eq!(disk.unflushed_writes(), 2);
    assert_eq!(
        disk.durable_get("t", b"durable").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(disk.durable_get("t", b"volatile"), None);

    engine.crash();
    // The dead incarnation can no longer touch the disk.
    assert!(!engine.is_alive());
    assert!(matches!(t.get(b"durable"), Err(EngineError::Crashed)));
    assert!(matches!(t.insert(b"late", b"x"), Err(EngineError::Crashed)));
    assert!(matches!(engine.flush().await, Err(EngineError::Crashed)));

    let engine = disk.open();
    let t = engine.open_tree("t").unwrap();
    assert_eq!(t.get(b"durable").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(t.get(b"volatile").unwrap(), None);
    assert_eq!(t.get(b"late").unwrap(), None);
    let stats = disk.stats();
    assert_eq!(stats.crashes, 1);
    assert_eq!(stats.writes_lost, 2);
    assert_eq!(stats.flushes, 1);
}

#[tokio::test]
async fn reopening_the_disk_is_a_crash_of_the_previous_incarnation() {
    let disk = SimDisk::new(3);
    let first = disk.open();
    first
        .open_tree("t")
        .unwrap()
        .insert(b"unflushed", b"1")
        .unwrap();
    let second = disk.open();
    assert!(!first.is_alive());
    assert!(second.is_alive());
    assert_eq!(
        second.open_tree("t").unwrap().get(b"unflushed").unwrap(),
        None
    );
    // Opening a fresh disk lost nothing and counted no crash; the reopen counted one.
    assert_eq!(disk.stats().crashes, 1);
}

/// Writes `n` single inserts (keys 0..n) and a batch of two (keys 1000, 1001), unflushed,
/// crashes with torn writes on, and returns the keys that survived.
async fn torn_crash(seed: u64, n: u64) -> Vec<u64> {
    let disk = SimDisk::new(seed);
    disk.set_faults(SimFaults {
        torn_writes: true,
        ..SimFaults::default()
    });
    let engine = disk.open();
    let t = engine.open_tree("t").unwrap();
    for i in 0..n / 2 {
        t.insert(&k(i), b"v").unwrap();
    }
    let mut batch = WriteBatch::new();
    batch.insert(k(1000), b"a".to_vec());
    batch.insert(k(1001), b"b".to_vec());
    t.apply_batch(batch).unwrap();
    for i in n / 2..n {
        t.insert(&k(i), b"v").unwrap();
    }
    disk.crash();
    let t = disk.open().open_tree("t").unwrap();
    t.range(Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .into_iter()
        .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn torn_writes_keep_a_prefix_in_order_and_never_split_a_batch() {
    let n = 10;
    let mut sizes = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let kept = torn_crash(seed, n).await;
        // The order writes were made in: 0..5, the batch, 5..10.
        let order: Vec<u64> = (0..5).chain([1000, 1001]).chain(5..10).collect();
        let mut expected: Vec<u64> = order[..kept.len()].to_vec();
        expected.sort_unstable();
        assert_eq!(kept, expected, "seed {seed}: survivors are not a prefix");
        assert!(
            kept.contains(&1000) == kept.contains(&1001),
            "seed {seed}: batch split"
        );
        sizes.insert(kept.len());
        // Same seed, same outcome.
        assert_eq!(
            torn_crash(seed, n).await,
            kept,
            "seed {seed} not reproducible"
        );
    }
    // Across seeds the cut lands in different places, including none and all.
    assert!(sizes.len() > 3, "cut points seen: {sizes:?}");
}

#[tokio::test]
async fn injected_read_and_write_errors_change_nothing_and_follow_the_seed() {
    async fn run(seed: u64) -> Vec<bool> {
        let engine = SimEngine::new(seed);
        let t = engine.open_tree("t").unwrap();
        t.insert(b"k", b"before").unwrap();
        engine.flush().await.unwrap();
        engine.set_faults(SimFaults {
            read_error_probability: 0.5,
            write_error_probability: 0.5,
            torn_writes: false,
        });
        let mut outcomes = Vec::new();
        for i in 0..50u32 {
            let before = engine.disk().stats();
            match t.insert(b"k", format!("after-{i}").as_bytes()) {
                Ok(()) => outcomes.push(true),
                Err(e) => {
                    assert!(matches!(e, EngineError::InjectedWrite { .. }), "{e}");
                    assert_eq!(engine.disk().stats().writes, before.writes);
                    outcomes.push(false);
                }
            }
            match t.get(b"k") {
                Ok(v) => assert!(v.is_some()),
                Err(e) => assert!(matches!(e, EngineError::InjectedRead { .. }), "{e}"),
            }
        }
        // A failed flush makes nothing durable.
        engine.set_faults(SimFaults {
            write_error_probability: 1.0,
            ..SimFaults::default()
        });
        t.insert(b"k2", b"v").unwrap_err();
        assert!(engine.flush().await.is_err());
        engine.set_faults(SimFaults::default());
        t.insert(b"k2", b"v").unwrap();
        engine.crash();
        assert_eq!(engine.disk().durable_get("t", b"k2"), None);
        assert_eq!(
            engine.disk().durable_get("t", b"k").as_deref(),
            Some(&b"before"[..])
        );
        outcomes
    }
    let a = run(11).await;
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
    assert_eq!(run(11).await, a);
    assert_ne!(run(12).await, a);
}

#[tokio::test]
async fn planted_bug_acknowledges_flushes_before_writes_are_durable() {
    let disk = SimDisk::new(5);
    let engine = disk.open();
    let t = engine.open_tree("t").unwrap();
    t.insert(b"a", b"1").unwrap();
    engine.flush().await.unwrap();
    engine.set_bug_ack_before_flush(true);
    assert!(disk.bug_ack_before_flush());
    t.insert(b"b", b"2").unwrap();
    engine.flush().await.unwrap(); // acknowledged, not durable
    assert_eq!(disk.durable_get("t", b"b"), None);
    t.insert(b"c", b"3").unwrap();
    engine.flush().await.unwrap(); // acknowledged, still not durable
    assert_eq!(disk.durable_get("t", b"b"), None);
    assert_eq!(disk.durable_get("t", b"c"), None);
    disk.crash();
    let t = disk.open().open_tree("t").unwrap();
    assert!(
        t.get(b"a").unwrap().is_some(),
        "flushed before the bug: kept"
    );
    assert_eq!(
        t.get(b"b").unwrap(),
        None,
        "the bug loses an acknowledged write"
    );
    assert_eq!(
        t.get(b"c").unwrap(),
        None,
        "the bug loses an acknowledged write"
    );

    // Off again: flush is a durability point once more.
    disk.set_bug_ack_before_flush(false);
    let engine = disk.open();
    let t = engine.open_tree("t").unwrap();
    t.insert(b"d", b"4").unwrap();
    engine.flush().await.unwrap();
    assert!(disk.durable_get("t", b"d").is_some());
}

#[tokio::test]
async fn unflushed_writes_are_bounded() {
    let engine = SimEngine::new(6);
    let t = engine.open_tree("t").unwrap();
    for i in 0..quire_raft::engine::MAX_UNFLUSHED_WRITES as u64 {
        t.insert(&k(i % 16), b"v").unwrap();
    }
    let err = t.insert(b"one-more", b"v").unwrap_err();
    assert!(matches!(err, EngineError::TooManyUnflushed { .. }), "{err}");
    engine.flush().await.unwrap();
    t.insert(b"one-more", b"v").unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_flush_covers_writes_before_it_and_a_crash_during_it_makes_nothing_durable() {
    let disk = SimDisk::new(7);
    disk.set_flush_latency(std::time::Duration::from_millis(5));
    let engine = disk.open();
    let t = engine.open_tree("t").unwrap();
    t.insert(b"before", b"1").unwrap();
    let started = tokio::time::Instant::now();
    let flush = tokio::spawn({
        let engine = engine.clone();
        async move { engine.flush().await }
    });
    tokio::task::yield_now().await;
    // Written while the flush is in progress: not covered by it.
    t.insert(b"during", b"2").unwrap();
    flush.await.unwrap().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(5));
    assert!(disk.durable_get("t", b"before").is_some());
    assert_eq!(disk.durable_get("t", b"during"), None);

    // A crash while a flush is in progress: the flush fails, nothing becomes durable.
    let flush = tokio::spawn({
        let engine = engine.clone();
        async move { engine.flush().await }
    });
    tokio::task::yield_now().await;
    disk.crash();
    assert!(matches!(flush.await.unwrap(), Err(EngineError::Crashed)));
    assert_eq!(disk.durable_get("t", b"during"), None);
}
