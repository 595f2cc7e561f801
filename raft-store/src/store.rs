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

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// Entries just written, with their encoded sizes (for `RecentEntries`).
type Appended = Vec<(Entry<TypeConfig>, usize)>;

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

// ---------------------------------------------------------------- log store

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: Arc<LogSyncer>,
    /// Shared by every clone (openraft's log readers are clones).
    recent: Arc<Mutex<RecentEntries>>,
}

/// The newest log entries, decoded, in memory.
///
/// Each entry is read back right after it is appended: on the leader once
/// per follower to replicate it and once to apply it, on a follower once to
/// apply it. Serving those reads from here saves a RocksDB iterator and a
/// JSON decode on the write path. It always mirrors the tail of the log:
/// appends extend it, truncation and purging cut it before the disk is
/// changed, and a gap (an append that does not follow on) empties it.
#[derive(Default)]
struct RecentEntries {
    /// Each entry with its encoded size.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    /// The sum of those sizes.
    bytes: usize,
}

impl RecentEntries {
    /// At most this many entries…
    const MAX_ENTRIES: usize = 1024;
    /// …and this many encoded bytes (event payloads can be large).
    const MAX_BYTES: usize = 8 << 20;

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(entry, _)| entry.log_id.index)
    }

    fn push(&mut self, entry: Entry<TypeConfig>, size: usize) {
        if self.last_index().is_some_and(|last| last + 1 != entry.log_id.index) {
            self.truncate_from(0);
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > Self::MAX_ENTRIES || self.bytes > Self::MAX_BYTES {
            self.purge_upto(self.first_index().unwrap_or(0));
        }
    }

    /// Forgets entries from `index` on.
    fn truncate_from(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            self.bytes -= self.entries.pop_back().map_or(0, |(_, size)| size);
        }
    }

    /// Forgets entries up to `index`, inclusive.
    fn purge_upto(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.bytes -= self.entries.pop_front().map_or(0, |(_, size)| size);
        }
    }

    /// Entries `start..end`, if all of them are here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let (first, last) = (self.first_index()?, self.last_index()?);
        if start < first || end > last + 1 || start >= end {
            return None;
        }
        let skip = (start - first) as usize;
        let entries = self.entries.range(skip..skip + (end - start) as usize);
        Some(entries.map(|(entry, _)| entry.clone()).collect())
    }
}

/// The thread that makes a leader's appended entries durable: it takes every
/// flush callback waiting, syncs the write-ahead log once, and answers them
/// all. Dropped with the last `LogStore`, it closes its queue and waits for
/// the thread to finish, so the thread never outlives the store (a RocksDB
/// handle released on a stray thread while the process exits aborts it).
struct LogSyncer {
    waiting: Option<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogSyncer {
    fn start(db: Arc<DB>) -> Result<LogSyncer, StoreError> {
        let (waiting, queue) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        let thread = std::thread::Builder::new()
            .name("floe-log-sync".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    // Every callback queued so far belongs to a write made
                    // before it was queued: one sync covers them all.
                    let callbacks: Vec<_> = std::iter::once(first).chain(queue.try_iter()).collect();
                    let synced = db.flush_wal(true);
                    for callback in callbacks {
                        let result = match &synced {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::other(format!("sync the raft log: {e}"))),
                        };
                        callback.log_io_completed(result);
                    }
                }
            })
            .map_err(|e| StoreError::Encode(format!("start the log syncer: {e}")))?;
        Ok(LogSyncer {
            waiting: Some(waiting),
            thread: Some(thread),
        })
    }

    /// Calls `callback` once every write made before this call is on disk.
    fn sync_then(&self, callback: LogFlushed<TypeConfig>) {
        let unsent = match &self.waiting {
            Some(waiting) => waiting.send(callback).err().map(|unsent| unsent.0),
            None => Some(callback),
        };
        if let Some(callback) = unsent {
            callback.log_io_completed(Err(std::io::Error::other("the log syncer stopped")));
        }
    }
}

impl Drop for LogSyncer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has answered what is queued.
        self.waiting.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LogStore {
    /// The write batch that appends `entries`, and the entries with their encoded sizes.
    #[allow(clippy::result_large_err)] // openraft's error type, as its storage traits return it
    fn log_batch(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> StorageResult<(WriteBatch, Appended)> {
        let mut batch = WriteBatch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = to_json(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf(&self.db, CF_LOGS), keys::log_index(entry.log_id.index), &bytes);
            appended.push((entry, bytes.len()));
        }
        Ok((batch, appended))
    }

    /// Keeps appended entries in memory once they are in RocksDB.
    fn remember(&self, appended: Appended) {
        let mut recent = self.recent.lock().expect("recent entries lock");
        for (entry, size) in appended {
            recent.push(entry, size);
        }
    }

    /// Tells openraft an append failed, and gives the error to return.
    fn append_failed(callback: LogFlushed<TypeConfig>, error: rocksdb::Error) -> StorageError<NodeId> {
        callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
        StorageIOError::write_logs(&error).into()
    }

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
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i + 1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(end) = end {
            if let Some(entries) = self.recent.lock().expect("recent entries lock").get(start, end) {
                return Ok(entries);
            }
        }
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

    /// A follower's append (and the storage suite's): synced in place. The
    /// core waits for it before it answers the leader anyway; blocking this
    /// worker for the sync (its other tasks can be stolen by other workers)
    /// measured about 5 % faster per write than `block_in_place` or the
    /// syncer thread, which each hand off to another thread and back.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (batch, appended) = self.log_batch(entries)?;
        if let Err(e) = self.db.write_opt(batch, &synced()) {
            return Err(Self::append_failed(callback, e));
        }
        self.remember(appended);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    /// The leader's append: written at once, so that it is readable and the
    /// leader replicates it while the log syncer makes it durable.
    async fn append_as_leader<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (batch, appended) = self.log_batch(entries)?;
        if let Err(e) = self.db.write(batch) {
            return Err(Self::append_failed(callback, e));
        }
        self.remember(appended);
        self.syncer.sync_then(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.recent
            .lock()
            .expect("recent entries lock")
            .truncate_from(log_id.index);
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
        self.recent
            .lock()
            .expect("recent entries lock")
            .purge_upto(log_id.index);
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

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// The indexes `recent` serves for `start..end`, or None when it sends the read to RocksDB.
    fn served(recent: &RecentEntries, start: u64, end: u64) -> Option<Vec<u64>> {
        recent
            .get(start, end)
            .map(|entries| entries.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_mirror_the_tail_of_the_log() {
        let mut recent = RecentEntries::default();
        assert_eq!(served(&recent, 1, 2), None);
        for index in 1..=5 {
            recent.push(entry(index), 10);
        }
        assert_eq!(served(&recent, 2, 4), Some(vec![2, 3]));
        assert_eq!(served(&recent, 1, 6), Some(vec![1, 2, 3, 4, 5]));
        // Anything not wholly here goes to RocksDB, and so does an empty range.
        assert_eq!(served(&recent, 0, 3), None);
        assert_eq!(served(&recent, 4, 7), None);
        assert_eq!(served(&recent, 3, 3), None);

        recent.truncate_from(4);
        assert_eq!(served(&recent, 1, 4), Some(vec![1, 2, 3]));
        assert_eq!(served(&recent, 3, 5), None);
        recent.push(entry(4), 10);
        assert_eq!(served(&recent, 3, 5), Some(vec![3, 4]));

        recent.purge_upto(2);
        assert_eq!(served(&recent, 2, 4), None);
        assert_eq!(served(&recent, 3, 5), Some(vec![3, 4]));
        assert_eq!(recent.bytes, 20);

        // An append that does not follow on (after a snapshot) starts afresh.
        recent.push(entry(9), 10);
        assert_eq!(served(&recent, 3, 5), None);
        assert_eq!(served(&recent, 9, 10), Some(vec![9]));
        assert_eq!(recent.bytes, 10);
    }

    #[test]
    fn recent_entries_are_bounded_in_count_and_bytes() {
        let mut recent = RecentEntries::default();
        for index in 1..=(RecentEntries::MAX_ENTRIES as u64 + 10) {
            recent.push(entry(index), 1);
        }
        assert_eq!(recent.entries.len(), RecentEntries::MAX_ENTRIES);
        assert_eq!(served(&recent, 10, 11), None);
        assert_eq!(served(&recent, 11, 12), Some(vec![11]));

        let mut recent = RecentEntries::default();
        recent.push(entry(1), RecentEntries::MAX_BYTES / 2);
        recent.push(entry(2), RecentEntries::MAX_BYTES / 2);
        recent.push(entry(3), 1);
        assert_eq!(served(&recent, 1, 2), None);
        assert_eq!(served(&recent, 2, 4), Some(vec![2, 3]));
        // One entry larger than the bound is not kept at all.
        recent.push(entry(4), RecentEntries::MAX_BYTES + 1);
        assert!(recent.entries.is_empty());
        assert_eq!(recent.bytes, 0);
    }
}
