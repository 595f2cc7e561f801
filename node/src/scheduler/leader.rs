//! The leader's soft state: the load view from heartbeats and the grants
//! given. Never written to the Raft log; a new leader starts empty and
//! rebuilds it from the nodes' reports before it grants anything.
//!
//! A grant is held until its node releases it, until a report of that node
//! shows it no longer runs (a report built after the grant could no longer
//! start: see [`super::clock`]), or — when the node went silent — until it
//! could no longer be running at all (lease + the function's timeout). So a
//! node cut off from the leader keeps its share of the quota while its
//! invocations may still run.
//!
//! Pure: the time, the quotas (read from the state machine by the caller)
//! and the random source are arguments; nothing here does IO.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use floe_raft_store::NodeId;

use super::clock::Clock;
use super::placement::{self, Ask, NodeLoad, Placement};
use super::quota::{self, Limits, Usage};
use crate::config::SchedulerConfig;
use crate::shared::SandboxKey;
use crate::wire::{Grant, GrantAsk, GrantReply, LoadReport, LoadView, NodeView, Release};

/// Slack for clocks that run at slightly different speeds and for messages in flight.
const MARGIN: Duration = Duration::from_secs(1);
/// How long a grant a node reported finished stays known as such (longer
/// than voters keep shadows of it once the leader's live list lacks it).
const FINISHED_TOMBSTONE: Duration = Duration::from_secs(30);

pub struct Scheduler {
    config: SchedulerConfig,
    /// This node's clock, which stamps its grants and answers.
    clock: Clock,
    state: Mutex<State>,
}

/// Everything the leader knows in one term.
struct State {
    term: u64,
    since: Instant,
    nodes: HashMap<NodeId, NodeEntry>,
    grants: HashMap<u64, GrantEntry>,
    /// Grants known to be over, until they expire: stale shadows of them are ignored.
    finished: HashMap<u64, Instant>,
    /// Grants made in this term so far.
    issued: u64,
}

struct NodeEntry {
    region: String,
    sandbox_mode: String,
    capacity_mb: u64,
    free_mb: u64,
    idle: HashMap<SandboxKey, u32>,
    last_seen: Instant,
}

struct GrantEntry {
    node: NodeId,
    region: String,
    function: String,
    reserved: bool,
    memory_mb: u64,
    /// A report built after this that does not list it means it never
    /// started or has ended: its node no longer starts it by then.
    start_by: Instant,
    /// After this, it cannot be running any more, whatever its node says.
    expires: Instant,
}

/// Who is in the cluster, from Raft's membership, for one decision.
pub struct Members<'a> {
    pub voters: &'a BTreeSet<NodeId>,
    pub addresses: &'a BTreeMap<NodeId, String>,
}

impl State {
    fn new(term: u64, now: Instant) -> State {
        State {
            term,
            since: now,
            nodes: HashMap::new(),
            grants: HashMap::new(),
            finished: HashMap::new(),
            issued: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        self.grants.retain(|_, g| g.expires > now);
        self.finished.retain(|_, expires| *expires > now);
    }

    /// Marks a grant over (held or not): a tombstone keeps stale shadows of
    /// it from being counted again.
    fn finish(&mut self, id: u64, now: Instant) -> Option<GrantEntry> {
        let entry = self.grants.remove(&id);
        let until = entry.as_ref().map_or(now, |e| e.expires).max(now + FINISHED_TOMBSTONE);
        self.finished.insert(id, until);
        entry
    }

    fn usage(&self, region: &str, function: &str) -> Usage {
        let mut usage = Usage::default();
        for grant in self.grants.values().filter(|g| g.region == region) {
            usage.region += 1;
            if !grant.reserved {
                usage.unreserved += 1;
            }
            if grant.function == function {
                usage.function += 1;
            }
        }
        usage
    }
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, clock: Clock) -> Scheduler {
        Scheduler {
            config,
            clock,
            state: Mutex::new(State::new(0, clock.epoch)),
        }
    }

    /// The state of `term`; a newer term starts over (this node just became leader).
    fn state(&self, term: u64, now: Instant) -> Option<std::sync::MutexGuard<'_, State>> {
        let mut state = self.state.lock().expect("scheduler lock");
        if term > state.term {
            tracing::info!(
                term,
                "scheduler: leading a new term, rebuilding the load view from reports"
            );
            *state = State::new(term, now);
        }
        (state.term == term).then_some(state)
    }

    /// Takes a node's report: its load, and which grants it runs.
    pub fn heartbeat(&self, term: u64, report: LoadReport, now: Instant) {
        let Some(mut state) = self.state(term, now) else { return };
        state.expire(now);
        let running: HashSet<u64> = report.running.iter().map(|g| g.id).collect();
        let node = report.node;
        // How old the report may be: it was built after the node had this
        // leader's answer stamped `seen` (a report the network held back must
        // not free grants that started after it was built). Without one, it
        // says nothing about what does not run.
        let built_after = report
            .seen
            .filter(|(seen_term, _)| *seen_term == term)
            .map(|(_, ms)| self.clock.instant(ms).min(now));
        let over: Vec<u64> = state
            .grants
            .iter()
            .filter(|(id, g)| g.node == node && !running.contains(id) && built_after.is_some_and(|b| b >= g.start_by))
            .map(|(id, _)| *id)
            .collect();
        for id in over.into_iter().chain(report.finished.iter().copied()) {
            state.finish(id, now);
        }
        // Grants of earlier leaders that a majority recorded: counted until
        // their node's reports show them over (once they could have started).
        for shadow in report.shadows.into_iter().filter(|s| s.term < term) {
            if state.finished.contains_key(&shadow.grant.id) {
                continue;
            }
            let grant = shadow.grant;
            state.grants.entry(grant.id).or_insert_with(|| GrantEntry {
                node: shadow.node,
                region: grant.region,
                function: grant.function,
                reserved: grant.reserved,
                memory_mb: grant.memory_mb,
                start_by: now + self.config.grant_lease + MARGIN,
                expires: now + Duration::from_millis(grant.remaining_ms) + MARGIN,
            });
        }
        for grant in report.running {
            // A grant of an earlier leader (or one this leader lost track of): count it again.
            state.grants.entry(grant.id).or_insert_with(|| GrantEntry {
                node,
                region: grant.region,
                function: grant.function,
                reserved: grant.reserved,
                memory_mb: grant.memory_mb,
                start_by: now,
                expires: now + Duration::from_millis(grant.remaining_ms) + MARGIN,
            });
        }
        state.nodes.insert(
            node,
            NodeEntry {
                region: report.region,
                sandbox_mode: report.sandbox_mode,
                capacity_mb: report.capacity_mb,
                free_mb: report.free_mb,
                idle: report.idle.into_iter().collect(),
                last_seen: now,
            },
        );
    }

    fn live(&self, entry: &NodeEntry, now: Instant) -> bool {
        now.duration_since(entry.last_seen) < self.config.node_timeout
    }

    /// Decides one invocation: refuse it over quota, or grant it a node.
    /// `limits` are the quotas of the ask's region ([`GrantAsk::region`]) as the state machine holds them.
    pub fn grant(
        &self,
        term: u64,
        ask: &GrantAsk,
        members: &Members,
        limits: Limits,
        now: Instant,
        rng: &mut impl rand::Rng,
    ) -> GrantReply {
        let Some(mut state) = self.state(term, now) else {
            return GrantReply::NotReady(format!("not the leader of term {term}"));
        };
        state.expire(now);
        let reported = members
            .addresses
            .keys()
            .filter(|id| state.nodes.contains_key(id))
            .count();
        if reported < members.addresses.len() && now.duration_since(state.since) < self.config.rebuild_wait {
            return GrantReply::NotReady("the new leader is still collecting the nodes' running invocations".into());
        }
        // A leader cut off from the majority must stop granting before a new one starts.
        let fresh_voters = members
            .voters
            .iter()
            .filter(|id| state.nodes.get(id).is_some_and(|n| self.live(n, now)))
            .count();
        if fresh_voters * 2 <= members.voters.len() {
            return GrantReply::NotReady("the leader has not heard from a majority of the voters".into());
        }
        let region = ask.region().to_string();
        if let Err(reason) = quota::admit(state.usage(&region, &ask.key.function), limits) {
            let message = match reason {
                crate::error::ThrottleReason::ConcurrentInvocationLimitExceeded => {
                    format!(
                        "Rate Exceeded: region {region} runs its quota of {} invocations",
                        limits.quota
                    )
                }
                crate::error::ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded => format!(
                    "Rate Exceeded: function {} runs its reserved concurrency of {}",
                    ask.key.function,
                    limits.reserved.unwrap_or(0)
                ),
            };
            return GrantReply::Throttled { reason, message };
        }
        let mut busy_mb: HashMap<NodeId, u64> = HashMap::new();
        for grant in state.grants.values() {
            *busy_mb.entry(grant.node).or_default() += grant.memory_mb;
        }
        let loads: Vec<NodeLoad> = members
            .addresses
            .keys()
            .filter_map(|id| {
                let entry = state.nodes.get(id)?;
                Some(NodeLoad {
                    id: *id,
                    region: &entry.region,
                    live: self.live(entry, now),
                    idle: &entry.idle,
                    capacity_mb: entry.capacity_mb,
                    busy_mb: busy_mb.get(id).copied().unwrap_or(0),
                })
            })
            .collect();
        let place_ask = Ask {
            region: &region,
            key: &ask.key,
            memory_mb: ask.memory_mb,
        };
        let Some(placement) = placement::place(&loads, &place_ask, rng) else {
            return GrantReply::NoCapacity(format!(
                "no live node of region {region} has {} MB free for {}",
                ask.memory_mb, ask.key.function
            ));
        };
        let node = placement.node();
        let warm = matches!(placement, Placement::Warm(_));
        if warm {
            if let Some(idle) = state.nodes.get_mut(&node).and_then(|n| n.idle.get_mut(&ask.key)) {
                *idle = idle.saturating_sub(1);
            }
        }
        let id = rng.random::<u64>();
        state.issued += 1;
        let seq = state.issued;
        let lease = self.config.grant_lease;
        state.grants.insert(
            id,
            GrantEntry {
                node,
                region: region.clone(),
                function: ask.key.function.clone(),
                reserved: limits.reserved.is_some(),
                memory_mb: ask.memory_mb,
                start_by: now + lease + MARGIN,
                expires: now + lease + Duration::from_secs(ask.timeout_s) + MARGIN,
            },
        );
        GrantReply::Granted(Grant {
            id,
            term,
            node,
            address: members.addresses.get(&node).cloned().unwrap_or_default(),
            region,
            function: ask.key.function.clone(),
            reserved: limits.reserved.is_some(),
            memory_mb: ask.memory_mb,
            lease_ms: lease.as_millis() as u64,
            granted_at_ms: self.clock.ms(now),
            seq,
            warm,
        })
    }

    /// Gives a grant back; its sandbox is idle again if it stayed warm.
    /// True when the grant was still held (a slot of the quota is free again).
    pub fn release(&self, release: &Release, now: Instant) -> bool {
        let Some(mut state) = self.state(release.term, now) else {
            return false;
        };
        let held = state.finish(release.grant, now).is_some();
        if held && release.warm {
            if let Some(node) = state.nodes.get_mut(&release.node) {
                *node.idle.entry(release.key.clone()).or_default() += 1;
            }
        }
        held
    }

    /// The grants held in `term`, and how many were made in it so far (a
    /// heartbeat's answer: voters drop the other shadows made before it).
    pub fn live_grants(&self, term: u64, now: Instant) -> (Vec<u64>, u64) {
        self.state(term, now)
            .map(|state| (state.grants.keys().copied().collect(), state.issued))
            .unwrap_or_default()
    }

    /// Forgets a grant that could not be recorded on a majority (it was never handed out).
    pub fn withdraw(&self, term: u64, grant: u64, now: Instant) {
        if let Some(mut state) = self.state(term, now) {
            state.grants.remove(&grant);
        }
    }

    /// The view for `floe cluster status`.
    pub fn view(&self, term: u64, now: Instant) -> LoadView {
        let Some(mut state) = self.state(term, now) else {
            return LoadView::default();
        };
        state.expire(now);
        let mut running: BTreeMap<String, u32> = BTreeMap::new();
        for grant in state.grants.values() {
            *running.entry(grant.region.clone()).or_default() += 1;
        }
        let nodes = state
            .nodes
            .iter()
            .map(|(id, entry)| NodeView {
                node: *id,
                running: state.grants.values().filter(|g| g.node == *id).count() as u32,
                idle: entry.idle.values().sum(),
                free_mb: entry.free_mb,
                capacity_mb: entry.capacity_mb,
                last_heartbeat_ms: now.duration_since(entry.last_seen).as_millis() as u64,
                sandbox_mode: entry.sandbox_mode.clone(),
                live: self.live(entry, now),
            })
            .collect();
        LoadView {
            term,
            nodes,
            running: running.into_iter().collect(),
        }
    }
}
