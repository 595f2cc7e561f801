//! The node side of scheduling: the grants this node is running, which its
//! heartbeats report to the leader (the loop is `Service::run_heartbeats`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Grant, RunningGrant};

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

impl Agent {
    /// Records that `grant`'s invocation starts here, with `timeout` at most.
    pub fn start(self: &Arc<Self>, grant: &Grant, timeout: Duration) -> RunningGuard {
        self.running.lock().expect("agent lock").insert(
            grant.id,
            Running {
                grant: grant.clone(),
                started: Instant::now(),
                timeout,
            },
        );
        RunningGuard {
            agent: self.clone(),
            id: grant.id,
        }
    }

    /// The grants finished within [`FINISHED_MEMORY`] of `now`.
    fn recent(&self, now: Instant) -> std::sync::MutexGuard<'_, VecDeque<(Instant, u64)>> {
        let mut finished = self.finished.lock().expect("agent lock");
        while finished
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > FINISHED_MEMORY)
        {
            finished.pop_front();
        }
        finished
    }

    /// Notes that `grant` is over on this node, whatever became of it.
    pub fn note_finished(&self, grant: u64) {
        let now = Instant::now();
        self.recent(now).push_back((now, grant));
    }

    /// Grants over lately, for the next heartbeat.
    pub fn finished(&self) -> Vec<u64> {
        self.recent(Instant::now()).iter().map(|(_, id)| *id).collect()
    }

    /// What the next heartbeat reports.
    pub fn running(&self) -> Vec<RunningGrant> {
        let now = Instant::now();
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
                remaining_ms: r.timeout.saturating_sub(now.duration_since(r.started)).as_millis() as u64,
            })
            .collect()
    }
}
