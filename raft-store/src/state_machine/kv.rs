//! The key-value view the state machine applies commands to.
//!
//! Apply reads through an [`Overlay`] of pending writes, so that a command is
//! all-or-nothing (a refusal drops its overlay) and a batch of entries is one
//! atomic RocksDB write. Tests run the same code over a `BTreeMap`.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::StoreError;

/// Key-value pairs in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Read access to ordered keys.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// All pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError>;
}

impl KvRead for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(BTreeMap::get(self, key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(self
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Pending writes over a base view. `None` marks a deletion.
pub struct Overlay<'a, R: KvRead + ?Sized> {
    base: &'a R,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a, R: KvRead + ?Sized> Overlay<'a, R> {
    pub fn new(base: &'a R) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    pub fn put_json<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.put(key, bytes);
        Ok(())
    }

    /// The pending writes, in key order.
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.writes
    }

    /// Adds writes staged in a nested overlay.
    pub fn extend(&mut self, writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        self.writes.extend(writes);
    }
}

impl<R: KvRead + ?Sized> KvRead for Overlay<'_, R> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.base.get(key),
        }
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.base.scan_prefix(prefix)?.into_iter().collect();
        for (key, value) in self.writes.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }
}

/// Reads and decodes a JSON record.
pub fn get_json<T: DeserializeOwned>(kv: &(impl KvRead + ?Sized), key: &[u8]) -> Result<Option<T>, StoreError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::corrupt(key, e)),
    }
}

/// Reads and decodes every JSON record under a prefix.
pub fn scan_json<T: DeserializeOwned>(kv: &(impl KvRead + ?Sized), prefix: &[u8]) -> Result<Vec<T>, StoreError> {
    kv.scan_prefix(prefix)?
        .into_iter()
        .map(|(key, bytes)| serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(&key, e)))
        .collect()
}
