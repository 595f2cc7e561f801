//! The node side of scheduling: the grants this node is running, which its
//! heartbeats report to the leader (the loop is `Service::run_heartbeats`).
//!
//! Whether a grant may still start and the record that it started are one
//! step under one lock, and reports read that record under the same lock:
//! a report either lists a grant or was built before it started, and one
//! built after the grant's deadline never misses one that runs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wire::{Grant, RunningGrant};

/// How long finished grants are reported: longer than a grant's lease, so a
/// new leader that learned of one from a shadow hears it is over.
const FINISHED_MEMORY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Agent {
    running: Mutex<HashMap<u64, Running>>,
    /// Grants given back lately (run, failed, or lapsed before starting).
    finished: Mutex<VecDeque<(Instant, u64)>>,
}

struct Running {
    grant: Grant,
    started: Instant,
    timeout: Duration,
}

/// A grant being run here; dropping it takes it off this node's reports.
pub struct RunningGuard {
    agent: Arc<Agent>,
    id: u64,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.agent.running.lock().expect("agent lock").remove(&self.id);
    }
}

/// A grant that reached this node after it could no longer start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lapsed;

impl Agent {
    /// Records that `grant`'s invocation starts here, with `timeout` at most,
    /// if `now` is before its `deadline` (which `None` means it cannot be known).
    pub fn start(
        self: &Arc<Self>,
        grant: &Grant,
        deadline: Option<Instant>,
        timeout: Duration,
        now: Instant,
    ) -> Result<RunningGuard, Lapsed> {
        let mut running = self.running.lock().expect("agent lock");
        if deadline.is_none_or(|deadline| now > deadline) {
            return Err(Lapsed);
        }
        running.insert(
            grant.id,
            Running {
                grant: grant.clone(),
                started: now,
                timeout,
            },
        );
        Ok(RunningGuard {
            agent: self.clone(),
            id: grant.id,
        })
    }

    /// The grants finished within [`FINISHED_MEMORY`] of `now`.
    fn recent(&self, now: Instant) -> std::sync::MutexGuard<'_, VecDeque<(Instant, u64)>> {
        let mut finished = self.finished.lock().expect("agent lock");
        while finished
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > FINISHED_MEMORY)
        {
            finished.pop_front();
        }
        finished
    }

    /// Notes that `grant` is over on this node, whatever became of it.
    pub fn note_finished(&self, grant: u64, now: Instant) {
        self.recent(now).push_back((now, grant));
    }

    /// Grants over lately, for the next heartbeat.
    pub fn finished(&self, now: Instant) -> Vec<u64> {
        self.recent(now).iter().map(|(_, id)| *id).collect()
    }

    /// What the next heartbeat reports.
    pub fn running(&self, now: Instant) -> Vec<RunningGrant> {
        self.running
            .lock()
            .expect("agent lock")
            .iter()
            .map(|(id, r)| RunningGrant {
                id: *id,
                region: r.grant.region.clone(),
                function: r.grant.function.clone(),
                reserved: r.grant.reserved,
                memory_mb: r.grant.memory_mb,
                remaining_ms: r
                    .timeout
                    .saturating_sub(now.saturating_duration_since(r.started))
                    .as_millis() as u64,
            })
            .collect()
    }
}
