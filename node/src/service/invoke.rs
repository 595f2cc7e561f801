//! Synchronous invocation: resolve the qualifier to a version, make sure the
//! package is here, run it in a sandbox on this node.
//!
//! Cross-node placement and quotas (the scheduler) come between resolving and
//! running; today every invocation runs on the node that received it.

use axum::body::Bytes;
use floe_raft_store::model::{CodeRef, FunctionConfig, LATEST};
use floe_raft_store::{state_machine, validate, ApplyError};
use rand::Rng;

use super::{Consistency, Service, ServiceError};
use crate::executor::logs::LogRecord;
use crate::executor::{Invocation, SandboxKey, LOG_TAIL_BYTES, MAX_PAYLOAD_BYTES};

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// What a call resolved to: one exact version.
#[derive(Debug, Clone)]
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

/// How an invocation was asked for, beyond its target and payload.
#[derive(Debug, Clone, Default)]
pub struct InvokeOptions {
    /// Return the tail of the invocation's log.
    pub log_tail: bool,
    /// Lambda's client context (JSON), handed to the function.
    pub client_context: Option<String>,
}

/// The answer to an invocation.
#[derive(Debug, Clone)]
pub struct InvokeResult {
    pub payload: Bytes,
    pub function_error: Option<String>,
    pub executed_version: String,
    pub request_id: String,
    pub node_id: u64,
    pub cold_start: bool,
    /// The last 4 KB of the log, when asked for.
    pub log_tail: Option<String>,
}

impl Service {
    /// Resolves `function` and `qualifier` ("", `$LATEST`, a number or an
    /// alias) to a version; an alias with routing picks by weight.
    pub async fn resolve(&self, function: &str, qualifier: &str) -> Result<Resolved, ServiceError> {
        validate::function_name(function)?;
        self.read_barrier(Consistency::Linearizable).await?;
        let record =
            state_machine::get_function(&self.reader, function)?.ok_or_else(|| ApplyError::FunctionNotFound {
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
        let numbered = |number: u64, qualifier: &str| -> Result<Resolved, ServiceError> {
            let version = state_machine::get_version(&self.reader, function, number)?.ok_or_else(|| {
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
        let alias =
            state_machine::get_alias(&self.reader, function, qualifier)?.ok_or_else(|| ApplyError::AliasNotFound {
                function: function.to_string(),
                name: qualifier.to_string(),
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
    ) -> Result<InvokeResult, ServiceError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(ServiceError::PayloadTooLarge(format!(
                "the request payload is {} bytes: the limit is {MAX_PAYLOAD_BYTES} bytes",
                payload.len()
            )));
        }
        if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
            return Err(ServiceError::InvalidArgument(
                "the request payload is not valid JSON".into(),
            ));
        }
        let resolved = self.resolve(function, qualifier).await?;
        self.ensure_package(&resolved.code).await?;
        let code_dir = self.packages.extracted(&resolved.code.sha256)?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut arn = format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.config.region, resolved.function
        );
        if !resolved.qualifier.is_empty() {
            arn = format!("{arn}:{}", resolved.qualifier);
        }
        let invocation = Invocation {
            key: SandboxKey {
                function: resolved.function.clone(),
                version: resolved.version.clone(),
                revision_id: resolved.revision_id.clone(),
            },
            config: resolved.config.clone(),
            code_dir,
            request_id: request_id.clone(),
            invoked_function_arn: arn,
            region: self.config.region.clone(),
            client_context: options.client_context,
            payload,
        };
        let outcome = self.executor.invoke(invocation).await?;
        let node_id = self.cluster()?.id;
        let log_tail = options.log_tail.then(|| tail(&outcome.log, LOG_TAIL_BYTES).to_string());
        self.keep_log(node_id, &resolved, &request_id, outcome.log);
        Ok(InvokeResult {
            payload: outcome.payload,
            function_error: outcome.function_error,
            executed_version: resolved.version,
            request_id,
            node_id,
            cold_start: outcome.cold_start,
            log_tail,
        })
    }

    /// Stores an invocation's log off the caller's path.
    fn keep_log(&self, node_id: u64, resolved: &Resolved, request_id: &str, text: String) {
        let record = LogRecord {
            time_ms: super::functions::now_ms(),
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
