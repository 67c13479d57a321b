//! Shared helpers: run the `quire-sim` binary (one simulation per process).

#![allow(dead_code, reason = "each test file uses a part")]

use std::process::{Command, Output};

/// Simulated seconds per seed in the fast tests.
pub const FAST_DURATION_S: &str = "15";

pub fn quire_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quire-sim"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("quire-sim starts")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
