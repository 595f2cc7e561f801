//! Placement: which node runs an invocation. Pure: a snapshot of the load
//! view in, a node out (tested without servers, as Nomad's scheduler is).
//!
//! Order of preference: a live node of the region with an idle warm sandbox
//! of the exact version; otherwise the least loaded live node of the region
//! with room for the function's memory. Ties are broken at random.

use std::collections::HashMap;

use floe_raft_store::NodeId;
use rand::seq::IndexedRandom;

use crate::shared::SandboxKey;

/// One node as the leader sees it, borrowed from its view (nothing is copied per decision).
#[derive(Debug, Clone)]
pub struct NodeLoad<'a> {
    pub id: NodeId,
    pub region: &'a str,
    /// False once its heartbeats stopped.
    pub live: bool,
    /// Idle warm sandboxes per function version.
    pub idle: &'a HashMap<SandboxKey, u32>,
    pub capacity_mb: u64,
    /// Memory of the invocations granted to it and still running.
    pub busy_mb: u64,
}

/// What is being placed.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub region: &'a str,
    pub key: &'a SandboxKey,
    pub memory_mb: u64,
}

/// How it was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Warm(NodeId),
    Cold(NodeId),
}

impl Placement {
    pub fn node(self) -> NodeId {
        match self {
            Placement::Warm(id) | Placement::Cold(id) => id,
        }
    }
}

/// Chooses a node, or `None` when no live node of the region has room.
pub fn place(nodes: &[NodeLoad], ask: &Ask, rng: &mut impl rand::Rng) -> Option<Placement> {
    let eligible: Vec<&NodeLoad> = nodes.iter().filter(|n| n.live && n.region == ask.region).collect();
    let warm: Vec<&&NodeLoad> = eligible
        .iter()
        .filter(|n| n.idle.get(ask.key).copied().unwrap_or(0) > 0)
        .collect();
    if let Some(node) = warm.choose(rng) {
        return Some(Placement::Warm(node.id));
    }
    let with_room: Vec<&&NodeLoad> = eligible
        .iter()
        .filter(|n| n.capacity_mb.saturating_sub(n.busy_mb) >= ask.memory_mb)
        .collect();
    // busy/capacity compared without division: a/b < c/d ⇔ a·d < c·b.
    let load = |n: &NodeLoad| (u128::from(n.busy_mb), u128::from(n.capacity_mb.max(1)));
    let least = with_room
        .iter()
        .map(|n| load(n))
        .min_by(|(a, b), (c, d)| (a * d).cmp(&(c * b)))?;
    let least_loaded: Vec<&&&NodeLoad> = with_room
        .iter()
        .filter(|n| {
            let (a, b) = load(n);
            a * least.1 == least.0 * b
        })
        .collect();
    least_loaded.choose(rng).map(|n| Placement::Cold(n.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key(version: &str) -> SandboxKey {
        SandboxKey {
            function: "f".into(),
            version: version.into(),
            revision_id: "r".into(),
        }
    }

    /// Idle sandboxes for a test node (leaked: tests only, and tiny).
    fn idle(entries: &[(SandboxKey, u32)]) -> &'static HashMap<SandboxKey, u32> {
        Box::leak(Box::new(entries.iter().cloned().collect()))
    }

    fn node(id: NodeId, busy_mb: u64) -> NodeLoad<'static> {
        NodeLoad {
            id,
            region: "local",
            live: true,
            idle: idle(&[]),
            capacity_mb: 1024,
            busy_mb,
        }
    }

    fn ask(key: &SandboxKey) -> Ask<'_> {
        Ask {
            region: "local",
            key,
            memory_mb: 128,
        }
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn warm_affinity_beats_load() {
        let k = key("1");
        let mut busy = node(2, 900);
        busy.idle = idle(&[(k.clone(), 1)]);
        let nodes = [node(1, 0), busy, node(3, 0)];
        assert_eq!(place(&nodes, &ask(&k), &mut rng()), Some(Placement::Warm(2)));
    }

    #[test]
    fn a_warm_sandbox_of_another_version_does_not_count() {
        let mut other = node(2, 512);
        other.idle = idle(&[(key("2"), 3)]);
        let nodes = [node(1, 128), other];
        assert_eq!(place(&nodes, &ask(&key("1")), &mut rng()), Some(Placement::Cold(1)));
    }

    #[test]
    fn least_loaded_relative_to_capacity() {
        let mut big = node(2, 512);
        big.capacity_mb = 4096;
        let nodes = [node(1, 256), big, node(3, 300)];
        assert_eq!(place(&nodes, &ask(&key("1")), &mut rng()), Some(Placement::Cold(2)));
    }

    #[test]
    fn memory_must_fit() {
        let nodes = [node(1, 1000), node(2, 1024)];
        assert_eq!(place(&nodes, &ask(&key("1")), &mut rng()), None);
        let nodes = [node(1, 1000), node(2, 896)];
        assert_eq!(place(&nodes, &ask(&key("1")), &mut rng()), Some(Placement::Cold(2)));
    }

    #[test]
    fn a_stale_node_is_skipped_even_when_warm() {
        let k = key("1");
        let mut stale = node(1, 0);
        stale.live = false;
        stale.idle = idle(&[(k.clone(), 1)]);
        let nodes = [stale, node(2, 512)];
        assert_eq!(place(&nodes, &ask(&k), &mut rng()), Some(Placement::Cold(2)));
        let mut only = node(1, 0);
        only.live = false;
        assert_eq!(place(&[only], &ask(&k), &mut rng()), None);
    }

    #[test]
    fn only_nodes_of_the_region() {
        let mut elsewhere = node(1, 0);
        elsewhere.region = "east";
        let nodes = [elsewhere, node(2, 800)];
        assert_eq!(place(&nodes, &ask(&key("1")), &mut rng()), Some(Placement::Cold(2)));
        let k = key("1");
        let east = Ask {
            region: "west",
            ..ask(&k)
        };
        assert_eq!(place(&nodes, &east, &mut rng()), None);
    }

    #[test]
    fn ties_are_broken_at_random() {
        let nodes = [node(1, 0), node(2, 0), node(3, 0)];
        let k = key("1");
        let mut seen = std::collections::BTreeSet::new();
        let mut rng = rng();
        for _ in 0..100 {
            seen.insert(place(&nodes, &ask(&k), &mut rng).unwrap().node());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    }
}
