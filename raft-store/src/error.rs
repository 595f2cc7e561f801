//! Storage failures: RocksDB or a record that does not decode. openraft treats
//! any of these as fatal, and so does the node.

/// A failure of the store itself (not a refused command: see `ApplyError`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record at {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("the Raft log entry at index {index} cannot be read ({message}): restore this node's data dir, or remove the node and add it again")]
    CorruptLogEntry { index: u64, message: String },
    #[error("encode: {0}")]
    Encode(String),
}

impl StoreError {
    pub fn corrupt(key: &[u8], message: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            message: message.to_string(),
        }
    }
}
