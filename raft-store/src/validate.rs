//! Lambda's input rules. [`command`] is every rule a command can be checked
//! against without the state: the node runs it before proposing (so no
//! value the log cannot hold — a NaN weight, say — is ever written to it)
//! and apply runs it first (so a bad command changes nothing, whoever
//! proposed it). The rules that need the state stay in apply.

use crate::command::{ApplyError, Command};
use crate::model::{AliasRouting, FunctionConfig};

/// Runtime ids a function may name. Which interpreter runs each one is node
/// configuration.
pub const RUNTIMES: &[&str] = &[
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "provided",
    "provided.al2",
    "provided.al2023",
];

pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
pub const MIN_TIMEOUT_S: u32 = 1;
pub const MAX_TIMEOUT_S: u32 = 900;
/// Lambda's limit on the total size of environment variables (keys and values).
pub const MAX_ENVIRONMENT_BYTES: usize = 4 * 1024;
pub const MAX_DESCRIPTION_CHARS: usize = 256;
pub const MAX_HANDLER_CHARS: usize = 128;

fn invalid(message: String) -> ApplyError {
    ApplyError::InvalidArgument { message }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Function names: `[A-Za-z0-9_-]{1,64}`.
pub fn function_name(name: &str) -> Result<(), ApplyError> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
        return Err(invalid(format!(
            "invalid function name {name:?}: use 1 to 64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// Alias names: `[A-Za-z0-9_-]{1,128}`, not all digits (that would read as a version).
pub fn alias_name(name: &str) -> Result<(), ApplyError> {
    if name.is_empty()
        || name.len() > 128
        || !name.chars().all(is_name_char)
        || name.chars().all(|c| c.is_ascii_digit())
    {
        return Err(invalid(format!(
            "invalid alias name {name:?}: use 1 to 128 letters, digits, '-' or '_', not only digits"
        )));
    }
    Ok(())
}

/// Environment variable keys: `[a-zA-Z][a-zA-Z0-9_]+`.
fn environment_key(key: &str) -> Result<(), ApplyError> {
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest: Vec<char> = chars.collect();
    if !first_ok || rest.is_empty() || !rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == '_') {
        return Err(invalid(format!(
            "invalid environment variable name {key:?}: it must match [a-zA-Z][a-zA-Z0-9_]+"
        )));
    }
    Ok(())
}

pub fn function_config(config: &FunctionConfig) -> Result<(), ApplyError> {
    if !RUNTIMES.contains(&config.runtime.as_str()) {
        return Err(invalid(format!(
            "unknown runtime {:?}: expected one of {}",
            config.runtime,
            RUNTIMES.join(", ")
        )));
    }
    if config.handler.is_empty() || config.handler.len() > MAX_HANDLER_CHARS {
        return Err(invalid(format!(
            "invalid handler {:?}: it must be 1 to {MAX_HANDLER_CHARS} characters",
            config.handler
        )));
    }
    if !config.runtime.starts_with("provided") && !config.handler.contains('.') {
        return Err(invalid(format!(
            "invalid handler {:?}: expected \"module.function\"",
            config.handler
        )));
    }
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&config.memory_mb) {
        return Err(invalid(format!(
            "memory {} MB is out of range: use {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB",
            config.memory_mb
        )));
    }
    if !(MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&config.timeout_s) {
        return Err(invalid(format!(
            "timeout {} s is out of range: use {MIN_TIMEOUT_S} to {MAX_TIMEOUT_S} seconds",
            config.timeout_s
        )));
    }
    let mut environment_bytes = 0;
    for (key, value) in &config.environment {
        environment_key(key)?;
        environment_bytes += key.len() + value.len();
    }
    if environment_bytes > MAX_ENVIRONMENT_BYTES {
        return Err(invalid(format!(
            "environment variables take {environment_bytes} bytes: the limit is {MAX_ENVIRONMENT_BYTES}"
        )));
    }
    if config.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(())
}

pub fn description(description: &str) -> Result<(), ApplyError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(())
}

pub fn routing(routing: &AliasRouting) -> Result<(), ApplyError> {
    if !(0.0..=1.0).contains(&routing.weight) || routing.weight.is_nan() {
        return Err(invalid(format!(
            "routing weight {} is out of range: use a number from 0 to 1",
            routing.weight
        )));
    }
    Ok(())
}

pub fn sha256(sha256: &str) -> Result<(), ApplyError> {
    if sha256.len() != 64 || !sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(invalid(format!("invalid sha256 {sha256:?}")));
    }
    Ok(())
}

/// Region labels: like function names, 1 to 64 characters.
pub fn region(region: &str) -> Result<(), ApplyError> {
    if region.is_empty() || region.len() > 64 || !region.chars().all(is_name_char) {
        return Err(invalid(format!(
            "invalid region {region:?}: use 1 to 64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// A version qualifier: `$LATEST` or a positive number.
pub fn parse_version(version: &str) -> Result<Option<u64>, ApplyError> {
    if version == crate::model::LATEST {
        return Ok(None);
    }
    match version.parse::<u64>() {
        Ok(n) if n > 0 && !version.starts_with('0') => Ok(Some(n)),
        _ => Err(invalid(format!(
            "invalid version {version:?}: expected $LATEST or a published version number"
        ))),
    }
}

/// Lambda's ranges for an asynchronous invocation's retry policy.
pub fn event_retry_policy(max_retry_attempts: u32, max_event_age_s: u32) -> Result<(), ApplyError> {
    use crate::model::{DEFAULT_MAX_EVENT_AGE_S, MAX_RETRY_ATTEMPTS, MIN_EVENT_AGE_S};
    if max_retry_attempts > MAX_RETRY_ATTEMPTS {
        return Err(invalid(format!(
            "MaximumRetryAttempts {max_retry_attempts} is out of range: use 0 to {MAX_RETRY_ATTEMPTS}"
        )));
    }
    if !(MIN_EVENT_AGE_S..=DEFAULT_MAX_EVENT_AGE_S).contains(&max_event_age_s) {
        return Err(invalid(format!(
            "MaximumEventAgeInSeconds {max_event_age_s} is out of range: use {MIN_EVENT_AGE_S} to {DEFAULT_MAX_EVENT_AGE_S}"
        )));
    }
    Ok(())
}

/// Access key ids: 16 to 128 upper-case letters and digits (AWS's shape).
pub fn access_key_id(id: &str) -> Result<(), ApplyError> {
    if !(16..=128).contains(&id.len()) || !id.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
        return Err(invalid(format!(
            "invalid access key id {id:?}: use 16 to 128 upper-case letters and digits"
        )));
    }
    Ok(())
}

/// Join token ids: 8 to 32 lower-case hex digits (they travel in tokens
/// `floe1.<id>.<secret>.<ca sha256>`, so they hold no dots).
pub fn join_token_id(id: &str) -> Result<(), ApplyError> {
    if !(8..=32).contains(&id.len()) || !id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(invalid(format!(
            "invalid join token id {id:?}: use 8 to 32 lower-case hex digits"
        )));
    }
    Ok(())
}

/// A PEM text the cluster keeps (the CA): bounded, ASCII.
fn pem_text(what: &str, text: &str) -> Result<(), ApplyError> {
    if text.is_empty() || text.len() > 16 * 1024 || !text.is_ascii() || !text.starts_with("-----BEGIN ") {
        return Err(invalid(format!("{what} is not a PEM text of at most 16 KiB")));
    }
    Ok(())
}

/// The stateless checks of a command: every name, number and text field it
/// carries. A batch's commands are checked each; batches do not nest.
pub fn command(command: &Command) -> Result<(), ApplyError> {
    match command {
        Command::CreateFunction { name, config, code, .. } => {
            function_name(name)?;
            function_config(config)?;
            sha256(&code.sha256)
        }
        Command::UpdateFunction { name, config, code, .. } => {
            function_name(name)?;
            if let Some(config) = config {
                function_config(config)?;
            }
            match code {
                Some(code) => sha256(&code.sha256),
                None => Ok(()),
            }
        }
        Command::DeleteFunction { name } | Command::PutFunctionConcurrency { name, .. } => function_name(name),
        Command::PublishVersion {
            name,
            description: text,
            ..
        } => {
            function_name(name)?;
            description(text)
        }
        Command::CreateAlias {
            function,
            name,
            version,
            routing: weights,
            description: text,
            ..
        } => {
            function_name(function)?;
            alias_name(name)?;
            parse_version(version)?;
            description(text)?;
            match weights {
                Some(weights) => routing(weights),
                None => Ok(()),
            }
        }
        Command::UpdateAlias {
            function,
            name,
            version,
            routing: weights,
            description: text,
            ..
        } => {
            function_name(function)?;
            alias_name(name)?;
            if let Some(version) = version {
                parse_version(version)?;
            }
            if let Some(text) = text {
                description(text)?;
            }
            match weights {
                Some(Some(weights)) => routing(weights),
                _ => Ok(()),
            }
        }
        Command::DeleteAlias { function, name } => {
            function_name(function)?;
            alias_name(name)
        }
        Command::SetRegionQuota { region: label, .. } => region(label),
        Command::RegisterNode {
            address,
            region: label,
            key_pin,
            token,
            ..
        } => {
            region(label)?;
            if address.is_empty() {
                return Err(invalid("a node needs an address".into()));
            }
            if !key_pin.is_empty() {
                sha256(key_pin)?;
            }
            if let Some(token) = token {
                join_token_id(&token.id)?;
            }
            Ok(())
        }
        Command::RemoveNode { .. } | Command::RecordAttempt { .. } => Ok(()),
        Command::Batch(commands) => commands.iter().try_for_each(|inner| match inner {
            Command::Batch(_) => Err(invalid("batches do not nest".into())),
            inner => self::command(inner),
        }),
        Command::PutEventInvokeConfig {
            function,
            on_success,
            on_failure,
            ..
        } => {
            function_name(function)?;
            for destination in [on_success, on_failure].into_iter().flatten().flatten() {
                function_name(destination)?;
            }
            Ok(())
        }
        Command::DeleteEventInvokeConfig { function, .. }
        | Command::ReplayFailedEvents { function, .. }
        | Command::DeleteFailedEvents { function, .. } => function_name(function),
        Command::EnqueueEvent(event) => {
            function_name(&event.function)?;
            if event.id.is_empty() || event.id.contains('/') {
                return Err(invalid(format!("invalid event id {:?}", event.id)));
            }
            Ok(())
        }
        Command::CreateAccessKey(key) => {
            access_key_id(&key.id)?;
            sha256(&key.secret_digest)?;
            description(&key.description)
        }
        Command::DeleteAccessKey { id } => access_key_id(id),
        Command::SetClusterCa(ca) => {
            pem_text("the CA certificate", &ca.certificate_pem)?;
            if ca.operator_signed() {
                return Ok(());
            }
            pem_text("the CA key", &ca.key_pem)
        }
        Command::CreateJoinToken(token) => {
            join_token_id(&token.id)?;
            sha256(&token.secret_digest)?;
            if token.expires_ms <= token.created_ms {
                return Err(invalid("a join token must expire after it is created".into()));
            }
            Ok(())
        }
        Command::DeleteJoinToken { id } => join_token_id(id),
    }
}
