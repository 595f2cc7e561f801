//! The state machine in the `state` column family: applies, the read-only
//! view the node reads through, and snapshots (built, installed, kept in `meta`).

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::{blocking, cf, from_json, synced, to_json, StorageResult, CF_META, CF_STATE};
use crate::command::{CommandResult, Response};
use crate::state_machine::kv::{KvRead, Overlay, Pairs};
use crate::{codec, keys, state_machine, NodeId, StoreError, TypeConfig};

/// Read-only access to the state machine tables, for the node's reads.
#[derive(Clone)]
pub struct StateReader {
    pub(super) db: Arc<DB>,
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
    pub(super) db: Arc<DB>,
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
