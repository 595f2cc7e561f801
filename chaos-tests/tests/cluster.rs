//! Multi-node tests with real floed processes on loopback ports.

use std::time::Duration;

use chaos_tests::{wait_for, TestCluster};
use floe_client::proto::{FunctionConfig, ReadConsistency};
use floe_client::Client;

fn config() -> FunctionConfig {
    chaos_tests::python_config()
}

fn package() -> Vec<u8> {
    chaos_tests::python_package("return event")
}

async fn create(client: &Client, name: &str) -> anyhow::Result<()> {
    client.create_function(name, config(), package()).await?;
    Ok(())
}

async fn has_function(client: &Client, name: &str, consistency: ReadConsistency) -> bool {
    client.get_function(name, consistency).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_replicate_a_write_made_through_a_follower() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    create(&cluster.client_of(follower).await?, "through-follower").await?;
    for index in 0..3 {
        let client = cluster.client_of(index).await?;
        let function = client
            .get_function("through-follower", ReadConsistency::Linearizable)
            .await?;
        assert_eq!(function.name, "through-follower", "node {index}");
    }
    let status = cluster.status(follower).await?;
    assert_eq!(status.nodes.len(), 3);
    assert_eq!(status.nodes.iter().filter(|n| n.role == "leader").count(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_kill_loses_no_acknowledged_write_and_the_node_catches_up() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let client = cluster.client().await?;
    let mut acknowledged = Vec::new();
    for i in 0..10 {
        let name = format!("before-{i}");
        create(&client, &name).await?;
        acknowledged.push(name);
    }
    let old_leader = cluster.leader().await?;
    let old_term = cluster.status(old_leader).await?.term;
    cluster.kill(old_leader);

    let survivors = cluster.client().await?;
    wait_for("a new leader", Duration::from_secs(10), || async {
        match survivors.cluster_status().await {
            Ok(status) => status.leader_id.is_some() && status.term > old_term,
            Err(_) => false,
        }
    })
    .await?;
    create(&survivors, "after-kill").await?;
    acknowledged.push("after-kill".into());
    for name in &acknowledged {
        assert!(
            has_function(&survivors, name, ReadConsistency::Linearizable).await,
            "{name} lost"
        );
    }

    cluster.restart(old_leader).await?;
    let restarted = cluster.client_of(old_leader).await?;
    wait_for("the restarted node to catch up", Duration::from_secs(20), || async {
        has_function(&restarted, "after-kill", ReadConsistency::Stale).await
    })
    .await?;
    for name in &acknowledged {
        assert!(
            has_function(&restarted, name, ReadConsistency::Stale).await,
            "{name} missing after restart"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_down_while_the_log_is_purged_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let leader = cluster.leader().await?;
    let lagging = (leader + 1) % 3;
    let applied_at_kill = cluster.status(lagging).await?.applied_index;
    cluster.kill(lagging);
    let client = cluster.client().await?;
    // Test nodes snapshot every 50 entries and keep none behind the snapshot.
    for i in 0..120 {
        client.set_region_quota(&format!("r{i}"), i).await?;
    }
    create(&client, "last-write").await?;
    let leader_client = cluster.client_of(leader).await?;
    wait_for(
        "the leader to purge its log past the lagging node's state",
        Duration::from_secs(20),
        || async {
            match leader_client.cluster_status().await {
                Ok(status) => status.purged_index > applied_at_kill,
                Err(_) => false,
            }
        },
    )
    .await?;
    cluster.restart(lagging).await?;
    let restarted = cluster.client_of(lagging).await?;
    wait_for(
        "the lagging node to install the snapshot",
        Duration::from_secs(30),
        || async { has_function(&restarted, "last-write", ReadConsistency::Stale).await },
    )
    .await?;
    let status = restarted.cluster_status().await?;
    assert_eq!(status.quotas.len(), 120, "every quota written while the node was down");
    assert!(
        status.snapshot_index > applied_at_kill,
        "the node holds a snapshot past its old state"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fourth_node_joins_and_another_is_removed() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    create(&cluster.client().await?, "before-join").await?;
    let fourth = cluster.join_new_node().await?;
    cluster.wait_for_voters(4).await?;
    let newcomer = cluster.client_of(fourth).await?;
    assert!(has_function(&newcomer, "before-join", ReadConsistency::Linearizable).await);

    let leader = cluster.leader().await?;
    let removed = (0..3).find(|i| *i != leader).unwrap();
    let removed_id = {
        let status = cluster.status(removed).await?;
        status.node_id
    };
    cluster.client().await?.remove_node(removed_id).await?;
    cluster.kill(removed);
    let client = cluster.client().await?;
    wait_for(
        "three voters without the removed node",
        Duration::from_secs(10),
        || async {
            match client.cluster_status().await {
                Ok(status) => status.nodes.len() == 3 && status.nodes.iter().all(|n| n.id != removed_id && n.voter),
                Err(_) => false,
            }
        },
    )
    .await?;
    create(&client, "after-remove").await?;
    assert!(has_function(&newcomer, "after-remove", ReadConsistency::Linearizable).await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_node_is_added_by_the_operator_and_sigterm_stops_nodes_cleanly() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    create(&cluster.client().await?, "first").await?;
    let waiting = cluster.start_waiting_node().await?;
    // Before it is added it serves nothing but says so.
    let error = cluster
        .client_of(waiting)
        .await?
        .with_retry_for(Duration::from_millis(100))
        .get_function("first", ReadConsistency::Stale)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("has not joined a cluster yet"), "{error}");
    let id = cluster.client_of(0).await?.add_node(&cluster.address(waiting)).await?;
    assert_eq!(id, 2);
    cluster.wait_for_voters(2).await?;
    let added = cluster.client_of(waiting).await?;
    assert!(has_function(&added, "first", ReadConsistency::Linearizable).await);
    // Adding it twice is harmless and returns the same id.
    assert_eq!(
        cluster.client_of(0).await?.add_node(&cluster.address(waiting)).await?,
        2
    );

    // SIGTERM: a clean exit, and a restart from the data dir alone.
    for index in [waiting, 0] {
        let status = cluster.terminate(index)?;
        assert!(status.success(), "node {index} exited with {status}");
    }
    cluster.restart(0).await?;
    cluster.restart(waiting).await?;
    cluster.wait_for_voters(2).await?;
    let client = cluster.client().await?;
    create(&client, "after-restart").await?;
    assert!(has_function(&client, "first", ReadConsistency::Linearizable).await);
    Ok(())
}
