//! [`ControlPlane`]: one node's handle on the replicated control plane — opens the store on a
//! storage engine, runs openraft over a pluggable network, proposes commands and reads state.
//!
//! Nothing here assumes a single node: [`ControlPlane::open`] runs with [`NoPeers`] (a group
//! of one), and [`ControlPlane::open_with_network`] takes any `RaftNetworkFactory`, such as
//! the gRPC one in `quire-transport`. Both open sled in `data_dir`;
//! [`ControlPlane::open_with`] takes any [`StorageEngine`] (the simulator's [`SimEngine`]).
//!
//! [`SimEngine`]: crate::engine::SimEngine

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, RaftNetworkFactory, ServerState, SnapshotPolicy};

use crate::command::{ApplyError, Command, CommandOutput};
use crate::engine::{FlushHandle, SledEngine, StorageEngine};
use crate::network::NoPeers;
use crate::state::State;
use crate::store::{
    OpenError, SharedState, SnapshotStats, SnapshotStatsHandle, Store, StoreReleased,
};
use crate::types::{NodeId, QuireRaft, TypeConfig};

/// How long [`ControlPlane::write`] waits for a command to commit and apply.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 10_000;
/// How long [`ControlPlane::open`] waits for a locked data dir to be released.
pub const OPEN_LOCK_WAIT_MS: u64 = 5_000;
/// How long [`ControlPlane::shutdown`] waits for openraft to let go of the store.
pub const SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// How long [`ControlPlane::read`] waits to confirm leadership.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 5_000;
/// Log entries kept behind a snapshot (so lagging followers can catch up from the log).
pub const LOGS_KEPT_BEHIND_SNAPSHOT: u64 = 1_000;

/// Configuration of one control-plane node.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Where sled keeps the log, metadata and snapshots (unused by
    /// [`ControlPlane::open_with`], whose engine is already open).
    pub data_dir: PathBuf,
    /// This node's Raft id.
    pub node_id: u64,
    /// Cluster name; recorded in the data dir on first open and checked after.
    pub cluster_name: String,
    /// Address advertised to peers (the `BasicNode` address).
    pub raft_addr: String,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout range (min, max).
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot (and purge the log behind it) every this many applied entries.
    pub snapshot_every_logs: u64,
}

impl ControlPlaneConfig {
    /// A configuration with the default timings: heartbeat 100 ms, election 300–600 ms,
    /// snapshot every 5000 entries.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        node_id: u64,
        cluster_name: impl Into<String>,
        raft_addr: impl Into<String>,
    ) -> Self {
        Self {
            data_dir: data_dir.into(),
            node_id,
            cluster_name: cluster_name.into(),
            raft_addr: raft_addr.into(),
            heartbeat_ms: 100,
            election_timeout_ms: (300, 600),
            snapshot_every_logs: 5_000,
        }
    }

    fn raft_config(&self) -> Result<Config, OpenError> {
        let (min, max) = self.election_timeout_ms;
        if self.heartbeat_ms == 0 {
            return Err(OpenError::InvalidConfig("heartbeat_ms must be > 0".into()));
        }
        if min <= self.heartbeat_ms || max <= min {
            return Err(OpenError::InvalidConfig(format!(
                "election_timeout_ms ({min}, {max}) must satisfy heartbeat_ms ({}) < min < max",
                self.heartbeat_ms
            )));
        }
        if self.snapshot_every_logs == 0 {
            return Err(OpenError::InvalidConfig(
                "snapshot_every_logs must be > 0".into(),
            ));
        }
        let config = Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: min,
            election_timeout_max: max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_logs),
            max_in_snapshot_log_to_keep: LOGS_KEPT_BEHIND_SNAPSHOT.min(self.snapshot_every_logs),
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| OpenError::InvalidConfig(e.to_string()))
    }
}

/// A control-plane operation (bootstrap, wait, shutdown) failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The deadline passed.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// openraft reported an error.
    #[error("raft: {0}")]
    Raft(String),
}

/// A write was not applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The command was committed and rejected by `apply`; the state is unchanged.
    #[error("command rejected: {0}")]
    Rejected(ApplyError),
    /// This node is not the leader; send the write to `leader` if known.
    #[error("not the leader (leader: {leader:?}); retry on the leader")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// openraft failed (shut down, storage error, ...).
    #[error("raft: {0}")]
    Raft(String),
    /// The write did not complete in time; it may still commit later.
    #[error("write did not complete in time; it may still commit")]
    Timeout,
}

/// A linearizable read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// This node is not the leader; read on `leader` if known.
    #[error("not the leader (leader: {leader:?}); read on the leader")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// openraft failed, or leadership could not be confirmed by a quorum.
    #[error("raft: {0}")]
    Raft(String),
    /// Leadership was not confirmed in time.
    #[error("read could not be confirmed in time")]
    Timeout,
}

/// A snapshot of this node's view of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlStatus {
    /// This node.
    pub node_id: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last applied entry.
    pub applied_index: Option<u64>,
    /// Voters of the current membership.
    pub voters: Vec<NodeId>,
}

/// One node's handle on the control plane.
pub struct ControlPlane {
    raft: QuireRaft,
    shared: SharedState,
    snapshot_stats: SnapshotStatsHandle,
    engine: Box<dyn FlushHandle>,
    released: StoreReleased,
    config: ControlPlaneConfig,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("node_id", &self.config.node_id)
            .field("cluster_name", &self.config.cluster_name)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Opens the data dir and starts openraft with no peer network (a group of one).
    pub async fn open(config: ControlPlaneConfig) -> Result<ControlPlane, OpenError> {
        Self::open_with_network(config, NoPeers).await
    }

    /// Opens the data dir (sled) and starts openraft over `network`.
    pub async fn open_with_network<N>(
        config: ControlPlaneConfig,
        network: N,
    ) -> Result<ControlPlane, OpenError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        config.raft_config()?;
        if config.cluster_name.is_empty() {
            return Err(OpenError::InvalidConfig("cluster_name is empty".into()));
        }
        let engine =
            SledEngine::open_waiting(&config.data_dir, Duration::from_millis(OPEN_LOCK_WAIT_MS))
                .await?;
        Self::open_with(config, engine, network).await
    }

    /// Opens the store on `engine` (checking its recorded identity against `config`, or
    /// recording it on first use) and starts openraft over `network`. `config.data_dir` is
    /// not used: the engine is already open.
    pub async fn open_with<E, N>(
        config: ControlPlaneConfig,
        engine: E,
        network: N,
    ) -> Result<ControlPlane, OpenError>
    where
        E: StorageEngine,
        N: RaftNetworkFactory<TypeConfig>,
    {
        let raft_config = Arc::new(config.raft_config()?);
        let store = Store::open_on(engine, &config.cluster_name, config.node_id).await?;
        let shared = store.state_machine.shared();
        let snapshot_stats = store.state_machine.snapshot_stats();
        let engine: Box<dyn FlushHandle> = Box::new(store.engine().clone());
        let Store {
            log,
            state_machine,
            released,
            ..
        } = store;
        let raft = QuireRaft::new(config.node_id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| OpenError::Raft(e.to_string()))?;
        Ok(ControlPlane {
            raft,
            shared,
            snapshot_stats,
            engine,
            released,
            config,
        })
    }

    /// The openraft handle, for the transport to deliver RPCs and for membership changes.
    pub fn raft(&self) -> &QuireRaft {
        &self.raft
    }

    /// This node's configuration.
    pub fn config(&self) -> &ControlPlaneConfig {
        &self.config
    }

    /// Initialises a group of one (this node) if this node has never been part of a group;
    /// does nothing otherwise.
    pub async fn bootstrap_single(&self) -> Result<(), ControlError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ControlError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let mut members = BTreeMap::new();
        members.insert(
            self.config.node_id,
            BasicNode::new(self.config.raft_addr.clone()),
        );
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Someone (or an earlier call) initialised it meanwhile: nothing to do.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ControlError::Raft(e.to_string())),
        }
    }

    /// Waits until a leader is known and, if it is this node, it has applied an entry of its
    /// own term (so it can serve writes and linearizable reads).
    pub async fn wait_leader(&self, timeout: Duration) -> Result<(), ControlError> {
        let me = self.config.node_id;
        self.raft
            .wait(Some(timeout))
            .metrics(
                move |m| match m.current_leader {
                    None => false,
                    Some(leader) if leader == me => {
                        m.state == ServerState::Leader
                            && m.last_applied
                                .as_ref()
                                .is_some_and(|l| l.leader_id.term == m.current_term)
                    }
                    Some(_) => true,
                },
                "leader known and ready",
            )
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(d, msg) => ControlError::Timeout(d, msg),
                other => ControlError::Raft(other.to_string()),
            })
    }

    /// Proposes `cmd`, waits up to [`DEFAULT_WRITE_TIMEOUT_MS`] for it to commit and apply,
    /// and returns its result.
    pub async fn write(&self, cmd: Command) -> Result<CommandOutput, WriteError> {
        self.write_with_timeout(cmd, Duration::from_millis(DEFAULT_WRITE_TIMEOUT_MS))
            .await
    }

    /// [`ControlPlane::write`] with an explicit deadline.
    pub async fn write_with_timeout(
        &self,
        cmd: Command,
        timeout: Duration,
    ) -> Result<CommandOutput, WriteError> {
        let result = tokio::time::timeout(timeout, self.raft.client_write(cmd))
            .await
            .map_err(|_| WriteError::Timeout)?;
        match result {
            Ok(resp) => resp.data.0.map_err(WriteError::Rejected),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// A linearizable read: confirms leadership with a quorum, waits until the state machine
    /// has applied everything committed before the read, then runs `f` on the state.
    pub async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, ReadError> {
        let confirmed = tokio::time::timeout(
            Duration::from_millis(DEFAULT_READ_TIMEOUT_MS),
            self.raft.ensure_linearizable(),
        )
        .await
        .map_err(|_| ReadError::Timeout)?;
        match confirmed {
            Ok(_) => Ok(self.read_applied(f)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ReadError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ReadError::Raft(e.to_string())),
        }
    }

    /// Runs `f` on this node's applied state, with no round trip (may be stale on a follower).
    pub fn read_applied<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.shared.with(|data| f(&data.state))
    }

    /// Runs `f` on this node's applied state and the log index it was applied up to (0 before
    /// any entry), both read under one lock: a state exactly as of that index.
    pub fn read_applied_indexed<R>(&self, f: impl FnOnce(&State, u64) -> R) -> R {
        self.shared
            .with(|data| f(&data.state, data.last_applied.map_or(0, |id| id.index)))
    }

    /// This node's view of the group.
    pub fn status(&self) -> ControlStatus {
        let m = self.raft.metrics().borrow().clone();
        ControlStatus {
            node_id: m.id,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
        }
    }

    /// This node's latest snapshot (built, installed, or loaded at start): its size and last
    /// index, and how many snapshots this node built since it started.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.snapshot_stats.get()
    }

    /// Stops openraft, flushes the store and waits until every handle on it is dropped, so
    /// the data dir can be opened again as soon as this returns.
    pub async fn shutdown(self) -> Result<(), ControlError> {
        let ControlPlane {
            raft,
            shared,
            engine,
            released,
            ..
        } = self;
        raft.shutdown()
            .await
            .map_err(|e| ControlError::Raft(format!("raft shutdown: {e}")))?;
        drop(raft);
        drop(shared);
        engine
            .flush_boxed()
            .await
            .map_err(|e| ControlError::Raft(format!("flushing the store: {e}")))?;
        drop(engine);
        let limit = Duration::from_millis(SHUTDOWN_TIMEOUT_MS);
        tokio::time::timeout(limit, released.wait())
            .await
            .map_err(|_| ControlError::Timeout(limit, "openraft to release the store".into()))
    }
}
