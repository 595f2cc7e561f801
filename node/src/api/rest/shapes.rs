//! Lambda's JSON documents, built from floe's records.

use base64::Engine;
use floe_raft_store::model::{AliasRecord, CodeRef, EventInvokeConfig, FunctionConfig, FunctionRecord, VersionRecord};
use serde_json::{json, Map, Value};

use crate::service::Service;

pub const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Lambda's `LastModified`: `2026-12-01T19:33:42.123+0000`.
pub fn last_modified(ms: i64) -> String {
    floe_raft_store::time::rfc3339_ms(ms).replace('Z', "+0000")
}

/// Lambda reports a package's SHA-256 in base64; floe keeps it in hex.
pub fn code_sha256(code: &CodeRef) -> String {
    hex::decode(&code.sha256)
        .map(|bytes| BASE64.encode(bytes))
        .unwrap_or_default()
}

/// The `FunctionConfiguration` of `$LATEST` (`version: None`) or of a version.
pub fn function_configuration(service: &Service, function: &FunctionRecord, version: Option<&VersionRecord>) -> Value {
    let (qualifier, config, code, revision_id, modified_ms) = match version {
        None => (
            floe_raft_store::model::LATEST.to_string(),
            &function.config,
            &function.code,
            &function.revision_id,
            function.last_modified_ms,
        ),
        Some(v) => (
            v.version.to_string(),
            &v.config,
            &v.code,
            &v.revision_id,
            v.created_at_ms,
        ),
    };
    let arn = match version {
        None => service.node.function_arn(&function.name, ""),
        Some(_) => service.node.function_arn(&function.name, &qualifier),
    };
    let description = match version {
        Some(v) if !v.description.is_empty() => v.description.clone(),
        _ => config.description.clone(),
    };
    json!({
        "FunctionName": function.name,
        "FunctionArn": arn,
        "Runtime": config.runtime,
        "Handler": config.handler,
        "CodeSize": code.size,
        "Description": description,
        "Timeout": config.timeout_s,
        "MemorySize": config.memory_mb,
        "LastModified": last_modified(modified_ms),
        "CodeSha256": code_sha256(code),
        "Version": qualifier,
        "Environment": { "Variables": config.environment },
        "RevisionId": revision_id,
        // Writes commit with their package in place: a function is ready once it exists.
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
    })
}

pub fn alias_configuration(service: &Service, alias: &AliasRecord) -> Value {
    let mut value = json!({
        "AliasArn": service.node.function_arn(&alias.function, &alias.name),
        "Name": alias.name,
        "FunctionVersion": alias.version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    });
    if let Some(routing) = &alias.routing {
        value["RoutingConfig"] = json!({
            "AdditionalVersionWeights": { routing.additional_version.to_string(): routing.weight }
        });
    }
    value
}

pub fn event_invoke_config(service: &Service, config: &EventInvokeConfig) -> Value {
    let mut destinations = Map::new();
    if let Some(on_success) = &config.on_success {
        destinations.insert(
            "OnSuccess".into(),
            json!({ "Destination": service.node.function_arn(on_success, "") }),
        );
    }
    if let Some(on_failure) = &config.on_failure {
        destinations.insert(
            "OnFailure".into(),
            json!({ "Destination": service.node.function_arn(on_failure, "") }),
        );
    }
    json!({
        "FunctionArn": service.node.function_arn(&config.function, &config.qualifier),
        "MaximumRetryAttempts": config.max_retry_attempts,
        "MaximumEventAgeInSeconds": config.max_event_age_s,
        "DestinationConfig": destinations,
        // A timestamp member: seconds since the epoch.
        "LastModified": config.last_modified_ms as f64 / 1000.0,
    })
}

/// The function configuration a `CreateFunction` body describes (Lambda's
/// defaults: 128 MB, 3 s).
pub fn new_function_config(request: &super::handlers::CreateFunction) -> FunctionConfig {
    FunctionConfig {
        runtime: request.runtime.clone().unwrap_or_default(),
        handler: request.handler.clone().unwrap_or_default(),
        memory_mb: request.memory_size.unwrap_or(128),
        timeout_s: request.timeout.unwrap_or(3),
        environment: request
            .environment
            .as_ref()
            .map(|e| e.variables.clone())
            .unwrap_or_default(),
        description: request.description.clone().unwrap_or_default(),
    }
}
