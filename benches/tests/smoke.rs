//! Smoke test of `quire-bench raft-commit` against the debug `quire` binary: one writer, one
//! second, a real 3-process cluster. It checks that writes were committed and reported.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `target/debug/quire`: this test runs from `target/debug/deps/`.
fn debug_quire() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps");
    let quire = profile_dir.join(format!("quire{}", std::env::consts::EXE_SUFFIX));
    assert!(
        quire.is_file(),
        "{} is missing: build it first with `cargo build -p quire-node --bin quire` \
         (the workspace test command builds every binary before running tests)",
        quire.display()
    );
    quire
}

#[test]
fn raft_commit_reports_nonzero_committed_writes() {
    let Run { report, stdout, .. } = run_bench(&[
        "raft-commit",
        "--writers",
        "1",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
    ]);

    // The terminal table: a header and one row for 1 writer with writes/s > 0.
    let mut lines = stdout.lines();
    let header = lines
        .find(|l| l.contains("writes/s"))
        .unwrap_or_else(|| panic!("no table header in:\n{stdout}"));
    let columns: Vec<&str> = header.split_whitespace().collect();
    let rate_col = columns.iter().position(|c| *c == "writes/s").unwrap();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no table row in:\n{stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[0], "1", "{stdout}");
    let rate: f64 = row[rate_col].parse().unwrap();
    assert!(rate > 0.0, "writes/s is {rate}:\n{stdout}");

    // What it ran on, and the Markdown version.
    for needle in ["machine:", "commit:", "command:", "raft-commit --writers 1"] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
    assert!(stdout.contains("| writers | writes/s |"), "{stdout}");

    // The JSON agrees with the table.
    assert_eq!(report["benchmark"], "raft-commit");
    let level = &report["levels"][0];
    assert_eq!(level["writers"], 1);
    assert!(level["ok"].as_u64().unwrap() > 0, "{report}");
    assert!(level["ok_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(level["latency_us"]["p50"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(level["errors"], 0, "{report}");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    // The template edits commit without waiting out the revocation bound; the tenant
    // deletions measured apart do wait it out (1000 ms by default).
    assert!(
        level["latency_us"]["p50"].as_u64().unwrap() < 500_000,
        "{report}"
    );
    let deletes = report["revocations"]["delete_ms"].as_array().unwrap();
    assert_eq!(deletes.len(), 3, "{report}");
    for d in deletes {
        assert!(d.as_f64().unwrap() >= 1000.0, "{report}");
    }
    assert!(stdout.contains("revocation acknowledgement"), "{stdout}");
}

#[test]
fn a_missing_quire_binary_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args([
            "raft-commit",
            "--writers",
            "1",
            "--quire-bin",
            "/nonexistent/quire",
        ])
        .output()
        .expect("quire-bench runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cargo build --release --bin quire"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn audit_commit_reports_audited_calls_on_both_sides() {
    let Run {
        report,
        stdout,
        stderr,
    } = run_bench(&[
        "audit-commit",
        "--clients",
        "2",
        "--batches",
        "1,64",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
    ]);
    let levels = report["levels"].as_array().expect("levels");
    let sides: Vec<u64> = levels
        .iter()
        .map(|l| l["max_batch"].as_u64().unwrap())
        .collect();
    assert_eq!(sides, [1, 64], "{report}");
    for level in levels {
        assert!(
            level["ok"].as_u64().unwrap() > 0,
            "no audited call on side {}: {level}\nstderr:\n{stderr}",
            level["max_batch"]
        );
        assert_eq!(level["errors"], 0, "{level}");
    }
    assert!(stdout.contains("group commit: at 2 clients"), "{stdout}");
    assert!(stdout.contains("command: "), "{stdout}");
}

/// Why the side-by-side smoke test cannot run here, if it cannot.
fn notion_server_missing() -> Option<&'static str> {
    let runs = |name: &str| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !runs("node") {
        return Some("node is not installed");
    }
    // The test installs the server with npm unless a previous run did.
    let installed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-cache/npm/node_modules/@notionhq/notion-mcp-server/bin/cli.mjs")
        .is_file();
    if !(installed || (runs("npm") && runs("npx"))) {
        return Some("npm / npx are not installed");
    }
    None
}

#[test]
fn mcp_side_by_side_measures_every_side() {
    if let Some(reason) = notion_server_missing() {
        eprintln!("skipped: Notion's MCP server cannot run here: {reason}");
        return;
    }
    let quire = debug_quire();
    let out_dir = tempfile::tempdir().unwrap();
    let json_path = out_dir.path().join("mcp.json");
    let svg_path = out_dir.path().join("latency.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args(["mcp-side-by-side", "--clients", "2", "--ops", "page,search"])
        .args(["--duration-secs", "1", "--warmup-secs", "0"])
        .args(["--open-rates", "10", "--open-max-outstanding", "4"])
        .arg("--npm-dir")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-cache/npm"))
        .arg("--quire-bin")
        .arg(&quire)
        .arg("--json")
        .arg(&json_path)
        .arg("--svg")
        .arg(&svg_path)
        .arg("--work-dir")
        .arg(out_dir.path())
        .output()
        .expect("quire-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quire-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap())
        .expect("the JSON report parses");
    assert_eq!(report["benchmark"], "mcp-side-by-side");
    let closed = report["closed"].as_array().expect("closed rows");
    // 3 sides x 2 operations x 1 level, each with answered calls and no error.
    assert_eq!(closed.len(), 6, "{report}");
    for row in closed {
        assert!(row["ok"].as_u64().unwrap() > 0, "{row}\nstderr:\n{stderr}");
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["latency_us"]["p999"].as_u64().unwrap() > 0, "{row}");
        // The servers' CPU in the measured window, per answered call.
        let cpu = row["cpu"]["server_ms_per_call"].as_f64();
        assert!(cpu.is_some_and(|ms| ms > 0.0), "{row}");
    }
    let tools: Vec<&str> = closed.iter().map(|r| r["tool"].as_str().unwrap()).collect();
    for tool in [
        "notion-fetch",
        "notion-search",
        "API-retrieve-a-page",
        "API-post-search",
    ] {
        assert!(tools.contains(&tool), "{tools:?}");
    }
    // The open loop ran on every side at its rate.
    let open = report["open"].as_array().expect("open rows");
    assert_eq!(open.len(), 3, "{report}");
    for row in open {
        assert_eq!(row["target_rate"], 10.0);
        assert!(row["scheduled"].as_u64().unwrap() >= 9, "{row}");
        assert!(row["ok"].as_u64().unwrap() > 0, "{row}");
    }
    // Every side's server processes were measured.
    for side in report["sides"].as_array().unwrap() {
        assert!(side["peak_rss_kib"].as_u64().unwrap() > 1024, "{side}");
    }
    assert_eq!(report["sides"][1]["pids"].as_array().unwrap().len(), 3);
    assert!(stdout.contains("quire-1-node / notion-mcp-server, retrieve a page at 2 clients"));
    assert!(stdout.contains("| retrieve a page | `notion-fetch` | `API-retrieve-a-page` |"));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 3, "{svg}");
}

#[test]
fn mcp_side_by_side_runs_quire_alone_and_names_what_notion_needs() {
    // Only the Quire sides: no Node.js needed, and the command still works.
    let quire = debug_quire();
    let out_dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args(["mcp-side-by-side", "--sides", "quire1", "--clients", "1"])
        .args([
            "--ops",
            "query",
            "--duration-secs",
            "1",
            "--warmup-secs",
            "0",
        ])
        .arg("--quire-bin")
        .arg(&quire)
        .arg("--work-dir")
        .arg(out_dir.path())
        .output()
        .expect("quire-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "quire-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("| query a data source | quire-1-node | 1 |"),
        "{stdout}"
    );
    assert!(stdout.contains("server CPU ms/call"), "{stdout}");
    // Without Notion's side there is no ratio to print.
    assert!(!stdout.contains("/ notion-mcp-server"), "{stdout}");

    // Asked for Notion's side where there is no Node.js: a clear error before anything starts.
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args([
            "mcp-side-by-side",
            "--sides",
            "notion",
            "--duration-secs",
            "1",
        ])
        .arg("--npm-dir")
        .arg(out_dir.path().join("npm"))
        .arg("--quire-bin")
        .arg(&quire)
        .env("PATH", "")
        .output()
        .expect("quire-bench runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("apt-get install nodejs npm"), "{stderr}");
}

#[test]
fn raft_commit_with_etcd_runs_both_sides() {
    let has_etcd = Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_etcd {
        eprintln!("skipped: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    let Run { report, stdout, .. } = run_bench(&[
        "raft-commit",
        "--writers",
        "2",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
        "--with-etcd",
    ]);
    let etcd = &report["etcd"][0];
    assert_eq!(etcd["writers"], 2, "{report}");
    assert!(etcd["ok"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(etcd["errors"], 0, "{report}");
    assert!(report["etcd_version"].as_str().unwrap().contains("3."));
    assert!(stdout.contains("Quire / etcd at 2 writers"), "{stdout}");
}

/// What one `quire-bench` run wrote and printed.
struct Run {
    report: Value,
    stdout: String,
    stderr: String,
}

/// Runs `quire-bench ARGS --quire-bin <debug quire> --json FILE --work-dir DIR`, asserts it
/// succeeded, printed the command that produced it and left no cluster directory behind.
fn run_bench(args: &[&str]) -> Run {
    let quire = debug_quire();
    let out_dir = tempfile::tempdir().expect("a temporary directory");
    let json_path = out_dir.path().join("result.json");
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args(args)
        .arg("--quire-bin")
        .arg(&quire)
        .arg("--json")
        .arg(&json_path)
        .arg("--work-dir")
        .arg(out_dir.path())
        .output()
        .expect("quire-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "quire-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("the JSON report"))
            .expect("the JSON report parses");
    // The cluster's processes (and etcd's) are gone and their directories removed.
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.path())
        .expect("the work directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("quire-bench-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert!(stdout.contains("command: "), "{stdout}");
    Run {
        report,
        stdout,
        stderr,
    }
}

#[test]
fn failover_measures_a_new_leader_and_a_write_after_the_kill() {
    let Run { report, stdout, .. } = run_bench(&["failover", "--kills", "1", "--settle-secs", "1"]);
    assert_eq!(report["benchmark"], "failover");
    let kill = &report["kills"][0];
    let killed = kill["killed"].as_u64().unwrap();
    let new_leader = kill["new_leader"].as_u64().expect("a new leader was named");
    assert_ne!(killed, new_leader, "{report}");
    // Nothing can be acknowledged sooner than a new leader can be elected, and the
    // cluster must recover well within the give-up time.
    let first_write = kill["first_write_ms"]
        .as_f64()
        .expect("a write after the kill");
    assert!(first_write > 100.0 && first_write < 30_000.0, "{report}");
    assert!(
        kill["new_leader_ms"].as_f64().unwrap() < 30_000.0,
        "{report}"
    );
    assert!(stdout.contains("| kill | killed leader |"), "{stdout}");
    assert!(
        stdout.contains("first acknowledged write after kill -9"),
        "{stdout}"
    );
}

#[test]
fn budget_share_reads_the_sandbox_counters() {
    let Run { report, stdout, .. } = run_bench(&[
        "budget-share",
        "--duration-secs",
        "2",
        "--warmup-secs",
        "1",
        "--clients-per-node",
        "1",
    ]);
    assert_eq!(report["benchmark"], "budget-share");
    assert_eq!(report["budget"], 3);
    let served = report["sandbox"]["requests"].as_u64().unwrap();
    assert!(served > 0, "{report}");
    // The sandbox at 3/s, burst 10, admits at most 10 + 3 x 2 s (and a little slack for
    // the window's edges) in the measured window.
    assert!(served <= 19, "{report}");
    assert!(report["sandbox"]["max_per_second"].as_u64().unwrap() >= 1);
    assert!(report["share_of_budget"].as_f64().unwrap() > 0.0);
    assert!(report["calls"]["ok"].as_u64().unwrap() > 0, "{report}");
    assert!(stdout.contains("of the budget used"), "{stdout}");
}

#[test]
fn memory_reads_the_node_rss_at_each_step() {
    let Run { report, stdout, .. } = run_bench(&["memory", "--tenants", "40", "--sessions", "10"]);
    assert_eq!(report["benchmark"], "memory");
    for field in [
        "rss_idle_kib",
        "rss_tenants_kib",
        "rss_sessions_kib",
        "peak_kib",
    ] {
        assert!(report[field].as_u64().unwrap() > 1024, "{field}: {report}");
    }
    assert!(
        report["peak_kib"].as_u64().unwrap() >= report["rss_sessions_kib"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(report["tenants"], 40);
    assert_eq!(report["sessions"], 10);
    assert!(
        stdout.contains("KiB / tenant") && stdout.contains("KiB / session"),
        "{stdout}"
    );
}

#[test]
fn forwarding_measures_both_sides_and_the_remote_calls_travel() {
    let Run { report, stdout, .. } =
        run_bench(&["forwarding", "--calls", "20", "--warmup-calls", "5"]);
    assert_eq!(report["benchmark"], "forwarding");
    let (local, remote) = (&report["local"], &report["remote"]);
    for side in [local, remote] {
        assert_eq!(side["ok"], 20, "{report}");
        assert_eq!(side["errors"], 0, "{report}");
        assert!(side["latency_us"]["p50"].as_u64().unwrap() > 0, "{report}");
        assert!(
            side["latency_us"]["p99"].as_u64().unwrap()
                >= side["latency_us"]["p50"].as_u64().unwrap(),
            "{report}"
        );
    }
    let owner = report["owner"].as_u64().unwrap();
    assert_eq!(local["node"].as_u64(), Some(owner), "{report}");
    assert_ne!(remote["node"].as_u64(), Some(owner), "{report}");
    // The Raft leader, through which every audit record commits, is neither entry node.
    let leader = report["leader"].as_u64().unwrap();
    assert_eq!(report["remote_entry"], remote["node"], "{report}");
    assert_ne!(leader, owner, "{report}");
    assert_ne!(remote["node"].as_u64(), Some(leader), "{report}");
    assert!(
        report["integration"]
            .as_str()
            .is_some_and(|i| i.starts_with("fwd")),
        "{report}"
    );
    assert!(report["leader_changed"].is_boolean(), "{report}");
    // Every remote call (priming, 5 warm-up, 20 measured) went to the owner as a DataCall,
    // and the owner forwarded nothing.
    assert!(
        report["forwarded_by_remote_node"].as_u64().unwrap() >= 26,
        "{report}"
    );
    assert_eq!(report["forwarded_by_owner"], 0, "{report}");
    assert!((1..=3).contains(&leader), "{report}");
    assert!(
        report["served_by_owner"].as_u64().unwrap() >= 26,
        "{report}"
    );
    assert!(report["p50_ratio"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["p99_ratio"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        stdout.contains("forwarding overhead (remote / local, same run)"),
        "{stdout}"
    );
    assert!(stdout.contains("is the remote entry"), "{stdout}");
    assert!(stdout.contains("load average"), "{stdout}");
}

#[test]
fn drain_time_empties_the_drained_node() {
    let Run { report, stdout, .. } = run_bench(&[
        "drain-time",
        "--tenants",
        "20",
        "--interval-ms",
        "300",
        "--max-moves-per-round",
        "4",
    ]);
    assert_eq!(report["benchmark"], "drain-time");
    assert_eq!(report["interval_ms"], 300);
    assert_eq!(report["max_moves_per_round"], 4);
    let drained = report["drained_node"].as_u64().unwrap();
    let moved = report["shards_moved"].as_u64().unwrap();
    assert!(moved > 0, "{report}");
    let count = |which: &str, node: u64| {
        report[which]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0].as_u64() == Some(node))
            .and_then(|p| p[1].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(count("before", drained), moved, "{report}");
    assert_eq!(count("after", drained), 0, "{report}");
    // Every shard moved landed on another node.
    let total = |which: &str| -> u64 {
        report[which]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_u64().unwrap())
            .sum()
    };
    assert_eq!(total("before"), total("after"), "{report}");
    // The progress ends at zero, every reading lower than the one before, and the drops
    // add up to the shards moved.
    let progress = report["progress"].as_array().unwrap();
    assert_eq!(progress.last().unwrap()["shards_left"], 0, "{report}");
    let left: Vec<u64> = progress
        .iter()
        .map(|s| s["shards_left"].as_u64().unwrap())
        .collect();
    assert!(left.windows(2).all(|w| w[1] < w[0]), "{report}");
    let drops: u64 = report["moves_per_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .sum();
    assert_eq!(drops, moved, "{report}");
    // At most 4 moves a round, rounds at least 300 ms apart: the drain cannot finish before
    // its last round is due.
    let seconds = report["seconds_to_empty"].as_f64().unwrap();
    let min_rounds = moved.div_ceil(4);
    assert_eq!(report["min_rounds"], min_rounds, "{report}");
    assert!(
        seconds >= (min_rounds - 1) as f64 * 0.29 && seconds < 120.0,
        "{seconds} s to empty for {min_rounds} rounds: {report}"
    );
    assert!(stdout.contains("shards moved off in"), "{stdout}");
}

#[test]
fn forwarding_and_drain_time_refuse_bad_arguments() {
    for (args, needle) in [
        (&["forwarding", "--calls", "0"][..], "--calls must be 1 to"),
        (
            &["drain-time", "--interval-ms", "50"][..],
            "--interval-ms must be 100 to",
        ),
        (&["drain-time", "--node", "7"][..], "--node must be 1 to 3"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
            .args(args)
            .output()
            .expect("quire-bench runs");
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty());
    }
}
