//! Three real hosts on one machine: three network namespaces with their own addresses on a
//! bridge (in a fourth namespace), one `quire serve` in each over mutual TLS between peers and
//! HTTPS for agents, and a client namespace holding the Notion sandbox and the test's own MCP
//! and admin clients, so every packet stays inside the namespaces.
//!
//! The outer test (in the root namespace) builds the network and always tears it down (a Drop
//! guard; names carry a random part so a leftover never breaks the next run), then runs the
//! scenario — this same test binary, its ignored `scenario` test — inside the client
//! namespace with `ip netns exec`. The scenario:
//!
//! 1. a rolling restart of all three nodes (followers first, the leader last) under continuous
//!    tool calls and admin writes, each node coming back with a new master key as its current
//!    key (the README's rotation procedure), then `quire ctl keys rotate`: no acknowledged
//!    write lost, no call failed except as retryable (connection refused or reset, 503, a
//!    session the restarted node no longer knows; the client retries on another node);
//! 2. one host cut off (its link down) and healed: the other two keep serving, it catches up;
//! 3. the owner of the integration's shard cut off from its peers only (blackhole routes to
//!    their addresses), still reaching Notion and reached by agents: the shard moves, and the
//!    sandbox, which tells senders apart by their addresses, saw one sender at a time;
//! 4. a backup taken under load, restored into a fresh three-host cluster on the same hosts
//!    (data dirs wiped), which answers with the tenants the backup holds, verifies every audit
//!    chain and serves tool calls on every node.
//!
//! It prints the figures (calls served, retried, failed; writes acknowledged, lost; the longest
//! gap without a successful call). It needs root and `ip` (iproute2): without them it skips
//! with the reason, unless `QUIRE_REQUIRE_NETNS=1`, when it fails.
//!
//! A second test, on loopback and without root, looks at one node's drain closely: a call in
//! flight at SIGTERM gets its answer, a new request is not taken, and the node leaves once
//! that answer is out, without waiting for an agent's open MCP stream.

#![allow(clippy::unwrap_used, reason = "tests")]

mod cluster_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use cluster_common::shards::shard_entry;
use cluster_common::{Answer, admin_request, list_tenants};
use quire_raft::ids::{IntegrationId, TenantId};
use quire_raft::placement::{Residency, integration_key, shard_of};

/// Where the scenario reads its plan (set by the outer test only).
const PLAN_ENV: &str = "QUIRE_NETNS_PLAN";
/// Nodes of the cluster.
const NODES: u64 = 3;
/// The subnet of the bridge; node `i` is `.i`, the client namespace `.10`.
const SUBNET: &str = "10.77.0";
const CLIENT_HOST: u8 = 10;
const HTTP_PORT: u16 = 7800;
const PEER_PORT: u16 = 7900;
const SANDBOX_PORT: u16 = 7700;
/// Tool-calling clients running at once during each phase.
const CALLERS: usize = 6;
/// How long one tool call or admin request may take before the client gives up on that node.
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);
/// How long one admin write may take on a node before it is retried on the next one (short,
/// so a write sent to a host that was just cut off moves on while the cut lasts).
const WRITE_DEADLINE: Duration = Duration::from_secs(4);
/// How long a write is retried (on the next node each time) before it counts as failed.
const WRITE_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// How long a node has to leave after SIGTERM (its drain is bounded by the grace, 10 s).
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// The sandbox's added latency per Notion request.
const NOTION_LATENCY_MS: &str = "50..250";
/// How long a node stays down in the rolling restart (an upgrade replaces its binary).
const DOWN_FOR: Duration = Duration::from_secs(2);
/// How long a host stays cut off.
const CUT_FOR: Duration = Duration::from_secs(10);

/// What the outer test hands the scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    dir: PathBuf,
    binary: PathBuf,
    /// Namespace of node `i` at index `i - 1`.
    hosts: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// The network (root namespace)

fn have_ip() -> bool {
    Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Five namespaces (three hosts, a client, a switch) and their links. Dropping it kills what
/// still runs in them and deletes them, with their links.
struct Net {
    names: Vec<String>,
    hosts: Vec<String>,
    client: String,
}

impl Net {
    /// Namespaces `qn-<pid>-<run>-*`, where `pid` is this test process: a later run deletes
    /// them if this process is gone without cleaning up (killed).
    fn create(run: &str) -> anyhow::Result<Net> {
        let prefix = format!("qn-{}-{run}", std::process::id());
        let switch = format!("{prefix}-sw");
        let client = format!("{prefix}-cl");
        let hosts: Vec<String> = (1..=NODES).map(|i| format!("{prefix}-h{i}")).collect();
        let mut net = Net {
            names: Vec::new(),
            hosts: hosts.clone(),
            client: client.clone(),
        };
        for name in hosts.iter().chain([&client, &switch]) {
            ip(&["netns", "add", name])?;
            net.names.push(name.clone());
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        let ends = hosts
            .iter()
            .enumerate()
            .map(|(i, ns)| (ns.clone(), (i + 1) as u8))
            .chain([(client.clone(), CLIENT_HOST)]);
        for (ns, host) in ends {
            // Both ends are made in the root namespace under names unique to this run, then
            // moved: the host's end becomes its eth0, the switch's end a port of br0.
            let a = format!("q{run}{host}a");
            let b = format!("q{run}{host}b");
            ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
            ip(&["link", "set", &a, "netns", &switch])?;
            ip(&["link", "set", &b, "netns", &ns])?;
            ip(&["-n", &switch, "link", "set", &a, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &a, "up"])?;
            ip(&["-n", &ns, "link", "set", &b, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{SUBNET}.{host}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_namespaces(&self.names);
    }
}

/// Kills what still runs in the namespaces (nodes, the sandbox, the scenario a run started
/// there) and deletes them, with their links.
fn remove_namespaces(names: &[String]) {
    for name in names {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
    }
    for name in names {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

/// Namespaces left by earlier runs of this test whose process no longer exists.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let stale: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            let mut parts = name.split('-');
            parts.next() == Some("qn")
                && parts
                    .next()
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_owned)
        .collect();
    if !stale.is_empty() {
        eprintln!("removing namespaces left by an earlier run: {stale:?}");
        remove_namespaces(&stale);
    }
}

/// A short random run id (the random part of a temp dir's name).
fn run_id(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    name.chars()
        .rev()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect()
}

#[test]
fn three_hosts_rolling_restart_cut_off_backup_and_restore() {
    let required = std::env::var("QUIRE_REQUIRE_NETNS").is_ok_and(|v| v == "1");
    let missing = if !is_root() {
        Some("not root (network namespaces need root)")
    } else if !have_ip() {
        Some("`ip` (iproute2) is missing")
    } else {
        None
    };
    if let Some(reason) = missing {
        assert!(!required, "QUIRE_REQUIRE_NETNS=1 but {reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("quire-netns-")
        .tempdir()
        .unwrap();
    let run = run_id(dir.path());
    remove_stale_namespaces();
    let net = match Net::create(&run) {
        Ok(net) => net,
        Err(e) => {
            // Root without the right to make namespaces (a container, say).
            assert!(!required, "QUIRE_REQUIRE_NETNS=1 but {e:#}");
            eprintln!("skipped: cannot make network namespaces: {e:#}");
            return;
        }
    };
    let plan = Plan {
        dir: dir.path().to_owned(),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_quire")),
        hosts: net.hosts.clone(),
    };
    let me = std::env::current_exe().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &net.client])
        .arg(&me)
        .args(["scenario", "--exact", "--include-ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(PLAN_ENV, serde_json::to_string(&plan).unwrap())
        .status()
        .unwrap();
    drop(net);
    if !status.success() {
        let kept = dir.keep();
        print_logs(&kept);
        panic!(
            "the scenario failed ({status}); its directory is kept: {}",
            kept.display()
        );
    }
}

fn print_logs(dir: &Path) {
    for i in 1..=NODES {
        let path = dir.join(format!("h{i}")).join("node.log");
        let Ok(log) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("admin change applied"))
            .collect();
        eprintln!(
            "---- last lines of {} ----\n{}",
            path.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// The drain of one node (loopback; needs no root)

/// One node on loopback whose Notion answers in 1.5 s: a call is in flight and an agent holds
/// an MCP stream open when the node gets SIGTERM. The call finishes with its result, a new
/// request is refused (listener closed) or answered 503, and the node leaves after the call's
/// answer and well before the grace ends (the open stream carries no answer, so it does not
/// hold the drain; the node closes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_finishes_calls_in_flight_and_leaves_once_they_are_answered() {
    const GRACE: Duration = Duration::from_millis(4_000);
    let dir = tempfile::Builder::new()
        .prefix("quire-drain-")
        .tempdir()
        .unwrap();
    let mut cluster =
        quire_node::local_cluster::LocalCluster::up(quire_node::local_cluster::Spec {
            dir: dir.path().to_owned(),
            binary: PathBuf::from(env!("CARGO_BIN_EXE_quire")),
            nodes: 1,
            tls: false,
            fault_injection: false,
            env: vec![(
                "QUIRE_SHUTDOWN_GRACE_MS".into(),
                GRACE.as_millis().to_string(),
            )],
            sandbox_args: ["--rate-limit", "off", "--latency-ms", "1500..1500"]
                .map(String::from)
                .to_vec(),
        })
        .await
        .unwrap();
    let base = cluster.node(1).unwrap().http.clone();
    let pid = cluster.node(1).unwrap().pid;
    let token = cluster.status.mcp_token.clone();
    let http = cluster_common::client();
    let session = open_session(&http, &base, &token).await.unwrap();

    // An agent's standalone stream, left open.
    let stream = http
        .get(format!("{base}/mcp"))
        .bearer_auth(&token)
        .header("Accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200, "GET /mcp opens a stream");

    // A call in flight (Notion takes 1.5 s).
    let call = {
        let (http, base, token, session) =
            (http.clone(), base.clone(), token.clone(), session.clone());
        tokio::spawn(async move {
            let r = call_tool(&http, &base, &token, &session, 7).await;
            (r, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new request (on a new connection) is not taken.
    let fresh = cluster_common::client();
    match fresh
        .post(format!("{base}/mcp"))
        .bearer_auth(&token)
        .header("Accept", "application/json, text/event-stream")
        .timeout(Duration::from_secs(5))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
    {
        Err(e) => assert!(e.is_connect(), "a new request while draining: {e}"),
        Ok(r) => {
            assert_eq!(r.status(), 503, "a new request while draining");
            assert!(r.headers().contains_key("retry-after"));
        }
    }

    // The call in flight finishes with its result.
    let (result, answered) = call.await.unwrap();
    assert!(result.is_ok(), "the call in flight: {result:?}");
    let answered = answered - signalled;

    // The node leaves once the call is answered, not waiting for the grace.
    let deadline = Instant::now() + GRACE + Duration::from_secs(10);
    while cluster.is_running(1) {
        assert!(
            Instant::now() < deadline,
            "the node did not leave within its grace"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = signalled.elapsed();
    drop(stream);
    println!(
        "[drain] the call in flight answered {} ms after SIGTERM; the node left {} ms after it (grace {} ms, an MCP stream open)",
        answered.as_millis(),
        left.as_millis(),
        GRACE.as_millis()
    );
    assert!(
        left >= answered,
        "the node left before the call in flight answered"
    );
    assert!(
        left < GRACE,
        "the node left after {left:?}: the open stream held it for its whole grace of {GRACE:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The scenario (client namespace)

#[test]
#[ignore = "runs inside the client namespace, started by three_hosts_rolling_restart_cut_off_backup_and_restore"]
fn scenario() {
    let Ok(plan) = std::env::var(PLAN_ENV) else {
        return;
    };
    let plan: Plan = serde_json::from_str(&plan).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_scenario(plan)).unwrap();
}

fn addr(host: u8) -> String {
    format!("{SUBNET}.{host}")
}

/// One host: a node's namespace, files and process.
struct Host {
    id: u64,
    ns: String,
    dir: PathBuf,
    /// The data dir in use (a fresh one for the restored cluster).
    data: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn url(&self) -> String {
        format!("https://{}:{HTTP_PORT}", addr(self.id as u8))
    }

    fn peer(&self) -> String {
        format!("{}:{PEER_PORT}", addr(self.id as u8))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Cluster {
    plan: Plan,
    hosts: Vec<Host>,
    http: reqwest::Client,
    ca_file: PathBuf,
    /// The master key files, the current one last.
    keys: Vec<PathBuf>,
    admin_token: String,
    mcp_token: String,
    sandbox: Child,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.sandbox.kill();
        let _ = self.sandbox.wait();
    }
}

fn quire(binary: &Path, args: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<String> {
    let mut command = Command::new(binary);
    command.args(args).env("QUIRE_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .output()
        .with_context(|| format!("cannot run quire {args:?}"))?;
    if !out.status.success() {
        bail!(
            "`quire {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    fn host(&self, id: u64) -> &Host {
        &self.hosts[(id - 1) as usize]
    }

    fn host_mut(&mut self, id: u64) -> &mut Host {
        &mut self.hosts[(id - 1) as usize]
    }

    fn urls(&self) -> Vec<String> {
        self.hosts.iter().map(Host::url).collect()
    }

    /// The flags of `quire init`/`restore`/`serve` for node `id`.
    fn node_args(&self, id: u64) -> Vec<String> {
        let host = self.host(id);
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            host.data.to_string_lossy().into_owned(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            format!("{}:{HTTP_PORT}", addr(id as u8)),
            "--peer-listen".into(),
            host.peer(),
            "--tls-dir".into(),
            host.dir.join("tls").to_string_lossy().into_owned(),
        ];
        for (flag, file) in [
            ("--tls-cert-file", "http.pem"),
            ("--tls-key-file", "http.key"),
        ] {
            args.push(flag.into());
            args.push(
                host.dir
                    .join("tls")
                    .join(file)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        args
    }

    /// The key ring's environment: the current key, and the earlier ones as previous keys.
    fn key_env(&self, command: &mut Command) {
        let (current, previous) = self.keys.split_last().unwrap();
        command.env("QUIRE_MASTER_KEY_FILE", current);
        let previous: Vec<String> = previous
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        command.env("QUIRE_PREVIOUS_MASTER_KEY_FILES", previous.join(","));
    }

    /// Starts node `id` in its namespace (`--join` node 1 unless it is node 1).
    fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let host = self.host(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host.dir.join("node.log"))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &host.ns])
            .arg(&self.plan.binary)
            .arg("serve")
            .args(self.node_args(id))
            .env(
                "QUIRE_NOTION_BASE_URL",
                format!("http://{}:{SANDBOX_PORT}", addr(CLIENT_HOST)),
            )
            .env(
                "QUIRE_ALLOWED_HOSTS",
                format!("{},localhost", addr(id as u8)),
            )
            .env("QUIRE_SHUTDOWN_GRACE_MS", "10000")
            // A host cut off loses its shards within the cut (CUT_FOR), so the other two
            // serve its tenants' calls meanwhile (with the defaults, 6 s and 30 s, a cut-off
            // owner's tenants wait for the grace).
            .env("QUIRE_PLACEMENT_SUSPECT_AFTER_MS", "2000")
            .env("QUIRE_PLACEMENT_GRACE_MS", "4000")
            .env("QUIRE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        if id != 1 {
            command.args(["--join", &self.host(1).peer()]);
        }
        self.key_env(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        self.host_mut(id).child = Some(child);
        Ok(())
    }

    /// SIGTERM to node `id`; waits until it has left. Returns how long that took.
    async fn stop(&mut self, id: u64) -> anyhow::Result<Duration> {
        let mut child = self
            .host_mut(id)
            .child
            .take()
            .with_context(|| format!("node {id} is not running"))?;
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !sent.success() {
            bail!("cannot signal node {id}");
        }
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("node {id} left with {status} after SIGTERM");
                }
                return Ok(started.elapsed());
            }
            if started.elapsed() > STOP_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {id} did not leave within {STOP_DEADLINE:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn readyz(&self, id: u64) -> Option<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}/readyz", self.host(id).url()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    async fn wait_ready(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, body)) = self.readyz(id).await {
                return Ok(body);
            }
            if let Some(child) = &mut self.host_mut(id).child
                && let Some(status) = child.try_wait()?
            {
                bail!("node {id} exited ({status}) before it was ready");
            }
            if Instant::now() >= deadline {
                bail!("node {id} was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader every ready node names, once they agree.
    async fn leader(&self, among: &[u64], timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut named = BTreeSet::new();
            let mut all = true;
            for &id in among {
                match self.readyz(id).await {
                    Some((200, body)) => {
                        named.insert(body["leader"].as_u64().unwrap_or(0));
                    }
                    _ => all = false,
                }
            }
            if all && named.len() == 1 {
                let leader = *named.first().unwrap();
                if among.contains(&leader) {
                    return Ok(leader);
                }
            }
            if Instant::now() >= deadline {
                bail!("nodes {among:?} agreed on no leader within {timeout:?}: {named:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` has applied at least what `others` had committed when asked.
    async fn wait_caught_up(
        &self,
        id: u64,
        others: &[u64],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut target = 0;
        for &o in others {
            if let Some((_, body)) = self.readyz(o).await {
                target = target.max(body["applied_index"].as_u64().unwrap_or(0));
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, body)) = self.readyz(id).await
                && body["applied_index"].as_u64().unwrap_or(0) >= target
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node {id} did not apply index {target} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn admin_ok(
        &self,
        id: u64,
        method: Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        match admin_request(
            &self.http,
            &self.host(id).url(),
            &self.admin_token,
            method,
            path,
            Some(body),
            REQUEST_DEADLINE,
        )
        .await
        {
            Answer::Status(s, v) if (200..300).contains(&s) => Ok(v),
            other => bail!("admin {path} on node {id}: {other:?}"),
        }
    }

    /// `quire ctl` from the client namespace against node `id`.
    fn ctl(&self, id: u64, args: &[&str]) -> anyhow::Result<String> {
        let url = self.host(id).url();
        let ca = self.ca_file.to_string_lossy().into_owned();
        let mut all = vec![
            "ctl",
            "--url",
            &url,
            "--ca-file",
            &ca,
            "--token",
            &self.admin_token,
        ];
        all.extend_from_slice(args);
        quire(&self.plan.binary, &all, &[])
    }

    /// A tool call on every node works.
    async fn tool_call_everywhere(&self) -> anyhow::Result<()> {
        for host in &self.hosts {
            let url = host.url();
            let session = open_session(&self.http, &url, &self.mcp_token)
                .await
                .map_err(|e| anyhow::anyhow!("session on node {}: {e:?}", host.id))?;
            call_tool(&self.http, &url, &self.mcp_token, &session, 1)
                .await
                .map_err(|e| anyhow::anyhow!("tool call on node {}: {e:?}", host.id))?;
        }
        Ok(())
    }

    /// Every tenant, read linearizably through node `id`.
    async fn tenants(&self, id: u64, consistency: &str) -> anyhow::Result<BTreeSet<String>> {
        list_tenants(
            &self.http,
            &self.host(id).url(),
            &self.admin_token,
            consistency,
        )
        .await
    }
}

/// Sets the cluster up: keys, CAs and certificates, the sandbox, node 1 initialised, nodes 2
/// and 3 joining it, a tenant with an integration, a workspace and an API token.
async fn set_up(plan: Plan) -> anyhow::Result<Cluster> {
    let bin = plan.binary.clone();
    let dir = plan.dir.clone();
    let key = dir.join("master.key");
    quire(&bin, &["keygen", "--out", &key.to_string_lossy()], &[])?;
    let ca = dir.join("ca");
    let agents_ca = dir.join("agents-ca");
    quire(
        &bin,
        &["certs", "init", "--out", &ca.to_string_lossy()],
        &[],
    )?;
    quire(
        &bin,
        &["certs", "init", "--out", &agents_ca.to_string_lossy()],
        &[],
    )?;
    let mut hosts = Vec::new();
    for (i, ns) in plan.hosts.iter().enumerate() {
        let id = (i + 1) as u64;
        let host_dir = dir.join(format!("h{id}"));
        let tls = host_dir.join("tls");
        let a = addr(id as u8);
        let tls_s = tls.to_string_lossy().into_owned();
        quire(
            &bin,
            &[
                "certs",
                "node",
                "--id",
                &id.to_string(),
                "--host",
                &a,
                "--ca",
                &ca.to_string_lossy(),
                "--out",
                &tls_s,
            ],
            &[],
        )?;
        quire(
            &bin,
            &[
                "certs",
                "http",
                "--host",
                &a,
                "--ca",
                &agents_ca.to_string_lossy(),
                "--out",
                &tls_s,
            ],
            &[],
        )?;
        hosts.push(Host {
            id,
            ns: ns.clone(),
            data: host_dir.join("data"),
            dir: host_dir,
            child: None,
        });
    }
    let ca_file = agents_ca.join("ca.pem");
    let certs = reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca_file)?)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(certs)
        .build()?;

    // The Notion sandbox, here in the client namespace.
    let sandbox = Command::new(&bin)
        .args([
            "sandbox",
            "--listen",
            &format!("{}:{SANDBOX_PORT}", addr(CLIENT_HOST)),
            "--rate-limit",
            "off",
            // Notion's own latency, roughly: calls are in flight when a node is asked to
            // stop, and its drain must let them finish.
            "--latency-ms",
            NOTION_LATENCY_MS,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sandbox.log"))?)
        .spawn()
        .context("cannot start the sandbox")?;
    let mut cluster = Cluster {
        plan,
        hosts,
        http,
        ca_file,
        keys: vec![key],
        admin_token: String::new(),
        mcp_token: String::new(),
        sandbox,
    };
    let mut init = Command::new(&bin);
    init.arg("init")
        .args(cluster.node_args(1))
        .env("QUIRE_LOG", "warn");
    cluster.key_env(&mut init);
    let out = init.output()?;
    if !out.status.success() {
        bail!("quire init: {}", String::from_utf8_lossy(&out.stderr));
    }
    cluster.admin_token = std::fs::read_to_string(cluster.host(1).data.join("admin-token"))?
        .trim()
        .to_owned();
    for id in 1..=NODES {
        cluster.start(id)?;
        cluster.wait_ready(id, Duration::from_secs(60)).await?;
    }
    cluster.leader(&[1, 2, 3], Duration::from_secs(30)).await?;

    let rps = json!(1000);
    cluster
        .admin_ok(
            1,
            Method::POST,
            "/tenants",
            json!({"id": "demo", "display_name": "Demo"}),
        )
        .await?;
    cluster
        .admin_ok(
            2,
            Method::POST,
            "/tenants/demo/integrations",
            json!({"id": "sandbox-alpha", "display_name": "Sandbox", "notion_token": "secret_sandbox_alpha",
                   "requests_per_second": rps, "burst": 1000}),
        )
        .await?;
    cluster
        .admin_ok(
            3,
            Method::POST,
            "/tenants/demo/workspaces",
            json!({"id": "demo", "display_name": "Demo workspace", "integration": "sandbox-alpha"}),
        )
        .await?;
    cluster
        .admin_ok(
            1,
            Method::POST,
            "/tenants/demo/principals",
            json!({"id": "agent", "display_name": "Agent"}),
        )
        .await?;
    cluster
        .admin_ok(
            1,
            Method::POST,
            "/tenants/demo/principals/agent/workspaces",
            json!({"workspace": "demo"}),
        )
        .await?;
    let token = cluster
        .admin_ok(
            1,
            Method::POST,
            "/tenants/demo/tokens",
            json!({"principal": "agent", "workspace": "demo"}),
        )
        .await?;
    cluster.mcp_token = token["token"].as_str().context("no token")?.to_owned();
    cluster.tool_call_everywhere().await?;
    Ok(cluster)
}

// ---------------------------------------------------------------------------------------
// MCP and admin clients

/// Why a request did not succeed.
#[derive(Debug)]
enum Failure {
    /// The node could not take it (connection refused or reset, no answer, 503, a session it
    /// no longer knows): try another node.
    Retryable(String),
    /// The node took the call and answered that it may be retried after this long (a tool
    /// error with `retry_after_seconds`: Notion's owner for the integration unreachable or
    /// just moved, no quorum for the audit record, rate limited): retry on the same node.
    RetryAfter(String, Duration),
    /// Anything else.
    Fatal(String),
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "connection".into()
    }
}

async fn post_mcp(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    message: Value,
) -> Result<(reqwest::header::HeaderMap, String), Failure> {
    let mut request = http
        .post(format!("{url}/mcp"))
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .timeout(REQUEST_DEADLINE)
        .json(&message);
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-06-18");
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Retryable(classify(&e)))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|e| Failure::Retryable(format!("body {}", classify(&e))))?;
    match status {
        200 | 202 => Ok((headers, body)),
        503 => Err(Failure::Retryable("503".into())),
        // The session lived on a node that restarted since.
        404 if session.is_some() => Err(Failure::Retryable("session gone".into())),
        _ => Err(Failure::Fatal(format!("HTTP {status}: {body}"))),
    }
}

/// The JSON-RPC answer in a Streamable HTTP body (plain JSON or an SSE `data:` line).
fn message_of(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return Some(v);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
}

async fn open_session(http: &reqwest::Client, url: &str, token: &str) -> Result<String, Failure> {
    let (headers, _) = post_mcp(
        http,
        url,
        token,
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "netns-test", "version": "0"}}}),
    )
    .await?;
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Failure::Fatal("initialize answered without mcp-session-id".into()))?
        .to_owned();
    post_mcp(
        http,
        url,
        token,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await?;
    Ok(session)
}

async fn call_tool(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: &str,
    id: u64,
) -> Result<(), Failure> {
    let (_, body) = post_mcp(
        http,
        url,
        token,
        Some(session),
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "notion-get-self", "arguments": {}}}),
    )
    .await?;
    let msg =
        message_of(&body).ok_or_else(|| Failure::Fatal(format!("no JSON-RPC answer: {body}")))?;
    let error = &msg["result"]["structuredContent"];
    if msg["result"]["isError"] == json!(true) && error["retry_after_seconds"].is_u64() {
        // A tool error that asks to be retried (`audit_unavailable` from a node that cannot
        // reach a quorum, `rate_limited`): the call was refused, not failed.
        return Err(Failure::RetryAfter(
            format!("tool error {}", error["code"].as_str().unwrap_or("?")),
            Duration::from_secs(error["retry_after_seconds"].as_u64().unwrap_or(1)),
        ));
    }
    if msg.get("error").is_some() || msg["result"]["isError"] == json!(true) {
        return Err(Failure::Fatal(format!("tool call failed: {msg}")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The workload

#[derive(Default)]
struct Tally {
    served: usize,
    retried: BTreeMap<String, usize>,
    failed: Vec<String>,
    /// When each successful call finished, for the longest gap.
    successes: Vec<Instant>,
    acked: Vec<String>,
    write_retries: usize,
    write_failed: Vec<String>,
}

/// Continuous tool calls (`CALLERS` clients, each with a home node, moving to the next node
/// when a node cannot take a call, and retrying on the same node when it answers that the
/// call may be retried after a while) and admin writes (tenants created one after another, each retried
/// on the next node until acknowledged).
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

/// What a phase's load did.
struct Figures {
    served: usize,
    retried: BTreeMap<String, usize>,
    failed: Vec<String>,
    acked: Vec<String>,
    write_retries: usize,
    write_failed: Vec<String>,
    longest_gap: Duration,
}

impl Figures {
    fn print(&self, phase: &str, lost: usize) {
        let retried: usize = self.retried.values().sum();
        println!(
            "[{phase}] tool calls: served {}, retried {retried} {:?}, failed {}; admin writes: acknowledged {}, retried {}, failed {}, lost {lost}; longest gap without a successful call {} ms",
            self.served,
            self.retried,
            self.failed.len(),
            self.acked.len(),
            self.write_retries,
            self.write_failed.len(),
            self.longest_gap.as_millis()
        );
    }
}

impl Load {
    fn start(cluster: &Cluster, phase: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let urls = cluster.urls();
        let mut tasks = Vec::new();
        let call_ids = Arc::new(AtomicUsize::new(1));
        for caller in 0..CALLERS {
            let (stop, tally, urls, http, token, call_ids) = (
                stop.clone(),
                tally.clone(),
                urls.clone(),
                cluster.http.clone(),
                cluster.mcp_token.clone(),
                call_ids.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let home = caller % urls.len();
                let mut node = home;
                let mut session: Option<(usize, String)> = None;
                let mut since_home = 0;
                while !stop.load(Ordering::SeqCst) {
                    if session.as_ref().map(|s| s.0) != Some(node) {
                        match open_session(&http, &urls[node], &token).await {
                            Ok(s) => session = Some((node, s)),
                            Err(e) => {
                                note(&tally, e, "initialize");
                                node = (node + 1) % urls.len();
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let Some((_, id)) = &session else { continue };
                    let n = call_ids.fetch_add(1, Ordering::SeqCst) as u64;
                    match call_tool(&http, &urls[node], &token, id, n).await {
                        Ok(()) => {
                            let mut t = tally.lock().unwrap();
                            t.served += 1;
                            t.successes.push(Instant::now());
                            since_home += 1;
                            // Back home now and then, so every node keeps serving calls.
                            if node != home && since_home > 20 {
                                node = home;
                                since_home = 0;
                            }
                        }
                        Err(Failure::RetryAfter(reason, after)) => {
                            // The node is fine; wait as told (at most a second, so the
                            // figures still show how soon calls work again) and retry there.
                            note(&tally, Failure::RetryAfter(reason, after), "tools/call");
                            tokio::time::sleep(after.min(Duration::from_secs(1))).await;
                        }
                        Err(e) => {
                            note(&tally, e, "tools/call");
                            session = None;
                            node = (node + 1) % urls.len();
                            since_home = 0;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        let (stop2, tally2, http, admin_token) = (
            stop.clone(),
            tally.clone(),
            cluster.http.clone(),
            cluster.admin_token.clone(),
        );
        let phase = phase.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut node = 0usize;
            while !stop2.load(Ordering::SeqCst) {
                n += 1;
                let tenant = format!("{phase}-{n}");
                let first_try = Instant::now();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let answer = admin_request(
                        &http,
                        &urls[node],
                        &admin_token,
                        Method::POST,
                        "/tenants",
                        Some(json!({"id": tenant, "display_name": tenant})),
                        WRITE_DEADLINE,
                    )
                    .await;
                    let outcome = match &answer {
                        Answer::Status(s, _) if (200..300).contains(s) => Some(true),
                        // An earlier attempt was applied and its answer lost.
                        Answer::Status(409, v) if attempts > 1 && v["error"] == "already_exists" => Some(true),
                        Answer::Status(503, _) | Answer::NoAnswer(_) => None,
                        Answer::Status(..) => Some(false),
                    };
                    let retry = {
                        let mut t = tally2.lock().unwrap();
                        match outcome {
                            Some(true) => {
                                t.acked.push(tenant.clone());
                                false
                            }
                            Some(false) => {
                                t.write_failed
                                    .push(format!("{tenant} on node {}: {answer:?}", node + 1));
                                false
                            }
                            None if first_try.elapsed() > WRITE_RETRY_WINDOW => {
                                t.write_failed.push(format!(
                                    "{tenant}: no node took it within {WRITE_RETRY_WINDOW:?}: {answer:?}"
                                ));
                                false
                            }
                            None => {
                                t.write_retries += 1;
                                true
                            }
                        }
                    };
                    if !retry {
                        break;
                    }
                    node = (node + 1) % urls.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                node = (node + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
        Load {
            stop,
            tally,
            tasks,
            started: Instant::now(),
        }
    }

    /// Acknowledged writes and served calls so far.
    fn progress(&self) -> (usize, usize) {
        let t = self.tally.lock().unwrap();
        (t.acked.len(), t.served)
    }

    async fn wait_progress(
        &self,
        writes: usize,
        calls: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let (w0, c0) = self.progress();
        let deadline = Instant::now() + timeout;
        loop {
            let (w, c) = self.progress();
            if w >= w0 + writes && c >= c0 + calls {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the load made no progress within {timeout:?}: {} writes, {} calls",
                    w - w0,
                    c - c0
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) -> Figures {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let ended = Instant::now();
        let t = std::mem::take(&mut *self.tally.lock().unwrap());
        let mut longest = Duration::ZERO;
        let mut last = self.started;
        for &at in t.successes.iter().chain([&ended]) {
            longest = longest.max(at.saturating_duration_since(last));
            last = last.max(at);
        }
        Figures {
            served: t.served,
            retried: t.retried,
            failed: t.failed,
            acked: t.acked,
            write_retries: t.write_retries,
            write_failed: t.write_failed,
            longest_gap: longest,
        }
    }
}

fn note(tally: &Mutex<Tally>, failure: Failure, what: &str) {
    let mut t = tally.lock().unwrap();
    match failure {
        Failure::Retryable(reason) | Failure::RetryAfter(reason, _) => {
            *t.retried.entry(reason).or_default() += 1
        }
        Failure::Fatal(message) => t.failed.push(format!("{what}: {message}")),
    }
}

/// Acknowledged writes missing from node `id`'s state (read linearizably, and locally once
/// it has caught up).
async fn lost_writes(cluster: &Cluster, acked: &[String]) -> anyhow::Result<usize> {
    let mut lost = BTreeSet::new();
    for id in 1..=NODES {
        let linear = cluster.tenants(id, "linearizable").await?;
        let others: Vec<u64> = (1..=NODES).filter(|&o| o != id).collect();
        cluster
            .wait_caught_up(id, &others, Duration::from_secs(30))
            .await?;
        let local = cluster.tenants(id, "local").await?;
        for t in acked {
            if !linear.contains(t) || !local.contains(t) {
                lost.insert(t.clone());
            }
        }
    }
    Ok(lost.len())
}

fn assert_clean(phase: &str, figures: &Figures, lost: usize) {
    figures.print(phase, lost);
    assert!(
        figures.failed.is_empty(),
        "[{phase}] tool calls failed: {:?}",
        figures.failed
    );
    assert!(
        figures.write_failed.is_empty(),
        "[{phase}] writes failed: {:?}",
        figures.write_failed
    );
    assert_eq!(lost, 0, "[{phase}] acknowledged writes lost");
    assert!(
        figures.served > 0 && !figures.acked.is_empty(),
        "[{phase}] no load was served"
    );
}

// ---------------------------------------------------------------------------------------
// The phases

async fn run_scenario(plan: Plan) -> anyhow::Result<()> {
    let mut cluster = set_up(plan).await?;
    rolling_restart_with_a_new_master_key(&mut cluster).await?;
    cut_off_and_heal(&mut cluster).await?;
    owner_cut_from_its_peers(&mut cluster).await?;
    backup_under_load_and_restore(&mut cluster).await?;
    Ok(())
}

/// Phase 1: every node in turn stops (SIGTERM), comes back with a new current master key and
/// the old one as previous, and catches up; then the secrets are resealed under the new key.
async fn rolling_restart_with_a_new_master_key(cluster: &mut Cluster) -> anyhow::Result<()> {
    let new_key = cluster.plan.dir.join("master-2.key");
    quire(
        &cluster.plan.binary,
        &["keygen", "--out", &new_key.to_string_lossy()],
        &[],
    )?;
    cluster.keys.push(new_key);

    // deploy/rolling-restart.sh plans the same order: followers first, the leader last.
    let leader = cluster.leader(&[1, 2, 3], Duration::from_secs(10)).await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rolling-restart.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["--dry-run", "--ca-file"])
        .arg(&cluster.ca_file)
        .args((1..=NODES).map(|i| addr(i as u8)))
        .output()?;
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rolling-restart.sh --dry-run: {plan}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let order_line = plan
        .lines()
        .find(|l| l.starts_with("order: "))
        .unwrap_or("");
    assert!(
        order_line.contains(&format!(
            "{} (leader: {})",
            addr(leader as u8),
            addr(leader as u8)
        )),
        "the script does not restart the leader last: {plan}"
    );
    assert_eq!(
        plan.matches("systemctl stop quire").count(),
        NODES as usize,
        "{plan}"
    );

    let load = Load::start(cluster, "roll");
    load.wait_progress(5, 20, Duration::from_secs(30)).await?;
    let leader = cluster.leader(&[1, 2, 3], Duration::from_secs(10)).await?;
    let mut order: Vec<u64> = (1..=NODES).filter(|&id| id != leader).collect();
    order.push(leader);
    for id in order {
        let others: Vec<u64> = (1..=NODES).filter(|&o| o != id).collect();
        let drained = cluster.stop(id).await?;
        let stopped_at = Instant::now();
        let successor = cluster.leader(&others, Duration::from_secs(20)).await?;
        println!(
            "[roll] node {id} left {} ms after SIGTERM{}; leader {successor} {} ms after it left",
            drained.as_millis(),
            if id == leader {
                " (it was the leader)"
            } else {
                ""
            },
            stopped_at.elapsed().as_millis()
        );
        tokio::time::sleep(DOWN_FOR.saturating_sub(stopped_at.elapsed())).await;
        cluster.start(id)?;
        let started = Instant::now();
        cluster.wait_ready(id, Duration::from_secs(60)).await?;
        cluster
            .wait_caught_up(id, &others, Duration::from_secs(30))
            .await?;
        println!(
            "[roll] node {id} ready and caught up {} ms after its start",
            started.elapsed().as_millis()
        );
        load.wait_progress(3, 10, Duration::from_secs(30)).await?;
    }
    let figures = load.finish().await;
    let lost = lost_writes(cluster, &figures.acked).await?;
    assert_clean("rolling restart", &figures, lost);

    // Every node runs the new key: reseal, then calls keep working everywhere.
    let rotated = cluster.ctl(2, &["keys", "rotate"])?;
    println!("[keys] {}", rotated.trim());
    let status = cluster.ctl(3, &["--json", "keys", "status"])?;
    let status: Value = serde_json::from_str(&status).context("keys status --json")?;
    println!("[keys] status {status}");
    cluster.tool_call_everywhere().await?;
    Ok(())
}

/// Phase 2: a follower's link goes down for a while; the other two keep serving; healed, it
/// catches up.
async fn cut_off_and_heal(cluster: &mut Cluster) -> anyhow::Result<()> {
    let leader = cluster.leader(&[1, 2, 3], Duration::from_secs(10)).await?;
    let cut = (1..=NODES).find(|&id| id != leader).unwrap();
    let others: Vec<u64> = (1..=NODES).filter(|&o| o != cut).collect();
    let load = Load::start(cluster, "cut");
    load.wait_progress(5, 20, Duration::from_secs(30)).await?;
    ip(&["-n", &cluster.host(cut).ns, "link", "set", "eth0", "down"])?;
    let cut_at = Instant::now();
    let before = load.progress();
    tokio::time::sleep(CUT_FOR).await;
    let during = load.progress();
    ip(&["-n", &cluster.host(cut).ns, "link", "set", "eth0", "up"])?;
    println!(
        "[cut] node {cut} cut off for {} ms: meanwhile {} writes acknowledged and {} calls served by nodes {others:?}",
        cut_at.elapsed().as_millis(),
        during.0 - before.0,
        during.1 - before.1
    );
    assert!(
        during.0 > before.0 && during.1 > before.1,
        "the other two nodes stopped serving while node {cut} was cut off"
    );
    caught_up_and_clean(cluster, load, cut, &others, "cut", "cut off and heal").await
}

/// Once node `node`'s cut is healed: waits until it has caught up with `others`, lets `load`
/// go on a little, then checks the phase's figures (no call failed, no acknowledged write
/// lost).
async fn caught_up_and_clean(
    cluster: &Cluster,
    load: Load,
    node: u64,
    others: &[u64],
    tag: &str,
    phase: &str,
) -> anyhow::Result<()> {
    let healed = Instant::now();
    cluster
        .wait_caught_up(node, others, Duration::from_secs(60))
        .await?;
    println!(
        "[{tag}] node {node} caught up {} ms after the heal",
        healed.elapsed().as_millis()
    );
    load.wait_progress(3, 10, Duration::from_secs(30)).await?;
    let figures = load.finish().await;
    let lost = lost_writes(cluster, &figures.acked).await?;
    assert_clean(phase, &figures, lost);
    Ok(())
}

/// The demo integration's shard, with its owner and epoch as node `via` sees them.
async fn alpha_shard(cluster: &Cluster, via: u64) -> anyhow::Result<(String, Option<u64>, u64)> {
    let tenant = TenantId::new("demo")?;
    let integration = IntegrationId::new("sandbox-alpha")?;
    let shard = shard_of(
        &Residency::default(),
        &integration_key(&tenant, &integration),
    )
    .to_string();
    let map = match admin_request(
        &cluster.http,
        &cluster.host(via).url(),
        &cluster.admin_token,
        Method::GET,
        "/placement",
        None,
        REQUEST_DEADLINE,
    )
    .await
    {
        Answer::Status(200, map) => map,
        other => bail!("GET /placement on node {via}: {other:?}"),
    };
    let entry = shard_entry(&map, &shard);
    let epoch = entry["epoch"].as_u64().unwrap_or(0);
    Ok((shard, entry["owner"].as_u64(), epoch))
}

/// The sandbox's counters for the demo integration (`alpha`), or `POST`s a reset.
async fn sandbox_alpha(cluster: &Cluster, reset: bool) -> anyhow::Result<Value> {
    let base = format!(
        "http://{}:{SANDBOX_PORT}/__sandbox/stats",
        addr(CLIENT_HOST)
    );
    let request = if reset {
        cluster.http.post(format!("{base}/reset"))
    } else {
        cluster.http.get(base)
    };
    let answer = request.send().await?.error_for_status()?;
    if reset {
        return Ok(Value::Null);
    }
    let stats: Value = answer.json().await?;
    Ok(stats["integrations"]["alpha"].clone())
}

/// Phase 3: the demo integration's owner loses its peers — routes to their addresses are
/// blackholed in its namespace — while it still reaches Notion and its agents still reach it:
/// the partition where a node that believes it owns a shard could go on sending beside the
/// owner the others move the shard to. Its fence stops it (it cannot confirm its view within
/// S), the majority moves the shard after the grace, the new owner holds off S; healed, the
/// shard may move back. The sandbox names each request's sender by its source address, so
/// Notion must have seen one sender at a time: the sender changed at most once per change of
/// the shard's epoch, where two senders at once would have switched back and forth.
async fn owner_cut_from_its_peers(cluster: &mut Cluster) -> anyhow::Result<()> {
    let leader = cluster.leader(&[1, 2, 3], Duration::from_secs(10)).await?;
    let (shard, owner, epoch_before) = alpha_shard(cluster, leader).await?;
    let owner = owner.with_context(|| format!("shard {shard} has no owner"))?;
    let others: Vec<u64> = (1..=NODES).filter(|&o| o != owner).collect();
    sandbox_alpha(cluster, true).await?;
    let load = Load::start(cluster, "owner-cut");
    load.wait_progress(5, 20, Duration::from_secs(30)).await?;
    let ns = cluster.host(owner).ns.clone();
    let routes: Vec<String> = others
        .iter()
        .map(|&o| format!("{}/32", addr(o as u8)))
        .collect();
    for route in &routes {
        ip(&["-n", &ns, "route", "add", "blackhole", route])?;
    }
    let cut_at = Instant::now();
    let before = load.progress();
    tokio::time::sleep(CUT_FOR).await;
    let during = load.progress();
    let (_, owner_during, epoch_during) = alpha_shard(cluster, others[0]).await?;
    for route in &routes {
        ip(&["-n", &ns, "route", "del", "blackhole", route])?;
    }
    println!(
        "[owner-cut] node {owner}, owner of shard {shard} at epoch {epoch_before}, cut off from nodes {others:?} for {} ms: meanwhile {} writes acknowledged and {} calls served; the shard went to node {owner_during:?} at epoch {epoch_during}",
        cut_at.elapsed().as_millis(),
        during.0 - before.0,
        during.1 - before.1
    );
    assert!(
        during.0 > before.0 && during.1 > before.1,
        "the other two nodes stopped serving while node {owner} was cut off from them"
    );
    caught_up_and_clean(
        cluster,
        load,
        owner,
        &others,
        "owner-cut",
        "owner cut off from its peers",
    )
    .await?;

    let (_, owner_after, epoch_after) = alpha_shard(cluster, others[0]).await?;
    let alpha = sandbox_alpha(cluster, false).await?;
    let senders = alpha["senders"].as_u64().unwrap_or(0);
    let switches = alpha["sender_switches"].as_u64().unwrap_or(u64::MAX);
    println!(
        "[owner-cut] Notion saw {} requests for the integration from {senders} senders, the sender changing {switches} times; the shard's epoch went from {epoch_before} to {epoch_after} (owner now node {owner_after:?})",
        alpha["requests"]
    );
    assert!(
        owner_during != Some(owner) && epoch_during > epoch_before,
        "shard {shard} stayed on node {owner} while it was cut off from its peers"
    );
    assert!(
        senders >= 2,
        "Notion saw {senders} sender(s): the new owner never sent ({alpha})"
    );
    assert!(
        switches <= epoch_after - epoch_before,
        "the sender changed {switches} times for {} changes of the shard's epoch: two nodes sent for the integration at once ({alpha})",
        epoch_after - epoch_before
    );
    Ok(())
}

/// Phase 4: a backup under load, restored into a fresh three-host cluster.
async fn backup_under_load_and_restore(cluster: &mut Cluster) -> anyhow::Result<()> {
    let load = Load::start(cluster, "bk");
    load.wait_progress(5, 20, Duration::from_secs(30)).await?;
    let before_backup: BTreeSet<String> = cluster.tenants(1, "linearizable").await?;
    let file = cluster.plan.dir.join("cluster.backup");
    let written = cluster.ctl(2, &["backup", "--out", &file.to_string_lossy()])?;
    println!("[backup] {}", written.trim());
    load.wait_progress(3, 10, Duration::from_secs(30)).await?;
    let figures = load.finish().await;
    let lost = lost_writes(cluster, &figures.acked).await?;
    assert_clean("backup under load", &figures, lost);
    let after_backup = cluster.tenants(1, "linearizable").await?;

    for id in 1..=NODES {
        cluster.stop(id).await?;
    }
    for host in &mut cluster.hosts {
        std::fs::remove_dir_all(&host.data)?;
        host.data = host.dir.join("data-restored");
    }
    let mut restore = Command::new(&cluster.plan.binary);
    restore
        .args(["restore", "--from", &file.to_string_lossy()])
        .args(cluster.node_args(1))
        .env("QUIRE_LOG", "warn");
    cluster.key_env(&mut restore);
    let out = restore.output()?;
    if !out.status.success() {
        bail!("quire restore: {}", String::from_utf8_lossy(&out.stderr));
    }
    for id in 1..=NODES {
        cluster.start(id)?;
        cluster.wait_ready(id, Duration::from_secs(60)).await?;
    }
    cluster.leader(&[1, 2, 3], Duration::from_secs(30)).await?;
    for id in 1..=NODES {
        let restored = cluster.tenants(id, "linearizable").await?;
        assert!(
            before_backup.is_subset(&restored) && restored.is_subset(&after_backup),
            "node {id} of the restored cluster holds {} tenants, not between the {} before and the {} after the backup",
            restored.len(),
            before_backup.len(),
            after_backup.len()
        );
        if id == NODES {
            println!(
                "[restore] the restored cluster holds {} tenants ({} before the backup began, {} after it ended)",
                restored.len(),
                before_backup.len(),
                after_backup.len()
            );
        }
    }
    // Every audit chain (each tenant's and the cluster's) verifies on every node.
    for id in 1..=NODES {
        let verified = cluster.ctl(id, &["--json", "audit", "verify"])?;
        let verified: Value = serde_json::from_str(&verified).context("audit verify --json")?;
        let chains = verified["chains"].as_array().context("no chains")?;
        let summary: BTreeMap<&str, (u64, bool)> = chains
            .iter()
            .map(|c| {
                (
                    c["chain"].as_str().unwrap_or("?"),
                    (c["records"].as_u64().unwrap_or(0), c["ok"] == json!(true)),
                )
            })
            .collect();
        assert!(
            verified["ok"] == json!(true) && summary.values().all(|(_, ok)| *ok),
            "node {id}: an audit chain does not verify: {verified}"
        );
        assert!(
            summary.contains_key("demo"),
            "node {id}: no chain of demo: {verified}"
        );
        println!(
            "[restore] audit verify on node {id}: every chain verifies (chain: (records, ok)) {summary:?}"
        );
    }
    cluster.tool_call_everywhere().await?;
    Ok(())
}
