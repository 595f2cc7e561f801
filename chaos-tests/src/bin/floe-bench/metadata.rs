//! Metadata writes: floe next to etcd, and leader failover.

use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use floe_client::Client;

use crate::common::{ms, percentile, DEFAULT_CONFIG};
use crate::etcd::{etcd_leader, start_etcd, EtcdClient};

/// Latency percentiles of sequential writes and throughput of concurrent ones.
struct WriteFigures {
    p50: Duration,
    p99: Duration,
    throughput: f64,
}

/// What one system did over all rounds.
#[derive(Default)]
struct WriteSamples {
    latencies: Vec<Duration>,
    concurrent_writes: usize,
    concurrent_time: Duration,
}

impl WriteSamples {
    fn figures(mut self) -> WriteFigures {
        self.latencies.sort();
        WriteFigures {
            p50: percentile(&self.latencies, 0.5),
            p99: percentile(&self.latencies, 0.99),
            throughput: self.concurrent_writes as f64 / self.concurrent_time.as_secs_f64(),
        }
    }
}

/// `count` sequential writes, each timed.
async fn sequential_writes(writer: &mut impl Writer, round: usize, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        writer.write(&format!("seq-{round}-{i}"), i as u32).await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// `writers` concurrent writers of `per_writer` writes each; the time they took.
async fn concurrent_writes<W, F>(
    writers: usize,
    per_writer: usize,
    round: usize,
    make: impl Fn() -> F,
) -> anyhow::Result<Duration>
where
    F: std::future::Future<Output = anyhow::Result<W>>,
    W: Writer,
{
    let mut connected = Vec::with_capacity(writers);
    for _ in 0..writers {
        connected.push(make().await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(w, mut writer)| {
            tokio::spawn(async move {
                for i in 0..per_writer {
                    writer.write(&format!("w{round}-{w}-{i}"), i as u32).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

pub trait Writer: Send + 'static {
    fn write(&mut self, key: &str, value: u32) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

/// A floe metadata write: a region quota (a Raft write with no package).
struct FloeWriter(std::sync::Arc<Client>);

impl Writer for FloeWriter {
    async fn write(&mut self, key: &str, value: u32) -> anyhow::Result<()> {
        self.0.set_region_quota(key, value).await?;
        Ok(())
    }
}

/// Turns each system takes at sequential writes, and at concurrent ones.
const ROUNDS: usize = 10;
const CONCURRENT_ROUNDS: usize = 2;

pub async fn metadata(
    sequential: usize,
    writers: usize,
    per_writer: usize,
    failovers: usize,
    nodes: usize,
    no_etcd: bool,
) -> anyhow::Result<()> {
    println!("== metadata writes: {nodes} floe nodes and 3 etcd members on loopback, fsync on ==");
    let mut cluster = TestCluster::start_with(nodes, DEFAULT_CONFIG).await?;
    let client = std::sync::Arc::new(cluster.client().await?);
    let etcd = if no_etcd { None } else { Some(start_etcd().await?) };
    let etcd_leader = match &etcd {
        Some(etcd) => Some(etcd_leader(etcd).await?),
        None => None,
    };
    // The two systems take turns, round by round, so that a machine whose
    // speed drifts (other tenants, the disk) slows both alike.
    let mut floe = WriteSamples::default();
    let mut etcd_samples = WriteSamples::default();
    let mut floe_writer = FloeWriter(client.clone());
    let mut etcd_writer = match &etcd_leader {
        Some(leader) => Some(EtcdClient::connect(leader).await?),
        None => None,
    };
    for round in 0..ROUNDS {
        let count = sequential / ROUNDS + usize::from(round < sequential % ROUNDS);
        floe.latencies
            .extend(sequential_writes(&mut floe_writer, round, count).await?);
        if let Some(writer) = etcd_writer.as_mut() {
            etcd_samples
                .latencies
                .extend(sequential_writes(writer, round, count).await?);
        }
    }
    for round in 0..CONCURRENT_ROUNDS {
        let make = || {
            let client = client.clone();
            async move { anyhow::Ok(FloeWriter(client)) }
        };
        floe.concurrent_time += concurrent_writes(writers, per_writer, round, make).await?;
        floe.concurrent_writes += writers * per_writer;
        if let Some(leader) = &etcd_leader {
            let make = || {
                let leader = leader.clone();
                async move { EtcdClient::connect(&leader).await }
            };
            etcd_samples.concurrent_time += concurrent_writes(writers, per_writer, round, make).await?;
            etcd_samples.concurrent_writes += writers * per_writer;
        }
    }
    let mut rows = vec![(format!("floe, {nodes} nodes"), floe.figures())];
    if etcd.is_some() {
        rows.push(("etcd 3.4, 3 members (gRPC)".to_string(), etcd_samples.figures()));
    }
    drop(etcd);
    println!("| system | sequential p50 | sequential p99 | {writers} concurrent writers |");
    println!("| --- | --- | --- | --- |");
    for (name, f) in &rows {
        println!(
            "| {name} | {} | {} | {:.0} writes/s |",
            ms(f.p50),
            ms(f.p99),
            f.throughput
        );
    }
    if let [(_, floe), (_, etcd)] = &rows[..] {
        println!(
            "floe ÷ etcd: sequential p50 {:.3}, concurrent throughput {:.2}",
            floe.p50.as_secs_f64() / etcd.p50.as_secs_f64(),
            floe.throughput / etcd.throughput
        );
    }
    if nodes < 3 {
        return Ok(());
    }

    println!("\n== leader failover: kill -9 of the leader to the first successful write ==");
    let mut times = Vec::new();
    for round in 0..failovers {
        let leader = cluster.leader().await?;
        let survivors: Vec<String> = (0..cluster.nodes.len())
            .filter(|i| *i != leader)
            .map(|i| cluster.address(i))
            .collect();
        let client = chaos_tests::connect(survivors)
            .await?
            .with_retry_for(Duration::from_secs(30));
        client.set_region_quota("failover", 0).await?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        // The quota write is idempotent, so a write whose outcome is unknown
        // (it was in flight to the killed leader) is simply sent again.
        while let Err(e) = client.set_region_quota("failover", round as u32 + 1).await {
            anyhow::ensure!(killed_at.elapsed() < Duration::from_secs(30), "no write succeeded: {e}");
        }
        let elapsed = killed_at.elapsed();
        println!("round {round}: {}", ms(elapsed));
        times.push(elapsed);
        cluster.restart(leader).await?;
        cluster.wait_for_voters(3).await?;
        // Let the restarted node catch up before the next kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if times.is_empty() {
        return Ok(());
    }
    times.sort();
    println!(
        "failover p50 {} (max {}) over {failovers} kills",
        ms(percentile(&times, 0.5)),
        ms(*times.last().unwrap())
    );
    Ok(())
}
