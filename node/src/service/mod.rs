//! The service layer: every operation of floe, once, whatever the adapter
//! (gRPC, Lambda REST, internal) that calls it. Adapters convert wire types
//! to these calls and [`NodeError`](crate::error::NodeError) back to their
//! statuses.
//!
//! One use case per part, each holding only what it needs, so that the
//! dependencies between them point one way:
//!
//! ```text
//! access   functions ─┐   membership ─┐   dispatcher ─▶ invocations ─▶ events
//!                     ▼               ▼        │             │
//!                  packages       scheduling ◀─┴─────────────┤
//!                     ▲                                      │
//!                     └──────────────────────────────────────┘    logs
//! ```
//! and every part holds the [`Node`] (configuration, state, Raft, peers, workers).

pub mod auth;
pub mod cluster;
pub mod dispatch;
pub mod events;
pub mod functions;
pub mod invoke;
pub mod limits;
pub mod logs;
pub mod node;
pub mod packages;
pub mod scheduling;

use std::sync::Arc;

use floe_raft_store::{LogStore, StateMachineStore, StateReader};

use crate::config::NodeConfig;
use crate::executor::Executor;

pub use node::Node;

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

/// One node's use cases, wired together.
pub struct Service {
    pub node: Arc<Node>,
    pub access: Arc<auth::Access>,
    pub functions: Arc<functions::Functions>,
    pub packages: Arc<packages::ClusterPackages>,
    pub scheduling: Arc<scheduling::Scheduling>,
    pub events: Arc<events::Events>,
    pub invocations: Arc<invoke::Invocations>,
    pub dispatcher: Arc<dispatch::Dispatcher>,
    pub membership: Arc<cluster::Membership>,
    pub logs: Arc<logs::Logs>,
}

impl Service {
    pub fn new(
        config: NodeConfig,
        address: String,
        peer_address: String,
        reader: StateReader,
        pending_store: PendingStore,
        packages: crate::packages::Packages,
        executor: Arc<Executor>,
    ) -> Service {
        let node = Arc::new(Node::new(config, address, peer_address, reader, pending_store));
        let packages = Arc::new(packages::ClusterPackages::new(node.clone(), packages));
        let scheduling = Arc::new(scheduling::Scheduling::new(node.clone(), executor.clone()));
        let events = Arc::new(events::Events::new(node.clone()));
        let invocations = Arc::new(invoke::Invocations::new(
            node.clone(),
            packages.clone(),
            scheduling.clone(),
            events.clone(),
            executor.clone(),
        ));
        Service {
            access: Arc::new(auth::Access::new(node.clone())),
            functions: Arc::new(functions::Functions::new(node.clone(), packages.clone())),
            dispatcher: Arc::new(dispatch::Dispatcher::new(
                node.clone(),
                invocations.clone(),
                events.clone(),
                scheduling.clone(),
            )),
            membership: Arc::new(cluster::Membership::new(
                node.clone(),
                scheduling.clone(),
                executor.clone(),
            )),
            logs: Arc::new(logs::Logs::new(node.clone(), executor)),
            node,
            packages,
            scheduling,
            events,
            invocations,
        }
    }
}
