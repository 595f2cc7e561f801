//! Invocation logs across the cluster: each node keeps its own; a read asks
//! every member and merges by time.

use std::sync::Arc;

use floe_proto::v1::GetLogsRequest;

use super::Node;
use crate::error::NodeError;
/// One invocation's log, as every adapter returns it.
pub use crate::executor::logs::LogRecord;
use crate::executor::Executor;

/// Records returned when the caller sets no limit.
const DEFAULT_LIMIT: usize = 1000;

/// Invocation logs, this node's and the cluster's.
pub struct Logs {
    node: Arc<Node>,
    executor: Arc<Executor>,
}

impl Logs {
    pub fn new(node: Arc<Node>, executor: Arc<Executor>) -> Logs {
        Logs { node, executor }
    }

    /// This node's records of `function` newer than `since_ms`.
    pub fn local(&self, function: &str, since_ms: i64, limit: usize) -> Result<Vec<LogRecord>, NodeError> {
        floe_raft_store::validate::function_name(function)?;
        Ok(self.executor.logs.read(function, since_ms, limit))
    }

    /// Every reachable node's records of `function`, oldest first.
    pub async fn cluster(&self, function: &str, since_ms: i64, limit: u32) -> Result<Vec<LogRecord>, NodeError> {
        let limit = if limit == 0 { DEFAULT_LIMIT } else { limit as usize };
        let cluster = self.node.cluster()?;
        let mut records = self.local(function, since_ms, limit)?;
        let (_, nodes) = cluster.membership();
        let requests = nodes
            .into_iter()
            .filter(|(id, _)| *id != cluster.id)
            .map(|(id, address)| {
                let request = GetLogsRequest {
                    function: function.to_string(),
                    since_ms,
                    limit: limit as u32,
                };
                let peers = self.node.peers.clone();
                async move {
                    let records = peers.local_logs(&address, request).await.ok()?;
                    Some((id, records))
                }
            });
        for (node_id, remote) in futures::future::join_all(requests).await.into_iter().flatten() {
            records.extend(remote.into_iter().map(|r| LogRecord {
                time_ms: r.time_ms,
                node_id,
                function: function.to_string(),
                version: r.version,
                request_id: r.request_id,
                text: r.text,
            }));
        }
        records.sort_by_key(|r| r.time_ms);
        if records.len() > limit {
            records.drain(..records.len() - limit);
        }
        Ok(records)
    }
}
