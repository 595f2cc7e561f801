//! Membership and status: bootstrap, join, add, remove, quotas.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use floe_raft_store::model::NodeRecord;
use floe_raft_store::{state_machine, validate, Command, NodeId, Response};
use openraft::BasicNode;

use std::sync::Arc;

use super::scheduling::Scheduling;
use super::Node;
use crate::error::NodeError;
use crate::executor::Executor;

/// The id of the node that starts a new cluster.
pub const FIRST_NODE_ID: NodeId = 1;

/// The file in the data dir that holds this node's id once it has one.
const NODE_ID_FILE: &str = "node_id";

/// This node's id, once it has one (`None` before it bootstraps or joins).
pub fn read_node_id(data_dir: &Path) -> anyhow::Result<Option<u64>> {
    match std::fs::read_to_string(data_dir.join(NODE_ID_FILE)) {
        Ok(text) => Ok(Some(text.trim().parse().context("parse node_id file")?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("read node_id file"),
    }
}

/// Records this node's id in its data dir, durably.
pub fn write_node_id(data_dir: &Path, id: u64) -> anyhow::Result<()> {
    let staging = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&staging, format!("{id}\n"))?;
    std::fs::File::open(&staging)?.sync_all()?;
    std::fs::rename(staging, data_dir.join(NODE_ID_FILE))?;
    Ok(())
}

/// A member's public address: from the registry; a node registered before
/// the planes had their own listeners served both on its one address.
fn public_address(record: Option<&NodeRecord>, peer_address: &str) -> String {
    match record {
        Some(record) if !record.public_address.is_empty() => record.public_address.clone(),
        _ => peer_address.to_string(),
    }
}

/// A snapshot of the cluster as this node sees it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: NodeId,
    pub leader: Option<(NodeId, String)>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub members: Vec<MemberView>,
    pub quotas: Vec<(String, u32)>,
    /// `(region, running, quota)` for every region of a member or with a quota.
    pub usage: Vec<(String, u32, u32)>,
    /// This node's background workers and their states.
    pub workers: Vec<(String, crate::workers::WorkerState)>,
    /// The leader's load view, when the leader answered.
    pub load: Option<crate::wire::LoadView>,
}

#[derive(Debug, Clone)]
pub struct MemberView {
    pub id: NodeId,
    /// Its public gRPC address (for clients).
    pub address: String,
    /// Its node-to-node address (in the Raft membership).
    pub peer_address: String,
    pub region: String,
    pub role: String,
    pub voter: bool,
    pub matched_index: Option<u64>,
    /// How the node isolates sandboxes, or "unreachable".
    pub sandbox_mode: String,
}

/// What `GetAccountSettings` reports.
pub struct AccountSettings {
    /// The region's concurrency quota.
    pub concurrency: u32,
    /// What the quota leaves to functions without reserved concurrency.
    pub unreserved: u32,
    pub function_count: u64,
    /// Bytes of every package that a function or version names.
    pub total_code_size: u64,
    /// floe's only limit on stored code: the size of the data dir's filesystem.
    pub code_storage_limit: u64,
}

fn filesystem_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter of the right type.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return 0;
    }
    (stats.f_blocks as u64).saturating_mul(stats.f_frsize as u64)
}

/// Membership, quotas and status: the cluster as an operator sees it.
pub struct Membership {
    node: Arc<Node>,
    scheduling: Arc<Scheduling>,
    executor: Arc<Executor>,
    /// Serialises membership changes on the leader (ids are allocated one at a time).
    lock: tokio::sync::Mutex<()>,
}

impl Membership {
    pub fn new(node: Arc<Node>, scheduling: Arc<Scheduling>, executor: Arc<Executor>) -> Membership {
        Membership {
            node,
            scheduling,
            executor,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// How this node isolates sandboxes (the `Hello` RPC and status).
    pub fn sandbox_mode(&self) -> String {
        self.executor.isolation.describe()
    }

    /// Takes the id the leader allocated for this waiting node and starts
    /// Raft under it (the `AssignId` RPC); the same id again is a no-op.
    pub async fn assign_id(&self, id: NodeId) -> Result<(), NodeError> {
        if id == 0 {
            return Err(NodeError::InvalidArgument("node id 0 is reserved".into()));
        }
        if let Some(cluster) = self.node.started_cluster() {
            return if cluster.id == id {
                Ok(())
            } else {
                Err(NodeError::FailedPrecondition(format!(
                    "this node already is node {}",
                    cluster.id
                )))
            };
        }
        write_node_id(&self.node.config.data_dir, id).map_err(|e| NodeError::Internal(format!("{e:#}")))?;
        self.node
            .start_raft(id)
            .await
            .map_err(|e| NodeError::Internal(format!("start raft: {e:#}")))?;
        tracing::info!(node_id = id, "assigned an id; raft started");
        Ok(())
    }

    /// First start of a new cluster: this node becomes node 1 and the only voter.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let cluster = self.node.start_raft(FIRST_NODE_ID).await?;
        let members = std::collections::BTreeMap::from([(FIRST_NODE_ID, BasicNode::new(&self.node.peer_address))]);
        cluster.raft.initialize(members).await?;
        cluster
            .propose(Command::RegisterNode {
                id: Some(FIRST_NODE_ID),
                address: self.node.peer_address.clone(),
                public_address: self.node.address.clone(),
                region: self.node.config.region.clone(),
            })
            .await?;
        Ok(())
    }

    /// On a waiting node: asks the members in `join` to add it, until one does.
    pub async fn join(&self, join: &[String], shutdown: &tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        loop {
            for address in join {
                match self.node.peers.add_node(address, &self.node.peer_address).await {
                    Ok(node_id) => {
                        tracing::info!(node_id, via = %address, "joined the cluster");
                        return Ok(());
                    }
                    Err(status) => {
                        tracing::warn!(via = %address, error = %status.message(), "join attempt failed; retrying")
                    }
                }
            }
            attempt += 1;
            let backoff = Duration::from_millis(200 * u64::from(attempt.min(10)));
            tokio::select! {
                _ = shutdown.cancelled() => anyhow::bail!("shut down before joining"),
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Adds the waiting node at `address`: registers it (allocating its id),
    /// tells it its id, then makes it a learner and a voter. Runs on the
    /// leader; other nodes forward it there.
    pub async fn add_node(&self, address: &str) -> Result<NodeId, NodeError> {
        let cluster = self.node.cluster()?;
        if !cluster.is_leader() {
            let (_, leader) = cluster
                .leader()
                .ok_or_else(|| NodeError::Unavailable("no leader to add the node".into()))?;
            return Ok(self.node.peers.add_node(&leader, address).await?);
        }
        let _one_at_a_time = self.lock.lock().await;
        let hello = self.node.peers.hello(address).await.map_err(|status| {
            NodeError::Unavailable(format!("cannot reach the new node at {address}: {}", status.message()))
        })?;
        let registered = state_machine::list_nodes(&self.node.reader)?;
        let id = match registered.iter().find(|node| node.address == address) {
            // Registered by an earlier attempt that did not finish: go on with that id.
            Some(node) if hello.node_id == 0 || hello.node_id == node.id => node.id,
            Some(node) => {
                return Err(NodeError::AlreadyExists(format!(
                    "address {address} belongs to node {}, but the node there says it is node {}",
                    node.id, hello.node_id
                )))
            }
            None if hello.node_id != 0 => {
                return Err(NodeError::FailedPrecondition(format!(
                    "the node at {address} already belongs to a cluster (as node {}): start it with an empty data dir",
                    hello.node_id
                )))
            }
            None => match cluster
                .propose(Command::RegisterNode {
                    id: None,
                    address: address.to_string(),
                    public_address: hello.public_address.clone(),
                    region: hello.region.clone(),
                })
                .await?
            {
                Response::Node(node) => node.id,
                other => return Err(NodeError::Internal(format!("unexpected response {other:?}"))),
            },
        };
        if hello.node_id == 0 {
            self.node
                .peers
                .assign_id(address, id)
                .await
                .map_err(|status| NodeError::Unavailable(format!("assign id to {address}: {}", status.message())))?;
        }
        cluster.add_voter(id, address).await?;
        tracing::info!(node_id = id, %address, "node added");
        Ok(id)
    }

    /// Applies a command another node forwarded, if this node leads
    /// (`FailedPrecondition`, nothing written, otherwise: the sender looks
    /// for the leader again). Answers the entry's index and its result.
    pub async fn propose_forwarded(
        &self,
        command: Command,
    ) -> Result<(u64, floe_raft_store::CommandResult), NodeError> {
        let cluster = self.node.cluster()?;
        match cluster.proposer.write(command).await {
            Ok(written) => {
                // The forwarding node answers its client once it has applied
                // the entry itself: send it the commit index now rather than
                // with the next entries (see vendor/openraft/FLOE-PATCH.md).
                let _ = cluster.raft.trigger().heartbeat().await;
                Ok((written.index, written.result))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a member from Raft and from the registry.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), NodeError> {
        let cluster = self.node.cluster()?;
        if !cluster.is_leader() {
            let (_, leader) = cluster
                .leader()
                .ok_or_else(|| NodeError::Unavailable("no leader to remove the node".into()))?;
            self.node.peers.remove_node(&leader, id).await?;
            return Ok(());
        }
        let _one_at_a_time = self.lock.lock().await;
        cluster.remove_member(id).await?;
        match cluster.propose(Command::RemoveNode { id }).await {
            Ok(_) | Err(NodeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lambda's account settings, for this node's region.
    pub async fn account_settings(&self) -> Result<AccountSettings, NodeError> {
        self.node.read_barrier(super::Consistency::Linearizable).await?;
        let concurrency = state_machine::region_quota(&self.node.reader, &self.node.config.region)?;
        let reserved = state_machine::reserved_total(&self.node.reader)?;
        let functions = state_machine::list_functions(&self.node.reader)?;
        let mut total_code_size = 0;
        for function in &functions {
            total_code_size += function.code.size;
            for version in state_machine::list_versions(&self.node.reader, &function.name)? {
                total_code_size += version.code.size;
            }
        }
        Ok(AccountSettings {
            code_storage_limit: filesystem_bytes(&self.node.config.data_dir),
            concurrency,
            unreserved: concurrency.saturating_sub(reserved),
            function_count: functions.len() as u64,
            total_code_size,
        })
    }

    pub async fn set_region_quota(&self, region: &str, concurrency: u32) -> Result<(), NodeError> {
        validate::region(region)?;
        self.node
            .cluster()?
            .propose(Command::SetRegionQuota {
                region: region.to_string(),
                concurrency,
            })
            .await?;
        Ok(())
    }

    /// The cluster as this node sees it (the leader also knows each member's progress).
    pub async fn cluster_view(&self) -> Result<ClusterView, NodeError> {
        let cluster = self.node.cluster()?;
        let metrics = cluster.metrics();
        let registry: Vec<NodeRecord> = state_machine::list_nodes(&self.node.reader)?;
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = metrics.replication.clone();
        let mut members: Vec<MemberView> = membership
            .nodes()
            .map(|(id, node)| {
                let record = registry.iter().find(|record| record.id == *id);
                let region = record.map(|record| record.region.clone()).unwrap_or_default();
                let voter = voters.contains(id);
                let role = if Some(*id) == metrics.current_leader {
                    "leader"
                } else if voter {
                    "follower"
                } else {
                    "learner"
                };
                let matched_index = replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index);
                MemberView {
                    id: *id,
                    address: public_address(record, &node.addr),
                    peer_address: node.addr.clone(),
                    region,
                    role: role.to_string(),
                    voter,
                    matched_index,
                    sandbox_mode: String::new(),
                }
            })
            .collect();
        // Each node's sandbox mode: its own, from the leader's view (heartbeats carry it), or asked.
        let load = self.scheduling.load_view().await;
        let reported = |id: NodeId| {
            let view = load.as_ref()?.nodes.iter().find(|n| n.node == id && n.live)?;
            Some(view.sandbox_mode.clone())
        };
        let targets: Vec<(NodeId, String)> = members.iter().map(|m| (m.id, m.peer_address.clone())).collect();
        let modes = targets.into_iter().map(|(id, address)| {
            let peers = self.node.peers.clone();
            let known = if id == cluster.id {
                Some(self.executor.isolation.describe())
            } else {
                reported(id)
            };
            async move {
                if let Some(known) = known {
                    return known;
                }
                match peers.hello(&address).await {
                    Ok(hello) => hello.sandbox_mode,
                    Err(_) => "unreachable".to_string(),
                }
            }
        });
        for (member, mode) in members.iter_mut().zip(futures::future::join_all(modes).await) {
            member.sandbox_mode = mode;
        }
        let quotas = state_machine::list_region_quotas(&self.node.reader)?;
        let mut regions: std::collections::BTreeSet<String> = members.iter().map(|m| m.region.clone()).collect();
        regions.extend(quotas.iter().map(|(region, _)| region.clone()));
        regions.remove("");
        let mut usage = Vec::new();
        for region in regions {
            let running = load
                .as_ref()
                .and_then(|l| l.running.iter().find(|(r, _)| *r == region).map(|(_, n)| *n))
                .unwrap_or(0);
            let quota = state_machine::region_quota(&self.node.reader, &region)?;
            usage.push((region, running, quota));
        }
        Ok(ClusterView {
            usage,
            workers: self.node.workers.states(),
            load,
            node_id: cluster.id,
            // From the same snapshot as the term: a leader read later (after
            // the awaits above) may belong to another term.
            leader: metrics.current_leader.and_then(|id| {
                let record = registry.iter().find(|record| record.id == id);
                Some((id, public_address(record, &membership.get_node(&id)?.addr)))
            }),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            members,
            quotas,
        })
    }
}
