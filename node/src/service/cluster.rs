//! Membership and status: bootstrap, join, add, remove, quotas.

use std::path::Path;
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use floe_proto::v1::{JoinMember, JoinRequest, JoinResponse};
use floe_raft_store::model::{ClusterCaRecord, JoinTokenRecord, NodeRecord, TokenUse};
use floe_raft_store::{state_machine, validate, Command, NodeId, Response};
use openraft::BasicNode;
use rustls::pki_types::CertificateDer;

use super::scheduling::Scheduling;
use super::Node;
use crate::cluster::peers;
use crate::cluster::tls::{self, ClusterCa, PeerTls};
use crate::cluster::token::{self, JoinToken};
use crate::error::{NodeError, JOIN_REFUSED};
use crate::executor::Executor;
use crate::shared::now_ms;

/// The id of the node that starts a new cluster.
pub const FIRST_NODE_ID: NodeId = 1;

/// The file in the first node's data dir that holds the first join token.
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// How long the first join token admits nodes (as kubeadm's first token).
const FIRST_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The one-use token `floe cluster add` sends to a waiting node.
const INVITE_TOKEN_TTL: Duration = Duration::from_secs(600);
/// How long a waiting node may take to join once invited.
const INVITATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest-lived join token `floe cluster token create` makes.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// A PKCS #10 request for one P-256 key is some 300 bytes.
const MAX_CERTIFICATE_REQUEST: usize = 8 * 1024;
/// An operator's node certificate (RSA-4096 ones are some 2 KiB).
const MAX_CERTIFICATE: usize = 16 * 1024;

/// Waits before retry `attempt` (longer each time, up to 2 s), or fails
/// once the node shuts down.
async fn back_off(attempt: u32, shutdown: &tokio_util::sync::CancellationToken, doing: &str) -> anyhow::Result<()> {
    let backoff = Duration::from_millis(200 * u64::from(attempt.min(10)));
    tokio::select! {
        _ = shutdown.cancelled() => anyhow::bail!("shut down before {doing}"),
        _ = tokio::time::sleep(backoff) => Ok(()),
    }
}

/// Whether a failed join call is a refusal to stop on (a bad token, a
/// malformed request, a taken address), not a fault to retry.
fn joining_refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated
            | tonic::Code::InvalidArgument
            | tonic::Code::AlreadyExists
            | tonic::Code::PermissionDenied
    )
}

/// The file in the data dir that holds this node's id once it has one.
const NODE_ID_FILE: &str = "node_id";

/// This node's id, once it has one (`None` before it bootstraps or joins).
pub fn read_node_id(data_dir: &Path) -> anyhow::Result<Option<u64>> {
    match std::fs::read_to_string(data_dir.join(NODE_ID_FILE)) {
        Ok(text) => Ok(Some(text.trim().parse().context("parse node_id file")?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("read node_id file"),
    }
}

/// Records this node's id in its data dir, durably.
pub fn write_node_id(data_dir: &Path, id: u64) -> anyhow::Result<()> {
    let staging = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
    std::fs::write(&staging, format!("{id}\n"))?;
    std::fs::File::open(&staging)?.sync_all()?;
    std::fs::rename(staging, data_dir.join(NODE_ID_FILE))?;
    Ok(())
}

/// A member's public address: from the registry; a node registered before
/// the planes had their own listeners served both on its one address.
fn public_address(record: Option<&NodeRecord>, peer_address: &str) -> String {
    match record {
        Some(record) if !record.public_address.is_empty() => record.public_address.clone(),
        _ => peer_address.to_string(),
    }
}

/// A snapshot of the cluster as this node sees it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: NodeId,
    pub leader: Option<(NodeId, String)>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub members: Vec<MemberView>,
    pub quotas: Vec<(String, u32)>,
    /// `(region, running, quota)` for every region of a member or with a quota.
    pub usage: Vec<(String, u32, u32)>,
    /// This node's background workers and their states.
    pub workers: Vec<(String, crate::workers::WorkerState)>,
    /// The leader's load view, when the leader answered.
    pub load: Option<crate::wire::LoadView>,
}

#[derive(Debug, Clone)]
pub struct MemberView {
    pub id: NodeId,
    /// Its public gRPC address (for clients).
    pub address: String,
    /// Its node-to-node address (in the Raft membership).
    pub peer_address: String,
    pub region: String,
    pub role: String,
    pub voter: bool,
    pub matched_index: Option<u64>,
    /// How the node isolates sandboxes, or "unreachable".
    pub sandbox_mode: String,
    /// When its peer certificate expires (Unix ms; 0 when unreachable).
    pub certificate_expires_ms: i64,
}

/// What `GetAccountSettings` reports.
pub struct AccountSettings {
    /// The region's concurrency quota.
    pub concurrency: u32,
    /// What the quota leaves to functions without reserved concurrency.
    pub unreserved: u32,
    pub function_count: u64,
    /// Bytes of every package that a function or version names.
    pub total_code_size: u64,
    /// floe's only limit on stored code: the size of the data dir's filesystem.
    pub code_storage_limit: u64,
}

fn filesystem_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter of the right type.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return 0;
    }
    (stats.f_blocks as u64).saturating_mul(stats.f_frsize as u64)
}

/// Membership, quotas and status: the cluster as an operator sees it.
pub struct Membership {
    node: Arc<Node>,
    scheduling: Arc<Scheduling>,
    executor: Arc<Executor>,
    /// Serialises membership changes on the leader (ids are allocated one at a time).
    lock: tokio::sync::Mutex<()>,
}

impl Membership {
    pub fn new(node: Arc<Node>, scheduling: Arc<Scheduling>, executor: Arc<Executor>) -> Membership {
        Membership {
            node,
            scheduling,
            executor,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// How this node isolates sandboxes (the `Hello` RPC and status).
    pub fn sandbox_mode(&self) -> String {
        self.executor.isolation.describe()
    }

    /// First start of a new cluster: this node makes the cluster CA and its
    /// own certificate (or takes the operator's, `--peer-cert`), becomes
    /// node 1 and the only voter, and writes the first join token. Safe to
    /// run again after a crash part way: the marker `tls/bootstrapping` (and
    /// the CA key, in `tls/ca.key`) stay until the cluster holds the CA, and
    /// every step after that is idempotent.
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        let data_dir = &self.node.config.data_dir;
        tls::begin_bootstrap(data_dir)?;
        let pins = self.node.pins.clone();
        let (peer_tls, ca_record) = match self.node.config.cluster.operator_files() {
            Some(files) => {
                let peer_tls = PeerTls::from_operator(FIRST_NODE_ID, &files, pins)?;
                let record = ClusterCaRecord {
                    certificate_pem: tls::pem(&peer_tls.ca),
                    key_pem: String::new(),
                };
                (peer_tls, record)
            }
            None => {
                let ca = tls::bootstrap_ca(data_dir)?;
                let peer_tls = match PeerTls::load(data_dir, FIRST_NODE_ID, None, pins.clone())? {
                    Some(peer_tls) => peer_tls,
                    None => {
                        let key = tls::node_key(data_dir)?;
                        let request = key.request(FIRST_NODE_ID).map_err(anyhow::Error::msg)?;
                        let validity = self.node.config.cluster.certificate_validity;
                        let certificate = ca
                            .issue(FIRST_NODE_ID, &request, validity)
                            .map_err(anyhow::Error::msg)?;
                        let peer_tls = PeerTls::new(FIRST_NODE_ID, ca.certificate().clone(), certificate, key, pins)
                            .map_err(anyhow::Error::msg)?;
                        peer_tls.save(data_dir)?;
                        peer_tls
                    }
                };
                let record = ClusterCaRecord {
                    certificate_pem: ca.certificate_pem(),
                    key_pem: ca.key_pem(),
                };
                (peer_tls, record)
            }
        };
        let (_, pin) = peer_tls.me();
        let ca_fingerprint = tls::fingerprint(&peer_tls.ca);
        self.node.pins.set(BTreeMap::from([(FIRST_NODE_ID, pin)]));
        self.node.set_tls(peer_tls)?;
        write_node_id(data_dir, FIRST_NODE_ID)?;
        let cluster = self.node.start_raft(FIRST_NODE_ID).await?;
        if !cluster.raft.is_initialized().await? {
            let members = BTreeMap::from([(FIRST_NODE_ID, BasicNode::new(&self.node.peer_address))]);
            cluster.raft.initialize(members).await?;
        }
        cluster.propose(Command::SetClusterCa(ca_record)).await?;
        cluster
            .propose(Command::RegisterNode {
                id: Some(FIRST_NODE_ID),
                address: self.node.peer_address.clone(),
                public_address: self.node.address.clone(),
                region: self.node.config.region.clone(),
                key_pin: tls::pin_hex(&pin),
                token: None,
            })
            .await?;
        self.write_first_token(&ca_fingerprint).await?;
        tls::end_bootstrap(data_dir)?;
        Ok(())
    }

    /// The first join token, in `join-token` next to `credentials`: chosen
    /// in advance (`FLOE_BOOTSTRAP_JOIN_TOKEN`) or made here.
    async fn write_first_token(&self, ca_fingerprint: &str) -> anyhow::Result<()> {
        let path = self.node.config.data_dir.join(JOIN_TOKEN_FILE);
        if path.exists() {
            return Ok(());
        }
        let token = match &self.node.config.cluster.bootstrap_join_token {
            Some(text) => JoinToken::parse(text)
                .map_err(|e| anyhow::anyhow!("cluster.bootstrap_join_token: {e}"))?
                .with_ca(ca_fingerprint),
            None => JoinToken::generate(ca_fingerprint),
        };
        let now = now_ms();
        let record = JoinTokenRecord {
            id: token.id.clone(),
            secret_digest: token.digest(),
            created_ms: now,
            expires_ms: now + FIRST_TOKEN_TTL.as_millis() as i64,
            uses_left: None,
        };
        match self.node.cluster()?.propose(Command::CreateJoinToken(record)).await {
            Ok(_) => {}
            // Made by an earlier run that stopped before writing the file.
            Err(NodeError::FailedPrecondition(message)) if message.contains("already exists") => {}
            Err(e) => return Err(e.into()),
        }
        crate::secrets::write_private(&path, format!("{token}\n").as_bytes())?;
        tracing::info!(path = %path.display(), "wrote the first join token (valid 24 hours, any number of joins)");
        Ok(())
    }

    /// On a new node: joins through the members' public addresses in
    /// `through` with `token`, until one admits it or one refuses it for
    /// good (a bad token: that is an error). Then it is a member with a
    /// certificate, runs Raft, and has asked to become a voter.
    pub async fn join(
        &self,
        through: &[String],
        token: &JoinToken,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<NodeId> {
        let data_dir = &self.node.config.data_dir;
        let operator = self.node.config.cluster.operator_files();
        let (key, own) = match &operator {
            Some(files) => {
                let (certificate, key, ca) = files.read()?;
                (key, Some((certificate, ca)))
            }
            None => (tls::node_key(data_dir)?, None),
        };
        let certificate_request = key.request(0).map_err(anyhow::Error::msg)?;
        let ask = JoinRequest {
            token_id: token.id.clone(),
            proof: token.proof(&certificate_request),
            certificate_request: certificate_request.clone(),
            peer_address: self.node.peer_address.clone(),
            public_address: self.node.address.clone(),
            region: self.node.config.region.clone(),
            certificate: own
                .as_ref()
                .map(|(certificate, _)| certificate.to_vec())
                .unwrap_or_default(),
        };
        let mut attempt = 0u32;
        let answer = 'joined: loop {
            for address in through {
                match peers::join_through(address, ask.clone()).await {
                    Ok(answer) => break 'joined answer,
                    Err(status) if joining_refused(&status) => {
                        anyhow::bail!("{address} refused to admit this node: {}", status.message())
                    }
                    Err(status) => {
                        tracing::warn!(via = %address, error = %status.message(), "join attempt failed; retrying")
                    }
                }
            }
            attempt += 1;
            back_off(attempt, shutdown, "joining").await?;
        };
        let ca = CertificateDer::from(answer.ca_certificate);
        let fingerprint = tls::fingerprint(&ca);
        match &token.ca_fingerprint {
            Some(expected) if *expected != fingerprint => anyhow::bail!(
                "the cluster showed a CA whose SHA-256 is {fingerprint}, not the {expected} that the join token \
                 names: not joining it"
            ),
            Some(_) => {}
            None => tracing::warn!(
                ca_sha256 = %fingerprint,
                "the join token names no CA: trusting the CA the cluster showed"
            ),
        }
        if let Some((_, own_ca)) = &own {
            if *own_ca != ca {
                anyhow::bail!("the cluster's CA (SHA-256 {fingerprint}) is not the one in --peer-ca: not joining it");
            }
        }
        let certificate = CertificateDer::from(answer.certificate);
        let pin = tls::key_pin(&certificate).map_err(anyhow::Error::msg)?;
        let requested = tls::check_request(&certificate_request).map_err(anyhow::Error::msg)?;
        if pin != requested {
            anyhow::bail!("the cluster answered with a certificate that is not for this node's key");
        }
        let id = answer.node_id;
        let pins = answer
            .members
            .iter()
            .filter_map(|member| Some((member.id, tls::parse_pin(&member.key_pin)?)))
            .collect();
        self.node.pins.set(pins);
        let peer_tls = match &operator {
            Some(files) => PeerTls::from_operator(id, files, self.node.pins.clone())?,
            None => PeerTls::new(id, ca, certificate, key, self.node.pins.clone()).map_err(anyhow::Error::msg)?,
        };
        peer_tls.save(data_dir)?;
        write_node_id(data_dir, id)?;
        self.node.set_tls(peer_tls)?;
        self.node.start_raft(id).await?;
        tracing::info!(node_id = id, "admitted to the cluster; asking to become a voter");
        let members: Vec<String> = answer
            .members
            .iter()
            .filter(|member| member.id != id)
            .map(|member| member.peer_address.clone())
            .collect();
        self.become_voter(&members, shutdown).await?;
        Ok(id)
    }

    /// Asks the members (any of them forwards to the leader) to make this
    /// admitted node a voter, until one has.
    pub async fn become_voter(
        &self,
        members: &[String],
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        loop {
            for member in members {
                match self.node.peers.add_node(member, &self.node.peer_address).await {
                    Ok(node_id) => {
                        tracing::info!(node_id, via = %member, "joined the cluster as a voter");
                        return Ok(());
                    }
                    Err(status) => {
                        tracing::warn!(via = %member, error = %status.message(), "could not become a voter yet; retrying")
                    }
                }
            }
            attempt += 1;
            back_off(attempt, shutdown, "becoming a voter").await?;
        }
    }

    /// Admits a new node (`Cluster/Join`, or `Peer/Join` forwarded): checks
    /// its token and proof, registers it with its key pinned (using the
    /// token up in the same entry), and signs its certificate. Runs on the
    /// leader; other members forward it there.
    pub async fn admit(&self, ask: JoinRequest) -> Result<JoinResponse, NodeError> {
        validate::join_token_id(&ask.token_id)?;
        validate::region(&ask.region)?;
        for (what, address) in [
            ("peer_address", &ask.peer_address),
            ("public_address", &ask.public_address),
        ] {
            if address.is_empty() || address.len() > 256 {
                return Err(NodeError::InvalidArgument(format!(
                    "{what} must be 1 to 256 characters"
                )));
            }
        }
        if ask.certificate_request.len() > MAX_CERTIFICATE_REQUEST {
            return Err(NodeError::InvalidArgument(
                "the certificate request is too large".into(),
            ));
        }
        let cluster = self.node.cluster()?;
        if !cluster.is_leader() {
            let (_, leader) = cluster
                .leader()
                .ok_or_else(|| NodeError::Unavailable("no leader to admit the node".into()))?;
            return Ok(self.node.peers.join(&leader, ask).await?);
        }
        let _one_at_a_time = self.lock.lock().await;
        let now = now_ms();
        let refused = |message: String| NodeError::Unauthenticated {
            code: JOIN_REFUSED.to_string(),
            message,
        };
        let token = state_machine::get_join_token(&self.node.reader, &ask.token_id)?;
        if let Some(refusal) = state_machine::token_refusal(token.as_ref(), now) {
            return Err(refused(refusal));
        }
        let token = token.expect("checked above");
        if !token::verify_proof(&token.secret_digest, &ask.certificate_request, &ask.proof) {
            return Err(refused(format!(
                "wrong secret for join token {}: use the whole token as `floe cluster token create` printed it",
                token.id
            )));
        }
        let pin = tls::check_request(&ask.certificate_request).map_err(NodeError::InvalidArgument)?;
        let ca = self.ca_record()?;
        let ca_certificate = tls::certificate_from_pem(&ca.certificate_pem).map_err(NodeError::Internal)?;
        // With the operator's PKI the node brings its certificate; else the cluster CA signs one.
        let operator_certificate = match (ca.operator_signed(), ask.certificate.is_empty()) {
            (true, true) => {
                return Err(NodeError::InvalidArgument(
                    "this cluster's members hold certificates of the operator's CA: start the node with \
                     --peer-cert, --peer-key and --peer-ca"
                        .into(),
                ))
            }
            (false, false) => {
                return Err(NodeError::InvalidArgument(
                    "this cluster signs its members' certificates with its own CA: start the node without \
                     --peer-cert, --peer-key and --peer-ca"
                        .into(),
                ))
            }
            (false, true) => None,
            (true, false) => {
                if ask.certificate.len() > MAX_CERTIFICATE {
                    return Err(NodeError::InvalidArgument("the certificate is too large".into()));
                }
                let certificate = CertificateDer::from(ask.certificate.clone());
                tls::verify_member_certificate(&ca_certificate, &certificate).map_err(refused)?;
                if tls::key_pin(&certificate).map_err(NodeError::InvalidArgument)? != pin {
                    return Err(NodeError::InvalidArgument(
                        "the certificate is not for the key of the certificate request".into(),
                    ));
                }
                Some(certificate)
            }
        };
        let registered = state_machine::list_nodes(&self.node.reader)?;
        let id = match registered.iter().find(|node| node.address == ask.peer_address) {
            // A join whose answer was lost, retried with the same key.
            Some(node) if node.key_pin == tls::pin_hex(&pin) => node.id,
            Some(node) => {
                return Err(NodeError::AlreadyExists(format!(
                    "peer address {} belongs to node {}: remove it first, or give the new node another address",
                    ask.peer_address, node.id
                )))
            }
            None => match cluster
                .propose(Command::RegisterNode {
                    id: None,
                    address: ask.peer_address.clone(),
                    public_address: ask.public_address.clone(),
                    region: ask.region.clone(),
                    key_pin: tls::pin_hex(&pin),
                    token: Some(TokenUse {
                        id: token.id.clone(),
                        now_ms: now,
                    }),
                })
                .await?
            {
                Response::Node(node) => node.id,
                other => return Err(NodeError::Internal(format!("unexpected response {other:?}"))),
            },
        };
        let certificate = match operator_certificate {
            Some(certificate) => certificate,
            None => ClusterCa::from_record(&ca)
                .map_err(NodeError::Internal)?
                .issue(
                    id,
                    &ask.certificate_request,
                    self.node.config.cluster.certificate_validity,
                )
                .map_err(NodeError::InvalidArgument)?,
        };
        let members = state_machine::list_nodes(&self.node.reader)?
            .into_iter()
            .map(|node| JoinMember {
                id: node.id,
                peer_address: node.address,
                key_pin: node.key_pin,
            })
            .collect();
        tracing::info!(node_id = id, peer_address = %ask.peer_address, token = %token.id, "admitted a node");
        Ok(JoinResponse {
            node_id: id,
            certificate: certificate.to_vec(),
            ca_certificate: ca_certificate.to_vec(),
            members,
        })
    }

    /// The cluster CA, as the cluster holds it.
    fn ca_record(&self) -> Result<ClusterCaRecord, NodeError> {
        state_machine::cluster_ca(&self.node.reader)?.ok_or_else(|| {
            NodeError::FailedPrecondition(
                "this cluster has no CA: it was created by a floe without TLS between nodes; create it anew".into(),
            )
        })
    }

    /// A new join token (`floe cluster token create`): admits `uses` nodes
    /// (`None`: any number) for `ttl`.
    pub async fn create_join_token(&self, ttl: Duration, uses: Option<u32>) -> Result<(JoinToken, i64), NodeError> {
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(NodeError::InvalidArgument(format!(
                "a join token lives from 1 second to {} days",
                MAX_TOKEN_TTL.as_secs() / 86_400
            )));
        }
        if uses == Some(0) {
            return Err(NodeError::InvalidArgument(
                "a join token admits at least one node".into(),
            ));
        }
        let cluster = self.node.cluster()?;
        let ca = tls::certificate_from_pem(&self.ca_record()?.certificate_pem).map_err(NodeError::Internal)?;
        let token = JoinToken::generate(&tls::fingerprint(&ca));
        let now = now_ms();
        let expires_ms = now + ttl.as_millis() as i64;
        cluster
            .propose(Command::CreateJoinToken(JoinTokenRecord {
                id: token.id.clone(),
                secret_digest: token.digest(),
                created_ms: now,
                expires_ms,
                uses_left: uses,
            }))
            .await?;
        Ok((token, expires_ms))
    }

    /// `floe cluster add ADDRESS`: invites the waiting node at public
    /// address `address` with a one-use token; it joins through this node.
    pub async fn add_node(&self, address: &str) -> Result<NodeId, NodeError> {
        let (token, _) = self.create_join_token(INVITE_TOKEN_TTL, Some(1)).await?;
        peers::invite(address, token.to_string(), vec![self.node.address.clone()])
            .await
            .map_err(|status| match NodeError::from(status) {
                NodeError::Unavailable(message) => {
                    NodeError::Unavailable(format!("cannot reach the new node at {address}: {message}"))
                }
                other => other,
            })
    }

    /// On a waiting node (`--no-bootstrap`): the invitation `floe cluster
    /// add` sent. Joins with its token; refused if this node has an id.
    pub async fn accept_invitation(&self, token: &str, through: &[String]) -> Result<NodeId, NodeError> {
        let token = JoinToken::parse(token).map_err(NodeError::InvalidArgument)?;
        if through.is_empty() {
            return Err(NodeError::InvalidArgument("an invitation names where to join".into()));
        }
        let _one_at_a_time = self.lock.lock().await;
        if let Some(cluster) = self.node.started_cluster() {
            // Invited again by its own cluster (the token names its CA): already done.
            let own_ca = self.node.peer_tls().map(|peer_tls| tls::fingerprint(&peer_tls.ca));
            if own_ca.is_some() && own_ca == token.ca_fingerprint {
                return Ok(cluster.id);
            }
            return Err(NodeError::FailedPrecondition(format!(
                "this node already is node {} of another cluster",
                cluster.id
            )));
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let joining = self.join(through, &token, &stop);
        match tokio::time::timeout(INVITATION_TIMEOUT, joining).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(NodeError::FailedPrecondition(format!("{e:#}"))),
            Err(_) => {
                stop.cancel();
                Err(NodeError::Unavailable(format!(
                    "could not join through {} within {INVITATION_TIMEOUT:?}",
                    through.join(", ")
                )))
            }
        }
    }

    /// Makes the admitted node at peer address `address` a voter (the
    /// internal `AddNode`). Runs on the leader; other nodes forward it there.
    pub async fn promote(&self, address: &str) -> Result<NodeId, NodeError> {
        let cluster = self.node.cluster()?;
        if !cluster.is_leader() {
            let (_, leader) = cluster
                .leader()
                .ok_or_else(|| NodeError::Unavailable("no leader to add the node".into()))?;
            return Ok(self.node.peers.add_node(&leader, address).await?);
        }
        let _one_at_a_time = self.lock.lock().await;
        let registered = state_machine::list_nodes(&self.node.reader)?;
        let Some(node) = registered.iter().find(|node| node.address == address) else {
            return Err(NodeError::NotFound(format!(
                "no node is registered at peer address {address}: a node joins with a token first"
            )));
        };
        let hello = self.node.peers.hello(address).await.map_err(|status| {
            NodeError::Unavailable(format!("cannot reach the new node at {address}: {}", status.message()))
        })?;
        if hello.node_id != node.id {
            return Err(NodeError::AlreadyExists(format!(
                "address {address} belongs to node {}, but the node there says it is node {}",
                node.id, hello.node_id
            )));
        }
        cluster.add_voter(node.id, address).await?;
        tracing::info!(node_id = node.id, %address, "node added");
        Ok(node.id)
    }

    /// A new certificate for a member's key (`Peer/RenewCertificate`), on
    /// the leader: the request must be for the key the caller's connection
    /// proved, pinned for its id.
    pub async fn renew_certificate(
        &self,
        caller: crate::shared::PeerIdentity,
        certificate_request: &[u8],
    ) -> Result<Vec<u8>, NodeError> {
        let cluster = self.node.cluster()?;
        if !cluster.is_leader() {
            return Err(NodeError::FailedPrecondition("not the leader".into()));
        }
        if certificate_request.len() > MAX_CERTIFICATE_REQUEST {
            return Err(NodeError::InvalidArgument(
                "the certificate request is too large".into(),
            ));
        }
        let pin = tls::check_request(certificate_request).map_err(NodeError::InvalidArgument)?;
        if pin != caller.pin {
            return Err(NodeError::InvalidArgument(
                "a renewal keeps the key: the request is for another key than the caller's".into(),
            ));
        }
        self.node
            .pins
            .check_pin(caller.node, &pin)
            .map_err(|e| NodeError::FailedPrecondition(e.to_string()))?;
        let ca = self.ca_record()?;
        if ca.operator_signed() {
            return Err(NodeError::FailedPrecondition(
                "the operator's CA signs this cluster's certificates: replace the node's --peer-cert file".into(),
            ));
        }
        let certificate = ClusterCa::from_record(&ca)
            .map_err(NodeError::Internal)?
            .issue(
                caller.node,
                certificate_request,
                self.node.config.cluster.certificate_validity,
            )
            .map_err(NodeError::InvalidArgument)?;
        Ok(certificate.to_vec())
    }

    /// Renews this node's certificate when a third of its life is left
    /// (checked every `interval`), without a restart: connections from then
    /// on present the new one.
    pub async fn run_certificate_renewal(
        self: Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let peer_tls = tokio::select! {
            peer_tls = self.node.tls_ready() => peer_tls,
            _ = shutdown.cancelled() => return,
        };
        loop {
            if peer_tls.operator.is_some() {
                match peer_tls.reload_operator_files() {
                    Ok(true) => tracing::info!(
                        expires_ms = peer_tls.expires_ms(),
                        "presenting the renewed certificate from --peer-cert"
                    ),
                    Ok(false) => {}
                    Err(error) => tracing::error!(error = %format!("{error:#}"), "could not use the --peer-cert files"),
                }
            }
            let (from, until) = tls::validity_ms(&peer_tls.identity.certificate()).unwrap_or((0, 0));
            if until - now_ms() < (until - from) / 3 {
                if peer_tls.operator.is_some() {
                    tracing::warn!(
                        expires_ms = until,
                        "this node's --peer-cert expires soon: replace the file with one renewed for the same key"
                    );
                } else {
                    match self.renew_once(&peer_tls).await {
                        Ok(expires_ms) => tracing::info!(expires_ms, "renewed this node's peer certificate"),
                        Err(error) => tracing::warn!(%error, "could not renew this node's peer certificate yet"),
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn renew_once(&self, peer_tls: &PeerTls) -> Result<i64, NodeError> {
        let cluster = self.node.cluster()?;
        let (me, _) = peer_tls.me();
        let request = peer_tls.key.request(me).map_err(NodeError::Internal)?;
        let certificate = if cluster.is_leader() {
            let (_, pin) = peer_tls.me();
            let caller = crate::shared::PeerIdentity { node: me, pin };
            self.renew_certificate(caller, &request).await?
        } else {
            let (_, leader) = cluster
                .leader()
                .ok_or_else(|| NodeError::Unavailable("no leader".into()))?;
            self.node.peers.renew_certificate(&leader, request).await?
        };
        let certificate = CertificateDer::from(certificate);
        if tls::key_pin(&certificate).map_err(NodeError::Internal)? != peer_tls.me().1 {
            return Err(NodeError::Internal(
                "the renewed certificate is not for this node's key".into(),
            ));
        }
        peer_tls
            .identity
            .replace(certificate, &peer_tls.key)
            .map_err(NodeError::Internal)?;
        peer_tls
            .save_certificate(&self.node.config.data_dir)
            .map_err(|e| NodeError::Internal(format!("{e:#}")))?;
        Ok(peer_tls.expires_ms())
    }

    /// Applies a command another node forwarded, if this node leads
    /// (`FailedPrecondition`, nothing written, otherwise: the sender looks
    /// for the leader again). Answers the entry's index and its result.
    pub async fn propose_forwarded(
        &self,
        command: Command,
    ) -> Result<(u64, floe_raft_store::CommandResult), NodeError> {
        let cluster = self.node.cluster()?;
        match cluster.proposer.write(command).await {
            Ok(written) => {
                // The forwarding node answers its client once it has applied
                // the entry itself: send it the commit index now rather than
                // with the next entries (see vendor/openraft/FLOE-PATCH.md).
                let _ = cluster.raft.trigger().heartbeat().await;
                Ok((written.index, written.result))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a member from Raft and from the registry.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), NodeError> {
        let cluster = self.node.cluster()?;
        if !cluster.is_leader() {
            let (_, leader) = cluster
                .leader()
                .ok_or_else(|| NodeError::Unavailable("no leader to remove the node".into()))?;
            self.node.peers.remove_node(&leader, id).await?;
            return Ok(());
        }
        let _one_at_a_time = self.lock.lock().await;
        cluster.remove_member(id).await?;
        match cluster.propose(Command::RemoveNode { id }).await {
            Ok(_) | Err(NodeError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lambda's account settings, for this node's region.
    pub async fn account_settings(&self) -> Result<AccountSettings, NodeError> {
        self.node.read_barrier(super::Consistency::Linearizable).await?;
        let concurrency = state_machine::region_quota(&self.node.reader, &self.node.config.region)?;
        let reserved = state_machine::reserved_total(&self.node.reader)?;
        let functions = state_machine::list_functions(&self.node.reader)?;
        let mut total_code_size = 0;
        for function in &functions {
            total_code_size += function.code.size;
            for version in state_machine::list_versions(&self.node.reader, &function.name)? {
                total_code_size += version.code.size;
            }
        }
        Ok(AccountSettings {
            code_storage_limit: filesystem_bytes(&self.node.config.data_dir),
            concurrency,
            unreserved: concurrency.saturating_sub(reserved),
            function_count: functions.len() as u64,
            total_code_size,
        })
    }

    pub async fn set_region_quota(&self, region: &str, concurrency: u32) -> Result<(), NodeError> {
        validate::region(region)?;
        self.node
            .cluster()?
            .propose(Command::SetRegionQuota {
                region: region.to_string(),
                concurrency,
            })
            .await?;
        Ok(())
    }

    /// The cluster as this node sees it (the leader also knows each member's progress).
    pub async fn cluster_view(&self) -> Result<ClusterView, NodeError> {
        let cluster = self.node.cluster()?;
        let metrics = cluster.metrics();
        let registry: Vec<NodeRecord> = state_machine::list_nodes(&self.node.reader)?;
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let replication = metrics.replication.clone();
        let mut members: Vec<MemberView> = membership
            .nodes()
            .map(|(id, node)| {
                let record = registry.iter().find(|record| record.id == *id);
                let region = record.map(|record| record.region.clone()).unwrap_or_default();
                let voter = voters.contains(id);
                let role = if Some(*id) == metrics.current_leader {
                    "leader"
                } else if voter {
                    "follower"
                } else {
                    "learner"
                };
                let matched_index = replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index);
                MemberView {
                    id: *id,
                    address: public_address(record, &node.addr),
                    peer_address: node.addr.clone(),
                    region,
                    role: role.to_string(),
                    voter,
                    matched_index,
                    sandbox_mode: String::new(),
                    certificate_expires_ms: 0,
                }
            })
            .collect();
        // Each node's sandbox mode and certificate expiry: its own, or asked
        // (the sandbox mode from the leader's view if it does not answer).
        let load = self.scheduling.load_view().await;
        let reported = |id: NodeId| {
            let view = load.as_ref()?.nodes.iter().find(|n| n.node == id && n.live)?;
            Some(view.sandbox_mode.clone())
        };
        let targets: Vec<(NodeId, String)> = members.iter().map(|m| (m.id, m.peer_address.clone())).collect();
        let answers = targets.into_iter().map(|(id, address)| {
            let peers = self.node.peers.clone();
            let own = (id == cluster.id).then(|| {
                let expires = self.node.peer_tls().map(|tls| tls.expires_ms()).unwrap_or(0);
                (self.executor.isolation.describe(), expires)
            });
            let reported = reported(id);
            async move {
                if let Some(own) = own {
                    return own;
                }
                match peers.hello(&address).await {
                    Ok(hello) => (hello.sandbox_mode, hello.certificate_expires_ms),
                    Err(_) => (reported.unwrap_or_else(|| "unreachable".to_string()), 0),
                }
            }
        });
        for (member, (mode, expires)) in members.iter_mut().zip(futures::future::join_all(answers).await) {
            member.sandbox_mode = mode;
            member.certificate_expires_ms = expires;
        }
        let quotas = state_machine::list_region_quotas(&self.node.reader)?;
        let mut regions: std::collections::BTreeSet<String> = members.iter().map(|m| m.region.clone()).collect();
        regions.extend(quotas.iter().map(|(region, _)| region.clone()));
        regions.remove("");
        let mut usage = Vec::new();
        for region in regions {
            let running = load
                .as_ref()
                .and_then(|l| l.running.iter().find(|(r, _)| *r == region).map(|(_, n)| *n))
                .unwrap_or(0);
            let quota = state_machine::region_quota(&self.node.reader, &region)?;
            usage.push((region, running, quota));
        }
        Ok(ClusterView {
            usage,
            workers: self.node.workers.states(),
            load,
            node_id: cluster.id,
            // From the same snapshot as the term: a leader read later (after
            // the awaits above) may belong to another term.
            leader: metrics.current_leader.and_then(|id| {
                let record = registry.iter().find(|record| record.id == id);
                Some((id, public_address(record, &membership.get_node(&id)?.addr)))
            }),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            members,
            quotas,
        })
    }
}
