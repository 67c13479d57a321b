//! The storage engine boundary (in the style of TiKV's `engine_traits`): a small key-value
//! trait with named trees, which the Raft log store and the state-machine store are written
//! against, and its two implementations beside it:
//!
//! - [`SledEngine`]: production, on sled (one `Db` per data dir, one sled tree per named
//!   tree; `flush` is sled's `flush_async`, an fsync). sled starts its own threads and reads
//!   the real clock, which is fine in production and why the simulator does not use it.
//! - [`SimEngine`]: in memory and deterministic, for the simulator. Every write lands in a
//!   volatile layer first and only [`StorageEngine::flush`] makes it durable; a crash
//!   discards what was not flushed (optionally keeping a torn prefix), and read/write errors
//!   can be injected from a seeded RNG. The durable bytes live in a [`SimDisk`] that outlives
//!   a node's crash, so a node can be restarted on the same disk.
//!
//! Contract every engine keeps: reads see every write made through any handle of the same
//! engine, in order; a [`WriteBatch`] applies atomically (all or nothing, also across a
//! crash); once `flush` returns `Ok`, every write made before the call survives a crash;
//! writes made after the last successful flush may be lost in a crash, but only as a suffix
//! (what survives is a prefix of the writes in the order they were made).

use std::future::Future;
use std::ops::Bound;
use std::path::PathBuf;
use std::pin::Pin;

mod sim;
mod sled_engine;

pub use sim::{MAX_UNFLUSHED_WRITES, SimDisk, SimDiskStats, SimEngine, SimFaults, SimTree};
pub(crate) use sled_engine::sled_open_err;
pub use sled_engine::{LOCK_RETRY_MS, SledEngine, SledTree};

/// A key-value pair as read from a tree.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// A storage engine failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// sled reported an error.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A read failed (injected by the simulated disk's fault plan).
    #[error("simulated disk: injected read error on tree {tree:?}")]
    InjectedRead {
        /// The tree read.
        tree: String,
    },
    /// A write or flush failed (injected by the simulated disk's fault plan); nothing changed.
    #[error("simulated disk: injected write error on {target}; nothing was written")]
    InjectedWrite {
        /// The tree written, or `flush`.
        target: String,
    },
    /// The handle belongs to an incarnation of the node that has crashed: a dead process
    /// cannot touch the disk any more. Reopen the disk to get a live handle.
    #[error("simulated disk: this engine handle belongs to a crashed node; reopen the disk")]
    Crashed,
    /// Too many writes are waiting for a flush.
    #[error("simulated disk: {limit} writes are waiting for a flush; flush before writing more")]
    TooManyUnflushed {
        /// The bound, [`MAX_UNFLUSHED_WRITES`].
        limit: usize,
    },
}

/// An ordered list of inserts and removes on one tree, applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations in order: `(key, Some(value))` inserts, `(key, None)` removes.
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }

    pub(crate) fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// A storage engine: a set of named trees sharing one durability point.
///
/// Handles are cheap to clone and all clones see the same data.
pub trait StorageEngine: Clone + Send + Sync + 'static {
    /// A handle on one named tree.
    type Tree: EngineTree;

    /// Opens (creating if needed) the tree called `name`.
    fn open_tree(&self, name: &str) -> Result<Self::Tree, EngineError>;

    /// Makes every write made so far (on every tree) durable. The durability point: a
    /// caller acknowledges a write only after a `flush` that started after it returned `Ok`.
    fn flush(&self) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Where the data lives, for error messages (a data dir, or a simulated disk's label).
    fn location(&self) -> PathBuf;
}

/// One named tree: ordered keys (bytewise) to values.
pub trait EngineTree: Clone + Send + Sync + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Sets `key` to `value`.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError>;

    /// Removes `key` (no error if absent).
    fn remove(&self, key: &[u8]) -> Result<(), EngineError>;

    /// The pairs whose keys lie between `start` and `end`, in key order. An empty or
    /// inverted range yields nothing.
    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Vec<KvPair>, EngineError>;

    /// The pair with the smallest key.
    fn first(&self) -> Result<Option<KvPair>, EngineError>;

    /// The pair with the largest key.
    fn last(&self) -> Result<Option<KvPair>, EngineError>;

    /// Applies `batch` atomically.
    fn apply_batch(&self, batch: WriteBatch) -> Result<(), EngineError>;
}

/// Whether `(start, end)` selects nothing (inverted, or empty with an excluded end).
pub(crate) fn range_is_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
    }
}

/// A type-erased engine, for holders that only need to flush it (the control plane keeps
/// one to flush at shutdown without being generic over the engine).
pub(crate) trait FlushHandle: Send + Sync {
    fn flush_boxed(&self) -> Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send + '_>>;
}

impl<E: StorageEngine> FlushHandle for E {
    fn flush_boxed(&self) -> Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send + '_>> {
        Box::pin(self.flush())
    }
}
