//! The `quire-sandbox` command: prints its URL and tokens, then serves; bad flags fail clearly.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn binary_serves_and_prints_tokens() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_quire-sandbox"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "off",
            "--seed",
            "3",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn quire-sandbox");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read") {
            let done = line.contains("stats:");
            printed.push(line);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("banner within 20 s");
    let text = printed.join("\n");
    assert!(
        text.contains("secret_sandbox_alpha") && text.contains("secret_sandbox_beta"),
        "{text}"
    );
    let url = printed[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL")
        .trim_end_matches("/v1")
        .to_string();
    let me: serde_json::Value = reqwest::Client::new()
        .get(format!("{url}/v1/users/me"))
        .bearer_auth("secret_sandbox_alpha")
        .header("Notion-Version", "2025-09-03")
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(me["type"], "bot");
    child.kill().await.expect("stop the sandbox");
}

#[tokio::test]
async fn bad_flags_are_refused() {
    for args in [
        vec!["--rate-limit", "fast"],
        vec!["--latency-ms", "80..20"],
        vec!["--error-rate", "2"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_quire-sandbox"))
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .await
            .expect("run");
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty(), "{args:?} should explain why");
    }
}
