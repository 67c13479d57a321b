//! Running `quire ctl` as a child process against a node.

use std::process::Command;

use serde_json::Value;

/// What one `quire ctl` run printed, and whether it succeeded.
pub struct CtlOut {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOut {
    /// The JSON a `--json` run printed; panics unless it succeeded and printed JSON.
    pub fn json(&self) -> Value {
        assert!(self.ok, "ctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("ctl --json printed no JSON ({e}): {}", self.stdout))
    }
}

/// A `quire ctl` command with `QUIRE_ADMIN_TOKEN` and `QUIRE_URL` unset, so only its
/// arguments say where it connects and as whom. Add environment to `command`, then `run`.
pub struct Ctl {
    pub command: Command,
}

impl Ctl {
    /// `quire ctl`, with `--url base --timeout-secs timeout_secs` when `base` is given and
    /// `--token token` when `token` is.
    pub fn new(base: Option<&str>, token: Option<&str>, timeout_secs: u64) -> Ctl {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quire"));
        command.arg("ctl");
        if let Some(base) = base {
            command.args(["--url", base, "--timeout-secs", &timeout_secs.to_string()]);
        }
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command
            .env_remove("QUIRE_ADMIN_TOKEN")
            .env_remove("QUIRE_URL");
        Ctl { command }
    }

    /// Runs it with `args` after the connection arguments; waits for it to exit.
    pub fn run(mut self, args: &[&str]) -> CtlOut {
        let out = self.command.args(args).output().expect("run quire ctl");
        CtlOut {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `quire ctl` (with `--url` and a 20 s `--timeout-secs` when `base` is given, and
/// `--token` when `token` is) with `args`.
pub fn ctl(base: Option<&str>, token: Option<&str>, args: &[&str]) -> CtlOut {
    Ctl::new(base, token, 20).run(args)
}

/// Issues an admin token acting as `subject` through `quire ctl`; returns its secret.
pub fn admin_token_for(base: &str, root: &str, subject: &str) -> String {
    let issued = ctl(
        Some(base),
        Some(root),
        &[
            "--json",
            "admin-tokens",
            "issue",
            "--name",
            subject,
            "--subject",
            subject,
        ],
    )
    .json();
    assert_eq!(issued["subject"], subject, "{issued}");
    issued["token"].as_str().expect("a secret").to_owned()
}
