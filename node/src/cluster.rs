//! The node's place in the Raft group: peer security from the configuration, forwarding of
//! writes and linearizable reads to the leader from any node, forming or joining the group on
//! first start, and stopping a node that was removed from it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use quire_raft::command::{Command, CommandOutput};
use quire_raft::control::{ControlPlane, ReadError, WriteError};
use quire_raft::state::State;
use quire_transport::{PeerClient, TransportConfig, TransportError, TransportSecurity};

use crate::config::Config;

/// How long a first start keeps trying to join through `peer.join` (the member may still be
/// starting).
pub const JOIN_RETRY_WINDOW: Duration = Duration::from_secs(120);

/// Transport timings from the node's configuration.
pub fn transport_config(config: &Config) -> TransportConfig {
    TransportConfig {
        request_timeout_ms: config.peer.request_timeout_ms,
        snapshot_timeout_ms: config.peer.snapshot_timeout_ms,
        max_in_flight_per_peer: config.peer.max_in_flight_per_peer,
        ..TransportConfig::default()
    }
}

/// The peer security the configuration asks for; `None` without a peer listener.
pub fn transport_security(config: &Config) -> anyhow::Result<Option<TransportSecurity>> {
    if config.peer.listen.is_none() {
        return Ok(None);
    }
    if let Some(dir) = &config.peer.tls_dir {
        let material = quire_transport::TlsFiles::load(dir).with_context(|| {
            format!("cannot load the node's TLS material from {}", dir.display())
        })?;
        return Ok(Some(TransportSecurity::MutualTls(material)));
    }
    if config.peer.insecure {
        tracing::warn!(
            "peer traffic is plaintext (peer.insecure): use only for a test on one machine"
        );
        return Ok(Some(TransportSecurity::Insecure));
    }
    bail!("peer.listen needs peer.tls_dir or peer.insecure")
}

/// Writes and linearizable reads that work on any node: a follower forwards to the leader.
#[derive(Clone)]
pub struct Router {
    pub control: Arc<ControlPlane>,
    pub peers: Option<PeerClient>,
    /// The link faults this node applies to its outgoing peer requests, when
    /// `peer.fault_injection` is on.
    pub faults: Option<Arc<quire_transport::LinkFaults>>,
    /// Where each write's request id comes from.
    pub request_ids: RequestIds,
}

/// Request ids for writes, so a write retried after a lost answer is applied once. Random
/// from the operating system in production; from a seed in simulation.
#[derive(Clone)]
pub struct RequestIds(Arc<std::sync::Mutex<rand_chacha::ChaCha8Rng>>);

impl RequestIds {
    pub fn from_entropy() -> Self {
        use rand::SeedableRng;
        Self(Arc::new(std::sync::Mutex::new(
            rand_chacha::ChaCha8Rng::from_os_rng(),
        )))
    }

    pub fn seeded(seed: u64) -> Self {
        use rand::SeedableRng;
        Self(Arc::new(std::sync::Mutex::new(
            rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        )))
    }

    /// A fresh id: 128 random bits in hex.
    pub fn next(&self) -> String {
        use rand::RngCore;
        let mut bytes = [0u8; 16];
        let mut rng = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    }
}

/// Waiting between forwarding attempts while a leader is being elected.
const FORWARD_RETRY: Duration = Duration::from_millis(100);
/// Attempts to find the leader for one write or read.
const FORWARD_ATTEMPTS: usize = 50;

fn forward_error(e: TransportError) -> WriteError {
    match e {
        TransportError::NotLeader { leader_id, .. } => WriteError::NotLeader { leader: leader_id },
        TransportError::Timeout { .. } => WriteError::Timeout,
        other => WriteError::Raft(other.to_string()),
    }
}

impl Router {
    /// Proposes `cmd` on the leader, wherever it is, and waits for its result. The command
    /// carries a request id, so retrying it after a lost answer (the leader crashed after
    /// committing it) returns the first result instead of applying it twice.
    pub async fn write(&self, cmd: Command) -> Result<CommandOutput, WriteError> {
        let cmd = match cmd {
            once @ Command::Once { .. } => once,
            other => Command::Once {
                request_id: self.request_ids.next(),
                command: Box::new(other),
            },
        };
        let mut last = WriteError::NotLeader { leader: None };
        for _ in 0..FORWARD_ATTEMPTS {
            match self.control.write(cmd.clone()).await {
                Err(WriteError::NotLeader { leader }) => {
                    let (Some(peers), Some(addr)) = (
                        &self.peers,
                        leader.and_then(|id| self.control.member_addr(id)),
                    ) else {
                        last = WriteError::NotLeader { leader };
                        tokio::time::sleep(FORWARD_RETRY).await;
                        continue;
                    };
                    match peers.forward_write_to_leader(&addr, &cmd).await {
                        Ok(response) => return response.0.map_err(WriteError::Rejected),
                        Err(e)
                            if matches!(
                                e,
                                TransportError::NotLeader { .. }
                                    | TransportError::Unreachable { .. }
                            ) =>
                        {
                            last = forward_error(e);
                            tokio::time::sleep(FORWARD_RETRY).await;
                        }
                        Err(e) => return Err(forward_error(e)),
                    }
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// A linearizable read on this node: on the leader, a quorum check; on a follower, the
    /// leader's read index, then a local read once this node has applied it.
    pub async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, ReadError> {
        let mut last = ReadError::NotLeader { leader: None };
        for _ in 0..FORWARD_ATTEMPTS {
            match self.control.read_index(Duration::from_secs(5)).await {
                Ok(index) => {
                    self.control
                        .wait_applied(index, Duration::from_secs(5))
                        .await?;
                    return Ok(self.control.read_applied(f));
                }
                Err(ReadError::NotLeader { leader }) => {
                    let (Some(peers), Some(addr)) = (
                        &self.peers,
                        leader.and_then(|id| self.control.member_addr(id)),
                    ) else {
                        last = ReadError::NotLeader { leader };
                        tokio::time::sleep(FORWARD_RETRY).await;
                        continue;
                    };
                    match peers.read_barrier(&self.control, &addr).await {
                        Ok(()) => return Ok(self.control.read_applied(f)),
                        Err(TransportError::Timeout { .. }) => return Err(ReadError::Timeout),
                        Err(
                            e @ (TransportError::NotLeader { .. }
                            | TransportError::Unreachable { .. }),
                        ) => {
                            last = ReadError::Raft(e.to_string());
                            tokio::time::sleep(FORWARD_RETRY).await;
                        }
                        Err(e) => return Err(ReadError::Raft(e.to_string())),
                    }
                }
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }
}

/// Forms the group on a first start: from the static member list, by joining through
/// `peer.join`, or as a group of one when `single` (sandbox, `quire init`). A data dir that
/// already belongs to a group just rejoins it.
pub async fn form_or_join(
    config: &Config,
    control: &ControlPlane,
    peers: Option<&PeerClient>,
    single: bool,
) -> anyhow::Result<()> {
    if control.is_initialized().await? {
        return Ok(());
    }
    if !config.peer.members.is_empty() {
        let members = config
            .peer
            .members
            .iter()
            .map(|m| (m.id, m.addr.clone()))
            .collect();
        control.bootstrap_members(&members).await?;
        return Ok(());
    }
    if let Some(target) = &config.peer.join {
        let (Some(peers), Some(me)) = (peers, config.peer.advertised()) else {
            bail!("peer.join needs peer.listen");
        };
        let deadline = tokio::time::Instant::now() + JOIN_RETRY_WINDOW;
        let mut wait = Duration::from_millis(200);
        loop {
            match peers.join(target, config.node.id, &me).await {
                Ok(members) => {
                    tracing::info!(via = %target, members = members.len(), "joined the cluster");
                    return Ok(());
                }
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tracing::info!(via = %target, "cannot join yet ({e}); retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(3));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot join the cluster through {target}"));
                }
            }
        }
    }
    if single {
        control.bootstrap_single().await?;
        return Ok(());
    }
    bail!(
        "this data dir ({}) belongs to no cluster yet: run `quire init` to start a new cluster, \
         or start with `--join HOST:PORT` (a member's peer address) or a static peer.members list",
        config.node.data_dir.display()
    )
}

/// How often a node that has no leader asks its peers whether it is still a member.
const REMOVAL_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How many probes in a row must find it removed before it stops.
const REMOVAL_PROBES_NEEDED: u32 = 2;

/// Stops the node (cancels `shutdown`) once it is no longer a member of the group: when its
/// own view of the membership drops it, or — since a removed node stops receiving the log and
/// may never apply its own removal — when, while it knows no leader, members that do know one
/// report a membership without it, twice in a row.
pub fn stop_when_removed(router: Router, shutdown: CancellationToken) {
    let control = router.control.clone();
    let me = control.config().node_id;
    let mut metrics = control.raft().metrics();
    tokio::spawn(async move {
        let mut was_member = false;
        let mut removed_reports = 0u32;
        let mut probe = tokio::time::interval(REMOVAL_PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let is_member = metrics
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .any(|(id, _)| *id == me);
            let status = control.status();
            let leader_known = status.is_leader || status.leader.is_some_and(|l| l != me);
            if is_member {
                was_member = true;
            } else if was_member {
                tracing::error!(
                    node_id = me,
                    "this node was removed from the cluster; it stops serving"
                );
                shutdown.cancel();
                return;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = probe.tick() => {
                    if leader_known || !was_member {
                        removed_reports = 0;
                        continue;
                    }
                    if removed_by_peers(&router, me).await {
                        removed_reports += 1;
                        if removed_reports >= REMOVAL_PROBES_NEEDED {
                            tracing::error!(node_id = me, "the cluster's members no longer list this node; it was removed and stops serving");
                            shutdown.cancel();
                            return;
                        }
                    } else {
                        removed_reports = 0;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

/// Whether a member that knows a leader reports a membership without `me`.
async fn removed_by_peers(router: &Router, me: u64) -> bool {
    let Some(peers) = &router.peers else {
        return false;
    };
    for member in router.control.members() {
        if member.id == me {
            continue;
        }
        if let Ok(status) = peers.status(&member.addr).await
            && status.leader_id.is_some()
        {
            return !status.members.iter().any(|m| m.node_id == me);
        }
    }
    false
}
