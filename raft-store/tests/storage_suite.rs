//! openraft's own storage test suite against the RocksDB store.

use floe_raft_store::{open, LogStore, StateMachineStore, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (log_store, state_machine, _reader) = open(dir.path()).expect("open store");
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(error) = Suite::test_all(RocksBuilder) {
        panic!("storage suite failed: {error}");
    }
}
