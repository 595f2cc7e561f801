//! openraft's storage on one RocksDB database with three column families:
//!
//! - `logs`: Raft log entries (JSON) keyed by big-endian index;
//! - `meta`: vote, committed and last-purged log ids, and the current snapshot;
//! - `state`: the state machine tables (see `keys.rs`) plus the last applied
//!   log id and membership, written in the same batch as the data.
//!
//! Durability: an append and a vote are synced before they are acknowledged.
//! A leader's append (`append_as_leader`, see `vendor/openraft/FLOE-PATCH.md`)
//! is written to RocksDB at once — readable, so the leader replicates it while
//! it goes to disk — and synced by the log syncer thread, which then calls
//! openraft's flush callback; appends that wait together share one fsync.
//! A follower's append is synced in place, since its Raft core waits for it.
//! All column families share one write-ahead log, so the disk never holds an
//! apply without the log entries before it.
//! Applies are not synced (the log can replay them), except that a snapshot
//! first syncs the WAL, so the state machine on disk is never behind a
//! snapshot whose logs have been purged.
//!
//! The newest entries are also kept decoded in memory (`RecentEntries`):
//! each one is read back right after it is appended, to replicate and apply.
//!
//! RocksDB calls block. A follower's synced append blocks the runtime worker
//! that runs the Raft core, which waits for it anyway (a hand-off to another
//! thread and back cost more than the wait, measured). Other writes that
//! wait for an fsync run on `spawn_blocking` or the syncer thread.

use std::path::Path;
use std::sync::Arc;

use openraft::{StorageError, StorageIOError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteOptions, DB};
use serde::{Deserialize, Serialize};

mod log;
mod state;

pub use log::LogStore;
use log::LogSyncer;
pub use state::{StateMachineStore, StateReader};

use crate::{NodeId, StoreError};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_STATE: &str = "state";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Opens (or creates) the store in `path`.
pub fn open(path: &Path) -> Result<(LogStore, StateMachineStore, StateReader), StoreError> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families = [CF_LOGS, CF_META, CF_STATE].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&options, path, families)?);
    let syncer = Arc::new(LogSyncer::start(db.clone())?);
    Ok((
        LogStore {
            db: db.clone(),
            syncer,
            recent: Default::default(),
        },
        StateMachineStore { db: db.clone() },
        StateReader { db },
    ))
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).expect("column families are created in open()")
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(key, e))
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(&e).into()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Encode(format!("storage task failed: {e}")))?
}
