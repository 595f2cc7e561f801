//! openraft's storage on one RocksDB database with three column families:
//!
//! - `logs`: Raft log entries (JSON) keyed by big-endian index;
//! - `meta`: vote, committed and last-purged log ids, and the current snapshot;
//! - `state`: the state machine tables (see `keys.rs`) plus the last applied
//!   log id and membership, written in the same batch as the data.
//!
//! Durability: an append and a vote are synced before they are acknowledged.
//! Applies are not synced (the log can replay them), except that a snapshot
//! first syncs the WAL, so the state machine on disk is never behind a
//! snapshot whose logs have been purged.
//!
//! RocksDB calls block; the ones that wait for an fsync run on
//! `spawn_blocking` so that they do not stall the Raft core's executor thread.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::command::{CommandResult, Response};
use crate::state_machine::kv::{KvRead, Overlay, Pairs};
use crate::{codec, keys, state_machine, NodeId, StoreError, TypeConfig};

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
    Ok((
        LogStore { db: db.clone() },
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

// ---------------------------------------------------------------- log store

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    fn get_meta<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_cf(cf(&self.db, CF_META), key)? {
            None => Ok(None),
            Some(bytes) => from_json(key, &bytes).map(Some),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let from = keys::log_index(start);
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(read_err)?;
            let index = keys::parse_log_index(&key).ok_or_else(|| read_err(StoreError::corrupt(&key, "log key")))?;
            if !range.contains(&index) {
                break;
            }
            entries.push(from_json(&key, &value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(keys::LAST_PURGED).map_err(read_err)?;
        let last = self.db.iterator_cf(cf(&self.db, CF_LOGS), IteratorMode::End).next();
        let last_log_id = match last {
            None => last_purged_log_id,
            Some(item) => {
                let (key, value) = item.map_err(read_err)?;
                let entry: Entry<TypeConfig> = from_json(&key, &value).map_err(read_err)?;
                Some(entry.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let bytes = to_json(vote).map_err(write_err)?;
        let db = self.db.clone();
        blocking(move || Ok(db.put_cf_opt(cf(&db, CF_META), keys::VOTE, bytes, &synced())?))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta(keys::VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not synced: losing it only makes a restart re-apply from the state machine's own mark.
        let bytes = to_json(&committed).map_err(write_err)?;
        self.db
            .put_cf(cf(&self.db, CF_META), keys::COMMITTED, bytes)
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>(keys::COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = to_json(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf(&self.db, CF_LOGS), keys::log_index(entry.log_id.index), bytes);
        }
        // openraft's core waits for this write anyway; blocking in place saves
        // two thread hand-offs per append on the write path's critical step.
        let result: Result<(), StoreError> = tokio::task::block_in_place(|| Ok(self.db.write_opt(batch, &synced())?));
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(
                cf(&db, CF_LOGS),
                keys::log_index(log_id.index),
                keys::log_index(u64::MAX),
            );
            Ok(db.write_opt(batch, &synced())?)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // The purge mark is written first: entries at or below it are ignored
        // from then on, so a crash between the two writes is harmless.
        let bytes = to_json(&log_id).map_err(write_err)?;
        let db = self.db.clone();
        blocking(move || {
            db.put_cf_opt(cf(&db, CF_META), keys::LAST_PURGED, bytes, &synced())?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf(&db, CF_LOGS), keys::log_index(0), keys::log_index(log_id.index + 1));
            Ok(db.write(batch)?)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

// ------------------------------------------------------ state machine store

/// Read-only access to the state machine tables, for the node's reads.
#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
}

impl KvRead for StateReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(cf(&self.db, CF_STATE), key)?)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let mut pairs = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_STATE), IteratorMode::From(prefix, Direction::Forward))
        {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            pairs.push((key.into_vec(), value.into_vec()));
        }
        Ok(pairs)
    }
}

impl StateReader {
    /// The first `limit` keys under `prefix`, in key order.
    pub fn first_keys(&self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_STATE), IteratorMode::From(prefix, Direction::Forward))
        {
            let (key, _) = item?;
            if !key.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            keys.push(key.into_vec());
        }
        Ok(keys)
    }
}

/// A snapshot as kept in the `meta` column family.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The snapshot payload: every pair of the `state` column family but Raft's own marks.
type SnapshotPairs = Pairs;

/// The last applied log id and membership, as the state machine recorded them.
type AppliedState = (Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>);

/// The state machine, persisted in the `state` column family.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
}

impl StateMachineStore {
    fn reader(&self) -> StateReader {
        StateReader { db: self.db.clone() }
    }

    fn applied_state_sync(&self) -> Result<AppliedState, StoreError> {
        let reader = self.reader();
        let last_applied = match reader.get(keys::LAST_APPLIED)? {
            Some(bytes) => from_json(keys::LAST_APPLIED, &bytes)?,
            None => None,
        };
        let membership = match reader.get(keys::LAST_MEMBERSHIP)? {
            Some(bytes) => from_json(keys::LAST_MEMBERSHIP, &bytes)?,
            None => StoredMembership::default(),
        };
        Ok((last_applied, membership))
    }

    fn current_snapshot_sync(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        match self.db.get_cf(cf(&self.db, CF_META), keys::SNAPSHOT)? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::corrupt(keys::SNAPSHOT, e)),
        }
    }

    fn save_snapshot_sync(&self, snapshot: &StoredSnapshot) -> Result<(), StoreError> {
        let bytes = codec::encode(snapshot).map_err(StoreError::Encode)?;
        Ok(self
            .db
            .put_cf_opt(cf(&self.db, CF_META), keys::SNAPSHOT, bytes, &synced())?)
    }

    fn build_snapshot_sync(&self) -> Result<StoredSnapshot, StoreError> {
        // Make every earlier apply durable: logs up to this snapshot may be purged next.
        self.db.flush_wal(true)?;
        let view = self.db.snapshot();
        let mut pairs: SnapshotPairs = Vec::new();
        let mut last_applied: Option<LogId<NodeId>> = None;
        let mut membership = StoredMembership::default();
        for item in view.iterator_cf(cf(&self.db, CF_STATE), IteratorMode::Start) {
            let (key, value) = item?;
            match &*key {
                k if k == keys::LAST_APPLIED => last_applied = from_json(k, &value)?,
                k if k == keys::LAST_MEMBERSHIP => membership = from_json(k, &value)?,
                _ => pairs.push((key.into_vec(), value.into_vec())),
            }
        }
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}", log_id.leader_id, log_id.index),
            None => "empty".to_string(),
        };
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            },
            data: codec::encode(&pairs).map_err(StoreError::Encode)?,
        };
        self.save_snapshot_sync(&snapshot)?;
        Ok(snapshot)
    }

    fn install_snapshot_sync(&self, snapshot: StoredSnapshot) -> Result<(), StoreError> {
        let pairs: SnapshotPairs = codec::decode(&snapshot.data).map_err(|e| StoreError::corrupt(keys::SNAPSHOT, e))?;
        let state = cf(&self.db, CF_STATE);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(state, [0u8].as_slice(), [0xffu8; 64].as_slice());
        for (key, value) in pairs {
            batch.put_cf(state, key, value);
        }
        batch.put_cf(state, keys::LAST_APPLIED, to_json(&snapshot.meta.last_log_id)?);
        batch.put_cf(state, keys::LAST_MEMBERSHIP, to_json(&snapshot.meta.last_membership)?);
        self.db.write_opt(batch, &synced())?;
        self.save_snapshot_sync(&snapshot)
    }

    /// Applies a batch of entries as one atomic RocksDB write.
    fn apply_sync(&self, entries: Vec<Entry<TypeConfig>>) -> Result<Vec<CommandResult>, StoreError> {
        let reader = self.reader();
        let mut batch_view = Overlay::new(&reader as &dyn KvRead);
        let mut responses = Vec::with_capacity(entries.len());
        let mut last_applied = None;
        for entry in entries {
            last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Ok(Response::None)),
                EntryPayload::Normal(command) => {
                    let (result, writes) = state_machine::apply(&batch_view, &command)?;
                    batch_view.extend(writes);
                    responses.push(result);
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership);
                    batch_view.put_json(keys::LAST_MEMBERSHIP.to_vec(), &stored)?;
                    responses.push(Ok(Response::None));
                }
            }
        }
        if let Some(log_id) = last_applied {
            batch_view.put_json(keys::LAST_APPLIED.to_vec(), &Some(log_id))?;
        }
        let state = cf(&self.db, CF_STATE);
        let mut batch = WriteBatch::default();
        for (key, value) in batch_view.into_writes() {
            match value {
                Some(value) => batch.put_cf(state, key, value),
                None => batch.delete_cf(state, key),
            }
        }
        self.db.write(batch)?;
        Ok(responses)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let this = self.clone();
        let stored = blocking(move || this.build_snapshot_sync())
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>)> {
        self.applied_state_sync()
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Not synced, so it does not wait on the disk: run it inline.
        let entries: Vec<_> = entries.into_iter().collect();
        self.apply_sync(entries)
            .map_err(|e| StorageIOError::write_state_machine(&e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let this = self.clone();
        blocking(move || this.install_snapshot_sync(stored))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = self
            .current_snapshot_sync()
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
