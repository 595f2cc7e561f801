//! Asynchronous invocations: accepting an event (committed through Raft
//! before the 202), the event-invoke configuration, the queue and the
//! failed-event store. The leader's dispatcher, which runs them, is
//! `dispatch.rs`.

use floe_raft_store::model::{EventInvokeConfig, EventRecord, FailedEvent, LATEST};
use floe_raft_store::{state_machine, validate, ApplyError, Command, Response};

use std::sync::Arc;

use super::{Consistency, Node};
use crate::error::NodeError;
use crate::shared::now_ms;

/// Error documents and responses kept in the Raft log (retries, destination
/// records) are cut to this size.
const MAX_RECORDED_BYTES: usize = 256 * 1024;

/// What a caller may set on one event, over the function's configuration.
#[derive(Debug, Clone, Default)]
pub struct EventOptions {
    /// The region whose quota it counts against; the entry node's when `None`.
    pub region: Option<String>,
    pub max_retry_attempts: Option<u32>,
    pub max_event_age_s: Option<u32>,
}

/// A change to an event-invoke configuration; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct EventConfigChange {
    pub max_retry_attempts: Option<u32>,
    pub max_event_age_s: Option<u32>,
    /// `Some(None)` clears a destination.
    pub on_success: Option<Option<String>>,
    pub on_failure: Option<Option<String>>,
}

/// A destination given as a function name or a Lambda function ARN.
fn destination_name(destination: &str) -> Result<String, NodeError> {
    let name = match destination.strip_prefix("arn:") {
        Some(_) => destination
            .split(":function:")
            .nth(1)
            .map(|rest| rest.split(':').next().unwrap_or_default())
            .ok_or_else(|| NodeError::InvalidArgument(format!("{destination} is not a function ARN")))?,
        None => destination,
    };
    validate::function_name(name)?;
    Ok(name.to_string())
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub(super) fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

pub(super) fn recorded(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    tail(&text, MAX_RECORDED_BYTES).to_string()
}

/// Asynchronous invocations as they wait: accepted, queued, failed.
pub struct Events {
    node: Arc<Node>,
    /// Wakes the event dispatcher when this node accepts or replays an event.
    pub queued: tokio::sync::Notify,
}

impl Events {
    pub fn new(node: Arc<Node>) -> Events {
        Events {
            node,
            queued: tokio::sync::Notify::new(),
        }
    }

    /// Accepts an `Event` invocation, committed through Raft before it is
    /// acknowledged; answers its id.
    pub(super) async fn accept(
        &self,
        function: &str,
        qualifier: &str,
        payload: &[u8],
        options: &EventOptions,
    ) -> Result<String, NodeError> {
        // Apply refuses a missing function, version or alias, so no read barrier is needed here;
        // the retry policy is read from this node's state (a change reaches it within a Raft round).
        validate::function_name(function)?;
        if !qualifier.is_empty() && qualifier != LATEST && validate::parse_version(qualifier).is_err() {
            validate::alias_name(qualifier)?;
        }
        let config = state_machine::effective_event_invoke_config(&self.node.reader, function, qualifier)?;
        let max_retry_attempts = options.max_retry_attempts.unwrap_or(config.max_retry_attempts);
        let max_event_age_s = options.max_event_age_s.unwrap_or(config.max_event_age_s);
        validate::event_retry_policy(max_retry_attempts, max_event_age_s)?;
        let now = now_ms();
        let event = EventRecord {
            id: uuid::Uuid::new_v4().to_string(),
            function: function.to_string(),
            qualifier: if qualifier.is_empty() { LATEST } else { qualifier }.to_string(),
            function_arn: self.node.function_arn(function, qualifier),
            payload: String::from_utf8_lossy(payload).into_owned(),
            region: options
                .region
                .clone()
                .unwrap_or_else(|| self.node.config.region.clone()),
            accepted_ms: now,
            attempts: 0,
            due_ms: now,
            max_retry_attempts,
            max_event_age_s,
            on_success: config.on_success,
            on_failure: config.on_failure,
            last_error: None,
        };
        let cluster = self.node.cluster()?;
        // Accepting an id twice keeps the first, so an accept whose outcome is unknown can be retried.
        let mut tries = 0;
        while !crate::failpoint::active("ack-event-before-commit") {
            match cluster.propose(Command::EnqueueEvent(event.clone())).await {
                Ok(_) => break,
                Err(NodeError::FailedPrecondition(message)) => return Err(NodeError::NotFound(message)),
                Err(NodeError::OutcomeUnknown(message)) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(%message, "retrying an event accept whose outcome is unknown");
                }
                Err(e) => return Err(e),
            }
        }
        self.queued.notify_one();
        Ok(event.id)
    }

    pub async fn put_config(
        &self,
        function: &str,
        qualifier: &str,
        change: EventConfigChange,
    ) -> Result<EventInvokeConfig, NodeError> {
        validate::function_name(function)?;
        let destination = |d: Option<Option<String>>| -> Result<Option<Option<String>>, NodeError> {
            Ok(match d {
                Some(Some(name)) if !name.is_empty() => Some(Some(destination_name(&name)?)),
                Some(_) => Some(None),
                None => None,
            })
        };
        let command = Command::PutEventInvokeConfig {
            function: function.to_string(),
            qualifier: qualifier.to_string(),
            max_retry_attempts: change.max_retry_attempts,
            max_event_age_s: change.max_event_age_s,
            on_success: destination(change.on_success)?,
            on_failure: destination(change.on_failure)?,
            now_ms: now_ms(),
        };
        match self.node.cluster()?.propose(command).await? {
            Response::EventInvokeConfig(config) => Ok(config),
            other => Err(NodeError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    pub async fn get_config(&self, function: &str, qualifier: &str) -> Result<EventInvokeConfig, NodeError> {
        validate::function_name(function)?;
        self.node.read_barrier(Consistency::Linearizable).await?;
        if state_machine::get_function(&self.node.reader, function)?.is_none() {
            return Err(ApplyError::FunctionNotFound { name: function.into() }.into());
        }
        state_machine::get_event_invoke_config(&self.node.reader, function, qualifier)?
            .ok_or_else(|| NodeError::NotFound(format!("function {function} has no event invoke config")))
    }

    pub async fn delete_config(&self, function: &str, qualifier: &str) -> Result<(), NodeError> {
        validate::function_name(function)?;
        let command = Command::DeleteEventInvokeConfig {
            function: function.to_string(),
            qualifier: qualifier.to_string(),
        };
        match self.node.cluster()?.propose(command).await {
            Err(NodeError::FailedPrecondition(message)) => Err(NodeError::NotFound(message)),
            other => other.map(|_| ()),
        }
    }

    pub async fn list_failed(&self, function: &str) -> Result<Vec<FailedEvent>, NodeError> {
        validate::function_name(function)?;
        self.node.read_barrier(Consistency::Linearizable).await?;
        Ok(state_machine::list_failed_events(&self.node.reader, function)?)
    }

    /// `function`'s events still queued, soonest due first.
    pub async fn list_queued(&self, function: &str) -> Result<Vec<EventRecord>, NodeError> {
        validate::function_name(function)?;
        self.node.read_barrier(Consistency::Linearizable).await?;
        Ok(state_machine::list_queued_events(&self.node.reader, function)?)
    }

    /// Puts failed events back in the queue (all of the function's when `ids` is empty).
    pub async fn replay_failed(&self, function: &str, ids: Vec<String>) -> Result<u64, NodeError> {
        validate::function_name(function)?;
        let command = Command::ReplayFailedEvents {
            function: function.to_string(),
            ids,
            now_ms: now_ms(),
        };
        let count = count_of(self.node.cluster()?.propose(command).await?);
        self.queued.notify_one();
        Ok(count)
    }

    pub async fn delete_failed(&self, function: &str, ids: Vec<String>) -> Result<u64, NodeError> {
        validate::function_name(function)?;
        let command = Command::DeleteFailedEvents {
            function: function.to_string(),
            ids,
        };
        Ok(count_of(self.node.cluster()?.propose(command).await?))
    }
}

fn count_of(response: Response) -> u64 {
    match response {
        Response::Count(count) => count,
        _ => 0,
    }
}

pub(super) fn error_document(error_type: &str, message: &str) -> String {
    serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string()
}
