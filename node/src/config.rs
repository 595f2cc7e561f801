//! Node configuration: one `NodeConfig`, from defaults < TOML file <
//! environment (`FLOE_*`) < flags. `main.rs` does the merging; this file
//! owns the shape, the defaults and `validate()`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// Everything a node needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where Raft's RocksDB, packages and sandboxes' code live.
    pub data_dir: PathBuf,
    /// gRPC listen address of the public API (the floe CLI and SDK).
    /// Port 0 picks a free port (printed on start).
    pub listen: SocketAddr,
    /// The address clients use to reach this node's public gRPC API;
    /// defaults to the bound listen address.
    pub advertise: Option<String>,
    /// The region label this node serves (quotas are per region).
    pub region: String,
    /// Existing members to join through (their public gRPC addresses), on
    /// first start. Empty: start (or restart) a cluster of its own.
    pub join: Vec<String>,
    /// The join token that admits this node (`floe cluster token create`,
    /// or the first node's `join-token` file); needed with `join`.
    pub join_token: Option<String>,
    /// On first start without `join`, wait to be added (`floe cluster add`)
    /// instead of starting a single-node cluster.
    pub no_bootstrap: bool,
    pub cluster: ClusterConfig,
    pub raft: RaftConfig,
    pub executor: ExecutorConfig,
    pub packages: PackagesConfig,
    pub scheduler: SchedulerConfig,
    pub api: ApiConfig,
}

/// The node-to-node plane: Raft, forwarded writes, scheduling, package
/// transfer. It has its own listener, which only the other members need to
/// reach; the public listeners serve none of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Listen address of the node-to-node services. Port 0 picks a free port.
    pub peer_listen: SocketAddr,
    /// The address other members use to reach `peer_listen`; defaults to the
    /// bound address.
    pub peer_advertise: Option<String>,
    /// The first join token of a new cluster (`floe1.<id>.<secret>`), chosen
    /// in advance; without it the first node makes one. Either way it is
    /// written to `join-token` in the data dir.
    pub bootstrap_join_token: Option<String>,
    /// How often a node checks whether its peer certificate needs renewing
    /// (it is renewed once less than a third of its life is left).
    #[serde(with = "humantime_serde")]
    pub renewal_check_interval: std::time::Duration,
    /// How long the node certificates this node signs (as leader) are valid.
    #[serde(with = "humantime_serde")]
    pub certificate_validity: std::time::Duration,
    /// The operator's own PKI instead of the cluster's CA: this node's
    /// certificate and key, and the CA that signs every member's (see
    /// [`OperatorFiles`]). All three or none, on every member.
    pub peer_cert: Option<std::path::PathBuf>,
    pub peer_key: Option<std::path::PathBuf>,
    pub peer_ca: Option<std::path::PathBuf>,
}

/// This node's peer certificate and key, and the CA that signs every
/// member's, from the operator's own PKI (see `cluster::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorFiles {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl ClusterConfig {
    /// The operator's certificate files, if this node uses them.
    pub fn operator_files(&self) -> Option<OperatorFiles> {
        Some(OperatorFiles {
            certificate: self.peer_cert.clone()?,
            key: self.peer_key.clone()?,
            ca: self.peer_ca.clone()?,
        })
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            peer_listen: "127.0.0.1:7402".parse().expect("static address"),
            peer_advertise: None,
            bootstrap_join_token: None,
            renewal_check_interval: std::time::Duration::from_secs(3600),
            certificate_validity: std::time::Duration::from_secs(30 * 24 * 3600),
            peer_cert: None,
            peer_key: None,
            peer_ca: None,
        }
    }
}

/// Who may call the public APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every public request is signed with AWS Signature Version 4 by an access key of the cluster.
    Sigv4,
    /// Development only: unsigned requests are accepted from anyone who can reach the node.
    None,
}

impl std::str::FromStr for AuthMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "sigv4" => Ok(AuthMode::Sigv4),
            "none" => Ok(AuthMode::None),
            _ => Err(format!("unknown auth mode {text:?}: use sigv4 or none")),
        }
    }
}

/// The public APIs: gRPC (on `listen`) and Lambda's REST API (on `http_listen`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address of Lambda's REST API (boto3, the aws CLI). Port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// The account id in ARNs (12 digits).
    pub account_id: String,
    pub auth: AuthMode,
    /// On bootstrap, the first node creates this access key instead of a
    /// random one (the secret: 64 to 128 characters). Best given through
    /// FLOE_BOOTSTRAP_ACCESS_KEY_ID / FLOE_BOOTSTRAP_SECRET_ACCESS_KEY.
    pub bootstrap_access_key_id: Option<String>,
    pub bootstrap_secret_access_key: Option<String>,
    /// A client must send its request headers within this long.
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// A client must send its whole body within this long.
    #[serde(with = "humantime_serde")]
    pub http_body_timeout: Duration,
    /// HTTP connections served at once; more wait in the kernel's backlog.
    pub http_max_connections: usize,
    /// Bytes all requests together may buffer before their signatures are
    /// checked, past each request's first 64 KiB (gRPC and REST). A request
    /// larger than this can never be served, so keep it above the largest
    /// request (70 MB: CreateFunction with a 50 MB zip in base64).
    pub unverified_body_budget: bytesize::ByteSize,
    /// TLS on both public listeners: a PEM certificate chain and its key
    /// (mode 0600). Both or neither.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            http_listen: "127.0.0.1:7401".parse().expect("static address"),
            account_id: "000000000000".into(),
            auth: AuthMode::Sigv4,
            bootstrap_access_key_id: None,
            bootstrap_secret_access_key: None,
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(60),
            http_max_connections: 1024,
            unverified_body_budget: bytesize::ByteSize::mib(128),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Placement, quotas and asynchronous invocations (see `node/src/scheduler/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How often this node reports its load to the leader.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node the leader has not heard from for this long gets no new
    /// invocations; a leader that has not heard from a majority for this long
    /// grants nothing.
    #[serde(with = "humantime_serde")]
    pub node_timeout: Duration,
    /// A granted invocation must start within this long, or not at all.
    #[serde(with = "humantime_serde")]
    pub grant_lease: Duration,
    /// A new leader grants nothing until every member has reported its
    /// running invocations, or until this long has passed.
    #[serde(with = "humantime_serde")]
    pub rebuild_wait: Duration,
    /// Wait before retrying an asynchronous event whose function failed;
    /// doubled for each later retry (Lambda: one minute, then two).
    #[serde(with = "humantime_serde")]
    pub event_retry_delay: Duration,
    /// Wait before dispatching again an event that could not run (throttled, no node).
    #[serde(with = "humantime_serde")]
    pub event_throttle_delay: Duration,
    /// Asynchronous events the leader runs at once (the quotas apply as well).
    pub event_concurrency: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_interval: Duration::from_millis(200),
            node_timeout: Duration::from_secs(1),
            grant_lease: Duration::from_secs(2),
            // Three heartbeats: every live node has reported by then.
            rebuild_wait: Duration::from_millis(600),
            event_retry_delay: Duration::from_secs(60),
            event_throttle_delay: Duration::from_millis(500),
            event_concurrency: 64,
        }
    }
}

/// Package storage on this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackagesConfig {
    /// How often unreferenced packages are looked for and deleted.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// Packages younger than this are kept even when unreferenced (an upload
    /// precedes the write that names it).
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
}

impl Default for PackagesConfig {
    fn default() -> Self {
        PackagesConfig {
            gc_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(3600),
        }
    }
}

/// Raft timing and log compaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// Build a snapshot (and purge the log behind it) after this many entries.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the last snapshot, for slow followers.
    pub keep_entries_after_snapshot: u64,
    /// How long a write or linearizable read waits for a leader before it fails.
    #[serde(with = "humantime_serde")]
    pub leader_wait: Duration,
}

/// How sandboxes are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// bubblewrap if it works here, else plain processes (with a warning).
    Auto,
    /// bubblewrap or refuse to start.
    Bubblewrap,
    /// Plain processes with rlimits: no namespaces.
    Process,
}

/// The network a sandbox sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A private network namespace with only loopback: the Runtime API and nothing else.
    Isolated,
    /// The node's network (functions can reach other hosts, and each other's loopback ports).
    Host,
}

/// How functions run on this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorConfig {
    pub sandbox: SandboxMode,
    pub network: NetworkMode,
    /// Size of each sandbox's private /tmp.
    pub tmp_size: bytesize::ByteSize,
    /// Most processes and threads one sandbox may run.
    pub pids_limit: u32,
    /// Memory all sandboxes of this node may reserve together (each reserves
    /// its function's memory); default: three quarters of the machine's.
    pub memory_capacity: Option<bytesize::ByteSize>,
    /// Extra host paths bound read-only into every sandbox (e.g. a shared interpreter).
    pub read_only_paths: Vec<PathBuf>,
    /// Log kept per function on each node; older lines are dropped.
    pub log_retention: bytesize::ByteSize,
    /// Sandbox slots kept prepared (cgroups and network ready) so cold starts skip that work.
    pub prepared_sandboxes: usize,
    /// Interpreter for each runtime family (`python`, `nodejs`), by path or name.
    /// Names are resolved to real paths at start, so no shim runs per sandbox.
    pub interpreters: BTreeMap<String, String>,
    /// Idle sandboxes are stopped after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./floe-data"),
            listen: "127.0.0.1:7400".parse().expect("static address"),
            advertise: None,
            region: "local".into(),
            join: Vec::new(),
            join_token: None,
            no_bootstrap: false,
            cluster: ClusterConfig::default(),
            raft: RaftConfig::default(),
            executor: ExecutorConfig::default(),
            packages: PackagesConfig::default(),
            scheduler: SchedulerConfig::default(),
            api: ApiConfig::default(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
            leader_wait: Duration::from_secs(10),
        }
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            sandbox: SandboxMode::Auto,
            network: NetworkMode::Isolated,
            tmp_size: bytesize::ByteSize::mib(512),
            pids_limit: 1024,
            memory_capacity: None,
            read_only_paths: Vec::new(),
            log_retention: bytesize::ByteSize::mib(4),
            prepared_sandboxes: 2,
            interpreters: BTreeMap::from([
                ("python".to_string(), "python3".to_string()),
                ("nodejs".to_string(), "node".to_string()),
            ]),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_toml(text: &str) -> anyhow::Result<NodeConfig> {
        toml::from_str(text).context("parse config")
    }

    /// Refuses settings that cannot work, before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        floe_raft_store::validate::region(&self.region).map_err(|e| anyhow::anyhow!("region: {e}"))?;
        let raft = &self.raft;
        if raft.heartbeat_interval.is_zero() || raft.heartbeat_interval >= raft.election_timeout_min {
            bail!("raft.heartbeat_interval must be above zero and below raft.election_timeout_min");
        }
        if raft.election_timeout_min >= raft.election_timeout_max {
            bail!("raft.election_timeout_min must be below raft.election_timeout_max");
        }
        if raft.snapshot_after_entries == 0 {
            bail!("raft.snapshot_after_entries must be at least 1");
        }
        if self.packages.gc_interval.is_zero() {
            bail!("packages.gc_interval must be above zero");
        }
        if self.executor.pids_limit < 8 {
            bail!("executor.pids_limit must be at least 8 (a runtime needs a few threads)");
        }
        let scheduler = &self.scheduler;
        if scheduler.heartbeat_interval.is_zero() || scheduler.heartbeat_interval >= scheduler.node_timeout {
            bail!("scheduler.heartbeat_interval must be above zero and below scheduler.node_timeout");
        }
        if scheduler.rebuild_wait < scheduler.heartbeat_interval {
            bail!(
                "scheduler.rebuild_wait must be at least scheduler.heartbeat_interval (a new leader waits for reports)"
            );
        }
        if scheduler.grant_lease.is_zero() || scheduler.event_concurrency == 0 {
            bail!("scheduler.grant_lease and scheduler.event_concurrency must be above zero");
        }
        let api = &self.api;
        if api.account_id.len() != 12 || !api.account_id.chars().all(|c| c.is_ascii_digit()) {
            bail!("api.account_id must be 12 digits, like an AWS account id");
        }
        if api.http_header_timeout.is_zero() || api.http_body_timeout.is_zero() || api.http_max_connections == 0 {
            bail!("api.http_header_timeout, api.http_body_timeout and api.http_max_connections must be above zero");
        }
        if api.tls_cert.is_some() != api.tls_key.is_some() {
            bail!("api.tls_cert and api.tls_key (--tls-cert, --tls-key) go together");
        }
        if api.unverified_body_budget < bytesize::ByteSize::mib(1) {
            bail!("api.unverified_body_budget must be at least 1 MiB");
        }
        match (&api.bootstrap_access_key_id, &api.bootstrap_secret_access_key) {
            (None, None) => {}
            (Some(id), Some(secret)) => {
                floe_raft_store::validate::access_key_id(id)
                    .map_err(|e| anyhow::anyhow!("api.bootstrap_access_key_id: {e}"))?;
                if !(64..=128).contains(&secret.len()) || !secret.chars().all(|c| c.is_ascii_graphic()) {
                    bail!("api.bootstrap_secret_access_key must be 64 to 128 printable ASCII characters");
                }
            }
            _ => bail!("api.bootstrap_access_key_id and api.bootstrap_secret_access_key go together"),
        }
        if self.no_bootstrap && !self.join.is_empty() {
            bail!("no_bootstrap and join exclude each other: join already implies waiting to be added");
        }
        if self.cluster.renewal_check_interval.is_zero() {
            bail!("cluster.renewal_check_interval must be more than 0");
        }
        let validity = self.cluster.certificate_validity;
        if validity < std::time::Duration::from_secs(10) || validity > std::time::Duration::from_secs(366 * 86_400) {
            bail!("cluster.certificate_validity must be from 10 seconds to 366 days");
        }
        let cluster = &self.cluster;
        let given = [&cluster.peer_cert, &cluster.peer_key, &cluster.peer_ca]
            .iter()
            .filter(|path| path.is_some())
            .count();
        if given != 0 && given != 3 {
            bail!("cluster.peer_cert, cluster.peer_key and cluster.peer_ca (--peer-cert, --peer-key, --peer-ca) go together");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().unwrap();
    }

    #[test]
    fn parses_human_units_and_refuses_unknown_keys() {
        let config = NodeConfig::from_toml(
            "region = \"eu-1\"\n[raft]\nheartbeat_interval = \"50ms\"\nelection_timeout_min = \"1s\"\n",
        )
        .unwrap();
        assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(config.region, "eu-1");
        let error = NodeConfig::from_toml("regoin = \"x\"").unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
    }

    #[test]
    fn refuses_impossible_timing() {
        let mut config = NodeConfig::default();
        config.raft.heartbeat_interval = Duration::from_secs(1);
        assert!(config.validate().is_err());
        let config = NodeConfig {
            region: "bad region".into(),
            ..Default::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn example_configs_in_deploy_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                NodeConfig::from_toml(&text)
                    .and_then(|c| c.validate().map(|_| c))
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example configs in deploy/");
    }
}
