//! Scheduling as one node holds it, whatever its role: the leader's soft
//! state (while it leads), the grants it runs, the shadows it keeps for
//! leaders, and what it knows of leaders' clocks.
//!
//! This is the pure core of scheduling: every method takes the time, none
//! does IO. The service sends its messages (grants, shadows, heartbeats,
//! forwarded invocations) and reads the quotas from the state machine; the
//! harness (`harness.rs`) passes the same messages between several of these
//! to play through elections, partitions and late deliveries.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::agent::{Agent, Lapsed, RunningGuard};
use super::clock::{Clock, LeaderClocks};
use super::leader::{Members, Scheduler};
use super::quota::Limits;
use super::shadow::Shadows;
use crate::config::SchedulerConfig;
use crate::shared::SandboxKey;
use crate::wire::{
    Grant, GrantAsk, GrantReply, HeartbeatReply, LoadReport, LoadView, Release, RunningGrant, ShadowGrant,
};
use floe_raft_store::NodeId;

/// What a node's heartbeat says about its sandboxes (the executor's part of a [`LoadReport`]).
pub struct Load {
    pub region: String,
    pub sandbox_mode: String,
    pub capacity_mb: u64,
    pub free_mb: u64,
    pub idle: Vec<(SandboxKey, u32)>,
}

pub struct NodeScheduling {
    /// The leader's soft state; empty unless this node leads.
    pub leader: Scheduler,
    /// The grants this node runs.
    pub agent: Arc<Agent>,
    /// Grants leaders (this node included) recorded here before using them.
    pub shadows: Shadows,
    clocks: Mutex<LeaderClocks>,
    clock: Clock,
}

/// The shadow of `grant` that the leader records on a majority before handing it out.
pub fn shadow_of(grant: &Grant, timeout_s: u64) -> ShadowGrant {
    ShadowGrant {
        term: grant.term,
        seq: grant.seq,
        node: grant.node,
        grant: RunningGrant {
            id: grant.id,
            region: grant.region.clone(),
            function: grant.function.clone(),
            reserved: grant.reserved,
            memory_mb: grant.memory_mb,
            remaining_ms: (Duration::from_millis(grant.lease_ms) + Duration::from_secs(timeout_s)).as_millis() as u64,
        },
    }
}

impl NodeScheduling {
    /// `clock` stamps this node's grants and answers while it leads.
    pub fn new(config: SchedulerConfig, clock: Clock) -> NodeScheduling {
        NodeScheduling {
            leader: Scheduler::new(config, clock),
            agent: Arc::default(),
            shadows: Shadows::default(),
            clocks: Mutex::default(),
            clock,
        }
    }

    /// Decides one invocation as the leader of `term`. A grant is recorded
    /// among this node's own shadows at once: if this node loses its term,
    /// they are all that is left of it, and the next leader hears of it
    /// from them. The caller then records it on the other voters.
    pub fn grant(
        &self,
        term: u64,
        ask: &GrantAsk,
        members: &Members,
        limits: Limits,
        now: Instant,
        rng: &mut impl rand::Rng,
    ) -> GrantReply {
        let reply = self.leader.grant(term, ask, members, limits, now, rng);
        if let GrantReply::Granted(grant) = &reply {
            self.shadows.record(shadow_of(grant, ask.timeout_s), now);
            self.received(grant, now);
        }
        reply
    }

    /// Notes a grant that came from its leader at `now`: a reading of that
    /// leader's clock, so the grant can be dated here (see [`Self::deadline`]).
    pub fn received(&self, grant: &Grant, now: Instant) {
        self.clocks
            .lock()
            .expect("clocks lock")
            .sample(grant.term, grant.granted_at_ms, now);
    }

    /// Forgets a grant that could not be recorded on a majority (it was never handed out).
    pub fn withdraw(&self, term: u64, grant: u64, now: Instant) {
        self.leader.withdraw(term, grant, now);
        self.shadows.remove(grant);
    }

    /// Records a leader's grant here (the `Shadow` RPC), unless this node is in a newer term.
    pub fn record_shadow(&self, shadow: ShadowGrant, current_term: u64, now: Instant) -> Result<(), String> {
        if shadow.term < current_term {
            return Err(format!(
                "a grant of term {} is stale: this node is in term {current_term}",
                shadow.term
            ));
        }
        self.shadows.record(shadow, now);
        Ok(())
    }

    /// Takes a report as the leader of `term`, and answers it.
    pub fn heartbeat_here(&self, term: u64, report: LoadReport, now: Instant) -> HeartbeatReply {
        self.leader.heartbeat(term, report, now);
        let (live_grants, issued) = self.leader.live_grants(term, now);
        // This leader's own grants that are over; shadows of earlier
        // leaders' grants stay, whatever the first reports of a term say.
        let live: HashSet<u64> = live_grants.iter().copied().collect();
        self.shadows.prune(&live, term, issued, true, now);
        let now_ms = self.clock.ms(now);
        self.clocks.lock().expect("clocks lock").sample(term, now_ms, now);
        HeartbeatReply {
            term,
            live_grants,
            issued,
            now_ms,
        }
    }

    /// Takes the leader's answer to this node's heartbeat.
    pub fn take_answer(&self, reply: HeartbeatReply, now: Instant) {
        let live: HashSet<u64> = reply.live_grants.into_iter().collect();
        self.shadows.prune(&live, reply.term, reply.issued, false, now);
        self.clocks
            .lock()
            .expect("clocks lock")
            .sample(reply.term, reply.now_ms, now);
    }

    /// This node's report for the leader of `term`. What it has seen of that
    /// leader is read before what runs, so the report is no older than it.
    pub fn report(&self, node: NodeId, term: u64, load: Load, now: Instant) -> LoadReport {
        let seen = self
            .clocks
            .lock()
            .expect("clocks lock")
            .latest(term)
            .map(|ms| (term, ms));
        LoadReport {
            node,
            region: load.region,
            sandbox_mode: load.sandbox_mode,
            capacity_mb: load.capacity_mb,
            free_mb: load.free_mb,
            idle: load.idle,
            running: self.agent.running(now),
            shadows: self.shadows.list(now),
            finished: self.agent.finished(now),
            seen,
        }
    }

    /// When `grant` can no longer start, on this node's clock: its lease
    /// read on its leader's clock. `None` when this node never heard from
    /// that leader (the grant cannot be dated, so it does not start).
    pub fn deadline(&self, grant: &Grant) -> Option<Instant> {
        self.clocks
            .lock()
            .expect("clocks lock")
            .local(grant.term, grant.granted_at_ms.saturating_add(grant.lease_ms))
    }

    /// Starts `grant` here unless it lapsed: by `deadline` (the entry
    /// node's own bound) or by its lease on its leader's clock.
    pub fn start(
        &self,
        grant: &Grant,
        deadline: Instant,
        timeout: Duration,
        now: Instant,
    ) -> Result<RunningGuard, Lapsed> {
        let deadline = self.deadline(grant).map(|leader| leader.min(deadline));
        self.agent.start(grant, deadline, timeout, now)
    }

    /// Notes that a grant is over here (reported to the next leader for a while).
    pub fn finished(&self, grant: u64, now: Instant) {
        self.agent.note_finished(grant, now);
    }

    /// Gives a grant back, on the leader; true when it was still held.
    pub fn release(&self, release: &Release, now: Instant) -> bool {
        self.leader.release(release, now)
    }

    /// The leader's view, for `floe cluster status`.
    pub fn view(&self, term: u64, now: Instant) -> LoadView {
        self.leader.view(term, now)
    }
}
