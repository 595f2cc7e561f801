//! The leader's event dispatcher: it runs due asynchronous events through
//! the same grant path as synchronous calls and commits what came of each
//! (done, retry at a time, dead-lettered).
//!
//! Delivery is at least once: a dispatcher that dies between running an
//! event and committing its outcome leaves it queued, and the next leader
//! runs it again.
//!
//! Events that could not run wait in memory ([`Waiting`], nothing committed:
//! only their age matters, which they carry). One over its region's quota
//! waits in line for a slot: each grant given back on this leader lets the
//! oldest one try at once (its own timer is only a fallback), so a backlog
//! drains at the rate the quota allows, not at the rate of a polling delay. One whose function is
//! at its reserved concurrency holds its function's events back for a
//! moment, so that a function that may run nothing cannot take every
//! dispatch from the others.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use floe_raft_store::command::AttemptOutcome;
use floe_raft_store::{keys, state_machine, Command};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::events::{error_document, recorded, Events};
use super::invoke::{Invocations, Run};
use super::scheduling::Scheduling;
use super::Node;
use crate::error::{NodeError, ThrottleReason};
use crate::shared::now_ms;

/// How often the dispatcher looks at the queue when nothing wakes it.
const ROUND: Duration = Duration::from_millis(50);
/// A dispatch slower than this is logged (debug) with its outcome, and
/// named when every dispatch is busy.
const SLOW_DISPATCH: Duration = Duration::from_secs(5);
/// How often the dispatcher says that every dispatch is busy.
const BUSY_WARNING_EVERY: Duration = Duration::from_secs(5);
/// An event over its region's quota waits for a freed slot, or this many
/// throttle delays at the latest.
const REGION_FULL_FALLBACK: i64 = 4;

/// What became of one dispatch of an event.
#[derive(Debug, Clone, PartialEq)]
enum Dispatched {
    /// Its outcome is committed (or it was no longer queued).
    Done,
    /// It did not run; it may try again at `at` (ms). `accepted` orders the
    /// line of events waiting for their quota: oldest first.
    Later {
        at: i64,
        accepted: i64,
        function: String,
        why: NotRun,
    },
}

/// Why an event did not run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NotRun {
    /// Its region is at its quota, or no node has room: a freed slot may let it run.
    RegionFull,
    /// Its function is at its reserved concurrency.
    FunctionFull,
    /// No leader, or the node it went to failed: only time helps.
    Unavailable,
}

/// The events that could not run, as the dispatcher remembers them. Pure.
#[derive(Default)]
struct Waiting {
    /// Event → when it may try again (ms).
    retry_at: HashMap<String, i64>,
    /// Events over their region's quota, oldest first (by when they were
    /// accepted: one throttled again keeps its place).
    in_line: BTreeSet<(i64, String)>,
    /// Event → its function, for those waiting.
    function_of: HashMap<String, String>,
    /// Functions at their reserved concurrency → until when their events wait.
    full: HashMap<String, i64>,
}

impl Waiting {
    fn len(&self) -> usize {
        self.retry_at.len()
    }

    /// Lets the `freed` oldest events over a quota try at once.
    fn wake(&mut self, freed: usize) {
        let mut woken = 0;
        while woken < freed {
            let Some((_, id)) = self.in_line.pop_first() else { break };
            if let Some(at) = self.retry_at.get_mut(&id) {
                *at = 0;
                woken += 1;
            }
        }
    }

    /// Whether `id` may be dispatched at `now`.
    fn may_try(&self, id: &str, now: i64) -> bool {
        if self.retry_at.get(id).is_some_and(|at| *at > now) {
            return false;
        }
        let function_full = self
            .function_of
            .get(id)
            .and_then(|function| self.full.get(function))
            .is_some_and(|until| *until > now);
        !function_full
    }

    fn later(&mut self, id: &str, accepted: i64, function: String, at: i64, why: NotRun) {
        self.retry_at.insert(id.to_string(), at);
        match why {
            NotRun::RegionFull => {
                self.in_line.insert((accepted, id.to_string()));
            }
            NotRun::FunctionFull => {
                let until = self.full.entry(function.clone()).or_insert(at);
                *until = (*until).max(at);
            }
            NotRun::Unavailable => {}
        }
        self.function_of.insert(id.to_string(), function);
    }

    fn done(&mut self, id: &str) {
        self.retry_at.remove(id);
        self.function_of.remove(id);
    }

    fn clear(&mut self) {
        *self = Waiting::default();
    }

    /// Forgets what has no event waiting any more.
    fn prune(&mut self, now: i64) {
        self.full.retain(|_, until| *until > now);
        let retry_at = &self.retry_at;
        self.in_line.retain(|(_, id)| retry_at.contains_key(id));
    }
}

/// The leader's event dispatcher.
pub struct Dispatcher {
    node: Arc<Node>,
    invocations: Arc<Invocations>,
    events: Arc<Events>,
    scheduling: Arc<Scheduling>,
}

impl Dispatcher {
    pub fn new(
        node: Arc<Node>,
        invocations: Arc<Invocations>,
        events: Arc<Events>,
        scheduling: Arc<Scheduling>,
    ) -> Dispatcher {
        Dispatcher {
            node,
            invocations,
            events,
            scheduling,
        }
    }

    /// Runs due events while this node leads; until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // Events being dispatched, with when each dispatch began.
        let in_flight: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let mut warned_busy: Option<Instant> = None;
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.node.config.scheduler.event_concurrency,
        ));
        // The term this node leads and since when (for the `dispatcher-stalls` failpoint).
        let mut leading: Option<(u64, std::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(ROUND) => {}
                _ = self.events.queued.notified() => {}
                _ = self.scheduling.freed_slots.notified() => {}
            }
            let Some(term) = self.node.leading_term() else {
                waiting.lock().expect("waiting lock").clear();
                self.scheduling.freed_slots.take();
                leading = None;
                continue;
            };
            let since = match leading {
                Some((leading_term, since)) if leading_term == term => since,
                _ => leading.insert((term, std::time::Instant::now())).1,
            };
            if crate::failpoint::active("dispatcher-stalls") && since.elapsed() < Duration::from_secs(30) {
                continue;
            }
            let now = now_ms();
            let waiting_count = {
                let mut waiting = waiting.lock().expect("waiting lock");
                waiting.wake(self.scheduling.freed_slots.take());
                waiting.prune(now);
                waiting.len()
            };
            let busy = in_flight.lock().expect("in-flight lock").len();
            let wanted = busy + waiting_count + permits.available_permits();
            let keys = match self.node.reader.first_keys(keys::EVENTS_DUE, wanted) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event queue");
                    continue;
                }
            };
            for key in keys {
                let Some((due_ms, id)) = keys::parse_event_due(&key) else {
                    continue;
                };
                if due_ms > now {
                    break;
                }
                if !waiting.lock().expect("waiting lock").may_try(&id, now) {
                    continue;
                }
                if in_flight.lock().expect("in-flight lock").contains_key(&id) {
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Every dispatch is busy while events are due, and one has
                    // been for long: say so (once in a while), naming it, so
                    // that a dispatch that does not end is seen, not only its
                    // effect.
                    if warned_busy.is_none_or(|at| at.elapsed() > BUSY_WARNING_EVERY) {
                        warned_busy = Some(Instant::now());
                        let in_flight = in_flight.lock().expect("in-flight lock");
                        let oldest = in_flight.iter().min_by_key(|(_, since)| **since);
                        if let Some((oldest, since)) = oldest.filter(|(_, since)| since.elapsed() > SLOW_DISPATCH) {
                            tracing::warn!(
                                busy = in_flight.len(),
                                oldest = %oldest,
                                for_s = since.elapsed().as_secs_f64(),
                                "every event dispatch is busy while events are due"
                            );
                        }
                    }
                    break;
                };
                in_flight
                    .lock()
                    .expect("in-flight lock")
                    .insert(id.clone(), Instant::now());
                let (dispatcher, in_flight, waiting) = (self.clone(), in_flight.clone(), waiting.clone());
                self.node.workers.spawn_task(async move {
                    let began = Instant::now();
                    let dispatched = dispatcher.dispatch(&id).await;
                    if began.elapsed() > SLOW_DISPATCH {
                        tracing::debug!(event = %id, took_s = began.elapsed().as_secs_f64(), outcome = ?dispatched, "slow event dispatch");
                    }
                    match dispatched {
                        Ok(Dispatched::Later {
                            at,
                            accepted,
                            function,
                            why,
                        }) => waiting
                            .lock()
                            .expect("waiting lock")
                            .later(&id, accepted, function, at, why),
                        Ok(Dispatched::Done) => waiting.lock().expect("waiting lock").done(&id),
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
    async fn dispatch(&self, id: &str) -> Result<Dispatched, NodeError> {
        let Some(event) = state_machine::get_event(&self.node.reader, id)? else {
            return Ok(Dispatched::Done);
        };
        let scheduler = &self.node.config.scheduler;
        let jitter = rand::rng().random_range(0..=scheduler.event_throttle_delay.as_millis() as i64 / 2);
        let retry_in_ms = scheduler.event_retry_delay.as_millis() as i64 * (1 << event.attempts.min(10));
        let failed = |error: String, executed_version: String| AttemptOutcome::Failed {
            error,
            executed_version,
            retry_in_ms,
        };
        let mut why = NotRun::Unavailable;
        let mut not_run = |reason: String, kind: NotRun| {
            why = kind;
            // Over its region's quota it tries again when a slot frees (oldest
            // first); its own timer is only the fallback, so that freed slots,
            // not timers, decide which waiting event goes next.
            let delay = match kind {
                NotRun::RegionFull => REGION_FULL_FALLBACK * scheduler.event_throttle_delay.as_millis() as i64,
                NotRun::FunctionFull | NotRun::Unavailable => scheduler.event_throttle_delay.as_millis() as i64,
            };
            AttemptOutcome::NotRun {
                reason,
                retry_in_ms: delay + jitter,
            }
        };
        let outcome = if now_ms() - event.accepted_ms > i64::from(event.max_event_age_s) * 1000 {
            not_run("the event is older than its maximum age".into(), NotRun::Unavailable)
        } else {
            match self.invocations.resolve(&event.function, &event.qualifier).await {
                Err(e @ (NodeError::Unavailable(_) | NodeError::Internal(_))) => {
                    not_run(e.to_string(), NotRun::Unavailable)
                }
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
                    match self.invocations.run_placed(run, Some(event.region.clone())).await {
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
                        Err(
                            e @ NodeError::TooManyRequests {
                                reason: ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
                                ..
                            },
                        ) => not_run(e.to_string(), NotRun::FunctionFull),
                        Err(e @ (NodeError::TooManyRequests { .. } | NodeError::Throttled(_))) => {
                            not_run(e.to_string(), NotRun::RegionFull)
                        }
                        // Unknown: the node it was sent to failed or was cut off mid-call. The
                        // function may or may not have run; running it again (at least once)
                        // is better than spending one of its attempts on floe's own failure.
                        Err(e @ (NodeError::Unavailable(_) | NodeError::OutcomeUnknown(_))) => {
                            not_run(e.to_string(), NotRun::Unavailable)
                        }
                        Err(e) => failed(error_document("ServiceException", &e.to_string()), String::new()),
                    }
                }
            }
        };
        let now = now_ms();
        if let AttemptOutcome::NotRun { retry_in_ms, reason } = &outcome {
            tracing::debug!(event = %event.id, attempts = event.attempts, ?why, %reason, "event not run");
            if now + retry_in_ms - event.accepted_ms <= i64::from(event.max_event_age_s) * 1000 {
                return Ok(Dispatched::Later {
                    at: now + retry_in_ms,
                    accepted: event.accepted_ms,
                    function: event.function,
                    why,
                });
            }
        }
        self.node
            .cluster()?
            .propose(Command::RecordAttempt {
                id: event.id,
                attempts: event.attempts,
                outcome,
                now_ms: now,
            })
            .await?;
        Ok(Dispatched::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_slots_wake_the_oldest_events_over_a_quota() {
        let mut waiting = Waiting::default();
        // Throttled in this order, but b was accepted first.
        waiting.later("a", 20, "f".into(), 500, NotRun::RegionFull);
        waiting.later("b", 10, "g".into(), 500, NotRun::RegionFull);
        waiting.later("c", 5, "g".into(), 500, NotRun::Unavailable);
        assert!(!waiting.may_try("a", 100) && !waiting.may_try("b", 100) && !waiting.may_try("c", 100));
        waiting.wake(1);
        assert!(waiting.may_try("b", 100), "the oldest first");
        assert!(!waiting.may_try("a", 100) && !waiting.may_try("c", 100));
        // b loses the slot to a synchronous call and is throttled again: it
        // keeps its place at the head of the line.
        waiting.later("b", 10, "g".into(), 900, NotRun::RegionFull);
        waiting.wake(1);
        assert!(waiting.may_try("b", 100) && !waiting.may_try("a", 100));
        // b runs; more slots free: a's turn, never c's (not over a quota).
        waiting.done("b");
        waiting.wake(5);
        assert!(waiting.may_try("a", 100));
        assert!(!waiting.may_try("c", 100));
        assert!(waiting.may_try("c", 500), "c tries again at its time");
    }

    #[test]
    fn a_function_at_its_reservation_holds_back_only_its_own_events() {
        let mut waiting = Waiting::default();
        waiting.later("s2", 1, "stopped".into(), 50, NotRun::Unavailable);
        waiting.later("s1", 2, "stopped".into(), 300, NotRun::FunctionFull);
        // s2's own wait is over, but its function is at its reservation; r1
        // (another function's, never dispatched yet) goes first.
        assert!(!waiting.may_try("s2", 100), "held back with its function");
        assert!(waiting.may_try("r1", 100), "other functions go first");
        assert!(waiting.may_try("s2", 300), "until the function's wait is over");
        waiting.prune(300);
        assert!(waiting.full.is_empty());
    }
}
