//! What a chaos run saw: every operation the workload issued with its
//! outcome and times, what the functions reported from inside their
//! sandboxes, the faults, and who each node thought led. Times are seconds
//! since the Unix epoch (functions report with their own clock, which is the
//! machine's).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How an operation ended, from the client's side.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok,
    /// Definitely not done (the cluster said so, or it never left).
    Fail(String),
    /// Maybe done: a timeout, or the leader failed mid-write.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// Sets register `key` to a value never written before.
    Write { key: usize, value: String },
    /// Reads register `key`; `value` is what it returned.
    Read { key: usize, value: Option<String> },
    /// A synchronous invocation.
    Invoke,
    /// An asynchronous invocation carrying a unique id.
    Event { id: String },
}

#[derive(Debug, Clone)]
pub struct Op {
    pub kind: OpKind,
    pub invoked: f64,
    pub completed: f64,
    pub outcome: Outcome,
}

/// A function's run as it reported it: start, and end if it got to say so
/// (else `longest`, how long it would have run at most).
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub start: f64,
    pub end: Option<f64>,
    pub longest: f64,
}

impl Interval {
    pub fn end_or_longest(&self) -> f64 {
        self.end.unwrap_or(self.start + self.longest)
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub at: f64,
    pub what: String,
    /// When it was undone (links whole, nodes running again).
    pub healed: Option<f64>,
}

/// What bounds the time accepted events may take to run once the faults
/// are over (see `checker::drain`): the settings of the run.
#[derive(Debug, Clone, Default)]
pub struct DrainBound {
    /// An election plus a new leader's rebuild, and a dispatch round.
    pub recovery_s: f64,
    /// The longest wait an event can be in after a failed attempt (its
    /// retry delay, doubled per attempt), plus one throttle backoff.
    pub waits_s: f64,
    /// What one event holds a slot of the quota for, at most, with the
    /// grant, the sandbox round trip and the outcome's commit.
    pub per_event_s: f64,
}

/// A node's claim, at one moment, to lead a term.
#[derive(Debug, Clone)]
pub struct LeaderView {
    pub at: f64,
    pub node: usize,
    pub term: u64,
    pub leader: Option<u64>,
}

#[derive(Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    /// Function runs by request id.
    pub intervals: BTreeMap<String, Interval>,
    /// Event ids in the order their functions ran, with when the run was
    /// reported (repeats are duplicates).
    pub executed_events: Vec<(String, f64)>,
    pub faults: Vec<Fault>,
    /// When the run's last faults were undone and the workload went on on a whole cluster.
    pub final_heal: Option<f64>,
    pub leaders: Vec<LeaderView>,
    /// The region quota the run set.
    pub quota: u32,
    pub drain_bound: DrainBound,
    /// Events floe gave up on (its failed-event store): id → the last error.
    pub dead_lettered: BTreeMap<String, String>,
    /// Events still queued when the drain ended: id → what the cluster says of them.
    pub still_queued: BTreeMap<String, String>,
    /// The request id floe gave each accepted event: id → request id.
    pub event_request_ids: BTreeMap<String, String>,
    /// How each node isolated its sandboxes (`floe cluster status`).
    pub sandbox_modes: Vec<String>,
}

impl History {
    /// The ids of the events the cluster accepted (answered 202).
    pub fn accepted_event_ids(&self) -> std::collections::BTreeSet<&str> {
        self.ops
            .iter()
            .filter_map(|op| match (&op.kind, &op.outcome) {
                (OpKind::Event { id }, Outcome::Ok) => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }

    /// When each event first ran.
    pub fn first_runs(&self) -> BTreeMap<&str, f64> {
        let mut first: BTreeMap<&str, f64> = BTreeMap::new();
        for (id, at) in &self.executed_events {
            let entry = first.entry(id.as_str()).or_insert(*at);
            *entry = entry.min(*at);
        }
        first
    }
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The history, shared by the workload's tasks while they run.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<History>>);

impl Recorder {
    pub fn op(&self, op: Op) {
        self.0.lock().expect("history lock").ops.push(op);
    }

    pub fn fault(&self, what: impl Into<String>) {
        let fault = Fault {
            at: now(),
            what: what.into(),
            healed: None,
        };
        self.0.lock().expect("history lock").faults.push(fault);
    }

    /// The latest fault is undone.
    pub fn healed(&self) {
        if let Some(fault) = self.0.lock().expect("history lock").faults.last_mut() {
            fault.healed.get_or_insert(now());
        }
    }

    /// Every fault is over: the drain is timed from here.
    pub fn final_heal(&self) {
        self.0.lock().expect("history lock").final_heal = Some(now());
    }

    pub fn set_drain_bound(&self, bound: DrainBound) {
        self.0.lock().expect("history lock").drain_bound = bound;
    }

    pub fn event_request_id(&self, id: &str, request_id: &str) {
        self.0
            .lock()
            .expect("history lock")
            .event_request_ids
            .insert(id.to_string(), request_id.to_string());
    }

    /// The drain bound, in seconds, of the events accepted so far that had
    /// not run when the faults ended (see `checker::drain`).
    pub fn drain_limit(&self) -> f64 {
        let history = self.0.lock().expect("history lock");
        crate::checker::drain(&history).0.map_or(0.0, |(_, bound)| bound)
    }

    pub fn leader(&self, view: LeaderView) {
        self.0.lock().expect("history lock").leaders.push(view);
    }

    pub fn set_quota(&self, quota: u32) {
        self.0.lock().expect("history lock").quota = quota;
    }

    /// A line a function sent: `start ID TIME LONGEST`, `end ID TIME` or `event ID`.
    pub fn report(&self, line: &str) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let mut history = self.0.lock().expect("history lock");
        match parts[..] {
            ["start", id, time, longest] => {
                if let (Ok(start), Ok(longest)) = (time.parse(), longest.parse()) {
                    history.intervals.entry(id.to_string()).or_insert(Interval {
                        start,
                        end: None,
                        longest,
                    });
                }
            }
            ["end", id, time] => {
                if let (Some(interval), Ok(end)) = (history.intervals.get_mut(id), time.parse()) {
                    interval.end = Some(end);
                }
            }
            ["event", id] => history.executed_events.push((id.to_string(), now())),
            _ => {}
        }
    }

    /// Accepted events whose function has not run yet. (Events whose accept
    /// timed out may run too, so counting runs against accepts is not enough.)
    pub fn accepted_events_not_run(&self) -> usize {
        let history = self.0.lock().expect("history lock");
        let ran: std::collections::BTreeSet<&str> = history.executed_events.iter().map(|(id, _)| id.as_str()).collect();
        history
            .accepted_event_ids()
            .into_iter()
            .filter(|id| !ran.contains(id))
            .count()
    }

    pub fn take(&self) -> History {
        std::mem::take(&mut *self.0.lock().expect("history lock"))
    }
}
