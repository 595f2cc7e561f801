//! `floed`: one node of a floe cluster.
//!
//! Read in this order:
//! - [`config`]: what a node is told;
//! - [`error`]: the one error type, its stable codes and gRPC statuses;
//! - [`shared`]: the clock and the sandbox key, which every layer uses;
//! - [`workers`]: background work, named and tracked;
//! - [`service`]: every operation, once (functions, invoke, cluster);
//! - [`api`]: adapters from wire protocols to the service;
//! - [`cluster`]: Raft wiring, forwarding to the leader, node-to-node RPCs;
//! - [`scheduler`]: placement and quotas (on the leader), heartbeats (every node);
//! - [`executor`]: sandboxes and the Runtime API;
//! - [`packages`]: code packages by sha256;
//! - [`secrets`]: the data dir and the secret files in it, private to the node.
//!
//! [`run`] starts everything and, on shutdown, stops it in this order: stop
//! accepting requests, let in-flight requests finish (the gRPC server's
//! graceful shutdown), stop sandboxes, stop Raft, close RocksDB.

pub mod api;
pub mod cluster;
pub mod config;
pub mod error;
pub mod executor;
pub mod failpoint;
pub mod packages;
pub mod policy;
pub mod scheduler;
pub mod secrets;
pub mod service;
pub mod shared;
pub mod wire;
pub mod workers;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use floe_proto::internal::peer_server::PeerServer;
use floe_proto::internal::raft_server::RaftServer;
use floe_proto::internal::scheduler_server::SchedulerServer;
use floe_proto::v1::access_keys_server::AccessKeysServer;
use floe_proto::v1::cluster_server::ClusterServer;
use floe_proto::v1::functions_server::FunctionsServer;
use floe_proto::MAX_MESSAGE_BYTES;
use tokio_util::sync::CancellationToken;

use crate::api::grpc::PublicApi;
use crate::api::internal::InternalApi;
use crate::config::NodeConfig;
use crate::service::{PendingStore, Service};

/// The file in the data dir where a running node writes its gRPC address.
pub const ADDRESS_FILE: &str = "floed.addr";
/// The file in the data dir where a running node writes its REST API address.
pub const HTTP_ADDRESS_FILE: &str = "floed.http";
/// The file in the data dir where a running node writes its peer address
/// (node-to-node services); written before [`ADDRESS_FILE`].
pub const PEER_ADDRESS_FILE: &str = "floed.peer";

/// The largest message of the public `Cluster` service (joins, invitations, status requests).
const CLUSTER_MESSAGE_BYTES: usize = 64 * 1024;

/// Writes `text` to `name` in the data dir whole or not at all: tools poll
/// for these files and read them at once.
fn write_atomically(data_dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let staging = data_dir.join(format!("{name}.tmp"));
    std::fs::write(&staging, text)?;
    std::fs::rename(&staging, data_dir.join(name))?;
    Ok(())
}

/// Runs a node until `shutdown` is cancelled.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let join_token = match &config.join_token {
        Some(text) => Some(cluster::token::JoinToken::parse(text).map_err(|e| anyhow::anyhow!("the join token: {e}"))?),
        None => None,
    };
    let data_dir = config.data_dir.clone();
    if !config.join.is_empty() && join_token.is_none() && service::cluster::read_node_id(&data_dir)?.is_none() {
        anyhow::bail!(
            "joining needs a join token (--join-token or FLOE_JOIN_TOKEN): the first node wrote one to \
             join-token in its data dir; `floe cluster token create` makes more"
        );
    }
    secrets::open_data_dir(&data_dir)?;
    secrets::check_private_file(&data_dir.join(service::auth::CREDENTIALS_FILE))?;
    let (log_store, state_machine, reader) = floe_raft_store::open(&data_dir.join("raft")).with_context(|| {
        format!(
            "open the Raft store in {} (is another floed using it?)",
            data_dir.display()
        )
    })?;
    let public_tls = api::tls::PublicTls::load(&config.api)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let http_listener = tokio::net::TcpListener::bind(config.api.http_listen)
        .await
        .with_context(|| format!("listen on {} (api.http_listen)", config.api.http_listen))?;
    let http_address = http_listener.local_addr()?;
    let peer_listener = tokio::net::TcpListener::bind(config.cluster.peer_listen)
        .await
        .with_context(|| format!("listen on {} (cluster.peer_listen)", config.cluster.peer_listen))?;
    let peer_bound = peer_listener.local_addr()?;
    let address = config.advertise.clone().unwrap_or_else(|| bound.to_string());
    let peer_address = config
        .cluster
        .peer_advertise
        .clone()
        .unwrap_or_else(|| peer_bound.to_string());
    let packages = packages::Packages::open(&data_dir)?;
    let executor = executor::Executor::new(&config.executor, &data_dir)?;
    let service = Arc::new(Service::new(
        config.clone(),
        address.clone(),
        peer_address.clone(),
        reader,
        PendingStore {
            log_store,
            state_machine,
        },
        packages,
        executor.clone(),
    ));

    // Why the node stopped on its own (a refused join, Raft failing), if it did.
    let fatal: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    let public = PublicApi {
        service: service.clone(),
    };
    let internal = InternalApi {
        service: service.clone(),
        shutdown: shutdown.clone(),
        snapshot_chunks: Default::default(),
    };
    // Two planes, two listeners: the public API here (clients, signed); the
    // node-to-node services only on the peer listener. A call for a service
    // of the other plane finds no route (UNIMPLEMENTED).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server_shutdown = shutdown.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &public_tls {
        builder = builder.tls_config(tls.grpc()).context("TLS on the gRPC listener")?;
    }
    let server = builder
        .layer(api::auth::AuthLayer {
            service: service.clone(),
        })
        .add_service(
            FunctionsServer::new(public.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        // Join and Invite reach tonic unsigned: their messages are small,
        // so a stranger's body is cut at 64 KiB (signed calls are read,
        // within their own limit, by the auth layer first).
        .add_service(ClusterServer::new(public.clone()).max_decoding_message_size(CLUSTER_MESSAGE_BYTES))
        .add_service(AccessKeysServer::new(public))
        .serve_with_incoming_shutdown(incoming, async move { server_shutdown.cancelled().await });
    let server = tokio::spawn(server);
    // The peer listener serves only mutual TLS with members, so it starts
    // once this node has its certificate: at once on a restart or a
    // bootstrap, after admission on a joining node (connections wait in the
    // listener's backlog meanwhile).
    let (peer_node, peer_server_shutdown) = (service.node.clone(), shutdown.clone());
    let peer_server = tokio::spawn(async move {
        let tls = tokio::select! {
            tls = peer_node.tls_ready() => tls,
            _ = peer_server_shutdown.cancelled() => return Ok(()),
        };
        let config = tls.server_config().map_err(anyhow::Error::msg)?;
        let incoming =
            cluster::transport::accept(peer_listener, config, tls.pins.clone(), peer_server_shutdown.clone());
        tonic::transport::Server::builder()
            // Peers cancel RPCs by the hundred when a link fails (Raft timeouts);
            // h2's default of 20 reset streams would then close the whole
            // connection, failing every other call on it.
            .http2_max_pending_accept_reset_streams(Some(1024))
            // A member removed while connected is refused from its next call.
            .layer(tonic::service::InterceptorLayer::new(cluster::transport::check_member(
                peer_node.pins.clone(),
            )))
            .add_service(
                RaftServer::new(internal.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                SchedulerServer::new(internal.clone())
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                PeerServer::new(internal)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(incoming, async move { peer_server_shutdown.cancelled().await })
            .await
            .context("peer gRPC server")
    });
    let rest_tls = public_tls.as_ref().map(|tls| tls.rest()).transpose()?;
    api::tls::warn_if_cleartext(&config.api, config.listen, public_tls.is_some());
    let rest = tokio::spawn(api::rest::serve(
        http_listener,
        rest_tls,
        service.clone(),
        shutdown.clone(),
        std::time::Duration::from_secs(30),
    ));
    write_atomically(&data_dir, HTTP_ADDRESS_FILE, &http_address.to_string())?;
    write_atomically(&data_dir, PEER_ADDRESS_FILE, &peer_address)?;
    write_atomically(&data_dir, ADDRESS_FILE, &address)?;
    tracing::info!(%address, %http_address, %peer_address, data_dir = %data_dir.display(), region = %config.region, "floed listening");
    if config.api.auth == config::AuthMode::None {
        tracing::warn!(
            "AUTHENTICATION IS OFF (api.auth = \"none\"): anyone who can reach {address} or {http_address} \
             can deploy and run code on this cluster. Use this for development only."
        );
    }

    match service::cluster::read_node_id(&data_dir)? {
        // A first node that stopped part way through its bootstrap.
        Some(service::cluster::FIRST_NODE_ID) if cluster::tls::bootstrapping(&data_dir) => {
            service
                .membership
                .bootstrap()
                .await
                .context("bootstrap a new cluster")?;
            tracing::info!("finished starting a new single-node cluster as node 1");
        }
        Some(id) => {
            let operator = config.cluster.operator_files();
            let pins = service.node.pins.clone();
            let peer_tls = cluster::tls::PeerTls::load(&data_dir, id, operator.as_ref(), pins)?.with_context(|| {
                format!(
                    "{} has a node id but no peer certificate ({}/): it was written by a floe without TLS \
                     between nodes; start this node with an empty data dir and join it again",
                    data_dir.display(),
                    cluster::tls::TLS_DIR
                )
            })?;
            service.node.set_tls(peer_tls)?;
            service.node.start_raft(id).await?;
            tracing::info!(node_id = id, "restarted from the data dir");
        }
        None if !config.join.is_empty() => {
            let membership = service.membership.clone();
            let join = config.join.clone();
            let token = join_token.expect("validated: join needs a token");
            let (stopping, failure) = (shutdown.clone(), fatal.clone());
            service.node.workers.spawn("join", async move {
                if let Err(error) = membership.join(&join, &token, &stopping).await {
                    // A refused join is final: say why and stop.
                    if !stopping.is_cancelled() {
                        let _ = failure.set(format!("could not join the cluster: {error:#}"));
                        stopping.cancel();
                    }
                }
                Ok(())
            });
        }
        None if config.no_bootstrap => {
            tracing::info!("waiting to be added with `floe cluster add {address}`")
        }
        None => {
            service
                .membership
                .bootstrap()
                .await
                .context("bootstrap a new cluster")?;
            tracing::info!("started a new single-node cluster as node 1");
        }
    }

    if service::cluster::read_node_id(&data_dir)? == Some(service::cluster::FIRST_NODE_ID) {
        let task = service.access.clone().run_first_key(shutdown.clone());
        service.node.workers.spawn("first-access-key", async move {
            task.await;
            Ok(())
        });
    }
    let workers = &service.node.workers;
    let stop = || shutdown.clone();
    // Raft stopped by its own error (say a log entry that cannot be read)
    // stops the node, which says why, rather than leaving it half alive.
    let (node, failure, stopping) = (service.node.clone(), fatal.clone(), stop());
    workers.spawn("raft-watch", async move {
        let cluster = tokio::select! {
            cluster = node.started() => cluster,
            _ = stopping.cancelled() => return Ok(()),
        };
        tokio::select! {
            Some(error) = cluster.fatal() => {
                tracing::error!(%error, "Raft stopped on an error: stopping the node");
                let _ = failure.set(format!("Raft stopped on an error: {error}"));
                stopping.cancel();
            }
            _ = stopping.cancelled() => {}
        }
        Ok(())
    });
    let (evicting, preparing) = (
        executor.clone().run_evictor(stop()),
        executor.clone().run_slot_preparer(stop()),
    );
    workers.spawn("sandbox-evictor", async move {
        evicting.await;
        Ok(())
    });
    workers.spawn("slot-preparer", async move {
        preparing.await;
        Ok(())
    });
    let collecting =
        service
            .packages
            .clone()
            .run_collector(config.packages.gc_interval, config.packages.gc_grace, stop());
    workers.spawn("package-collector", async move {
        collecting.await;
        Ok(())
    });
    let heartbeats = service.scheduling.clone().run_heartbeats(stop());
    workers.spawn("heartbeats", async move {
        heartbeats.await;
        Ok(())
    });
    let renewing = service
        .membership
        .clone()
        .run_certificate_renewal(config.cluster.renewal_check_interval, stop());
    workers.spawn("certificate-renewal", async move {
        renewing.await;
        Ok(())
    });
    let dispatching = service.dispatcher.clone().run(stop());
    workers.spawn("event-dispatcher", async move {
        dispatching.await;
        Ok(())
    });

    shutdown.cancelled().await;
    // The shutdown order: stop accepting and let in-flight requests finish
    // (the servers' graceful shutdown: invocations drain); then every worker
    // and task stops (the evictor's last act stops the idle sandboxes); then
    // Raft; RocksDB closes when the last handle drops.
    tracing::info!("shutting down");
    server.await.context("gRPC server task")?.context("gRPC server")?;
    let _ = rest.await;
    peer_server.await.context("peer gRPC server task")??;
    service.node.workers.stopped().await;
    if let Some(cluster) = service.node.started_cluster() {
        cluster.stop().await;
    }
    if let Some(error) = fatal.get() {
        anyhow::bail!("{error}");
    }
    tracing::info!("stopped");
    Ok(())
}
