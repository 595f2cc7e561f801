//! Scheduling seen from the service layer: asking the leader for a grant
//! (waiting through elections), running a granted invocation here or on the
//! chosen node, giving the grant back, and this node's heartbeats.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use floe_proto::internal::Execution;
use floe_raft_store::codec;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::invoke::{InvokeResult, Resolved};
use super::Service;
use crate::error::NodeError;
use crate::executor::{Invocation, LOG_TAIL_BYTES};
use crate::scheduler::leader::Members;
use crate::scheduler::node::{shadow_of, Load};
use crate::scheduler::quota::Limits;
use crate::shared::SandboxKey;
use crate::wire::{Grant, GrantAsk, GrantReply, HeartbeatReply, LoadReport, LoadView, Release, ShadowGrant};
use floe_raft_store::state_machine;

/// How long after an election nodes report the grants they finished lately.
const FINISHED_REPORTING: Duration = Duration::from_secs(5);
/// How late the `forwarded-invocations-arrive-late` failpoint delivers forwarded invocations.
const LATE_ARRIVAL: Duration = Duration::from_secs(6);
/// Beyond its lease and its function's timeout, what a forwarded invocation
/// may take (package fetch, sandbox start, the answer's trip back).
const EXECUTE_SLACK: Duration = Duration::from_secs(10);

/// One invocation, resolved and ready to run wherever it is placed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub resolved: Resolved,
    pub request_id: String,
    pub invoked_function_arn: String,
    pub client_context: Option<String>,
    pub log_tail: bool,
    /// Sent apart from the header (see the `Execution` message).
    #[serde(skip)]
    pub payload: Bytes,
}

/// The header of a forwarded invocation.
#[derive(Serialize, Deserialize)]
struct ExecuteHeader {
    grant: Grant,
    run: Run,
    /// What is left of the grant's lease when the request leaves the entry node.
    start_within_ms: u64,
}

impl Service {
    /// The current term, when this node leads it.
    pub fn leading_term(&self) -> Option<u64> {
        self.started_cluster()?.leading_term()
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
                self.scheduling.withdraw(grant.term, grant.id, Instant::now());
                GrantReply::NotReady(message)
            }
        }
    }

    async fn record_on_majority(&self, grant: &Grant, ask: &GrantAsk) -> Result<(), String> {
        let cluster = self.cluster().map_err(|e| e.to_string())?;
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
            let (shadow, answers, peers) = (shadow.clone(), answers.clone(), self.peers.clone());
            self.workers.spawn_task(async move {
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
        let current = self.cluster()?.current_term();
        self.scheduling
            .record_shadow(shadow, current, Instant::now())
            .map_err(NodeError::FailedPrecondition)
    }

    /// Decides a grant, on the leader.
    pub fn grant_here(&self, ask: &GrantAsk) -> GrantReply {
        let (Some(term), Some(cluster)) = (self.leading_term(), self.started_cluster()) else {
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
        self.scheduling
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
            quota: state_machine::region_quota(&self.reader, region)?,
            reserved_total: state_machine::reserved_total(&self.reader)?,
            reserved: state_machine::get_function(&self.reader, function)?.and_then(|f| f.reserved_concurrency),
        })
    }

    /// Asks the leader for a grant, waiting (up to `raft.leader_wait`) through
    /// elections and a new leader's rebuild.
    pub async fn request_grant(&self, ask: &GrantAsk) -> Result<Grant, NodeError> {
        let cluster = self.cluster()?;
        let wait = self.config.raft.leader_wait;
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
                Some((_, address)) => match self.peers.grant(&address, ask).await {
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
                    self.scheduling.received(&grant, Instant::now());
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

    /// Runs `run` where the leader places it, within the region's quota.
    pub async fn run_placed(&self, run: Run, region: Option<String>) -> Result<InvokeResult, NodeError> {
        let cluster = self.cluster()?;
        let config = &run.resolved.config;
        let ask = GrantAsk {
            entry_region: self.config.region.clone(),
            region,
            key: run.resolved.key(),
            memory_mb: u64::from(config.memory_mb),
            timeout_s: u64::from(config.timeout_s),
        };
        let asked_at = Instant::now();
        let grant = self.request_grant(&ask).await?;
        let start_by = asked_at + Duration::from_millis(grant.lease_ms);
        if grant.node == cluster.id {
            return self.execute(grant, run, start_by).await;
        }
        let header = ExecuteHeader {
            start_within_ms: start_by.saturating_duration_since(Instant::now()).as_millis() as u64,
            grant: grant.clone(),
            run,
        };
        let request_id = header.run.request_id.clone();
        let payload = header.run.payload.to_vec();
        let header = codec::encode(&header).map_err(NodeError::Internal)?;
        // Never wait longer than the invocation could take: a node cut off mid-call must not hold the caller.
        let deadline = Duration::from_millis(grant.lease_ms) + Duration::from_secs(ask.timeout_s) + EXECUTE_SLACK;
        let reply = self
            .peers
            .execute(&grant.address, Execution { header, payload }, deadline)
            .await
            .map_err(|status| {
                let why = crate::cluster::describe(&status);
                // Nothing ran (no connection, or a node shutting down refused it unread).
                if floe_proto::transport::not_processed(&status) {
                    NodeError::Unavailable(format!("node {} is unreachable: {why}", grant.node))
                } else {
                    // It may have run: the caller must not retry blindly.
                    tracing::warn!(node = grant.node, request = %request_id, error = %why, "a forwarded invocation failed mid-call");
                    NodeError::OutcomeUnknown(format!(
                        "node {} failed while running the invocation: {why}",
                        grant.node
                    ))
                }
            })?;
        let result: Result<InvokeResult, NodeError> = codec::decode(&reply.header).map_err(NodeError::Internal)?;
        let mut result = result?;
        result.payload = Bytes::from(reply.payload);
        Ok(result)
    }

    /// Runs a forwarded invocation (the `Execute` RPC).
    pub async fn execute_forwarded(&self, execution: Execution) -> Result<Execution, NodeError> {
        let header: ExecuteHeader = codec::decode(&execution.header)
            .map_err(|e| NodeError::InvalidArgument(format!("undecodable execution: {e}")))?;
        if crate::failpoint::active("forwarded-invocations-arrive-late") {
            // As a link cut and healed would: TCP delivers the request seconds late.
            tokio::time::sleep(LATE_ARRIVAL).await;
        }
        // What the entry node had left of the lease; `start` also reads the
        // lease on the leader's clock, which a late arrival cannot stretch.
        let start_by = Instant::now() + Duration::from_millis(header.start_within_ms);
        let mut run = header.run;
        run.payload = Bytes::from(execution.payload);
        let result = self.execute(header.grant, run, start_by).await;
        let payload = result.as_ref().map(|r| r.payload.to_vec()).unwrap_or_default();
        let header = codec::encode(&result).map_err(NodeError::Internal)?;
        Ok(Execution { header, payload })
    }

    /// Runs a granted invocation on this node and gives the grant back.
    async fn execute(&self, grant: Grant, run: Run, start_by: Instant) -> Result<InvokeResult, NodeError> {
        let key = run.resolved.key();
        let outcome = self.execute_granted(&grant, run, start_by).await;
        let warm = outcome.as_ref().is_ok_and(|(_, warm)| *warm);
        self.scheduling.finished(grant.id, Instant::now());
        self.release(Release {
            grant: grant.id,
            term: grant.term,
            node: grant.node,
            key,
            warm,
        });
        outcome.map(|(result, _)| result)
    }

    async fn execute_granted(
        &self,
        grant: &Grant,
        run: Run,
        start_by: Instant,
    ) -> Result<(InvokeResult, bool), NodeError> {
        let resolved = &run.resolved;
        self.ensure_package(&resolved.code).await?;
        let code_dir = self.packages.extracted(&resolved.code.sha256)?;
        // A node cut off from the leader stops starting invocations once their
        // grants lapse; a grant that arrives late (a link held it back) lapses
        // when the leader's clock says so, not later.
        let timeout = Duration::from_secs(u64::from(resolved.config.timeout_s));
        let _running = self
            .scheduling
            .start(grant, start_by, timeout, Instant::now())
            .map_err(|_| {
                NodeError::Unavailable(format!(
                    "the grant for this invocation lapsed before it could start on node {}",
                    grant.node
                ))
            })?;
        let invocation = Invocation {
            key: resolved.key(),
            config: resolved.config.clone(),
            code_dir,
            request_id: run.request_id.clone(),
            invoked_function_arn: run.invoked_function_arn.clone(),
            region: self.config.region.clone(),
            client_context: run.client_context.clone(),
            payload: run.payload.clone(),
        };
        let outcome = self.executor.invoke(invocation).await?;
        let node_id = grant.node;
        let log_tail = run
            .log_tail
            .then(|| super::invoke::tail(&outcome.log, LOG_TAIL_BYTES).to_string());
        self.keep_log(node_id, resolved, &run.request_id, outcome.log);
        let result = InvokeResult {
            payload: outcome.payload,
            function_error: outcome.function_error,
            executed_version: resolved.version.clone(),
            request_id: run.request_id,
            node_id,
            cold_start: outcome.cold_start,
            log_tail,
            status_code: 200,
        };
        Ok((result, outcome.warm))
    }

    /// Gives a grant back to the leader of its term, off the caller's path.
    fn release(&self, release: Release) {
        let Some(cluster) = self.started_cluster().cloned() else {
            return;
        };
        match cluster.leader() {
            Some((leader, _)) if leader == cluster.id => self.release_here(&release),
            Some((_, address)) => {
                let peers = self.peers.clone();
                self.workers.spawn_task(async move {
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
        if self.scheduling.release(release, Instant::now()) {
            self.freed_slots.freed();
        }
    }

    /// This node's load report, for the leader of its current term.
    pub fn load_report(&self) -> Option<LoadReport> {
        let cluster = self.started_cluster()?;
        let (capacity_mb, free_mb, idle) = self.executor.load();
        let load = Load {
            region: self.config.region.clone(),
            sandbox_mode: self.executor.isolation.describe(),
            capacity_mb,
            free_mb,
            idle,
        };
        Some(
            self.scheduling
                .report(cluster.id, cluster.current_term(), load, Instant::now()),
        )
    }

    /// Takes a report, on the leader; `None` when this node does not lead.
    pub fn heartbeat_here(&self, report: LoadReport) -> Option<HeartbeatReply> {
        let term = self.leading_term()?;
        if let Some(cluster) = self.started_cluster() {
            cluster.heard_from(report.node);
        }
        Some(self.scheduling.heartbeat_here(term, report, Instant::now()))
    }

    /// Sends this node's load to the leader every `scheduler.heartbeat_interval`, until `shutdown`.
    pub async fn run_heartbeats(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.config.scheduler.heartbeat_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Finished grants matter to a new leader only: they are reported for a
        // while after each election (and after this node starts), not always.
        let (mut term, mut report_finished_until) = (0, Instant::now() + FINISHED_REPORTING);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let (Some(cluster), Some(mut report)) = (self.started_cluster(), self.load_report()) else {
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
            .peers
            .heartbeat(address, report, self.config.scheduler.node_timeout)
            .await
            .map_err(|e| e.message().to_string())?;
        self.scheduling.take_answer(reply, Instant::now());
        Ok(())
    }

    /// The leader's load view (asked of the leader when this node is not it).
    pub async fn load_view(&self) -> Option<LoadView> {
        if let Some(term) = self.leading_term() {
            return Some(self.scheduling.view(term, Instant::now()));
        }
        let (_, address) = self.started_cluster()?.leader()?;
        self.peers.load(&address).await.ok()
    }
}

impl Resolved {
    /// The sandboxes that can run it.
    pub fn key(&self) -> SandboxKey {
        SandboxKey {
            function: self.function.clone(),
            version: self.version.clone(),
            revision_id: self.revision_id.clone(),
        }
    }
}
