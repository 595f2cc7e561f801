//! Leaders' clocks, as other nodes can safely read them.
//!
//! A grant must start within its lease *of the leader's time*: the leader
//! counts it until then and, once a report shows it did not start, frees its
//! slot. A node that measured the lease from when a forwarded grant reached
//! it could start it long after the leader freed the slot, if the network
//! held the message back (a link cut and healed: TCP delivers it late).
//!
//! So grants and heartbeat answers carry the leader's clock (milliseconds of
//! a monotonic clock), and each node keeps, per term, the answer that took
//! the least time to arrive: the leader's time `t` happened, on this node's
//! clock, no later than `received + (t - leader_ms)` of that answer. Mapped
//! that way, a node's deadline is at most one trip of that fastest answer
//! later than the leader's, however late a grant arrives.
//!
//! Pure: every time is an argument.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a window of samples lasts: the fastest answer of the last one or
/// two windows is used, so that clocks drifting apart over a long term do
/// not make an old sample wrong.
const WINDOW: Duration = Duration::from_secs(10);
/// Terms whose clocks are kept (grants of older terms are rare and lapse).
const TERMS_KEPT: usize = 8;

/// A monotonic clock in milliseconds since `epoch`: what a leader stamps.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub epoch: Instant,
}

impl Clock {
    pub fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

/// One answer of a leader: its time when it answered, and when it arrived here.
#[derive(Debug, Clone, Copy)]
struct Sample {
    leader_ms: u64,
    received: Instant,
}

impl Sample {
    /// True when `self` took less time to arrive than `other` (a smaller
    /// `received - leader_ms`, compared without subtracting).
    fn faster_than(&self, other: &Sample) -> bool {
        self.received + Duration::from_millis(other.leader_ms) < other.received + Duration::from_millis(self.leader_ms)
    }

    /// This node's time no earlier than the leader's `leader_ms`.
    fn local(&self, leader_ms: u64) -> Instant {
        if leader_ms >= self.leader_ms {
            self.received + Duration::from_millis(leader_ms - self.leader_ms)
        } else {
            // Before this node's clock began: long past.
            self.received
                .checked_sub(Duration::from_millis(self.leader_ms - leader_ms))
                .unwrap_or(self.received)
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct TermClock {
    /// The fastest sample of the window that began at `window_start`.
    current: Sample,
    window_start: Instant,
    /// The fastest of the window before.
    previous: Option<Sample>,
    /// The newest sample, whatever its speed.
    latest: Sample,
}

impl TermClock {
    fn best(&self) -> Sample {
        match self.previous {
            Some(previous) if previous.faster_than(&self.current) => previous,
            _ => self.current,
        }
    }
}

/// Per term, what this node knows of the leader's clock.
#[derive(Debug, Default)]
pub struct LeaderClocks {
    terms: BTreeMap<u64, TermClock>,
}

impl LeaderClocks {
    /// Notes that the leader of `term` said `leader_ms` and it arrived at `received`.
    pub fn sample(&mut self, term: u64, leader_ms: u64, received: Instant) {
        let sample = Sample { leader_ms, received };
        match self.terms.get_mut(&term) {
            Some(clock) => {
                if received.saturating_duration_since(clock.window_start) >= WINDOW {
                    clock.previous = Some(clock.current);
                    clock.current = sample;
                    clock.window_start = received;
                } else if sample.faster_than(&clock.current) {
                    clock.current = sample;
                }
                if leader_ms >= clock.latest.leader_ms {
                    clock.latest = sample;
                }
            }
            None => {
                self.terms.insert(
                    term,
                    TermClock {
                        current: sample,
                        window_start: received,
                        previous: None,
                        latest: sample,
                    },
                );
                while self.terms.len() > TERMS_KEPT {
                    self.terms.pop_first();
                }
            }
        }
    }

    /// When, on this node's clock, the leader of `term` will have reached
    /// `leader_ms` at the latest; `None` when this node never heard from it.
    pub fn local(&self, term: u64, leader_ms: u64) -> Option<Instant> {
        Some(self.terms.get(&term)?.best().local(leader_ms))
    }

    /// The newest time the leader of `term` told this node.
    pub fn latest(&self, term: u64) -> Option<u64> {
        Some(self.terms.get(&term)?.latest.leader_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_late_grant_keeps_the_leaders_deadline() {
        // The leader's clock reads 5,000 ms when this node's reads `base`.
        let base = Instant::now() + ms(100_000);
        let leader = |local: Instant| 5_000 + (local - base).as_millis() as u64;
        let mut clocks = LeaderClocks::default();
        assert_eq!(clocks.local(7, 6_000), None, "no answer from the leader of term 7 yet");
        // Answers that took 40, 3 and 900 ms to arrive.
        for (sent, delay) in [(0, 40), (200, 3), (400, 900)] {
            let sent_at = base + ms(sent);
            clocks.sample(7, leader(sent_at), sent_at + ms(delay));
        }
        // A grant stamped 6,000 with a 2 s lease: on the leader's clock it
        // lapses at 8,000, i.e. at base + 3,000 here; the fastest answer
        // (3 ms) bounds the error.
        let deadline = clocks.local(7, 8_000).unwrap();
        assert_eq!(deadline, base + ms(3_003));
        // Whenever the grant arrives, the deadline stays the same.
        assert_eq!(clocks.latest(7), Some(leader(base + ms(400))));
        assert_eq!(clocks.local(8, 8_000), None);
    }

    #[test]
    fn old_windows_give_way_so_drift_does_not_accumulate() {
        let base = Instant::now() + ms(100_000);
        let mut clocks = LeaderClocks::default();
        clocks.sample(1, 0, base + ms(1));
        // This node's clock drifts 49 ms ahead of the leader's: the old, faster
        // sample is used for one more window, then forgotten.
        clocks.sample(1, 11_000, base + ms(11_050));
        assert_eq!(clocks.local(1, 30_000).unwrap(), base + ms(30_001));
        clocks.sample(1, 22_000, base + ms(22_050));
        assert_eq!(clocks.local(1, 30_000).unwrap(), base + ms(30_050));
        // A faster sample of the current window wins.
        clocks.sample(1, 23_000, base + ms(23_045));
        assert_eq!(clocks.local(1, 30_000).unwrap(), base + ms(30_045));
    }

    #[test]
    fn only_recent_terms_are_kept() {
        let now = Instant::now();
        let mut clocks = LeaderClocks::default();
        for term in 1..=20 {
            clocks.sample(term, 10, now);
        }
        assert_eq!(clocks.local(12, 10), None);
        assert_eq!(clocks.local(13, 10), Some(now));
    }
}
