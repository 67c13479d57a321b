//! One `quire serve --sandbox` process on loopback, for the tests that drive a single real
//! node: starting it with its stderr in a file, waiting until it wrote `client.json` and
//! answers `/readyz`, and killing it when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// How long a node may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A running `quire` process; killed (and reaped) when dropped.
pub struct Node {
    pub child: Child,
    pub data_dir: PathBuf,
    /// Where its stderr goes; `None` when it is inherited from the test.
    pub stderr_path: Option<PathBuf>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// What the process wrote to stderr so far (empty when it is inherited).
    pub fn stderr(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

/// `quire serve --sandbox --listen 127.0.0.1:0 --data-dir DATA_DIR` with `QUIRE_LOG` set and
/// `QUIRE_MASTER_KEY` unset, stdout discarded. Add arguments and environment to `command`,
/// then `spawn`.
pub struct SandboxCommand {
    pub command: Command,
    data_dir: PathBuf,
    stderr_path: Option<PathBuf>,
}

impl SandboxCommand {
    /// The command for a node on `data_dir` logging at `log`; its stderr goes to the file
    /// `stderr` (created, truncated) or, with `None`, to the test's own stderr.
    pub fn new(data_dir: &Path, stderr: Option<&Path>, log: &str) -> SandboxCommand {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quire"));
        command
            .args([
                "serve",
                "--sandbox",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("QUIRE_LOG", log)
            .env_remove("QUIRE_MASTER_KEY")
            .stdout(Stdio::null());
        match stderr {
            Some(path) => {
                let file = std::fs::File::create(path).expect("create the stderr file");
                command.stderr(Stdio::from(file));
            }
            None => {
                command.stderr(Stdio::inherit());
            }
        }
        SandboxCommand {
            command,
            data_dir: data_dir.to_owned(),
            stderr_path: stderr.map(Path::to_owned),
        }
    }

    /// Starts the process.
    pub fn spawn(mut self) -> Node {
        Node {
            child: self.command.spawn().expect("start quire"),
            data_dir: self.data_dir,
            stderr_path: self.stderr_path,
        }
    }
}

/// A sandbox node on `dir/data` logging at `log`, its stderr in `dir/node.stderr`.
pub fn start_sandbox(dir: &Path, log: &str) -> Node {
    sandbox_in(dir, log).spawn()
}

/// The command `start_sandbox` runs, to add arguments or environment first.
pub fn sandbox_in(dir: &Path, log: &str) -> SandboxCommand {
    SandboxCommand::new(&dir.join("data"), Some(&dir.join("node.stderr")), log)
}

/// What a ready node's `client.json` says.
pub struct Ready {
    /// The base URL (`mcp_url` without `/mcp`).
    pub base: String,
    /// The root admin token.
    pub admin_token: String,
    /// The demo user's MCP token (empty when the file has none).
    pub token: String,
    /// The whole file.
    pub client: Value,
}

/// Waits until `node` wrote a `client.json` with an admin token and a base URL other than
/// `previous` (after a restart on the same data dir), and that URL answers `/readyz` with 200
/// through `http`. Panics, with the node's stderr, if it exits first or takes longer than
/// `READY_DEADLINE`.
pub async fn wait_ready(node: &mut Node, http: &reqwest::Client, previous: Option<&str>) -> Ready {
    let path = node.data_dir.join("client.json");
    let deadline = tokio::time::Instant::now() + READY_DEADLINE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not become ready within {} s:\n{}",
            READY_DEADLINE.as_secs(),
            node.stderr()
        );
        if let Ok(Some(status)) = node.child.try_wait() {
            panic!("quire exited early with {status}:\n{}", node.stderr());
        }
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(client) = serde_json::from_str::<Value>(&text)
            && let Some(admin) = client["admin_token"].as_str()
        {
            let base = client["mcp_url"]
                .as_str()
                .unwrap_or_default()
                .trim_end_matches("/mcp")
                .to_owned();
            if previous != Some(base.as_str())
                && let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                return Ready {
                    admin_token: admin.to_owned(),
                    token: client["token"].as_str().unwrap_or_default().to_owned(),
                    base,
                    client,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The workspace's root directory (the parent of `node/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_owned()
}

/// A Python with the MCP SDK: `QUIRE_TEST_PYTHON`, or the workspace's `.venv`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("QUIRE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the MCP SDK: run `bash scripts/test.sh` (it creates .venv with `mcp`), or set QUIRE_TEST_PYTHON"
    );
    venv
}
