//! [`SimEngine`] and [`SimDisk`]: an in-memory, deterministic engine with crash semantics,
//! for the simulator.
//!
//! A [`SimDisk`] holds two layers: the durable trees, and the writes made since the last
//! flush (in order, each insert, remove or batch one unit). Reads see both. `flush` covers
//! the writes made before it was called: it yields (or sleeps the configured simulated
//! latency), then moves them into the durable layer; a crash throws pending writes away, or
//! with torn writes on, keeps a prefix of them (drawn from the disk's seeded RNG) — a batch
//! is never split. A flush interrupted by a crash returns [`EngineError::Crashed`].
//!
//! Each [`SimDisk::open`] starts a new incarnation of the node on the disk: it crashes the
//! previous one (so its handles fail with [`EngineError::Crashed`], the way a dead process
//! cannot write) and returns a fresh [`SimEngine`]. Nothing here reads a clock, spawns a
//! task or draws from an unseeded RNG.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{EngineError, EngineTree, KvPair, StorageEngine, WriteBatch, range_is_empty};

/// Most writes a simulated disk holds unflushed; more fail with
/// [`EngineError::TooManyUnflushed`].
pub const MAX_UNFLUSHED_WRITES: usize = 100_000;

/// Faults a [`SimDisk`] injects, drawn from its seeded RNG. Change them at any time with
/// [`SimDisk::set_faults`]. Probabilities are per operation; at or below 0 never, at or
/// above 1 always.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimFaults {
    /// At a crash, keep a random prefix (possibly empty, possibly all) of the unflushed
    /// writes instead of none.
    pub torn_writes: bool,
    /// Chance that a read (`get`, `range`, `first`, `last`) fails.
    pub read_error_probability: f64,
    /// Chance that a write (`insert`, `remove`, `apply_batch`) or a `flush` fails, changing
    /// nothing.
    pub write_error_probability: f64,
}

/// Counters of what a [`SimDisk`] did, for the simulator's reports and checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    /// Writes accepted (insert, remove or batch, each one).
    pub writes: u64,
    /// Flushes that succeeded.
    pub flushes: u64,
    /// Crashes (explicit, or implied by reopening).
    pub crashes: u64,
    /// Unflushed writes thrown away by crashes.
    pub writes_lost: u64,
    /// Unflushed writes kept by torn crashes.
    pub writes_kept_torn: u64,
    /// Injected read errors.
    pub read_errors: u64,
    /// Injected write and flush errors.
    pub write_errors: u64,
}

type Trees = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Debug)]
struct PendingWrite {
    /// Order of the write on this disk (set when accepted).
    seq: u64,
    tree: String,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn apply_ops(trees: &mut Trees, write: &PendingWrite) {
    let tree = trees.entry(write.tree.clone()).or_default();
    for (key, value) in &write.ops {
        match value {
            Some(v) => {
                tree.insert(key.clone(), v.clone());
            }
            None => {
                tree.remove(key);
            }
        }
    }
}

#[derive(Debug)]
struct DiskState {
    label: String,
    durable: Trees,
    /// `durable` with `pending` applied: what reads see.
    live: Trees,
    pending: VecDeque<PendingWrite>,
    /// Sequence number of the next accepted write.
    next_seq: u64,
    /// With the planted bug on: writes before this sequence number were acknowledged by the
    /// previous flush without being made durable.
    acked_mark: u64,
    /// How long a flush takes (simulated time); zero still yields once.
    flush_latency: Duration,
    generation: u64,
    /// Whether an engine handle of the current generation exists (opened, not crashed).
    alive: bool,
    faults: SimFaults,
    rng: ChaCha8Rng,
    bug_ack_before_flush: bool,
    stats: SimDiskStats,
}

impl DiskState {
    fn check(&self, generation: u64) -> Result<(), EngineError> {
        if generation == self.generation {
            Ok(())
        } else {
            Err(EngineError::Crashed)
        }
    }

    fn draw(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.rng.random::<f64>() < probability
    }

    fn before_read(&mut self, generation: u64, tree: &str) -> Result<(), EngineError> {
        self.check(generation)?;
        if self.draw(self.faults.read_error_probability) {
            self.stats.read_errors += 1;
            return Err(EngineError::InjectedRead {
                tree: tree.to_string(),
            });
        }
        Ok(())
    }

    fn write(&mut self, generation: u64, mut write: PendingWrite) -> Result<(), EngineError> {
        self.check(generation)?;
        if self.pending.len() >= MAX_UNFLUSHED_WRITES {
            return Err(EngineError::TooManyUnflushed {
                limit: MAX_UNFLUSHED_WRITES,
            });
        }
        if self.draw(self.faults.write_error_probability) {
            self.stats.write_errors += 1;
            return Err(EngineError::InjectedWrite { target: write.tree });
        }
        apply_ops(&mut self.live, &write);
        write.seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(write);
        self.stats.writes += 1;
        Ok(())
    }

    /// Starts a flush: returns the sequence number it covers (every write before it).
    fn begin_flush(&mut self, generation: u64) -> Result<u64, EngineError> {
        self.check(generation)?;
        Ok(self.next_seq)
    }

    /// Completes a flush that covers the writes before `mark`.
    fn complete_flush(&mut self, generation: u64, mark: u64) -> Result<(), EngineError> {
        self.check(generation)?;
        if self.draw(self.faults.write_error_probability) {
            self.stats.write_errors += 1;
            return Err(EngineError::InjectedWrite {
                target: "flush".into(),
            });
        }
        // With the planted bug, a flush acknowledges its writes without persisting them: they
        // stay volatile until a flush after the bug is turned off, and a crash loses them.
        let persist_before = if self.bug_ack_before_flush { 0 } else { mark };
        while self.pending.front().is_some_and(|w| w.seq < persist_before) {
            if let Some(write) = self.pending.pop_front() {
                apply_ops(&mut self.durable, &write);
            }
        }
        self.acked_mark = self.acked_mark.max(mark);
        self.stats.flushes += 1;
        Ok(())
    }

    fn crash(&mut self) {
        if !self.alive {
            // No live incarnation: nothing can have been written since the last crash.
            return;
        }
        let unflushed = self.pending.len();
        let keep = if self.faults.torn_writes && unflushed > 0 {
            self.rng.random_range(0..=unflushed)
        } else {
            0
        };
        for write in self.pending.drain(..keep) {
            apply_ops(&mut self.durable, &write);
        }
        self.pending.clear();
        self.live = self.durable.clone();
        self.generation += 1;
        self.alive = false;
        self.stats.crashes += 1;
        self.stats.writes_kept_torn += keep as u64;
        self.stats.writes_lost += (unflushed - keep) as u64;
    }
}

/// A simulated disk: the durable bytes of one node, which outlive the node's crashes.
/// Cheap to clone; clones are the same disk.
#[derive(Clone)]
pub struct SimDisk(Arc<Mutex<DiskState>>);

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("SimDisk")
            .field("label", &s.label)
            .field("generation", &s.generation)
            .field("unflushed", &s.pending.len())
            .finish_non_exhaustive()
    }
}

impl SimDisk {
    /// An empty disk whose faults are drawn from an RNG seeded with `seed`. No faults are on
    /// until [`SimDisk::set_faults`].
    pub fn new(seed: u64) -> Self {
        Self::with_label(seed, "simdisk")
    }

    /// [`SimDisk::new`] with a label used in error messages (e.g. `"node-3"`).
    pub fn with_label(seed: u64, label: impl Into<String>) -> Self {
        Self(Arc::new(Mutex::new(DiskState {
            label: label.into(),
            durable: Trees::new(),
            live: Trees::new(),
            pending: VecDeque::new(),
            next_seq: 0,
            acked_mark: 0,
            flush_latency: Duration::ZERO,
            generation: 0,
            alive: false,
            faults: SimFaults::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            bug_ack_before_flush: false,
            stats: SimDiskStats::default(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // Nothing panics while holding the lock; if something did, the maps are still whole
        // (each operation mutates only after its checks).
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a new incarnation of the node on this disk: crashes the previous one (its
    /// unflushed writes are lost, or torn, and its handles fail from now on) and returns a
    /// live engine. On a fresh disk nothing is lost.
    pub fn open(&self) -> SimEngine {
        let mut s = self.lock();
        s.crash();
        s.generation += 1;
        s.alive = true;
        SimEngine {
            disk: self.clone(),
            generation: s.generation,
        }
    }

    /// Crashes the node using this disk: unflushed writes are lost (with torn writes on, a
    /// random prefix of them survives) and every engine handle opened so far fails with
    /// [`EngineError::Crashed`]. Reopen with [`SimDisk::open`].
    pub fn crash(&self) {
        self.lock().crash();
    }

    /// Sets the faults injected from now on.
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// The faults currently injected.
    pub fn faults(&self) -> SimFaults {
        self.lock().faults
    }

    /// **Planted bug, for the simulator's checkers only.** When on, `flush` returns `Ok`
    /// without making the writes it covers durable: they become durable only at a flush after
    /// the bug is turned off, so a crash meanwhile loses writes that were acknowledged. Never turn this on outside a test of
    /// the checkers.
    pub fn set_bug_ack_before_flush(&self, on: bool) {
        self.lock().bug_ack_before_flush = on;
    }

    /// Sets how long each flush takes, in simulated (tokio) time. At zero (the default) a
    /// flush still yields once before completing, so a crash can land between a write and
    /// the flush that would make it durable.
    pub fn set_flush_latency(&self, latency: Duration) {
        self.lock().flush_latency = latency;
    }

    /// Whether the planted bug is on.
    pub fn bug_ack_before_flush(&self) -> bool {
        self.lock().bug_ack_before_flush
    }

    /// What the disk did so far.
    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// Writes not yet durable.
    pub fn unflushed_writes(&self) -> usize {
        self.lock().pending.len()
    }

    /// The durable value at `tree`/`key` (what would survive a crash now, torn writes aside).
    pub fn durable_get(&self, tree: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.lock()
            .durable
            .get(tree)
            .and_then(|t| t.get(key).cloned())
    }

    /// The disk's label.
    pub fn label(&self) -> String {
        self.lock().label.clone()
    }
}

/// One incarnation's handle on a [`SimDisk`]. Cheap to clone; clones are the same
/// incarnation. After the disk crashes (or is reopened), every call fails with
/// [`EngineError::Crashed`].
#[derive(Clone)]
pub struct SimEngine {
    disk: SimDisk,
    generation: u64,
}

impl std::fmt::Debug for SimEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimEngine")
            .field("disk", &self.disk)
            .field("generation", &self.generation)
            .finish()
    }
}

impl SimEngine {
    /// A fresh disk seeded with `seed`, opened. Keep [`SimEngine::disk`] to restart on it.
    pub fn new(seed: u64) -> Self {
        SimDisk::new(seed).open()
    }

    /// The disk under this engine (outlives the engine; reopen it after a crash).
    pub fn disk(&self) -> SimDisk {
        self.disk.clone()
    }

    /// Crashes the disk under this engine (see [`SimDisk::crash`]).
    pub fn crash(&self) {
        self.disk.crash();
    }

    /// Sets the disk's faults (see [`SimDisk::set_faults`]).
    pub fn set_faults(&self, faults: SimFaults) {
        self.disk.set_faults(faults);
    }

    /// **Planted bug, for the simulator's checkers only** (see
    /// [`SimDisk::set_bug_ack_before_flush`]).
    pub fn set_bug_ack_before_flush(&self, on: bool) {
        self.disk.set_bug_ack_before_flush(on);
    }

    /// Whether this handle's incarnation is still alive.
    pub fn is_alive(&self) -> bool {
        self.disk.lock().generation == self.generation
    }
}

impl StorageEngine for SimEngine {
    type Tree = SimTree;

    fn open_tree(&self, name: &str) -> Result<SimTree, EngineError> {
        self.disk.lock().check(self.generation)?;
        Ok(SimTree {
            engine: self.clone(),
            name: Arc::from(name),
        })
    }

    async fn flush(&self) -> Result<(), EngineError> {
        let (mark, latency) = {
            let mut s = self.disk.lock();
            (s.begin_flush(self.generation)?, s.flush_latency)
        };
        // The flush is in progress: other tasks run, and the node may crash meanwhile (then
        // nothing more becomes durable and this returns `Crashed`).
        if latency.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(latency).await;
        }
        self.disk.lock().complete_flush(self.generation, mark)
    }

    fn location(&self) -> PathBuf {
        PathBuf::from(format!("sim:{}", self.disk.label()))
    }
}

/// One tree of a [`SimEngine`].
#[derive(Clone)]
pub struct SimTree {
    engine: SimEngine,
    name: Arc<str>,
}

impl std::fmt::Debug for SimTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTree")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SimTree {
    fn read<R>(
        &self,
        f: impl FnOnce(Option<&BTreeMap<Vec<u8>, Vec<u8>>>) -> R,
    ) -> Result<R, EngineError> {
        let mut s = self.engine.disk.lock();
        s.before_read(self.engine.generation, &self.name)?;
        Ok(f(s.live.get(&*self.name)))
    }

    fn write(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), EngineError> {
        self.engine.disk.lock().write(
            self.engine.generation,
            PendingWrite {
                seq: 0,
                tree: self.name.to_string(),
                ops,
            },
        )
    }
}

impl EngineTree for SimTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.read(|t| t.and_then(|t| t.get(key).cloned()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        self.write(vec![(key.to_vec(), Some(value.to_vec()))])
    }

    fn remove(&self, key: &[u8]) -> Result<(), EngineError> {
        self.write(vec![(key.to_vec(), None)])
    }

    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Vec<KvPair>, EngineError> {
        let empty = range_is_empty(start, end);
        self.read(|t| match t {
            Some(t) if !empty => t
                .range::<[u8], _>((start, end))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => Vec::new(),
        })
    }

    fn first(&self) -> Result<Option<KvPair>, EngineError> {
        self.read(|t| {
            t.and_then(|t| t.first_key_value())
                .map(|(k, v)| (k.clone(), v.clone()))
        })
    }

    fn last(&self) -> Result<Option<KvPair>, EngineError> {
        self.read(|t| {
            t.and_then(|t| t.last_key_value())
                .map(|(k, v)| (k.clone(), v.clone()))
        })
    }

    fn apply_batch(&self, batch: WriteBatch) -> Result<(), EngineError> {
        self.write(batch.into_ops())
    }
}
