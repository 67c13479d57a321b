//! openraft's storage test suite against the sled store, a fresh temp dir per case.

#![allow(clippy::unwrap_used, clippy::result_large_err, reason = "tests")]

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use quire_raft::TypeConfig;
use quire_raft::store::{LogStore, SledStore, StateMachineStore};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = TempDir::new().expect("temp dir");
        let store = SledStore::open(dir.path(), "suite", 0).expect("open sled store");
        let SledStore {
            log, state_machine, ..
        } = store;
        Ok((dir, log, state_machine))
    }
}

#[test]
fn openraft_storage_suite_on_sled() -> Result<(), StorageError<u64>> {
    Suite::test_all(SledBuilder)
}
