//! Invocation, one way: check the request, resolve the qualifier to a
//! version, ask the leader for a grant (`scheduling.rs`), run it here or on
//! the chosen node, give the grant back, keep the log. An event is accepted
//! instead (`events.rs`); a dry run stops after resolving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use floe_proto::internal::Execution;
use floe_raft_store::codec;
use floe_raft_store::model::{CodeRef, FunctionConfig, LATEST};
use floe_raft_store::{state_machine, validate, ApplyError};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::events::{tail, EventOptions, Events};
use super::packages::ClusterPackages;
use super::scheduling::Scheduling;
use super::{Consistency, Node};
use crate::error::NodeError;
use crate::executor::logs::LogRecord;
use crate::executor::{Executor, Invocation, LOG_TAIL_BYTES, MAX_PAYLOAD_BYTES};
use crate::shared::SandboxKey;
use crate::wire::{Grant, GrantAsk};

/// How late the `forwarded-invocations-arrive-late` failpoint delivers forwarded invocations.
const LATE_ARRIVAL: Duration = Duration::from_secs(6);
/// Beyond its lease and its function's timeout, what a forwarded invocation
/// may take (package fetch, sandbox start, the answer's trip back).
const EXECUTE_SLACK: Duration = Duration::from_secs(10);

/// The limit on an asynchronous invocation's payload (it is stored in the Raft log).
pub const MAX_EVENT_PAYLOAD_BYTES: usize = 1024 * 1024;

/// A client context, decoded: Lambda takes up to 3,583 bytes of Base64.
pub const MAX_CLIENT_CONTEXT_BYTES: usize = 3583 / 4 * 3;

/// Lambda's rule for a client context, whichever adapter it came through
/// (REST decodes its Base64 first): a JSON object of bounded size.
fn check_client_context(context: &str) -> Result<(), NodeError> {
    if context.len() > MAX_CLIENT_CONTEXT_BYTES {
        return Err(NodeError::InvalidArgument(format!(
            "the client context is {} bytes: the limit is {MAX_CLIENT_CONTEXT_BYTES} bytes",
            context.len()
        )));
    }
    match serde_json::from_str::<serde_json::Value>(context) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(NodeError::InvalidArgument(
            "the client context must be a JSON object".into(),
        )),
    }
}

/// What a call resolved to: one exact version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    pub function: String,
    /// `$LATEST` or a number.
    pub version: String,
    pub revision_id: String,
    pub config: FunctionConfig,
    pub code: CodeRef,
    /// The qualifier the caller used, for the invoked ARN.
    pub qualifier: String,
}

/// Lambda's `X-Amz-Invocation-Type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InvocationType {
    #[default]
    RequestResponse,
    Event,
    DryRun,
}

/// How an invocation was asked for, beyond its target and payload.
#[derive(Debug, Clone, Default)]
pub struct InvokeOptions {
    pub invocation_type: InvocationType,
    /// Return the tail of the invocation's log.
    pub log_tail: bool,
    /// Lambda's client context (JSON), handed to the function.
    pub client_context: Option<String>,
    /// The region whose quota it counts against; the entry node's when `None`.
    pub region: Option<String>,
    /// For events: the caller's retry policy, over the function's.
    pub max_retry_attempts: Option<u32>,
    pub max_event_age_s: Option<u32>,
}

/// The answer to an invocation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InvokeResult {
    /// Travels apart from the rest when forwarded.
    #[serde(skip)]
    pub payload: Bytes,
    pub function_error: Option<String>,
    pub executed_version: String,
    pub request_id: String,
    pub node_id: u64,
    pub cold_start: bool,
    /// The last 4 KB of the log, when asked for.
    pub log_tail: Option<String>,
    /// 200 (ran), 202 (event accepted) or 204 (dry run), as Lambda answers.
    pub status_code: u16,
}

/// One invocation, resolved and ready to run wherever it is placed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub resolved: Resolved,
    pub request_id: String,
    pub invoked_function_arn: String,
    pub client_context: Option<String>,
    pub log_tail: bool,
    /// Sent apart from the header (see the `Execution` message).
    #[serde(skip)]
    pub payload: Bytes,
}

/// The header of a forwarded invocation.
#[derive(Serialize, Deserialize)]
struct ExecuteHeader {
    grant: Grant,
    run: Run,
    /// What is left of the grant's lease when the request leaves the entry node.
    start_within_ms: u64,
}

/// Invocations: synchronous ones run through the scheduler; events are
/// handed to [`Events`].
pub struct Invocations {
    node: Arc<Node>,
    packages: Arc<ClusterPackages>,
    scheduling: Arc<Scheduling>,
    events: Arc<Events>,
    executor: Arc<Executor>,
}

impl Invocations {
    pub fn new(
        node: Arc<Node>,
        packages: Arc<ClusterPackages>,
        scheduling: Arc<Scheduling>,
        events: Arc<Events>,
        executor: Arc<Executor>,
    ) -> Invocations {
        Invocations {
            node,
            packages,
            scheduling,
            events,
            executor,
        }
    }

    /// Resolves `function` and `qualifier` ("", `$LATEST`, a number or an
    /// alias) to a version; an alias with routing picks by weight.
    pub async fn resolve(&self, function: &str, qualifier: &str) -> Result<Resolved, NodeError> {
        validate::function_name(function)?;
        self.node.read_barrier(Consistency::Linearizable).await?;
        let record =
            state_machine::get_function(&self.node.reader, function)?.ok_or_else(|| ApplyError::FunctionNotFound {
                name: function.to_string(),
            })?;
        let latest = |qualifier: &str| Resolved {
            function: function.to_string(),
            version: LATEST.to_string(),
            revision_id: record.revision_id.clone(),
            config: record.config.clone(),
            code: record.code.clone(),
            qualifier: qualifier.to_string(),
        };
        let numbered = |number: u64, qualifier: &str| -> Result<Resolved, NodeError> {
            let version = state_machine::get_version(&self.node.reader, function, number)?.ok_or_else(|| {
                ApplyError::VersionNotFound {
                    function: function.to_string(),
                    version: number.to_string(),
                }
            })?;
            Ok(Resolved {
                function: function.to_string(),
                version: number.to_string(),
                revision_id: version.revision_id,
                config: version.config,
                code: version.code,
                qualifier: qualifier.to_string(),
            })
        };
        if qualifier.is_empty() || qualifier == LATEST {
            return Ok(latest(qualifier));
        }
        if qualifier.chars().all(|c| c.is_ascii_digit()) {
            let number = validate::parse_version(qualifier)?.unwrap_or_default();
            return numbered(number, qualifier);
        }
        validate::alias_name(qualifier)?;
        let alias = state_machine::get_alias(&self.node.reader, function, qualifier)?.ok_or_else(|| {
            ApplyError::AliasNotFound {
                function: function.to_string(),
                name: qualifier.to_string(),
            }
        })?;
        let chosen = match &alias.routing {
            Some(routing) if rand::rng().random::<f64>() < routing.weight => routing.additional_version.to_string(),
            _ => alias.version.clone(),
        };
        match validate::parse_version(&chosen)? {
            None => Ok(latest(qualifier)),
            Some(number) => numbered(number, qualifier),
        }
    }

    pub async fn invoke(
        &self,
        function: &str,
        qualifier: &str,
        payload: Bytes,
        options: InvokeOptions,
    ) -> Result<InvokeResult, NodeError> {
        let limit = match options.invocation_type {
            InvocationType::Event => MAX_EVENT_PAYLOAD_BYTES,
            _ => MAX_PAYLOAD_BYTES,
        };
        if payload.len() > limit {
            return Err(NodeError::PayloadTooLarge(format!(
                "the request payload is {} bytes: the limit is {limit} bytes",
                payload.len()
            )));
        }
        if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
            return Err(NodeError::InvalidArgument(
                "the request payload is not valid JSON".into(),
            ));
        }
        if let Some(context) = &options.client_context {
            check_client_context(context)?;
        }
        if let Some(region) = &options.region {
            validate::region(region)?;
        }
        if options.invocation_type == InvocationType::Event {
            let event = EventOptions {
                region: options.region,
                max_retry_attempts: options.max_retry_attempts,
                max_event_age_s: options.max_event_age_s,
            };
            let id = self.events.accept(function, qualifier, &payload, &event).await?;
            return Ok(InvokeResult {
                payload: Bytes::new(),
                function_error: None,
                executed_version: String::new(),
                request_id: id,
                node_id: self.node.id(),
                cold_start: false,
                log_tail: None,
                status_code: 202,
            });
        }
        let resolved = self.resolve(function, qualifier).await?;
        let request_id = uuid::Uuid::new_v4().to_string();
        if options.invocation_type == InvocationType::DryRun {
            return Ok(InvokeResult {
                payload: Bytes::new(),
                function_error: None,
                executed_version: resolved.version,
                request_id,
                node_id: self.node.cluster()?.id,
                cold_start: false,
                log_tail: None,
                status_code: 204,
            });
        }
        let run = Run {
            invoked_function_arn: self.node.function_arn(&resolved.function, &resolved.qualifier),
            resolved,
            request_id,
            client_context: options.client_context,
            log_tail: options.log_tail,
            payload,
        };
        self.run_placed(run, options.region).await
    }

    /// Runs `run` where the leader places it, within the region's quota.
    pub async fn run_placed(&self, run: Run, region: Option<String>) -> Result<InvokeResult, NodeError> {
        let cluster = self.node.cluster()?;
        let config = &run.resolved.config;
        let ask = GrantAsk {
            entry_region: self.node.config.region.clone(),
            region,
            key: run.resolved.key(),
            memory_mb: u64::from(config.memory_mb),
            timeout_s: u64::from(config.timeout_s),
        };
        let asked_at = Instant::now();
        let grant = self.scheduling.request_grant(&ask).await?;
        let start_by = asked_at + Duration::from_millis(grant.lease_ms);
        if grant.node == cluster.id {
            return self.execute(grant, run, start_by).await;
        }
        let header = ExecuteHeader {
            start_within_ms: start_by.saturating_duration_since(Instant::now()).as_millis() as u64,
            grant: grant.clone(),
            run,
        };
        let request_id = header.run.request_id.clone();
        let payload = header.run.payload.to_vec();
        let header = codec::encode(&header).map_err(NodeError::Internal)?;
        // Never wait longer than the invocation could take: a node cut off mid-call must not hold the caller.
        let deadline = Duration::from_millis(grant.lease_ms) + Duration::from_secs(ask.timeout_s) + EXECUTE_SLACK;
        let reply = self
            .node
            .peers
            .execute(&grant.address, Execution { header, payload }, deadline)
            .await
            .map_err(|status| {
                let why = crate::cluster::describe(&status);
                // Nothing ran (no connection, or a node shutting down refused it unread).
                if floe_proto::transport::not_processed(&status) {
                    NodeError::Unavailable(format!("node {} is unreachable: {why}", grant.node))
                } else {
                    // It may have run: the caller must not retry blindly.
                    tracing::warn!(node = grant.node, request = %request_id, error = %why, "a forwarded invocation failed mid-call");
                    NodeError::OutcomeUnknown(format!(
                        "node {} failed while running the invocation: {why}",
                        grant.node
                    ))
                }
            })?;
        let result: Result<InvokeResult, NodeError> = codec::decode(&reply.header).map_err(NodeError::Internal)?;
        let mut result = result?;
        result.payload = Bytes::from(reply.payload);
        Ok(result)
    }

    /// Runs a forwarded invocation (the `Execute` RPC).
    pub async fn execute_forwarded(&self, execution: Execution) -> Result<Execution, NodeError> {
        let header: ExecuteHeader = codec::decode(&execution.header)
            .map_err(|e| NodeError::InvalidArgument(format!("undecodable execution: {e}")))?;
        if crate::failpoint::active("forwarded-invocations-arrive-late") {
            // As a link cut and healed would: TCP delivers the request seconds late.
            tokio::time::sleep(LATE_ARRIVAL).await;
        }
        // What the entry node had left of the lease; `start` also reads the
        // lease on the leader's clock, which a late arrival cannot stretch.
        let start_by = Instant::now() + Duration::from_millis(header.start_within_ms);
        let mut run = header.run;
        run.payload = Bytes::from(execution.payload);
        let result = self.execute(header.grant, run, start_by).await;
        let payload = result.as_ref().map(|r| r.payload.to_vec()).unwrap_or_default();
        let header = codec::encode(&result).map_err(NodeError::Internal)?;
        Ok(Execution { header, payload })
    }

    /// Runs a granted invocation on this node and gives the grant back.
    async fn execute(&self, grant: Grant, run: Run, start_by: Instant) -> Result<InvokeResult, NodeError> {
        let key = run.resolved.key();
        let outcome = self.execute_granted(&grant, run, start_by).await;
        let warm = outcome.as_ref().is_ok_and(|(_, warm)| *warm);
        self.scheduling.give_back(&grant, key, warm);
        outcome.map(|(result, _)| result)
    }

    async fn execute_granted(
        &self,
        grant: &Grant,
        run: Run,
        start_by: Instant,
    ) -> Result<(InvokeResult, bool), NodeError> {
        let resolved = &run.resolved;
        self.packages.ensure(&resolved.code).await?;
        let code_dir = self.packages.extracted(&resolved.code.sha256)?;
        // A node cut off from the leader stops starting invocations once their
        // grants lapse; a grant that arrives late (a link held it back) lapses
        // when the leader's clock says so, not later.
        let timeout = Duration::from_secs(u64::from(resolved.config.timeout_s));
        let _running = self.scheduling.start(grant, start_by, timeout).map_err(|_| {
            NodeError::Unavailable(format!(
                "the grant for this invocation lapsed before it could start on node {}",
                grant.node
            ))
        })?;
        let invocation = Invocation {
            key: resolved.key(),
            config: resolved.config.clone(),
            code_dir,
            request_id: run.request_id.clone(),
            invoked_function_arn: run.invoked_function_arn.clone(),
            region: self.node.config.region.clone(),
            client_context: run.client_context.clone(),
            payload: run.payload.clone(),
        };
        let outcome = self.executor.invoke(invocation).await?;
        let node_id = grant.node;
        let log_tail = run.log_tail.then(|| tail(&outcome.log, LOG_TAIL_BYTES).to_string());
        self.keep_log(node_id, resolved, &run.request_id, outcome.log);
        let result = InvokeResult {
            payload: outcome.payload,
            function_error: outcome.function_error,
            executed_version: resolved.version.clone(),
            request_id: run.request_id,
            node_id,
            cold_start: outcome.cold_start,
            log_tail,
            status_code: 200,
        };
        Ok((result, outcome.warm))
    }

    /// Stores an invocation's log off the caller's path.
    fn keep_log(&self, node_id: u64, resolved: &Resolved, request_id: &str, text: String) {
        let record = LogRecord {
            time_ms: crate::shared::now_ms(),
            node_id,
            function: resolved.function.clone(),
            version: resolved.version.clone(),
            request_id: request_id.to_string(),
            text,
        };
        let executor = self.executor.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = executor.logs.append(&record) {
                tracing::warn!(error = %e, function = %record.function, "could not keep an invocation log");
            }
        });
    }
}

impl Resolved {
    /// The sandboxes that can run it.
    pub fn key(&self) -> SandboxKey {
        SandboxKey {
            function: self.function.clone(),
            version: self.version.clone(),
            revision_id: self.revision_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_context_must_be_a_bounded_json_object() {
        assert!(check_client_context(r#"{"custom": {"who": "test"}}"#).is_ok());
        for bad in ["", "[1]", "42", "not json", r#"{"open": "#] {
            let err = check_client_context(bad).unwrap_err();
            assert!(matches!(err, NodeError::InvalidArgument(_)), "{bad:?}: {err:?}");
        }
        let big = format!(r#"{{"custom": {{"x": "{}"}}}}"#, "a".repeat(MAX_CLIENT_CONTEXT_BYTES));
        assert!(matches!(check_client_context(&big), Err(NodeError::InvalidArgument(_))));
    }
}
