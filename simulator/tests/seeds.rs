//! A handful of seeds pass, a seed replays identically in a fresh process, and bad
//! arguments are refused with a clear error.

mod common;

use common::{FAST_DURATION_S, describe, quire_sim, stdout};

#[test]
fn a_handful_of_seeds_pass() {
    let out = quire_sim(&[
        "sweep",
        "--seeds",
        "1..4",
        "--jobs",
        "2",
        "--duration",
        FAST_DURATION_S,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("3 of 3 seeds"), "{text}");
    assert!(text.contains("0 failed"), "{text}");
}

#[test]
fn a_seed_replays_identically_in_a_fresh_process() {
    let trace = std::env::temp_dir().join(format!("quire-sim-test-{}.trace", std::process::id()));
    let trace_arg = trace.to_string_lossy().into_owned();
    let out = quire_sim(&[
        "run",
        "--seed",
        "1",
        "--duration",
        FAST_DURATION_S,
        "--check-determinism",
        "--trace",
        &trace_arg,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("determinism: the replay"), "{text}");
    assert!(text.contains("PASSED"), "{text}");
    // The trace file is the trace whose hash was printed, stamped with simulated time only.
    let written = std::fs::read_to_string(&trace).expect("trace written");
    let _ = std::fs::remove_file(&trace);
    assert!(written.lines().count() > 100, "a short trace:\n{written}");
    assert!(written.contains("faults "), "faults are traced");
    assert!(written.contains("leads term"), "leaders are traced");
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("trace sha256: "))
        .expect("hash printed");
    use sha2::Digest as _;
    assert_eq!(hex::encode(sha2::Sha256::digest(written.as_bytes())), hash);
    assert!(
        text.contains("x\n") && text.contains("wall:"),
        "speed ratio printed: {text}"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_clear_error() {
    let out = quire_sim(&["run", "--seed", "1", "--nodes", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes must be 3 to 9"));
    let out = quire_sim(&["sweep", "--seeds", "5..5"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    let out = quire_sim(&["run", "--seed", "1", "--bug", "nope"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown bug"));
    let out = quire_sim(&["bugs"]);
    assert!(out.status.success());
    let text = stdout(&out);
    // One line per planted bug, its name first and set off from its description.
    for bug in [
        "ack-before-durable",
        "stale-local-read",
        "limiter-forgets-state",
        "authz-ignores-staleness",
        "audit-after-answer",
        "placement-ignores-drains",
        "stale-owner-not-fenced",
        "handoff-skips-hold-off",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{bug}  "))),
            "{text}"
        );
    }
}

/// A longer sweep, out of CI: `QUIRE_SIM_LONG=1 cargo test -p quire-sim --test seeds`.
#[test]
fn long_sweep() {
    if std::env::var_os("QUIRE_SIM_LONG").is_none() {
        eprintln!("skipped: set QUIRE_SIM_LONG=1 to run 100 seeds of 30 simulated s");
        return;
    }
    let out = quire_sim(&[
        "sweep",
        "--seeds",
        "1..101",
        "--jobs",
        "2",
        "--duration",
        "30",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
}
