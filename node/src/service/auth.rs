//! Access keys and request signatures: who may call the public APIs.
//!
//! Keys live in the replicated state (`Command::CreateAccessKey`), as the
//! digest that verifying a SigV4 signature needs, never as the secret. The
//! first node creates one key when the cluster has none and writes it to
//! `credentials` in its data dir, in the AWS shared-credentials format, so
//! that `floe`, boto3 and the aws CLI can use it at once.

use std::path::Path;
use std::time::{Duration, SystemTime};

use floe_proto::sigv4::{self, Authorization, RequestParts, SignatureError};
use floe_raft_store::model::AccessKeyRecord;
use floe_raft_store::{state_machine, validate, Command, Response};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

use std::sync::Arc;

use super::{Consistency, Node};
use crate::config::AuthMode;
use crate::error::NodeError;

/// The file in a data dir where the first node writes the first access key.
pub const CREDENTIALS_FILE: &str = "credentials";

/// A request's claimed key, found in the cluster: what its signature must match.
pub struct SigningKey {
    pub authorization: Authorization,
    digest: [u8; 32],
}

impl SigningKey {
    pub fn verify(&self, service: &str, parts: &RequestParts<'_>) -> Result<(), SignatureError> {
        sigv4::verify(&self.authorization, &self.digest, service, parts, SystemTime::now())
    }
}

fn new_access_key_id() -> String {
    // AWS-shaped: a fixed prefix and 16 characters of base32.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    let tail: String = (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("FLOE{tail}")
}

fn new_secret() -> String {
    // 64 characters: long enough that only a digest need be kept (see sigv4.rs).
    Alphanumeric.sample_string(&mut rand::rng(), 64)
}

impl From<SignatureError> for NodeError {
    fn from(error: SignatureError) -> Self {
        NodeError::Unauthenticated {
            code: error.code().to_string(),
            message: error.to_string(),
        }
    }
}

/// How often, at most, requests signed with key ids this node does not know
/// make it ask the leader whether they are new (a read barrier).
const UNKNOWN_KEY_BARRIER_INTERVAL: Duration = Duration::from_millis(100);

/// The read barriers of requests with unknown key ids: one at a time, at
/// most one per [`UNKNOWN_KEY_BARRIER_INTERVAL`], shared by every request
/// that arrived before it started. Strangers cannot make a node send the
/// leader a round trip per request; a key created a moment ago through
/// another node is still found (a barrier that starts after the request
/// arrived sees every key created before it was sent).
#[derive(Default)]
struct UnknownKeys {
    /// When the last barrier started (held while one runs).
    last: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    barriers: std::sync::atomic::AtomicU64,
}

/// Bytes of each request's body that draw on no budget: what a request
/// may buffer before its signature is checked is then bounded by the
/// connection and stream limits alone.
pub const FREE_UNVERIFIED_BYTES: usize = 64 * 1024;

/// The bytes buffered for requests whose signature is not checked yet,
/// across every connection of both public APIs: past each request's first
/// [`FREE_UNVERIFIED_BYTES`], every byte holds a share of
/// `api.unverified_body_budget` until the signature is checked. A client
/// that knows a key id (ids are not secret) but not its secret can hold at
/// most that much memory, however many connections it opens.
pub struct UnverifiedBytes {
    permits: Arc<tokio::sync::Semaphore>,
    budget_kib: usize,
    peak_kib: std::sync::atomic::AtomicUsize,
}

/// A request's share of the budget, given back when dropped.
#[derive(Default)]
pub struct HeldBytes {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl HeldBytes {
    fn kib(&self) -> usize {
        self.permit.as_ref().map_or(0, |permit| permit.num_permits())
    }
}

/// Why a request could not hold the bytes it sent.
#[derive(Debug, PartialEq, Eq)]
pub enum BudgetRefusal {
    /// The request alone is larger than the whole budget.
    OverBudget,
    /// Other requests held the budget until the deadline.
    Busy,
}

impl UnverifiedBytes {
    pub fn new(budget_bytes: u64) -> UnverifiedBytes {
        let budget_kib = (budget_bytes / 1024).max(1) as usize;
        UnverifiedBytes {
            permits: Arc::new(tokio::sync::Semaphore::new(budget_kib)),
            budget_kib,
            peak_kib: Default::default(),
        }
    }

    /// Makes `held` cover `buffered` bytes of one request (its free part
    /// included), waiting for other requests to give theirs back until
    /// `deadline`.
    pub async fn hold(
        &self,
        held: &mut HeldBytes,
        buffered: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(), BudgetRefusal> {
        let needed_kib = buffered.saturating_sub(FREE_UNVERIFIED_BYTES).div_ceil(1024);
        if needed_kib <= held.kib() {
            return Ok(());
        }
        if needed_kib > self.budget_kib {
            return Err(BudgetRefusal::OverBudget);
        }
        let more = (needed_kib - held.kib()) as u32;
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_many_owned(more))
            .await
            .map_err(|_| BudgetRefusal::Busy)?
            .expect("the budget is never closed");
        match &mut held.permit {
            Some(existing) => existing.merge(permit),
            None => held.permit = Some(permit),
        }
        let in_use = self.budget_kib - self.permits.available_permits();
        self.peak_kib.fetch_max(in_use, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The most bytes held at once since the node started (KiB-rounded).
    pub fn peak_bytes(&self) -> u64 {
        self.peak_kib.load(std::sync::atomic::Ordering::Relaxed) as u64 * 1024
    }
}

/// Access keys: creating, listing, deleting, and finding a request's.
pub struct Access {
    node: Arc<Node>,
    unknown: UnknownKeys,
    /// What requests may buffer before their signature is checked.
    pub unverified: UnverifiedBytes,
}

impl Access {
    pub fn new(node: Arc<Node>) -> Access {
        let budget = node.config.api.unverified_body_budget.as_u64();
        Access {
            node,
            unknown: UnknownKeys::default(),
            unverified: UnverifiedBytes::new(budget),
        }
    }

    /// Read barriers made for unknown key ids since this node started.
    pub fn unknown_key_barriers(&self) -> u64 {
        self.unknown.barriers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until a read barrier that started after `arrived` has
    /// finished (see [`UnknownKeys`]).
    async fn barrier_after(&self, arrived: tokio::time::Instant) -> Result<(), NodeError> {
        let mut last = self.unknown.last.lock().await;
        if last.is_some_and(|started| started >= arrived) {
            return Ok(());
        }
        if let Some(started) = *last {
            tokio::time::sleep_until(started + UNKNOWN_KEY_BARRIER_INTERVAL).await;
        }
        let started = tokio::time::Instant::now();
        self.unknown.barriers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.node.read_barrier(Consistency::Linearizable).await?;
        *last = Some(started);
        Ok(())
    }

    /// Whether public requests must be signed.
    pub fn auth_required(&self) -> bool {
        self.node.config.api.auth == AuthMode::Sigv4
    }

    /// Creates a key with a random id and secret; the secret is returned once.
    pub async fn create_key(&self, description: &str) -> Result<(AccessKeyRecord, String), NodeError> {
        let secret = new_secret();
        let key = self.import_key(&new_access_key_id(), &secret, description).await?;
        Ok((key, secret))
    }

    async fn import_key(&self, id: &str, secret: &str, description: &str) -> Result<AccessKeyRecord, NodeError> {
        if secret.len() < sigv4::MIN_SECRET_LEN {
            return Err(NodeError::InvalidArgument(format!(
                "secret access keys must have at least {} characters",
                sigv4::MIN_SECRET_LEN
            )));
        }
        validate::access_key_id(id)?;
        validate::description(description)?;
        let key = AccessKeyRecord {
            id: id.to_string(),
            secret_digest: hex::encode(sigv4::secret_digest(secret)),
            description: description.to_string(),
            created_ms: crate::shared::now_ms(),
        };
        match self.node.cluster()?.propose(Command::CreateAccessKey(key)).await? {
            Response::AccessKey(key) => Ok(key),
            other => Err(NodeError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<AccessKeyRecord>, NodeError> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        Ok(state_machine::list_access_keys(&self.node.reader)?)
    }

    pub async fn delete_key(&self, id: &str) -> Result<(), NodeError> {
        self.node
            .cluster()?
            .propose(Command::DeleteAccessKey { id: id.to_string() })
            .await?;
        Ok(())
    }

    /// The key a request claims to be signed with. `None` when authentication
    /// is off. A key this node has not seen yet (created a moment ago through
    /// another node) is looked up again after a read barrier, shared with
    /// other such requests and at most one per 100 ms.
    pub async fn signing_key(&self, headers: &http::HeaderMap) -> Result<Option<SigningKey>, NodeError> {
        if !self.auth_required() {
            return Ok(None);
        }
        let header = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(SignatureError::Missing)?;
        let header = header
            .to_str()
            .map_err(|_| SignatureError::Incomplete("The Authorization header is not ASCII.".into()))?;
        let authorization = Authorization::parse(header)?;
        let arrived = tokio::time::Instant::now();
        let mut key = state_machine::get_access_key(&self.node.reader, &authorization.access_key_id)?;
        if key.is_none() {
            self.barrier_after(arrived).await?;
            key = state_machine::get_access_key(&self.node.reader, &authorization.access_key_id)?;
        }
        let key = key.ok_or(SignatureError::UnknownKey)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&key.secret_digest, &mut digest)
            .map_err(|_| NodeError::Internal(format!("access key {} has a corrupt digest", key.id)))?;
        Ok(Some(SigningKey { authorization, digest }))
    }

    /// On the first node: when the cluster has no access key at all (a new
    /// cluster, or every key deleted), creates one and writes it to the
    /// data dir's `credentials` file. Retries until it can, or shutdown.
    pub async fn run_first_key(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let path = self.node.config.data_dir.join(CREDENTIALS_FILE);
        let mut attempt = 0u64;
        loop {
            match self.first_access_key(&path).await {
                Ok(true) => {
                    tracing::info!(
                        file = %path.display(),
                        "created an access key (the cluster had none) and wrote it to the credentials file"
                    );
                    return;
                }
                Ok(false) => return,
                Err(e) => tracing::debug!(error = %e, "cannot check for access keys yet"),
            }
            attempt += 1;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200 * attempt.min(10))) => {}
            }
        }
    }

    async fn first_access_key(&self, path: &Path) -> Result<bool, NodeError> {
        if !self.list_keys().await?.is_empty() {
            return Ok(false);
        }
        let api = &self.node.config.api;
        let (id, secret) = match (&api.bootstrap_access_key_id, &api.bootstrap_secret_access_key) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone()),
            _ => (new_access_key_id(), new_secret()),
        };
        // The file first: a key that exists but was never written down would lock everyone out.
        write_credentials(path, &id, &secret).map_err(|e| NodeError::Internal(format!("{e:#}")))?;
        self.import_key(&id, &secret, "created by the first node").await?;
        Ok(true)
    }
}

/// Writes AWS's shared-credentials format, readable by the owner only.
fn write_credentials(path: &Path, id: &str, secret: &str) -> anyhow::Result<()> {
    let text = format!(
        "# A floe access key. Use it with `floe --credentials {0}`, or\n\
         # AWS_SHARED_CREDENTIALS_FILE={0} for boto3 and the aws CLI.\n\
         [default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n",
        path.display()
    );
    crate::secrets::write_private(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_past_their_free_part_share_the_budget() {
        let budget = UnverifiedBytes::new(1024 * 1024);
        let deadline = || tokio::time::Instant::now() + Duration::from_millis(50);
        let mut small = HeldBytes::default();
        budget
            .hold(&mut small, FREE_UNVERIFIED_BYTES, deadline())
            .await
            .unwrap();
        assert_eq!(small.kib(), 0, "the free part holds nothing");

        let mut first = HeldBytes::default();
        budget
            .hold(&mut first, FREE_UNVERIFIED_BYTES + 100 * 1024, deadline())
            .await
            .unwrap();
        budget
            .hold(&mut first, FREE_UNVERIFIED_BYTES + 700 * 1024, deadline())
            .await
            .unwrap();
        assert_eq!(first.kib(), 700);
        let mut second = HeldBytes::default();
        assert_eq!(
            budget
                .hold(&mut second, FREE_UNVERIFIED_BYTES + 400 * 1024, deadline())
                .await,
            Err(BudgetRefusal::Busy)
        );
        assert_eq!(
            budget
                .hold(&mut second, FREE_UNVERIFIED_BYTES + 2048 * 1024, deadline())
                .await,
            Err(BudgetRefusal::OverBudget)
        );
        drop(first);
        budget
            .hold(&mut second, FREE_UNVERIFIED_BYTES + 400 * 1024, deadline())
            .await
            .unwrap();
        assert_eq!(budget.peak_bytes(), 700 * 1024);
    }
}
