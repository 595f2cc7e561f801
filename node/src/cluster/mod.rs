//! The Raft side of a node: starting openraft, proposing commands (forwarded
//! to the leader when this node is not it), linearizable reads, membership.
//!
//! - `network.rs`: openraft's RPCs over tonic (sending side), AppendEntries
//!   on the streams of `append_stream.rs`;
//! - `proposer.rs`: group commit on the leader;
//! - `peers.rs`: the node-to-node client (the receiving side is `api/internal.rs`);
//! - `tls.rs`: the cluster CA, node certificates, and mutual TLS with pinned keys.

pub mod append_stream;
pub mod network;
pub mod peers;
pub mod proposer;
pub mod tls;
pub mod token;
pub mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_raft_store::{Command, CommandResult, NodeId, Raft, Response, StateReader};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};

use crate::config::RaftConfig;
use crate::error::NodeError;
use network::Network;
use peers::Peers;

/// A started Raft member.
pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    /// Batches this node's writes while it leads.
    pub proposer: proposer::Proposer,
    pub reader: StateReader,
    pub peers: Arc<Peers>,
    leader_wait: Duration,
    /// A leader that has not heard from a majority for this long is taken to
    /// be cut off: it refuses new writes and reads at once (see `cut_off`).
    quorum_timeout: Duration,
    /// When this node, leading, last heard from each other node.
    contact: std::sync::Mutex<Contact>,
}

/// The leader's record of who it hears from (nodes report to it every
/// `scheduler.heartbeat_interval`).
#[derive(Default)]
struct Contact {
    term: u64,
    since: Option<Instant>,
    seen: BTreeMap<NodeId, Instant>,
}

/// openraft's configuration from ours.
pub fn raft_config(config: &RaftConfig) -> anyhow::Result<openraft::Config> {
    let raft = openraft::Config {
        cluster_name: "floe".into(),
        heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
        election_timeout_min: config.election_timeout_min.as_millis() as u64,
        election_timeout_max: config.election_timeout_max.as_millis() as u64,
        // openraft's 200 ms default is too short for a loaded machine.
        install_snapshot_timeout: 5_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
        max_in_snapshot_log_to_keep: config.keep_entries_after_snapshot,
        ..Default::default()
    };
    Ok(raft.validate()?)
}

impl Cluster {
    pub async fn start(
        id: NodeId,
        config: &RaftConfig,
        log_store: floe_raft_store::LogStore,
        state_machine: floe_raft_store::StateMachineStore,
        reader: StateReader,
        peers: Arc<Peers>,
    ) -> anyhow::Result<Cluster> {
        let network = Network {
            peers: peers.clone(),
            streams: Default::default(),
        };
        let raft = Raft::new(id, Arc::new(raft_config(config)?), network, log_store, state_machine).await?;
        Ok(Cluster {
            id,
            proposer: proposer::Proposer::start(raft.clone(), config.leader_wait),
            raft,
            reader,
            peers,
            leader_wait: config.leader_wait,
            // Twice the longest election timeout: far more than the gaps
            // between reports, short beside a write's wait for a leader.
            quorum_timeout: config.election_timeout_max * 2,
            contact: Default::default(),
        })
    }

    /// Shuts Raft down.
    /// Waits until Raft stops on an error of its own (storage failing, a log
    /// entry that cannot be read) and says why; `None` once Raft is shut down.
    pub async fn fatal(&self) -> Option<String> {
        let mut metrics = self.raft.metrics();
        loop {
            match &metrics.borrow_and_update().running_state {
                Err(openraft::error::Fatal::Stopped) => return None,
                Err(fatal) => return Some(fatal.to_string()),
                Ok(()) => {}
            }
            metrics.changed().await.ok()?;
        }
    }

    pub async fn stop(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "shutting Raft down");
        }
    }

    /// On a leader of several voters that no majority has acknowledged for
    /// `quorum_timeout` (cut off by a partition, or just resumed from a
    /// pause): an Unavailable to give at once, before anything is appended,
    /// so that a client tries another node (where a new leader is being
    /// elected) instead of waiting on a write that cannot commit here.
    pub fn cut_off(&self) -> Option<NodeError> {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().count();
        if voters <= 1 {
            return None;
        }
        let now = Instant::now();
        let mut contact = self.contact.lock().expect("contact lock");
        if contact.term != metrics.current_term || contact.since.is_none() {
            contact.term = metrics.current_term;
            contact.since = Some(now);
        }
        // A new leader gives the others time to report.
        if contact
            .since
            .is_some_and(|since| now.duration_since(since) < self.quorum_timeout)
        {
            return None;
        }
        let fresh = |at: &Instant| now.duration_since(*at) < self.quorum_timeout;
        let heard = membership
            .voter_ids()
            .filter(|v| *v == self.id || contact.seen.get(v).is_some_and(fresh))
            .count();
        (heard * 2 <= voters).then(|| {
            NodeError::Unavailable(format!(
                "node {} leads but has not heard from a majority for {:?}: try another node",
                self.id, self.quorum_timeout
            ))
        })
    }

    /// Notes a report from `node` (a scheduler heartbeat, taken while leading).
    pub fn heard_from(&self, node: NodeId) {
        self.contact
            .lock()
            .expect("contact lock")
            .seen
            .insert(node, Instant::now());
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Address of a member, from the current membership.
    pub fn member_address(&self, id: NodeId) -> Option<String> {
        self.metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr.clone())
    }

    /// The leader's id and address, if one is known. (Borrows the metrics
    /// rather than copying them: this runs on every invocation.)
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        let id = metrics.current_leader?;
        let address = metrics.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, address))
    }

    /// Waits a little for the metrics to change (a leader elected, say).
    async fn wait_for_change(&self) {
        let mut metrics = self.raft.metrics();
        let _ = tokio::time::timeout(Duration::from_millis(50), metrics.changed()).await;
    }

    /// Commits a command through the leader and returns the state machine's answer.
    pub async fn propose(&self, command: Command) -> Result<Response, NodeError> {
        let result = self.propose_raw(command).await?;
        result.map_err(NodeError::from)
    }

    async fn propose_raw(&self, command: Command) -> Result<CommandResult, NodeError> {
        floe_raft_store::validate::command(&command)?;
        let deadline = Instant::now() + self.leader_wait;
        loop {
            match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    if let Some(error) = self.cut_off() {
                        return Err(error);
                    }
                    match self.proposer.write(command.clone()).await {
                        Ok(written) => return Ok(written.result),
                        // Lost leadership before appending: nothing was written, so retrying is safe.
                        Err(proposer::WriteError::NotLeader) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Some((_, address)) => match self.forward(&address, &command).await {
                    Ok(written) => {
                        self.await_applied(written.index, deadline).await;
                        return Ok(written.result);
                    }
                    Err(Forward::Retry) => {}
                    Err(Forward::Failed(e)) => return Err(e),
                },
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Unavailable(format!(
                    "no leader accepted the write within {:?}",
                    self.leader_wait
                )));
            }
            self.wait_for_change().await;
        }
    }

    /// Waits (until `deadline` at most) for this node to apply the entry at
    /// `index`, so that a write acknowledged by a node is seen by that node's
    /// own local reads (an access key deleted through a follower is refused
    /// there from the answer on). The leader sent the commit index at once.
    async fn await_applied(&self, index: u64, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self
            .raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(index), "apply a forwarded write")
            .await
        {
            // The write is committed all the same; only this node lags.
            tracing::warn!(index, error = %e, "a forwarded write is not applied here yet");
        }
    }

    async fn forward(&self, address: &str, command: &Command) -> Result<proposer::Written, Forward> {
        match self.peers.propose(address, command).await {
            Ok((index, result)) => Ok(proposer::Written { result, index }),
            // The target was not (or no longer) the leader and wrote nothing.
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Err(Forward::Retry),
            // The leader refused the command unwritten (it failed the checks, or did not decode).
            Err(status) if status.code() == tonic::Code::InvalidArgument => Err(Forward::Failed(
                NodeError::InvalidArgument(format!("the leader refused the write: {}", status.message())),
            )),
            // The connection never opened, or the leader was shutting down and
            // refused the call unread: nothing was written.
            Err(status) if floe_proto::transport::not_processed(&status) => Err(Forward::Retry),
            Err(status) => Err(Forward::Failed(NodeError::OutcomeUnknown(format!(
                "the leader at {address} failed during the write, which may or may not have been applied: {}",
                status.message()
            )))),
        }
    }

    /// Makes the local state machine at least as new as every write
    /// acknowledged before this call (read index through the leader).
    pub async fn read_barrier(&self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.leader_wait;
        loop {
            let index = match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    if let Some(error) = self.cut_off() {
                        return Err(error);
                    }
                    match self.raft.ensure_linearizable().await {
                        Ok(_) => return Ok(()),
                        Err(_) => None,
                    }
                }
                Some((_, address)) => self.remote_read_index(&address).await,
                None => None,
            };
            if let Some(index) = index {
                let remaining = deadline.saturating_duration_since(Instant::now());
                return match self
                    .raft
                    .wait(Some(remaining))
                    .applied_index_at_least(Some(index), "read barrier")
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => Err(NodeError::Unavailable(format!("state machine did not catch up: {e}"))),
                };
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Unavailable(format!(
                    "no leader confirmed a linearizable read within {:?}; ask for a stale read to read this node's state",
                    self.leader_wait
                )));
            }
            self.wait_for_change().await;
        }
    }

    async fn remote_read_index(&self, address: &str) -> Option<u64> {
        self.peers.read_index(address).await.ok()
    }

    /// The current membership: voters and every node with its address.
    pub fn membership(&self) -> (BTreeSet<NodeId>, BTreeMap<NodeId, String>) {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().collect();
        let nodes = membership.nodes().map(|(id, node)| (*id, node.addr.clone())).collect();
        (voters, nodes)
    }

    /// On the leader: adds a node as a learner, waits for it to catch up, then makes it a voter.
    pub async fn add_voter(&self, id: NodeId, address: &str) -> Result<(), NodeError> {
        let (voters, nodes) = self.membership();
        if !nodes.contains_key(&id) {
            self.raft
                .add_learner(id, BasicNode::new(address), true)
                .await
                .map_err(|e| NodeError::Unavailable(format!("add learner {id}: {e}")))?;
        }
        if !voters.contains(&id) {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| NodeError::Unavailable(format!("promote node {id}: {e}")))?;
        }
        Ok(())
    }

    /// On the leader: removes a node from the voters and from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), NodeError> {
        let (voters, nodes) = self.membership();
        if !nodes.contains_key(&id) {
            return Err(NodeError::NotFound(format!("node {id} is not a member")));
        }
        if voters.contains(&id) && voters.len() == 1 {
            return Err(NodeError::FailedPrecondition(format!("node {id} is the only voter")));
        }
        let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(remaining), false)
            .await
            .map_err(|e| NodeError::Unavailable(format!("remove node {id}: {e}")))?;
        // A former voter stays a learner after the voter change; drop it entirely.
        if self.membership().1.contains_key(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| NodeError::Unavailable(format!("remove node {id}: {e}")))?;
        }
        Ok(())
    }

    pub fn is_leader(&self) -> bool {
        self.leading_term().is_some()
    }

    /// The newest term this node knows.
    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The current term, when this node leads it.
    pub fn leading_term(&self) -> Option<u64> {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        (metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id))
            .then_some(metrics.current_term)
    }
}

enum Forward {
    Retry,
    Failed(NodeError),
}

/// A peer's error with its causes ("transport error: http2 error: keep-alive
/// timed out"): a status message alone often names only the outermost one.
pub(crate) fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(error) = source {
        let cause = error.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = error.source();
    }
    text
}
