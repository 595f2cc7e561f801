//! The node registry, who may join it (the cluster CA, join tokens), and
//! region quotas.

use super::kv::{get_json, scan_json, KvRead, Overlay};
use crate::command::{ApplyError, CommandResult, Response};
use crate::error::StoreError;
use crate::keys;
use crate::model::{min_unreserved, ClusterCaRecord, JoinTokenRecord, NodeRecord, TokenUse, DEFAULT_REGION_QUOTA};

type Staged<'a, 'b> = Overlay<'a, dyn KvRead + 'b>;

pub fn list_nodes(kv: &(impl KvRead + ?Sized)) -> Result<Vec<NodeRecord>, StoreError> {
    scan_json(kv, keys::NODES)
}

pub fn get_node(kv: &(impl KvRead + ?Sized), id: u64) -> Result<Option<NodeRecord>, StoreError> {
    get_json(kv, &keys::node(id))
}

pub fn cluster_ca(kv: &(impl KvRead + ?Sized)) -> Result<Option<ClusterCaRecord>, StoreError> {
    get_json(kv, keys::CLUSTER_CA)
}

pub fn get_join_token(kv: &(impl KvRead + ?Sized), id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
    get_json(kv, &keys::join_token(id))
}

pub fn list_join_tokens(kv: &(impl KvRead + ?Sized)) -> Result<Vec<JoinTokenRecord>, StoreError> {
    scan_json(kv, keys::JOIN_TOKENS)
}

/// Why `token` does not admit a node at `now_ms`, if it does not.
pub fn token_refusal(token: Option<&JoinTokenRecord>, now_ms: i64) -> Option<String> {
    match token {
        None => Some("unknown join token (create one with `floe cluster token create`)".into()),
        Some(token) if now_ms >= token.expires_ms => Some(format!("join token {} has expired", token.id)),
        Some(token) if token.uses_left == Some(0) => Some(format!("join token {} is used up", token.id)),
        Some(_) => None,
    }
}

pub(super) fn set_ca(kv: &mut Staged, ca: &ClusterCaRecord) -> Result<CommandResult, StoreError> {
    match cluster_ca(kv)? {
        Some(existing) if existing != *ca => Ok(Err(ApplyError::FailedPrecondition {
            message: "the cluster already has a CA".into(),
        })),
        _ => {
            kv.put_json(keys::CLUSTER_CA.to_vec(), ca)?;
            Ok(Ok(Response::None))
        }
    }
}

pub(super) fn create_token(kv: &mut Staged, token: &JoinTokenRecord) -> Result<CommandResult, StoreError> {
    if get_join_token(kv, &token.id)?.is_some() {
        return Ok(Err(ApplyError::FailedPrecondition {
            message: format!("join token {} already exists", token.id),
        }));
    }
    kv.put_json(keys::join_token(&token.id), token)?;
    Ok(Ok(Response::None))
}

pub(super) fn delete_token(kv: &mut Staged, id: &str) -> Result<CommandResult, StoreError> {
    if get_join_token(kv, id)?.is_none() {
        return Ok(Err(ApplyError::JoinRefused {
            message: format!("join token {id} not found"),
        }));
    }
    kv.delete(keys::join_token(id));
    Ok(Ok(Response::None))
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

pub(super) struct Registration<'c> {
    pub id: Option<u64>,
    pub address: &'c str,
    pub public_address: &'c str,
    pub region: &'c str,
    pub key_pin: &'c str,
    pub token: Option<&'c TokenUse>,
}

pub(super) fn register(kv: &mut Staged, registration: Registration) -> Result<CommandResult, StoreError> {
    let Registration {
        id,
        address,
        public_address,
        region,
        key_pin,
        token,
    } = registration;
    if let Some(used) = token {
        let mut record = get_join_token(kv, &used.id)?;
        if let Some(message) = token_refusal(record.as_ref(), used.now_ms) {
            return Ok(Err(ApplyError::JoinRefused { message }));
        }
        let record = record.as_mut().expect("checked above");
        if let Some(uses) = record.uses_left.as_mut() {
            *uses -= 1;
        }
        kv.put_json(keys::join_token(&record.id), &*record)?;
    }
    let next: u64 = get_json(kv, keys::NEXT_NODE_ID)?.unwrap_or(1);
    let id = id.unwrap_or(next);
    // A key identifies one member (peers are told apart by it).
    if !key_pin.is_empty() {
        if let Some(holder) = list_nodes(kv)?
            .into_iter()
            .find(|node| node.key_pin == key_pin && node.id != id)
        {
            return Ok(Err(ApplyError::FailedPrecondition {
                message: format!("that key is already pinned for node {}", holder.id),
            }));
        }
    }
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
        key_pin: key_pin.to_string(),
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
