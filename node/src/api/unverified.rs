//! Reading a request's body before its signature is checked (both public
//! APIs): bounded in size, in time, and in the bytes all such requests may
//! hold together (`service::auth::UnverifiedBytes`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::service::auth::{BudgetRefusal, HeldBytes, UnverifiedBytes};

/// Why a body could not be read.
#[derive(Debug)]
pub enum ReadRefusal {
    /// Past the operation's limit.
    TooLarge,
    /// The rest of the body did not arrive in time.
    TimedOut,
    /// Other requests' unverified bodies held the node's budget until the deadline.
    Busy,
    /// Larger than the node's whole budget for unverified bodies.
    OverBudget,
    /// The connection failed mid-body.
    Broken(String),
}

/// Reads `body` whole: at most `limit` bytes, within `timeout`, each byte
/// past the free part holding its share of `budget` until the returned
/// [`HeldBytes`] is dropped (once the signature is checked).
pub async fn read_body<B>(
    budget: &UnverifiedBytes,
    body: B,
    limit: usize,
    timeout: Duration,
) -> Result<(Bytes, HeldBytes), ReadRefusal>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = std::pin::pin!(body);
    let mut held = HeldBytes::default();
    let mut chunks = Vec::new();
    let mut buffered = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ReadRefusal::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(ReadRefusal::Broken(error.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        buffered += data.len();
        if buffered > limit {
            return Err(ReadRefusal::TooLarge);
        }
        budget
            .hold(&mut held, buffered, deadline)
            .await
            .map_err(|refusal| match refusal {
                BudgetRefusal::Busy => ReadRefusal::Busy,
                BudgetRefusal::OverBudget => ReadRefusal::OverBudget,
            })?;
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(buffered);
            for chunk in chunks {
                all.extend_from_slice(&chunk);
            }
            all.freeze()
        }
    };
    Ok((bytes, held))
}
