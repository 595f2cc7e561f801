//! The node side of scheduling: the grants this node is running, which its
//! heartbeats report to the leader (the loop is `Service::run_heartbeats`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Grant, RunningGrant};

#[derive(Default)]
pub struct Agent {
    running: Mutex<HashMap<u64, Running>>,
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
