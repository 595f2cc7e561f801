//! Functions, versions and aliases: validate, store the package, propose.

use floe_raft_store::model::{AliasRecord, AliasRouting, FunctionConfig, FunctionRecord, VersionRecord};
use floe_raft_store::{state_machine, validate, ApplyError, Command, Response};

use std::sync::Arc;

use super::packages::ClusterPackages;
use super::{Consistency, Node};
use crate::error::NodeError;
use crate::shared::now_ms;

pub fn new_revision_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Changes to `$LATEST`; `None` keeps a field.
#[derive(Debug, Default, Clone)]
pub struct FunctionUpdate {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub memory_mb: Option<u32>,
    pub timeout_s: Option<u32>,
    pub environment: Option<std::collections::BTreeMap<String, String>>,
    pub description: Option<String>,
    pub zip_file: Option<Vec<u8>>,
    pub expected_revision_id: Option<String>,
    /// Lambda's `Publish=true`: publish the new `$LATEST` in the same write.
    pub publish: bool,
}

/// An alias's routing from the wire: an additional version (a number, not
/// `$LATEST`) and its weight; an empty version means no routing.
pub fn alias_routing(additional_version: &str, weight: f64) -> Result<Option<AliasRouting>, NodeError> {
    if additional_version.is_empty() {
        return Ok(None);
    }
    let additional_version = validate::parse_version(additional_version)?
        .ok_or_else(|| NodeError::InvalidArgument("routing cannot name $LATEST as the additional version".into()))?;
    Ok(Some(AliasRouting {
        additional_version,
        weight,
    }))
}

/// Changes to an alias; `routing: Some(None)` clears the routing.
#[derive(Debug, Default, Clone)]
pub struct AliasUpdate {
    pub version: Option<String>,
    pub routing: Option<Option<AliasRouting>>,
    pub description: Option<String>,
    pub expected_revision_id: Option<String>,
}

fn expect_function(response: Response) -> Result<FunctionRecord, NodeError> {
    match response {
        Response::Function(record) => Ok(record),
        other => Err(NodeError::Internal(format!("unexpected response {other:?}"))),
    }
}

/// `$LATEST` after a create or update, and the version it published if asked to.
fn expect_written(response: Response) -> Result<(FunctionRecord, Option<VersionRecord>), NodeError> {
    match response {
        Response::Published { function, version } => Ok((function, Some(version))),
        other => Ok((expect_function(other)?, None)),
    }
}

fn expect_alias(response: Response) -> Result<AliasRecord, NodeError> {
    match response {
        Response::Alias(record) => Ok(record),
        other => Err(NodeError::Internal(format!("unexpected response {other:?}"))),
    }
}

/// Functions, their versions and aliases: the metadata of deployed code.
pub struct Functions {
    node: Arc<Node>,
    packages: Arc<ClusterPackages>,
}

impl Functions {
    pub fn new(node: Arc<Node>, packages: Arc<ClusterPackages>) -> Functions {
        Functions { node, packages }
    }

    /// Creates the function; with `publish`, also its version 1, in one Raft entry.
    pub async fn create(
        &self,
        name: &str,
        config: FunctionConfig,
        zip_file: &[u8],
        publish: bool,
    ) -> Result<(FunctionRecord, Option<VersionRecord>), NodeError> {
        validate::function_name(name)?;
        validate::function_config(&config)?;
        let code = self.packages.store(zip_file).await?;
        let command = Command::CreateFunction {
            name: name.to_string(),
            config,
            code,
            revision_id: new_revision_id(),
            now_ms: now_ms(),
            publish,
        };
        expect_written(self.node.cluster()?.propose(command).await?)
    }

    pub async fn get(&self, name: &str, consistency: Consistency) -> Result<FunctionRecord, NodeError> {
        validate::function_name(name)?;
        self.node.read_barrier(consistency).await?;
        state_machine::get_function(&self.node.reader, name)?
            .ok_or_else(|| ApplyError::FunctionNotFound { name: name.to_string() }.into())
    }

    /// The function and, for a numbered version or an alias (its primary
    /// version), that version: what `GetFunction` with a qualifier describes.
    pub async fn configuration(
        &self,
        name: &str,
        qualifier: &str,
    ) -> Result<(FunctionRecord, Option<VersionRecord>), NodeError> {
        let function = self.get(name, Consistency::Linearizable).await?;
        let version = if qualifier.is_empty() || qualifier == floe_raft_store::model::LATEST {
            return Ok((function, None));
        } else if qualifier.chars().all(|c| c.is_ascii_digit()) {
            qualifier.to_string()
        } else {
            validate::alias_name(qualifier)?;
            state_machine::get_alias(&self.node.reader, name, qualifier)?
                .ok_or_else(|| ApplyError::AliasNotFound {
                    function: name.to_string(),
                    name: qualifier.to_string(),
                })?
                .version
        };
        let Some(number) = validate::parse_version(&version)? else {
            return Ok((function, None));
        };
        let record = state_machine::get_version(&self.node.reader, name, number)?.ok_or_else(|| {
            ApplyError::VersionNotFound {
                function: name.to_string(),
                version: version.clone(),
            }
        })?;
        Ok((function, Some(record)))
    }

    pub async fn list(&self, consistency: Consistency) -> Result<Vec<FunctionRecord>, NodeError> {
        self.node.read_barrier(consistency).await?;
        Ok(state_machine::list_functions(&self.node.reader)?)
    }

    /// Merges the update into the current `$LATEST`. Without a caller's
    /// expected revision, a concurrent change makes it merge again rather
    /// than overwrite the other change.
    pub async fn update(
        &self,
        name: &str,
        update: FunctionUpdate,
    ) -> Result<(FunctionRecord, Option<VersionRecord>), NodeError> {
        let code = match &update.zip_file {
            Some(zip) => Some(self.packages.store(zip).await?),
            None => None,
        };
        loop {
            let current = self.get(name, Consistency::Linearizable).await?;
            if let Some(expected) = &update.expected_revision_id {
                if *expected != current.revision_id {
                    return Err(ApplyError::RevisionMismatch {
                        what: format!("function {name}"),
                        expected: expected.clone(),
                        actual: current.revision_id,
                    }
                    .into());
                }
            }
            let mut config = current.config.clone();
            let mut changed = false;
            macro_rules! merge {
                ($field:ident) => {
                    if let Some(value) = &update.$field {
                        config.$field = value.clone();
                        changed = true;
                    }
                };
            }
            merge!(runtime);
            merge!(handler);
            merge!(memory_mb);
            merge!(timeout_s);
            merge!(environment);
            merge!(description);
            if !changed && code.is_none() {
                return Err(NodeError::InvalidArgument("the update changes nothing".into()));
            }
            let command = Command::UpdateFunction {
                name: name.to_string(),
                config: changed.then_some(config),
                code: code.clone(),
                expected_revision_id: Some(current.revision_id.clone()),
                revision_id: new_revision_id(),
                now_ms: now_ms(),
                publish: update.publish,
            };
            match self.node.cluster()?.propose(command).await {
                Err(NodeError::RevisionMismatch(_)) if update.expected_revision_id.is_none() => continue,
                result => return expect_written(result?),
            }
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), NodeError> {
        validate::function_name(name)?;
        self.node
            .cluster()?
            .propose(Command::DeleteFunction { name: name.to_string() })
            .await?;
        Ok(())
    }

    pub async fn put_concurrency(&self, name: &str, reserved: Option<u32>) -> Result<FunctionRecord, NodeError> {
        validate::function_name(name)?;
        let command = Command::PutFunctionConcurrency {
            name: name.to_string(),
            reserved_concurrency: reserved,
        };
        expect_function(self.node.cluster()?.propose(command).await?)
    }

    /// Publishes `$LATEST`, if its revision and its code's SHA-256 (hex) are
    /// the ones expected: both preconditions are checked when the entry applies.
    pub async fn publish_version(
        &self,
        name: &str,
        description: &str,
        expected_revision_id: Option<String>,
        expected_code_sha256: Option<String>,
    ) -> Result<VersionRecord, NodeError> {
        validate::function_name(name)?;
        let command = Command::PublishVersion {
            name: name.to_string(),
            description: description.to_string(),
            expected_revision_id,
            now_ms: now_ms(),
            expected_code_sha256,
        };
        match self.node.cluster()?.propose(command).await? {
            Response::Version(version) => Ok(version),
            other => Err(NodeError::Internal(format!("unexpected response {other:?}"))),
        }
    }

    /// `$LATEST` (as version 0 with the function's config) then every published version.
    pub async fn list_versions(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<(FunctionRecord, Vec<VersionRecord>), NodeError> {
        let function = self.get(name, consistency).await?;
        let versions = state_machine::list_versions(&self.node.reader, name)?;
        Ok((function, versions))
    }

    pub async fn create_alias(
        &self,
        function: &str,
        name: &str,
        version: &str,
        routing: Option<AliasRouting>,
        description: &str,
    ) -> Result<AliasRecord, NodeError> {
        validate::function_name(function)?;
        validate::alias_name(name)?;
        let command = Command::CreateAlias {
            function: function.to_string(),
            name: name.to_string(),
            version: version.to_string(),
            routing,
            description: description.to_string(),
            revision_id: new_revision_id(),
        };
        expect_alias(self.node.cluster()?.propose(command).await?)
    }

    pub async fn update_alias(
        &self,
        function: &str,
        name: &str,
        update: AliasUpdate,
    ) -> Result<AliasRecord, NodeError> {
        validate::function_name(function)?;
        validate::alias_name(name)?;
        let command = Command::UpdateAlias {
            function: function.to_string(),
            name: name.to_string(),
            version: update.version,
            routing: update.routing,
            description: update.description,
            expected_revision_id: update.expected_revision_id,
            revision_id: new_revision_id(),
        };
        expect_alias(self.node.cluster()?.propose(command).await?)
    }

    pub async fn get_alias(
        &self,
        function: &str,
        name: &str,
        consistency: Consistency,
    ) -> Result<AliasRecord, NodeError> {
        validate::function_name(function)?;
        validate::alias_name(name)?;
        self.node.read_barrier(consistency).await?;
        state_machine::get_alias(&self.node.reader, function, name)?.ok_or_else(|| {
            ApplyError::AliasNotFound {
                function: function.to_string(),
                name: name.to_string(),
            }
            .into()
        })
    }

    pub async fn list_aliases(&self, function: &str, consistency: Consistency) -> Result<Vec<AliasRecord>, NodeError> {
        self.get(function, consistency).await?;
        Ok(state_machine::list_aliases(&self.node.reader, function)?)
    }

    pub async fn delete_alias(&self, function: &str, name: &str) -> Result<(), NodeError> {
        validate::function_name(function)?;
        validate::alias_name(name)?;
        let command = Command::DeleteAlias {
            function: function.to_string(),
            name: name.to_string(),
        };
        self.node.cluster()?.propose(command).await?;
        Ok(())
    }
}
