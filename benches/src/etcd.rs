//! The etcd side of `raft-commit --with-etcd`: a 3-member etcd cluster on loopback (Debian's
//! `etcd-server`, separate data dirs, WAL fsynced before every acknowledgement, etcd's
//! default) driven by the same load generator. One write is one committed put or delete of a
//! small key through etcd's JSON gateway (`POST /v3/kv/put`, `/v3/kv/deleterange` on the
//! client port, HTTP/1.1 with kept-alive connections), alternating like Quire's tenant
//! create/delete so the store stays small.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use quire_node::local_cluster::free_port;
use serde_json::{Value, json};

use crate::load::{Worker, run_closed_loop};
use crate::raft_commit::{BenchError, Level, NODES, RaftCommitSpec};

/// How long the members may take to elect a leader.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What installs etcd when it is missing.
pub const INSTALL_HINT: &str = "etcd is not installed: `apt-get install etcd-server` (Debian, 3.4.23) \
                                 or leave out --with-etcd";

struct Members {
    children: Vec<Child>,
    clients: Vec<String>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `etcd --version`'s first line, or `None` when etcd is not installed.
pub fn version() -> Option<String> {
    let out = Command::new("etcd").arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    })
}

fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn start(dir: &Path) -> Result<Members, BenchError> {
    let port = || free_port().map_err(BenchError::Cluster);
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..NODES {
        peers.push(format!("http://127.0.0.1:{}", port()?));
        clients.push(format!("http://127.0.0.1:{}", port()?));
    }
    let initial: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("m{}={p}", i + 1))
        .collect();
    let mut members = Members {
        children: Vec::new(),
        clients: clients.clone(),
    };
    for i in 0..NODES {
        let name = format!("m{}", i + 1);
        let log =
            std::fs::File::create(dir.join(format!("etcd-{name}.log"))).map_err(|source| {
                BenchError::WorkDir {
                    dir: dir.to_owned(),
                    source,
                }
            })?;
        let child = Command::new("etcd")
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(dir.join(format!("etcd-{name}")))
            .args(["--listen-client-urls", &clients[i]])
            .args(["--advertise-client-urls", &clients[i]])
            .args(["--listen-peer-urls", &peers[i]])
            .args(["--initial-advertise-peer-urls", &peers[i]])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "quire-bench"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| BenchError::Preflight(format!("cannot start etcd: {e}")))?;
        members.children.push(child);
    }
    Ok(members)
}

/// The client URL of the member that is leader (waits until there is one).
async fn leader(http: &reqwest::Client, m: &Members) -> Result<usize, BenchError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    loop {
        for (i, c) in m.clients.iter().enumerate() {
            match http
                .post(format!("{c}/v3/maintenance/status"))
                .json(&json!({}))
                .send()
                .await
            {
                Ok(r) => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let me = &v["header"]["member_id"];
                    if !me.is_null() && v["leader"] == *me {
                        return Ok(i);
                    }
                    last = v.to_string();
                }
                Err(e) => last = e.to_string(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::NoLeader(format!("etcd: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A writer that puts a key, deletes it, puts the next, ...
pub struct EtcdWriter {
    http: reqwest::Client,
    client: String,
    prefix: String,
    next: u64,
    pending_delete: Option<String>,
}

impl Worker for EtcdWriter {
    async fn call(&mut self) -> Result<(), String> {
        let (path, body, key) = match self.pending_delete.take() {
            Some(key) => ("deleterange", json!({"key": b64(&key)}), None),
            None => {
                let key = format!("{}-{}", self.prefix, self.next);
                self.next += 1;
                (
                    "put",
                    json!({"key": b64(&key), "value": b64("bench tenant")}),
                    Some(key),
                )
            }
        };
        let r = self
            .http
            .post(format!("{}/v3/kv/{path}", self.client))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("etcd {path}: {e}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "etcd {path} answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        self.pending_delete = key;
        Ok(())
    }
}

/// Starts the etcd cluster in `dir`, runs every level of `spec` against its leader, stops it.
pub async fn run(
    spec: &RaftCommitSpec,
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Level>, BenchError> {
    let version = version().ok_or_else(|| BenchError::Preflight(INSTALL_HINT.to_owned()))?;
    progress(&format!(
        "starting a {NODES}-member etcd cluster ({version}) in {}",
        dir.display()
    ));
    let members = start(dir)?;
    let http = reqwest::Client::builder()
        .timeout(crate::raft_commit::OP_TIMEOUT)
        .pool_max_idle_per_host(crate::load::MAX_WRITERS)
        .build()
        .map_err(BenchError::Http)?;
    let mut levels = Vec::new();
    let mut preflight = EtcdWriter {
        http: http.clone(),
        client: String::new(),
        prefix: "b-preflight".to_owned(),
        next: 0,
        pending_delete: None,
    };
    let first = leader(&http, &members).await?;
    preflight.client = members.clients[first].clone();
    for _ in 0..2 {
        preflight.call().await.map_err(BenchError::Preflight)?;
    }
    for &writers in &spec.writers {
        let l = leader(&http, &members).await?;
        let workers: Vec<EtcdWriter> = (0..writers)
            .map(|w| EtcdWriter {
                http: http.clone(),
                client: members.clients[l].clone(),
                prefix: format!("b-{writers}-{w}"),
                next: 0,
                pending_delete: None,
            })
            .collect();
        progress(&format!(
            "etcd, {writers} writers -> member {} (leader): {:?} warm-up + {:?}",
            l + 1,
            spec.warmup,
            spec.duration
        ));
        let result = run_closed_loop(&spec.load_spec(), workers).await?;
        progress(&format!(
            "etcd, {writers} writers: {:.1} writes/s, p99 {} ms, {} errors",
            result.ok_per_sec,
            crate::report::ms(result.latency_us.p99),
            result.errors
        ));
        levels.push(Level {
            leader: l as u64 + 1,
            target_nodes: vec![l as u64 + 1],
            result,
        });
    }
    drop(members);
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_keys() {
        assert_eq!(b64(""), "");
        assert_eq!(b64("f"), "Zg==");
        assert_eq!(b64("fo"), "Zm8=");
        assert_eq!(b64("foo"), "Zm9v");
        assert_eq!(b64("b-16-3-7"), "Yi0xNi0zLTc=");
    }
}
