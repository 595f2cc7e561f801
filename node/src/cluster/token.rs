//! Join tokens: how a new node proves it may join, and how it knows the
//! cluster it reaches is the real one.
//!
//! A token reads `floe1.<id>.<secret>.<ca>`: `id` names it in the cluster,
//! which keeps only the secret's SHA-256 (in Raft, with its expiry and the
//! joins it still admits); `ca` is the SHA-256 of the cluster CA's
//! certificate, which the joining node checks before it trusts anything the
//! cluster says (as kubeadm's `--discovery-token-ca-cert-hash`). A token
//! chosen before the cluster exists (`FLOE_BOOTSTRAP_JOIN_TOKEN`) cannot
//! know the CA, and may leave `.<ca>` out; a node joining with it trusts the
//! first CA it is shown, and says so.
//!
//! The secret never travels: the joining node sends a proof, an HMAC of its
//! certificate request keyed by the secret's digest, so an eavesdropper on
//! the (public, plain) join call learns nothing it can use for another key.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "floe1";

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    secret: String,
    /// Hex SHA-256 of the cluster CA's certificate, when known.
    pub ca_fingerprint: Option<String>,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken({})", self.id)
    }
}

fn is_hex(text: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&text.len()) && text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

impl JoinToken {
    /// A new random token for the cluster whose CA has `ca_fingerprint`.
    pub fn generate(ca_fingerprint: &str) -> JoinToken {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        JoinToken {
            id: hex::encode(&bytes[..4]),
            secret: hex::encode(&bytes[4..]),
            ca_fingerprint: Some(ca_fingerprint.to_string()),
        }
    }

    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let bad = || {
            "not a join token: expected floe1.<id>.<secret>.<ca sha256> \
             (as `floe cluster token create` prints it)"
                .to_string()
        };
        let mut parts = text.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(bad());
        }
        let (Some(id), Some(secret)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        let ca_fingerprint = parts.next().map(str::to_string);
        if parts.next().is_some()
            || !is_hex(id, 8..=32)
            || !is_hex(secret, 32..=128)
            || ca_fingerprint.as_deref().is_some_and(|ca| !is_hex(ca, 64..=64))
        {
            return Err(bad());
        }
        Ok(JoinToken {
            id: id.to_string(),
            secret: secret.to_string(),
            ca_fingerprint,
        })
    }

    /// The same token, naming the cluster's CA.
    pub fn with_ca(mut self, ca_fingerprint: &str) -> JoinToken {
        self.ca_fingerprint = Some(ca_fingerprint.to_string());
        self
    }

    /// What the cluster keeps: hex SHA-256 of the secret.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// The proof that goes with a join: HMAC-SHA256 of `request` keyed by
    /// the secret's digest.
    pub fn proof(&self, request: &[u8]) -> Vec<u8> {
        proof_with(&Sha256::digest(self.secret.as_bytes()), request)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.id, self.secret)?;
        if let Some(ca) = &self.ca_fingerprint {
            write!(f, ".{ca}")?;
        }
        Ok(())
    }
}

fn proof_with(key: &[u8], request: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(request);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `proof` proves the secret whose digest (hex) the cluster keeps,
/// for `request`. Constant-time.
pub fn verify_proof(secret_digest: &str, request: &[u8], proof: &[u8]) -> bool {
    let Ok(key) = hex::decode(secret_digest) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(request);
    mac.verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_proves_only_its_request() {
        let token = JoinToken::generate(&"ab".repeat(32));
        let text = token.to_string();
        assert!(text.starts_with("floe1."), "{text}");
        let parsed = JoinToken::parse(&text).unwrap();
        assert_eq!(parsed, token);
        let proof = parsed.proof(b"request");
        assert!(verify_proof(&token.digest(), b"request", &proof));
        assert!(!verify_proof(&token.digest(), b"another request", &proof));
        let other = JoinToken::generate(&"ab".repeat(32));
        assert!(!verify_proof(&other.digest(), b"request", &proof));
        assert!(!verify_proof("not hex", b"request", &proof));
        // Without the CA part (chosen before the cluster existed).
        let bare = format!("floe1.{}.{}", token.id, token.secret);
        assert_eq!(JoinToken::parse(&bare).unwrap().ca_fingerprint, None);
        // The secret stays out of debug output.
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = JoinToken::generate(&"ab".repeat(32)).to_string();
        for text in [
            "",
            "floe1",
            "floe2.01234567.0123456789abcdef0123456789abcdef",
            "floe1.0123.0123456789abcdef0123456789abcdef",
            "floe1.01234567.short",
            "floe1.01234567.0123456789ABCDEF0123456789ABCDEF",
            "floe1.01234567.0123456789abcdef0123456789abcdef.notafingerprint",
            &format!("{good}.extra"),
        ] {
            assert!(JoinToken::parse(text).is_err(), "{text:?} parsed");
        }
    }
}
