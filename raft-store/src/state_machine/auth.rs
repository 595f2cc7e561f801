//! Access keys: who may call the public APIs.

use super::kv::{get_json, scan_json, KvRead, Overlay};
use crate::command::{ApplyError, CommandResult, Response};
use crate::error::StoreError;
use crate::keys;
use crate::model::AccessKeyRecord;

type Staged<'a, 'b> = Overlay<'a, dyn KvRead + 'b>;

pub fn get_access_key(kv: &(impl KvRead + ?Sized), id: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
    get_json(kv, &keys::access_key(id))
}

pub fn list_access_keys(kv: &(impl KvRead + ?Sized)) -> Result<Vec<AccessKeyRecord>, StoreError> {
    scan_json(kv, keys::ACCESS_KEYS)
}

pub(super) fn create(kv: &mut Staged, key: &AccessKeyRecord) -> Result<CommandResult, StoreError> {
    if get_access_key(kv, &key.id)?.is_some() {
        return Ok(Err(ApplyError::AccessKeyExists { id: key.id.clone() }));
    }
    kv.put_json(keys::access_key(&key.id), key)?;
    Ok(Ok(Response::AccessKey(key.clone())))
}

pub(super) fn delete(kv: &mut Staged, id: &str) -> Result<CommandResult, StoreError> {
    if get_access_key(kv, id)?.is_none() {
        return Ok(Err(ApplyError::AccessKeyNotFound { id: id.to_string() }));
    }
    kv.delete(keys::access_key(id));
    Ok(Ok(Response::None))
}
