//! `cargo run -p chaos-tests -- --scenario NAME --duration 10m --seed N`:
//! one long chaos run on a three-node cluster in network namespaces (needs
//! root, iproute2 and nftables). Prints the summary; exits 1 when a promise broke.

use std::process::ExitCode;

use chaos_tests::chaos::{self, RunOptions, SCENARIOS};
use clap::Parser;

#[derive(Parser)]
#[command(about, long_about)]
struct Flags {
    /// One of: steady (no faults), leader-kills, random-kills, minority-partition, leader-isolated,
    /// flapping-links, rolling-restart, leader-pause, slow-lossy-links, disk-full; several,
    /// comma-separated, run one after another; or all.
    #[arg(long)]
    scenario: String,
    /// How long faults go on (the workload runs throughout), e.g. 30s or 10m.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Seeds the fault schedule and the workload: the same seed replays the same choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The region quota the concurrency checker holds the cluster to.
    #[arg(long, default_value_t = 3)]
    quota: u32,
    /// After the faults, how long to wait for accepted events to run before they count as lost
    /// [default: twice the drain bound, which grows with the backlog of events at the heal].
    #[arg(long, value_parser = humantime::parse_duration)]
    drain: Option<std::time::Duration>,
    /// When a check fails, copy every node's whole log into this directory.
    #[arg(long)]
    logs: Option<std::path::PathBuf>,
    /// Copy the logs into --logs DIR whatever the checks found.
    #[arg(long, requires = "logs")]
    keep_logs: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    let scenarios: Vec<&str> = if flags.scenario == "all" {
        SCENARIOS.to_vec()
    } else {
        flags.scenario.split(',').map(str::trim).collect()
    };
    // Checked before any runs: a typo in the third name should not surface after two 10-minute runs.
    if let Some(unknown) = scenarios.iter().find(|s| !SCENARIOS.contains(s)) {
        eprintln!(
            "chaos: unknown scenario {unknown:?}; one of: {}, or all",
            SCENARIOS.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut broken = false;
    for scenario in scenarios {
        let mut options = RunOptions::new(scenario, flags.duration, flags.seed);
        options.quota = flags.quota;
        options.drain = flags.drain;
        options.logs = flags.logs.clone();
        options.keep_logs = flags.keep_logs;
        match chaos::run(&options).await {
            Ok((history, report)) => {
                println!("{}", chaos::summary(&options, &history, &report));
                broken |= !report.ok();
            }
            Err(e) => {
                eprintln!("chaos: scenario {scenario}: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    if broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
