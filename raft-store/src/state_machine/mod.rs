//! floe's replicated state machine: how each [`Command`] changes the tables.
//!
//! Pure logic over a [`KvRead`] view: no clock, no randomness, no IO but the
//! view. `store/state.rs` runs it over RocksDB; the tests below run it over a
//! `BTreeMap`. One file per table.

mod aliases;
mod auth;
mod cluster;
mod events;
mod functions;
pub mod kv;

pub use aliases::{get_alias, list_aliases};
pub use auth::{get_access_key, list_access_keys};
pub use cluster::{
    cluster_ca, get_join_token, get_node, list_join_tokens, list_nodes, list_region_quotas, region_quota,
    reserved_total, token_refusal,
};
pub use events::{
    effective_event_invoke_config, get_event, get_event_invoke_config, list_failed_events, list_queued_events,
};
pub use functions::{get_function, get_version, list_functions, list_versions};

use std::collections::BTreeMap;

use kv::{KvRead, Overlay};

use crate::command::{Command, CommandResult, Response};
use crate::error::StoreError;

/// Writes staged by applying commands: key → new value, `None` to delete.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Applies one command to `base`. A refused command returns its error and no
/// writes; an accepted one returns its response and its writes.
pub fn apply(base: &dyn KvRead, command: &Command) -> Result<(CommandResult, Writes), StoreError> {
    // A batch's commands are checked each, as apply takes them one by one.
    if !matches!(command, Command::Batch(_)) {
        if let Err(refusal) = crate::validate::command(command) {
            return Ok((Err(refusal), Writes::new()));
        }
    }
    let mut overlay = Overlay::new(base);
    let result = match command {
        Command::CreateFunction {
            name,
            config,
            code,
            revision_id,
            now_ms,
            publish,
        } => functions::publishing(
            functions::create(&mut overlay, name, config, code, revision_id, *now_ms)?,
            *publish,
            &mut overlay,
            name,
            *now_ms,
        )?,
        Command::UpdateFunction {
            name,
            config,
            code,
            expected_revision_id,
            revision_id,
            now_ms,
            publish,
        } => functions::publishing(
            functions::update(
                &mut overlay,
                name,
                config.as_ref(),
                code.as_ref(),
                expected_revision_id.as_deref(),
                revision_id,
                *now_ms,
            )?,
            *publish,
            &mut overlay,
            name,
            *now_ms,
        )?,
        Command::DeleteFunction { name } => functions::delete(&mut overlay, name)?,
        Command::PutFunctionConcurrency {
            name,
            reserved_concurrency,
        } => functions::put_concurrency(&mut overlay, name, *reserved_concurrency)?,
        Command::PublishVersion {
            name,
            description,
            expected_revision_id,
            now_ms,
            expected_code_sha256,
        } => functions::publish(
            &mut overlay,
            name,
            description,
            expected_revision_id.as_deref(),
            expected_code_sha256.as_deref(),
            *now_ms,
        )?,
        Command::CreateAlias {
            function,
            name,
            version,
            routing,
            description,
            revision_id,
        } => aliases::create(
            &mut overlay,
            function,
            name,
            version,
            routing.as_ref(),
            description,
            revision_id,
        )?,
        Command::UpdateAlias {
            function,
            name,
            version,
            routing,
            description,
            expected_revision_id,
            revision_id,
        } => aliases::update(
            &mut overlay,
            aliases::AliasUpdate {
                function,
                name,
                version: version.as_deref(),
                routing: routing.as_ref().map(|r| r.as_ref()),
                description: description.as_deref(),
                expected_revision_id: expected_revision_id.as_deref(),
                revision_id,
            },
        )?,
        Command::DeleteAlias { function, name } => aliases::delete(&mut overlay, function, name)?,
        Command::SetRegionQuota { region, concurrency } => cluster::set_quota(&mut overlay, region, *concurrency)?,
        Command::RegisterNode {
            id,
            address,
            public_address,
            region,
            key_pin,
            token,
        } => cluster::register(
            &mut overlay,
            cluster::Registration {
                id: *id,
                address,
                public_address,
                region,
                key_pin,
                token: token.as_ref(),
            },
        )?,
        Command::RemoveNode { id } => cluster::remove(&mut overlay, *id)?,
        Command::PutEventInvokeConfig {
            function,
            qualifier,
            max_retry_attempts,
            max_event_age_s,
            on_success,
            on_failure,
            now_ms,
        } => events::put_config(
            &mut overlay,
            function,
            qualifier,
            *max_retry_attempts,
            *max_event_age_s,
            on_success.as_ref().map(|d| d.as_deref()),
            on_failure.as_ref().map(|d| d.as_deref()),
            *now_ms,
        )?,
        Command::DeleteEventInvokeConfig { function, qualifier } => {
            events::delete_config(&mut overlay, function, qualifier)?
        }
        Command::EnqueueEvent(event) => events::enqueue(&mut overlay, event)?,
        Command::RecordAttempt {
            id,
            attempts,
            outcome,
            now_ms,
        } => events::record_attempt(&mut overlay, id, *attempts, outcome, *now_ms)?,
        Command::ReplayFailedEvents { function, ids, now_ms } => events::replay(&mut overlay, function, ids, *now_ms)?,
        Command::DeleteFailedEvents { function, ids } => events::delete_failed(&mut overlay, function, ids)?,
        Command::CreateAccessKey(key) => auth::create(&mut overlay, key)?,
        Command::DeleteAccessKey { id } => auth::delete(&mut overlay, id)?,
        Command::SetClusterCa(ca) => cluster::set_ca(&mut overlay, ca)?,
        Command::CreateJoinToken(token) => cluster::create_token(&mut overlay, token)?,
        Command::DeleteJoinToken { id } => cluster::delete_token(&mut overlay, id)?,
        Command::Batch(commands) => {
            let mut results = Vec::with_capacity(commands.len());
            for command in commands {
                if matches!(command, Command::Batch(_)) {
                    results.push(Err(crate::ApplyError::InvalidArgument {
                        message: "batches do not nest".into(),
                    }));
                    continue;
                }
                // Each command is all-or-nothing on its own, over the writes of those before it.
                let (result, writes) = apply(&overlay, command)?;
                overlay.extend(writes);
                results.push(result);
            }
            Ok(Response::Batch(results))
        }
    };
    let writes = if result.is_ok() {
        overlay.into_writes()
    } else {
        Writes::new()
    };
    Ok((result, writes))
}

#[cfg(test)]
mod tests;
