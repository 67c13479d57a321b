//! Proof that the checkers can fail: each planted bug is caught within a few seeds, and the
//! failure names the invariant and the command that replays it.

mod common;

use common::{FAST_DURATION_S, describe, quire_sim, stdout};

fn caught_within(bug: &str, seeds: &str) -> String {
    caught_within_at(bug, seeds, FAST_DURATION_S)
}

fn caught_within_at(bug: &str, seeds: &str, duration_s: &str) -> String {
    let out = quire_sim(&[
        "sweep",
        "--seeds",
        seeds,
        "--jobs",
        "2",
        "--duration",
        duration_s,
        "--bug",
        bug,
        "--fail-fast",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "bug {bug} was not caught in seeds {seeds}:\n{}",
        describe(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains(&format!("--bug {bug}")),
        "the replay command names the bug: {text}"
    );
    text
}

#[test]
fn stale_local_reads_are_caught() {
    let text = caught_within("stale-local-read", "1..4");
    assert!(
        text.contains("linearizable-read") || text.contains("monotonic-read"),
        "{text}"
    );
}

#[test]
fn acknowledging_before_durable_is_caught() {
    // About 40% of seeds catch it at 15 simulated s; sweep up to 12, stopping at the first.
    let text = caught_within("ack-before-durable", "1..13");
    assert!(
        [
            "no-acknowledged-write-lost",
            "state-machines-agree",
            "vote-durable",
            "election-safety",
            "linearizable-read",
            "monotonic-read",
        ]
        .iter()
        .any(|inv| text.contains(inv)),
        "{text}"
    );
}

/// Out of CI: `QUIRE_SIM_LONG=1 cargo test -p quire-sim --test planted_bugs`.
#[test]
fn a_limiter_that_forgets_its_state_on_restart_is_caught() {
    // Notion requests follow the shard owner, and a restarted owner holds off S (1 s) on
    // every shard before sending, as production does: a limiter that starts full then sends
    // at most burst - rps x S (2) requests more than an empty one, which takes a quick restart
    // right after the previous incarnation spent its whole burst. None of seeds 1..=12 at 15
    // simulated s catches it any more, so the sweep is longer and out of CI.
    if std::env::var_os("QUIRE_SIM_LONG").is_none() {
        eprintln!("skipped: set QUIRE_SIM_LONG=1 to sweep seeds 1..=40 of 30 simulated s");
        return;
    }
    let text = caught_within_at("limiter-forgets-state", "1..41", "30");
    assert!(
        text.contains("notion-budget") || text.contains("budget-respected-during-handoff"),
        "{text}"
    );
}

#[test]
fn authorizing_without_the_freshness_barrier_is_caught() {
    // It needs a node of an integration cut off (or paused) long enough for a revocation to
    // be acknowledged through the others, and an agent calling it meanwhile: 5 of seeds
    // 1..=40 at 30 simulated s (10, 13, 27, 30, 37), so from seed 1 it needs 10 seeds. A 30 s
    // seed takes most of a minute in a debug build, so the sweep starts at seed 9 to stay
    // within the test timeout, and goes on to 24, stopping at the first.
    let text = caught_within_at("authz-ignores-staleness", "9..25", "30");
    assert!(text.contains("no-authz-after-revocation"), "{text}");
}

#[test]
fn answering_before_the_audit_commit_is_caught() {
    // 3 of 12 seeds at 15 simulated s (the first at seed 5): a crash or a partition of the
    // node between the answer and the commit loses the record.
    let text = caught_within("audit-after-answer", "1..13");
    assert!(text.contains("audit-complete"), "{text}");
}

#[test]
fn placement_rounds_that_ignore_drains_are_caught() {
    // The operator leaves its last drain on through the end in half the seeds; with the bug
    // that node keeps its shards past the bound: 10 of seeds 1..=20 at 15 simulated s (1, 3,
    // 5, 7, 8, 9, 12, 14, 19, 20); sweep up to 6, stopping at the first.
    let text = caught_within("placement-ignores-drains", "1..7");
    assert!(text.contains("drain-completes"), "{text}");
}

#[test]
fn a_stale_shard_owner_that_is_not_fenced_is_caught() {
    // It needs an integration's shard to move (a drain, a crash or a member removed) while
    // its old owner is cut off or lagging with calls still coming in, and both owners sending
    // for long enough: 1 of seeds 1..=8 at 15 simulated s (seed 8: the old owner keeps
    // sending beside the new one for 2 s). A seed takes about half a minute in a debug build,
    // so the sweep starts at seed 8 and goes on to 12, stopping at the first.
    let text = caught_within("stale-owner-not-fenced", "8..13");
    assert!(text.contains("budget-respected-during-handoff"), "{text}");
}
