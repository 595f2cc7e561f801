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
//!
//! The leader keeps shadows of its own grants too: it is one of the majority
//! that knows of them, and when it loses its term its soft state is gone, so
//! only its shadows can tell the next leader (which it may have voted for)
//! about them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::ShadowGrant;

struct Entry {
    shadow: ShadowGrant,
    expires: Instant,
}

#[derive(Default)]
pub struct Shadows {
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Shadows {
    pub fn record(&self, shadow: ShadowGrant, now: Instant) {
        let expires = now + Duration::from_millis(shadow.grant.remaining_ms);
        self.entries
            .lock()
            .expect("shadows lock")
            .insert(shadow.grant.id, Entry { shadow, expires });
    }

    /// Drops what has expired, and the grants the leader of `term` no
    /// longer held when it had made `issued` grants: those made before its
    /// answer and missing from `live` are over. (A grant made after the
    /// answer left may be missing from it, so it stays.) With `own_term_only`
    /// (the leader pruning its own), shadows of earlier terms stay: the
    /// leader's first reports must not erase what it alone knows of them.
    pub fn prune(&self, live: &HashSet<u64>, term: u64, issued: u64, own_term_only: bool, now: Instant) {
        self.entries.lock().expect("shadows lock").retain(|id, e| {
            let before_answer =
                (e.shadow.term < term && !own_term_only) || (e.shadow.term == term && e.shadow.seq <= issued);
            e.expires > now && (live.contains(id) || !before_answer)
        });
    }

    /// Forgets a grant that was never handed out.
    pub fn remove(&self, id: u64) {
        self.entries.lock().expect("shadows lock").remove(&id);
    }

    /// The shadows still in force, with their remaining time as of `now`.
    pub fn list(&self, now: Instant) -> Vec<ShadowGrant> {
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
    use crate::wire::RunningGrant;

    fn shadow(id: u64, remaining_ms: u64) -> ShadowGrant {
        ShadowGrant {
            term: 3,
            seq: id,
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
    fn shadows_expire_and_only_grants_made_before_an_answer_are_pruned() {
        let now = Instant::now();
        let shadows = Shadows::default();
        shadows.record(shadow(1, 60_000), now);
        shadows.record(shadow(2, 0), now);
        shadows.record(shadow(5, 60_000), now);
        let ids = || {
            let mut ids: Vec<u64> = shadows.list(now).iter().map(|s| s.grant.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(), vec![1, 5]);
        // The leader of term 3 answered after 4 grants: 1 is live, 5 came later.
        shadows.prune(&HashSet::from([1]), 3, 4, false, now);
        assert_eq!(ids(), vec![1, 5]);
        // After 5 grants, without 1 or 5: both over.
        shadows.prune(&HashSet::new(), 3, 5, false, now);
        assert!(ids().is_empty());
        // A newer leader's answer prunes every older term's shadow it lacks…
        shadows.record(shadow(9, 60_000), now);
        shadows.prune(&HashSet::new(), 4, 0, true, now);
        assert_eq!(ids(), vec![9], "…but not when the leader prunes its own");
        shadows.prune(&HashSet::new(), 4, 0, false, now);
        assert!(ids().is_empty());
    }
}
