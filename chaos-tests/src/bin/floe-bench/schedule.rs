//! The scheduler on three nodes: grants, warm invokes by entry node, async
//! accepts, failover.

use std::time::{Duration, Instant};

use chaos_tests::TestCluster;
use floe_node::cluster::peers::Peers;

use crate::common::{ms, per_second, percentile, summarize, DEFAULT_CONFIG};

/// One grant round trip at the leader (timed), then its release.
async fn grant_once(peers: &Peers, leader: &str, ask: &floe_node::wire::GrantAsk) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let grant = chaos_tests::grant(peers, leader, ask).await?;
    let elapsed = started.elapsed();
    chaos_tests::release(peers, leader, ask, &grant).await?;
    Ok(elapsed)
}

pub async fn schedule(
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
    let ask = floe_node::wire::GrantAsk {
        entry_region: "local".into(),
        region: None,
        key: floe_node::shared::SandboxKey {
            function: "noop".into(),
            version: "$LATEST".into(),
            revision_id: info.revision_id.clone(),
        },
        memory_mb: 128,
        timeout_s: 3,
    };
    // The node-to-node client the nodes use, one channel to the leader.
    let peers = std::sync::Arc::new(chaos_tests::member_peers(&cluster)?);
    let leader_address = cluster.peer_address(leader);

    // Grants: sequential round trips, then concurrent callers.
    let mut sequential = Vec::with_capacity(grants);
    for _ in 0..grants {
        sequential.push(grant_once(&peers, &leader_address, &ask).await?);
    }
    let (grant_p50, grant_p99) = summarize(sequential);
    let grants_per_s = per_second(callers, grants / callers, move |_, _| {
        let (peers, leader, ask) = (peers.clone(), leader_address.clone(), ask.clone());
        async move { grant_once(&peers, &leader, &ask).await.map(|_| ()) }
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
