//! floe's benchmarks, each next to a baseline measured in the same run, one
//! module per benchmark:
//!
//! - `metadata`: metadata writes on a 3-node cluster (sequential latency,
//!   throughput with concurrent writers) next to a 3-member etcd on the same
//!   machine (`etcd`: its own gRPC protocol), taking turns round by round;
//!   and leader failover time;
//! - `rpc`: the gRPC transport's floor (stale reads that touch no Raft);
//! - `schedule`: grants at the leader, warm invokes entering at a follower
//!   or the leader, the async accept rate, failover to the first invoke;
//! - `invoke`: warm and cold invocations next to the bare interpreter;
//! - `rest`: Lambda's REST API next to gRPC.
//!
//! Build release binaries first: `cargo build --release --workspace`.

mod common;
mod etcd;
mod invoke;
mod metadata;
mod rest;
mod rpc;
mod schedule;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "floe benchmarks (run release builds)")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Warm and cold invocations of a no-op handler on one node, next to
    /// calling it directly in a running interpreter and spawning the bare interpreter.
    Invoke {
        /// python or nodejs.
        #[arg(long, default_value = "python")]
        runtime: String,
        #[arg(long, default_value_t = 2000)]
        warm_calls: usize,
        #[arg(long, default_value_t = 20)]
        cold_starts: usize,
        #[arg(long, default_value_t = 8)]
        callers: usize,
        #[arg(long, default_value_t = 50)]
        warm_sandboxes: usize,
    },
    /// gRPC round trips that touch no Raft (stale reads of a missing function): the transport's floor.
    Rpc {
        #[arg(long, default_value_t = 32)]
        callers: usize,
        #[arg(long, default_value_t = 500)]
        calls_per_caller: usize,
    },
    /// The scheduler on 3 nodes: grant round trips and grants per second at
    /// the leader, warm invokes entering at a follower vs. at the leader,
    /// the async accept rate, and failover to the first successful invoke.
    Schedule {
        #[arg(long, default_value_t = 2000)]
        grants: usize,
        #[arg(long, default_value_t = 16)]
        callers: usize,
        #[arg(long, default_value_t = 1000)]
        warm_calls: usize,
        #[arg(long, default_value_t = 2000)]
        events: usize,
        #[arg(long, default_value_t = 5)]
        failovers: usize,
    },
    /// Warm invokes of one Python no-op through Lambda's REST API (SigV4
    /// signed, one keep-alive connection) and through gRPC, alternated in one run.
    /// With --tls: the same on two nodes, one with TLS on its public APIs, the
    /// four paths alternated call by call.
    Rest {
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        #[arg(long)]
        tls: bool,
    },
    /// Metadata writes on 3 nodes vs. etcd, and leader failover.
    Metadata {
        /// Sequential writes to time.
        #[arg(long, default_value_t = 1000)]
        sequential: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 32)]
        writers: usize,
        /// Writes per concurrent writer, in each of its two turns.
        #[arg(long, default_value_t = 100)]
        writes_per_writer: usize,
        /// Leader kills to time.
        #[arg(long, default_value_t = 7)]
        failovers: usize,
        /// Nodes in the floe cluster (1 shows the cost of replication).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Skip etcd (e.g. where it is not installed).
        #[arg(long)]
        no_etcd: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Invoke {
            runtime,
            warm_calls,
            cold_starts,
            callers,
            warm_sandboxes,
        } => invoke::invoke_bench(&runtime, warm_calls, cold_starts, callers, warm_sandboxes).await,
        Bench::Rest { calls, tls: false } => rest::rest_bench(calls).await,
        Bench::Rest { calls, tls: true } => rest::tls_bench(calls).await,
        Bench::Rpc {
            callers,
            calls_per_caller,
        } => rpc::rpc_floor(callers, calls_per_caller).await,
        Bench::Schedule {
            grants,
            callers,
            warm_calls,
            events,
            failovers,
        } => schedule::schedule(grants, callers, warm_calls, events, failovers).await,
        Bench::Metadata {
            sequential,
            writers,
            writes_per_writer,
            failovers,
            nodes,
            no_etcd,
        } => metadata::metadata(sequential, writers, writes_per_writer, failovers, nodes, no_etcd).await,
    }
}
