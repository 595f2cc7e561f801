//! The functions and versions tables: `$LATEST`, publishing, deletion.

use super::kv::{get_json, scan_json, KvRead, Overlay};
use crate::command::{ApplyError, CommandResult, Response};
use crate::error::StoreError;
use crate::keys;
use crate::model::{CodeRef, FunctionConfig, FunctionRecord, VersionRecord};

type Staged<'a, 'b> = Overlay<'a, dyn KvRead + 'b>;

pub fn get_function(kv: &(impl KvRead + ?Sized), name: &str) -> Result<Option<FunctionRecord>, StoreError> {
    get_json(kv, &keys::function(name))
}

pub fn list_functions(kv: &(impl KvRead + ?Sized)) -> Result<Vec<FunctionRecord>, StoreError> {
    scan_json(kv, keys::FUNCTIONS)
}

pub fn get_version(
    kv: &(impl KvRead + ?Sized),
    function: &str,
    version: u64,
) -> Result<Option<VersionRecord>, StoreError> {
    get_json(kv, &keys::version(function, version))
}

/// Published versions, oldest first.
pub fn list_versions(kv: &(impl KvRead + ?Sized), function: &str) -> Result<Vec<VersionRecord>, StoreError> {
    scan_json(kv, &keys::versions_of(function))
}

fn not_found(name: &str) -> ApplyError {
    ApplyError::FunctionNotFound { name: name.to_string() }
}

pub(super) fn check_revision(what: &str, actual: &str, expected: Option<&str>) -> Result<(), ApplyError> {
    match expected {
        Some(expected) if expected != actual => Err(ApplyError::RevisionMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Loads a function or refuses with `FunctionNotFound`.
pub(super) fn require(kv: &Staged, name: &str) -> Result<Result<FunctionRecord, ApplyError>, StoreError> {
    Ok(get_function(kv, name)?.ok_or_else(|| not_found(name)))
}

macro_rules! refuse {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(refusal) => return Ok(Err(refusal)),
        }
    };
}
pub(super) use refuse;

pub(super) fn create(
    kv: &mut Staged,
    name: &str,
    config: &FunctionConfig,
    code: &CodeRef,
    revision_id: &str,
    now_ms: i64,
) -> Result<CommandResult, StoreError> {
    if get_function(kv, name)?.is_some() {
        return Ok(Err(ApplyError::FunctionExists { name: name.to_string() }));
    }
    let record = FunctionRecord {
        name: name.to_string(),
        config: config.clone(),
        code: code.clone(),
        revision_id: revision_id.to_string(),
        created_at_ms: now_ms,
        last_modified_ms: now_ms,
        latest_version: 0,
        reserved_concurrency: None,
    };
    kv.put_json(keys::function(name), &record)?;
    Ok(Ok(Response::Function(record)))
}

pub(super) fn update(
    kv: &mut Staged,
    name: &str,
    config: Option<&FunctionConfig>,
    code: Option<&CodeRef>,
    expected_revision_id: Option<&str>,
    revision_id: &str,
    now_ms: i64,
) -> Result<CommandResult, StoreError> {
    let mut record = refuse!(require(kv, name)?);
    refuse!(check_revision(
        &format!("function {name}"),
        &record.revision_id,
        expected_revision_id
    ));
    if let Some(config) = config {
        record.config = config.clone();
    }
    if let Some(code) = code {
        record.code = code.clone();
    }
    record.revision_id = revision_id.to_string();
    record.last_modified_ms = now_ms;
    kv.put_json(keys::function(name), &record)?;
    Ok(Ok(Response::Function(record)))
}

pub(super) fn delete(kv: &mut Staged, name: &str) -> Result<CommandResult, StoreError> {
    refuse!(require(kv, name)?);
    for prefix in [keys::versions_of(name), keys::aliases_of(name)] {
        for (key, _) in kv.scan_prefix(&prefix)? {
            kv.delete(key);
        }
    }
    kv.delete(keys::function(name));
    super::events::delete_function_events(kv, name)?;
    super::cluster::recount_reserved(kv)?;
    Ok(Ok(Response::None))
}

pub(super) fn put_concurrency(kv: &mut Staged, name: &str, reserved: Option<u32>) -> Result<CommandResult, StoreError> {
    let mut record = refuse!(require(kv, name)?);
    let others = super::cluster::reserved_total(kv)? - record.reserved_concurrency.unwrap_or(0);
    let (region, limit) = super::cluster::reservation_limit(kv)?;
    if let Some(wanted) = reserved {
        if u64::from(others) + u64::from(wanted) > u64::from(limit) {
            return Ok(Err(ApplyError::InvalidArgument {
                message: format!(
                    "reserving {wanted} for {name} would leave region {region} less than its minimum unreserved \
                     concurrency: at most {} can be reserved there, {others} already is",
                    limit
                ),
            }));
        }
    }
    record.reserved_concurrency = reserved;
    kv.put_json(keys::function(name), &record)?;
    kv.put_json(keys::RESERVED_TOTAL.to_vec(), &(others + reserved.unwrap_or(0)))?;
    Ok(Ok(Response::Function(record)))
}

/// Completes a create or update that asked to publish: publishes the
/// `$LATEST` it wrote, over its staged writes. A refused create or update
/// publishes nothing; the caller discards every staged write when the
/// publish is refused, so neither happens.
pub(super) fn publishing(
    written: CommandResult,
    wanted: bool,
    kv: &mut Staged,
    name: &str,
    now_ms: i64,
) -> Result<CommandResult, StoreError> {
    if !wanted {
        return Ok(written);
    }
    let Ok(Response::Function(_)) = written else {
        return Ok(written);
    };
    let version = match publish(kv, name, "", None, None, now_ms)? {
        Ok(Response::Version(version)) => version,
        other => return Ok(other),
    };
    let function = refuse!(require(kv, name)?);
    Ok(Ok(Response::Published { function, version }))
}

/// Publishing an unchanged `$LATEST` returns the latest version instead of a
/// new one, as Lambda does.
pub(super) fn publish(
    kv: &mut Staged,
    name: &str,
    description: &str,
    expected_revision_id: Option<&str>,
    expected_code_sha256: Option<&str>,
    now_ms: i64,
) -> Result<CommandResult, StoreError> {
    let mut record = refuse!(require(kv, name)?);
    refuse!(check_revision(
        &format!("function {name}"),
        &record.revision_id,
        expected_revision_id
    ));
    if let Some(expected) = expected_code_sha256 {
        if !expected.eq_ignore_ascii_case(&record.code.sha256) {
            return Ok(Err(ApplyError::InvalidArgument {
                message: format!(
                    "CodeSha256 ({expected}) is different from current CodeSha256 in $LATEST ({}). Please try again.",
                    record.code.sha256
                ),
            }));
        }
    }
    if record.latest_version > 0 {
        if let Some(latest) = get_version(kv, name, record.latest_version)? {
            if latest.config == record.config && latest.code == record.code {
                return Ok(Ok(Response::Version(latest)));
            }
        }
    }
    record.latest_version += 1;
    let version = VersionRecord {
        function: name.to_string(),
        version: record.latest_version,
        config: record.config.clone(),
        code: record.code.clone(),
        description: description.to_string(),
        revision_id: record.revision_id.clone(),
        created_at_ms: now_ms,
    };
    kv.put_json(keys::version(name, version.version), &version)?;
    kv.put_json(keys::function(name), &record)?;
    Ok(Ok(Response::Version(version)))
}
