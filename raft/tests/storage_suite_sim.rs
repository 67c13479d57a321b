//! openraft's storage test suite against the store on the simulated disk, a fresh disk per
//! case (the same suite `storage_suite.rs` runs on sled).

#![allow(clippy::unwrap_used, clippy::result_large_err, reason = "tests")]

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use quire_raft::TypeConfig;
use quire_raft::engine::{SimDisk, SimEngine};
use quire_raft::store::{LogStore, StateMachineStore, Store};

struct SimBuilder;

impl StoreBuilder<TypeConfig, LogStore<SimEngine>, StateMachineStore<SimEngine>, SimDisk>
    for SimBuilder
{
    async fn build(
        &self,
    ) -> Result<(SimDisk, LogStore<SimEngine>, StateMachineStore<SimEngine>), StorageError<u64>>
    {
        let disk = SimDisk::new(0x5eed);
        let store = Store::open_on(disk.open(), "suite", 0)
            .await
            .expect("open store on a fresh simulated disk");
        let Store {
            log, state_machine, ..
        } = store;
        Ok((disk, log, state_machine))
    }
}

#[test]
fn openraft_storage_suite_on_sim_engine() -> Result<(), StorageError<u64>> {
    Suite::test_all(SimBuilder)
}
