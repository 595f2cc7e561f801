//! The attack suite: a stranger with network access to the nodes' ports, or
//! a client with a key, tries to harm the cluster; each attempt is refused
//! and changes nothing.

use std::time::Duration;

use chaos_tests::{wait_for, TestCluster};
use floe_client::proto::{self, ReadConsistency};
use floe_proto::internal::peer_client::PeerClient;
use floe_proto::internal::raft_client::RaftClient;
use floe_proto::internal::scheduler_client::SchedulerClient;
use floe_proto::internal::{Execution, HelloRequest, Package, Payload};
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
    Ok(Channel::from_shared(format!("http://{address}"))?.connect_lazy())
}

/// Every node-to-node RPC a stranger would try, each with a harmful
/// request: (name, the call's status code, or None if it succeeded).
async fn internal_calls(address: &str) -> anyhow::Result<Vec<(&'static str, Option<Code>)>> {
    internal_calls_on(channel(address).await?).await
}

async fn internal_calls_on(channel: Channel) -> anyhow::Result<Vec<(&'static str, Option<Code>)>> {
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

/// The public services, called over `channel` (to a peer listener).
async fn public_calls(channel: Channel) -> anyhow::Result<Vec<(&'static str, Option<Code>)>> {
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
/// forge the scheduler's and Raft's messages; on the peer port, without a
/// member's certificate (none, or one of another cluster's CA), the TLS
/// handshake fails. Nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn the_public_listener_serves_no_node_to_node_service() -> anyhow::Result<()> {
    let cluster = TestCluster::start(3).await?;
    let member = chaos_tests::member_peers(&cluster)?;
    // A member of another cluster, with a certificate of its own CA.
    let other = TestCluster::start(1).await?;
    let foreign = chaos_tests::member_peers(&other)?;
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
        // A member (node 1's certificate) finds no public service on a peer listener.
        for (call, code) in public_calls(member.channel(&peer)?).await? {
            assert_eq!(code, Some(Code::Unimplemented), "{call} on the peer listener {peer}");
        }
        // A stranger without a member's certificate gets no further than the TLS handshake.
        // (The connection fails or is dropped: no service answers.)
        let handshake_failed = |code: Option<Code>| {
            matches!(
                code,
                Some(Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal)
            )
        };
        for (call, code) in internal_calls(&peer).await? {
            assert!(
                handshake_failed(code),
                "{call} on the peer listener {peer} without TLS: {code:?}"
            );
        }
        for (call, code) in internal_calls_on(foreign.channel(&peer)?).await? {
            assert!(
                handshake_failed(code),
                "{call} on the peer listener {peer} from another cluster: {code:?}"
            );
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

/// Joining takes a valid token. Without one, with a wrong secret, an
/// expired or a used-up token, the new node is refused with a clear message,
/// stops, and the membership is unchanged; with a valid one it joins and
/// serves reads. A removed member can reach no one any more, with the
/// certificate it still holds.
#[tokio::test(flavor = "multi_thread")]
async fn joining_takes_a_valid_token_and_a_removed_node_reaches_no_one() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(2).await?;
    let client = cluster.client().await?;
    create_f(&client).await?;
    let members = |status: &proto::ClusterStatus| status.nodes.len();
    assert_eq!(members(&cluster.status(0).await?), 2);

    let one_use = client.create_join_token(Duration::from_secs(600), 1).await?.token;
    let short = client.create_join_token(Duration::from_secs(1), 0).await?.token;
    let mut wrong_secret: Vec<&str> = one_use.split('.').collect();
    let forged = "0".repeat(wrong_secret[2].len());
    wrong_secret[2] = &forged;
    let wrong_secret = wrong_secret.join(".");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // No token at all: refused before anything starts.
    let (code, _, stderr) = {
        let output = chaos_tests::floed_on_loopback(&cluster.data_dir(0).with_extension("stranger"))
            .args(["--join", &cluster.address(0)])
            .env_remove("FLOE_JOIN_TOKEN")
            .output()?;
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    assert_ne!(code, Some(0));
    assert!(stderr.contains("joining needs a join token"), "{stderr}");

    for (token, refusal) in [
        (wrong_secret.as_str(), "wrong secret"),
        (short.as_str(), "expired"),
        ("floe1.0badc0de.0123456789abcdef0123456789abcdef", "unknown join token"),
    ] {
        let index = cluster.start_joining_node(token).await?;
        let status = cluster.wait_exit(index, Duration::from_secs(30)).await?;
        assert!(!status.success(), "joined with a bad token");
        let log = cluster.nodes[index].log();
        assert!(log.contains(refusal), "expected {refusal:?} in:\n{log}");
        assert_eq!(
            members(&cluster.status(0).await?),
            2,
            "a refused join changed the membership"
        );
    }

    // The one-use token admits one node, which serves reads; then it is used up.
    let joined = cluster.start_joining_node(&one_use).await?;
    cluster.wait_for_voters(3).await?;
    let newcomer = cluster.client_of(joined).await?;
    wait_for("the new node to serve reads", Duration::from_secs(30), || async {
        newcomer.get_function("f", ReadConsistency::Linearizable).await.is_ok()
    })
    .await?;
    let index = cluster.start_joining_node(&one_use).await?;
    cluster.wait_exit(index, Duration::from_secs(30)).await?;
    assert!(
        cluster.nodes[index].log().contains("used up"),
        "{}",
        cluster.nodes[index].log()
    );

    // Removed: node `joined` keeps its certificate and key, and is refused everywhere.
    let status = cluster.status(joined).await?;
    let id = status.node_id;
    cluster.client_of(0).await?.remove_node(id).await?;
    cluster.kill(joined);
    let removed = chaos_tests::member_peers_as(&cluster, joined)?;
    for index in 0..2 {
        let peer = cluster.peer_address(index);
        wait_for("the removed node to be refused", Duration::from_secs(10), || {
            let removed = &removed;
            let peer = peer.clone();
            async move { removed.hello(&peer).await.is_err() }
        })
        .await?;
        let error = removed.hello(&peer).await.unwrap_err();
        assert!(
            matches!(
                error.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown | Code::PermissionDenied
            ),
            "{error:?}"
        );
    }
    assert_eq!(members(&cluster.status(0).await?), 2);
    Ok(())
}

/// The two unsigned public calls, played by a stranger: a join with an
/// unknown token, a forged proof or a huge body, and an invitation to a
/// member, are refused, and nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_cannot_join_or_invite_without_a_token() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1).await?;
    let token = cluster.join_token().await?;
    let token_id = token.split('.').nth(1).unwrap().to_string();
    let before = cluster_state(&cluster).await?;
    let mut stranger = ClusterClient::new(channel(&cluster.address(0)).await?);
    let join = |token_id: &str, request: Vec<u8>| proto::JoinRequest {
        token_id: token_id.into(),
        proof: vec![0; 32],
        certificate_request: request,
        peer_address: "127.0.0.1:9".into(),
        public_address: "127.0.0.1:9".into(),
        region: "local".into(),
        certificate: Vec::new(),
    };
    for (what, request, expected) in [
        (
            "an unknown token",
            join("0badc0de", b"garbage".to_vec()),
            Code::Unauthenticated,
        ),
        (
            "a forged proof",
            join(&token_id, b"garbage".to_vec()),
            Code::Unauthenticated,
        ),
        ("a bad token id", join("../../etc", Vec::new()), Code::InvalidArgument),
        ("a 1 MiB body", join(&token_id, vec![0; 1 << 20]), Code::OutOfRange),
    ] {
        let error = stranger.join(request).await.expect_err(what);
        assert!(
            error.code() == expected || (expected == Code::OutOfRange && error.code() == Code::ResourceExhausted),
            "{what}: {error:?}"
        );
    }
    // A member refuses an invitation to another cluster (and a malformed one).
    let foreign = format!("floe1.0badc0de.{}.{}", "1".repeat(32), "2".repeat(64));
    for (token, expected) in [
        (foreign.as_str(), Code::FailedPrecondition),
        ("nonsense", Code::InvalidArgument),
    ] {
        let error = stranger
            .invite(proto::InviteRequest {
                token: token.into(),
                join: vec!["127.0.0.1:9".into()],
            })
            .await
            .expect_err("an invitation to a member");
        assert_eq!(error.code(), expected, "{error:?}");
    }
    assert_eq!(cluster_state(&cluster).await?, before, "a stranger changed the cluster");
    Ok(())
}

/// Certificates are renewed before they expire, without a restart: with
/// 20-second certificates every member's expiry moves past the first ones,
/// and once those have expired a restarted member (new handshakes both
/// ways) still takes part in writes.
#[tokio::test(flavor = "multi_thread")]
async fn peer_certificates_are_renewed_before_they_expire() -> anyhow::Result<()> {
    let config = format!(
        "{}\n[cluster]\ncertificate_validity = \"20s\"\nrenewal_check_interval = \"1s\"\n",
        chaos_tests::TEST_CONFIG
    );
    let mut cluster = TestCluster::start_with(3, &config).await?;
    let expiries = |status: &proto::ClusterStatus| -> Vec<i64> {
        status.nodes.iter().map(|node| node.certificate_expires_ms).collect()
    };
    let first = expiries(&cluster.status(0).await?);
    assert_eq!(first.len(), 3);
    let last_first = *first.iter().max().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    assert!(
        first.iter().all(|expiry| *expiry > now() && *expiry < now() + 25_000),
        "{first:?}"
    );

    wait_for("every member to renew", Duration::from_secs(60), || async {
        match cluster.status(0).await {
            Ok(status) => expiries(&status).iter().all(|expiry| *expiry > last_first),
            Err(_) => false,
        }
    })
    .await?;
    let wait = (last_first + 1_000 - now()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;

    cluster.kill(2);
    cluster.restart(2).await?;
    let client = cluster.client_of(2).await?;
    wait_for(
        "the restarted member to take writes",
        Duration::from_secs(30),
        || async {
            match create_f(&client).await {
                Ok(()) => true,
                // An earlier try that timed out after its write.
                Err(error) => format!("{error:#}").to_lowercase().contains("already exists"),
            }
        },
    )
    .await?;
    client.get_function("f", ReadConsistency::Linearizable).await?;
    let log = cluster.nodes[0].log();
    assert!(log.contains("renewed this node's peer certificate"), "{log}");
    Ok(())
}

/// An operator's own PKI: a CA, and per node a key (0600) and a certificate
/// that names a host, not a floe node id.
struct OperatorPki {
    dir: std::path::PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl OperatorPki {
    fn new(dir: &std::path::Path, name: &str) -> anyhow::Result<OperatorPki> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} root CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key)?;
        std::fs::write(dir.join("ca.crt"), ca.pem())?;
        let issuer = Issuer::new(params, ca_key);
        Ok(OperatorPki { dir, issuer })
    }

    /// Writes `host.key` (0600) and `host.crt` valid until New Year of
    /// `year`; with `key`, for that key (a renewal). The flags that give
    /// them to floed.
    fn node(&self, host: &str, year: i32, key: Option<&rcgen::KeyPair>) -> anyhow::Result<Vec<String>> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        use std::os::unix::fs::PermissionsExt;
        let fresh;
        let key = match key {
            Some(key) => key,
            None => {
                fresh = KeyPair::generate()?;
                &fresh
            }
        };
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let certificate = params.signed_by(key, &self.issuer)?;
        let (crt, key_path) = (
            self.dir.join(format!("{host}.crt")),
            self.dir.join(format!("{host}.key")),
        );
        std::fs::write(&crt, certificate.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
        Ok(vec![
            "--peer-cert".into(),
            crt.display().to_string(),
            "--peer-key".into(),
            key_path.display().to_string(),
            "--peer-ca".into(),
            self.dir.join("ca.crt").display().to_string(),
        ])
    }

    fn key(&self, host: &str) -> anyhow::Result<rcgen::KeyPair> {
        Ok(rcgen::KeyPair::from_pem(&std::fs::read_to_string(
            self.dir.join(format!("{host}.key")),
        )?)?)
    }
}

/// `--peer-cert/--peer-key/--peer-ca`: members hold the operator's
/// certificates (naming hosts, not node ids) and are told apart by their
/// pinned keys; a node without them, or with another CA's, is refused; a
/// certificate file replaced for the same key is presented without a
/// restart, one for another key is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_operators_own_pki_replaces_the_cluster_ca() -> anyhow::Result<()> {
    let config = format!(
        "{}\n[cluster]\nrenewal_check_interval = \"1s\"\n",
        chaos_tests::TEST_CONFIG
    );
    let mut cluster = TestCluster::empty(&config)?;
    let pki = OperatorPki::new(cluster.scratch_dir(), "ops")?;
    let other = OperatorPki::new(cluster.scratch_dir(), "elsewhere")?;

    cluster.start_node(pki.node("node-a.example", 2030, None)?).await?;
    let token = cluster.join_token().await?;
    assert_eq!(
        token.split('.').nth(3),
        Some(ca_fingerprint(&pki.dir.join("ca.crt"))?.as_str()),
        "the first token names the operator's CA"
    );
    for host in ["node-b.example", "node-c.example"] {
        let mut args = pki.node(host, 2030, None)?;
        args.extend([
            "--join".into(),
            cluster.address(0),
            "--join-token".into(),
            token.clone(),
        ]);
        cluster.start_node(args).await?;
    }
    cluster.wait_for_voters(3).await?;
    let client = cluster.client_of(2).await?;
    create_f(&client).await?;
    cluster
        .client_of(1)
        .await?
        .get_function("f", ReadConsistency::Linearizable)
        .await?;

    // Without the operator's files, or with another CA's certificate: refused, nothing changes.
    let mut stranger_args = other.node("node-d.example", 2030, None)?;
    stranger_args.extend([
        "--join".into(),
        cluster.address(0),
        "--join-token".into(),
        token.clone(),
    ]);
    let plain_args = vec![
        "--join".into(),
        cluster.address(0),
        "--join-token".into(),
        token.clone(),
    ];
    for (args, refusal) in [
        (plain_args, "start the node with --peer-cert"),
        (stranger_args, "not a certificate of this cluster's CA"),
    ] {
        let index = cluster.start_node(args).await?;
        let status = cluster.wait_exit(index, Duration::from_secs(30)).await?;
        assert!(!status.success());
        let log = cluster.nodes[index].log();
        assert!(log.contains(refusal), "expected {refusal:?} in:\n{log}");
    }
    assert_eq!(cluster.status(0).await?.nodes.len(), 3);

    // Renewed by the operator for the same key: presented without a restart.
    let expiry = |status: &proto::ClusterStatus, id: u64| {
        status
            .nodes
            .iter()
            .find(|node| node.id == id)
            .map(|node| node.certificate_expires_ms)
    };
    let b = cluster.status(1).await?.node_id;
    let before = expiry(&cluster.status(0).await?, b).unwrap();
    pki.node("node-b.example", 2031, Some(&pki.key("node-b.example")?))?;
    wait_for(
        "node b to present its renewed certificate",
        Duration::from_secs(20),
        || async { matches!(cluster.status(0).await, Ok(status) if expiry(&status, b) > Some(before)) },
    )
    .await?;
    // Replaced with a certificate for another key: refused by the node itself, which goes on.
    pki.node("node-c.example", 2031, None)?;
    wait_for("node c to refuse its new key", Duration::from_secs(20), || async {
        cluster.nodes[2]
            .log()
            .contains("for another key than the one the cluster pins")
    })
    .await?;
    cluster.kill(1);
    cluster.restart(1).await?;
    let client = cluster.client_of(1).await?;
    wait_for(
        "node b, restarted, to serve linearizable reads",
        Duration::from_secs(30),
        || async { client.get_function("f", ReadConsistency::Linearizable).await.is_ok() },
    )
    .await?;
    Ok(())
}

/// SHA-256 of the CA certificate in a PEM file, as join tokens name it.
fn ca_fingerprint(path: &std::path::Path) -> anyhow::Result<String> {
    let certificate =
        floe_node::cluster::tls::certificate_from_pem(&std::fs::read_to_string(path)?).map_err(anyhow::Error::msg)?;
    Ok(floe_node::cluster::tls::fingerprint(&certificate))
}

/// Requests signed with key ids the node does not know cost it a read
/// barrier each only up to a bound (one per 100 ms, shared): 1,000 of
/// them, 100 at a time, make a handful, and a key created a moment ago
/// through another node still works at once.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_key_ids_cannot_force_a_read_barrier_each() -> anyhow::Result<()> {
    let cluster = TestCluster::start(2).await?;
    let barriers = |status: &proto::ClusterStatus| status.unknown_key_barriers;
    let before = barriers(&cluster.status(0).await?);
    let started = std::time::Instant::now();
    let mut callers = Vec::new();
    for caller in 0..100 {
        let address = cluster.address(0);
        callers.push(tokio::spawn(async move {
            let mut refused = 0;
            for call in 0..10 {
                let stranger = floe_client::Credentials {
                    access_key_id: format!("FLOEUNKNOWN{caller:03}{call:02}"),
                    secret_access_key: "s".repeat(64),
                };
                let client = floe_client::Client::connect_with([address.clone()], Some(stranger)).await?;
                let error = client
                    .get_function("f", ReadConsistency::Stale)
                    .await
                    .expect_err("an unknown key was accepted");
                assert_eq!(error.code(), Some(Code::Unauthenticated), "{error}");
                refused += 1;
            }
            anyhow::Ok(refused)
        }));
    }
    let mut refused = 0;
    for caller in callers {
        refused += caller.await??;
    }
    let elapsed = started.elapsed();
    assert_eq!(refused, 1000);
    let made = barriers(&cluster.status(0).await?) - before;
    let bound = elapsed.as_millis() as u64 / 100 + 2;
    assert!(
        made <= bound,
        "{made} read barriers for 1,000 unknown keys in {elapsed:?}"
    );
    println!("1,000 requests with unknown key ids: {made} read barriers in {elapsed:?}");

    // A key created through node 2 signs a request at node 1 at once.
    let created = cluster.client_of(1).await?.create_access_key("fresh").await?;
    let fresh = floe_client::Client::connect_with(
        [cluster.address(0)],
        Some(floe_client::Credentials {
            access_key_id: created.key.as_ref().expect("a key").access_key_id.clone(),
            secret_access_key: created.secret_access_key.clone(),
        }),
    )
    .await?;
    fresh.list_functions(ReadConsistency::Stale).await?;
    Ok(())
}

/// A node whose public listeners are on a non-loopback address (here its
/// own network namespace's) without TLS says so loudly at start; one on
/// loopback does not.
#[tokio::test(flavor = "multi_thread")]
async fn cleartext_on_a_network_address_is_announced() -> anyhow::Result<()> {
    let networked = TestCluster::start_networked(1, chaos_tests::TEST_CONFIG, false, None).await?;
    let log = networked.nodes[0].log();
    assert!(log.contains("WITHOUT TLS"), "{log}");
    let local = TestCluster::start(1).await?;
    let log = local.nodes[0].log();
    assert!(!log.contains("WITHOUT TLS"), "{log}");
    Ok(())
}

/// A public certificate that is not for its key, or a key file others can
/// read, stops floed at start with a message that names the files.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_public_certificate_or_key_stops_floed_at_start() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&first)?;
    std::fs::create_dir_all(&second)?;
    let (_, certificate, _) = chaos_tests::write_public_pki(&first)?;
    let (_, _, other_key) = chaos_tests::write_public_pki(&second)?;
    let start = |certificate: &std::path::Path, key: &std::path::Path| {
        chaos_tests::floed_on_loopback(&dir.path().join("data"))
            .arg("--tls-cert")
            .arg(certificate)
            .arg("--tls-key")
            .arg(key)
            .output()
    };
    let output = start(&certificate, &other_key)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("node.crt") && stderr.contains("node.key") && stderr.contains("KeyMismatch"),
        "{stderr}"
    );

    std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o644))?;
    let output = start(&certificate, &other_key)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("chmod"), "{stderr}");
    Ok(())
}
