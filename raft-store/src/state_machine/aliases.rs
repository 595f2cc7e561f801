//! The aliases table: named pointers to versions, with weighted routing.

use super::functions::{check_revision, get_version, refuse, require};
use super::kv::{get_json, scan_json, KvRead, Overlay};
use crate::command::{ApplyError, CommandResult, Response};
use crate::error::StoreError;
use crate::keys;
use crate::model::{AliasRecord, AliasRouting};
use crate::validate;

type Staged<'a, 'b> = Overlay<'a, dyn KvRead + 'b>;

pub fn get_alias(kv: &(impl KvRead + ?Sized), function: &str, name: &str) -> Result<Option<AliasRecord>, StoreError> {
    get_json(kv, &keys::alias(function, name))
}

pub fn list_aliases(kv: &(impl KvRead + ?Sized), function: &str) -> Result<Vec<AliasRecord>, StoreError> {
    scan_json(kv, &keys::aliases_of(function))
}

/// Checks that `version` names `$LATEST` or an existing published version.
fn check_target(kv: &Staged, function: &str, version: &str) -> Result<Result<Option<u64>, ApplyError>, StoreError> {
    let number = match validate::parse_version(version) {
        Ok(number) => number,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(number) = number {
        if get_version(kv, function, number)?.is_none() {
            return Ok(Err(ApplyError::VersionNotFound {
                function: function.to_string(),
                version: version.to_string(),
            }));
        }
    }
    Ok(Ok(number))
}

/// Routing needs a published primary version and a different, published second one.
fn check_routing(
    kv: &Staged,
    function: &str,
    primary: Option<u64>,
    routing: &AliasRouting,
) -> Result<Result<(), ApplyError>, StoreError> {
    let Some(primary) = primary else {
        return Ok(Err(ApplyError::InvalidArgument {
            message: "an alias pointing to $LATEST cannot route traffic to a second version".into(),
        }));
    };
    if routing.additional_version == primary {
        return Ok(Err(ApplyError::InvalidArgument {
            message: "the additional version must differ from the alias's version".into(),
        }));
    }
    if get_version(kv, function, routing.additional_version)?.is_none() {
        return Ok(Err(ApplyError::VersionNotFound {
            function: function.to_string(),
            version: routing.additional_version.to_string(),
        }));
    }
    Ok(Ok(()))
}

pub(super) fn create(
    kv: &mut Staged,
    function: &str,
    name: &str,
    version: &str,
    routing: Option<&AliasRouting>,
    description: &str,
    revision_id: &str,
) -> Result<CommandResult, StoreError> {
    refuse!(require(kv, function)?);
    if get_alias(kv, function, name)?.is_some() {
        return Ok(Err(ApplyError::AliasExists {
            function: function.to_string(),
            name: name.to_string(),
        }));
    }
    let primary = refuse!(check_target(kv, function, version)?);
    if let Some(routing) = routing {
        refuse!(check_routing(kv, function, primary, routing)?);
    }
    let record = AliasRecord {
        function: function.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        routing: routing.cloned(),
        description: description.to_string(),
        revision_id: revision_id.to_string(),
    };
    kv.put_json(keys::alias(function, name), &record)?;
    Ok(Ok(Response::Alias(record)))
}

/// The fields of an alias update; `None` leaves a field as it is.
pub(super) struct AliasUpdate<'c> {
    pub function: &'c str,
    pub name: &'c str,
    pub version: Option<&'c str>,
    /// `Some(None)` clears the routing.
    pub routing: Option<Option<&'c AliasRouting>>,
    pub description: Option<&'c str>,
    pub expected_revision_id: Option<&'c str>,
    pub revision_id: &'c str,
}

pub(super) fn update(kv: &mut Staged, update: AliasUpdate) -> Result<CommandResult, StoreError> {
    let AliasUpdate { function, name, .. } = update;
    let Some(mut record) = get_alias(kv, function, name)? else {
        return Ok(Err(ApplyError::AliasNotFound {
            function: function.to_string(),
            name: name.to_string(),
        }));
    };
    refuse!(check_revision(
        &format!("alias {function}:{name}"),
        &record.revision_id,
        update.expected_revision_id
    ));
    if let Some(version) = update.version {
        record.version = version.to_string();
    }
    if let Some(routing) = update.routing {
        record.routing = routing.cloned();
    }
    if let Some(description) = update.description {
        record.description = description.to_string();
    }
    let primary = refuse!(check_target(kv, function, &record.version)?);
    if let Some(routing) = &record.routing {
        refuse!(check_routing(kv, function, primary, routing)?);
    }
    record.revision_id = update.revision_id.to_string();
    kv.put_json(keys::alias(function, name), &record)?;
    Ok(Ok(Response::Alias(record)))
}

pub(super) fn delete(kv: &mut Staged, function: &str, name: &str) -> Result<CommandResult, StoreError> {
    if get_alias(kv, function, name)?.is_none() {
        return Ok(Err(ApplyError::AliasNotFound {
            function: function.to_string(),
            name: name.to_string(),
        }));
    }
    kv.delete(keys::alias(function, name));
    Ok(Ok(Response::None))
}
