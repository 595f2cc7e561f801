//! Scheduling seen from the service layer: asking the leader for a grant
//! (waiting through elections), running a granted invocation here or on the
//! chosen node, giving the grant back, and this node's heartbeats.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Node;
use crate::error::NodeError;
use crate::executor::Executor;
use crate::scheduler::agent::{Lapsed, RunningGuard};
use crate::scheduler::clock::Clock;
use crate::scheduler::leader::Members;
use crate::scheduler::node::{shadow_of, Load, NodeScheduling};
use crate::scheduler::quota::Limits;
use crate::shared::SandboxKey;
use crate::wire::{Grant, GrantAsk, GrantReply, HeartbeatReply, LoadReport, LoadView, Release, ShadowGrant};
use floe_raft_store::state_machine;

/// How long after an election nodes report the grants they finished lately.
const FINISHED_REPORTING: Duration = Duration::from_secs(5);

/// Grants given back on the leader, counted, for the dispatcher: each lets
/// one event waiting for its quota try again at once.
#[derive(Default)]
pub struct FreedSlots {
    count: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl FreedSlots {
    fn freed(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// How many slots were freed since the last call.
    pub fn take(&self) -> usize {
        self.count.swap(0, Ordering::SeqCst)
    }
}

/// Grants, shadows, releases and heartbeats: this node's side of the
/// scheduler, and the leader's when it leads.
pub struct Scheduling {
    node: Arc<Node>,
    executor: Arc<Executor>,
    /// Scheduling as this node holds it: the leader's soft state while it
    /// leads, the grants it runs, the shadows it keeps, leaders' clocks.
    state: NodeScheduling,
    /// On the leader: grants given back, each of which lets one event
    /// waiting for its quota try again (see `dispatch.rs`).
    pub freed_slots: FreedSlots,
}

impl Scheduling {
    pub fn new(node: Arc<Node>, executor: Arc<Executor>) -> Scheduling {
        Scheduling {
            state: NodeScheduling::new(node.config.scheduler.clone(), Clock { epoch: Instant::now() }),
            node,
            executor,
            freed_slots: FreedSlots::default(),
        }
    }

    /// Decides a grant on the leader and records it on a majority of the
    /// voters before handing it out (see `scheduler/shadow.rs`).
    pub async fn grant_on_leader(&self, ask: &GrantAsk) -> GrantReply {
        let reply = self.grant_here(ask);
        let GrantReply::Granted(grant) = &reply else {
            return reply;
        };
        match self.record_on_majority(grant, ask).await {
            Ok(()) => reply,
            Err(message) => {
                self.state.withdraw(grant.term, grant.id, Instant::now());
                GrantReply::NotReady(message)
            }
        }
    }

    async fn record_on_majority(&self, grant: &Grant, ask: &GrantAsk) -> Result<(), String> {
        let cluster = self.node.cluster().map_err(|e| e.to_string())?;
        let (voters, addresses) = cluster.membership();
        let others: Vec<String> = voters
            .iter()
            .filter(|id| **id != cluster.id)
            .filter_map(|id| addresses.get(id).cloned())
            .collect();
        // This node (a voter) is one; the rest of a majority must answer.
        let needed = (voters.len() / 2 + 1).saturating_sub(usize::from(voters.contains(&cluster.id)));
        if needed == 0 {
            return Ok(());
        }
        let shadow = shadow_of(grant, ask.timeout_s);
        // Each call runs to its end in a task of its own, also once a majority
        // answered: a call dropped midway is a stream reset, and h2 closes a
        // connection (GOAWAY "too_many_internal_resets") once 1,024 answers
        // arrived for calls it reset — failing every call then on it.
        let (answers, mut answered) = tokio::sync::mpsc::channel(others.len().max(1));
        for address in others {
            let (shadow, answers, peers) = (shadow.clone(), answers.clone(), self.node.peers.clone());
            self.node.workers.spawn_task(async move {
                let result = peers
                    .shadow(&address, &shadow)
                    .await
                    .map_err(|e| e.message().to_string());
                let _ = answers.send(result).await;
            });
        }
        drop(answers);
        let (mut acks, mut last) = (0, String::new());
        while let Some(result) = answered.recv().await {
            match result {
                Ok(_) => acks += 1,
                Err(e) => last = e,
            }
            if acks >= needed {
                return Ok(());
            }
        }
        Err(format!(
            "could not record the grant on a majority of the voters: {last}"
        ))
    }

    /// Records a leader's grant here (the `Shadow` RPC), unless this node knows a newer term.
    pub fn record_shadow(&self, shadow: ShadowGrant) -> Result<(), NodeError> {
        let current = self.node.cluster()?.current_term();
        self.state
            .record_shadow(shadow, current, Instant::now())
            .map_err(NodeError::FailedPrecondition)
    }

    /// Decides a grant, on the leader.
    pub fn grant_here(&self, ask: &GrantAsk) -> GrantReply {
        let (Some(term), Some(cluster)) = (self.node.leading_term(), self.node.started_cluster()) else {
            return GrantReply::NotReady("this node is not the leader".into());
        };
        let limits = match self.limits(ask.region(), &ask.key.function) {
            Ok(limits) => limits,
            Err(e) => return GrantReply::NotReady(format!("cannot read the quotas: {e}")),
        };
        let (voters, addresses) = cluster.membership();
        let members = Members {
            voters: &voters,
            addresses: &addresses,
        };
        self.state
            .grant(term, ask, &members, limits, Instant::now(), &mut rand::rng())
    }

    /// The quotas an invocation of `function` in `region` runs under.
    fn limits(&self, region: &str, function: &str) -> Result<Limits, floe_raft_store::StoreError> {
        if crate::failpoint::active("quota-off") {
            return Ok(Limits {
                quota: u32::MAX,
                reserved_total: 0,
                reserved: None,
            });
        }
        Ok(Limits {
            quota: state_machine::region_quota(&self.node.reader, region)?,
            reserved_total: state_machine::reserved_total(&self.node.reader)?,
            reserved: state_machine::get_function(&self.node.reader, function)?.and_then(|f| f.reserved_concurrency),
        })
    }

    /// Asks the leader for a grant, waiting (up to `raft.leader_wait`) through
    /// elections and a new leader's rebuild.
    pub async fn request_grant(&self, ask: &GrantAsk) -> Result<Grant, NodeError> {
        let cluster = self.node.cluster()?;
        let wait = self.node.config.raft.leader_wait;
        let deadline = Instant::now() + wait;
        let mut last = "no leader is known".to_string();
        loop {
            let reply = match cluster.leader() {
                Some((leader, _)) if leader == cluster.id => {
                    if let Some(error) = cluster.cut_off() {
                        return Err(error);
                    }
                    Some(self.grant_on_leader(ask).await)
                }
                Some((_, address)) => match self.node.peers.grant(&address, ask).await {
                    Ok(reply) => Some(reply),
                    Err(e) => {
                        last = e.message().to_string();
                        None
                    }
                },
                None => None,
            };
            match reply {
                Some(GrantReply::Granted(grant)) => {
                    // A reading of the leader's clock: the grant's lease can be read here.
                    self.state.received(&grant, Instant::now());
                    return Ok(grant);
                }
                Some(GrantReply::Throttled { reason, message }) => {
                    return Err(NodeError::TooManyRequests { reason, message })
                }
                Some(GrantReply::NoCapacity(message)) => return Err(NodeError::Throttled(message)),
                Some(GrantReply::NotReady(message)) => last = message,
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Unavailable(format!(
                    "no leader granted the invocation within {wait:?}: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a granted invocation here unless its grant lapsed: by
    /// `start_by` or by its lease on its leader's clock.
    pub fn start(&self, grant: &Grant, start_by: Instant, timeout: Duration) -> Result<RunningGuard, Lapsed> {
        self.state.start(grant, start_by, timeout, Instant::now())
    }

    /// Ends a grant that ran (or failed to) here and gives it back.
    pub fn give_back(&self, grant: &Grant, key: SandboxKey, warm: bool) {
        self.state.finished(grant.id, Instant::now());
        self.release(Release {
            grant: grant.id,
            term: grant.term,
            node: grant.node,
            key,
            warm,
        });
    }

    /// Gives a grant back to the leader of its term, off the caller's path.
    fn release(&self, release: Release) {
        let Some(cluster) = self.node.started_cluster().cloned() else {
            return;
        };
        match cluster.leader() {
            Some((leader, _)) if leader == cluster.id => self.release_here(&release),
            Some((_, address)) => {
                let peers = self.node.peers.clone();
                self.node.workers.spawn_task(async move {
                    // A lost release is reconciled by the next heartbeat.
                    let _ = peers.release(&address, &release).await;
                });
            }
            None => {}
        }
    }

    /// Takes a grant back, on the leader (the `Release` RPC, or this node's
    /// own), and lets an event waiting for the slot try again.
    pub fn release_here(&self, release: &Release) {
        if self.state.release(release, Instant::now()) {
            self.freed_slots.freed();
        }
    }

    /// This node's load report, for the leader of its current term.
    pub fn load_report(&self) -> Option<LoadReport> {
        let cluster = self.node.started_cluster()?;
        let (capacity_mb, free_mb, idle) = self.executor.load();
        let load = Load {
            region: self.node.config.region.clone(),
            sandbox_mode: self.executor.isolation.describe(),
            capacity_mb,
            free_mb,
            idle,
        };
        Some(
            self.state
                .report(cluster.id, cluster.current_term(), load, Instant::now()),
        )
    }

    /// Takes a report, on the leader; `None` when this node does not lead.
    pub fn heartbeat_here(&self, report: LoadReport) -> Option<HeartbeatReply> {
        let term = self.node.leading_term()?;
        if let Some(cluster) = self.node.started_cluster() {
            cluster.heard_from(report.node);
        }
        Some(self.state.heartbeat_here(term, report, Instant::now()))
    }

    /// Sends this node's load to the leader every `scheduler.heartbeat_interval`, until `shutdown`.
    pub async fn run_heartbeats(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.node.config.scheduler.heartbeat_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Finished grants matter to a new leader only: they are reported for a
        // while after each election (and after this node starts), not always.
        let (mut term, mut report_finished_until) = (0, Instant::now() + FINISHED_REPORTING);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let (Some(cluster), Some(mut report)) = (self.node.started_cluster(), self.load_report()) else {
                continue;
            };
            if cluster.current_term() != term {
                term = cluster.current_term();
                report_finished_until = Instant::now() + FINISHED_REPORTING;
            }
            if Instant::now() > report_finished_until {
                report.finished.clear();
            }
            match cluster.leader() {
                Some((leader, _)) if leader == cluster.id => {
                    self.heartbeat_here(report);
                }
                Some((_, address)) => {
                    if let Err(e) = self.send_heartbeat(&address, &report).await {
                        tracing::debug!(error = %e, %address, "heartbeat to the leader failed");
                    }
                }
                None => {}
            }
        }
    }

    async fn send_heartbeat(&self, address: &str, report: &LoadReport) -> Result<(), String> {
        let reply = self
            .node
            .peers
            .heartbeat(address, report, self.node.config.scheduler.node_timeout)
            .await
            .map_err(|e| e.message().to_string())?;
        self.state.take_answer(reply, Instant::now());
        Ok(())
    }

    /// The load view, on the leader (the `Load` RPC); `None` elsewhere.
    pub fn view_here(&self) -> Option<LoadView> {
        Some(self.state.view(self.node.leading_term()?, Instant::now()))
    }

    /// The leader's load view (asked of the leader when this node is not it).
    pub async fn load_view(&self) -> Option<LoadView> {
        if let Some(term) = self.node.leading_term() {
            return Some(self.state.view(term, Instant::now()));
        }
        let (_, address) = self.node.started_cluster()?.leader()?;
        self.node.peers.load(&address).await.ok()
    }
}
