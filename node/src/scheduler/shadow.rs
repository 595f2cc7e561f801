//! Shadow grants: the leader's grants, recorded on a majority of the voters
//! before the invocation may start. A leader cut off from the others (or
//! paused, or killed) may leave invocations running where the next leader
//! cannot hear about them from the node itself; the next leader was elected
//! by a majority, so at least one of its voters holds a shadow of each such
//! grant and reports it. The new leader counts them until the running node
//! says otherwise or they could no longer be running.
//!
//! A voter takes shadows only from a term at least as new as its own, so a
//! deposed leader (one resumed from a pause, say) cannot record a grant on a
//! majority, and therefore cannot grant at all.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ShadowGrant;

/// A shadow younger than this is kept even when the leader's list of live
/// grants lacks it (the list may have left before the grant was made).
const YOUNG: Duration = Duration::from_secs(1);

struct Entry {
    shadow: ShadowGrant,
    recorded: Instant,
    expires: Instant,
}

#[derive(Default)]
pub struct Shadows {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Shadows {
    pub fn record(&self, shadow: ShadowGrant) {
        let now = Instant::now();
        let expires = now + Duration::from_millis(shadow.grant.remaining_ms);
        self.entries.lock().expect("shadows lock").insert(
            shadow.grant.id,
            Entry {
                shadow,
                recorded: now,
                expires,
            },
        );
    }

    /// Drops what the leader no longer holds, and what has expired.
    pub fn prune(&self, live: &HashSet<u64>) {
        let now = Instant::now();
        self.entries
            .lock()
            .expect("shadows lock")
            .retain(|id, e| e.expires > now && (live.contains(id) || now.duration_since(e.recorded) < YOUNG));
    }

    /// The shadows still in force, with their remaining time as of now.
    pub fn list(&self) -> Vec<ShadowGrant> {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("shadows lock");
        entries.retain(|_, e| e.expires > now);
        entries
            .values()
            .map(|e| {
                let mut shadow = e.shadow.clone();
                shadow.grant.remaining_ms = e.expires.duration_since(now).as_millis() as u64;
                shadow
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::RunningGrant;

    fn shadow(id: u64, remaining_ms: u64) -> ShadowGrant {
        ShadowGrant {
            term: 3,
            node: 2,
            grant: RunningGrant {
                id,
                region: "local".into(),
                function: "f".into(),
                reserved: false,
                memory_mb: 128,
                remaining_ms,
            },
        }
    }

    #[test]
    fn shadows_expire_and_young_ones_survive_pruning() {
        let shadows = Shadows::default();
        shadows.record(shadow(1, 60_000));
        shadows.record(shadow(2, 0));
        assert_eq!(shadows.list().iter().map(|s| s.grant.id).collect::<Vec<_>>(), vec![1]);
        // Not in the leader's list, but recorded a moment ago: kept.
        shadows.prune(&HashSet::new());
        assert_eq!(shadows.list().len(), 1);
        shadows.prune(&HashSet::from([1]));
        assert_eq!(shadows.list().len(), 1);
    }
}
