//! The gRPC transport's floor: round trips that touch no Raft.

use std::time::Instant;

use chaos_tests::TestCluster;

use crate::common::{print_sequential, DEFAULT_CONFIG};
use crate::etcd::{etcd_leader, start_etcd, EtcdClient};

pub async fn rpc_floor(callers: usize, per_caller: usize) -> anyhow::Result<()> {
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
