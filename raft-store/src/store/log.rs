//! The Raft log and vote in the `logs` and `meta` column families: synced
//! appends, the leader's log syncer thread, and the newest entries kept
//! decoded in memory (see the module above for the durability rules).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::Deserialize;

use super::{blocking, cf, from_json, read_err, synced, to_json, write_err, StorageResult, CF_LOGS, CF_META};
use crate::{keys, NodeId, StoreError, TypeConfig};

/// Entries just written, with their encoded sizes (for `RecentEntries`).
type Appended = Vec<(Entry<TypeConfig>, usize)>;

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    pub(super) db: Arc<DB>,
    pub(super) syncer: Arc<LogSyncer>,
    /// Shared by every clone (openraft's log readers are clones).
    pub(super) recent: Arc<Mutex<RecentEntries>>,
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
pub(super) struct RecentEntries {
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
pub(super) struct LogSyncer {
    waiting: Option<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogSyncer {
    pub(super) fn start(db: Arc<DB>) -> Result<LogSyncer, StoreError> {
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
            entries.push(decode_entry(&key, &value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

/// Reads a log entry back. One that does not decode (a disk or a bug wrote
/// it) is named by its index: openraft stops this node on the error.
fn decode_entry(key: &[u8], bytes: &[u8]) -> Result<Entry<TypeConfig>, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| match keys::parse_log_index(key) {
        Some(index) => StoreError::CorruptLogEntry {
            index,
            message: e.to_string(),
        },
        None => StoreError::corrupt(key, e),
    })
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
                let entry = decode_entry(&key, &value).map_err(read_err)?;
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

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

    /// Every command the model can hold, written to the log and read back
    /// after a restart, is the command that was written; one holding a value
    /// JSON cannot (a NaN or infinite weight) still reads back, and is one
    /// the checks before proposing refuse, so it is never written.
    mod every_command_survives_the_log {
        use proptest::prelude::*;

        use super::*;
        use crate::command::Command;

        fn commands() -> impl Strategy<Value = Vec<Command>> {
            let one = any::<Command>();
            let batch = proptest::collection::vec(any::<Command>(), 0..4).prop_map(Command::Batch);
            proptest::collection::vec(prop_oneof![4 => one, 1 => batch], 1..24)
        }

        /// Weights JSON cannot hold, the only values that do not round-trip.
        fn holds_non_finite(command: &Command) -> bool {
            match command {
                Command::CreateAlias { routing: Some(r), .. } => !r.weight.is_finite(),
                Command::UpdateAlias {
                    routing: Some(Some(r)), ..
                } => !r.weight.is_finite(),
                Command::Batch(commands) => commands.iter().any(holds_non_finite),
                _ => false,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
            #[test]
            fn encode_store_restart_read_decode(commands in commands()) {
                let dir = tempfile::tempdir().unwrap();
                let entries: Vec<Entry<TypeConfig>> = commands
                    .iter()
                    .enumerate()
                    .map(|(i, command)| Entry {
                        log_id: LogId::new(CommittedLeaderId::new(3, 1), i as u64 + 1),
                        payload: EntryPayload::Normal(command.clone()),
                    })
                    .collect();
                {
                    let (log, _, _) = crate::open(dir.path()).unwrap();
                    let (batch, _) = log.log_batch(entries.clone()).unwrap();
                    log.db.write_opt(batch, &synced()).unwrap();
                }
                // A fresh store: nothing cached, every entry decoded from disk.
                let (mut log, _, _) = crate::open(dir.path()).unwrap();
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let read = runtime.block_on(log.try_get_log_entries(1..=entries.len() as u64)).unwrap();
                prop_assert_eq!(read.len(), entries.len());
                for (written, read) in entries.iter().zip(&read) {
                    prop_assert_eq!(written.log_id, read.log_id);
                    let (EntryPayload::Normal(written), EntryPayload::Normal(read)) = (&written.payload, &read.payload)
                    else {
                        panic!("not a normal entry");
                    };
                    if holds_non_finite(written) {
                        prop_assert!(crate::validate::command(written).is_err());
                        prop_assert!(holds_non_finite(read), "a non-finite weight reads back as NaN");
                    } else {
                        prop_assert_eq!(written, read);
                    }
                }
            }
        }
    }
}
