//! The one binary encoding floe uses for openraft's types, on disk (snapshots)
//! and between nodes: bincode 2 with its standard configuration. Frozen:
//! changing the configuration changes the on-disk format.

use serde::{de::DeserializeOwned, Serialize};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, _) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
    Ok(value)
}
