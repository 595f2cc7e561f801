//! The node registry and region quotas.

use super::functions::refuse;
use super::kv::{get_json, scan_json, KvRead, Overlay};
use crate::command::{ApplyError, CommandResult, Response};
use crate::error::StoreError;
use crate::keys;
use crate::model::NodeRecord;
use crate::validate;

type Staged<'a, 'b> = Overlay<'a, dyn KvRead + 'b>;

pub fn list_nodes(kv: &(impl KvRead + ?Sized)) -> Result<Vec<NodeRecord>, StoreError> {
    scan_json(kv, keys::NODES)
}

/// `(region, concurrency)` for every region with a quota set.
pub fn list_region_quotas(kv: &(impl KvRead + ?Sized)) -> Result<Vec<(String, u32)>, StoreError> {
    kv.scan_prefix(keys::REGION_QUOTAS)?
        .into_iter()
        .map(|(key, value)| {
            let region = String::from_utf8_lossy(&key[keys::REGION_QUOTAS.len()..]).into_owned();
            let concurrency = serde_json::from_slice(&value).map_err(|e| StoreError::corrupt(&key, e))?;
            Ok((region, concurrency))
        })
        .collect()
}

pub(super) fn set_quota(kv: &mut Staged, region: &str, concurrency: u32) -> Result<CommandResult, StoreError> {
    refuse!(validate::region(region));
    kv.put_json(keys::region_quota(region), &concurrency)?;
    Ok(Ok(Response::None))
}

pub(super) fn register(
    kv: &mut Staged,
    id: Option<u64>,
    address: &str,
    region: &str,
) -> Result<CommandResult, StoreError> {
    refuse!(validate::region(region));
    if address.is_empty() {
        return Ok(Err(ApplyError::InvalidArgument {
            message: "a node needs an address".into(),
        }));
    }
    let next: u64 = get_json(kv, keys::NEXT_NODE_ID)?.unwrap_or(1);
    let id = id.unwrap_or(next);
    if id == 0 {
        return Ok(Err(ApplyError::InvalidArgument {
            message: "node id 0 is reserved".into(),
        }));
    }
    kv.put_json(keys::NEXT_NODE_ID.to_vec(), &next.max(id + 1))?;
    let record = NodeRecord {
        id,
        address: address.to_string(),
        region: region.to_string(),
    };
    kv.put_json(keys::node(id), &record)?;
    Ok(Ok(Response::Node(record)))
}

pub(super) fn remove(kv: &mut Staged, id: u64) -> Result<CommandResult, StoreError> {
    if get_json::<NodeRecord>(kv, &keys::node(id))?.is_none() {
        return Ok(Err(ApplyError::NodeNotFound { id }));
    }
    kv.delete(keys::node(id));
    Ok(Ok(Response::None))
}
