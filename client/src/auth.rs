//! Credentials and request signing: every call the SDK makes is signed with
//! AWS Signature Version 4 (service name `floe`), the scheme the nodes check
//! on both their gRPC and their Lambda REST API.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

pub use floe_proto::sigv4::Credentials;
use floe_proto::sigv4::{self, GRPC_SERVICE};
use http_body_util::BodyExt;
use tonic::transport::Channel;

/// Where a node writes the first access key, relative to its data dir.
pub const LOCAL_CREDENTIALS: &str = "floe-data/credentials";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("read credentials file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("credentials file {path} has no profile [{profile}] with aws_access_key_id and aws_secret_access_key")]
    NoProfile { path: PathBuf, profile: String },
}

/// Reads a profile from a file in AWS's shared-credentials format.
pub fn read_credentials_file(path: &Path, profile: &str) -> Result<Credentials, CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|error| CredentialsError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let (mut section, mut id, mut secret) = (String::new(), None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != profile {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            match key.trim() {
                "aws_access_key_id" => id = Some(value.trim().to_string()),
                "aws_secret_access_key" => secret = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
        }),
        _ => Err(CredentialsError::NoProfile {
            path: path.to_path_buf(),
            profile: profile.to_string(),
        }),
    }
}

/// The credentials a client uses when it is given none, in this order:
/// `FLOE_ACCESS_KEY_ID` and `FLOE_SECRET_ACCESS_KEY`; the file named by
/// `FLOE_CREDENTIALS` (profile `FLOE_PROFILE`, else `default`); the file a
/// node started in the current directory wrote (`floe-data/credentials`).
/// `None`: calls go unsigned (a node in development mode takes them).
pub fn default_credentials() -> Result<Option<Credentials>, CredentialsError> {
    if let (Ok(access_key_id), Ok(secret_access_key)) = (
        std::env::var("FLOE_ACCESS_KEY_ID"),
        std::env::var("FLOE_SECRET_ACCESS_KEY"),
    ) {
        return Ok(Some(Credentials {
            access_key_id,
            secret_access_key,
        }));
    }
    let profile = std::env::var("FLOE_PROFILE").unwrap_or_else(|_| "default".into());
    if let Ok(path) = std::env::var("FLOE_CREDENTIALS") {
        return read_credentials_file(Path::new(&path), &profile).map(Some);
    }
    let local = Path::new(LOCAL_CREDENTIALS);
    if local.exists() {
        return read_credentials_file(local, &profile).map(Some);
    }
    Ok(None)
}

/// A gRPC channel that signs each request. Calls are unary, so the body is
/// whole before it leaves: it is read, hashed into the signature, and sent.
#[derive(Clone)]
pub struct Signed {
    channel: Channel,
    credentials: Option<Arc<Credentials>>,
}

impl Signed {
    pub fn new(channel: Channel, credentials: Option<Arc<Credentials>>) -> Signed {
        Signed { channel, credentials }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<tonic::body::Body>> for Signed {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower::Service::poll_ready(&mut self.channel, cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone is not ready; the readied channel goes into the future.
        let clone = self.channel.clone();
        let mut channel = std::mem::replace(&mut self.channel, clone);
        let credentials = self.credentials.clone();
        Box::pin(async move {
            let Some(credentials) = credentials else {
                return tower::Service::call(&mut channel, request).await.map_err(Into::into);
            };
            let (mut parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let (path, query) = (
                parts.uri.path().to_string(),
                parts.uri.query().unwrap_or("").to_string(),
            );
            sigv4::sign(
                &credentials,
                sigv4::DEFAULT_REGION,
                GRPC_SERVICE,
                parts.method.as_str(),
                &path,
                &query,
                &mut parts.headers,
                &sigv4::sha256_hex(&bytes),
                SystemTime::now(),
            );
            let request = http::Request::from_parts(parts, tonic::body::Body::new(http_body_util::Full::new(bytes)));
            tower::Service::call(&mut channel, request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_profiles_of_a_shared_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "# comment\n[default]\naws_access_key_id = AKID1\naws_secret_access_key = s1\n\n[ci]\n\
             aws_access_key_id=AKID2\naws_secret_access_key=s2\n",
        )
        .unwrap();
        assert_eq!(read_credentials_file(&path, "default").unwrap().access_key_id, "AKID1");
        assert_eq!(read_credentials_file(&path, "ci").unwrap().secret_access_key, "s2");
        assert!(matches!(
            read_credentials_file(&path, "other"),
            Err(CredentialsError::NoProfile { .. })
        ));
        assert!(matches!(
            read_credentials_file(&dir.path().join("missing"), "default"),
            Err(CredentialsError::Read { .. })
        ));
    }
}
