//! Invocation: check the request, resolve the qualifier to a version, then
//! run it where the scheduler places it (`scheduling.rs`), accept it as an
//! event (`events.rs`), or only check it (a dry run).

use axum::body::Bytes;
use floe_raft_store::model::{CodeRef, FunctionConfig, LATEST};
use floe_raft_store::{state_machine, validate, ApplyError};
use rand::Rng;

use super::scheduling::Run;
use super::{Consistency, Service};
use crate::error::NodeError;
use crate::executor::logs::LogRecord;
use crate::executor::MAX_PAYLOAD_BYTES;

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

/// The last `max` bytes of `text`, cut at a character boundary.
pub(super) fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
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

impl Service {
    /// Resolves `function` and `qualifier` ("", `$LATEST`, a number or an
    /// alias) to a version; an alias with routing picks by weight.
    pub async fn resolve(&self, function: &str, qualifier: &str) -> Result<Resolved, NodeError> {
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
        let numbered = |number: u64, qualifier: &str| -> Result<Resolved, NodeError> {
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
            return self.accept_event(function, qualifier, payload, &options).await;
        }
        let resolved = self.resolve(function, qualifier).await?;
        let request_id = uuid::Uuid::new_v4().to_string();
        if options.invocation_type == InvocationType::DryRun {
            return Ok(InvokeResult {
                payload: Bytes::new(),
                function_error: None,
                executed_version: resolved.version,
                request_id,
                node_id: self.cluster()?.id,
                cold_start: false,
                log_tail: None,
                status_code: 204,
            });
        }
        let run = Run {
            invoked_function_arn: self.function_arn(&resolved.function, &resolved.qualifier),
            resolved,
            request_id,
            client_context: options.client_context,
            log_tail: options.log_tail,
            payload,
        };
        self.run_placed(run, options.region).await
    }

    /// Lambda's ARN of `function`, with the qualifier the caller used.
    pub fn function_arn(&self, function: &str, qualifier: &str) -> String {
        let arn = format!(
            "arn:aws:lambda:{}:{}:function:{function}",
            self.config.region, self.config.api.account_id
        );
        if qualifier.is_empty() {
            arn
        } else {
            format!("{arn}:{qualifier}")
        }
    }

    /// Stores an invocation's log off the caller's path.
    pub(super) fn keep_log(&self, node_id: u64, resolved: &Resolved, request_id: &str, text: String) {
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
