//! The seeded openraft runtime: election timeouts follow `seed_runtime_rng`, and an unseeded
//! thread stays random.

#![allow(clippy::unwrap_used, reason = "tests")]

use openraft::AsyncRuntime;
use quire_raft::runtime::unseed_runtime_rng;
use quire_raft::{QuireRuntime, SeededRuntime, seed_runtime_rng};
use rand08::RngCore;

fn election_timeouts(n: usize) -> Vec<u64> {
    let config = openraft::Config {
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..openraft::Config::default()
    };
    (0..n)
        .map(|_| config.new_rand_election_timeout::<QuireRuntime>())
        .collect()
}

#[test]
fn election_timeouts_follow_the_seed() {
    seed_runtime_rng(42);
    let a = election_timeouts(20);
    seed_runtime_rng(42);
    let b = election_timeouts(20);
    assert_eq!(a, b, "same seed, same timeouts");
    assert!(a.iter().all(|t| (400..800).contains(t)));
    assert!(a.iter().collect::<std::collections::BTreeSet<_>>().len() > 1);
    seed_runtime_rng(43);
    assert_ne!(election_timeouts(20), a, "another seed, other timeouts");
}

#[test]
fn the_seed_is_per_thread_and_unseeded_threads_draw_from_entropy() {
    seed_runtime_rng(7);
    let seeded = SeededRuntime::thread_rng().next_u64();
    // Another thread never seeded: two such threads draw different values.
    #[allow(clippy::disallowed_methods, reason = "test of per-thread state")]
    let draw = || std::thread::spawn(|| SeededRuntime::thread_rng().next_u64());
    let (x, y) = (draw().join().unwrap(), draw().join().unwrap());
    assert_ne!(x, y);
    // This thread's stream is untouched by the others.
    seed_runtime_rng(7);
    assert_eq!(SeededRuntime::thread_rng().next_u64(), seeded);
    unseed_runtime_rng();
    let (p, q) = (
        SeededRuntime::thread_rng().next_u64(),
        SeededRuntime::thread_rng().next_u64(),
    );
    assert_ne!(p, q);
}
