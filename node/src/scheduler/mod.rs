//! Scheduling: where each invocation runs, and whether it may start now.
//!
//! The Raft leader is the scheduler. Every node reports its load to it
//! ([`agent`], the node side); the leader keeps those reports in memory only
//! ([`leader`]) and answers each invocation with a [`Grant`](crate::wire::Grant): permission to
//! start one invocation on one node, within the region's quota.
//!
//! - [`quota`]: may one more invocation start (pure);
//! - [`placement`]: which node (pure);
//! - [`leader`]: the leader's soft state: load view, grants, term;
//! - [`agent`]: the node side: heartbeats, grants it runs, releases;
//! - [`shadow`]: grants recorded on a majority of voters before they are used,
//!   so that the next leader knows of them;
//! - [`clock`]: leaders' clocks as other nodes read them, so a grant's lease
//!   ends at the same moment for the leader and for the node running it;
//! - [`node`]: all of the above as one node holds them, whatever its role:
//!   the pure core the service wraps with IO, and what the harness drives.
//!
//! The messages it exchanges with other nodes are in `crate::wire`.

pub mod agent;
pub mod clock;
#[cfg(test)]
mod harness;
pub mod leader;
pub mod node;
pub mod placement;
pub mod quota;
pub mod shadow;
