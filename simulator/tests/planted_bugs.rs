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

#[test]
fn a_limiter_that_forgets_its_state_on_restart_is_caught() {
    // Notion requests follow the shard owner, and a restarted owner holds off S (1 s) on
    // every shard before sending, as production does: a limiter that starts full then sends
    // at most burst - rps x S (2) requests more than an empty one, which takes a quick restart
    // right after the previous incarnation spent its whole burst. 4 of seeds 1..=40 at 30
    // simulated s catch it (7, 10, 21, 23); the sweep starts at seed 7 and goes on to 10,
    // stopping at the first.
    let text = caught_within_at("limiter-forgets-state", "7..11", "30");
    assert!(
        text.contains("notion-budget") || text.contains("budget-respected-during-handoff"),
        "{text}"
    );
}

#[test]
fn authorizing_without_the_freshness_barrier_is_caught() {
    // It needs a node of an integration cut off (or paused) long enough for a revocation to
    // be acknowledged through the others, and an agent calling it meanwhile: 9 of seeds
    // 1..=40 at 30 simulated s (6, 7, 15, 17, 25, 27, 28, 31, 33), so from seed 1 it needs 6
    // seeds. The sweep starts at seed 6 and goes on to 15, stopping at the first.
    let text = caught_within_at("authz-ignores-staleness", "6..16", "30");
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
    // its old owner is cut off or lagging with calls still coming in: 10 of seeds 1..=30 at
    // 15 simulated s (from seed 3), nine by `senders-in-epoch-order` (the old owner's request
    // after the new owner's first, or an owner's request routed under an epoch it no longer
    // holds) and seed 8 by the budget (both owners sending for 2 s). The sweep starts at
    // seed 3 and goes on to 8, stopping at the first.
    let text = caught_within("stale-owner-not-fenced", "3..9");
    assert!(
        text.contains("senders-in-epoch-order") || text.contains("budget-respected-during-handoff"),
        "{text}"
    );
}

#[test]
fn a_new_owner_that_skips_the_hold_off_is_caught() {
    // Without the hold-off the new owner's first request still waits 1/rps (its bucket
    // emptied under the new epoch), and the old owner stops once it applies the move; the two
    // overlap only when the old owner keeps sending longer than that — cut off, paused or
    // lagging right at the move with calls queued for permits. 1 of seeds 1..=40 at 30
    // simulated s (seed 29: n1, paused just after the move of beta's shard to n3, sends again
    // 330 ms after n3's first request); 0 of 30 at 15 s. Only `senders-in-epoch-order` sees
    // it: the overlap is within what the bucket's burst absorbs.
    let text = caught_within_at("handoff-skips-hold-off", "29..30", "30");
    assert!(text.contains("senders-in-epoch-order"), "{text}");
}
