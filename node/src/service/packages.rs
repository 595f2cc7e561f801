//! Packages across the cluster: a package is stored on this node and copied
//! to peers so that a majority holds it before the metadata that names it is
//! committed; a node that lacks one fetches it from a peer.

use std::path::PathBuf;
use std::sync::Arc;

use floe_raft_store::model::CodeRef;

use super::Node;
use crate::error::NodeError;
use crate::packages::Packages;

/// This node's packages, and their copies on the other members.
pub struct ClusterPackages {
    node: Arc<Node>,
    local: Packages,
}

impl ClusterPackages {
    pub fn new(node: Arc<Node>, local: Packages) -> ClusterPackages {
        ClusterPackages { node, local }
    }

    /// Stores a package a peer copied here (the `PutPackage` RPC) if it is the one named.
    pub fn put_copy(&self, sha256: &str, zip_file: &[u8]) -> Result<(), NodeError> {
        let code = self.local.put(zip_file)?;
        if code.sha256 != sha256 {
            return Err(NodeError::InvalidArgument(
                "the package does not match its sha256".into(),
            ));
        }
        Ok(())
    }

    /// This node's copy of a package (the `GetPackage` RPC).
    pub fn get_local(&self, sha256: &str) -> Result<Vec<u8>, NodeError> {
        Ok(self.local.get(sha256)?)
    }

    /// Where this node holds the package's files, extracted.
    pub fn extracted(&self, sha256: &str) -> Result<PathBuf, NodeError> {
        Ok(self.local.extracted(sha256)?)
    }

    /// Validates and stores a zip package, then copies it to a majority of members.
    pub async fn store(&self, zip_file: &[u8]) -> Result<CodeRef, NodeError> {
        let code = self.local.put(zip_file)?;
        let cluster = self.node.cluster()?;
        let (voters, nodes) = cluster.membership();
        let needed = voters.len() / 2 + 1;
        let mut holders = 1; // this node
        let mut failures = Vec::new();
        let copies = nodes.iter().filter(|(id, _)| **id != cluster.id).map(|(id, address)| {
            let data = zip_file.to_vec();
            let sha256 = code.sha256.clone();
            let peers = self.node.peers.clone();
            let address = address.clone();
            let id = *id;
            async move {
                let result = peers.put_package(&address, sha256, data).await;
                (id, result)
            }
        });
        for (id, result) in futures::future::join_all(copies).await {
            match result {
                Ok(()) => holders += 1,
                Err(status) => failures.push(format!("node {id}: {}", status.message())),
            }
        }
        if holders < needed {
            return Err(NodeError::Unavailable(format!(
                "the package reached {holders} of the {needed} nodes it must reach: {}",
                failures.join("; ")
            )));
        }
        Ok(code)
    }

    /// Deletes this node's packages that no function or version names, every
    /// `interval`, until `shutdown`.
    pub async fn run_collector(
        self: std::sync::Arc<Self>,
        interval: std::time::Duration,
        grace: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let referenced = match self.referenced_packages() {
                Ok(referenced) => referenced,
                Err(e) => {
                    tracing::warn!(error = %e, "package collection skipped");
                    continue;
                }
            };
            let packages = self.clone();
            let deleted = tokio::task::spawn_blocking(move || packages.local.collect(&referenced, grace))
                .await
                .unwrap_or(0);
            if deleted > 0 {
                tracing::info!(deleted, "collected unreferenced packages");
            }
        }
    }

    /// Every package a function's `$LATEST` or a version names, per this node's state.
    fn referenced_packages(&self) -> Result<std::collections::HashSet<String>, NodeError> {
        let mut referenced = std::collections::HashSet::new();
        for function in floe_raft_store::state_machine::list_functions(&self.node.reader)? {
            for version in floe_raft_store::state_machine::list_versions(&self.node.reader, &function.name)? {
                referenced.insert(version.code.sha256);
            }
            referenced.insert(function.code.sha256);
        }
        Ok(referenced)
    }

    /// Makes sure this node holds a package, fetching it from a peer if needed.
    pub async fn ensure(&self, code: &CodeRef) -> Result<(), NodeError> {
        if self.local.has(&code.sha256) {
            return Ok(());
        }
        let cluster = self.node.cluster()?;
        let (_, nodes) = cluster.membership();
        for (id, address) in nodes {
            if id == cluster.id {
                continue;
            }
            if let Ok(zip) = self.node.peers.get_package(&address, &code.sha256).await {
                let stored = self.local.put(&zip)?;
                if stored.sha256 == code.sha256 {
                    return Ok(());
                }
            }
        }
        Err(NodeError::Unavailable(format!(
            "package {} is on no reachable node",
            code.sha256
        )))
    }
}
