//! The `floed` binary: flags, file and environment into a `NodeConfig`, a
//! shutdown signal, then `floe_node::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use floe_node::config::NodeConfig;
use tokio_util::sync::CancellationToken;

/// floed: a node of a floe cluster (a self-hosted, Lambda-like function service).
///
/// With no flags it starts (or restarts) a single-node cluster in ./floe-data,
/// serving gRPC (the floe CLI and SDK) on 127.0.0.1:7400 and Lambda's REST API
/// (boto3, the aws CLI) on 127.0.0.1:7401. On first start it creates an access
/// key and writes it to ./floe-data/credentials, which the floe CLI reads.
/// Nodes talk to each other on a listener of their own (127.0.0.1:7402, see
/// --peer-listen, mutual TLS with certificates of the cluster's own CA), which
/// clients never need. To grow a cluster, start more nodes with `--join
/// ADDRESS --join-token TOKEN`: the address of any member's gRPC API, and the
/// token the first node wrote to ./floe-data/join-token.
///
/// Settings come from, in rising precedence: built-in defaults, the TOML
/// file given with --config, FLOE_* environment variables, and flags.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Flags {
    /// TOML configuration file (see deploy/ for examples).
    #[arg(long, env = "FLOE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./floe-data].
    #[arg(long, env = "FLOE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address, e.g. 127.0.0.1:7400; port 0 picks a free port [default: 127.0.0.1:7400].
    #[arg(long, env = "FLOE_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Address clients use to reach this node's gRPC API [default: the bound listen address].
    #[arg(long, env = "FLOE_ADVERTISE")]
    advertise: Option<String>,
    /// Listen address of the node-to-node services (Raft, forwarding, scheduling); only the other
    /// members need to reach it. Port 0 picks a free port [default: 127.0.0.1:7402].
    #[arg(long, env = "FLOE_PEER_LISTEN")]
    peer_listen: Option<std::net::SocketAddr>,
    /// Address other members use to reach --peer-listen [default: the bound peer listen address].
    #[arg(long, env = "FLOE_PEER_ADVERTISE")]
    peer_advertise: Option<String>,
    /// Region label of this node [default: local].
    #[arg(long, env = "FLOE_REGION")]
    region: Option<String>,
    /// On first start, join the cluster through this member's gRPC address (its --listen;
    /// repeat or comma-separate for several).
    #[arg(long, env = "FLOE_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// The join token that admits this node: the first node's DATA_DIR/join-token, or one from
    /// `floe cluster token create`.
    #[arg(long, env = "FLOE_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// On bootstrap, make this the first join token (floe1.<id>.<secret>: 8 to 32 and 32 to
    /// 128 lower-case hex digits) instead of a random one.
    #[arg(long, env = "FLOE_BOOTSTRAP_JOIN_TOKEN", hide_env_values = true)]
    bootstrap_join_token: Option<String>,
    /// With your own PKI: this node's peer certificate (PEM), signed directly by --peer-ca and
    /// good for both TLS server and client authentication. Without it the cluster runs its own CA.
    /// Give --peer-cert, --peer-key and --peer-ca together, on every node of the cluster.
    #[arg(long, env = "FLOE_PEER_CERT")]
    peer_cert: Option<PathBuf>,
    /// With your own PKI: the key of --peer-cert (PKCS #8 PEM, mode 0600).
    #[arg(long, env = "FLOE_PEER_KEY")]
    peer_key: Option<PathBuf>,
    /// With your own PKI: the CA certificate (PEM) that signs every member's --peer-cert.
    #[arg(long, env = "FLOE_PEER_CA")]
    peer_ca: Option<PathBuf>,
    /// TLS on the public APIs (gRPC and Lambda REST): a PEM certificate chain for this node's
    /// addresses. Clients then use https and trust its CA (floe --ca, boto3 verify=, aws --ca-bundle).
    #[arg(long, env = "FLOE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM, mode 0600).
    #[arg(long, env = "FLOE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// On first start, wait to be added with `floe cluster add` instead of starting a new cluster.
    #[arg(long, env = "FLOE_NO_BOOTSTRAP")]
    no_bootstrap: bool,
    /// Listen address of Lambda's REST API (boto3, aws CLI); port 0 picks a free port [default: 127.0.0.1:7401].
    #[arg(long, env = "FLOE_HTTP_LISTEN")]
    http_listen: Option<std::net::SocketAddr>,
    /// Who may call the public APIs: sigv4 (signed with a cluster access key) or none
    /// (development only: anyone who can reach the node) [default: sigv4].
    #[arg(long, env = "FLOE_AUTH")]
    auth: Option<floe_node::config::AuthMode>,
    /// On bootstrap, create this access key instead of a random one.
    #[arg(long, env = "FLOE_BOOTSTRAP_ACCESS_KEY_ID", hide_env_values = true)]
    bootstrap_access_key_id: Option<String>,
    /// The secret of --bootstrap-access-key-id (64 to 128 characters); prefer the environment variable.
    #[arg(long, env = "FLOE_BOOTSTRAP_SECRET_ACCESS_KEY", hide_env_values = true)]
    bootstrap_secret_access_key: Option<String>,
    /// Log filter, e.g. info or floe_node=debug [default: info].
    #[arg(long, env = "FLOE_LOG", default_value = "info")]
    log: String,
}

fn load(flags: &Flags) -> anyhow::Result<NodeConfig> {
    let mut config = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
            NodeConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?
        }
        None => NodeConfig::default(),
    };
    // clap has merged environment variables into the flags already.
    if let Some(data_dir) = &flags.data_dir {
        config.data_dir = data_dir.clone();
    }
    if let Some(listen) = flags.listen {
        config.listen = listen;
    }
    if let Some(advertise) = &flags.advertise {
        config.advertise = Some(advertise.clone());
    }
    if let Some(peer_listen) = flags.peer_listen {
        config.cluster.peer_listen = peer_listen;
    }
    if let Some(peer_advertise) = &flags.peer_advertise {
        config.cluster.peer_advertise = Some(peer_advertise.clone());
    }
    if let Some(region) = &flags.region {
        config.region = region.clone();
    }
    if !flags.join.is_empty() {
        config.join = flags.join.clone();
    }
    if flags.no_bootstrap {
        config.no_bootstrap = true;
    }
    if let Some(token) = &flags.join_token {
        config.join_token = Some(token.clone());
    }
    if let Some(token) = &flags.bootstrap_join_token {
        config.cluster.bootstrap_join_token = Some(token.clone());
    }
    for (flag, setting) in [
        (&flags.peer_cert, &mut config.cluster.peer_cert),
        (&flags.peer_key, &mut config.cluster.peer_key),
        (&flags.peer_ca, &mut config.cluster.peer_ca),
        (&flags.tls_cert, &mut config.api.tls_cert),
        (&flags.tls_key, &mut config.api.tls_key),
    ] {
        if let Some(path) = flag {
            *setting = Some(path.clone());
        }
    }
    if let Some(http_listen) = flags.http_listen {
        config.api.http_listen = http_listen;
    }
    if let Some(auth) = flags.auth {
        config.api.auth = auth;
    }
    if let Some(id) = &flags.bootstrap_access_key_id {
        config.api.bootstrap_access_key_id = Some(id.clone());
    }
    if let Some(secret) = &flags.bootstrap_secret_access_key {
        config.api.bootstrap_secret_access_key = Some(secret.clone());
    }
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    // floed re-runs itself as the waiting process of a prepared sandbox slot.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(floe_node::executor::sandbox::slot::WAITER_COMMAND) {
        floe_node::executor::sandbox::slot::run_waiter(&args[2..]);
    }
    // … and as the reaper of its sandboxes (see `executor/sandbox/cgroup.rs`).
    if args.get(1).map(String::as_str) == Some(floe_node::executor::sandbox::cgroup::REAPER_COMMAND) {
        floe_node::executor::sandbox::cgroup::run_reaper(&args[2..]);
    }
    let flags = Flags::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&flags.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match load(&flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("floed: invalid configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    runtime.spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        signal.cancel();
    });
    match runtime.block_on(floe_node::run(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
