//! floe's benchmarks, each next to a baseline measured in the same run.
//!
//! `floe-bench metadata`: metadata writes on a 3-node cluster (sequential
//! latency, throughput with concurrent writers) next to a 3-member etcd on
//! the same machine, driven through etcd's own gRPC protocol, taking turns
//! round by round; and leader failover time.
//!
//! Build release binaries first: `cargo build --release --workspace`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_tests::{free_address, wait_for, TestCluster};
use clap::{Parser, Subcommand};
use floe_client::Client;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
    Rest {
        #[arg(long, default_value_t = 2000)]
        calls: usize,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

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

trait Writer: Send + 'static {
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

/// etcd's own protocol, as etcdctl and its client libraries speak it: gRPC
/// over HTTP/2, like floe's SDK. Only the fields the benchmark uses are
/// declared (prost skips the others); numbers from etcd's `rpc.proto`.
mod etcd_wire {
    /// `etcdserverpb.PutRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    /// `etcdserverpb.PutResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }
    /// `etcdserverpb.ResponseHeader`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
        #[prost(int64, tag = "3")]
        pub revision: i64,
    }
    /// `etcdserverpb.RangeRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// A read of the member's own state, without a quorum round (floe's stale read).
        #[prost(bool, tag = "7")]
        pub serializable: bool,
    }
    /// `etcdserverpb.RangeResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }
    /// `etcdserverpb.StatusRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}
    /// `etcdserverpb.StatusResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }
}

/// An etcd member's client port, over one HTTP/2 connection.
struct EtcdClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

impl EtcdClient {
    async fn connect(address: &str) -> anyhow::Result<EtcdClient> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to etcd at {address}"))?;
        Ok(EtcdClient {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    async fn call<Request, Reply>(&self, path: &'static str, request: Request) -> anyhow::Result<Reply>
    where
        Request: prost::Message + Send + 'static,
        Reply: prost::Message + Default + Send + 'static,
    {
        // A clone shares the connection (as tonic's generated clients do).
        let mut grpc = self.grpc.clone();
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<Request, Reply>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        Ok(grpc
            .unary(tonic::Request::new(request), path, codec)
            .await?
            .into_inner())
    }

    /// Reads one key, locally (`serializable`) or linearizably.
    async fn read(&self, key: &str, serializable: bool) -> anyhow::Result<()> {
        let request = etcd_wire::RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
        };
        let _: etcd_wire::RangeResponse = self.call("/etcdserverpb.KV/Range", request).await?;
        Ok(())
    }

    /// Whether this member leads.
    async fn leads(&self) -> anyhow::Result<bool> {
        let status: etcd_wire::StatusResponse = self
            .call("/etcdserverpb.Maintenance/Status", etcd_wire::StatusRequest {})
            .await?;
        Ok(status.header.is_some_and(|header| header.member_id == status.leader))
    }
}

impl Writer for EtcdClient {
    async fn write(&mut self, key: &str, value: u32) -> anyhow::Result<()> {
        let request = etcd_wire::PutRequest {
            key: format!("quota/{key}").into_bytes(),
            value: value.to_string().into_bytes(),
        };
        let reply: etcd_wire::PutResponse = self.call("/etcdserverpb.KV/Put", request).await?;
        anyhow::ensure!(
            reply.header.is_some_and(|header| header.revision > 0),
            "etcd answered a put without a revision"
        );
        Ok(())
    }
}

/// Three etcd members on loopback, killed on drop.
struct Etcd {
    children: Vec<std::process::Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn start_etcd() -> anyhow::Result<Etcd> {
    let dir = tempfile::tempdir()?;
    let clients: Vec<String> = (0..3).map(|_| free_address().to_string()).collect();
    let peers: Vec<String> = (0..3).map(|_| free_address().to_string()).collect();
    let initial: Vec<String> = (0..3).map(|i| format!("e{i}=http://{}", peers[i])).collect();
    let mut children = Vec::new();
    for i in 0..3 {
        let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))?;
        children.push(
            std::process::Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .args(["--listen-client-urls", &format!("http://{}", clients[i])])
                .args(["--advertise-client-urls", &format!("http://{}", clients[i])])
                .args(["--listen-peer-urls", &format!("http://{}", peers[i])])
                .args(["--initial-advertise-peer-urls", &format!("http://{}", peers[i])])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .context("start etcd (apt-get install etcd-server)")?,
        );
    }
    let etcd = Etcd {
        children,
        clients,
        _dir: dir,
    };
    let first = etcd.clients[0].clone();
    wait_for("etcd to elect a leader", Duration::from_secs(30), || {
        let first = first.clone();
        async move {
            let Ok(mut writer) = EtcdClient::connect(&first).await else {
                return false;
            };
            writer.write("probe", 1).await.is_ok()
        }
    })
    .await?;
    Ok(etcd)
}

/// The etcd member that leads, so etcd writes skip the forwarding hop as floe's do.
async fn etcd_leader(etcd: &Etcd) -> anyhow::Result<String> {
    for address in &etcd.clients {
        if EtcdClient::connect(address).await?.leads().await? {
            return Ok(address.clone());
        }
    }
    bail!("no etcd leader")
}

/// floe's defaults, as a user runs them.
const DEFAULT_CONFIG: &str = "";

/// Turns each system takes at sequential writes, and at concurrent ones.
const ROUNDS: usize = 10;
const CONCURRENT_ROUNDS: usize = 2;

async fn metadata(
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

/// Runs `callers` tasks that each call `call(caller, n)` for n in 0..`per_caller`; returns calls per second.
async fn per_second<F, Fut>(callers: usize, per_caller: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = std::sync::Arc::new(call);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let call = call.clone();
            tokio::spawn(async move {
                for n in 0..per_caller {
                    call(caller, n).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((callers * per_caller) as f64 / started.elapsed().as_secs_f64())
}

/// One grant asked of the leader and given back; returns the grant's round trip.
/// One grant round trip at the leader (timed), then its release.
async fn grant_once(
    client: &mut floe_proto::internal::scheduler_client::SchedulerClient<tonic::transport::Channel>,
    ask: &floe_node::scheduler::GrantAsk,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let grant = chaos_tests::grant(client, ask).await?;
    let elapsed = started.elapsed();
    chaos_tests::release(client, ask, &grant).await?;
    Ok(elapsed)
}

async fn schedule(
    grants: usize,
    callers: usize,
    warm_calls: usize,
    events: usize,
    failovers: usize,
) -> anyhow::Result<()> {
    println!("== scheduler: 3 nodes on loopback ==");
    let mut cluster = TestCluster::start_with(3, DEFAULT_CONFIG).await?;
    let client = cluster.client().await?;
    let info = client
        .create_function(
            "noop",
            chaos_tests::python_config(),
            chaos_tests::python_package("return 1"),
        )
        .await?;
    // The first invoke waits until the leader has every node's report.
    client.invoke("noop", "", b"{}".to_vec()).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    let ask = floe_node::scheduler::GrantAsk {
        entry_region: "local".into(),
        region: None,
        key: floe_node::executor::SandboxKey {
            function: "noop".into(),
            version: "$LATEST".into(),
            revision_id: info.revision_id.clone(),
        },
        memory_mb: 128,
        timeout_s: 3,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.address(leader)))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let scheduler = floe_proto::internal::scheduler_client::SchedulerClient::new(channel);

    // Grants: sequential round trips, then concurrent callers.
    let mut sequential = Vec::with_capacity(grants);
    let mut one = scheduler.clone();
    for _ in 0..grants {
        sequential.push(grant_once(&mut one, &ask).await?);
    }
    let (grant_p50, grant_p99) = summarize(sequential);
    let grants_per_s = per_second(callers, grants / callers, move |_, _| {
        let mut client = scheduler.clone();
        let ask = ask.clone();
        async move { grant_once(&mut client, &ask).await.map(|_| ()) }
    })
    .await?;

    // Warm invokes entering at a follower and at the leader.
    let mut rows = Vec::new();
    for (name, index) in [("leader", leader), ("follower", follower)] {
        let entry = cluster.client_of(index).await?;
        for _ in 0..20 {
            entry.invoke("noop", "", b"{}".to_vec()).await?;
        }
        let mut samples = Vec::with_capacity(warm_calls);
        for _ in 0..warm_calls {
            let started = Instant::now();
            entry.invoke("noop", "", b"{}".to_vec()).await?;
            samples.push(started.elapsed());
        }
        rows.push((name, summarize(samples)));
    }

    // Async accept rate: events committed per second, callers spread over the nodes.
    let mut entries = Vec::new();
    for index in 0..3 {
        entries.push(std::sync::Arc::new(cluster.client_of(index).await?));
    }
    let accept_rate = per_second(callers, events / callers, move |caller, n| {
        let entry = entries[caller % 3].clone();
        async move {
            entry
                .invoke_with(floe_client::proto::InvokeRequest {
                    function: "noop".into(),
                    payload: format!("{{\"n\":{n}}}").into_bytes(),
                    invocation_type: floe_client::proto::InvocationType::Event as i32,
                    ..Default::default()
                })
                .await?;
            Ok(())
        }
    })
    .await?;

    println!("| measure | p50 | p99 | rate |");
    println!("| --- | --- | --- | --- |");
    println!("| grant round trip at the leader (grant + release) | {} | {} | {grants_per_s:.0} grants/s with {callers} callers |", ms(grant_p50), ms(grant_p99));
    for (name, (p50, p99)) in &rows {
        println!("| warm invoke entering at the {name} | {} | {} | |", ms(*p50), ms(*p99));
    }
    println!("| async accept (committed through Raft before the 202) | | | {accept_rate:.0} events/s with {callers} callers |");

    // Failover is timed on a quiet cluster: the events above still running
    // would hold the quota, and a sync invoke would be throttled, not failed over.
    let status_client = cluster.client().await?;
    let quiet_by = Instant::now() + Duration::from_secs(120);
    while Instant::now() < quiet_by {
        let status = status_client.cluster_status().await?;
        if status.usage.iter().all(|u| u.running == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!("\n== leader failover: kill -9 of the leader to the first successful sync invoke ==");
    let mut times = Vec::new();
    for round in 0..failovers {
        let leader = cluster.leader().await?;
        let survivors: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| cluster.address(i)).collect();
        let client = chaos_tests::connect(survivors)
            .await?
            .with_retry_for(Duration::from_secs(30));
        client.invoke("noop", "", b"{}".to_vec()).await?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let mut last_error = String::new();
        while let Err(e) = client.invoke("noop", "", b"{}".to_vec()).await {
            anyhow::ensure!(
                killed_at.elapsed() < Duration::from_secs(30),
                "no invoke succeeded: {e}"
            );
            last_error = e.to_string();
        }
        let elapsed = killed_at.elapsed();
        if last_error.is_empty() {
            println!("round {round}: {}", ms(elapsed));
        } else {
            println!("round {round}: {} (last refusal: {last_error})", ms(elapsed));
        }
        times.push(elapsed);
        cluster.restart(leader).await?;
        cluster.wait_for_voters(3).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !times.is_empty() {
        times.sort();
        println!(
            "failover to the first sync invoke: p50 {} (max {}) over {failovers} kills; target < 2 s p50",
            ms(percentile(&times, 0.5)),
            ms(*times.last().unwrap())
        );
    }
    Ok(())
}

async fn rpc_floor(callers: usize, per_caller: usize) -> anyhow::Result<()> {
    // Sequential reads on 3 nodes: a stale read is one RPC; a linearizable
    // one adds the leader's heartbeat round to a quorum (no fsync).
    {
        let mut cluster = TestCluster::start_with(3, DEFAULT_CONFIG).await?;
        let client = cluster.client().await?;
        client.set_region_quota("probe", 1).await?;
        for (name, consistency) in [
            ("stale", floe_client::proto::ReadConsistency::Stale),
            ("linearizable", floe_client::proto::ReadConsistency::Linearizable),
        ] {
            // A read of a missing function: NotFound is the expected answer.
            let label = format!("3 nodes, sequential {name} reads through the leader");
            print_sequential(&label, || async {
                let _ = client.get_function("missing", consistency).await;
                Ok(())
            })
            .await?;
        }
    }
    // The baseline: the same reads of a 3-member etcd, at its leader.
    {
        let etcd = start_etcd().await?;
        let client = EtcdClient::connect(&etcd_leader(&etcd).await?).await?;
        for (name, serializable) in [("serializable", true), ("linearizable", false)] {
            let label = format!("etcd, 3 members, sequential {name} reads at the leader");
            print_sequential(&label, || client.read("missing", serializable)).await?;
        }
    }
    let mut cluster = TestCluster::start_with(1, DEFAULT_CONFIG).await?;
    let client = std::sync::Arc::new(cluster.client().await?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_caller {
                let _ = client
                    .get_function("missing", floe_client::proto::ReadConsistency::Stale)
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let rate = (callers * per_caller) as f64 / started.elapsed().as_secs_f64();
    println!("{callers} callers, stale reads: {rate:.0} calls/s");
    Ok(())
}

/// A runtime's no-op handler, its floor server, and how to spawn its bare interpreter.
struct RuntimeBench {
    id: &'static str,
    file: &'static str,
    handler: &'static str,
    /// Serves `handler` over TCP, one JSON line in, one out; prints its port.
    floor_server: &'static str,
    interpreter: &'static str,
    bare: &'static [&'static str],
}

const PYTHON_BENCH: RuntimeBench = RuntimeBench {
    id: "python3.11",
    file: "app.py",
    handler: "def handler(event, context):\n    return {'ok': True}\n",
    floor_server: r#"
import json, socket, sys
sys.path.insert(0, sys.argv[1])
import app
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reader = conn.makefile("rb")
for line in reader:
    conn.sendall(json.dumps(app.handler(json.loads(line), None)).encode() + b"\n")
"#,
    interpreter: "python3",
    bare: &["-c", "pass"],
};

const NODE_BENCH: RuntimeBench = RuntimeBench {
    id: "nodejs20.x",
    file: "app.js",
    handler: "exports.handler = async () => ({ ok: true });\n",
    floor_server: r#"
const net = require('net');
const readline = require('readline');
const app = require(require('path').join(process.argv[1], 'app.js'));
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  readline.createInterface({ input: socket }).on('line', async (line) => {
    socket.write(JSON.stringify(await app.handler(JSON.parse(line), {})) + '\n');
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"#,
    interpreter: "node",
    bare: &["-e", "0"],
};

/// The real path of an interpreter (python3 may be a shim).
fn real_interpreter(name: &str) -> anyhow::Result<String> {
    if name == "python3" {
        let out = std::process::Command::new(name)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()?;
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Times 1,000 calls of `call`, one after another, and prints their p50 and p99 after `label`.
async fn print_sequential<F, Fut>(label: &str, mut call: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
    }
    let (p50, p99) = summarize(samples);
    println!("{label}: p50 {} p99 {}", ms(p50), ms(p99));
    Ok(())
}

fn summarize(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Resident memory of a process and of all its descendants, in MiB.
fn tree_rss_mib(root: u32) -> (f64, f64) {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    let mut rss: std::collections::HashMap<u32, u64> = Default::default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(ppid) = field("PPid:") {
            children.entry(ppid as u32).or_default().push(pid);
        }
        rss.insert(pid, field("VmRSS:").unwrap_or(0));
    }
    let own = rss.get(&root).copied().unwrap_or(0);
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        total += rss.get(&pid).copied().unwrap_or(0);
        stack.extend(children.get(&pid).cloned().unwrap_or_default());
    }
    (own as f64 / 1024.0, total as f64 / 1024.0)
}

async fn invoke_bench(
    runtime: &str,
    warm_calls: usize,
    cold_starts: usize,
    callers: usize,
    warm_sandboxes: usize,
) -> anyhow::Result<()> {
    let bench = match runtime {
        "python" => PYTHON_BENCH,
        "nodejs" | "node" => NODE_BENCH,
        other => bail!("unknown runtime {other}: use python or nodejs"),
    };
    let interpreter = real_interpreter(bench.interpreter)?;
    println!("== {} invocations on one node (interpreter {interpreter}) ==", bench.id);
    let cluster = TestCluster::start_with(1, DEFAULT_CONFIG).await?;
    let client = std::sync::Arc::new(cluster.client_of(0).await?);
    let node_pid = cluster.nodes[0].pid().context("node pid")?;
    let idle_rss = tree_rss_mib(node_pid).0;
    let deploy = |name: String| {
        let client = client.clone();
        async move {
            chaos_tests::TestFunction {
                name: &name,
                runtime: bench.id,
                handler: "app.handler",
                files: &[(bench.file, bench.handler)],
                memory_mb: 128,
                timeout_s: 10,
                environment: &[],
            }
            .deploy(&client)
            .await
        }
    };

    // Floor: the handler in an already-running interpreter, over a local socket.
    let code = tempfile::tempdir()?;
    std::fs::write(code.path().join(bench.file), bench.handler)?;
    let mut floor = tokio::process::Command::new(&interpreter)
        .args(if bench.interpreter == "python3" {
            vec!["-c"]
        } else {
            vec!["-e"]
        })
        .arg(bench.floor_server)
        .arg(code.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut floor_out = BufReader::new(floor.stdout.take().context("floor stdout")?);
    let mut port = String::new();
    floor_out.read_line(&mut port).await?;
    let stream = TcpStream::connect(("127.0.0.1", port.trim().parse::<u16>()?)).await?;
    stream.set_nodelay(true)?;
    let mut floor_conn = BufReader::new(stream);
    let mut floor_samples = Vec::new();
    let mut line = String::new();
    for i in 0..warm_calls + 100 {
        let started = Instant::now();
        floor_conn.get_mut().write_all(b"{\"n\":1}\n").await?;
        line.clear();
        floor_conn.read_line(&mut line).await?;
        if i >= 100 {
            floor_samples.push(started.elapsed());
        }
    }
    drop(floor);

    // Warm invocations through the SDK.
    deploy("warm".into()).await?;
    let mut warm_samples = Vec::new();
    for i in 0..warm_calls + 100 {
        let started = Instant::now();
        let response = client.invoke("warm", "", b"{\"n\":1}".to_vec()).await?;
        anyhow::ensure!(response.function_error.is_empty(), "the handler failed");
        if i >= 100 {
            warm_samples.push(started.elapsed());
        }
    }
    let (floor_p50, floor_p99) = summarize(floor_samples);
    let (warm_p50, warm_p99) = summarize(warm_samples);

    // Warm throughput with concurrent callers (each overlapping call gets its own sandbox).
    let per_caller = warm_calls / callers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    client.invoke("warm", "", b"{}".to_vec()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let throughput = (per_caller * callers) as f64 / started.elapsed().as_secs_f64();

    // Cold starts: the first call after create, sandbox included, next to the bare interpreter's spawn.
    let mut cold_samples = Vec::new();
    let mut spawn_samples = Vec::new();
    for i in 0..cold_starts {
        let name = format!("cold-{i}");
        deploy(name.clone()).await?;
        let started = Instant::now();
        let response = client.invoke(&name, "", b"{}".to_vec()).await?;
        cold_samples.push(started.elapsed());
        anyhow::ensure!(response.cold_start, "expected a cold start");
        let started = Instant::now();
        let status = tokio::process::Command::new(&interpreter)
            .args(bench.bare)
            .env_clear()
            .status()
            .await?;
        spawn_samples.push(started.elapsed());
        anyhow::ensure!(status.success(), "bare interpreter failed");
    }
    let (cold_p50, cold_p99) = summarize(cold_samples);
    let (spawn_p50, _) = summarize(spawn_samples);

    // Memory with many warm sandboxes.
    for i in 0..warm_sandboxes.saturating_sub(cold_starts + 1) {
        let name = format!("resident-{i}");
        deploy(name.clone()).await?;
        client.invoke(&name, "", b"{}".to_vec()).await?;
    }
    let (node_rss, tree_rss) = tree_rss_mib(node_pid);

    println!("| measure | floe | baseline (same run) |");
    println!("| --- | --- | --- |");
    println!("| warm invoke p50 / p99 (SDK, gRPC) | {} / {} | {} / {} handler in a running interpreter over a local socket |", ms(warm_p50), ms(warm_p99), ms(floor_p50), ms(floor_p99));
    println!(
        "| warm overhead over the floor, p50 | {} | target ≤ 1 ms |",
        ms(warm_p50.saturating_sub(floor_p50))
    );
    println!("| cold start p50 / p99 (first call after create) | {} / {} | {} bare `{} {}` spawn; target ≤ 2× + 20 ms = {} |", ms(cold_p50), ms(cold_p99), ms(spawn_p50), bench.interpreter, bench.bare.join(" "), ms(spawn_p50 * 2 + Duration::from_millis(20)));
    println!("| warm throughput, {callers} callers | {throughput:.0} invocations/s | |");
    println!("| floed RSS idle | {idle_rss:.1} MiB | |");
    println!("| floed RSS with {warm_sandboxes} warm sandboxes (with the sandboxes) | {node_rss:.1} MiB ({tree_rss:.1} MiB) | |");
    Ok(())
}

/// One REST invoke over `sender`, signed as botocore signs it.
async fn rest_invoke(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: &str,
    path: &str,
    payload: &'static [u8],
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let mut headers = http::HeaderMap::new();
    headers.insert("host", host.parse()?);
    floe_proto::sigv4::sign(
        &chaos_tests::test_credentials(),
        "local",
        floe_proto::sigv4::REST_SERVICE,
        "POST",
        path,
        "",
        &mut headers,
        &floe_proto::sigv4::sha256_hex(payload),
        std::time::SystemTime::now(),
    );
    let mut request = http::Request::post(path).body(http_body_util::Full::new(bytes::Bytes::from_static(payload)))?;
    *request.headers_mut() = headers;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        bail!("REST invoke answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

async fn rest_bench(calls: usize) -> anyhow::Result<()> {
    println!("== warm invoke latency: Lambda REST vs gRPC, one node, python3.11 no-op ==");
    let cluster = TestCluster::start_with(1, DEFAULT_CONFIG).await?;
    let client = cluster.client_of(0).await?;
    chaos_tests::TestFunction {
        name: "noop",
        runtime: "python3.11",
        handler: "app.handler",
        files: &[("app.py", "def handler(event, context):\n    return event\n")],
        memory_mb: 128,
        timeout_s: 10,
        environment: &[],
    }
    .deploy(&client)
    .await?;
    let host = cluster.http_address(0);
    let stream = tokio::net::TcpStream::connect(&host).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = "/2015-03-31/functions/noop/invocations";
    for _ in 0..50 {
        rest_invoke(&mut sender, &host, path, b"{}").await?;
        client.invoke("noop", "", b"{}".to_vec()).await?;
    }
    // Alternate the two paths so both see the same machine state.
    let (mut rest, mut grpc) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for _ in 0..calls {
        let started = Instant::now();
        rest_invoke(&mut sender, &host, path, b"{}").await?;
        rest.push(started.elapsed());
        let started = Instant::now();
        client.invoke("noop", "", b"{}".to_vec()).await?;
        grpc.push(started.elapsed());
    }
    let (rest_p50, rest_p99) = summarize(rest);
    let (grpc_p50, grpc_p99) = summarize(grpc);
    println!(
        "REST (SigV4, HTTP/1.1 keep-alive)  p50 {}  p99 {}",
        ms(rest_p50),
        ms(rest_p99)
    );
    println!(
        "gRPC (SigV4, HTTP/2)               p50 {}  p99 {}",
        ms(grpc_p50),
        ms(grpc_p99)
    );
    println!(
        "REST - gRPC                        p50 {:+.2} ms  p99 {:+.2} ms   ({calls} calls each)",
        (rest_p50.as_secs_f64() - grpc_p50.as_secs_f64()) * 1000.0,
        (rest_p99.as_secs_f64() - grpc_p99.as_secs_f64()) * 1000.0
    );
    Ok(())
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
        } => invoke_bench(&runtime, warm_calls, cold_starts, callers, warm_sandboxes).await,
        Bench::Rest { calls } => rest_bench(calls).await,
        Bench::Rpc {
            callers,
            calls_per_caller,
        } => rpc_floor(callers, calls_per_caller).await,
        Bench::Schedule {
            grants,
            callers,
            warm_calls,
            events,
            failovers,
        } => schedule(grants, callers, warm_calls, events, failovers).await,
        Bench::Metadata {
            sequential,
            writers,
            writes_per_writer,
            failovers,
            nodes,
            no_etcd,
        } => metadata(sequential, writers, writes_per_writer, failovers, nodes, no_etcd).await,
    }
}
