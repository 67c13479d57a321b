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
    let quire = debug_quire();
    let out_dir = tempfile::tempdir().unwrap();
    let json_path = out_dir.path().join("result.json");
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args(["raft-commit", "--writers", "1", "--duration-secs", "1"])
        .args(["--warmup-secs", "0", "--quire-bin"])
        .arg(&quire)
        .arg("--json")
        .arg(&json_path)
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
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap())
        .expect("the JSON report parses");
    assert_eq!(report["benchmark"], "raft-commit");
    let level = &report["levels"][0];
    assert_eq!(level["writers"], 1);
    assert!(level["ok"].as_u64().unwrap() > 0, "{report}");
    assert!(level["ok_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(level["latency_us"]["p50"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(level["errors"], 0, "{report}");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);

    // The cluster's processes are gone and its directory removed.
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("quire-bench-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
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
    let quire = debug_quire();
    let out_dir = tempfile::tempdir().unwrap();
    let json_path = out_dir.path().join("audit.json");
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args(["audit-commit", "--clients", "2", "--batches", "1,64"])
        .args(["--duration-secs", "1", "--warmup-secs", "0", "--quire-bin"])
        .arg(&quire)
        .arg("--json")
        .arg(&json_path)
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
    let quire = debug_quire();
    let out_dir = tempfile::tempdir().unwrap();
    let json_path = out_dir.path().join("raft.json");
    let output = Command::new(env!("CARGO_BIN_EXE_quire-bench"))
        .args(["raft-commit", "--writers", "2", "--duration-secs", "1"])
        .args(["--warmup-secs", "0", "--with-etcd", "--quire-bin"])
        .arg(&quire)
        .arg("--json")
        .arg(&json_path)
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
    let etcd = &report["etcd"][0];
    assert_eq!(etcd["writers"], 2, "{report}");
    assert!(etcd["ok"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(etcd["errors"], 0, "{report}");
    assert!(report["etcd_version"].as_str().unwrap().contains("3."));
    assert!(stdout.contains("Quire / etcd at 2 writers"), "{stdout}");
    // The etcd members are gone with the run's directory.
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("quire-bench-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
