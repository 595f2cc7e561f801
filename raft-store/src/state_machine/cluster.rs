//! The node registry and region quotas.

use super::kv::{get_json, scan_json, KvRead, Overlay};
use crate::command::{ApplyError, CommandResult, Response};
use crate::error::StoreError;
use crate::keys;
use crate::model::{min_unreserved, NodeRecord, DEFAULT_REGION_QUOTA};

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

/// A region's concurrency quota (the default when none was set).
pub fn region_quota(kv: &(impl KvRead + ?Sized), region: &str) -> Result<u32, StoreError> {
    Ok(get_json(kv, &keys::region_quota(region))?.unwrap_or(DEFAULT_REGION_QUOTA))
}

/// The sum of every function's reserved concurrency.
pub fn reserved_total(kv: &(impl KvRead + ?Sized)) -> Result<u32, StoreError> {
    Ok(get_json(kv, keys::RESERVED_TOTAL)?.unwrap_or(0))
}

/// Recomputes the reserved total from the functions (after a function is deleted).
pub(super) fn recount_reserved(kv: &mut Staged) -> Result<(), StoreError> {
    let total: u32 = super::functions::list_functions(kv)?
        .iter()
        .filter_map(|f| f.reserved_concurrency)
        .sum();
    kv.put_json(keys::RESERVED_TOTAL.to_vec(), &total)
}

/// How much concurrency reservations may take in all: reservations apply in
/// every region, so the smallest region decides. Returns that region and its limit.
pub(super) fn reservation_limit(kv: &(impl KvRead + ?Sized)) -> Result<(String, u32), StoreError> {
    let mut regions: Vec<String> = list_nodes(kv)?.into_iter().map(|n| n.region).collect();
    regions.extend(list_region_quotas(kv)?.into_iter().map(|(region, _)| region));
    let mut tightest: Option<(String, u32)> = None;
    for region in regions {
        let quota = region_quota(kv, &region)?;
        let limit = quota - min_unreserved(quota).min(quota);
        if tightest.as_ref().is_none_or(|(_, l)| limit < *l) {
            tightest = Some((region, limit));
        }
    }
    Ok(tightest.unwrap_or_else(|| {
        (
            "(default)".into(),
            DEFAULT_REGION_QUOTA - min_unreserved(DEFAULT_REGION_QUOTA),
        )
    }))
}

pub(super) fn set_quota(kv: &mut Staged, region: &str, concurrency: u32) -> Result<CommandResult, StoreError> {
    let reserved = reserved_total(kv)?;
    if reserved > 0 && u64::from(reserved) + u64::from(min_unreserved(concurrency)) > u64::from(concurrency) {
        return Ok(Err(ApplyError::FailedPrecondition {
            message: format!(
                "functions reserve {reserved} in all, so region {region} needs a quota of at least {}; \
                 lower their reserved concurrency first",
                (reserved..)
                    .find(|q| q - min_unreserved(*q).min(*q) >= reserved)
                    .unwrap_or(u32::MAX)
            ),
        }));
    }
    kv.put_json(keys::region_quota(region), &concurrency)?;
    Ok(Ok(Response::None))
}

pub(super) fn register(
    kv: &mut Staged,
    id: Option<u64>,
    address: &str,
    public_address: &str,
    region: &str,
) -> Result<CommandResult, StoreError> {
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
        public_address: public_address.to_string(),
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
