//! A scheduling harness, as Nomad's `scheduler/testing.go`: a fake cluster
//! of [`NodeScheduling`]s whose messages (asks, shadows, reports, answers,
//! forwarded grants) the tests pass by hand — on time, late, or never — on
//! a clock the tests move. Every test checks that no more grants run at
//! once than the quota allows, whatever it did to the messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use floe_raft_store::NodeId;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::agent::{Lapsed, RunningGuard};
use super::clock::Clock;
use super::leader::Members;
use super::node::{Load, NodeScheduling};
use super::quota::Limits;
use crate::config::SchedulerConfig;
use crate::error::ThrottleReason;
use crate::shared::SandboxKey;
use crate::wire::{Grant, GrantAsk, GrantReply, LoadReport, Release};

const QUOTA: u32 = 3;
const TIMEOUT_S: u64 = 10;

struct Harness {
    nodes: BTreeMap<NodeId, NodeScheduling>,
    regions: BTreeMap<NodeId, String>,
    /// Each node's current term, as Raft would have it.
    terms: BTreeMap<NodeId, u64>,
    leader: Option<(NodeId, u64)>,
    voters: BTreeSet<NodeId>,
    addresses: BTreeMap<NodeId, String>,
    now: Instant,
    rng: StdRng,
    /// Invocations running, by grant id, wherever they run.
    running: BTreeMap<u64, RunningGuard>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn key() -> SandboxKey {
    SandboxKey {
        function: "f".into(),
        version: "$LATEST".into(),
        revision_id: "r".into(),
    }
}

impl Harness {
    /// `n` voters in region "local"; each node's clock started at another time.
    fn new(n: u64) -> Harness {
        let start = Instant::now() + Duration::from_secs(1000);
        let config = SchedulerConfig::default();
        let ids: Vec<NodeId> = (1..=n).collect();
        Harness {
            nodes: ids
                .iter()
                .map(|id| {
                    let epoch = start - Duration::from_secs(100 * id);
                    (*id, NodeScheduling::new(config.clone(), Clock { epoch }))
                })
                .collect(),
            regions: ids.iter().map(|id| (*id, "local".to_string())).collect(),
            terms: ids.iter().map(|id| (*id, 0)).collect(),
            leader: None,
            voters: ids.iter().copied().collect(),
            addresses: ids.iter().map(|id| (*id, format!("node-{id}"))).collect(),
            now: start,
            rng: StdRng::seed_from_u64(7),
            running: BTreeMap::new(),
        }
    }

    fn node(&self, id: NodeId) -> &NodeScheduling {
        &self.nodes[&id]
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// `leader` wins `term`; `voters` (it included) learn of it.
    fn elect(&mut self, leader: NodeId, term: u64, voters: &[NodeId]) {
        for id in voters {
            self.terms.insert(*id, term);
        }
        self.leader = Some((leader, term));
    }

    fn leader(&self) -> (NodeId, u64) {
        self.leader.expect("a leader")
    }

    /// Node `from` builds its report for the current leader (to deliver now or later).
    fn report(&self, from: NodeId) -> LoadReport {
        let load = Load {
            region: self.regions[&from].clone(),
            sandbox_mode: "test".into(),
            capacity_mb: 4096,
            free_mb: 4096,
            idle: Vec::new(),
        };
        self.node(from).report(from, self.terms[&from], load, self.now)
    }

    /// Delivers a report to the leader and its answer back.
    fn deliver(&mut self, from: NodeId, report: LoadReport) {
        let (leader, term) = self.leader();
        let reply = self.node(leader).heartbeat_here(term, report, self.now);
        self.node(from).take_answer(reply, self.now);
    }

    /// One round of heartbeats from `nodes`, delivered at once.
    fn heartbeats(&mut self, nodes: &[NodeId]) {
        for id in nodes {
            let report = self.report(*id);
            self.deliver(*id, report);
        }
    }

    /// Moves the clock by `by`, with heartbeats from `nodes` every 200 ms.
    fn run_for(&mut self, by: Duration, nodes: &[NodeId]) {
        let until = self.now + by;
        while self.now + ms(200) <= until {
            self.advance(ms(200));
            self.heartbeats(nodes);
        }
        self.now = until;
    }

    /// Asks the leader for a grant in `region`; a grant is recorded among the
    /// leader's own shadows and on `shadow_on` (the rest of a majority).
    fn ask(&mut self, region: &str, shadow_on: &[NodeId]) -> GrantReply {
        let (leader, term) = self.leader();
        let ask = GrantAsk {
            entry_region: "local".into(),
            region: Some(region.into()),
            key: key(),
            memory_mb: 128,
            timeout_s: TIMEOUT_S,
        };
        let members = Members {
            voters: &self.voters,
            addresses: &self.addresses,
        };
        let limits = Limits {
            quota: QUOTA,
            reserved_total: 0,
            reserved: None,
        };
        let reply = self.nodes[&leader].grant(term, &ask, &members, limits, self.now, &mut self.rng);
        if let GrantReply::Granted(grant) = &reply {
            for id in shadow_on {
                self.node(*id)
                    .record_shadow(super::node::shadow_of(grant, TIMEOUT_S), self.terms[id], self.now)
                    .expect("a voter of the term takes its shadows");
            }
        }
        reply
    }

    fn granted(&mut self, region: &str, shadow_on: &[NodeId]) -> Grant {
        match self.ask(region, shadow_on) {
            GrantReply::Granted(grant) => grant,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    /// The grant reaches its node `transit` after it was granted (the lease
    /// as the entry node measured it shrinks by that much) and starts there
    /// unless it lapsed.
    fn start(&mut self, grant: &Grant, transit: Duration) -> Result<(), Lapsed> {
        let start_within = ms(grant.lease_ms).saturating_sub(transit);
        let guard =
            self.nodes[&grant.node].start(grant, self.now + start_within, Duration::from_secs(TIMEOUT_S), self.now)?;
        self.running.insert(grant.id, guard);
        self.check_quota();
        Ok(())
    }

    /// The invocation of `grant` ends and its node gives the grant back.
    fn end(&mut self, grant: &Grant) {
        self.running.remove(&grant.id);
        self.node(grant.node).finished(grant.id, self.now);
        let (leader, _) = self.leader();
        self.node(leader).release(
            &Release {
                grant: grant.id,
                term: grant.term,
                node: grant.node,
                key: key(),
                warm: true,
            },
            self.now,
        );
    }

    /// The promise: never more running than the quota.
    fn check_quota(&self) {
        assert!(
            self.running.len() <= QUOTA as usize,
            "{} invocations run at once under a quota of {QUOTA}: {:?}",
            self.running.len(),
            self.running.keys().collect::<Vec<_>>()
        );
    }

    /// Fills the quota with grants placed by the leader; returns them.
    fn fill(&mut self, shadow_on: &[NodeId]) -> Vec<Grant> {
        (0..QUOTA).map(|_| self.granted("local", shadow_on)).collect()
    }
}

fn assert_throttled(reply: GrantReply) {
    assert!(
        matches!(
            reply,
            GrantReply::Throttled {
                reason: ThrottleReason::ConcurrentInvocationLimitExceeded,
                ..
            }
        ),
        "expected a 429, got {reply:?}"
    );
}

#[test]
fn a_leader_that_loses_its_term_still_reports_its_grants() {
    // The chaos suite's minority-partition breach: node 1 leads term 5 and
    // grants the whole quota, each grant recorded on itself and node 2.
    let mut h = Harness::new(3);
    h.elect(1, 5, &[1, 2, 3]);
    h.heartbeats(&[1, 2, 3]);
    let grants = h.fill(&[2]);
    // Node 2 is cut off before it reports; node 1 wins term 7 with node 3's
    // vote, and its soft state of term 5 is gone. The grants have not
    // started yet (forwarded, in flight).
    h.elect(1, 7, &[1, 3]);
    h.heartbeats(&[1, 3]);
    h.run_for(ms(700), &[1, 3]);
    // Node 1 is the one voter of both majorities: its own shadows tell it.
    assert_throttled(h.ask("local", &[3]));
    for grant in &grants {
        h.start(grant, ms(300)).expect("a grant within its lease starts");
    }
    assert_throttled(h.ask("local", &[3]));
}

#[test]
fn a_grant_that_arrives_late_cannot_start_once_the_leader_freed_its_slot() {
    // The other breach: a forwarded grant held back by a cut link reached
    // its node after the leader had freed the slot, and started there with
    // a lease measured from its arrival.
    let mut h = Harness::new(3);
    h.elect(1, 3, &[1, 2, 3]);
    h.heartbeats(&[1, 2, 3]);
    let grants = h.fill(&[3]);
    let (late, on_time) = grants.split_first().unwrap();
    for grant in on_time {
        h.start(grant, ms(5)).unwrap();
    }
    // Lease (2 s) + margin (1 s) later, reports show `late` never started
    // on its node: the leader frees its slot and grants it again.
    h.run_for(ms(3_400), &[1, 2, 3]);
    let again = h.granted("local", &[3]);
    h.start(&again, ms(5)).unwrap();
    // Now the held-back grant arrives, with what the entry node had left of
    // its lease when it sent it: the lease on the leader's clock is over.
    assert_eq!(h.start(late, ms(10)), Err(Lapsed));
    h.check_quota();
}

#[test]
fn a_report_held_back_by_the_network_frees_nothing() {
    let mut h = Harness::new(3);
    h.elect(1, 3, &[1, 2, 3]);
    h.heartbeats(&[1, 2, 3]);
    let grants = h.fill(&[3]);
    // Node 2 builds a report, which the network holds; meanwhile the grants
    // start (node 2's among them) and node 2 is cut off from the leader.
    let stale: Vec<LoadReport> = [1, 2, 3].iter().map(|id| h.report(*id)).collect();
    h.advance(ms(1_500));
    for grant in &grants {
        h.start(grant, ms(1_500)).unwrap();
    }
    let elsewhere: Vec<NodeId> = [1, 3]
        .into_iter()
        .filter(|id| grants.iter().all(|g| g.node != *id))
        .collect();
    h.run_for(ms(2_000), &elsewhere);
    // The old reports arrive after the grants' lease: they were built
    // before the grants started, so they must not free them.
    for (id, report) in [1, 2, 3].into_iter().zip(stale) {
        h.deliver(id, report);
    }
    assert_throttled(h.ask("local", &[3]));
}

#[test]
fn a_deposed_leader_cannot_record_a_grant_on_a_newer_voter() {
    let mut h = Harness::new(3);
    h.elect(1, 3, &[1, 2, 3]);
    h.heartbeats(&[1, 2, 3]);
    let grant = h.granted("local", &[]);
    // Nodes 2 and 3 moved on to term 4.
    h.terms.insert(2, 4);
    h.terms.insert(3, 4);
    for id in [2, 3] {
        assert!(h
            .node(id)
            .record_shadow(super::node::shadow_of(&grant, TIMEOUT_S), 4, h.now)
            .is_err());
    }
}

#[test]
fn a_new_leader_counts_running_grants_and_shadows_until_they_are_over() {
    let mut h = Harness::new(3);
    h.elect(1, 3, &[1, 2, 3]);
    h.heartbeats(&[1, 2, 3]);
    let grants = h.fill(&[2]);
    for grant in &grants {
        h.start(grant, ms(5)).unwrap();
    }
    // Node 1 dies with its soft state; node 2 leads term 4.
    h.nodes.remove(&1);
    h.addresses.remove(&1);
    h.elect(2, 4, &[2, 3]);
    // Before the reports: nothing is granted (rebuilding).
    assert!(matches!(h.ask("local", &[3]), GrantReply::NotReady(_)));
    h.heartbeats(&[2, 3]);
    h.run_for(ms(700), &[2, 3]);
    assert_throttled(h.ask("local", &[3]));
    // They end; the nodes running them report it, and the slots come back.
    for grant in &grants {
        if h.nodes.contains_key(&grant.node) {
            h.running.remove(&grant.id);
            h.node(grant.node).finished(grant.id, h.now);
        }
    }
    let on_dead_node = grants.iter().filter(|g| g.node == 1).count();
    h.run_for(ms(400), &[2, 3]);
    let free: usize = (0..QUOTA)
        .map(|_| h.ask("local", &[3]))
        .filter(|r| matches!(r, GrantReply::Granted(_)))
        .count();
    // Grants that ran on the dead node are held until they could no longer
    // run (lease + timeout): their node cannot say they ended.
    assert_eq!(free, QUOTA as usize - on_dead_node);
}

#[test]
fn releases_free_slots_and_a_silent_nodes_grants_expire() {
    let mut h = Harness::new(3);
    // Node 2 is the only node of region "b": every grant there runs on it.
    h.regions.insert(2, "b".into());
    h.elect(1, 3, &[1, 2, 3]);
    h.heartbeats(&[1, 2, 3]);
    let grants: Vec<Grant> = (0..QUOTA).map(|_| h.granted("b", &[3])).collect();
    for grant in &grants {
        h.start(grant, ms(5)).unwrap();
    }
    h.end(&grants[0]);
    let again = h.granted("b", &[3]);
    h.start(&again, ms(5)).unwrap();
    assert_throttled(h.ask("b", &[3]));
    // Node 2 goes silent: it cannot say its invocations ended, so they are
    // held until they could no longer run (lease + timeout + margin).
    h.run_for(Duration::from_secs(TIMEOUT_S + 2), &[1, 3]);
    assert_throttled(h.ask("b", &[3]));
    h.run_for(Duration::from_secs(2), &[1, 3]);
    h.running.clear();
    assert!(
        matches!(h.ask("b", &[3]), GrantReply::NoCapacity(_)),
        "the quota has room again, but node 2 is not live"
    );
    h.heartbeats(&[2]);
    assert!(matches!(h.ask("b", &[3]), GrantReply::Granted(_)));
}
