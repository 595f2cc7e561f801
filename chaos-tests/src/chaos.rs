//! Chaos runs: a three-node cluster in its own network, the workload, one
//! scenario's faults (seeded, so a seed replays the same schedule), then
//! healing, draining and the checks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{self, Report};
use crate::history::{DrainBound, History, Recorder};
use crate::workload::{self, Workload};
use crate::{TestCluster, TEST_CONFIG};

/// The scenarios, by name.
pub const SCENARIOS: &[&str] = &[
    "steady",
    "leader-kills",
    "random-kills",
    "minority-partition",
    "leader-isolated",
    "flapping-links",
    "rolling-restart",
    "leader-pause",
    "slow-lossy-links",
    "disk-full",
];

const NODES: usize = 3;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: String,
    pub duration: Duration,
    pub seed: u64,
    /// The region quota; the invokers try to exceed it.
    pub quota: u32,
    pub writers: usize,
    pub invokers: usize,
    /// `FLOE_FAILPOINTS` for the nodes (test builds only): proves a checker can fail.
    pub failpoints: Option<String>,
    /// How long, after the faults, the run waits for accepted events to run
    /// (default: twice the drain bound of the backlog, see `checker::drain`).
    pub drain: Option<Duration>,
    /// Where to copy every node's whole log when a check fails.
    pub logs: Option<std::path::PathBuf>,
    /// Copy the logs there whatever the checks found.
    pub keep_logs: bool,
}

impl RunOptions {
    pub fn new(scenario: &str, duration: Duration, seed: u64) -> RunOptions {
        RunOptions {
            scenario: scenario.to_string(),
            duration,
            seed,
            quota: 3,
            writers: 4,
            invokers: 6,
            failpoints: None,
            drain: None,
            logs: None,
            keep_logs: false,
        }
    }
}

/// Faster timings than the defaults, so that a short run sees many faults;
/// functions on the node's network, so they reach the report listener.
fn node_config() -> String {
    format!(
        "{TEST_CONFIG}\n[executor]\nnetwork = \"host\"\nprepared_sandboxes = 1\n\n[scheduler]\nevent_retry_delay = \"{}s\"\n",
        EVENT_RETRY_DELAY_S
    )
}

/// The nodes' `scheduler.event_retry_delay`: doubled per attempt, so with
/// the probe's two retries an event waits at most twice this between attempts.
const EVENT_RETRY_DELAY_S: f64 = 1.0;

/// The drain bound of this suite's settings (see `checker::drain`).
fn drain_bound() -> DrainBound {
    DrainBound {
        // Electing a leader (election timeout ≤ 0.6 s, twice when the first
        // vote splits), its rebuild wait (0.6 s), the nodes' first reports.
        recovery_s: 3.0,
        // The longest retry delay (2 × 1 s) and one throttle backoff (≤ 0.75 s).
        waits_s: 2.0 * EVENT_RETRY_DELAY_S + 0.75,
        // The probe sleeps 20 ms and reports three times over TCP; with the
        // grant, the sandbox round trip and the wake-up of the next waiting
        // event, a slot turns over in well under 100 ms on these machines:
        // a quarter of a second leaves room for a loaded machine.
        per_event_s: 0.25,
    }
}

/// One fault of the scenario, applied, held, and undone.
async fn fault(scenario: &str, cluster: &mut TestCluster, rng: &mut StdRng, recorder: &Recorder) -> anyhow::Result<()> {
    let hold = Duration::from_millis(rng.random_range(1500..4000));
    let settle = Duration::from_millis(rng.random_range(1000..2500));
    match scenario {
        // No faults: the workload alone, a baseline.
        "steady" => {
            tokio::time::sleep(hold).await;
            recorder.healed();
        }
        "leader-kills" => {
            let leader = cluster.leader().await?;
            recorder.fault(format!("kill -9 node {leader} (the leader)"));
            cluster.kill(leader);
            tokio::time::sleep(hold).await;
            cluster.restart(leader).await?;
            recorder.healed();
        }
        "random-kills" => {
            let node = rng.random_range(0..NODES);
            recorder.fault(format!("kill -9 node {node}"));
            cluster.kill(node);
            tokio::time::sleep(hold).await;
            cluster.restart(node).await?;
            recorder.healed();
        }
        "minority-partition" => {
            let node = rng.random_range(0..NODES);
            recorder.fault(format!("partition node {node} from the others"));
            cluster.network()?.partition(&[node])?;
            tokio::time::sleep(hold).await;
            cluster.network()?.heal()?;
            recorder.healed();
        }
        "leader-isolated" => {
            let leader = cluster.leader().await?;
            recorder.fault(format!("isolate node {leader} (the leader) from the majority"));
            cluster.network()?.partition(&[leader])?;
            tokio::time::sleep(hold).await;
            cluster.network()?.heal()?;
            recorder.healed();
        }
        "flapping-links" => {
            recorder.fault("flapping links");
            let until = Instant::now() + hold * 2;
            while Instant::now() < until {
                let node = rng.random_range(0..NODES);
                cluster.network()?.partition(&[node])?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
                cluster.network()?.heal()?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
            }
            recorder.healed();
        }
        "rolling-restart" => {
            recorder.fault("rolling restart");
            for node in 0..NODES {
                cluster.terminate(node)?;
                cluster.restart(node).await?;
                cluster.wait_for_voters(NODES).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            recorder.healed();
        }
        "leader-pause" => {
            let leader = cluster.leader().await?;
            recorder.fault(format!("SIGSTOP node {leader} (the leader) past the election timeout"));
            cluster.pause(leader);
            tokio::time::sleep(hold).await;
            cluster.resume(leader);
            recorder.healed();
        }
        "slow-lossy-links" => {
            let node = rng.random_range(0..NODES);
            let network = cluster.network()?;
            recorder.fault(format!(
                "slow links ({}) and 20% loss at node {node}",
                network.slow_link_kind()
            ));
            network.slow(node, 100)?;
            network.lose(node, 20)?;
            tokio::time::sleep(hold).await;
            cluster.network()?.heal()?;
            recorder.healed();
        }
        "disk-full" => {
            let node = rng.random_range(0..NODES);
            recorder.fault(format!("fill the disk of node {node}"));
            let filler = cluster.fill_disk(node)?;
            tokio::time::sleep(hold).await;
            std::fs::remove_file(filler)?;
            recorder.healed();
        }
        other => anyhow::bail!("unknown scenario {other:?}: one of {}", SCENARIOS.join(", ")),
    }
    tokio::time::sleep(settle).await;
    Ok(())
}

/// Runs one scenario and checks the history.
pub async fn run(options: &RunOptions) -> anyhow::Result<(History, Report)> {
    if !SCENARIOS.contains(&options.scenario.as_str()) {
        anyhow::bail!(
            "unknown scenario {:?}: one of {}",
            options.scenario,
            SCENARIOS.join(", ")
        );
    }
    let mut cluster = TestCluster::start_networked(
        NODES,
        &node_config(),
        options.scenario == "disk-full",
        options.failpoints.as_deref(),
    )
    .await?;
    let client = Arc::new(cluster.client().await?.with_retry_for(Duration::from_secs(2)));
    workload::prepare(&client, options.quota)
        .await
        .context("prepare the workload")?;
    let recorder = Recorder::default();
    recorder.set_quota(options.quota);
    recorder.set_drain_bound(drain_bound());
    let report_to =
        workload::start_report_listener(cluster.network()?.client_address().into(), recorder.clone()).await?;
    let mut node_clients = Vec::new();
    for node in 0..NODES {
        node_clients.push(cluster.client_of(node).await?.with_retry_for(Duration::ZERO));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = Workload {
        client: client.clone(),
        node_clients,
        recorder: recorder.clone(),
        report_to,
        seed: options.seed,
    }
    .start(options.writers, options.invokers, stop.clone());

    let mut rng = StdRng::seed_from_u64(options.seed);
    let started = Instant::now();
    // A quiet start: the history shows the cluster healthy before the first fault.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut outcome = Ok(());
    while started.elapsed() < options.duration {
        if let Err(e) = fault(&options.scenario, &mut cluster, &mut rng, &recorder).await {
            outcome = Err(e);
            break;
        }
    }
    // Heal everything, then let the workload see a healthy cluster again.
    recorder.fault("heal: every link whole, every node running");
    let healed = cluster.heal_all().await;
    recorder.healed();
    recorder.final_heal();
    let heal = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    outcome?;
    healed?;
    // Accepted events run at least once, and within the drain bound of the
    // backlog: wait for them, up to twice the bound (or `--drain`), so that
    // events that are late are told apart from events that never run.
    let bound = recorder.drain_limit();
    let deadline = heal + options.drain.unwrap_or(Duration::from_secs_f64(2.0 * bound));
    while recorder.accepted_events_not_run() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut history = recorder.take();
    // What the cluster says of the events that did not run.
    if let Ok(queued) = client.list_queued_events(workload::PROBE).await {
        let ids: std::collections::BTreeMap<&str, &str> = history
            .event_request_ids
            .iter()
            .map(|(id, request_id)| (request_id.as_str(), id.as_str()))
            .collect();
        let now_ms = (crate::history::now() * 1000.0) as i64;
        let queued: Vec<(String, String)> = queued
            .into_iter()
            .filter_map(|event| {
                let id = ids.get(event.id.as_str())?.to_string();
                let state = format!(
                    "queued {:.1} s ago, {} attempts, due in {:.1} s{}",
                    (now_ms - event.accepted_ms) as f64 / 1000.0,
                    event.attempts,
                    (event.due_ms - now_ms) as f64 / 1000.0,
                    if event.last_error.is_empty() {
                        String::new()
                    } else {
                        format!(", last error {}", event.last_error)
                    }
                );
                Some((id, state))
            })
            .collect();
        history.still_queued.extend(queued);
    }
    for node in 0..NODES {
        if let Ok(status) = cluster.client_of(node).await?.cluster_status().await {
            if let Some(me) = status.nodes.iter().find(|n| n.id == status.node_id) {
                history.sandbox_modes.push(me.sandbox_mode.clone());
            }
        }
    }
    // Events that failed for good are in the failed-event store: name them in the report.
    if let Ok(failed) = client.list_failed_events(workload::PROBE).await {
        for event in failed {
            let id = serde_json::from_str::<serde_json::Value>(&event.payload)
                .ok()
                .and_then(|payload| payload["id"].as_str().map(String::from))
                .unwrap_or(event.id);
            history
                .dead_lettered
                .insert(id, format!("{}: {}", event.condition, event.last_error));
        }
    }
    let report = checker::check(&history);
    if !report.ok() {
        eprintln!("--- node logs ---\n{}", cluster.logs());
    }
    if !report.ok() || options.keep_logs {
        if let Some(dir) = &options.logs {
            match cluster.save_logs(dir, &options.scenario) {
                Ok(()) => eprintln!("whole node logs in {}", dir.display()),
                Err(e) => eprintln!("could not save the node logs to {}: {e:#}", dir.display()),
            }
        }
    }
    Ok((history, report))
}

/// The summary table a run prints.
pub fn summary(options: &RunOptions, history: &History, report: &Report) -> String {
    use crate::history::{OpKind, Outcome};
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["operation", "ok", "failed", "unknown"]);
    type IsKind = fn(&OpKind) -> bool;
    let kinds: [(&str, IsKind); 4] = [
        ("register write", |k| matches!(k, OpKind::Write { .. })),
        ("register read", |k| matches!(k, OpKind::Read { .. })),
        ("sync invoke", |k| matches!(k, OpKind::Invoke)),
        ("async invoke", |k| matches!(k, OpKind::Event { .. })),
    ];
    for (name, is) in kinds {
        let ops: Vec<_> = history.ops.iter().filter(|op| is(&op.kind)).collect();
        let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|op| f(&op.outcome)).count().to_string();
        table.add_row(vec![
            name.to_string(),
            count(|o| matches!(o, Outcome::Ok)),
            count(|o| matches!(o, Outcome::Fail(_))),
            count(|o| matches!(o, Outcome::Unknown(_))),
        ]);
    }
    let mut failures: std::collections::BTreeMap<String, usize> = Default::default();
    for op in &history.ops {
        if let Outcome::Fail(message) | Outcome::Unknown(message) = &op.outcome {
            let kind: String = message.chars().take(60).collect();
            *failures.entry(kind).or_default() += 1;
        }
    }
    let percentile = |values: &[f64], p: f64| {
        let mut values = values.to_vec();
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            0.0
        } else {
            values[(((values.len() - 1) as f64) * p).round() as usize]
        }
    };
    let mut text = format!(
        "scenario {}  seed {}  duration {:?}  faults {}\n{table}\n",
        options.scenario,
        options.seed,
        options.duration,
        history.faults.len()
    );
    text.push_str("failures by kind:\n");
    for (kind, count) in failures.iter().take(8) {
        text.push_str(&format!("  {count:6}  {kind}\n"));
    }
    text.push_str(&format!(
        "max concurrency {} (quota {})  lost events {}  duplicate events {}  unavailability p50 {:.2} s  p99 {:.2} s\n",
        report.max_concurrency,
        history.quota,
        report.lost_events,
        report.duplicate_events,
        percentile(&report.unavailability, 0.5),
        percentile(&report.unavailability, 0.99)
    ));
    text.push_str(&format!(
        "events drained after each fault's heal p50 {:.2} s  max {:.2} s; after the final heal {}\n",
        percentile(&report.drains, 0.5),
        percentile(&report.drains, 1.0),
        match report.final_drain {
            Some((took, bound)) => format!("{took:.2} s (bound {bound:.1} s)"),
            None => "-".into(),
        }
    ));
    if let Some((id, accepted, waited)) = checker::slowest_event(history) {
        text.push_str(&format!(
            "slowest event: {id} (request {}), accepted at {accepted:.3}, first ran {waited:.2} s later\n",
            history.event_request_ids.get(&id).map(String::as_str).unwrap_or("?")
        ));
    }
    text.push_str(&format!("sandboxes: {}\n", history.sandbox_modes.join(", ")));
    for finding in &report.findings {
        text.push_str(&format!(
            "{} {}: {}\n",
            if finding.ok { "PASS" } else { "FAIL" },
            finding.promise,
            finding.detail
        ));
    }
    text
}
