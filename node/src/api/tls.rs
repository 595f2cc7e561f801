//! TLS on the public listeners: one certificate (`api.tls_cert`, a PEM
//! chain, and `api.tls_key`, mode 0600) for gRPC and Lambda's REST API.
//! Clients check it against the CA the operator gives them (`floe --ca`,
//! boto3's `verify=`, the aws CLI's `--ca-bundle`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ApiConfig;

/// How long a client may take to complete its TLS handshake on the gRPC listener.
const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The public listeners' certificate and key, checked at start.
pub struct PublicTls {
    certificate_pem: Vec<u8>,
    key_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl PublicTls {
    /// The files `api.tls_cert` and `api.tls_key` name, if set.
    pub fn load(api: &ApiConfig) -> anyhow::Result<Option<PublicTls>> {
        let (Some(certificate), Some(key)) = (&api.tls_cert, &api.tls_key) else {
            return Ok(None);
        };
        crate::secrets::check_private_file(key)?;
        let read = |path: &Path| std::fs::read(path).with_context(|| format!("read {}", path.display()));
        let (certificate_pem, key_pem) = (read(certificate)?, read(key)?);
        let chain = CertificateDer::pem_slice_iter(&certificate_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", certificate.display()))?;
        anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", certificate.display());
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
        let tls = PublicTls {
            certificate_pem,
            key_pem,
            chain,
            key: key_der,
        };
        // Refuse a certificate that does not match its key now, not at the first client.
        tls.rest()
            .with_context(|| format!("{} and {}", certificate.display(), key.display()))?;
        Ok(Some(tls))
    }

    /// For the gRPC listener (tonic's TLS: HTTP/2 over TLS 1.2 or 1.3).
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.certificate_pem,
                &self.key_pem,
            ))
            .timeout(GRPC_HANDSHAKE_TIMEOUT)
    }

    /// For the REST listener: HTTP/1.1 over TLS 1.2 or 1.3.
    pub fn rest(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(crate::shared::tls_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Says loudly when a public listener on a non-loopback address has no TLS:
/// requests and the secrets `CreateAccessKey` returns then travel in the clear.
pub fn warn_if_cleartext(api: &ApiConfig, listen: std::net::SocketAddr, tls: bool) {
    if tls {
        return;
    }
    for address in [listen, api.http_listen] {
        if !address.ip().is_loopback() {
            tracing::warn!(
                %address,
                "THE PUBLIC API LISTENS ON {address} WITHOUT TLS: requests, and the secrets of new access keys, \
                 cross the network in the clear. Set api.tls_cert and api.tls_key (--tls-cert, --tls-key)."
            );
        }
    }
}
