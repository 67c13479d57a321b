//! `quire serve`: opens the control plane, checks the master key against the cluster,
//! starts the data plane and the HTTP front, and (with `--sandbox`) the Notion sandbox and
//! a demo tenant.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio_util::sync::CancellationToken;

use quire_actors::limiter::LimiterConfig;
use quire_actors::notion::client::NotionClientConfig;
use quire_actors::supervisor::{DataPlane, DataPlaneConfig};
use quire_raft::command::Command;
use quire_raft::control::{ControlPlane, ControlPlaneConfig};
use quire_raft::seal::MasterKey;

use crate::app::App;
use crate::clock::{SharedClock, SystemClock};
use crate::cluster::{self, Router};
use crate::config::Config;
use crate::keys;

/// How long a node waits for its Raft group to elect a leader at start-up.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// Options of `quire serve` that are not configuration settings.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub sandbox: bool,
    /// The master key from `QUIRE_MASTER_KEY`, if set.
    pub master_key_env: Option<String>,
}

/// Parses `MIN..MAX` (milliseconds).
pub fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not a range: write MIN..MAX, e.g. 5..20"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a number of milliseconds"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number of milliseconds"))?;
    if a > b {
        return Err(format!("range {text:?} has MIN above MAX"));
    }
    Ok((a, b))
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The node's key ring: the current master key (see [`current_master_key`]) with the keys of
/// `security.previous_master_key_files`.
pub fn master_key(config: &Config, options: &ServeOptions) -> anyhow::Result<MasterKey> {
    let current = current_master_key(config, options)?;
    keys::key_ring(current, &config.security.previous_master_key_files)
}

fn current_master_key(config: &Config, options: &ServeOptions) -> anyhow::Result<MasterKey> {
    if let Some(text) = &options.master_key_env {
        return MasterKey::parse(text).context("QUIRE_MASTER_KEY is not a valid master key");
    }
    if let Some(path) = &config.security.master_key_file {
        return keys::read_key_file(path);
    }
    if options.sandbox {
        let path = config.node.data_dir.join("master.key");
        if path.exists() {
            return keys::read_key_file(&path);
        }
        let key = keys::write_new_key(&path)?;
        tracing::info!(path = %path.display(), "generated a master key for the sandbox node");
        return Ok(key);
    }
    bail!(
        "no master key: set QUIRE_MASTER_KEY or security.master_key_file (make one with `quire keygen --out FILE`)"
    )
}

/// Creates the data dir if missing and checks its format version (refusing a newer one,
/// migrating an older one) before anything reads or writes it.
fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    crate::data_dir::ensure_format(dir)?;
    Ok(())
}

/// Records the cluster's key check on first start; afterwards, refuses a different key.
pub async fn check_master_key(
    router: &Router,
    key: &MasterKey,
    cluster_name: &str,
) -> anyhow::Result<()> {
    // The key check is written once and never changes: if this node has applied it, its own
    // state is as good as a linearizable read.
    let local = router
        .control
        .read_applied(|state| state.cluster().map(|c| c.key_check.clone()));
    let existing = match local {
        Some(key_check) => Some(key_check),
        None => linearizable_key_check(router).await?,
    };
    match existing {
        Some(key_check) => {
            key.verify_key_check(&key_check)
                .map_err(|e| wrong_key_error(key, &key_check, e))?;
            check_ring_holds_sealed_secrets(router, key)
        }
        None => {
            let key_check = key.key_check(&mut StdRng::from_os_rng())?;
            match router
                .write(Command::InitCluster {
                    cluster_name: cluster_name.to_owned(),
                    key_check,
                })
                .await
            {
                Ok(_) => Ok(()),
                // Another member of a new cluster recorded it first: check against theirs.
                Err(quire_raft::control::WriteError::Rejected(
                    quire_raft::command::ApplyError::Conflict(_),
                )) => match linearizable_key_check(router).await? {
                    Some(key_check) => key
                        .verify_key_check(&key_check)
                        .map_err(|e| wrong_key_error(key, &key_check, e)),
                    None => Err(anyhow::anyhow!("the cluster's key check vanished")),
                },
                Err(e) => Err(anyhow::anyhow!(
                    "cannot record the cluster's key check: {e}"
                )),
            }
        }
    }
}

/// The start-up error for a key ring that does not open the cluster's key check.
fn wrong_key_error(
    key: &MasterKey,
    key_check: &quire_raft::seal::SealedSecret,
    error: quire_raft::seal::SealError,
) -> anyhow::Error {
    let ring = ring_description(key);
    match (&key_check.key_id, error) {
        (Some(id), quire_raft::seal::SealError::UnknownKey { .. }) => anyhow::anyhow!(
            "wrong master key: this cluster's key check is sealed under master key {id}, which \
             is not in this node's key ring ({ring}); add that key to \
             security.previous_master_key_files (or make it the master key)"
        ),
        _ => anyhow::anyhow!(
            "wrong master key: this cluster's Notion tokens were sealed under another key \
             (this node's key ring: {ring}); start the node with the key it was created with"
        ),
    }
}

fn ring_description(key: &MasterKey) -> String {
    let previous: Vec<&str> = key.previous_ids().collect();
    if previous.is_empty() {
        format!("current {}", key.id())
    } else {
        format!("current {}, previous {}", key.id(), previous.join(", "))
    }
}

/// Refuses to start when a secret of this node's state names a master key that is not in its
/// key ring (a key dropped from the ring before a rotation resealed everything it sealed).
/// Secrets sealed before keys had ids name none and are not checked here.
fn check_ring_holds_sealed_secrets(router: &Router, key: &MasterKey) -> anyhow::Result<()> {
    let missing = router.control.read_applied(|state| {
        let mut missing: std::collections::BTreeMap<String, (usize, String)> =
            std::collections::BTreeMap::new();
        for (place, sealed) in state.sealed_secrets() {
            if let Some(id) = &sealed.key_id
                && !key.holds(id)
            {
                let entry = missing
                    .entry(id.clone())
                    .or_insert_with(|| (0, place.to_string()));
                entry.0 += 1;
            }
        }
        missing
    });
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(id, (n, example))| {
            format!("master key {id} still seals {n} secret(s), e.g. {example}")
        })
        .collect();
    bail!(
        "the key ring lacks keys still in use: {}; this node's key ring: {}. Add them to \
         security.previous_master_key_files until `quire ctl keys rotate` has resealed \
         everything under the current key",
        list.join("; "),
        ring_description(key)
    )
}

/// A cluster formed from a static member list has no `quire init` to make its first admin
/// token and JWT signing key: the member with the lowest id makes them when the cluster has
/// none, and writes the token to `<data-dir>/admin-token`.
async fn bootstrap_admin_token_for_static_cluster(
    config: &Config,
    router: &Router,
    master_key: &MasterKey,
) -> anyhow::Result<()> {
    let Some(first) = config.peer.members.iter().map(|m| m.id).min() else {
        return Ok(());
    };
    if first != config.node.id {
        return Ok(());
    }
    let (none, no_key) = read_settled(router, "the cluster's admin tokens", |state| {
        (
            state.admin_tokens().next().is_none(),
            state.jwt().current_key().is_none(),
        )
    })
    .await?;
    if no_key {
        // ...and the built-in JWT issuer's first signing key, as `quire init` makes one.
        let now_ms = crate::clock::Clock::now_ms(&SystemClock);
        crate::init::ensure_jwt_signing_key(router, master_key, now_ms).await?;
    }
    if !none {
        return Ok(());
    }
    let path = crate::init::issue_bootstrap_admin_token(router, &config.node.data_dir).await?;
    tracing::info!(path = %path.display(), "issued the cluster's bootstrap admin token");
    Ok(())
}

/// Reads the cluster's key check linearizably.
async fn linearizable_key_check(
    router: &Router,
) -> anyhow::Result<Option<quire_raft::seal::SealedSecret>> {
    read_settled(router, "the cluster's key check", |state| {
        state.cluster().map(|c| c.key_check.clone())
    })
    .await
}

/// A linearizable read at start-up, retried while the group settles (a node that starts or
/// restarts may not know the leader for a few election timeouts).
async fn read_settled<R>(
    router: &Router,
    what: &str,
    f: impl Fn(&quire_raft::state::State) -> R,
) -> anyhow::Result<R> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let mut wait = Duration::from_millis(100);
    loop {
        match router.read(&f).await {
            Ok(found) => return Ok(found),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!("cannot read {what} yet ({e}); retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot read {what} within {LEADER_WAIT:?}: {e}"
                ));
            }
        }
    }
}

pub fn data_plane_config(config: &Config, seed: u64) -> DataPlaneConfig {
    DataPlaneConfig {
        notion: NotionClientConfig {
            base_url: config.notion.base_url.clone(),
            notion_version: config.notion.version.clone(),
            request_timeout_ms: config.notion.request_timeout_ms,
            max_retries: config.notion.max_retries,
            retry_base_ms: config.notion.retry_base_ms,
            max_response_bytes: config.notion.max_response_bytes,
            local_address: config.notion.local_address,
        },
        limiter: LimiterConfig {
            queue_capacity: config.limits.limiter_queue_capacity,
            per_session_capacity: config.limits.limiter_per_session_capacity,
        },
        call_deadline_ms: config.limits.call_deadline_ms,
        max_in_flight_per_session: config.limits.max_in_flight_per_session,
        max_tenants: config.limits.max_tenants,
        idle_tenant_ms: config.limits.idle_tenant_ms,
        seed,
    }
}

/// Runs a node until it is asked to stop.
pub async fn serve(mut config: Config, options: ServeOptions) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    ensure_data_dir(&config.node.data_dir)?;

    // Bind first: a port in use is the most common start-up error and must be named.
    let listener = tokio::net::TcpListener::bind(config.node.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another process using that port? set node.listen or --listen)",
            config.node.listen
        )
    })?;
    let local_addr = listener.local_addr()?;
    // TLS material is read before anything else starts: a bad file stops the start here.
    let front_tls = match crate::https::TlsPaths::of(&config) {
        Some(paths) => Some(Arc::new(
            crate::https::FrontTls::load(paths, &config.node.tls_min_version)
                .context("cannot serve HTTPS")?,
        )),
        None => None,
    };
    let scheme = if front_tls.is_some() { "https" } else { "http" };
    if front_tls.is_none() && !local_addr.ip().is_loopback() {
        tracing::warn!(
            listen = %local_addr,
            "serving plain HTTP on an address other than loopback (node.allow_plain_http = true): bearer tokens cross the network unencrypted unless a TLS proxy is in front"
        );
    }
    if config.node.public_url.is_none() {
        config.node.public_url = Some(format!("{scheme}://{local_addr}"));
    }

    let sandbox = if options.sandbox {
        Some(crate::sandbox::start(&config).await?)
    } else {
        None
    };
    if let Some(sandbox) = &sandbox {
        config.notion.base_url = sandbox.url.clone();
    }

    let key = master_key(&config, &options)?;
    let node = open_node(&config).await?;
    let shutdown = CancellationToken::new();
    // Forwarded Notion calls are served once the node's `App` exists (refused as busy before).
    let forward_service = Arc::new(crate::forward::ForwardService::default());
    let peer_task = node.start_peer_server(&config, shutdown.clone(), forward_service.clone())?;
    cluster::form_or_join(
        &config,
        &node.router.control,
        node.router.peers.as_ref(),
        options.sandbox,
    )
    .await?;
    node.router
        .control
        .wait_leader(LEADER_WAIT)
        .await
        .context("the control plane elected no leader in time")?;
    check_master_key(&node.router, &key, &config.node.cluster_name).await?;
    bootstrap_admin_token_for_static_cluster(&config, &node.router, &key).await?;
    cluster::stop_when_removed(node.router.clone(), shutdown.clone());

    let data = DataPlane::start(data_plane_config(&config, StdRng::from_os_rng().next_u64()))
        .await
        .context("cannot start the data plane")?;

    let clock: SharedClock = Arc::new(SystemClock);
    let app = Arc::new(App::new(
        config.clone(),
        node.router.clone(),
        data,
        key,
        clock,
        shutdown.clone(),
    ));

    forward_service.set_app(app.clone());

    if let Some(sandbox) = &sandbox {
        crate::sandbox::provision(&app, sandbox).await?;
    }

    let drain = crate::drain::Drain::default();
    let router = crate::http::router(app.clone()).layer(axum::middleware::from_fn_with_state(
        drain.clone(),
        crate::drain::gate,
    ));
    crate::placement::spawn(app.clone());
    app.set_ready(true);
    tracing::info!(url = %format!("{}/mcp", app.config.public_url()), "quire node serving MCP");
    println!("MCP endpoint: {}/mcp", app.config.public_url());

    // Asked to stop, the node first gives its shards away while it still serves everything
    // (`move_shards_away`: make-before-break, at most half of `node.shutdown_grace_ms`), so
    // its tenants' calls go to their new owners instead of waiting for it to come back.
    // Then it drains: `/readyz` and new requests answer 503, the listener closes, and the
    // requests already taken finish (`crate::drain` counts each until its answer has been
    // sent; a tool call also until its audit record committed) within the rest of the grace.
    // Then the MCP sessions end (closing agents' standalone streams), and only after that do
    // the audit batcher, the peer server and Raft stop.
    let grace = Duration::from_millis(config.node.shutdown_grace_ms);
    let (signalled, signal_seen) = tokio::sync::oneshot::channel::<Duration>();
    let stop = {
        let shutdown = shutdown.clone();
        let app = app.clone();
        let drain = drain.clone();
        async move {
            let mut spent = Duration::ZERO;
            tokio::select! {
                _ = shutdown_signal() => {
                    let asked = tokio::time::Instant::now();
                    tracing::info!(
                        grace_ms = grace.as_millis() as u64,
                        "asked to stop: moving this node's shards to the others"
                    );
                    tokio::select! {
                        _ = move_shards_away(&app, grace / 2) => {},
                        _ = shutdown.cancelled() => {},
                    }
                    spent = asked.elapsed();
                    tracing::info!("draining");
                },
                _ = shutdown.cancelled() => {},
            }
            drain.start();
            app.set_ready(false);
            step_down(&app.router);
            let _ = signalled.send(spent);
        }
    };
    let serving = async {
        match &front_tls {
            Some(tls) => {
                tls.clone().spawn_reloader(shutdown.clone());
                axum::serve(tls.listener(listener, local_addr), router)
                    .with_graceful_shutdown(stop)
                    .await
            }
            None => {
                crate::https::ignore_sighup(shutdown.clone());
                // TCP_NODELAY: a streamed (SSE) MCP answer is written in several small
                // pieces, and with Nagle on each one after the first waits for the client's
                // delayed ACK (~40 ms per call).
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
                    }
                });
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
            }
        }
    };
    tokio::pin!(serving);
    let drained = {
        let drain = drain.clone();
        let app = app.clone();
        async move {
            let Ok(spent) = signal_seen.await else {
                return std::future::pending::<bool>().await;
            };
            // The shards' move took part of the grace; the drain has the rest.
            let deadline = tokio::time::Instant::now() + grace.saturating_sub(spent);
            loop {
                if drain.in_flight() == 0 && app.metrics.calls_in_flight() == 0 {
                    return true;
                }
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
        }
    };
    tokio::pin!(drained);
    let report = |idle: bool| {
        if idle {
            tracing::info!(
                "drained: every request taken has been answered; ending the MCP sessions"
            );
        } else {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                requests = drain.in_flight(),
                calls = app.metrics.calls_in_flight(),
                "requests still open when the shutdown grace ended (calls slower than node.shutdown_grace_ms): ending them"
            );
        }
    };
    let served = tokio::select! {
        served = &mut serving => {
            // The HTTP server may finish first (no connection left open), while calls other
            // nodes forwarded here are still running on this node's data plane: those finish
            // too (within the grace) before the data plane stops.
            if drain.draining() {
                report((&mut drained).await);
            }
            served
        }
        idle = &mut drained => {
            report(idle);
            // Ending the MCP sessions closes their streams; the server then finishes.
            shutdown.cancel();
            tokio::time::timeout(FINAL_CLOSE, &mut serving)
                .await
                .unwrap_or(Ok(()))
        }
    };
    shutdown.cancel();
    app.set_ready(false);
    app.data.stop().await;
    if let Some(task) = peer_task {
        let _ = task.await;
    }
    drop(app);
    node.shutdown().await;
    served.context("the HTTP server failed")?;
    tracing::info!("quire node stopped");
    Ok(())
}

/// How long the HTTP server may take to close its connections once the shutdown grace has
/// ended and the MCP sessions were told to stop.
const FINAL_CLOSE: Duration = Duration::from_secs(5);

/// How often a draining node checks whether every request it took has been answered.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How often a stopping node checks how many of its shards are left to move.
const MOVE_POLL: Duration = Duration::from_millis(50);
/// How often a stopping node logs how many shards are left to move.
const MOVE_LOG_EVERY: Duration = Duration::from_secs(1);

/// Make-before-break: marks this node stopping (`SetNodeStopping`) so the leader's placement
/// controller moves its shards to the others at once, and waits — serving everything as
/// before, forwarded calls included — until it owns no shard another node could take, for at
/// most `budget`. Shards whose residency allows no other node stay (nothing to move them to).
/// If the mark cannot be committed (no quorum), the node stops as it did without it.
async fn move_shards_away(app: &App, budget: Duration) {
    let me = app.config.node.id;
    let started = tokio::time::Instant::now();
    let deadline = started + budget;
    let (labelled, before) = app.control.read_applied(|s| {
        (
            s.placement().nodes.contains_key(&me),
            crate::placement::movable_shards(s, me),
        )
    });
    if !labelled || before == 0 {
        // Nothing to give away (a single node, or only shards no other node may take): the
        // mark would only make the would-be owners of shards without one hold off again.
        return;
    }
    let mark = app.router.write(Command::SetNodeStopping {
        node: me,
        stopping: true,
    });
    match tokio::time::timeout_at(deadline, mark).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(
                "cannot mark this node stopping ({e}); stopping without moving its shards"
            );
            return;
        }
        Err(_) => {
            tracing::warn!(
                budget_ms = budget.as_millis() as u64,
                "cannot mark this node stopping in time; stopping without moving its shards"
            );
            return;
        }
    }
    let mut next_log = started + MOVE_LOG_EVERY;
    loop {
        let (left, owned) = app.control.read_applied(|s| {
            (
                crate::placement::movable_shards(s, me),
                crate::placement::shards_owned(s, me),
            )
        });
        let now = tokio::time::Instant::now();
        if left == 0 {
            tracing::info!(
                moved = before,
                kept = owned,
                took_ms = (now - started).as_millis() as u64,
                "this node's shards moved to the others"
            );
            return;
        }
        if now >= deadline {
            tracing::warn!(
                moved = before.saturating_sub(left),
                left,
                took_ms = (now - started).as_millis() as u64,
                "shards still on this node when the time to move them ended; stopping with them"
            );
            return;
        }
        if now >= next_log {
            tracing::info!(left, "moving this node's shards to the others");
            next_log = now + MOVE_LOG_EVERY;
        }
        tokio::time::sleep(MOVE_POLL).await;
    }
}

/// A leader asked to stop gives up leadership by the means openraft 0.9 offers. That version
/// has no leadership transfer (its `Trigger` can elect, heartbeat, snapshot and purge; a
/// follower's campaign is refused by the others while their leader lease lasts, and a leader
/// may not remove itself): the leader stops sending heartbeats at once, so the followers'
/// lease runs out while the node drains, and one of them is elected as soon as no write keeps
/// the lease alive; the writes still in flight are forwarded to the new leader.
fn step_down(router: &Router) {
    let status = router.control.status();
    if status.is_leader && status.voters.len() > 1 {
        router.control.raft().runtime_config().heartbeat(false);
        tracing::info!(
            term = status.term,
            "leader asked to stop: heartbeats stopped so the followers elect a successor"
        );
    }
}

/// A node's control plane and, in a cluster, its peer network.
pub struct OpenNode {
    pub router: Router,
    network: Option<quire_transport::GrpcNetwork>,
    security: Option<quire_transport::TransportSecurity>,
    peer_listener: std::sync::Mutex<Option<tokio::net::TcpListener>>,
}

/// Binds the peer listener (if any) and opens the control plane over the right network.
pub async fn open_node(config: &Config) -> anyhow::Result<OpenNode> {
    open_node_advertising(config, config.peer.advertised()).await
}

/// [`open_node`], advertising `raft_addr` to peers (`quire init` opens without a listener
/// but records the address the node will serve peers on).
pub async fn open_node_advertising(
    config: &Config,
    raft_addr: Option<String>,
) -> anyhow::Result<OpenNode> {
    let security = cluster::transport_security(config)?;
    ensure_data_dir(&config.node.data_dir)?;
    let peer_listener = match config.peer.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for peers (is another process using that port? set peer.listen or --peer-listen)")
        })?),
        None => None,
    };
    let raft_addr = raft_addr.unwrap_or_else(|| "local".to_owned());
    let control_config = ControlPlaneConfig {
        data_dir: config.node.data_dir.join("raft"),
        node_id: config.node.id,
        cluster_name: config.node.cluster_name.clone(),
        raft_addr,
        heartbeat_ms: config.raft.heartbeat_ms,
        election_timeout_ms: (
            config.raft.election_timeout_min_ms,
            config.raft.election_timeout_max_ms,
        ),
        snapshot_every_logs: config.raft.snapshot_every_logs,
    };
    let faults = config
        .peer
        .fault_injection
        .then(|| Arc::new(quire_transport::LinkFaults::new(config.node.id)));
    let open_context = || {
        format!(
            "cannot open the data directory {}",
            config.node.data_dir.display()
        )
    };
    let (control, network) = match &security {
        Some(security) => {
            let mut network = quire_transport::GrpcNetwork::new(
                config.node.id,
                cluster::transport_config(config),
                security.clone(),
            )?;
            if let Some(faults) = &faults {
                network = network.with_fault_filter(faults.clone());
            }
            let control = ControlPlane::open_with_network(control_config, network.clone())
                .await
                .with_context(open_context)?;
            (control, Some(network))
        }
        None => (
            ControlPlane::open(control_config)
                .await
                .with_context(open_context)?,
            None,
        ),
    };
    let peers = network.as_ref().map(|n| n.peer_client());
    Ok(OpenNode {
        router: Router {
            control: Arc::new(control),
            peers,
            faults,
            request_ids: cluster::RequestIds::from_entropy(),
        },
        network,
        security,
        peer_listener: std::sync::Mutex::new(peer_listener),
    })
}

impl OpenNode {
    /// Serves the peer service until `shutdown` is cancelled (nothing without a listener),
    /// with `data_calls` serving the Notion calls other nodes forward to this one.
    pub fn start_peer_server(
        &self,
        config: &Config,
        shutdown: CancellationToken,
        data_calls: Arc<dyn quire_transport::DataCallHandler>,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let (Some(network), Some(security)) = (&self.network, &self.security) else {
            return Ok(None);
        };
        let Some(listener) = self.peer_listener_take() else {
            return Ok(None);
        };
        let server = quire_transport::PeerServer::new(
            self.router.control.clone(),
            cluster::transport_config(config),
            security.clone(),
            network.peer_client(),
        )?
        .with_data_calls(data_calls);
        Ok(Some(tokio::spawn(async move {
            if let Err(e) = server
                .serve(listener, async move { shutdown.cancelled().await })
                .await
            {
                tracing::error!("the peer server stopped: {e}");
            }
        })))
    }

    fn peer_listener_take(&self) -> Option<tokio::net::TcpListener> {
        self.peer_listener.lock().ok()?.take()
    }

    /// Stops openraft and releases the data dir.
    pub async fn shutdown(self) {
        let control = self.router.control;
        drop(self.network);
        match Arc::try_unwrap(control) {
            Ok(control) => {
                if let Err(e) = control.shutdown().await {
                    tracing::warn!("control plane shutdown: {e}");
                }
            }
            Err(control) => {
                if let Err(e) = control.raft().shutdown().await {
                    tracing::warn!("raft shutdown: {e}");
                }
            }
        }
    }
}
