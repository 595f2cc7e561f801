//! The promises, checked from a history. Pure: a history in, findings out.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{History, Op, OpKind, Outcome};

/// What one check found.
#[derive(Debug, Clone)]
pub struct Finding {
    pub promise: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Every check of a history, plus figures for the summary.
#[derive(Debug)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub max_concurrency: usize,
    pub lost_events: usize,
    pub duplicate_events: usize,
    /// Seconds without a successful write after each fault.
    pub unavailability: Vec<f64>,
    /// Seconds from each fault's heal until the events accepted before it had all run.
    pub drains: Vec<f64>,
    /// Seconds from the final heal until every accepted event had run, and its bound.
    pub final_drain: Option<(f64, f64)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

pub fn check(history: &History) -> Report {
    let (max_concurrency, quota) = concurrency(history);
    let (lost_events, duplicate_events, events) = events(history);
    let registers = registers(&history.ops);
    let leaders = leaders(history);
    let (final_drain, drain) = drain(history);
    let sync = sync_failures(history);
    Report {
        findings: vec![registers, events, drain, quota, leaders, sync],
        max_concurrency,
        lost_events,
        duplicate_events,
        unavailability: unavailability(history),
        drains: fault_drains(history),
        final_drain,
    }
}

/// No acknowledged write is lost, and reads are linearizable, for registers
/// whose written values are unique. A read returning `v` (written by `w`)
/// is wrong if `v` was never written, if `w` began after the read ended, or
/// if another acknowledged write `w2` followed `w` and ended before the read
/// began (the read saw a value already overwritten: stale, or `w2` lost).
pub fn registers(ops: &[Op]) -> Finding {
    let mut writes: BTreeMap<(usize, &str), &Op> = BTreeMap::new();
    let mut acknowledged: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let OpKind::Write { key, value } = &op.kind {
            writes.insert((*key, value.as_str()), op);
            if op.outcome == Outcome::Ok {
                acknowledged.entry(*key).or_default().push(op);
            }
        }
    }
    // Per key: acknowledged writes by start time, and from each position on,
    // the one that ended first. "Did a write that began after t end before
    // the read began?" is then a binary search (long runs have 10^5 of each).
    let mut earliest_end: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for (key, writes) in acknowledged.iter_mut() {
        writes.sort_by(|a, b| a.invoked.total_cmp(&b.invoked));
        let mut suffix: Vec<&Op> = writes.clone();
        for i in (0..suffix.len().saturating_sub(1)).rev() {
            if suffix[i + 1].completed < suffix[i].completed {
                suffix[i] = suffix[i + 1];
            }
        }
        earliest_end.insert(*key, suffix);
    }
    let mut reads = 0;
    let mut problems = Vec::new();
    for op in ops {
        let OpKind::Read { key, value } = &op.kind else {
            continue;
        };
        if op.outcome != Outcome::Ok {
            continue;
        }
        reads += 1;
        let later = |after: f64| -> Option<&Op> {
            let writes = acknowledged.get(key)?;
            let first = writes.partition_point(|w| w.invoked <= after);
            let w2 = *earliest_end.get(key)?.get(first)?;
            (w2.completed < op.invoked).then_some(w2)
        };
        match value.as_deref() {
            // The initial value: wrong once any write was acknowledged before the read.
            None | Some("") => {
                if let Some(w2) = later(f64::MIN) {
                    problems.push(format!(
                        "register {key}: a read at {:.3} saw the initial value after {:?} was acknowledged at {:.3}",
                        op.invoked, w2.kind, w2.completed
                    ));
                }
            }
            Some(v) => match writes.get(&(*key, v)) {
                None => problems.push(format!("register {key}: a read returned {v:?}, which nobody wrote")),
                Some(w) if w.invoked > op.completed => {
                    problems.push(format!("register {key}: a read returned {v:?} before it was written"))
                }
                Some(w) => {
                    if let Some(w2) = later(w.completed) {
                        problems.push(format!(
                            "register {key}: a read at {:.3} returned {v:?}, overwritten by {:?} acknowledged at {:.3}",
                            op.invoked, w2.kind, w2.completed
                        ));
                    }
                }
            },
        }
    }
    let written = acknowledged.values().map(Vec::len).sum::<usize>();
    Finding {
        promise: "acknowledged writes kept, reads linearizable",
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            format!("{written} acknowledged writes, {reads} reads checked")
        } else {
            format!("{} violations, first: {}", problems.len(), problems[0])
        },
    }
}

/// Every accepted event ran at least once. Returns (lost, duplicates, finding).
pub fn events(history: &History) -> (usize, usize, Finding) {
    let accepted = history.accepted_event_ids();
    let mut runs: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &history.executed_events {
        *runs.entry(id.as_str()).or_default() += 1;
    }
    let lost: Vec<&&str> = accepted.iter().filter(|id| !runs.contains_key(**id)).collect();
    let duplicates = runs.values().map(|n| n - 1).sum();
    let finding = Finding {
        promise: "accepted events run at least once",
        ok: lost.is_empty(),
        detail: match lost.first() {
            None => format!("{} accepted, all ran ({duplicates} ran twice or more)", accepted.len()),
            Some(first) => {
                let dead: Vec<&String> = lost.iter().filter_map(|id| history.dead_lettered.get(**id)).collect();
                let queued: Vec<(&&str, &String)> = lost
                    .iter()
                    .filter_map(|id| Some((*id, history.still_queued.get(**id)?)))
                    .collect();
                format!(
                    "{} of {} accepted events never ran, e.g. {first}; {} of them in the failed-event store{}; {} still queued{}",
                    lost.len(),
                    accepted.len(),
                    dead.len(),
                    dead.first().map(|e| format!(" (e.g. {e})")).unwrap_or_default(),
                    queued.len(),
                    queued
                        .first()
                        .map(|(id, state)| format!(" (e.g. {id}: {state})"))
                        .unwrap_or_default()
                )
            }
        },
    };
    (lost.len(), duplicates, finding)
}

/// How long after the final heal the accepted events took to run, against
/// the bound the run's settings give:
///
/// bound = recovery + waits + ceil(backlog / quota) × per_event
///
/// where the backlog is every accepted event that had not run at the heal:
/// the cluster elects a leader and rebuilds its view (recovery), an event
/// may be waiting out a retry delay or a throttle backoff (waits), and then
/// the backlog runs `quota` at a time. Returns ((took, bound), finding).
pub fn drain(history: &History) -> (Option<(f64, f64)>, Finding) {
    let promise = "accepted events run within the drain bound after the heal";
    let Some(heal) = history.final_heal else {
        return (
            None,
            Finding {
                promise,
                ok: true,
                detail: "no heal recorded".into(),
            },
        );
    };
    let first_runs = history.first_runs();
    let accepted = history.accepted_event_ids();
    let backlog: Vec<&str> = accepted
        .iter()
        .copied()
        .filter(|id| first_runs.get(id).is_none_or(|at| *at > heal))
        .collect();
    let last = backlog
        .iter()
        .filter_map(|id| first_runs.get(id))
        .fold(heal, |a, b| a.max(*b));
    let never = backlog.iter().filter(|id| !first_runs.contains_key(**id)).count();
    let bound = &history.drain_bound;
    let quota = history.quota.max(1) as f64;
    let limit = bound.recovery_s + bound.waits_s + (backlog.len() as f64 / quota).ceil() * bound.per_event_s;
    let took = last - heal;
    let ok = never == 0 && took <= limit;
    let detail = format!(
        "{} events waiting at the heal ran within {took:.1} s (bound {limit:.1} s = {:.1} + {:.1} + ceil({} / {}) × {:.2}){}",
        backlog.len(),
        bound.recovery_s,
        bound.waits_s,
        backlog.len(),
        history.quota,
        bound.per_event_s,
        if never > 0 {
            format!("; {never} never ran")
        } else {
            String::new()
        }
    );
    (Some((took, limit)), Finding { promise, ok, detail })
}

/// For each fault, seconds from its heal until every event accepted before
/// the heal had run (events that never ran are the event check's).
pub fn fault_drains(history: &History) -> Vec<f64> {
    let first_runs = history.first_runs();
    let accepts: Vec<(&str, f64)> = history
        .ops
        .iter()
        .filter_map(|op| match (&op.kind, &op.outcome) {
            (OpKind::Event { id }, Outcome::Ok) => Some((id.as_str(), op.completed)),
            _ => None,
        })
        .collect();
    history
        .faults
        .iter()
        .filter_map(|fault| fault.healed)
        .map(|healed| {
            accepts
                .iter()
                .filter(|(_, accepted)| *accepted <= healed)
                .filter_map(|(id, _)| first_runs.get(id))
                .map(|ran| (ran - healed).max(0.0))
                .fold(0.0, f64::max)
        })
        .collect()
}

/// The event that waited longest from its accept to its first run: (id,
/// accepted at, seconds it waited).
pub fn slowest_event(history: &History) -> Option<(String, f64, f64)> {
    let first_runs = history.first_runs();
    history
        .ops
        .iter()
        .filter_map(|op| match (&op.kind, &op.outcome) {
            (OpKind::Event { id }, Outcome::Ok) => {
                Some((id.clone(), op.completed, first_runs.get(id.as_str())? - op.completed))
            }
            _ => None,
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
}

/// Synchronous invokes fail only in the ways a caller can act on: a 429
/// (`RESOURCE_EXHAUSTED`) at any time; and, while a fault is on or the
/// cluster recovers from it, `UNAVAILABLE` (no leader within the wait, or
/// the node reached was cut off) or `UNKNOWN` (the node running it died or
/// was cut off mid-call: the outcome is unknown). Anything else — an
/// internal error, a call that hangs past the client's deadline, or a
/// connection dropped between healthy nodes (an Unavailable or Unknown far
/// from any fault) — fails the check.
pub fn sync_failures(history: &History) -> Finding {
    let end = history.ops.iter().map(|op| op.completed).fold(0.0, f64::max);
    let recovery = history.drain_bound.recovery_s;
    let windows: Vec<(f64, f64)> = history
        .faults
        .iter()
        .map(|fault| (fault.at, fault.healed.unwrap_or(end) + recovery))
        .collect();
    let during_a_fault = |op: &Op| {
        windows
            .iter()
            .any(|(from, to)| op.completed >= *from && op.invoked <= *to)
    };
    let mut other: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed = 0;
    for op in history.ops.iter().filter(|op| op.kind == OpKind::Invoke) {
        let (Outcome::Fail(message) | Outcome::Unknown(message)) = &op.outcome else {
            continue;
        };
        failed += 1;
        let allowed = message.starts_with("ResourceExhausted:")
            || ((message.starts_with("Unavailable:") || message.starts_with("Unknown:")) && during_a_fault(op));
        if !allowed {
            *other.entry(message.chars().take(100).collect()).or_default() += 1;
        }
    }
    Finding {
        promise: "sync invokes fail only with 429, Unavailable or outcome unknown",
        ok: other.is_empty(),
        detail: match other.iter().next() {
            None => format!("{failed} failed sync invokes, all of the allowed kinds"),
            Some((message, count)) => format!(
                "{} of {failed} failed otherwise, e.g. {count}× {message:?}",
                other.values().sum::<usize>()
            ),
        },
    }
}

/// Concurrency never above the region's quota, from the runs the functions
/// reported (their reports fall inside the real runs, so an overlap here is
/// a real one). Returns (maximum, finding).
pub fn concurrency(history: &History) -> (usize, Finding) {
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for interval in history.intervals.values() {
        edges.push((interval.start, 1));
        edges.push((interval.end_or_longest(), -1));
    }
    // Ends before starts at the same instant: touching runs do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut running, mut max, mut at) = (0i32, 0i32, 0.0);
    for (time, delta) in edges {
        running += delta;
        if running > max {
            max = running;
            at = time;
        }
    }
    let max = max.max(0) as usize;
    let quota = history.quota as usize;
    let finding = Finding {
        promise: "concurrency within the region quota",
        ok: quota == 0 || max <= quota,
        detail: format!(
            "{} runs, at most {max} at once (quota {quota}){}",
            history.intervals.len(),
            if max > quota && quota > 0 {
                let overlapping: Vec<String> = history
                    .intervals
                    .iter()
                    .filter(|(_, i)| i.start <= at && at < i.end_or_longest())
                    .map(|(id, i)| {
                        format!(
                            "{id} [{:.3}, {:.3}{}]",
                            i.start,
                            i.end_or_longest(),
                            if i.end.is_none() { "?" } else { "" }
                        )
                    })
                    .collect();
                format!(", over it at {at:.3}: {}", overlapping.join(", "))
            } else {
                String::new()
            }
        ),
    };
    (max, finding)
}

/// At most one leader per term: no two nodes claimed to lead the same term.
pub fn leaders(history: &History) -> Finding {
    let mut by_term: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for view in &history.leaders {
        if let Some(leader) = view.leader {
            by_term.entry(view.term).or_default().insert(leader);
        }
    }
    let split: Vec<_> = by_term.iter().filter(|(_, leaders)| leaders.len() > 1).collect();
    Finding {
        promise: "one leader per term",
        ok: split.is_empty(),
        detail: match split.first() {
            None => format!("{} terms seen, each with one leader", by_term.len()),
            Some((term, leaders)) => format!("term {term} had leaders {leaders:?}"),
        },
    }
}

/// For each fault: the longest time without a successful write, from the
/// fault until the next one (or the end).
pub fn unavailability(history: &History) -> Vec<f64> {
    let mut successes: Vec<f64> = history
        .ops
        .iter()
        .filter(|op| matches!(op.kind, OpKind::Write { .. }) && op.outcome == Outcome::Ok)
        .map(|op| op.completed)
        .collect();
    successes.sort_by(f64::total_cmp);
    let end = history.ops.iter().map(|op| op.completed).fold(0.0, f64::max);
    let mut gaps = Vec::new();
    for (i, fault) in history.faults.iter().enumerate() {
        let until = history.faults.get(i + 1).map_or(end, |next| next.at);
        let mut last = fault.at;
        let mut longest: f64 = 0.0;
        for &time in successes.iter().filter(|t| **t > fault.at && **t <= until) {
            longest = longest.max(time - last);
            last = time;
        }
        longest = longest.max(until - last);
        gaps.push(longest);
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Interval;

    fn write(key: usize, value: &str, invoked: f64, completed: f64, outcome: Outcome) -> Op {
        Op {
            kind: OpKind::Write {
                key,
                value: value.into(),
            },
            invoked,
            completed,
            outcome,
        }
    }

    fn read(key: usize, value: Option<&str>, invoked: f64, completed: f64) -> Op {
        Op {
            kind: OpKind::Read {
                key,
                value: value.map(String::from),
            },
            invoked,
            completed,
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn registers_accept_linearizable_histories() {
        let ops = vec![
            write(0, "a", 0.0, 1.0, Outcome::Ok),
            read(0, Some("a"), 1.5, 2.0),
            // Concurrent with the write of b: either value is fine.
            write(0, "b", 3.0, 5.0, Outcome::Ok),
            read(0, Some("a"), 3.5, 4.0),
            read(0, Some("b"), 4.0, 4.5),
            // An unknown write may or may not have happened.
            write(0, "c", 6.0, 7.0, Outcome::Unknown("timeout".into())),
            read(0, Some("c"), 8.0, 8.5),
        ];
        assert!(registers(&ops).ok, "{:?}", registers(&ops));
    }

    #[test]
    fn registers_catch_stale_reads_lost_writes_and_inventions() {
        let stale = vec![
            write(0, "a", 0.0, 1.0, Outcome::Ok),
            write(0, "b", 2.0, 3.0, Outcome::Ok),
            read(0, Some("a"), 4.0, 5.0),
        ];
        assert!(!registers(&stale).ok);
        let lost = vec![write(0, "a", 0.0, 1.0, Outcome::Ok), read(0, None, 2.0, 3.0)];
        assert!(!registers(&lost).ok);
        let invented = vec![read(0, Some("zzz"), 0.0, 1.0)];
        assert!(!registers(&invented).ok);
        let future = vec![read(0, Some("a"), 0.0, 1.0), write(0, "a", 2.0, 3.0, Outcome::Ok)];
        assert!(!registers(&future).ok);
    }

    fn history_with(intervals: &[(f64, Option<f64>)], quota: u32) -> History {
        History {
            intervals: intervals
                .iter()
                .enumerate()
                .map(|(i, (start, end))| {
                    (
                        i.to_string(),
                        Interval {
                            start: *start,
                            end: *end,
                            longest: 1.0,
                        },
                    )
                })
                .collect(),
            quota,
            ..Default::default()
        }
    }

    #[test]
    fn concurrency_counts_overlaps_and_open_runs() {
        let history = history_with(&[(0.0, Some(1.0)), (1.0, Some(2.0)), (1.5, Some(3.0))], 2);
        assert_eq!(concurrency(&history).0, 2);
        assert!(concurrency(&history).1.ok);
        // A run that never reported its end counts for its longest duration.
        let history = history_with(&[(0.0, None), (0.5, Some(0.8)), (0.6, Some(0.9))], 2);
        assert_eq!(concurrency(&history).0, 3);
        assert!(!concurrency(&history).1.ok);
    }

    #[test]
    fn events_count_lost_and_duplicates() {
        let accepted = |id: &str| Op {
            kind: OpKind::Event { id: id.into() },
            invoked: 0.0,
            completed: 0.1,
            outcome: Outcome::Ok,
        };
        let history = History {
            ops: vec![accepted("a"), accepted("b")],
            executed_events: vec![("a".into(), 1.0), ("a".into(), 2.0), ("b".into(), 1.0)],
            ..Default::default()
        };
        let (lost, duplicates, finding) = events(&history);
        assert_eq!((lost, duplicates, finding.ok), (0, 1, true));
        let history = History {
            ops: vec![accepted("a"), accepted("b")],
            executed_events: vec![("a".into(), 1.0)],
            ..Default::default()
        };
        assert!(!events(&history).2.ok);
    }

    #[test]
    fn the_drain_is_bounded_by_backlog_quota_and_waits() {
        use crate::history::DrainBound;
        let accepted = |id: &str, at: f64| Op {
            kind: OpKind::Event { id: id.into() },
            invoked: at - 0.1,
            completed: at,
            outcome: Outcome::Ok,
        };
        // Six events waiting at the heal (t = 10), quota 3: bound 2 + 1 + 2 × 0.5 = 4 s.
        let mut history = History {
            ops: (0..6).map(|i| accepted(&format!("e{i}"), 5.0)).collect(),
            final_heal: Some(10.0),
            quota: 3,
            drain_bound: DrainBound {
                recovery_s: 2.0,
                waits_s: 1.0,
                per_event_s: 0.5,
            },
            ..Default::default()
        };
        history.ops.push(accepted("early", 1.0));
        history.executed_events.push(("early".into(), 2.0));
        for i in 0..6 {
            history.executed_events.push((format!("e{i}"), 11.0 + i as f64 * 0.4));
        }
        let (took, finding) = drain(&history);
        assert!(finding.ok, "{finding:?}");
        assert_eq!(took.map(|(took, bound)| (took.round(), bound)), Some((3.0, 4.0)));
        // A dispatcher that stalls: the last event runs 20 s after the heal.
        history.executed_events.push(("e5".into(), 9.0 + 20.0));
        history.executed_events.retain(|(id, at)| id != "e5" || *at > 20.0);
        assert!(!drain(&history).1.ok);
        // An event that never runs fails it too.
        history.executed_events.retain(|(id, _)| id != "e5");
        assert!(!drain(&history).1.ok);
    }

    #[test]
    fn sync_failures_of_other_kinds_are_caught() {
        let invoke = |outcome| Op {
            kind: OpKind::Invoke,
            invoked: 0.0,
            completed: 1.0,
            outcome,
        };
        use crate::history::Fault;
        let mut history = History {
            ops: vec![
                invoke(Outcome::Ok),
                invoke(Outcome::Fail("ResourceExhausted: Rate Exceeded".into())),
                invoke(Outcome::Fail("Unavailable: no leader".into())),
                invoke(Outcome::Unknown(
                    "Unknown: node 2 failed while running the invocation".into(),
                )),
            ],
            faults: vec![Fault {
                at: 0.5,
                what: "kill -9 node 1".into(),
                healed: Some(0.8),
            }],
            ..Default::default()
        };
        assert!(sync_failures(&history).ok);
        // The same failures far from any fault: a healthy cluster dropped them.
        let faults = std::mem::take(&mut history.faults);
        assert!(!sync_failures(&history).ok);
        history.faults = faults;
        history.ops.push(invoke(Outcome::Unknown(
            "Internal: node 2 failed: h2 protocol error".into(),
        )));
        assert!(!sync_failures(&history).ok);
        history.ops.pop();
        history.ops.push(invoke(Outcome::Unknown("timed out".into())));
        assert!(!sync_failures(&history).ok);
    }

    #[test]
    fn two_leaders_in_a_term_are_caught() {
        use crate::history::LeaderView;
        let view = |node, term, leader| LeaderView {
            at: 0.0,
            node,
            term,
            leader: Some(leader),
        };
        let history = History {
            leaders: vec![view(0, 1, 1), view(1, 1, 1), view(2, 2, 3)],
            ..Default::default()
        };
        assert!(leaders(&history).ok);
        let history = History {
            leaders: vec![view(0, 1, 1), view(1, 1, 2)],
            ..Default::default()
        };
        assert!(!leaders(&history).ok);
    }
}
