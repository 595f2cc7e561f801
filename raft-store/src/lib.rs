//! floe's replicated metadata: openraft storage on RocksDB, and the state
//! machine that holds functions, versions, aliases, quotas and the node
//! registry.
//!
//! This crate knows no network. Read in this order:
//! - [`model`]: the records; [`command`]: every replicated write;
//! - [`validate`]: Lambda's input rules;
//! - [`state_machine`]: how a command changes the tables (pure);
//! - [`store`]: the RocksDB log store, state machine store and snapshots;
//! - [`keys`]: every key encoding; [`codec`]: the frozen binary encoding.

pub mod codec;
pub mod command;
pub mod error;
pub mod keys;
pub mod model;
pub mod state_machine;
pub mod store;
pub mod time;
pub mod validate;

pub use command::{ApplyError, Command, CommandResult, Response};
pub use error::StoreError;
pub use store::{open, LogStore, StateMachineStore, StateReader};

/// Node ids are small integers allocated by the state machine (see `RegisterNode`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// floe's openraft configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft instance type every node runs.
pub type Raft = openraft::Raft<TypeConfig>;
