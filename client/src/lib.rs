//! floe's Rust SDK.
//!
//! A [`Client`] takes several endpoints, learns which one leads, sends its
//! calls there, and moves on to another endpoint when one fails in a way that
//! proves nothing was done (connection refused, no leader yet). Errors whose
//! outcome is unknown are returned, not retried.
//!
//! ```no_run
//! # async fn example() -> Result<(), floe_client::Error> {
//! let client = floe_client::Client::connect(["127.0.0.1:7400"]).await?;
//! let result = client.invoke("hello", "", br#"{"name":"floe"}"#.to_vec()).await?;
//! println!("{}", String::from_utf8_lossy(&result.payload));
//! # Ok(()) }
//! ```

pub mod auth;
pub mod package;

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use floe_proto::v1 as proto;
use floe_proto::v1::access_keys_client::AccessKeysClient;
use floe_proto::v1::cluster_client::ClusterClient;
use floe_proto::v1::functions_client::FunctionsClient;
use floe_proto::MAX_MESSAGE_BYTES;
use tonic::transport::{Channel, Endpoint};

pub use auth::Credentials;
use auth::Signed;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster answered with an error (see `tonic::Code` for its kind).
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    #[error("invalid endpoint {endpoint:?}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("no endpoints given")]
    NoEndpoints,
    #[error(transparent)]
    Credentials(#[from] auth::CredentialsError),
}

impl Error {
    /// The gRPC code, when the cluster answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// Why an invocation was throttled (Lambda's 429 `Reason`:
    /// `ConcurrentInvocationLimitExceeded`,
    /// `ReservedFunctionConcurrentInvocationLimitExceeded`, or
    /// `InsufficientCapacity` when no node has room).
    pub fn throttle_reason(&self) -> Option<&str> {
        match self {
            Error::Status(status) => status.metadata().get("floe-reason")?.to_str().ok(),
            _ => None,
        }
    }
}

/// How long the client keeps retrying a call that failed without effect.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// A connection to a floe cluster.
pub struct Client {
    endpoints: Vec<(String, Signed)>,
    /// Index into `endpoints` of the node calls go to first (the leader, when known).
    preferred: Mutex<usize>,
    retry_for: Duration,
}

/// A channel to `address` (`host:port`, or a URL): over TLS, checked
/// against the CA certificate `ca` (PEM), when given.
fn channel(address: &str, ca: Option<&[u8]>) -> Result<Channel, Error> {
    let url = match (address.contains("://"), ca) {
        (true, _) => address.to_string(),
        (false, Some(_)) => format!("https://{address}"),
        (false, None) => format!("http://{address}"),
    };
    let invalid = |e: tonic::transport::Error| Error::Endpoint {
        endpoint: address.to_string(),
        message: e.to_string(),
    };
    let mut endpoint = Endpoint::from_shared(url).map_err(invalid)?;
    if let Some(ca) = ca {
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls).map_err(invalid)?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// True when the call can be sent again: nothing was done.
fn retriable(status: &tonic::Status) -> bool {
    match status.code() {
        // The connection failed, or the node had no leader and wrote nothing.
        tonic::Code::Unavailable => true,
        // hyper's "canceled": the request was still queued on a connection
        // that closed (a node shutting down), so it never left. A node that
        // cancels a call it received says more ("h2 protocol error: …").
        tonic::Code::Cancelled => status.message() == "operation was canceled",
        // A node shutting down said GOAWAY before it read the call (tonic
        // calls it `Internal`): it never ran.
        _ => floe_proto::transport::not_processed(status),
    }
}

impl Client {
    /// Connects lazily to `endpoints` (`host:port`) with the credentials
    /// [`auth::default_credentials`] finds, then asks which node leads.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::connect_with(endpoints, auth::default_credentials()?).await
    }

    /// Connects with these credentials (`None`: unsigned calls, which only a
    /// node with authentication off accepts).
    pub async fn connect_with<I, S>(endpoints: I, credentials: Option<Credentials>) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::connect_tls(endpoints, credentials, None).await
    }

    /// Connects over TLS to nodes whose public certificate `ca` (the CA's
    /// certificate, PEM) signed (`None`: plain HTTP/2).
    pub async fn connect_tls<I, S>(
        endpoints: I,
        credentials: Option<Credentials>,
        ca: Option<&[u8]>,
    ) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let credentials = credentials.map(std::sync::Arc::new);
        let endpoints = endpoints
            .into_iter()
            .map(|address| {
                let address = address.into();
                let channel = Signed::new(channel(&address, ca)?, credentials.clone());
                Ok((address, channel))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let client = Client {
            endpoints,
            preferred: Mutex::new(0),
            retry_for: RETRY_FOR,
        };
        client.find_leader().await;
        Ok(client)
    }

    /// Sets how long calls are retried when they fail without effect.
    pub fn with_retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// Points the client at the leader, if an endpoint knows it.
    pub async fn find_leader(&self) {
        for (index, (_, channel)) in self.endpoints.iter().enumerate() {
            let mut cluster = ClusterClient::new(channel.clone());
            let Ok(status) = cluster.status(proto::ClusterStatusRequest {}).await else {
                continue;
            };
            let leader = status.into_inner().leader_address;
            let position = self.endpoints.iter().position(|(address, _)| *address == leader);
            *self.preferred.lock().expect("preferred lock") = position.unwrap_or(index);
            return;
        }
    }

    /// Runs `call` against the preferred endpoint, then the others, until it
    /// succeeds, fails for good, or `retry_for` has passed.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(Signed) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut attempt = 0usize;
        loop {
            let index = (*self.preferred.lock().expect("preferred lock") + attempt) % self.endpoints.len();
            match call(self.endpoints[index].1.clone()).await {
                Ok(response) => {
                    *self.preferred.lock().expect("preferred lock") = index;
                    return Ok(response.into_inner());
                }
                Err(status) if retriable(&status) && started.elapsed() < self.retry_for => {
                    attempt += 1;
                    if attempt.is_multiple_of(self.endpoints.len()) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(status) => return Err(Error::Status(status)),
            }
        }
    }

    fn functions(channel: Signed) -> FunctionsClient<Signed> {
        FunctionsClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub async fn create_function(
        &self,
        name: &str,
        config: proto::FunctionConfig,
        zip_file: Vec<u8>,
    ) -> Result<proto::FunctionInfo, Error> {
        let request = proto::CreateFunctionRequest {
            name: name.to_string(),
            config: Some(config),
            zip_file,
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).create_function(request).await }
        })
        .await
    }

    pub async fn get_function(
        &self,
        name: &str,
        consistency: proto::ReadConsistency,
    ) -> Result<proto::FunctionInfo, Error> {
        let request = proto::GetFunctionRequest {
            name: name.to_string(),
            consistency: consistency as i32,
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).get_function(request).await }
        })
        .await
    }

    pub async fn list_functions(&self, consistency: proto::ReadConsistency) -> Result<Vec<proto::FunctionInfo>, Error> {
        let request = proto::ListFunctionsRequest {
            consistency: consistency as i32,
        };
        let reply = self
            .call(|c| async move { Self::functions(c).list_functions(request).await })
            .await?;
        Ok(reply.functions)
    }

    pub async fn update_function(&self, request: proto::UpdateFunctionRequest) -> Result<proto::FunctionInfo, Error> {
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).update_function(request).await }
        })
        .await
    }

    pub async fn delete_function(&self, name: &str) -> Result<(), Error> {
        let request = proto::DeleteFunctionRequest { name: name.to_string() };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).delete_function(request).await }
        })
        .await?;
        Ok(())
    }

    pub async fn put_function_concurrency(
        &self,
        name: &str,
        reserved: Option<u32>,
    ) -> Result<proto::FunctionInfo, Error> {
        let request = proto::PutFunctionConcurrencyRequest {
            name: name.to_string(),
            reserved_concurrency: reserved,
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).put_function_concurrency(request).await }
        })
        .await
    }

    pub async fn publish_version(&self, name: &str, description: &str) -> Result<proto::VersionInfo, Error> {
        let request = proto::PublishVersionRequest {
            name: name.to_string(),
            description: description.to_string(),
            expected_revision_id: None,
            expected_code_sha256: None,
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).publish_version(request).await }
        })
        .await
    }

    pub async fn list_versions(&self, name: &str) -> Result<Vec<proto::VersionInfo>, Error> {
        let request = proto::ListVersionsRequest {
            name: name.to_string(),
            consistency: 0,
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { Self::functions(c).list_versions(request).await }
            })
            .await?;
        Ok(reply.versions)
    }

    pub async fn create_alias(&self, request: proto::CreateAliasRequest) -> Result<proto::AliasInfo, Error> {
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).create_alias(request).await }
        })
        .await
    }

    pub async fn update_alias(&self, request: proto::UpdateAliasRequest) -> Result<proto::AliasInfo, Error> {
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).update_alias(request).await }
        })
        .await
    }

    pub async fn get_alias(&self, function: &str, name: &str) -> Result<proto::AliasInfo, Error> {
        let request = proto::GetAliasRequest {
            function: function.to_string(),
            name: name.to_string(),
            consistency: 0,
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).get_alias(request).await }
        })
        .await
    }

    pub async fn list_aliases(&self, function: &str) -> Result<Vec<proto::AliasInfo>, Error> {
        let request = proto::ListAliasesRequest {
            function: function.to_string(),
            consistency: 0,
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { Self::functions(c).list_aliases(request).await }
            })
            .await?;
        Ok(reply.aliases)
    }

    pub async fn delete_alias(&self, function: &str, name: &str) -> Result<(), Error> {
        let request = proto::DeleteAliasRequest {
            function: function.to_string(),
            name: name.to_string(),
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).delete_alias(request).await }
        })
        .await?;
        Ok(())
    }

    /// Invokes `function` at `qualifier` ("" for `$LATEST`) with a JSON payload.
    pub async fn invoke(
        &self,
        function: &str,
        qualifier: &str,
        payload: Vec<u8>,
    ) -> Result<proto::InvokeResponse, Error> {
        self.invoke_with(proto::InvokeRequest {
            function: function.to_string(),
            qualifier: qualifier.to_string(),
            payload,
            ..Default::default()
        })
        .await
    }

    /// Invokes with every option of the request (log tail, client context).
    pub async fn invoke_with(&self, request: proto::InvokeRequest) -> Result<proto::InvokeResponse, Error> {
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).invoke(request).await }
        })
        .await
    }

    /// Invocation logs of `function` from every node, newer than `since_ms`, oldest first.
    pub async fn get_logs(&self, function: &str, since_ms: i64, limit: u32) -> Result<Vec<proto::LogRecord>, Error> {
        let request = proto::GetLogsRequest {
            function: function.to_string(),
            since_ms,
            limit,
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { Self::functions(c).get_logs(request).await }
            })
            .await?;
        Ok(reply.records)
    }

    pub async fn cluster_status(&self) -> Result<proto::ClusterStatus, Error> {
        self.call(|c| async move { ClusterClient::new(c).status(proto::ClusterStatusRequest {}).await })
            .await
    }

    /// Asks the cluster to add the waiting node whose peer address (its `cluster.peer_listen`) is `address`; returns its id.
    /// A join token that admits `uses` nodes (0: any number) for `ttl`.
    pub async fn create_join_token(
        &self,
        ttl: std::time::Duration,
        uses: u32,
    ) -> Result<proto::CreateJoinTokenResponse, Error> {
        let request = proto::CreateJoinTokenRequest {
            ttl_seconds: ttl.as_secs().max(1),
            uses,
        };
        self.call(|c| async move { ClusterClient::new(c).create_join_token(request).await })
            .await
    }

    pub async fn add_node(&self, address: &str) -> Result<u64, Error> {
        let request = proto::AddNodeRequest {
            address: address.to_string(),
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { ClusterClient::new(c).add_node(request).await }
            })
            .await?;
        Ok(reply.node_id)
    }

    pub async fn remove_node(&self, node_id: u64) -> Result<(), Error> {
        self.call(|c| async move {
            ClusterClient::new(c)
                .remove_node(proto::RemoveNodeRequest { node_id })
                .await
        })
        .await?;
        Ok(())
    }

    pub async fn set_region_quota(&self, region: &str, concurrency: u32) -> Result<(), Error> {
        let request = proto::SetRegionQuotaRequest {
            region: region.to_string(),
            concurrency,
        };
        self.call(|c| {
            let request = request.clone();
            async move { ClusterClient::new(c).set_region_quota(request).await }
        })
        .await?;
        Ok(())
    }

    pub async fn put_event_invoke_config(
        &self,
        request: proto::PutEventInvokeConfigRequest,
    ) -> Result<proto::EventInvokeConfig, Error> {
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).put_event_invoke_config(request).await }
        })
        .await
    }

    pub async fn get_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<proto::EventInvokeConfig, Error> {
        let request = proto::GetEventInvokeConfigRequest {
            function: function.to_string(),
            qualifier: qualifier.to_string(),
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).get_event_invoke_config(request).await }
        })
        .await
    }

    pub async fn delete_event_invoke_config(&self, function: &str, qualifier: &str) -> Result<(), Error> {
        let request = proto::GetEventInvokeConfigRequest {
            function: function.to_string(),
            qualifier: qualifier.to_string(),
        };
        self.call(|c| {
            let request = request.clone();
            async move { Self::functions(c).delete_event_invoke_config(request).await }
        })
        .await?;
        Ok(())
    }

    /// Events of `function` that failed for good and went to floe's failed-event store.
    pub async fn list_failed_events(&self, function: &str) -> Result<Vec<proto::FailedEventInfo>, Error> {
        let request = proto::ListFailedEventsRequest {
            function: function.to_string(),
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { Self::functions(c).list_failed_events(request).await }
            })
            .await?;
        Ok(reply.events)
    }

    /// A function's events still queued, soonest due first.
    pub async fn list_queued_events(&self, function: &str) -> Result<Vec<proto::QueuedEventInfo>, Error> {
        let request = proto::ListQueuedEventsRequest {
            function: function.to_string(),
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { Self::functions(c).list_queued_events(request).await }
            })
            .await?;
        Ok(reply.events)
    }

    /// Queues failed events again (all of the function's when `ids` is empty); returns how many.
    pub async fn replay_failed_events(&self, function: &str, ids: Vec<String>) -> Result<u64, Error> {
        let request = proto::FailedEventsRequest {
            function: function.to_string(),
            ids,
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { Self::functions(c).replay_failed_events(request).await }
            })
            .await?;
        Ok(reply.count)
    }

    /// Deletes failed events (all of the function's when `ids` is empty); returns how many.
    pub async fn delete_failed_events(&self, function: &str, ids: Vec<String>) -> Result<u64, Error> {
        let request = proto::FailedEventsRequest {
            function: function.to_string(),
            ids,
        };
        let reply = self
            .call(|c| {
                let request = request.clone();
                async move { Self::functions(c).delete_failed_events(request).await }
            })
            .await?;
        Ok(reply.count)
    }
}

impl Client {
    /// Creates an access key; the secret is in the answer and nowhere else.
    pub async fn create_access_key(&self, description: &str) -> Result<proto::CreateAccessKeyResponse, Error> {
        let request = proto::CreateAccessKeyRequest {
            description: description.to_string(),
        };
        self.call(|c| {
            let request = request.clone();
            async move { AccessKeysClient::new(c).create_access_key(request).await }
        })
        .await
    }

    pub async fn list_access_keys(&self) -> Result<Vec<proto::AccessKeyInfo>, Error> {
        let reply = self
            .call(|c| async move {
                AccessKeysClient::new(c)
                    .list_access_keys(proto::ListAccessKeysRequest {})
                    .await
            })
            .await?;
        Ok(reply.keys)
    }

    pub async fn delete_access_key(&self, access_key_id: &str) -> Result<(), Error> {
        let request = proto::DeleteAccessKeyRequest {
            access_key_id: access_key_id.to_string(),
        };
        self.call(|c| {
            let request = request.clone();
            async move { AccessKeysClient::new(c).delete_access_key(request).await }
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::retriable;

    #[test]
    fn only_calls_that_did_nothing_are_retried() {
        assert!(retriable(&tonic::Status::unavailable("no leader")));
        // Queued on a connection that closed: never sent.
        assert!(retriable(&tonic::Status::cancelled("operation was canceled")));
        // Cancelled by the node while it ran: maybe done.
        assert!(!retriable(&tonic::Status::cancelled(
            "h2 protocol error: stream error received: operation was canceled"
        )));
        assert!(!retriable(&tonic::Status::unknown(
            "the leader failed during the write"
        )));
        assert!(!retriable(&tonic::Status::resource_exhausted("Rate Exceeded")));
    }
}
