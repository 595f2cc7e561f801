//! Node-wide values that every layer may use: the wall clock as floe
//! records it, which sandboxes can serve an invocation, and who is at the
//! other end of a peer connection.

/// Milliseconds since the Unix epoch: the timestamps floe stores and shows.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which sandboxes can serve an invocation: same function, version and
/// revision (so a changed `$LATEST` never reuses an old sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SandboxKey {
    pub function: String,
    pub version: String,
    pub revision_id: String,
}

/// The member at the other end of a peer connection, as its certificate
/// (checked against the pins) says: the node id and its key's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node: floe_raft_store::NodeId,
    pub pin: [u8; 32],
}

/// rustls with *ring*, for every TLS the node speaks (peers, public APIs):
/// it builds with nothing but a C compiler. rustls deprecates it for lacking
/// post-quantum key exchange (aws-lc-rs has X25519MLKEM768, but needs a much
/// heavier build); a candidate once the build allows.
#[allow(deprecated)]
pub fn tls_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
