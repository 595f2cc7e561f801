//! Mutual TLS between members: the cluster CA, node certificates, and the
//! rustls configurations of the peer plane.
//!
//! A peer is accepted — as a client by a member's peer listener, or as a
//! server by a member's peer client — only if its certificate chains to the
//! cluster CA **and** its key is the one pinned for the node id the
//! certificate names. Pinning is what makes removal final: a removed node's
//! key is unpinned, so a certificate it keeps, or one signed for its old key,
//! reaches no one. Only TLS 1.3.
//!
//! The node's own certificate can be replaced while it runs ([`Identity`]):
//! new connections present the new one.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use floe_raft_store::{state_machine, NodeId, StateReader};

pub use crate::config::OperatorFiles;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName as Name, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// The name every node certificate holds and every peer client asks for:
/// members are told apart by the node id in the certificate and its pinned
/// key, not by host names (their addresses may change).
pub const PEER_SERVER_NAME: &str = "floe-peer";

/// How long the cluster CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// SHA-256 of a certificate's SubjectPublicKeyInfo: what the cluster pins.
pub type Pin = [u8; 32];

pub use crate::shared::tls_provider as provider;

fn tls_error(message: impl Into<String>) -> rustls::Error {
    rustls::Error::General(message.into())
}

fn common_name(node: NodeId) -> String {
    format!("floe-node-{node}")
}

/// The pin of a certificate's key (SHA-256 of its SubjectPublicKeyInfo).
///
/// Members are identified by their key, not by what their certificate
/// says: the node id is the one pinned for that key. So certificates from
/// an operator's own CA, which cannot know node ids, work as the cluster
/// CA's do (those name their node, for people reading them).
pub fn key_pin(certificate: &[u8]) -> Result<Pin, String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(certificate).map_err(|e| format!("not a certificate: {e}"))?;
    Ok(Sha256::digest(parsed.tbs_certificate.subject_pki.raw).into())
}

/// The pin of the key a certificate request (DER) is for, once its
/// signature shows the requester holds that key.
pub fn check_request(request: &[u8]) -> Result<Pin, String> {
    use x509_parser::prelude::FromDer;
    CertificateSigningRequestParams::from_der(&request.to_vec().into())
        .map_err(|e| format!("a certificate request that does not verify: {e}"))?;
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(request)
        .map_err(|e| format!("not a certificate request: {e}"))?;
    Ok(Sha256::digest(parsed.certification_request_info.subject_pki.raw).into())
}

/// When a certificate stops being valid, in Unix milliseconds.
pub fn expires_ms(certificate: &[u8]) -> Result<i64, String> {
    Ok(validity_ms(certificate)?.1)
}

/// When a certificate starts and stops being valid, in Unix milliseconds.
pub fn validity_ms(certificate: &[u8]) -> Result<(i64, i64), String> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(certificate).map_err(|e| format!("not a certificate: {e}"))?;
    let validity = parsed.validity();
    Ok((
        validity.not_before.timestamp() * 1000,
        validity.not_after.timestamp() * 1000,
    ))
}

fn offset(time: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(time)
}

/// The cluster CA: it signs node certificates. Its key is as secret as the
/// cluster itself.
pub struct ClusterCa {
    certificate: CertificateDer<'static>,
    key: KeyPair,
}

impl ClusterCa {
    /// A new CA for a new cluster.
    pub fn generate() -> Result<ClusterCa, String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let certificate = Self::params()
            .self_signed(&key)
            .map_err(|e| format!("sign the cluster CA: {e}"))?;
        Ok(ClusterCa {
            certificate: certificate.der().clone(),
            key,
        })
    }

    fn params() -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut name = Name::new();
        // A name of its own, so that another cluster's CA is told apart by name, not only by signature.
        let tag = uuid::Uuid::new_v4().simple().to_string();
        name.push(DnType::CommonName, format!("floe cluster CA {}", &tag[..12]));
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        // Back-dated a little, for members whose clocks run behind the leader's.
        params.not_before = offset(now - Duration::from_secs(3600));
        params.not_after = offset(now + CA_VALIDITY);
        params
    }

    /// The CA from its certificate and key (PEM), as stored.
    pub fn from_pem(certificate: &str, key: &str) -> Result<ClusterCa, String> {
        let key = KeyPair::from_pem(key).map_err(|e| format!("the CA key: {e}"))?;
        let certificate = certificate_from_pem(certificate).map_err(|e| format!("the CA certificate: {e}"))?;
        Ok(ClusterCa { certificate, key })
    }

    /// The CA as the cluster holds it; refused when the operator's CA
    /// signs (the cluster has no key then).
    pub fn from_record(record: &floe_raft_store::model::ClusterCaRecord) -> Result<ClusterCa, String> {
        if record.operator_signed() {
            return Err("the operator's CA signs this cluster's certificates; the cluster holds no CA key".into());
        }
        ClusterCa::from_pem(&record.certificate_pem, &record.key_pem)
    }

    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    pub fn certificate_pem(&self) -> String {
        pem(&self.certificate)
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Hex SHA-256 of the CA certificate: what a join token carries, so that
    /// a joining node can tell the real cluster from an impostor.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.certificate)
    }

    /// Signs a certificate for node `node` over the key of `request` (a
    /// PKCS #10 request, whose signature proves the requester holds the
    /// key). Everything else in the request is ignored: the CA decides what
    /// the certificate says.
    pub fn issue(&self, node: NodeId, request: &[u8], valid_for: Duration) -> Result<CertificateDer<'static>, String> {
        let request = CertificateSigningRequestParams::from_der(&request.to_vec().into())
            .map_err(|e| format!("a certificate request that does not verify: {e}"))?;
        let issuer = Issuer::from_ca_cert_der(&self.certificate, &self.key).map_err(|e| e.to_string())?;
        let mut params = CertificateParams::new(vec![PEER_SERVER_NAME.to_string()]).map_err(|e| e.to_string())?;
        let mut name = Name::new();
        name.push(DnType::CommonName, common_name(node));
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        // Back-dated a little, for members whose clocks run behind the leader's.
        params.not_before = offset(now - (valid_for / 10).min(Duration::from_secs(3600)));
        params.not_after = offset(now + valid_for);
        let certificate = params
            .signed_by(&request.public_key, &issuer)
            .map_err(|e| format!("sign the certificate of node {node}: {e}"))?;
        Ok(certificate.der().clone())
    }
}

/// The first certificate of a PEM text.
pub fn certificate_from_pem(text: &str) -> Result<CertificateDer<'static>, String> {
    rustls::pki_types::pem::PemObject::from_pem_slice(text.as_bytes()).map_err(|e| e.to_string())
}

pub fn pem(certificate: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(certificate);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A node's own key: made on the node, never sent anywhere.
pub struct NodeKey(KeyPair);

impl NodeKey {
    pub fn generate() -> Result<NodeKey, String> {
        Ok(NodeKey(KeyPair::generate().map_err(|e| e.to_string())?))
    }

    pub fn from_pem(pem: &str) -> Result<NodeKey, String> {
        Ok(NodeKey(
            KeyPair::from_pem(pem).map_err(|e| format!("the node key: {e}"))?,
        ))
    }

    pub fn to_pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// A certificate request for this key (DER), for the CA to sign.
    pub fn request(&self, node: NodeId) -> Result<Vec<u8>, String> {
        let mut params = CertificateParams::default();
        let mut name = Name::new();
        name.push(DnType::CommonName, common_name(node));
        params.distinguished_name = name;
        let request = params.serialize_request(&self.0).map_err(|e| e.to_string())?;
        Ok(request.der().to_vec())
    }

    fn private_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.0.serialize_der()))
    }
}

/// The keys the cluster pins, by node id: who may speak on the peer plane.
///
/// Read from the replicated registry at each handshake (and each request,
/// see `transport.rs`), so a removed node is refused from the moment its
/// removal is applied. A node that has just joined, whose state has not
/// caught up yet, uses the pins its join answer gave it until the registry
/// holds anyone.
#[derive(Clone, Default)]
pub struct Pins {
    registry: Option<StateReader>,
    provisional: Arc<RwLock<BTreeMap<NodeId, Pin>>>,
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pins")
    }
}

/// A pin as the registry writes it (hex).
pub fn pin_hex(pin: &Pin) -> String {
    hex::encode(pin)
}

/// A pin as the registry holds it; `None` for none (a node registered
/// before mTLS) or a malformed one.
pub fn parse_pin(text: &str) -> Option<Pin> {
    let mut pin = [0u8; 32];
    hex::decode_to_slice(text, &mut pin).ok()?;
    Some(pin)
}

/// Hex SHA-256 of a CA certificate: what join tokens name.
pub fn fingerprint(certificate: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(certificate))
}

impl Pins {
    /// Pins read from the registry in `state`.
    pub fn from_registry(state: StateReader) -> Pins {
        Pins {
            registry: Some(state),
            provisional: Default::default(),
        }
    }

    /// Replaces the pins used while the registry is empty.
    pub fn set(&self, pins: BTreeMap<NodeId, Pin>) {
        *self.provisional.write().expect("pins lock") = pins;
    }

    /// The pins in force: the registry's, or the provisional ones while it is empty.
    fn all(&self) -> Result<BTreeMap<NodeId, Option<Pin>>, rustls::Error> {
        if let Some(state) = &self.registry {
            let error = |e: floe_raft_store::StoreError| tls_error(format!("read the registry: {e}"));
            let nodes = state_machine::list_nodes(state).map_err(error)?;
            if !nodes.is_empty() {
                return Ok(nodes
                    .into_iter()
                    .map(|node| (node.id, parse_pin(&node.key_pin)))
                    .collect());
            }
        }
        let provisional = self.provisional.read().expect("pins lock");
        Ok(provisional.iter().map(|(node, pin)| (*node, Some(*pin))).collect())
    }

    fn pinned(&self, node: NodeId) -> Result<Option<Pin>, rustls::Error> {
        if let Some(state) = &self.registry {
            let error = |e: floe_raft_store::StoreError| tls_error(format!("read the registry: {e}"));
            if let Some(record) = state_machine::get_node(state, node).map_err(error)? {
                return Ok(parse_pin(&record.key_pin));
            }
            if !state_machine::list_nodes(state).map_err(error)?.is_empty() {
                return Ok(None);
            }
        }
        Ok(self.provisional.read().expect("pins lock").get(&node).copied())
    }

    /// Whether `pin` is still the key pinned for `node` (each request on a
    /// connection whose handshake said so).
    pub fn check_pin(&self, node: NodeId, pin: &Pin) -> Result<(), rustls::Error> {
        match self.pinned(node)? {
            Some(pinned) if pinned == *pin => Ok(()),
            Some(_) => Err(tls_error(format!("node {node}'s pinned key has changed"))),
            None => Err(tls_error(format!("node {node} is not a member"))),
        }
    }

    /// The member a certificate belongs to: the node its key is pinned for
    /// (at each handshake).
    pub fn check(&self, certificate: &[u8]) -> Result<(NodeId, Pin), rustls::Error> {
        let pin = key_pin(certificate).map_err(tls_error)?;
        let node = self
            .all()?
            .into_iter()
            .find_map(|(node, pinned)| (pinned == Some(pin)).then_some(node))
            .ok_or_else(|| {
                tls_error(format!(
                    "the certificate's key ({}…) is pinned for no member: not admitted, or removed",
                    &pin_hex(&pin)[..16]
                ))
            })?;
        Ok((node, pin))
    }
}

/// This node's certificate and key, replaceable while the node runs.
#[derive(Clone)]
pub struct Identity(Arc<RwLock<Arc<CertifiedKey>>>);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity")
    }
}

impl Identity {
    pub fn new(certificate: CertificateDer<'static>, key: &NodeKey) -> Result<Identity, String> {
        Ok(Identity(Arc::new(RwLock::new(Self::certified(certificate, key)?))))
    }

    fn certified(certificate: CertificateDer<'static>, key: &NodeKey) -> Result<Arc<CertifiedKey>, String> {
        let certified = CertifiedKey::from_der(vec![certificate], key.private_der(), &provider())
            .map_err(|e| format!("the node certificate does not match its key: {e}"))?;
        Ok(Arc::new(certified))
    }

    /// Presents `certificate` from the next connection on.
    pub fn replace(&self, certificate: CertificateDer<'static>, key: &NodeKey) -> Result<(), String> {
        *self.0.write().expect("identity lock") = Self::certified(certificate, key)?;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().expect("identity lock").clone()
    }

    /// The current certificate (DER).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current().cert[0].clone()
    }
}

impl rustls::server::ResolvesServerCert for Identity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The directory of the data dir that holds this node's TLS files: `ca.crt`
/// (the cluster CA's certificate), `node.key` (made here, never sent
/// anywhere) and `node.crt` (signed by the CA for this node id), all 0600.
pub const TLS_DIR: &str = "tls";
const CA_FILE: &str = "ca.crt";
const KEY_FILE: &str = "node.key";
const CERTIFICATE_FILE: &str = "node.crt";

pub fn read_pem_certificate(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    crate::secrets::check_private_file(path)?;
    CertificateDer::from_pem_file(path).map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))
}

fn tls_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join(TLS_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

const CA_KEY_FILE: &str = "ca.key";

/// The first node's CA, from the moment it is made until the cluster holds
/// it in Raft (`tls/ca.key`, then [`forget_ca_key`]): a bootstrap that
/// stopped part way goes on with the same CA.
pub fn bootstrap_ca(data_dir: &Path) -> anyhow::Result<ClusterCa> {
    let dir = tls_dir(data_dir)?;
    let (key_path, certificate_path) = (dir.join(CA_KEY_FILE), dir.join(CA_FILE));
    crate::secrets::check_private_file(&key_path)?;
    match std::fs::read_to_string(&key_path) {
        Ok(key) => {
            let certificate = std::fs::read_to_string(&certificate_path)
                .with_context(|| format!("read {}", certificate_path.display()))?;
            ClusterCa::from_pem(&certificate, &key).map_err(anyhow::Error::msg)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ca = ClusterCa::generate().map_err(anyhow::Error::msg)?;
            crate::secrets::write_private(&certificate_path, ca.certificate_pem().as_bytes())?;
            crate::secrets::write_private(&key_path, ca.key_pem().as_bytes())?;
            Ok(ca)
        }
        Err(e) => Err(e).with_context(|| format!("read {}", key_path.display())),
    }
}

const BOOTSTRAP_MARKER: &str = "bootstrapping";

/// Marks a bootstrap as under way, until [`end_bootstrap`].
pub fn begin_bootstrap(data_dir: &Path) -> anyhow::Result<()> {
    crate::secrets::write_private(&tls_dir(data_dir)?.join(BOOTSTRAP_MARKER), b"")
}

/// Whether a bootstrap is under way: its marker, or the CA key that waits
/// in the data dir until the cluster holds it.
pub fn bootstrapping(data_dir: &Path) -> bool {
    let dir = data_dir.join(TLS_DIR);
    dir.join(BOOTSTRAP_MARKER).exists() || dir.join(CA_KEY_FILE).exists()
}

/// Once the cluster holds the CA: removes its key from the data dir, then
/// the marker.
pub fn end_bootstrap(data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir.join(TLS_DIR);
    for file in [CA_KEY_FILE, BOOTSTRAP_MARKER] {
        match std::fs::remove_file(dir.join(file)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// This node's key: the one in the data dir, or a new one written there
/// (before it is ever used, so a join retried after a crash asks for the
/// same key to be pinned).
pub fn node_key(data_dir: &Path) -> anyhow::Result<NodeKey> {
    let path = tls_dir(data_dir)?.join(KEY_FILE);
    crate::secrets::check_private_file(&path)?;
    match std::fs::read_to_string(&path) {
        Ok(pem) => NodeKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate().map_err(anyhow::Error::msg)?;
            crate::secrets::write_private(&path, key.to_pem().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// The operator's own PKI (`config::OperatorFiles`): the certificate must
/// be signed directly by that CA and allow both server and client
/// authentication; the key file must be private (0600). Renewing means
/// replacing the certificate file, for the same key: the node reads it again
/// at each renewal check.
impl OperatorFiles {
    /// The certificate, key and CA, checked to belong together.
    pub fn read(&self) -> anyhow::Result<(CertificateDer<'static>, NodeKey, CertificateDer<'static>)> {
        use rustls::pki_types::pem::PemObject;
        let certificate = |path: &Path| {
            CertificateDer::from_pem_file(path).map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))
        };
        crate::secrets::check_private_file(&self.key)?;
        let key_pem = std::fs::read_to_string(&self.key).with_context(|| format!("read {}", self.key.display()))?;
        let key = NodeKey::from_pem(&key_pem).map_err(|e| anyhow::anyhow!("{}: {e}", self.key.display()))?;
        let (node_certificate, ca) = (certificate(&self.certificate)?, certificate(&self.ca)?);
        verify_member_certificate(&ca, &node_certificate)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.certificate.display()))?;
        Ok((node_certificate, key, ca))
    }
}

/// Whether `certificate` is one a member may hold under `ca`: signed by
/// it, valid now, usable by a client (and so checked by every member's
/// listener). Names are not checked: the pinned key identifies a member.
pub fn verify_member_certificate(ca: &CertificateDer<'static>, certificate: &CertificateDer<'_>) -> Result<(), String> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(certificate, &[], UnixTime::now())
        .map_err(|e| format!("not a certificate of this cluster's CA: {e}"))?;
    Ok(())
}

/// This node's side of the peer plane: its id, the CA it trusts, its key
/// and certificate, and the pins it checks peers against.
pub struct PeerTls {
    pub node: NodeId,
    pub ca: CertificateDer<'static>,
    pub key: NodeKey,
    pub identity: Identity,
    pub pins: Pins,
    /// Set when the operator's PKI provides the certificate.
    pub operator: Option<OperatorFiles>,
}

impl PeerTls {
    pub fn new(
        node: NodeId,
        ca: CertificateDer<'static>,
        certificate: CertificateDer<'static>,
        key: NodeKey,
        pins: Pins,
    ) -> Result<PeerTls, String> {
        let identity = Identity::new(certificate, &key)?;
        Ok(PeerTls {
            node,
            ca,
            key,
            identity,
            pins,
            operator: None,
        })
    }

    /// Node `node`'s certificate from the operator's files.
    pub fn from_operator(node: NodeId, files: &OperatorFiles, pins: Pins) -> anyhow::Result<PeerTls> {
        let (certificate, key, ca) = files.read()?;
        let mut tls = PeerTls::new(node, ca, certificate, key, pins).map_err(anyhow::Error::msg)?;
        tls.operator = Some(files.clone());
        Ok(tls)
    }

    /// Node `node`'s certificate: the operator's files, or the ones the
    /// cluster CA signed in the data dir (`None` if it has none).
    pub fn load(
        data_dir: &Path,
        node: NodeId,
        operator: Option<&OperatorFiles>,
        pins: Pins,
    ) -> anyhow::Result<Option<PeerTls>> {
        if let Some(files) = operator {
            return Ok(Some(PeerTls::from_operator(node, files, pins)?));
        }
        let dir = data_dir.join(TLS_DIR);
        let certificate_path = dir.join(CERTIFICATE_FILE);
        if !certificate_path.exists() {
            return Ok(None);
        }
        let key = node_key(data_dir)?;
        let certificate = read_pem_certificate(&certificate_path)?;
        let ca = read_pem_certificate(&dir.join(CA_FILE))?;
        let tls = PeerTls::new(node, ca, certificate, key, pins).map_err(anyhow::Error::msg)?;
        Ok(Some(tls))
    }

    /// Writes the CA's certificate and this node's certificate (the key is
    /// written by [`node_key`]); the operator's files stay where they are.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        if self.operator.is_some() {
            return Ok(());
        }
        let dir = tls_dir(data_dir)?;
        crate::secrets::write_private(&dir.join(KEY_FILE), self.key.to_pem().as_bytes())?;
        crate::secrets::write_private(&dir.join(CA_FILE), pem(&self.ca).as_bytes())?;
        self.save_certificate(data_dir)
    }

    /// Writes this node's current certificate (after a renewal).
    pub fn save_certificate(&self, data_dir: &Path) -> anyhow::Result<()> {
        let dir = tls_dir(data_dir)?;
        crate::secrets::write_private(
            &dir.join(CERTIFICATE_FILE),
            pem(&self.identity.certificate()).as_bytes(),
        )
    }

    /// With the operator's PKI: presents the certificate file's current
    /// content from the next connection on, if it changed and is for the
    /// same key (the pinned one). Answers whether it changed.
    pub fn reload_operator_files(&self) -> anyhow::Result<bool> {
        let Some(files) = &self.operator else {
            return Ok(false);
        };
        let (certificate, _, ca) = files.read()?;
        if certificate == self.identity.certificate() {
            return Ok(false);
        }
        if ca != self.ca {
            anyhow::bail!(
                "{} changed: a member cannot move to another CA while it runs",
                files.ca.display()
            );
        }
        if key_pin(&certificate).map_err(anyhow::Error::msg)? != self.me().1 {
            anyhow::bail!(
                "the new certificate in {} is for another key than the one the cluster pins for this node: \
                 renew it for the same key (or remove the node and join it again with the new key)",
                files.certificate.display()
            );
        }
        self.identity
            .replace(certificate, &self.key)
            .map_err(anyhow::Error::msg)?;
        Ok(true)
    }

    /// This node's id and key pin.
    pub fn me(&self) -> (NodeId, Pin) {
        let pin = key_pin(&self.identity.certificate()).expect("a certificate this node accepted");
        (self.node, pin)
    }

    /// When this node's certificate expires (Unix ms).
    pub fn expires_ms(&self) -> i64 {
        expires_ms(&self.identity.certificate()).unwrap_or(0)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        server_config(&self.ca, &self.identity, &self.pins)
    }

    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        client_config(&self.ca, &self.identity, &self.pins)
    }
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("the cluster CA certificate: {e}"))?;
    Ok(Arc::new(roots))
}

/// A peer listener's verifier: a client certificate is required, must chain
/// to the CA, and must carry the key pinned for its node.
#[derive(Debug)]
struct PinnedClients {
    chain: Arc<dyn ClientCertVerifier>,
    pins: Pins,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.chain.verify_client_cert(end_entity, intermediates, now)?;
        self.pins.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// A peer client's verifier: the same rules for the member it calls.
#[derive(Debug)]
struct PinnedServers {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    pins: Pins,
}

impl ServerCertVerifier for PinnedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .chain
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // Members are told apart by their pinned key, not by names: an
            // operator's certificates name hosts, not `floe-peer`.
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(error) => return Err(error),
        }
        self.pins.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The peer listener's TLS: TLS 1.3, HTTP/2, a pinned member's certificate required.
pub fn server_config(
    ca: &CertificateDer<'static>,
    identity: &Identity,
    pins: &Pins,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(PinnedClients {
            chain,
            pins: pins.clone(),
        }))
        .with_cert_resolver(Arc::new(identity.clone()));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: a resumed session skips the certificate check, which
    // would let a removed member back in with a ticket from before.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The peer client's TLS: TLS 1.3, HTTP/2, this node's certificate, a pinned member on the other end.
pub fn client_config(
    ca: &CertificateDer<'static>,
    identity: &Identity,
    pins: &Pins,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServers {
            chain,
            pins: pins.clone(),
        }))
        .with_client_cert_resolver(Arc::new(identity.clone()));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every connection proves its certificate again (see `server_config`).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Two members of a new cluster: node 1's server side and node 2's client
/// side (for tests of what runs over the peer plane).
#[cfg(test)]
pub fn two_members() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>, Pins) {
    let ca = ClusterCa::generate().unwrap();
    let pins = Pins::default();
    let mut members = Vec::new();
    let mut pinned = BTreeMap::new();
    for node in [1, 2] {
        let key = NodeKey::generate().unwrap();
        let certificate = ca
            .issue(node, &key.request(node).unwrap(), Duration::from_secs(3600))
            .unwrap();
        pinned.insert(node, key_pin(&certificate).unwrap());
        members.push(PeerTls::new(node, ca.certificate().clone(), certificate, key, pins.clone()).unwrap());
    }
    pins.set(pinned);
    (
        members[0].server_config().unwrap(),
        members[1].client_config().unwrap(),
        pins,
    )
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A node of `ca`: its key, and its identity signed for `node`.
    fn member(ca: &ClusterCa, node: NodeId) -> (NodeKey, Identity) {
        let key = NodeKey::generate().unwrap();
        let certificate = ca.issue(node, &key.request(node).unwrap(), DAY).unwrap();
        let identity = Identity::new(certificate, &key).unwrap();
        (key, identity)
    }

    /// Node `node` pinned to `identity`'s key.
    fn pin(node: NodeId, identity: &Identity) -> (NodeId, Pin) {
        (node, key_pin(&identity.certificate()).unwrap())
    }

    /// One handshake and one byte each way between a client and a server
    /// config; the error text of whichever side failed.
    async fn handshake(client: Arc<rustls::ClientConfig>, server: Arc<rustls::ServerConfig>) -> Result<(), String> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(async move {
            let mut stream = TlsAcceptor::from(server).accept(far).await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            stream.write_all(&byte).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())
        });
        let name = ServerName::try_from(PEER_SERVER_NAME).unwrap();
        let calling = async {
            let mut stream = TlsConnector::from(client)
                .connect(name, near)
                .await
                .map_err(|e| e.to_string())?;
            stream.write_all(b"x").await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let called = calling.await;
        let served = serving.await.unwrap();
        match (called, served) {
            (Ok(()), Ok(())) => Ok(()),
            (called, served) => Err(format!("client: {called:?}; server: {served:?}")),
        }
    }

    #[tokio::test]
    async fn pinned_members_of_one_ca_talk_and_no_one_else_does() {
        let ca = ClusterCa::generate().unwrap();
        let (_, one) = member(&ca, 1);
        let (two_key, two) = member(&ca, 2);
        let pins = Pins::default();
        pins.set(BTreeMap::from([pin(1, &one), pin(2, &two)]));
        let server = server_config(ca.certificate(), &one, &pins).unwrap();
        handshake(client_config(ca.certificate(), &two, &pins).unwrap(), server.clone())
            .await
            .unwrap();

        // No client certificate at all.
        let anonymous = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots(ca.certificate()).unwrap())
            .with_no_client_auth();
        let error = handshake(Arc::new(anonymous), server.clone()).await.unwrap_err();
        assert!(
            error.contains("CertificateRequired") || error.contains("certificate"),
            "{error}"
        );

        // A self-signed certificate that names node 2.
        let key = NodeKey::generate().unwrap();
        let mut params = CertificateParams::new(vec![PEER_SERVER_NAME.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name(2));
        let forged = params.self_signed(&key.0).unwrap().der().clone();
        let stranger = Identity::new(forged, &key).unwrap();
        assert!(handshake(
            client_config(ca.certificate(), &stranger, &pins).unwrap(),
            server.clone()
        )
        .await
        .is_err());

        // A member of another cluster (its own CA), even under a pinned id: it
        // trusts a CA that did not sign the server's certificate, and the
        // server does not trust its CA.
        let other_ca = ClusterCa::generate().unwrap();
        let (_, foreign) = member(&other_ca, 2);
        let error = handshake(
            client_config(other_ca.certificate(), &foreign, &pins).unwrap(),
            server.clone(),
        )
        .await
        .unwrap_err();
        assert!(error.contains("UnknownIssuer") || error.contains("issuer"), "{error}");

        // Signed by the real CA, but the key is not the one pinned for node 2.
        let (_, impostor) = member(&ca, 2);
        let error = handshake(
            client_config(ca.certificate(), &impostor, &pins).unwrap(),
            server.clone(),
        )
        .await
        .unwrap_err();
        assert!(error.contains("pinned for no member"), "{error}");

        // The key is what identifies a member, not the name its certificate
        // gives: node 2's key under a certificate that names node 9 (or a
        // host, as an operator's would) is node 2.
        let renamed = ca.issue(9, &two_key.request(9).unwrap(), DAY).unwrap();
        assert_eq!(pins.check(&renamed).unwrap().0, 2);

        // The client checks the server the same way: a server whose key is not pinned is refused.
        let (_, rogue) = member(&ca, 1);
        let rogue_server = server_config(ca.certificate(), &rogue, &pins).unwrap();
        let error = handshake(client_config(ca.certificate(), &two, &pins).unwrap(), rogue_server)
            .await
            .unwrap_err();
        assert!(error.contains("pinned for no member"), "{error}");
    }

    #[tokio::test]
    async fn a_removed_member_reaches_no_one_and_a_renewed_one_goes_on() {
        let ca = ClusterCa::generate().unwrap();
        let (_, one) = member(&ca, 1);
        let (two_key, two) = member(&ca, 2);
        let pins = Pins::default();
        pins.set(BTreeMap::from([pin(1, &one), pin(2, &two)]));
        let server = server_config(ca.certificate(), &one, &pins).unwrap();
        let client = client_config(ca.certificate(), &two, &pins).unwrap();
        handshake(client.clone(), server.clone()).await.unwrap();

        // Renewal: a new certificate for the same key, presented from the next connection on.
        let renewed = ca.issue(2, &two_key.request(2).unwrap(), 2 * DAY).unwrap();
        assert_ne!(renewed, two.certificate());
        two.replace(renewed.clone(), &two_key).unwrap();
        assert_eq!(two.certificate(), renewed);
        assert!(expires_ms(&renewed).unwrap() > expires_ms(&one.certificate()).unwrap());
        handshake(client.clone(), server.clone()).await.unwrap();

        // Removed: its key is unpinned, and nothing it holds gets it in.
        pins.set(BTreeMap::from([pin(1, &one)]));
        let error = handshake(client, server).await.unwrap_err();
        assert!(error.contains("pinned for no member"), "{error}");
    }

    #[test]
    fn the_ca_survives_its_pem_and_refuses_a_request_that_does_not_verify() {
        let ca = ClusterCa::generate().unwrap();
        let again = ClusterCa::from_pem(&ca.certificate_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let key = NodeKey::generate().unwrap();
        let certificate = again.issue(3, &key.request(3).unwrap(), DAY).unwrap();
        verify_member_certificate(ca.certificate(), &certificate).unwrap();
        assert_eq!(
            key_pin(&certificate).unwrap(),
            check_request(&key.request(3).unwrap()).unwrap()
        );
        let mut request = key.request(3).unwrap();
        let last = request.len() - 1;
        request[last] ^= 0xff;
        assert!(ca.issue(3, &request, DAY).is_err());
        assert!(ClusterCa::from_pem("garbage", &ca.key_pem()).is_err());
    }
}
