//! The Raft log and the state machine (openraft storage-v2), written against the
//! [`StorageEngine`] trait so the same code runs on sled in production and on the simulated
//! disk in the simulator.
//!
//! Three named trees:
//! - `log`: entries as JSON, keyed by big-endian index;
//! - `meta`: vote, committed log id, last purged log id, and the data dir's identity
//!   (cluster name and node id, recorded on first open, in one atomic batch);
//! - `sm`: the latest snapshot (metadata and data in one value, so never torn).
//!
//! On sled this is one `Db` per data dir with those three sled trees, the layout data dirs
//! have always had.
//!
//! The state machine lives in memory and is rebuilt at start-up from the latest snapshot plus
//! the committed log after it (openraft re-applies from `last_applied + 1` to the saved
//! committed id). Log appends, votes, truncation, purges and snapshots are flushed (the
//! engine's durability point) before they are acknowledged; the log is purged only behind a
//! flushed snapshot.

#![allow(
    clippy::result_large_err,
    reason = "openraft fixes the storage error type; it is large by its design"
)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, StorageIOError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::command::{CommandOutput, apply_at};
use crate::engine::{EngineError, EngineTree, SledEngine, StorageEngine, WriteBatch};
use crate::state::State;
use crate::types::{
    CommandResponse, Entry, LogId, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

pub use crate::engine::LOCK_RETRY_MS;

/// Largest snapshot accepted from a peer, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 512 * 1024 * 1024;

/// Name of the tree holding the log.
pub const TREE_LOG: &str = "log";
/// Name of the tree holding the vote, commit and purge points and the identity.
pub const TREE_META: &str = "meta";
/// Name of the tree holding the latest snapshot.
pub const TREE_SM: &str = "sm";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_CLUSTER_NAME: &[u8] = b"cluster_name";
const KEY_NODE_ID: &[u8] = b"node_id";
/// The latest snapshot, as one value: metadata length (u32 BE), metadata JSON, state JSON.
/// One key, so a reader never sees the metadata of one snapshot with the data of another.
const KEY_SNAPSHOT: &[u8] = b"snapshot";

fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let meta = encode(meta)?;
    let len = u32::try_from(meta.len()).map_err(|_| {
        <serde_json::Error as serde::ser::Error>::custom("snapshot metadata too long")
    })?;
    let mut out = Vec::with_capacity(4 + meta.len() + data.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(data);
    Ok(out)
}

/// Splits a stored snapshot into its metadata and its data bytes.
fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), String> {
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or("snapshot record shorter than its header")?;
    let meta_len = usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|e| e.to_string())?;
    let meta_end = 4usize
        .checked_add(meta_len)
        .filter(|end| *end <= bytes.len())
        .ok_or("snapshot metadata length exceeds the record")?;
    let meta: SnapshotMeta =
        decode(&bytes[4..meta_end]).map_err(|e| format!("snapshot metadata: {e}"))?;
    Ok((meta, &bytes[meta_end..]))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SnapshotDecodeError(String);

/// What this node knows of its latest snapshot, recorded where snapshots are built, installed
/// and loaded (for the node's metrics: nothing is re-serialised to read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Size in bytes of the latest stored snapshot's data (the serialised state, as sent to a
    /// follower); 0 before any.
    pub bytes: u64,
    /// Last log index the latest stored snapshot includes; `None` before any.
    pub last_index: Option<u64>,
    /// Snapshots this node built since it started.
    pub built: u64,
}

/// A read handle on a store's [`SnapshotStats`].
#[derive(Debug, Clone)]
pub struct SnapshotStatsHandle(Arc<Mutex<SnapshotStats>>);

impl SnapshotStatsHandle {
    /// The stats now.
    pub fn get(&self) -> SnapshotStats {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Opening a data dir failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data dir was created for another cluster.
    #[error(
        "data dir belongs to cluster {found:?}, not the configured {expected:?}; use another data dir or fix cluster_name"
    )]
    ForeignDataDir {
        /// Cluster name recorded in the data dir.
        found: String,
        /// Cluster name configured.
        expected: String,
    },
    /// The data dir was created for another node id of this cluster.
    #[error(
        "data dir belongs to node {found}, not the configured node {expected}; use another data dir or fix node_id"
    )]
    NodeIdMismatch {
        /// Node id recorded in the data dir.
        found: u64,
        /// Node id configured.
        expected: u64,
    },
    /// The stored data could not be read or decoded.
    #[error("data dir {0} is unreadable or corrupt: {1}")]
    Corrupt(PathBuf, String),
    /// The data dir is locked: another process uses it, or (briefly) a previous instance in
    /// this process is still letting go of it.
    #[error(
        "data dir {0} is locked by another user of it (another quire process, or one still shutting down)"
    )]
    Locked(PathBuf),
    /// An I/O error (permissions, disk full).
    #[error("data dir {path}: {source}")]
    Io {
        /// The data dir.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid control-plane configuration: {0}")]
    InvalidConfig(String),
    /// openraft refused to start.
    #[error("raft failed to start: {0}")]
    Raft(String),
}

/// Maps an engine error met while opening the store at `location` onto [`OpenError`].
fn engine_open_err(location: &Path, e: EngineError) -> OpenError {
    match e {
        EngineError::Sled(e) => crate::engine::sled_open_err(location, e),
        other => OpenError::Io {
            path: location.to_path_buf(),
            source: std::io::Error::other(other),
        },
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &(impl std::error::Error + 'static),
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

/// An opened store: the log store, the state machine, and the engine under them.
pub struct Store<E: StorageEngine = SledEngine> {
    /// The Raft log store.
    pub log: LogStore<E>,
    /// The state machine store.
    pub state_machine: StateMachineStore<E>,
    /// Resolves once every clone of the log store and state machine is dropped.
    pub released: StoreReleased,
    engine: E,
}

/// The store on sled, in a data dir.
pub type SledStore = Store<SledEngine>;

/// Resolves once every clone of a [`LogStore`] and [`StateMachineStore`] is gone, so the
/// data dir's lock can be taken again (openraft drops its store handles from its own tasks,
/// a little after `Raft::shutdown` returns).
#[derive(Debug)]
pub struct StoreReleased(tokio::sync::mpsc::Receiver<()>);

impl StoreReleased {
    /// Waits until all store handles are dropped.
    pub async fn wait(mut self) {
        // Nothing is ever sent: `recv` returns `None` when the last sender (held by the
        // stores) is dropped.
        while self.0.recv().await.is_some() {}
    }
}

/// Held by every store handle; dropping the last one resolves [`StoreReleased`].
#[derive(Debug, Clone)]
struct Liveness(
    #[allow(dead_code, reason = "held only for its drop")] tokio::sync::mpsc::Sender<()>,
);

impl<E: StorageEngine> Store<E> {
    /// Opens the store on `engine` for `cluster_name` / `node_id`: on first open records the
    /// identity (and flushes it); later opens check it, and check that the log, metadata and
    /// snapshot decode.
    pub async fn open_on(
        engine: E,
        cluster_name: &str,
        node_id: NodeId,
    ) -> Result<Self, OpenError> {
        let (store, recorded) = Self::load(engine, cluster_name, node_id)?;
        if recorded {
            store
                .engine
                .flush()
                .await
                .map_err(|e| engine_open_err(&store.engine.location(), e))?;
        }
        Ok(store)
    }

    /// The engine under the store.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Opens the store without flushing; returns whether the identity was recorded now (and
    /// so needs a flush).
    fn load(engine: E, cluster_name: &str, node_id: NodeId) -> Result<(Self, bool), OpenError> {
        if cluster_name.is_empty() {
            return Err(OpenError::InvalidConfig("cluster_name is empty".into()));
        }
        let location = engine.location();
        let path = location.as_path();
        let eng_err = |e: EngineError| engine_open_err(path, e);
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            OpenError::Corrupt(path.to_path_buf(), format!("{what}: {e}"))
        };
        let log = engine.open_tree(TREE_LOG).map_err(eng_err)?;
        let meta = engine.open_tree(TREE_META).map_err(eng_err)?;
        let sm = engine.open_tree(TREE_SM).map_err(eng_err)?;

        // Identity.
        let found_name = meta.get(KEY_CLUSTER_NAME).map_err(eng_err)?;
        let found_node = meta.get(KEY_NODE_ID).map_err(eng_err)?;
        let recorded = match (found_name, found_node) {
            (None, None) => {
                // One batch, so a crash never leaves half an identity.
                let mut batch = WriteBatch::new();
                batch.insert(KEY_CLUSTER_NAME, cluster_name.as_bytes());
                batch.insert(KEY_NODE_ID, node_id.to_be_bytes());
                meta.apply_batch(batch).map_err(eng_err)?;
                true
            }
            (Some(name), Some(node)) => {
                let name = std::str::from_utf8(&name)
                    .map_err(|e| corrupt("recorded cluster name", &e))?
                    .to_string();
                if name != cluster_name {
                    return Err(OpenError::ForeignDataDir {
                        found: name,
                        expected: cluster_name.to_string(),
                    });
                }
                let node = <[u8; 8]>::try_from(node.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|e| corrupt("recorded node id", &e))?;
                if node != node_id {
                    return Err(OpenError::NodeIdMismatch {
                        found: node,
                        expected: node_id,
                    });
                }
                false
            }
            _ => {
                return Err(OpenError::Corrupt(
                    path.to_path_buf(),
                    "identity is half-written (cluster name or node id missing)".into(),
                ));
            }
        };

        // Check that the log decodes at its ends, so corruption shows at start-up.
        let ends = [log.first().map_err(eng_err)?, log.last().map_err(eng_err)?];
        for (key, value) in ends.into_iter().flatten() {
            if key.len() != 8 {
                return Err(corrupt("log key", &"not 8 bytes"));
            }
            decode::<Entry>(&value).map_err(|e| corrupt("log entry", &e))?;
        }
        for key in [KEY_VOTE, KEY_COMMITTED, KEY_LAST_PURGED] {
            if let Some(v) = meta.get(key).map_err(eng_err)? {
                decode::<serde_json::Value>(&v).map_err(|e| corrupt("raft metadata", &e))?;
            }
        }

        // State machine from the latest snapshot.
        let mut data = SmData::default();
        let mut stats = SnapshotStats::default();
        if let Some(record) = sm.get(KEY_SNAPSHOT).map_err(eng_err)? {
            let (m, d) = decode_snapshot(&record).map_err(|e| corrupt("snapshot", &e))?;
            let state: State = decode(d).map_err(|e| corrupt("snapshot data", &e))?;
            data.last_applied = m.last_log_id;
            data.last_membership = m.last_membership.clone();
            data.state = state;
            stats.bytes = d.len() as u64;
            stats.last_index = m.last_log_id.map(|l| l.index);
        }

        let (live_tx, live_rx) = tokio::sync::mpsc::channel(1);
        let log_store = LogStore {
            engine: engine.clone(),
            log,
            meta,
            _live: Liveness(live_tx.clone()),
        };
        let state_machine = StateMachineStore {
            engine: engine.clone(),
            _live: Liveness(live_tx),
            sm,
            shared: Arc::new(RwLock::new(data)),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            snapshot_write: Arc::new(Mutex::new(stats)),
        };
        Ok((
            Self {
                log: log_store,
                state_machine,
                released: StoreReleased(live_rx),
                engine,
            },
            recorded,
        ))
    }
}

impl Store<SledEngine> {
    /// Opens (or creates) the data dir at `path` for `cluster_name` / `node_id`.
    ///
    /// On first open it records the identity; later opens check it.
    pub fn open(path: &Path, cluster_name: &str, node_id: NodeId) -> Result<Self, OpenError> {
        if cluster_name.is_empty() {
            return Err(OpenError::InvalidConfig("cluster_name is empty".into()));
        }
        let engine = SledEngine::open(path)?;
        let (store, recorded) = Self::load(engine, cluster_name, node_id)?;
        if recorded {
            store
                .engine
                .flush_blocking()
                .map_err(|e| engine_open_err(path, e))?;
        }
        Ok(store)
    }

    /// [`SledStore::open`], retrying for up to `lock_wait` while the data dir is locked
    /// (see [`SledEngine::open_waiting`]).
    pub async fn open_waiting(
        path: &Path,
        cluster_name: &str,
        node_id: NodeId,
        lock_wait: std::time::Duration,
    ) -> Result<Self, OpenError> {
        if cluster_name.is_empty() {
            return Err(OpenError::InvalidConfig("cluster_name is empty".into()));
        }
        let engine = SledEngine::open_waiting(path, lock_wait).await?;
        Self::open_on(engine, cluster_name, node_id).await
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.engine.path()
    }

    /// The sled handle (kept to flush at shutdown).
    pub fn db(&self) -> &sled::Db {
        self.engine.db()
    }
}

// ---------------------------------------------------------------------------------------------
// Log

/// The Raft log and vote on a storage engine. Cheap to clone (handles to the same trees).
#[derive(Clone)]
pub struct LogStore<E: StorageEngine = SledEngine> {
    engine: E,
    _live: Liveness,
    log: E::Tree,
    meta: E::Tree,
}

impl<E: StorageEngine> Debug for LogStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl<E: StorageEngine> LogStore<E> {
    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let subject = ErrorSubject::Store;
        let raw = self
            .meta
            .get(key)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?;
        match raw {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|e| io_err(subject, ErrorVerb::Read, &e)),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = encode(value).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        self.meta
            .insert(key, &bytes)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.engine
            .flush()
            .await
            .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            None => Ok(None),
            Some((_, v)) => {
                let entry: Entry = decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Removes every log entry whose key lies in `(start, end)`, in one batch.
    fn remove_range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        for (k, _) in self
            .log
            .range(start, end)
            .map_err(|e| StorageIOError::write_logs(&e))?
        {
            batch.remove(k);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

fn range_keys<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, Bound<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Bound::Included(*e),
        Bound::Excluded(e) => Bound::Excluded(*e),
        Bound::Unbounded => Bound::Unbounded,
    };
    Some((start, end))
}

impl<E: StorageEngine> RaftLogReader<TypeConfig> for LogStore<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((start, end)) = range_keys(&range) else {
            return Ok(Vec::new());
        };
        let start = start.to_be_bytes();
        let end = end.map(u64::to_be_bytes);
        let pairs = self
            .log
            .range(Bound::Included(&start[..]), end.as_ref().map(|e| &e[..]))
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let mut out = Vec::with_capacity(pairs.len());
        for (_, v) in pairs {
            let entry: Entry = decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl<E: StorageEngine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = LogStore<E>;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(KEY_LAST_PURGED)?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore<E> {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Flushed before openraft applies (and so acknowledges) anything up to it. A leader
        // that restarts still leading its term (after every node lost power) serves reads from
        // `max(its first entry of the term, committed)`; were the committed index lost in the
        // crash, a read right after could miss a write acknowledged before it
        // (`quire-sim run --seed 20 --nodes 3 --duration 30` found this).
        self.write_meta(KEY_COMMITTED, &committed)?;
        self.flush(ErrorSubject::Store).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            batch.insert(entry.log_id.index.to_be_bytes(), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // Acknowledge only once the entries are durable.
        match self.engine.flush().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index.to_be_bytes();
        self.remove_range(Bound::Included(&from[..]), Bound::Unbounded)?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first, so a crash mid-purge never shows a log with a hole.
        self.write_meta(KEY_LAST_PURGED, &log_id)?;
        self.flush(ErrorSubject::Logs).await?;
        let upto = log_id.index.to_be_bytes();
        self.remove_range(Bound::Unbounded, Bound::Included(&upto[..]))?;
        self.flush(ErrorSubject::Logs).await
    }
}

// ---------------------------------------------------------------------------------------------
// State machine

/// The applied state and what openraft needs to know about it.
#[derive(Debug, Clone, Default)]
pub struct SmData {
    /// Last log id applied.
    pub last_applied: Option<LogId>,
    /// Last membership applied.
    pub last_membership: StoredMembership,
    /// The replicated state.
    pub state: State,
}

/// Read access to the applied state, shared between the state machine and its readers.
#[derive(Debug, Clone)]
pub struct SharedState(Arc<RwLock<SmData>>);

impl SharedState {
    fn read(&self) -> RwLockReadGuard<'_, SmData> {
        // A panic while holding the lock is a programmer error; the data is still whole
        // because apply mutates only after all its checks pass.
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the applied state (under a read lock: keep it short).
    pub fn with<R>(&self, f: impl FnOnce(&SmData) -> R) -> R {
        f(&self.read())
    }
}

/// The state machine: in memory, with snapshots persisted on the engine.
#[derive(Clone)]
pub struct StateMachineStore<E: StorageEngine = SledEngine> {
    engine: E,
    _live: Liveness,
    sm: E::Tree,
    shared: Arc<RwLock<SmData>>,
    snapshot_seq: Arc<AtomicU64>,
    /// Serialises the read-compare-write of the stored snapshot, and holds what is known of
    /// the one stored.
    snapshot_write: Arc<Mutex<SnapshotStats>>,
}

impl<E: StorageEngine> Debug for StateMachineStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").finish_non_exhaustive()
    }
}

impl<E: StorageEngine> StateMachineStore<E> {
    /// A read handle on the applied state.
    pub fn shared(&self) -> SharedState {
        SharedState(self.shared.clone())
    }

    /// A read handle on what is known of the latest snapshot.
    pub fn snapshot_stats(&self) -> SnapshotStatsHandle {
        SnapshotStatsHandle(self.snapshot_write.clone())
    }

    /// Stores `meta`/`data` as the current snapshot unless a newer one is stored already
    /// (a snapshot build and a snapshot install may race), then flushes.
    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let record = encode_snapshot(meta, data)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let new_last = meta.last_log_id;
        {
            // No await inside: the guard is a plain mutex held for a read and a write.
            let mut stats = self
                .snapshot_write
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let current = self
                .sm
                .get(KEY_SNAPSHOT)
                .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
            let newer_stored = current
                .as_deref()
                .and_then(|c| decode_snapshot(c).ok())
                .is_some_and(|(m, _)| m.last_log_id > new_last);
            if !newer_stored {
                self.sm
                    .insert(KEY_SNAPSHOT, &record)
                    .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
                stats.bytes = data.len() as u64;
                stats.last_index = new_last.map(|l| l.index);
            }
        }
        self.engine
            .flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(())
    }
}

impl<E: StorageEngine> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<E> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Clone under the read lock, serialise and write outside it: applies keep going.
        let (last_applied, last_membership, state) = {
            let shared = SharedState(self.shared.clone());
            let guard = shared.read();
            (
                guard.last_applied,
                guard.last_membership.clone(),
                guard.state.clone(),
            )
        };
        let data = encode(&state).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let seq = self.snapshot_seq.fetch_add(1, Ordering::SeqCst);
        let snapshot_id = match &last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        self.persist_snapshot(&meta, &data).await?;
        self.snapshot_write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .built += 1;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<E: StorageEngine> RaftStateMachine<TypeConfig> for StateMachineStore<E> {
    type SnapshotBuilder = StateMachineStore<E>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let shared = SharedState(self.shared.clone());
        let guard = shared.read();
        Ok((guard.last_applied, guard.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let shared = SharedState(self.shared.clone());
        let mut guard = shared.write();
        let mut out = Vec::new();
        for entry in entries {
            guard.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Ok(CommandOutput::Done),
                EntryPayload::Normal(cmd) => apply_at(&mut guard.state, entry.log_id.index, &cmd),
                EntryPayload::Membership(m) => {
                    guard.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(CommandOutput::Done)
                }
            };
            out.push(CommandResponse(response));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore<E> {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let data = snapshot.into_inner();
        if data.len() > MAX_SNAPSHOT_BYTES {
            return Err(StorageIOError::read_snapshot(
                sig,
                AnyError::error(format!(
                    "snapshot is {} bytes, more than the limit of {MAX_SNAPSHOT_BYTES}",
                    data.len()
                )),
            )
            .into());
        }
        let state: State = decode(&data).map_err(|e| StorageIOError::read_snapshot(sig, &e))?;
        self.persist_snapshot(meta, &data).await?;
        let shared = SharedState(self.shared.clone());
        let mut guard = shared.write();
        guard.last_applied = meta.last_log_id;
        guard.last_membership = meta.last_membership.clone();
        guard.state = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(record) = self
            .sm
            .get(KEY_SNAPSHOT)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        let (meta, data) = decode_snapshot(&record)
            .map_err(|e| StorageIOError::read_snapshot(None, &SnapshotDecodeError(e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}
