//! AWS Signature Version 4, as floe uses it: botocore and the aws CLI sign
//! Lambda REST requests with it, and the SDK signs gRPC calls the same way
//! (service name [`GRPC_SERVICE`]). Both sides live here so they cannot drift.
//!
//! Nodes never store a secret access key. They keep [`secret_digest`] —
//! SHA-256 of `"AWS4" + secret` — which is what HMAC-SHA256 uses in place of
//! any key longer than its 64-byte block (RFC 2104), so the first step of the
//! signing-key chain gives the same result from the digest as from the
//! secret. That needs secrets of at least [`MIN_SECRET_LEN`] characters,
//! which is why floe's are 64 long. The digest can still sign requests: it is
//! a credential, not a one-way check, and is kept like one.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The signing name of Lambda's REST API (what botocore signs with).
pub const REST_SERVICE: &str = "lambda";
/// The signing name of floe's gRPC API.
pub const GRPC_SERVICE: &str = "floe";
/// The signing region the SDK uses; nodes accept any region in a scope.
pub const DEFAULT_REGION: &str = "local";
/// A signature is accepted this long before and after its time (AWS: 15 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// `"AWS4" + secret` must exceed HMAC-SHA256's 64-byte block.
pub const MIN_SECRET_LEN: usize = 61;
/// The payload hash a signer may send instead of hashing the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

type HmacSha256 = Hmac<Sha256>;

/// An access key id and its secret, as a client holds them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// What a node stores for a secret: SHA-256 of `"AWS4" + secret`.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"AWS4")
        .chain_update(secret.as_bytes())
        .finalize()
        .into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The parts of a request that a signature covers.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as sent on the wire (still percent-encoded).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub headers: &'a http::HeaderMap,
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case header names, in the order signed.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Why a request's signature was refused. The messages are AWS's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
    #[error("{0}")]
    Expired(String),
}

impl SignatureError {
    /// AWS's error code for this refusal (the `x-amzn-ErrorType`).
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Missing => "MissingAuthenticationTokenException",
            SignatureError::Incomplete(_) => "IncompleteSignatureException",
            SignatureError::UnknownKey => "UnrecognizedClientException",
            SignatureError::Mismatch | SignatureError::Expired(_) => "InvalidSignatureException",
        }
    }
}

impl Authorization {
    pub fn parse(header: &str) -> Result<Authorization, SignatureError> {
        let incomplete = |what: &str| SignatureError::Incomplete(format!("Authorization header requires {what}."));
        let rest = header
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| {
                SignatureError::Incomplete(format!("Authorization header must use the {ALGORITHM} algorithm."))
            })?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| incomplete("name=value pairs"))?;
            match name {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
        let credential = credential.ok_or_else(|| incomplete("'Credential' parameter"))?;
        let signed_headers = signed_headers.ok_or_else(|| incomplete("'SignedHeaders' parameter"))?;
        let signature = signature.ok_or_else(|| incomplete("'Signature' parameter"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err(SignatureError::Incomplete(format!(
                "Credential should be scoped to a valid region, service and aws4_request terminator: {credential}"
            )));
        };
        if access_key_id.is_empty() || date.len() != 8 || region.is_empty() {
            return Err(SignatureError::Incomplete(format!(
                "Malformed credential: {credential}"
            )));
        }
        Ok(Authorization {
            access_key_id: access_key_id.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers: signed_headers.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature.to_ascii_lowercase(),
        })
    }

    fn scope(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

/// AWS's URI encoding: everything but unreserved characters (and `/` when
/// `keep_slash`) as upper-case `%XX`.
fn uri_encode(input: &[u8], keep_slash: bool, out: &mut String) {
    for &byte in input {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&input[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The canonical query string: each name and value decoded, re-encoded
/// strictly, and sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (mut n, mut v) = (String::new(), String::new());
            uri_encode(&percent_decode(name), false, &mut n);
            uri_encode(&percent_decode(value), false, &mut v);
            (n, v)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's values, trimmed, inner runs of spaces collapsed, joined by `,`.
fn canonical_header_value(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// SigV4's canonical request over `signed_headers` (lower-case, sorted).
pub fn canonical_request(parts: &RequestParts<'_>, signed_headers: &[String]) -> String {
    let mut path = String::new();
    if parts.path.is_empty() {
        path.push('/');
    } else {
        // The path as sent is encoded once; SigV4 (outside S3) encodes it again.
        uri_encode(parts.path.as_bytes(), true, &mut path);
    }
    let mut canonical = format!("{}\n{path}\n{}\n", parts.method, canonical_query(parts.query));
    for name in signed_headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&canonical_header_value(parts.headers, name));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed_headers.join(";"));
    canonical.push('\n');
    canonical.push_str(parts.payload_hash);
    canonical
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    mac
}

/// The final HMAC, keyed by the signing key derived from `first_key`
/// (`"AWS4" + secret`, or its digest: HMAC makes them equal).
fn signature_mac(first_key: &[u8], authorization: &Authorization, to_sign: &str) -> HmacSha256 {
    let date_key = hmac(first_key, &authorization.date).finalize().into_bytes();
    let region_key = hmac(&date_key, &authorization.region).finalize().into_bytes();
    let service_key = hmac(&region_key, &authorization.service).finalize().into_bytes();
    let signing_key = hmac(&service_key, "aws4_request").finalize().into_bytes();
    hmac(&signing_key, to_sign)
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &text[0..4],
        &text[4..6],
        &text[6..8],
        &text[9..11],
        &text[11..13],
        &text[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// Signs a request in place: sets `x-amz-date` and `authorization`, signing
/// `host` (when present) and every `x-amz-*` header.
pub fn sign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &mut http::HeaderMap,
    payload_hash: &str,
    now: SystemTime,
) {
    let date = amz_date(now);
    headers.insert("x-amz-date", http::HeaderValue::from_str(&date).expect("ASCII date"));
    let mut signed_headers: Vec<String> = headers
        .keys()
        .map(|name| name.as_str().to_string())
        .filter(|name| name == "host" || name.starts_with("x-amz-"))
        .collect();
    signed_headers.sort();
    signed_headers.dedup();
    let authorization = Authorization {
        access_key_id: credentials.access_key_id.clone(),
        date: date[..8].to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: String::new(),
    };
    let parts = RequestParts {
        method,
        path,
        query,
        headers,
        payload_hash,
    };
    let to_sign = string_to_sign(
        &date,
        &authorization.scope(),
        &canonical_request(&parts, &authorization.signed_headers),
    );
    let first_key = format!("AWS4{}", credentials.secret_access_key);
    let signature = hex::encode(
        signature_mac(first_key.as_bytes(), &authorization, &to_sign)
            .finalize()
            .into_bytes(),
    );
    let header = format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={signature}",
        credentials.access_key_id,
        authorization.scope(),
        authorization.signed_headers.join(";"),
    );
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&header).expect("ASCII authorization"),
    );
}

/// Checks a parsed signature against the stored digest of its key's secret.
/// `service` is the signing name this API expects.
pub fn verify(
    authorization: &Authorization,
    digest: &[u8; 32],
    service: &str,
    parts: &RequestParts<'_>,
    now: SystemTime,
) -> Result<(), SignatureError> {
    if authorization.service != service {
        return Err(SignatureError::Incomplete(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    // Whatever changes a request's meaning is signed, so a captured request
    // cannot be replayed with a header added or changed: the host (HTTP/1.1
    // requests carry one; gRPC's `:authority` is not a header) and every
    // `x-amz-*` header (invocation type, log type, client context, date…).
    for name in parts.headers.keys() {
        let name = name.as_str();
        if (name == "host" || name.starts_with("x-amz-")) && !authorization.signed_headers.iter().any(|h| h == name) {
            return Err(SignatureError::Incomplete(format!(
                "'{name}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    if parts.payload_hash == UNSIGNED_PAYLOAD {
        return Err(SignatureError::Incomplete(
            "UNSIGNED-PAYLOAD is not accepted: sign the request's body (its SHA-256).".into(),
        ));
    }
    if !authorization.signed_headers.iter().any(|h| h == "x-amz-date") && parts.headers.get("date").is_none() {
        return Err(SignatureError::Incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into(),
        ));
    }
    let date_text = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SignatureError::Incomplete("The request must carry an 'X-Amz-Date' header.".into()))?;
    let time = parse_amz_date(date_text)
        .ok_or_else(|| SignatureError::Incomplete(format!("Invalid X-Amz-Date: {date_text}")))?;
    if !date_text.starts_with(&authorization.date) {
        return Err(SignatureError::Mismatch);
    }
    if time + MAX_SKEW < now {
        return Err(SignatureError::Expired(format!(
            "Signature expired: {date_text} is now earlier than {} ({} - 15 min.)",
            amz_date(now - MAX_SKEW),
            amz_date(now)
        )));
    }
    if time > now + MAX_SKEW {
        return Err(SignatureError::Expired(format!(
            "Signature not yet current: {date_text} is still later than {} ({} + 15 min.)",
            amz_date(now + MAX_SKEW),
            amz_date(now)
        )));
    }
    let expected = hex::decode(&authorization.signature).map_err(|_| SignatureError::Mismatch)?;
    let to_sign = string_to_sign(
        date_text,
        &authorization.scope(),
        &canonical_request(parts, &authorization.signed_headers),
    );
    // Constant-time comparison.
    signature_mac(digest, authorization, &to_sign)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_map(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    /// AWS's published walk-through ("Create a signed AWS API request", IAM
    /// ListUsers), computed with the secret itself.
    #[test]
    fn matches_the_aws_documentation_example() {
        let headers = header_map(&[
            ("host", "iam.amazonaws.com"),
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("x-amz-date", "20150830T123600Z"),
        ]);
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            payload_hash: &sha256_hex(b""),
        };
        let signed: Vec<String> = ["content-type", "host", "x-amz-date"].map(String::from).to_vec();
        let canonical = canonical_request(&parts, &signed);
        assert_eq!(
            sha256_hex(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let authorization = Authorization {
            access_key_id: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "iam".into(),
            signed_headers: signed,
            signature: "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7".into(),
        };
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let to_sign = string_to_sign("20150830T123600Z", &authorization.scope(), &canonical);
        let mac = signature_mac(format!("AWS4{secret}").as_bytes(), &authorization, &to_sign);
        assert_eq!(hex::encode(mac.finalize().into_bytes()), authorization.signature);
    }

    fn long_credentials() -> Credentials {
        Credentials {
            access_key_id: "FLOEEXAMPLEKEY01".into(),
            secret_access_key: "s".repeat(64),
        }
    }

    fn signed_request(now: SystemTime) -> http::HeaderMap {
        let mut headers = header_map(&[("host", "127.0.0.1:7401"), ("x-amz-invocation-type", "Event")]);
        sign(
            &long_credentials(),
            "local",
            REST_SERVICE,
            "POST",
            "/2015-03-31/functions/hello%3A1/invocations",
            "Qualifier=%24LATEST",
            &mut headers,
            &sha256_hex(b"{}"),
            now,
        );
        headers
    }

    fn check(headers: &http::HeaderMap, body: &[u8], now: SystemTime) -> Result<(), SignatureError> {
        let authorization = Authorization::parse(headers["authorization"].to_str().unwrap())?;
        let payload_hash = sha256_hex(body);
        let parts = RequestParts {
            method: "POST",
            path: "/2015-03-31/functions/hello%3A1/invocations",
            query: "Qualifier=%24LATEST",
            headers,
            payload_hash: &payload_hash,
        };
        verify(
            &authorization,
            &secret_digest(&long_credentials().secret_access_key),
            REST_SERVICE,
            &parts,
            now,
        )
    }

    #[test]
    fn a_digest_verifies_what_the_secret_signed() {
        let now = SystemTime::now();
        let headers = signed_request(now);
        assert_eq!(check(&headers, b"{}", now), Ok(()));
    }

    #[test]
    fn tampering_expiry_and_wrong_keys_are_refused() {
        let now = SystemTime::now();
        let headers = signed_request(now);
        assert_eq!(check(&headers, b"{\"x\":1}", now), Err(SignatureError::Mismatch));
        let mut changed = headers.clone();
        changed.insert("x-amz-invocation-type", "RequestResponse".parse().unwrap());
        assert_eq!(check(&changed, b"{}", now), Err(SignatureError::Mismatch));
        assert!(matches!(
            check(&headers, b"{}", now + Duration::from_secs(16 * 60)),
            Err(SignatureError::Expired(m)) if m.starts_with("Signature expired")
        ));
        assert!(matches!(
            check(&headers, b"{}", now - Duration::from_secs(16 * 60)),
            Err(SignatureError::Expired(_))
        ));
        let wrong = Credentials {
            secret_access_key: "t".repeat(64),
            ..long_credentials()
        };
        let mut other = header_map(&[("host", "127.0.0.1:7401")]);
        sign(
            &wrong,
            "local",
            REST_SERVICE,
            "POST",
            "/",
            "",
            &mut other,
            &sha256_hex(b""),
            now,
        );
        let authorization = Authorization::parse(other["authorization"].to_str().unwrap()).unwrap();
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &other,
            payload_hash: &sha256_hex(b""),
        };
        assert_eq!(
            verify(
                &authorization,
                &secret_digest(&long_credentials().secret_access_key),
                REST_SERVICE,
                &parts,
                now
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(
                &authorization,
                &secret_digest(&wrong.secret_access_key),
                GRPC_SERVICE,
                &parts,
                now
            ),
            Err(SignatureError::Incomplete(_))
        ));
    }

    /// A captured request replayed with a header added that changes its
    /// meaning, or with an unsigned body, is refused before any HMAC.
    #[test]
    fn headers_that_change_meaning_and_the_body_must_be_signed() {
        let now = SystemTime::now();
        let headers = signed_request(now);
        for (name, value) in [("x-amz-log-type", "Tail"), ("x-amz-client-context", "e30=")] {
            let mut added = headers.clone();
            added.insert(http::HeaderName::from_static(name), value.parse().unwrap());
            assert!(
                matches!(check(&added, b"{}", now), Err(SignatureError::Incomplete(m)) if m.contains(name)),
                "{name}"
            );
        }
        // Signed without the host: refused even though the HMAC would match.
        let mut hostless = header_map(&[("x-amz-invocation-type", "Event")]);
        sign(
            &long_credentials(),
            "local",
            REST_SERVICE,
            "POST",
            "/2015-03-31/functions/hello%3A1/invocations",
            "Qualifier=%24LATEST",
            &mut hostless,
            &sha256_hex(b"{}"),
            now,
        );
        assert_eq!(check(&hostless, b"{}", now), Ok(()), "no host header at all (gRPC)");
        hostless.insert("host", "127.0.0.1:7401".parse().unwrap());
        assert!(matches!(check(&hostless, b"{}", now), Err(SignatureError::Incomplete(m)) if m.contains("'host'")));

        let authorization = Authorization::parse(headers["authorization"].to_str().unwrap()).unwrap();
        let parts = RequestParts {
            method: "POST",
            path: "/2015-03-31/functions/hello%3A1/invocations",
            query: "Qualifier=%24LATEST",
            headers: &headers,
            payload_hash: UNSIGNED_PAYLOAD,
        };
        let digest = secret_digest(&long_credentials().secret_access_key);
        assert!(matches!(
            verify(&authorization, &digest, REST_SERVICE, &parts, now),
            Err(SignatureError::Incomplete(m)) if m.contains("UNSIGNED-PAYLOAD")
        ));
    }

    #[test]
    fn malformed_authorization_headers_are_incomplete() {
        for header in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=a/b/c",
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 Credential=KEY/20261201/local/lambda/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=KEY/2026/local/lambda/aws4_request, SignedHeaders=host, Signature=00",
        ] {
            assert!(
                matches!(Authorization::parse(header), Err(SignatureError::Incomplete(_))),
                "{header}"
            );
        }
    }

    #[test]
    fn queries_are_decoded_reencoded_and_sorted() {
        assert_eq!(canonical_query("b=2&a=%7e&c"), "a=~&b=2&c=");
        assert_eq!(canonical_query("Qualifier=$LATEST"), "Qualifier=%24LATEST");
        assert_eq!(canonical_query("Marker=a%2Bb"), "Marker=a%2Bb");
        assert_eq!(canonical_query("x=%zz"), "x=%25zz");
    }
}
