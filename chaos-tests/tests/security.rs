//! The attack suite: a stranger with network access to the nodes' ports, or
//! a client with a key, tries to harm the cluster; each attempt is refused
//! and changes nothing.

use std::time::Duration;

use chaos_tests::{wait_for, TestCluster};
use floe_client::proto::{self, ReadConsistency};
use floe_proto::internal::peer_client::PeerClient;
use floe_proto::internal::raft_client::RaftClient;
use floe_proto::internal::scheduler_client::SchedulerClient;
use floe_proto::internal::{AssignIdRequest, Execution, HelloRequest, Package, Payload};
use floe_proto::v1::access_keys_client::AccessKeysClient;
use floe_proto::v1::cluster_client::ClusterClient;
use floe_proto::v1::functions_client::FunctionsClient;
use tonic::transport::Channel;
use tonic::Code;

async fn create_f(client: &floe_client::Client) -> anyhow::Result<()> {
    let package = chaos_tests::python_package("return 1");
    client
        .create_function("f", chaos_tests::python_config(), package)
        .await?;
    Ok(())
}

/// A plain gRPC channel to `address`, as a stranger opens one.
async fn channel(address: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{address}"))?.connect().await?)
}

/// Every node-to-node RPC a stranger would try, each with a harmful
/// request: (name, the call's status code, or None if it succeeded).
async fn internal_calls(address: &str) -> anyhow::Result<Vec<(&'static str, Option<Code>)>> {
    let channel = channel(address).await?;
    let (mut peer, mut scheduler, mut raft) = (
        PeerClient::new(channel.clone()),
        SchedulerClient::new(channel.clone()),
        RaftClient::new(channel),
    );
    let mint = floe_raft_store::Command::CreateAccessKey(floe_raft_store::model::AccessKeyRecord {
        id: "STRANGERKEY000000000".into(),
        secret_digest: "0".repeat(64),
        description: "minted by a stranger".into(),
        created_ms: 0,
    });
    let payload = |data: Vec<u8>| Payload { data };
    let garbage = || Payload { data: vec![7; 64] };
    let code = |result: Result<(), tonic::Status>| result.err().map(|status| status.code());
    Ok(vec![
        (
            "Peer/Propose(CreateAccessKey)",
            code(
                peer.propose(payload(floe_raft_store::codec::encode(&mint).unwrap()))
                    .await
                    .map(drop),
            ),
        ),
        (
            "Peer/AddNode",
            code(
                peer.add_node(proto::AddNodeRequest {
                    address: "127.0.0.1:9".into(),
                })
                .await
                .map(drop),
            ),
        ),
        ("Peer/Hello", code(peer.hello(HelloRequest {}).await.map(drop))),
        (
            "Peer/AssignId",
            code(peer.assign_id(AssignIdRequest { node_id: 9 }).await.map(drop)),
        ),
        (
            "Peer/PutPackage",
            code(
                peer.put_package(Package {
                    sha256: "0".repeat(64),
                    data: b"PK".to_vec(),
                })
                .await
                .map(drop),
            ),
        ),
        (
            "Scheduler/Execute",
            code(
                scheduler
                    .execute(Execution {
                        header: vec![1; 32],
                        payload: b"{}".to_vec(),
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "Scheduler/Heartbeat",
            code(scheduler.heartbeat(garbage()).await.map(drop)),
        ),
        ("Scheduler/Grant", code(scheduler.grant(garbage()).await.map(drop))),
        ("Scheduler/Shadow", code(scheduler.shadow(garbage()).await.map(drop))),
        ("Scheduler/Release", code(scheduler.release(garbage()).await.map(drop))),
        ("Raft/Vote", code(raft.vote(garbage()).await.map(drop))),
        (
            "Raft/InstallSnapshot",
            code(raft.install_snapshot(garbage()).await.map(drop)),
        ),
        (
            "Raft/AppendEntriesStream",
            code(
                raft.append_entries_stream(tokio_stream::iter(Vec::new()))
                    .await
                    .map(drop),
            ),
        ),
    ])
}

/// The public services, called on a peer listener.
async fn public_calls(address: &str) -> anyhow::Result<Vec<(&'static str, Option<Code>)>> {
    let channel = channel(address).await?;
    let code = |result: Result<(), tonic::Status>| result.err().map(|status| status.code());
    Ok(vec![
        (
            "Functions/ListFunctions",
            code(
                FunctionsClient::new(channel.clone())
                    .list_functions(proto::ListFunctionsRequest::default())
                    .await
                    .map(drop),
            ),
        ),
        (
            "Cluster/Status",
            code(
                ClusterClient::new(channel.clone())
                    .status(proto::ClusterStatusRequest {})
                    .await
                    .map(drop),
            ),
        ),
        (
            "AccessKeys/CreateAccessKey",
            code(
                AccessKeysClient::new(channel)
                    .create_access_key(proto::CreateAccessKeyRequest::default())
                    .await
                    .map(drop),
            ),
        ),
    ])
}

/// What a stranger may have changed: the access keys, and each node's view of the members.
async fn cluster_state(cluster: &TestCluster) -> anyhow::Result<(Vec<String>, Vec<Vec<(u64, String, String)>>)> {
    let client = cluster.client_of(0).await?;
    let mut keys: Vec<String> = client
        .list_access_keys()
        .await?
        .into_iter()
        .map(|k| k.access_key_id)
        .collect();
    keys.sort();
    let mut views = Vec::new();
    for index in 0..cluster.nodes.len() {
        let status = cluster.status(index).await?;
        let mut members: Vec<_> = status
            .nodes
            .into_iter()
            .map(|n| (n.id, n.address, n.peer_address))
            .collect();
        members.sort();
        views.push(members);
    }
    Ok((keys, views))
}

/// Two planes: a node's public listener serves no node-to-node service, and
/// its peer listener no public one. A stranger who reaches the public port
/// (as every client must) cannot mint a key, join, upload or run code, or
/// forge the scheduler's and Raft's messages; nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn the_public_listener_serves_no_node_to_node_service() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let before = cluster_state(&cluster).await?;
    for index in 0..3 {
        let (public, peer) = (cluster.address(index), cluster.peer_address(index));
        assert_ne!(public, peer);
        for (call, code) in internal_calls(&public).await? {
            assert_eq!(
                code,
                Some(Code::Unimplemented),
                "{call} on the public listener {public}"
            );
        }
        for (call, code) in public_calls(&peer).await? {
            assert_eq!(code, Some(Code::Unimplemented), "{call} on the peer listener {peer}");
        }
        // The REST listener is HTTP/1 Lambda only: the gRPC paths find nothing there either.
        let rest = cluster.http_address(index);
        if let Ok(calls) = internal_calls(&rest).await {
            for (call, code) in calls {
                assert!(code.is_some(), "{call} succeeded on the REST listener {rest}");
            }
        }
    }
    assert_eq!(cluster_state(&cluster).await?, before, "a stranger changed the cluster");
    let (keys, views) = before;
    assert!(!keys.iter().any(|k| k == "STRANGERKEY000000000"));
    assert!(views.iter().all(|members| members.len() == 3), "{views:?}");
    Ok(())
}

/// Weights the Raft log could not hold (JSON has no NaN or infinities) or
/// that apply refuses are refused before they are proposed, through the CLI
/// and the SDK, at the leader and at a follower; the log stays readable, so
/// every node restarts and a new node joins and catches up.
#[tokio::test(flavor = "multi_thread")]
async fn a_weight_the_log_cannot_hold_is_refused_before_it_is_proposed() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(3).await?;
    let client = cluster.client().await?;
    create_f(&client).await?;
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
    create_f(&client).await?;
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
