//! This node as every use case sees it: its configuration and address, the
//! replicated state, its peer certificate and Raft once it has them, the
//! node-to-node client and the tracker of background work. Each use case holds it and nothing wider.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use floe_raft_store::StateReader;

use super::{Consistency, PendingStore};
use crate::cluster::peers::Peers;
use crate::cluster::tls::{PeerTls, Pins};
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::workers::Workers;

pub struct Node {
    pub config: NodeConfig,
    /// The address clients use for this node's public gRPC API.
    pub address: String,
    /// The address other members use for this node's node-to-node services
    /// (its address in the Raft membership).
    pub peer_address: String,
    pub reader: StateReader,
    pub peers: Arc<Peers>,
    /// The members' pinned keys (from the registry), which the peer plane checks.
    pub pins: Pins,
    /// Every background loop and off-path task of this node.
    pub workers: Workers,
    tls: OnceLock<Arc<PeerTls>>,
    cluster: OnceLock<Arc<Cluster>>,
    pending_store: Mutex<Option<PendingStore>>,
}

impl Node {
    pub fn new(
        config: NodeConfig,
        address: String,
        peer_address: String,
        reader: StateReader,
        pending_store: PendingStore,
    ) -> Node {
        Node {
            config,
            address,
            peer_address,
            pins: Pins::from_registry(reader.clone()),
            reader,
            peers: Arc::new(Peers::default()),
            workers: Workers::default(),
            tls: OnceLock::new(),
            cluster: OnceLock::new(),
            pending_store: Mutex::new(Some(pending_store)),
        }
    }

    /// Takes this node's certificate: the peer client uses it from now on,
    /// and the peer listener starts serving (see `lib.rs`).
    pub fn set_tls(&self, tls: PeerTls) -> anyhow::Result<()> {
        let client = tls.client_config().map_err(anyhow::Error::msg)?;
        if self.tls.set(Arc::new(tls)).is_err() {
            anyhow::bail!("this node already has its certificate");
        }
        self.peers.set_tls(client);
        Ok(())
    }

    /// This node's certificate and keys, once it has them.
    pub fn peer_tls(&self) -> Option<&Arc<PeerTls>> {
        self.tls.get()
    }

    /// Waits until this node has its certificate (at once, unless it is
    /// still waiting to join).
    pub async fn tls_ready(&self) -> Arc<PeerTls> {
        loop {
            if let Some(tls) = self.tls.get() {
                return tls.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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

    /// This node's id, or 0 before it has one.
    pub fn id(&self) -> u64 {
        self.started_cluster().map(|c| c.id).unwrap_or(0)
    }

    /// The current term, when this node leads it.
    pub fn leading_term(&self) -> Option<u64> {
        self.started_cluster()?.leading_term()
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

    /// Waits until Raft runs here (at once, unless the node is still joining).
    pub async fn started(&self) -> Arc<Cluster> {
        loop {
            if let Some(cluster) = self.started_cluster() {
                return cluster.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes a read as fresh as asked.
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), NodeError> {
        let cluster = self.cluster()?;
        match consistency {
            Consistency::Stale => Ok(()),
            Consistency::Linearizable => cluster.read_barrier().await,
        }
    }

    /// Lambda's ARN of `function`, with the qualifier the caller used.
    pub fn function_arn(&self, function: &str, qualifier: &str) -> String {
        let arn = format!(
            "arn:aws:lambda:{}:{}:function:{function}",
            self.config.region, self.config.api.account_id
        );
        if qualifier.is_empty() {
            arn
        } else {
            format!("{arn}:{qualifier}")
        }
    }
}
