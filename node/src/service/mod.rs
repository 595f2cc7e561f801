//! The service layer: every operation of floe, once, whatever the adapter
//! (gRPC, Lambda REST) that calls it. Adapters convert wire types to these
//! calls and [`NodeError`](crate::error::NodeError) back to their statuses.

pub mod auth;
pub mod cluster;
pub mod dispatch;
pub mod events;
pub mod functions;
pub mod invoke;
pub mod limits;
pub mod logs;
mod packages;
pub mod scheduling;

use std::sync::{Arc, Mutex, OnceLock};

use floe_raft_store::{LogStore, StateMachineStore, StateReader};

use crate::cluster::peers::Peers;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::executor::Executor;
use crate::packages::Packages;
use crate::scheduler::clock::Clock;
use crate::scheduler::node::NodeScheduling;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

/// The storage a node opened but has not handed to Raft yet (a node that
/// waits to join has no id, so no Raft).
pub struct PendingStore {
    pub log_store: LogStore,
    pub state_machine: StateMachineStore,
}

/// One node's service: configuration, Raft (once started), packages, executor.
pub struct Service {
    pub config: NodeConfig,
    /// The address peers and clients use for this node.
    pub address: String,
    pub reader: StateReader,
    pub peers: Arc<Peers>,
    pub packages: Packages,
    pub executor: Arc<Executor>,
    /// Scheduling as this node holds it: the leader's soft state while it
    /// leads, the grants it runs, the shadows it keeps, leaders' clocks.
    pub scheduling: NodeScheduling,
    /// Wakes the event dispatcher when this node accepts an event.
    pub events_queued: tokio::sync::Notify,
    /// Every background loop and off-path task of this node.
    pub workers: crate::workers::Workers,
    /// On the leader: grants given back, each of which lets one event
    /// waiting for its quota try again (see `run_dispatcher`).
    pub freed_slots: dispatch::FreedSlots,
    cluster: OnceLock<Arc<Cluster>>,
    pending_store: Mutex<Option<PendingStore>>,
    /// Serialises membership changes on the leader (ids are allocated one at a time).
    membership_lock: tokio::sync::Mutex<()>,
}

impl Service {
    pub fn new(
        config: NodeConfig,
        address: String,
        reader: StateReader,
        pending_store: PendingStore,
        packages: Packages,
        executor: Arc<Executor>,
    ) -> Service {
        Service {
            scheduling: NodeScheduling::new(
                config.scheduler.clone(),
                Clock {
                    epoch: std::time::Instant::now(),
                },
            ),
            events_queued: tokio::sync::Notify::new(),
            freed_slots: Default::default(),
            workers: Default::default(),
            config,
            address,
            reader,
            peers: Arc::new(Peers::default()),
            packages,
            executor,
            cluster: OnceLock::new(),
            pending_store: Mutex::new(Some(pending_store)),
            membership_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The Raft side, or Unavailable while this node waits to join.
    pub fn cluster(&self) -> Result<&Arc<Cluster>, NodeError> {
        self.cluster
            .get()
            .ok_or_else(|| NodeError::Unavailable("this node has not joined a cluster yet".into()))
    }

    pub fn started_cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Starts Raft under `id` (once).
    pub async fn start_raft(&self, id: u64) -> anyhow::Result<Arc<Cluster>> {
        let pending = self.pending_store.lock().expect("store lock").take();
        let Some(pending) = pending else {
            return self
                .cluster
                .get()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("raft is starting"));
        };
        let cluster = Cluster::start(
            id,
            &self.config.raft,
            pending.log_store,
            pending.state_machine,
            self.reader.clone(),
            self.peers.clone(),
        )
        .await?;
        let cluster = Arc::new(cluster);
        let _ = self.cluster.set(cluster.clone());
        Ok(cluster)
    }

    /// Makes a read as fresh as asked.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), NodeError> {
        let cluster = self.cluster()?;
        match consistency {
            Consistency::Stale => Ok(()),
            Consistency::Linearizable => cluster.read_barrier().await,
        }
    }
}
