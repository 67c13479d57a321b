//! [`SledEngine`]: the production engine, one sled `Db` per data dir.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{EngineError, EngineTree, KvPair, StorageEngine, WriteBatch, range_is_empty};
use crate::store::OpenError;

/// Interval between attempts to take a locked data dir in [`SledEngine::open_waiting`].
pub const LOCK_RETRY_MS: u64 = 20;

/// sled under a data dir. Cheap to clone.
#[derive(Clone)]
pub struct SledEngine {
    db: sled::Db,
    path: PathBuf,
}

impl std::fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Maps a sled error met while opening `path` onto [`OpenError`].
pub(crate) fn sled_open_err(path: &Path, e: sled::Error) -> OpenError {
    match e {
        // sled reports a held lock only through its message.
        sled::Error::Io(source) if source.to_string().starts_with("could not acquire lock") => {
            OpenError::Locked(path.to_path_buf())
        }
        sled::Error::Io(source) => OpenError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => OpenError::Corrupt(path.to_path_buf(), other.to_string()),
    }
}

impl SledEngine {
    /// Opens (or creates) the sled database in the data dir at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        std::fs::create_dir_all(path).map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| sled_open_err(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }

    /// [`SledEngine::open`], retrying for up to `lock_wait` while the data dir is locked.
    ///
    /// sled releases its file lock from a background epoch collector a little after the last
    /// handle is dropped, so reopening a data dir in the same process (a restart in tests)
    /// can find it still locked for a moment. sled gives no notification, so this polls every
    /// [`LOCK_RETRY_MS`] until the deadline.
    pub async fn open_waiting(path: &Path, lock_wait: Duration) -> Result<Self, OpenError> {
        let deadline = tokio::time::Instant::now() + lock_wait;
        loop {
            match Self::open(path) {
                Err(OpenError::Locked(p)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(OpenError::Locked(p));
                    }
                    tokio::time::sleep(Duration::from_millis(LOCK_RETRY_MS)).await;
                }
                other => return other,
            }
        }
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sled handle.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Flushes synchronously (for callers outside an async context).
    pub fn flush_blocking(&self) -> Result<(), EngineError> {
        self.db.flush()?;
        Ok(())
    }
}

impl StorageEngine for SledEngine {
    type Tree = SledTree;

    fn open_tree(&self, name: &str) -> Result<SledTree, EngineError> {
        Ok(SledTree(self.db.open_tree(name)?))
    }

    async fn flush(&self) -> Result<(), EngineError> {
        self.db.flush_async().await?;
        Ok(())
    }

    fn location(&self) -> PathBuf {
        self.path.clone()
    }
}

/// One sled tree.
#[derive(Clone)]
pub struct SledTree(sled::Tree);

impl std::fmt::Debug for SledTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SledTree").finish_non_exhaustive()
    }
}

fn pair((k, v): (sled::IVec, sled::IVec)) -> KvPair {
    (k.to_vec(), v.to_vec())
}

impl EngineTree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        self.0.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), EngineError> {
        self.0.remove(key)?;
        Ok(())
    }

    fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Vec<KvPair>, EngineError> {
        if range_is_empty(start, end) {
            return Ok(Vec::new());
        }
        let bounds = (start.map(<[u8]>::to_vec), end.map(<[u8]>::to_vec));
        let mut out = Vec::new();
        for item in self.0.range::<Vec<u8>, _>(bounds) {
            out.push(pair(item?));
        }
        Ok(out)
    }

    fn first(&self) -> Result<Option<KvPair>, EngineError> {
        Ok(self.0.first()?.map(pair))
    }

    fn last(&self) -> Result<Option<KvPair>, EngineError> {
        Ok(self.0.last()?.map(pair))
    }

    fn apply_batch(&self, batch: WriteBatch) -> Result<(), EngineError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => sled_batch.insert(key, v),
                None => sled_batch.remove(key),
            }
        }
        self.0.apply_batch(sled_batch)?;
        Ok(())
    }
}
