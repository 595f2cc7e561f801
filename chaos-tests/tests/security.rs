//! The attack suite: a stranger with network access to the nodes' ports, or
//! a client with a key, tries to harm the cluster; each attempt is refused
//! and changes nothing.

use std::time::Duration;

use chaos_tests::{wait_for, TestCluster};
use floe_client::proto::{self, ReadConsistency};
use tonic::Code;

/// Weights the Raft log could not hold (JSON has no NaN or infinities) or
/// that apply refuses are refused before they are proposed, through the CLI
/// and the SDK, at the leader and at a follower; the log stays readable, so
/// every node restarts and a new node joins and catches up.
#[tokio::test(flavor = "multi_thread")]
async fn a_weight_the_log_cannot_hold_is_refused_before_it_is_proposed() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let client = cluster.client().await?;
    client
        .create_function(
            "f",
            chaos_tests::python_config(),
            chaos_tests::python_package("return 1"),
        )
        .await?;
    client.publish_version("f", "one").await?;
    client
        .update_function(proto::UpdateFunctionRequest {
            name: "f".into(),
            description: Some("two".into()),
            ..Default::default()
        })
        .await?;
    client.publish_version("f", "two").await?;
    client
        .create_alias(proto::CreateAliasRequest {
            function: "f".into(),
            name: "stable".into(),
            version: "1".into(),
            routing: None,
            description: String::new(),
        })
        .await?;
    let applied_before = cluster.status(0).await?.applied_index;

    for weight in ["NaN", "inf", "-inf", "1.5", "-0.1"] {
        let (code, _, stderr) = chaos_tests::run_floe(&[
            "--endpoint",
            &cluster.address(0),
            "alias",
            "create",
            "f",
            "live",
            "--version",
            "1",
            "--routing",
            &format!("2={weight}"),
        ]);
        assert_ne!(code, 0, "weight {weight} accepted");
        assert!(stderr.contains("routing weight"), "weight {weight}: {stderr}");
    }
    for index in 0..3 {
        let node = cluster.client_of(index).await?;
        for weight in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2.0] {
            let routing = Some(proto::AliasRouting {
                additional_version: "2".into(),
                weight,
            });
            let error = node
                .create_alias(proto::CreateAliasRequest {
                    function: "f".into(),
                    name: "live".into(),
                    version: "1".into(),
                    routing: routing.clone(),
                    description: String::new(),
                })
                .await
                .expect_err("a bad weight is refused");
            assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
            // Even where apply would refuse it for another reason (no such alias).
            for alias in ["stable", "missing"] {
                let error = node
                    .update_alias(proto::UpdateAliasRequest {
                        function: "f".into(),
                        name: alias.into(),
                        routing: routing.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect_err("a bad weight is refused");
                assert_eq!(error.code(), Some(Code::InvalidArgument), "{alias}: {error}");
            }
        }
    }
    // Nothing was proposed.
    assert_eq!(cluster.status(0).await?.applied_index, applied_before);

    // Every entry reads back: each node restarts from its data dir, and a new node replays the log.
    for index in 0..3 {
        cluster.terminate(index)?;
        cluster.restart(index).await?;
    }
    let joined = cluster.join_new_node().await?;
    let newcomer = cluster.client_of(joined).await?;
    wait_for("the new node to catch up", Duration::from_secs(30), || async {
        newcomer.get_alias("f", "stable").await.is_ok()
    })
    .await?;
    assert_eq!(newcomer.list_functions(ReadConsistency::Stale).await?.len(), 1);
    let status = cluster.status(joined).await?;
    assert_eq!(status.nodes.len(), 4, "{status:?}");
    Ok(())
}

/// The data dir and the secrets a node writes are its user's alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_data_dir_and_secrets_are_private() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cluster = TestCluster::start(1).await?;
    let mode = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    let dir = cluster.data_dir(0).to_path_buf();
    assert_eq!(mode(&dir)?, 0o700);
    let credentials = dir.join("credentials");
    wait_for("the first access key", Duration::from_secs(10), || async {
        credentials.exists()
    })
    .await?;
    assert_eq!(mode(&credentials)?, 0o600);
    Ok(())
}

/// A log entry that cannot be read (a bad disk, a bug) stops the node with
/// the entry's index and a way out; it never panics or runs half alive.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_log_entry_stops_the_node_with_its_index() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(1).await?;
    let client = cluster.client().await?;
    client
        .create_function(
            "f",
            chaos_tests::python_config(),
            chaos_tests::python_package("return 1"),
        )
        .await?;
    let last = cluster.status(0).await?.last_log_index;
    cluster.terminate(0)?;
    {
        let path = cluster.data_dir(0).join("raft");
        let families = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path)?;
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &families)?;
        let logs = db.cf_handle("logs").expect("the log's column family");
        assert!(
            db.get_cf(&logs, last.to_be_bytes())?.is_some(),
            "entry {last} is in the log"
        );
        db.put_cf(&logs, last.to_be_bytes(), br#"{"log_id":{"leader_id":"#)?;
    }
    cluster.restart(0).await?;
    wait_for("the node to stop", Duration::from_secs(20), || {
        let running = cluster.nodes[0].is_running();
        async move { !running }
    })
    .await?;
    let log = cluster.nodes[0].log();
    assert!(log.contains(&format!("index {last}")), "{log}");
    assert!(log.contains("remove the node and add it again"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    Ok(())
}
