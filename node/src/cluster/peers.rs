//! gRPC channels to other nodes, one per address, created lazily and reused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use floe_proto::internal::peer_client::PeerClient;
use floe_proto::internal::raft_client::RaftClient;
use floe_proto::internal::scheduler_client::SchedulerClient;
use floe_proto::MAX_MESSAGE_BYTES;
use tonic::transport::{Channel, Endpoint};

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A pool of channels keyed by `host:port`.
#[derive(Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self.channels.lock().expect("peers lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // A peer cut off mid-call is noticed in seconds, not when TCP gives up.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn raft(&self, address: &str) -> Result<RaftClient<Channel>, tonic::Status> {
        Ok(RaftClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn peer(&self, address: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        Ok(PeerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn scheduler(&self, address: &str) -> Result<SchedulerClient<Channel>, tonic::Status> {
        Ok(SchedulerClient::new(self.channel(address)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}
