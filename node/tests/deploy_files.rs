//! The operator files in `deploy/`: the systemd unit carries the settings it must (and passes
//! `systemd-analyze verify` where that tool exists), and `deploy/install.sh` is valid bash,
//! refuses bad input before changing anything, and in `--dry-run` lists every step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `[Section] key=value` lines of a unit file; a key set twice keeps every value.
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        out.entry((section.clone(), key.trim().to_owned()))
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

fn unit() -> String {
    std::fs::read_to_string(deploy().join("systemd/quire.service"))
        .expect("deploy/systemd/quire.service")
}

#[test]
fn the_unit_runs_quire_serve_as_its_own_user_with_hardening() {
    let unit = parse_unit(&unit());
    let get = |section: &str, key: &str| -> String {
        unit.get(&(section.to_owned(), key.to_owned()))
            .unwrap_or_else(|| panic!("[{section}] {key} is missing"))
            .join(" ")
    };
    assert_eq!(
        get("Service", "ExecStart"),
        "/usr/local/bin/quire serve --config /etc/quire/quire.toml"
    );
    // A bad config stops the start with every problem and its line in the journal.
    assert_eq!(
        get("Service", "ExecStartPre"),
        "/usr/local/bin/quire config check --env /etc/quire/quire.toml"
    );
    let required = [
        ("User", "quire"),
        ("Group", "quire"),
        ("StateDirectory", "quire"),
        ("ConfigurationDirectory", "quire"),
        ("EnvironmentFile", "-/etc/quire/quire.env"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("ReadWritePaths", "/var/lib/quire"),
        ("LimitNOFILE", "65536"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ];
    for (key, value) in required {
        assert_eq!(get("Service", key), value, "[Service] {key}");
    }
    let stop: u64 = get("Service", "TimeoutStopSec").parse().unwrap();
    assert!(
        stop >= 30,
        "TimeoutStopSec={stop} leaves too little for a graceful stop"
    );
    let restart: u64 = get("Service", "RestartSec").parse().unwrap();
    assert!(restart >= 1);
    // StartLimit* belong to [Unit]; systemd ignores them in [Service].
    assert!(get("Unit", "StartLimitIntervalSec").parse::<u64>().is_ok());
    assert_eq!(get("Install", "WantedBy"), "multi-user.target");
    assert!(get("Unit", "After").contains("network-online.target"));
}

#[test]
fn the_unit_passes_systemd_analyze_verify_where_available() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("systemd-analyze is not installed here: only the parsed checks ran");
        return;
    }
    // verify needs ExecStart's binary to exist: point the unit at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quire.service");
    std::fs::write(
        &path,
        unit().replace("/usr/local/bin/quire", env!("CARGO_BIN_EXE_quire")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("quire")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify warns: {ours:?}");
}

#[test]
fn the_env_file_holds_only_comments_and_quire_variables() {
    let text = std::fs::read_to_string(deploy().join("systemd/quire.env")).unwrap();
    let mut set = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, _) = line.split_once('=').expect("NAME=value");
        assert!(name.starts_with("QUIRE_"), "{line}");
        set += 1;
    }
    assert!(set >= 1);
    assert!(text.contains("QUIRE_MASTER_KEY_FILE"));
}

fn install(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(deploy().join("install.sh"))
        .args(args)
        .output()
        .expect("bash runs")
}

#[test]
fn install_sh_is_valid_bash_and_passes_shellcheck_where_available() {
    let script = deploy().join("install.sh");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("set -euo pipefail"));
    if let Ok(out) = Command::new("shellcheck").arg(&script).output() {
        assert!(
            out.status.success(),
            "shellcheck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!("shellcheck is not installed here");
    }
}

#[test]
fn rolling_restart_sh_is_valid_bash_and_passes_shellcheck_where_available() {
    let script = deploy().join("rolling-restart.sh");
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without hosts it names the problem and changes nothing.
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("name the cluster's hosts"));
    if let Ok(out) = Command::new("shellcheck").arg(&script).output() {
        assert!(
            out.status.success(),
            "shellcheck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        eprintln!("shellcheck is not installed here");
    }
}

/// A node's inputs: a config naming /etc/quire files (HTTPS on its address), its TLS dir and
/// a master key.
fn inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let config = dir.join("quire.toml");
    std::fs::write(
        &config,
        "[node]\nid = 2\ndata_dir = \"/var/lib/quire\"\nlisten = \"10.0.0.2:7800\"\n\
         tls_cert_file = \"/etc/quire/tls/http.pem\"\ntls_key_file = \"/etc/quire/tls/http.key\"\n\
         [security]\nmaster_key_file = \"/etc/quire/master.key\"\n\
         [peer]\nlisten = \"10.0.0.2:7900\"\ntls_dir = \"/etc/quire/tls\"\njoin = \"10.0.0.1:7900\"\n",
    )
    .expect("write the config");
    let tls = dir.join("node2-tls");
    std::fs::create_dir(&tls).expect("make the TLS dir");
    for f in ["node.pem", "node.key", "ca.pem", "http.pem", "http.key"] {
        std::fs::write(tls.join(f), "x").expect("write a TLS file");
    }
    let key = dir.join("master.key");
    std::fs::write(&key, "ab".repeat(32)).expect("write the key");
    (config, tls, key)
}

#[test]
fn install_sh_dry_run_lists_every_step_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (config, tls, key) = inputs(dir.path());
    let prefix = dir.path().join("prefix");
    let out = install(&[
        "--binary",
        env!("CARGO_BIN_EXE_quire"),
        "--config",
        config.to_str().unwrap(),
        "--tls-dir",
        tls.to_str().unwrap(),
        "--master-key",
        key.to_str().unwrap(),
        "--prefix",
        prefix.to_str().unwrap(),
        "--dry-run",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let p = prefix.display();
    let expected = [
        "config check --no-files".to_owned(),
        format!(
            "+ install -m 0755 -o root -g root {} {p}/bin/quire",
            env!("CARGO_BIN_EXE_quire")
        ),
        "+ install -d -m 0750 -o root -g quire /etc/quire".to_owned(),
        "+ install -d -m 0750 -o quire -g quire /var/lib/quire".to_owned(),
        format!(
            "+ install -m 0640 -o root -g quire {} /etc/quire/quire.toml",
            config.display()
        ),
        format!(
            "+ install -m 0640 -o root -g quire {}/node.key /etc/quire/tls/node.key",
            tls.display()
        ),
        format!(
            "+ install -m 0640 -o root -g quire {}/ca.pem /etc/quire/tls/ca.pem",
            tls.display()
        ),
        format!(
            "+ install -m 0640 -o root -g quire {}/http.key /etc/quire/tls/http.key",
            tls.display()
        ),
        format!(
            "+ install -m 0640 -o root -g quire {} /etc/quire/master.key",
            key.display()
        ),
        "/etc/systemd/system/quire.service".to_owned(),
        "+ runuser -u quire -- env ".to_owned(),
        format!("{p}/bin/quire config check --env /etc/quire/quire.toml"),
        "systemctl enable --now quire".to_owned(),
    ];
    let mut from = 0;
    for line in &expected {
        let at = stdout[from..]
            .find(line.as_str())
            .unwrap_or_else(|| panic!("missing (in order) {line:?} in:\n{stdout}"));
        from += at;
    }
    // The user is created unless it exists; either way the script says so.
    assert!(
        stdout.contains("useradd --system") || stdout.contains("user quire exists"),
        "{stdout}"
    );
    assert!(!prefix.exists(), "a dry run created {}", prefix.display());
}

#[test]
fn install_sh_refuses_a_config_with_problems_before_installing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = inputs(dir.path());
    std::fs::write(&config, "[node]\nid = 0\nlisen = \"0.0.0.0:1\"\n").unwrap();
    let out = install(&[
        "--binary",
        env!("CARGO_BIN_EXE_quire"),
        "--config",
        config.to_str().unwrap(),
        "--dry-run",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(":3:1: unknown key `node.lisen`"),
        "{stdout}"
    );
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    assert!(!stdout.contains("+ install "), "{stdout}");
}

#[test]
fn install_sh_names_what_is_wrong_with_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--dry-run"], "--binary PATH is required"),
        (
            &["--binary", "/nonexistent/quire", "--dry-run"],
            "not an executable file",
        ),
        (
            &[
                "--binary",
                env!("CARGO_BIN_EXE_quire"),
                "--tls-dir",
                dir.path().to_str().unwrap(),
                "--dry-run",
            ],
            "has no readable node.pem",
        ),
        (
            &["--binary", env!("CARGO_BIN_EXE_quire"), "--bogus"],
            "unknown argument: --bogus",
        ),
        (
            &[
                "--binary",
                env!("CARGO_BIN_EXE_quire"),
                "--prefix",
                "/opt/a b",
                "--dry-run",
            ],
            "--prefix must be an absolute path",
        ),
    ];
    for (args, message) in cases {
        let out = install(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("+ install"));
    }
}

#[test]
fn the_readme_install_config_checks_clean() {
    let readme = std::fs::read_to_string(deploy().join("../README.md")).expect("README.md");
    let start = readme
        .find("## Install on a Linux host")
        .expect("the README has an install section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the install section shows a node's config");
    let problems = quire_node::config_check::check_str(
        block,
        &quire_node::config_check::CheckOptions {
            check_files: false,
            env: None,
        },
    );
    assert_eq!(problems, vec![], "{block}");
    assert!(block.contains("[[peer.members]]"));
    // The install command it shows uses flags install.sh knows.
    let script = std::fs::read_to_string(deploy().join("install.sh")).expect("install.sh");
    for flag in ["--binary", "--config", "--tls-dir", "--master-key"] {
        assert!(section.contains(&format!("{flag} ")), "{flag}");
        assert!(script.contains(&format!("{flag})")), "{flag}");
    }
}

/// A real install, as root, inside a private mount namespace: /etc, /var/lib and /usr/local
/// are fresh copies or empty tmpfs there, so the host is left as it was. Then the node
/// starts from the installed files as the `quire` user. Skipped where that is not possible
/// (not root, no `unshare`).
#[test]
fn install_sh_installs_a_node_that_starts_in_a_private_mount_namespace() {
    let can = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !(can && root) {
        eprintln!("skipped: needs root and unshare --mount");
        return;
    }
    let host_had_etc_quire = Path::new("/etc/quire").exists();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("quire.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = 1\ndata_dir = \"/var/lib/quire\"\nlisten = \"127.0.0.1:{port}\"\n\
             [security]\nmaster_key_file = \"/etc/quire/master.key\"\n"
        ),
    )
    .unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, "cd".repeat(32)).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[node]\nlisen = 1\n").unwrap();
    let script = format!(
        r#"set -euo pipefail
mkdir -p "$T/etc"
mount --bind /etc "$T/etc"
mount -t tmpfs tmpfs /etc
cp -a "$T/etc/." /etc/
mkdir -p /var/lib
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /usr/local
install() {{ bash "$DEPLOY/install.sh" --binary "$BIN" "$@"; }}
install --config "$T/quire.toml" --master-key "$T/master.key"
echo "=== again"
install --config "$T/quire.toml" --master-key "$T/master.key"
echo "=== bad"
if install --config "$T/bad.toml"; then echo "BAD CONFIG INSTALLED"; exit 1; fi
cmp /etc/quire/quire.toml "$T/quire.toml"
stat -c '%a %U:%G %n' /etc/quire /etc/quire/quire.toml /etc/quire/master.key /var/lib/quire
echo "=== start"
runuser -u quire -- /usr/local/bin/quire init --config /etc/quire/quire.toml
runuser -u quire -- bash -c 'echo $$ >/var/lib/quire/serve.pid; exec /usr/local/bin/quire serve --config /etc/quire/quire.toml' &
wrapper=$!
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:{port}/readyz" >/dev/null 2>&1; then echo READY; break; fi
  sleep 0.1
done
kill -TERM "$(cat /var/lib/quire/serve.pid)"
wait "$wrapper" && echo STOPPED
"#
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .env("T", dir.path())
        .env("DEPLOY", deploy())
        .env("BIN", env!("CARGO_BIN_EXE_quire"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let again = &stdout[stdout.find("=== again").unwrap()..stdout.find("=== bad").unwrap()];
    assert!(again.contains("user quire exists"), "{again}");
    assert!(!again.contains("useradd"), "{again}");
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    for line in [
        "750 root:quire /etc/quire",
        "640 root:quire /etc/quire/quire.toml",
        "640 root:quire /etc/quire/master.key",
        "750 quire:quire /var/lib/quire",
        "READY",
        "STOPPED",
    ] {
        assert!(
            stdout.contains(line),
            "missing {line:?} in:\n{stdout}\n{stderr}"
        );
    }
    // The host is untouched.
    assert_eq!(Path::new("/etc/quire").exists(), host_had_etc_quire);
}
