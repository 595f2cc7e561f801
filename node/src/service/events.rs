//! Asynchronous invocations: accepting an event (committed through Raft
//! before the 202), the leader's dispatcher that runs due events through
//! the same grant path as synchronous calls and commits each outcome, the
//! event-invoke configuration, and the failed-event store.
//!
//! Delivery is at least once: a dispatcher that dies between running an
//! event and committing its outcome leaves it queued, and the next leader
//! runs it again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use floe_raft_store::command::AttemptOutcome;
use floe_raft_store::model::{EventInvokeConfig, EventRecord, FailedEvent, LATEST};
use floe_raft_store::{keys, state_machine, validate, ApplyError, Command, Response};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::functions::now_ms;
use super::invoke::{InvokeOptions, InvokeResult};
use super::scheduling::Run;
use super::{Consistency, Service, ServiceError};

/// Error documents and responses kept in the Raft log (retries, destination
/// records) are cut to this size.
const MAX_RECORDED_BYTES: usize = 256 * 1024;

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
fn destination_name(destination: &str) -> Result<String, ServiceError> {
    let name = match destination.strip_prefix("arn:") {
        Some(_) => destination
            .split(":function:")
            .nth(1)
            .map(|rest| rest.split(':').next().unwrap_or_default())
            .ok_or_else(|| ServiceError::InvalidArgument(format!("{destination} is not a function ARN")))?,
        None => destination,
    };
    validate::function_name(name)?;
    Ok(name.to_string())
}

fn recorded(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    super::invoke::tail(&text, MAX_RECORDED_BYTES).to_string()
}

impl Service {
    /// Accepts an `Event` invocation: committed through Raft before it is acknowledged.
    pub(super) async fn accept_event(
        &self,
        function: &str,
        qualifier: &str,
        payload: Bytes,
        options: &InvokeOptions,
    ) -> Result<InvokeResult, ServiceError> {
        // Apply refuses a missing function, version or alias, so no read barrier is needed here;
        // the retry policy is read from this node's state (a change reaches it within a Raft round).
        validate::function_name(function)?;
        if !qualifier.is_empty() && qualifier != LATEST && validate::parse_version(qualifier).is_err() {
            validate::alias_name(qualifier)?;
        }
        let config = state_machine::effective_event_invoke_config(&self.reader, function, qualifier)?;
        let max_retry_attempts = options.max_retry_attempts.unwrap_or(config.max_retry_attempts);
        let max_event_age_s = options.max_event_age_s.unwrap_or(config.max_event_age_s);
        validate::event_retry_policy(max_retry_attempts, max_event_age_s)?;
        let now = now_ms();
        let event = EventRecord {
            id: uuid::Uuid::new_v4().to_string(),
            function: function.to_string(),
            qualifier: if qualifier.is_empty() { LATEST } else { qualifier }.to_string(),
            function_arn: self.function_arn(function, qualifier),
            payload: String::from_utf8_lossy(&payload).into_owned(),
            region: options.region.clone().unwrap_or_else(|| self.config.region.clone()),
            accepted_ms: now,
            attempts: 0,
            due_ms: now,
            max_retry_attempts,
            max_event_age_s,
            on_success: config.on_success,
            on_failure: config.on_failure,
            last_error: None,
        };
        let cluster = self.cluster()?;
        // Accepting an id twice keeps the first, so an accept whose outcome is unknown can be retried.
        let mut tries = 0;
        while !crate::failpoint::active("ack-event-before-commit") {
            match cluster.propose(Command::EnqueueEvent(event.clone())).await {
                Ok(_) => break,
                Err(ServiceError::FailedPrecondition(message)) => return Err(ServiceError::NotFound(message)),
                Err(ServiceError::OutcomeUnknown(message)) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(%message, "retrying an event accept whose outcome is unknown");
                }
                Err(e) => return Err(e),
            }
        }
        self.events_queued.notify_one();
        Ok(InvokeResult {
            payload: Bytes::new(),
            function_error: None,
            executed_version: String::new(),
            request_id: event.id,
            node_id: cluster.id,
            cold_start: false,
            log_tail: None,
            status_code: 202,
        })
    }

    /// Runs due events while this node leads; until `shutdown`.
    ///
    /// An event that could not run waits in memory (nothing is committed:
    /// only its age matters, which it carries) until its time to try again.
    /// One throttled by a quota also waits in line for a slot: each grant
    /// given back on this leader lets the longest-waiting one try at once,
    /// so a backlog drains at the rate the quota allows, not at the rate of
    /// the throttle delay, and waiting events hold no dispatch permit.
    pub async fn run_dispatcher(self: Arc<Self>, shutdown: CancellationToken) {
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        // Events that could not run, by the time to try again.
        let backoff: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        // Of those, the ones over a quota, longest waiting first.
        let throttled: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let permits = Arc::new(tokio::sync::Semaphore::new(self.config.scheduler.event_concurrency));
        // The term this node leads and since when (for the `dispatcher-stalls` failpoint).
        let mut leading: Option<(u64, std::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = self.events_queued.notified() => {}
                _ = self.freed_slots.notified() => {}
            }
            let Some(term) = self.leading_term() else {
                backoff.lock().expect("backoff lock").clear();
                throttled.lock().expect("throttled lock").clear();
                self.freed_slots.take();
                leading = None;
                continue;
            };
            // One throttled event may try again per slot given back since the last round.
            let freed = self.freed_slots.take();
            if freed > 0 {
                let mut throttled = throttled.lock().expect("throttled lock");
                let mut backoff = backoff.lock().expect("backoff lock");
                let mut woken = 0;
                while woken < freed {
                    let Some(id) = throttled.pop_front() else { break };
                    if let Some(at) = backoff.get_mut(&id) {
                        *at = 0;
                        woken += 1;
                    }
                }
            }
            let since = match leading {
                Some((leading_term, since)) if leading_term == term => since,
                _ => leading.insert((term, std::time::Instant::now())).1,
            };
            if crate::failpoint::active("dispatcher-stalls") && since.elapsed() < Duration::from_secs(30) {
                continue;
            }
            let busy = in_flight.lock().expect("in-flight lock").len();
            let waiting = backoff.lock().expect("backoff lock").len();
            let wanted = busy + waiting + permits.available_permits();
            let keys = match self.reader.first_keys(keys::EVENTS_DUE, wanted) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event queue");
                    continue;
                }
            };
            let now = now_ms();
            for key in keys {
                let Some((due_ms, id)) = keys::parse_event_due(&key) else {
                    continue;
                };
                if due_ms > now {
                    break;
                }
                if backoff
                    .lock()
                    .expect("backoff lock")
                    .get(&id)
                    .is_some_and(|at| *at > now)
                {
                    continue;
                }
                if !in_flight.lock().expect("in-flight lock").insert(id.clone()) {
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    in_flight.lock().expect("in-flight lock").remove(&id);
                    break;
                };
                let service = self.clone();
                let in_flight = in_flight.clone();
                let backoff = backoff.clone();
                let throttled = throttled.clone();
                tokio::spawn(async move {
                    match service.dispatch(&id).await {
                        Ok(Dispatched::Later { at, over_quota }) => {
                            backoff.lock().expect("backoff lock").insert(id.clone(), at);
                            if over_quota {
                                throttled.lock().expect("throttled lock").push_back(id.clone());
                            }
                        }
                        Ok(Dispatched::Done) => {
                            backoff.lock().expect("backoff lock").remove(&id);
                        }
                        Err(e) => tracing::debug!(error = %e, event = %id, "event dispatch failed; it stays queued"),
                    }
                    in_flight.lock().expect("in-flight lock").remove(&id);
                    drop(permit);
                });
            }
        }
    }

    /// Runs one event once and commits what came of it; or, when it could
    /// not run and is young enough to wait, says when to try again.
    async fn dispatch(&self, id: &str) -> Result<Dispatched, ServiceError> {
        let Some(event) = state_machine::get_event(&self.reader, id)? else {
            return Ok(Dispatched::Done);
        };
        let scheduler = &self.config.scheduler;
        let jitter = rand::rng().random_range(0..=scheduler.event_throttle_delay.as_millis() as i64 / 2);
        let not_run = |reason: String| AttemptOutcome::NotRun {
            reason,
            retry_in_ms: scheduler.event_throttle_delay.as_millis() as i64 + jitter,
        };
        let retry_in_ms = scheduler.event_retry_delay.as_millis() as i64 * (1 << event.attempts.min(10));
        let failed = |error: String, executed_version: String| AttemptOutcome::Failed {
            error,
            executed_version,
            retry_in_ms,
        };
        let mut over_quota = false;
        let outcome = if now_ms() - event.accepted_ms > i64::from(event.max_event_age_s) * 1000 {
            not_run("the event is older than its maximum age".into())
        } else {
            match self.resolve(&event.function, &event.qualifier).await {
                Err(e @ (ServiceError::Unavailable(_) | ServiceError::Internal(_))) => not_run(e.to_string()),
                Err(e) => failed(
                    error_document("ResourceNotFoundException", &e.to_string()),
                    String::new(),
                ),
                Ok(resolved) => {
                    let run = Run {
                        resolved,
                        request_id: event.id.clone(),
                        invoked_function_arn: event.function_arn.clone(),
                        client_context: None,
                        log_tail: false,
                        payload: Bytes::from(event.payload.clone()),
                    };
                    match self.run_placed(run, Some(event.region.clone())).await {
                        Ok(result) if result.function_error.is_some() => {
                            failed(recorded(&result.payload), result.executed_version)
                        }
                        Ok(result) => AttemptOutcome::Succeeded {
                            // Only a success destination needs the response.
                            response: if event.on_success.is_some() {
                                recorded(&result.payload)
                            } else {
                                String::new()
                            },
                            executed_version: result.executed_version,
                        },
                        Err(e @ (ServiceError::TooManyRequests { .. } | ServiceError::Throttled(_))) => {
                            over_quota = true;
                            not_run(e.to_string())
                        }
                        // Unknown: the node it was sent to failed or was cut off mid-call. The
                        // function may or may not have run; running it again (at least once)
                        // is better than spending one of its attempts on floe's own failure.
                        Err(e @ (ServiceError::Unavailable(_) | ServiceError::OutcomeUnknown(_))) => {
                            not_run(e.to_string())
                        }
                        Err(e) => failed(error_document("ServiceException", &e.to_string()), String::new()),
                    }
                }
            }
        };
        let now = now_ms();
        if let AttemptOutcome::NotRun { retry_in_ms, .. } = &outcome {
            if now + retry_in_ms - event.accepted_ms <= i64::from(event.max_event_age_s) * 1000 {
                return Ok(Dispatched::Later {
                    at: now + retry_in_ms,
                    over_quota,
                });
            }
        }
        self.cluster()?
            .propose(Command::RecordAttempt {
                id: event.id,
                attempts: event.attempts,
                outcome,
                now_ms: now,
            })
            .await?;
        Ok(Dispatched::Done)
    }

    pub async fn put_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
        change: EventConfigChange,
    ) -> Result<EventInvokeConfig, ServiceError> {
        validate::function_name(function)?;
        let destination = |d: Option<Option<String>>| -> Result<Option<Option<String>>, ServiceError> {
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
        match self.cluster()?.propose(command).await? {
            Response::EventInvokeConfig(config) => Ok(config),
            other => Err(ServiceError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    pub async fn get_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<EventInvokeConfig, ServiceError> {
        validate::function_name(function)?;
        self.read_barrier(Consistency::Linearizable).await?;
        if state_machine::get_function(&self.reader, function)?.is_none() {
            return Err(ApplyError::FunctionNotFound { name: function.into() }.into());
        }
        state_machine::get_event_invoke_config(&self.reader, function, qualifier)?
            .ok_or_else(|| ServiceError::NotFound(format!("function {function} has no event invoke config")))
    }

    pub async fn delete_event_invoke_config(&self, function: &str, qualifier: &str) -> Result<(), ServiceError> {
        validate::function_name(function)?;
        let command = Command::DeleteEventInvokeConfig {
            function: function.to_string(),
            qualifier: qualifier.to_string(),
        };
        match self.cluster()?.propose(command).await {
            Err(ServiceError::FailedPrecondition(message)) => Err(ServiceError::NotFound(message)),
            other => other.map(|_| ()),
        }
    }

    pub async fn list_failed_events(&self, function: &str) -> Result<Vec<FailedEvent>, ServiceError> {
        validate::function_name(function)?;
        self.read_barrier(Consistency::Linearizable).await?;
        Ok(state_machine::list_failed_events(&self.reader, function)?)
    }

    /// `function`'s events still queued, soonest due first.
    pub async fn list_queued_events(&self, function: &str) -> Result<Vec<EventRecord>, ServiceError> {
        validate::function_name(function)?;
        self.read_barrier(Consistency::Linearizable).await?;
        Ok(state_machine::list_queued_events(&self.reader, function)?)
    }

    /// Puts failed events back in the queue (all of the function's when `ids` is empty).
    pub async fn replay_failed_events(&self, function: &str, ids: Vec<String>) -> Result<u64, ServiceError> {
        validate::function_name(function)?;
        let command = Command::ReplayFailedEvents {
            function: function.to_string(),
            ids,
            now_ms: now_ms(),
        };
        let count = count_of(self.cluster()?.propose(command).await?);
        self.events_queued.notify_one();
        Ok(count)
    }

    pub async fn delete_failed_events(&self, function: &str, ids: Vec<String>) -> Result<u64, ServiceError> {
        validate::function_name(function)?;
        let command = Command::DeleteFailedEvents {
            function: function.to_string(),
            ids,
        };
        Ok(count_of(self.cluster()?.propose(command).await?))
    }
}

/// What became of one dispatch of an event.
enum Dispatched {
    /// Its outcome is committed (or it was no longer queued).
    Done,
    /// It did not run; it may try again at `at` (ms), or — over a quota —
    /// as soon as a slot frees.
    Later { at: i64, over_quota: bool },
}

/// Grants given back on the leader, counted, for the dispatcher: each lets
/// one event waiting for its quota try again at once.
#[derive(Default)]
pub struct FreedSlots {
    count: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl FreedSlots {
    pub fn freed(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }

    async fn notified(&self) {
        self.notify.notified().await
    }

    fn take(&self) -> usize {
        self.count.swap(0, Ordering::SeqCst)
    }
}

fn count_of(response: Response) -> u64 {
    match response {
        Response::Count(count) => count,
        _ => 0,
    }
}

fn error_document(error_type: &str, message: &str) -> String {
    serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string()
}
