//! `quire config check` as an operator runs it: the binary on good and bad files, its output
//! lines and its exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

fn quire(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_quire"))
        .args(args)
        .output()
        .expect("the quire binary runs")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/quire.example.toml")
}

#[test]
fn the_example_config_checks_clean_without_its_files() {
    let path = example();
    let out = quire(&["config", "check", "--no-files", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout, format!("{}: ok\n", path.display()));
}

#[test]
fn the_example_config_names_a_master_key_that_is_not_here() {
    // /etc/quire/master.key does not exist on a build machine: the check says which file.
    if Path::new("/etc/quire/master.key").exists() {
        return;
    }
    let path = example();
    let out = quire(&["config", "check", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("/etc/quire/master.key"), "{stdout}");
    assert!(stdout.contains(": 1 problem"), "{stdout}");
}

#[test]
fn a_bad_file_gets_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.toml");
    std::fs::write(
        &path,
        "[node]\nid = 0\nlisen = \"0.0.0.0:7800\"\n\n[mcp]\nmax_request_body_bytes = \"4MB\"\n\n[notion]\nbase_url = \"api.notion.com\"\nretries = 3\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let out = quire(&["config", "check", "--no-files", file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let places: Vec<&str> = lines
        .iter()
        .map(|l| l.strip_prefix(file).unwrap_or(l))
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        places,
        [":2:1:", ":3:1:", ":6:1:", ":9:1:", ":10:1:", ":"],
        "{stdout}"
    );
    assert!(lines[1].contains("did you mean `listen`"), "{stdout}");
    assert!(lines[2].contains("mcp.max_request_body_bytes"), "{stdout}");
    assert_eq!(lines[5], format!("{file}: 5 problems"));
}

#[test]
fn a_syntax_error_is_placed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.toml");
    std::fs::write(&path, "[node]\nid = 1\n\n[mcp\nallowed_hosts = [\"a\"]\n").unwrap();
    let out = quire(&["config", "check", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with(&format!("{}:4:", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("TOML syntax"), "{stdout}");
}

#[test]
fn an_unreadable_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let out = quire(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("absent.toml"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn with_env_the_quire_variables_apply_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.toml");
    std::fs::write(&path, "[peer]\ninsecure = true\njoin = \"10.0.0.1:7900\"\n").unwrap();
    let file = path.to_str().unwrap();
    let run = |env: bool, listen: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quire"));
        cmd.args(["config", "check", "--no-files"]);
        if env {
            cmd.arg("--env");
        }
        cmd.arg(file).env_remove("QUIRE_PEER_LISTEN");
        if let Some(listen) = listen {
            cmd.env("QUIRE_PEER_LISTEN", listen);
        }
        cmd.output().unwrap()
    };
    // The file alone lacks peer.listen; the environment supplies it only with --env.
    assert_eq!(run(false, Some("10.0.0.2:7900")).status.code(), Some(1));
    assert_eq!(run(true, Some("10.0.0.2:7900")).status.code(), Some(0));
    let out = run(true, Some("nowhere"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("QUIRE_PEER_LISTEN"), "{stdout}");
}
