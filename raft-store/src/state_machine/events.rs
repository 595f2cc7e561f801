//! Asynchronous invocations: the event queue, retries, destinations, the
//! failed-event store, and per-function event-invoke configuration.
//!
//! The dispatcher (on the leader) reports each attempt with
//! [`Command::RecordAttempt`](crate::Command::RecordAttempt); whether a retry
//! is left, and where a finished event's record goes, is decided here so
//! that every node agrees.

use serde_json::{json, Value};

use super::functions::{get_function, refuse, require};
use super::kv::{get_json, scan_json, KvRead, Overlay};
use crate::command::{ApplyError, AttemptOutcome, CommandResult, Response};
use crate::error::StoreError;
use crate::keys;
use crate::model::{
    EventInvokeConfig, EventRecord, FailedEvent, FailureCondition, DEFAULT_MAX_EVENT_AGE_S, DEFAULT_MAX_RETRY_ATTEMPTS,
    LATEST,
};
use crate::validate;

type Staged<'a, 'b> = Overlay<'a, dyn KvRead + 'b>;

fn qualifier_or_latest(qualifier: &str) -> &str {
    if qualifier.is_empty() {
        LATEST
    } else {
        qualifier
    }
}

pub fn get_event_invoke_config(
    kv: &(impl KvRead + ?Sized),
    function: &str,
    qualifier: &str,
) -> Result<Option<EventInvokeConfig>, StoreError> {
    get_json(kv, &keys::event_invoke_config(function, qualifier_or_latest(qualifier)))
}

/// The configuration that applies to `function:qualifier`: its own, or Lambda's defaults.
pub fn effective_event_invoke_config(
    kv: &(impl KvRead + ?Sized),
    function: &str,
    qualifier: &str,
) -> Result<EventInvokeConfig, StoreError> {
    Ok(
        get_event_invoke_config(kv, function, qualifier)?.unwrap_or_else(|| EventInvokeConfig {
            function: function.to_string(),
            qualifier: qualifier_or_latest(qualifier).to_string(),
            max_retry_attempts: DEFAULT_MAX_RETRY_ATTEMPTS,
            max_event_age_s: DEFAULT_MAX_EVENT_AGE_S,
            on_success: None,
            on_failure: None,
            last_modified_ms: 0,
        }),
    )
}

pub fn get_event(kv: &(impl KvRead + ?Sized), id: &str) -> Result<Option<EventRecord>, StoreError> {
    get_json(kv, &keys::event(id))
}

/// The events of `function` still queued, soonest due first.
pub fn list_queued_events(kv: &(impl KvRead + ?Sized), function: &str) -> Result<Vec<EventRecord>, StoreError> {
    let mut events: Vec<EventRecord> = scan_json::<EventRecord>(kv, keys::EVENTS)?
        .into_iter()
        .filter(|event| event.function == function)
        .collect();
    events.sort_by(|a, b| (a.due_ms, &a.id).cmp(&(b.due_ms, &b.id)));
    Ok(events)
}

/// The failed-event store's events of `function`, oldest failure first.
pub fn list_failed_events(kv: &(impl KvRead + ?Sized), function: &str) -> Result<Vec<FailedEvent>, StoreError> {
    let mut events: Vec<FailedEvent> = scan_json(kv, &keys::failed_events_of(function))?;
    events.sort_by(|a, b| (a.failed_ms, &a.event.id).cmp(&(b.failed_ms, &b.event.id)));
    Ok(events)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn put_config(
    kv: &mut Staged,
    function: &str,
    qualifier: &str,
    max_retry_attempts: Option<u32>,
    max_event_age_s: Option<u32>,
    on_success: Option<Option<&str>>,
    on_failure: Option<Option<&str>>,
    now_ms: i64,
) -> Result<CommandResult, StoreError> {
    refuse!(require(kv, function)?);
    let mut config = effective_event_invoke_config(kv, function, qualifier)?;
    config.max_retry_attempts = max_retry_attempts.unwrap_or(config.max_retry_attempts);
    config.max_event_age_s = max_event_age_s.unwrap_or(config.max_event_age_s);
    refuse!(validate::event_retry_policy(
        config.max_retry_attempts,
        config.max_event_age_s
    ));
    for (destination, slot) in [
        (on_success, &mut config.on_success),
        (on_failure, &mut config.on_failure),
    ] {
        if let Some(destination) = destination {
            *slot = destination.map(str::to_string);
        }
    }
    config.last_modified_ms = now_ms;
    kv.put_json(keys::event_invoke_config(function, &config.qualifier), &config)?;
    Ok(Ok(Response::EventInvokeConfig(config)))
}

pub(super) fn delete_config(kv: &mut Staged, function: &str, qualifier: &str) -> Result<CommandResult, StoreError> {
    let key = keys::event_invoke_config(function, qualifier_or_latest(qualifier));
    if kv.get(&key)?.is_none() {
        return Ok(Err(ApplyError::FailedPrecondition {
            message: format!(
                "function {function}:{} has no event invoke config",
                qualifier_or_latest(qualifier)
            ),
        }));
    }
    kv.delete(key);
    Ok(Ok(Response::None))
}

fn put_event(kv: &mut Staged, event: &EventRecord) -> Result<(), StoreError> {
    kv.put_json(keys::event(&event.id), event)?;
    kv.put(keys::event_due(event.due_ms, &event.id), Vec::new());
    Ok(())
}

fn remove_event(kv: &mut Staged, event: &EventRecord) {
    kv.delete(keys::event(&event.id));
    kv.delete(keys::event_due(event.due_ms, &event.id));
}

pub(super) fn enqueue(kv: &mut Staged, event: &EventRecord) -> Result<CommandResult, StoreError> {
    if let Some(existing) = get_event(kv, &event.id)? {
        return Ok(Ok(Response::Event(existing)));
    }
    // The target must exist when the event is accepted (as Lambda answers 404 then, not later).
    refuse!(require(kv, &event.function)?);
    let qualifier = event.qualifier.as_str();
    if qualifier != LATEST {
        let exists = match validate::parse_version(qualifier) {
            Ok(Some(number)) => super::functions::get_version(kv, &event.function, number)?.is_some(),
            _ => super::aliases::get_alias(kv, &event.function, qualifier)?.is_some(),
        };
        if !exists {
            return Ok(Err(ApplyError::FailedPrecondition {
                message: format!("function {}:{qualifier} not found", event.function),
            }));
        }
    }
    put_event(kv, event)?;
    Ok(Ok(Response::Event(event.clone())))
}

pub(super) fn record_attempt(
    kv: &mut Staged,
    id: &str,
    attempts: u32,
    outcome: &AttemptOutcome,
    now_ms: i64,
) -> Result<CommandResult, StoreError> {
    let Some(mut event) = get_event(kv, id)? else {
        return Ok(Ok(Response::None));
    };
    if event.attempts != attempts {
        return Ok(Ok(Response::None));
    }
    remove_event(kv, &event);
    let too_old = |event: &EventRecord, retry_in_ms: i64| {
        now_ms + retry_in_ms - event.accepted_ms > i64::from(event.max_event_age_s) * 1000
    };
    match outcome {
        AttemptOutcome::Succeeded {
            response,
            executed_version,
        } => {
            event.attempts += 1;
            if let Some(destination) = event.on_success.clone() {
                let record = destination_record(&event, "Success", executed_version, None, response, now_ms);
                send_to_destination(kv, &event, &destination, "success", record, now_ms)?;
            }
        }
        AttemptOutcome::Failed {
            error,
            executed_version,
            retry_in_ms,
        } => {
            event.attempts += 1;
            event.last_error = Some(error.clone());
            let condition = if event.attempts > event.max_retry_attempts {
                Some(FailureCondition::RetriesExhausted)
            } else if too_old(&event, *retry_in_ms) {
                Some(FailureCondition::EventAgeExceeded)
            } else {
                None
            };
            match condition {
                Some(condition) => fail_for_good(kv, event, condition, executed_version, now_ms)?,
                None => {
                    event.due_ms = now_ms + retry_in_ms;
                    put_event(kv, &event)?;
                }
            }
        }
        AttemptOutcome::NotRun { reason, retry_in_ms } => {
            if too_old(&event, *retry_in_ms) {
                event.last_error.get_or_insert_with(|| reason.clone());
                fail_for_good(kv, event, FailureCondition::EventAgeExceeded, "", now_ms)?;
            } else {
                event.due_ms = now_ms + retry_in_ms;
                put_event(kv, &event)?;
            }
        }
    }
    Ok(Ok(Response::None))
}

/// Sends a finished event's record to its failure destination, or keeps it
/// in the failed-event store when it has none (or it no longer exists).
fn fail_for_good(
    kv: &mut Staged,
    event: EventRecord,
    condition: FailureCondition,
    executed_version: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    if let Some(destination) = event.on_failure.clone() {
        if get_function(kv, &destination)?.is_some() {
            let error = event.last_error.clone().unwrap_or_default();
            let record = destination_record(
                &event,
                condition.as_str(),
                executed_version,
                Some("Unhandled"),
                &error,
                now_ms,
            );
            return send_to_destination(kv, &event, &destination, "failure", record, now_ms);
        }
    }
    let failed = FailedEvent {
        event,
        condition,
        failed_ms: now_ms,
    };
    kv.put_json(keys::failed_event(&failed.event.function, &failed.event.id), &failed)
}

/// Queues `record` as an event of the destination function, under that function's own configuration.
fn send_to_destination(
    kv: &mut Staged,
    source: &EventRecord,
    destination: &str,
    suffix: &str,
    record: Value,
    now_ms: i64,
) -> Result<(), StoreError> {
    let config = effective_event_invoke_config(kv, destination, LATEST)?;
    let event = EventRecord {
        id: format!("{}-{suffix}", source.id),
        function: destination.to_string(),
        qualifier: LATEST.to_string(),
        function_arn: arn_of(&source.function_arn, destination),
        payload: record.to_string(),
        region: source.region.clone(),
        accepted_ms: now_ms,
        attempts: 0,
        due_ms: now_ms,
        max_retry_attempts: config.max_retry_attempts,
        max_event_age_s: config.max_event_age_s,
        on_success: config.on_success,
        on_failure: config.on_failure,
        last_error: None,
    };
    if get_event(kv, &event.id)?.is_none() {
        put_event(kv, &event)?;
    }
    Ok(())
}

/// `arn:…:function:source[:qualifier]` → `arn:…:function:destination`.
fn arn_of(source_arn: &str, destination: &str) -> String {
    match source_arn.find(":function:") {
        Some(at) => format!("{}:function:{destination}", &source_arn[..at]),
        None => destination.to_string(),
    }
}

/// A JSON value from a document that should be JSON, or the text as a string.
fn as_json(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Lambda's invocation record, as destinations receive it.
fn destination_record(
    event: &EventRecord,
    condition: &str,
    executed_version: &str,
    function_error: Option<&str>,
    response: &str,
    now_ms: i64,
) -> Value {
    let mut response_context = json!({ "statusCode": 200, "executedVersion": executed_version });
    if let Some(error) = function_error {
        response_context["functionError"] = json!(error);
    }
    json!({
        "version": "1.0",
        "timestamp": crate::time::rfc3339_ms(now_ms),
        "requestContext": {
            "requestId": event.id,
            "functionArn": event.function_arn,
            "condition": condition,
            "approximateInvokeCount": event.attempts,
        },
        "requestPayload": as_json(&event.payload),
        "responseContext": response_context,
        "responsePayload": as_json(response),
    })
}

/// Moves failed events back into the queue as new (attempts and age start over).
pub(super) fn replay(
    kv: &mut Staged,
    function: &str,
    ids: &[String],
    now_ms: i64,
) -> Result<CommandResult, StoreError> {
    let mut count = 0;
    for failed in selected_failed(kv, function, ids)? {
        kv.delete(keys::failed_event(function, &failed.event.id));
        let mut event = failed.event;
        event.attempts = 0;
        event.accepted_ms = now_ms;
        event.due_ms = now_ms;
        event.last_error = None;
        put_event(kv, &event)?;
        count += 1;
    }
    Ok(Ok(Response::Count(count)))
}

pub(super) fn delete_failed(kv: &mut Staged, function: &str, ids: &[String]) -> Result<CommandResult, StoreError> {
    let mut count = 0;
    for failed in selected_failed(kv, function, ids)? {
        kv.delete(keys::failed_event(function, &failed.event.id));
        count += 1;
    }
    Ok(Ok(Response::Count(count)))
}

/// The failed events named by `ids`, or all of the function's when `ids` is empty.
fn selected_failed(kv: &Staged, function: &str, ids: &[String]) -> Result<Vec<FailedEvent>, StoreError> {
    if ids.is_empty() {
        return list_failed_events(kv, function);
    }
    let mut selected = Vec::new();
    for id in ids {
        if let Some(failed) = get_json(kv, &keys::failed_event(function, id))? {
            selected.push(failed);
        }
    }
    Ok(selected)
}

/// Deletes a function's event configuration and failed events with it.
pub(super) fn delete_function_events(kv: &mut Staged, function: &str) -> Result<(), StoreError> {
    for prefix in [
        keys::event_invoke_configs_of(function),
        keys::failed_events_of(function),
    ] {
        for (key, _) in kv.scan_prefix(&prefix)? {
            kv.delete(key);
        }
    }
    Ok(())
}
