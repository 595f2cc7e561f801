//! One handler per Lambda operation: parse Lambda's request, call the
//! service, answer in Lambda's shape. No business logic lives here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine;
use floe_raft_store::model::{self, LATEST};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::shapes::{self, BASE64};
use super::LambdaError;
use crate::service::events::EventConfigChange;
use crate::service::functions::{AliasUpdate, FunctionUpdate};
use crate::service::invoke::{InvocationType, InvokeOptions};
use crate::service::{Consistency, Service};

type Api = State<Arc<Service>>;
type Params = Query<HashMap<String, String>>;
type Answer = Result<Response, LambdaError>;

pub fn routes() -> axum::Router<Arc<Service>> {
    axum::Router::new()
        .route("/2015-03-31/functions", post(create_function).get(list_functions))
        .route("/2015-03-31/functions/", post(create_function).get(list_functions))
        .route(
            "/2015-03-31/functions/{name}",
            get(get_function).delete(delete_function),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(get_function_configuration).put(update_function_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            axum::routing::put(update_function_code),
        )
        .route(
            "/2015-03-31/functions/{name}/versions",
            post(publish_version).get(list_versions),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            post(create_alias).get(list_aliases),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(get_alias).put(update_alias).delete(delete_alias),
        )
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            axum::routing::put(put_concurrency).delete(delete_concurrency),
        )
        .route("/2019-09-30/functions/{name}/concurrency", get(get_concurrency))
        .route("/2016-08-19/account-settings", get(account_settings))
        .route("/2016-08-19/account-settings/", get(account_settings))
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            get(get_event_invoke_config)
                .put(put_event_invoke_config)
                .post(update_event_invoke_config)
                .delete(delete_event_invoke_config),
        )
}

fn ok(status: StatusCode, body: Value) -> Answer {
    Ok((status, Json(body)).into_response())
}

fn no_content() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Lambda's answer to a body that is not the JSON it expects.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, LambdaError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| {
        LambdaError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            format!("Could not parse request body into json: {e}"),
        )
    })
}

/// A `FunctionName` as Lambda takes it — `name`, `name:qualifier`,
/// `account:function:name[:qualifier]` or a full ARN — and the qualifier
/// given apart (`?Qualifier=`), which must agree.
fn function_name(raw: &str, params: &HashMap<String, String>) -> Result<(String, String), LambdaError> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (name, in_name) = match parts[..] {
        ["arn", _, "lambda", _, _, "function", name] => (name, None),
        ["arn", _, "lambda", _, _, "function", name, qualifier] => (name, Some(qualifier)),
        [_, "function", name] => (name, None),
        [_, "function", name, qualifier] => (name, Some(qualifier)),
        [name] => (name, None),
        [name, qualifier] => (name, Some(qualifier)),
        _ => return Err(LambdaError::invalid(format!("invalid function name or ARN {raw:?}"))),
    };
    let separate = params.get("Qualifier").map(String::as_str).filter(|q| !q.is_empty());
    let qualifier = match (in_name, separate) {
        (Some(a), Some(b)) if a != b => {
            return Err(LambdaError::invalid(
                "The derived qualifier from the function name does not match the specified qualifier.",
            ))
        }
        (Some(q), _) | (None, Some(q)) => q.to_string(),
        (None, None) => String::new(),
    };
    Ok((name.to_string(), qualifier))
}

/// A name with no qualifier, for operations on the function itself.
fn unqualified(raw: &str) -> Result<String, LambdaError> {
    match function_name(raw, &HashMap::new())? {
        (name, qualifier) if qualifier.is_empty() => Ok(name),
        _ => Err(LambdaError::invalid(format!(
            "{raw} names a qualifier, which this operation does not take"
        ))),
    }
}

/// `Marker`/`MaxItems` paging over a list sorted by `key`.
fn page<T>(
    items: Vec<T>,
    params: &HashMap<String, String>,
    key: impl Fn(&T) -> String,
) -> Result<(Vec<T>, Option<String>), LambdaError> {
    let max_items = match params.get("MaxItems") {
        None => 50,
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=10_000) => n,
            _ => return Err(LambdaError::invalid("MaxItems must be a number from 1 to 10000")),
        },
    };
    let after = params.get("Marker").filter(|m| !m.is_empty());
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|item| after.is_none_or(|marker| key(item) > *marker))
        .collect();
    let next = if rest.len() > max_items {
        rest.truncate(max_items);
        rest.last().map(&key)
    } else {
        None
    };
    Ok((rest, next))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Environment {
    pub variables: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct FunctionCode {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateFunction {
    pub function_name: String,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub code: FunctionCode,
    pub description: Option<String>,
    pub timeout: Option<u32>,
    pub memory_size: Option<u32>,
    pub environment: Option<Environment>,
    pub publish: bool,
    pub package_type: Option<String>,
}

/// The zip of a `Code` or `UpdateFunctionCode` body.
fn zip_file(code: &FunctionCode) -> Result<Vec<u8>, LambdaError> {
    if code.s3_bucket.is_some() || code.image_uri.is_some() {
        return Err(LambdaError::invalid(
            "floe takes code as ZipFile only (no S3 locations or container images)",
        ));
    }
    let encoded = code
        .zip_file
        .as_deref()
        .ok_or_else(|| LambdaError::invalid("Code.ZipFile is required"))?;
    BASE64
        .decode(encoded)
        .map_err(|e| LambdaError::invalid(format!("ZipFile is not valid base64: {e}")))
}

async fn create_function(State(service): Api, body: Bytes) -> Answer {
    let request: CreateFunction = parse(&body)?;
    if request.package_type.as_deref().is_some_and(|t| t != "Zip") {
        return Err(LambdaError::invalid("floe runs Zip packages only"));
    }
    let zip = zip_file(&request.code)?;
    let config = shapes::new_function_config(&request);
    let (function, version) = service
        .functions
        .create(&request.function_name, config, &zip, request.publish)
        .await?;
    ok(
        StatusCode::CREATED,
        shapes::function_configuration(&service, &function, version.as_ref()),
    )
}

async fn list_functions(State(service): Api, Query(params): Params) -> Answer {
    let functions = service.functions.list(Consistency::Linearizable).await?;
    let all_versions = params.get("FunctionVersion").is_some_and(|v| v == "ALL");
    let mut configurations = Vec::new();
    for function in &functions {
        configurations.push((
            function.name.clone(),
            0,
            shapes::function_configuration(&service, function, None),
        ));
        if all_versions {
            for version in service
                .functions
                .list_versions(&function.name, Consistency::Stale)
                .await?
                .1
            {
                configurations.push((
                    function.name.clone(),
                    version.version,
                    shapes::function_configuration(&service, function, Some(&version)),
                ));
            }
        }
    }
    // Markers are `name` or `name:version`, in listing order.
    let (page, next) = page(configurations, &params, |(name, version, _)| {
        format!("{name}:{version:020}")
    })?;
    let mut body = json!({ "Functions": page.into_iter().map(|(_, _, c)| c).collect::<Vec<_>>() });
    if let Some(next) = next {
        body["NextMarker"] = next.into();
    }
    ok(StatusCode::OK, body)
}

async fn get_function(State(service): Api, Path(raw): Path<String>, Query(params): Params) -> Answer {
    let (name, qualifier) = function_name(&raw, &params)?;
    let (function, version) = service.functions.configuration(&name, &qualifier).await?;
    let mut body = json!({
        "Configuration": shapes::function_configuration(&service, &function, version.as_ref()),
        "Code": { "RepositoryType": "floe" },
    });
    if let Some(reserved) = function.reserved_concurrency {
        body["Concurrency"] = json!({ "ReservedConcurrentExecutions": reserved });
    }
    ok(StatusCode::OK, body)
}

async fn get_function_configuration(State(service): Api, Path(raw): Path<String>, Query(params): Params) -> Answer {
    let (name, qualifier) = function_name(&raw, &params)?;
    let (function, version) = service.functions.configuration(&name, &qualifier).await?;
    ok(
        StatusCode::OK,
        shapes::function_configuration(&service, &function, version.as_ref()),
    )
}

async fn delete_function(State(service): Api, Path(raw): Path<String>, Query(params): Params) -> Answer {
    let (name, qualifier) = function_name(&raw, &params)?;
    if !qualifier.is_empty() && qualifier != LATEST {
        return Err(LambdaError::invalid(
            "floe deletes whole functions only: published versions are kept until the function is deleted",
        ));
    }
    service.functions.delete(&name).await?;
    no_content()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateCode {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
    publish: bool,
    revision_id: Option<String>,
}

async fn update_function_code(State(service): Api, Path(raw): Path<String>, body: Bytes) -> Answer {
    let name = unqualified(&raw)?;
    let request: UpdateCode = parse(&body)?;
    let zip = zip_file(&FunctionCode {
        zip_file: request.zip_file,
        s3_bucket: request.s3_bucket,
        image_uri: request.image_uri,
    })?;
    let update = FunctionUpdate {
        zip_file: Some(zip),
        expected_revision_id: request.revision_id,
        publish: request.publish,
        ..Default::default()
    };
    let (function, version) = service.functions.update(&name, update).await?;
    ok(
        StatusCode::OK,
        shapes::function_configuration(&service, &function, version.as_ref()),
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateConfiguration {
    runtime: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    revision_id: Option<String>,
}

async fn update_function_configuration(State(service): Api, Path(raw): Path<String>, body: Bytes) -> Answer {
    let name = unqualified(&raw)?;
    let request: UpdateConfiguration = parse(&body)?;
    let update = FunctionUpdate {
        runtime: request.runtime,
        handler: request.handler,
        memory_mb: request.memory_size,
        timeout_s: request.timeout,
        environment: request.environment.map(|e| e.variables),
        description: request.description,
        zip_file: None,
        expected_revision_id: request.revision_id,
        publish: false,
    };
    let (function, _) = service.functions.update(&name, update).await?;
    ok(
        StatusCode::OK,
        shapes::function_configuration(&service, &function, None),
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PublishVersion {
    description: String,
    revision_id: Option<String>,
    code_sha256: Option<String>,
}

async fn publish_version(State(service): Api, Path(raw): Path<String>, body: Bytes) -> Answer {
    let name = unqualified(&raw)?;
    let request: PublishVersion = parse(&body)?;
    // Lambda's CodeSha256 is base64; floe's records (and the check in apply) use hex.
    let expected_code_sha256 = match &request.code_sha256 {
        Some(expected) => match BASE64.decode(expected) {
            Ok(digest) if digest.len() == 32 => Some(hex::encode(digest)),
            _ => {
                return Err(LambdaError::invalid(format!(
                    "CodeSha256 ({expected}) is not a base64 SHA-256"
                )))
            }
        },
        None => None,
    };
    let version = service
        .functions
        .publish_version(&name, &request.description, request.revision_id, expected_code_sha256)
        .await?;
    let function = service.functions.get(&name, Consistency::Linearizable).await?;
    ok(
        StatusCode::CREATED,
        shapes::function_configuration(&service, &function, Some(&version)),
    )
}

async fn list_versions(State(service): Api, Path(raw): Path<String>, Query(params): Params) -> Answer {
    let name = unqualified(&raw)?;
    let (function, versions) = service
        .functions
        .list_versions(&name, Consistency::Linearizable)
        .await?;
    let mut all = vec![(0u64, shapes::function_configuration(&service, &function, None))];
    for version in &versions {
        all.push((
            version.version,
            shapes::function_configuration(&service, &function, Some(version)),
        ));
    }
    let (page, next) = page(all, &params, |(number, _)| format!("{number:020}"))?;
    let mut body = json!({ "Versions": page.into_iter().map(|(_, c)| c).collect::<Vec<_>>() });
    if let Some(next) = next {
        body["NextMarker"] = next.into();
    }
    ok(StatusCode::OK, body)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RoutingConfig {
    additional_version_weights: BTreeMap<String, f64>,
}

/// Lambda's `AdditionalVersionWeights` (at most one entry) as floe's routing.
fn routing(config: RoutingConfig) -> Result<Option<model::AliasRouting>, LambdaError> {
    let mut weights = config.additional_version_weights.into_iter();
    let Some((version, weight)) = weights.next() else {
        return Ok(None);
    };
    if weights.next().is_some() {
        return Err(LambdaError::invalid(
            "an alias routes to at most one additional version",
        ));
    }
    let routing = crate::service::functions::alias_routing(&version, weight)?;
    if routing.is_none() {
        return Err(LambdaError::invalid("the additional version cannot be empty"));
    }
    Ok(routing)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateAlias {
    name: String,
    function_version: String,
    description: String,
    routing_config: Option<RoutingConfig>,
}

async fn create_alias(State(service): Api, Path(raw): Path<String>, body: Bytes) -> Answer {
    let name = unqualified(&raw)?;
    let request: CreateAlias = parse(&body)?;
    let routing = match request.routing_config {
        Some(config) => routing(config)?,
        None => None,
    };
    let alias = service
        .functions
        .create_alias(
            &name,
            &request.name,
            &request.function_version,
            routing,
            &request.description,
        )
        .await?;
    ok(StatusCode::CREATED, shapes::alias_configuration(&service, &alias))
}

async fn get_alias(State(service): Api, Path((raw, alias)): Path<(String, String)>) -> Answer {
    let name = unqualified(&raw)?;
    let alias = service
        .functions
        .get_alias(&name, &alias, Consistency::Linearizable)
        .await?;
    ok(StatusCode::OK, shapes::alias_configuration(&service, &alias))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateAlias {
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingConfig>,
    revision_id: Option<String>,
}

async fn update_alias(State(service): Api, Path((raw, alias)): Path<(String, String)>, body: Bytes) -> Answer {
    let name = unqualified(&raw)?;
    let request: UpdateAlias = parse(&body)?;
    let update = AliasUpdate {
        version: request.function_version,
        // An empty `AdditionalVersionWeights` clears the routing, as in Lambda.
        routing: request.routing_config.map(routing).transpose()?,
        description: request.description,
        expected_revision_id: request.revision_id,
    };
    let alias = service.functions.update_alias(&name, &alias, update).await?;
    ok(StatusCode::OK, shapes::alias_configuration(&service, &alias))
}

async fn delete_alias(State(service): Api, Path((raw, alias)): Path<(String, String)>) -> Answer {
    let name = unqualified(&raw)?;
    service.functions.delete_alias(&name, &alias).await?;
    no_content()
}

async fn list_aliases(State(service): Api, Path(raw): Path<String>, Query(params): Params) -> Answer {
    let name = unqualified(&raw)?;
    let aliases = service.functions.list_aliases(&name, Consistency::Linearizable).await?;
    let wanted = params.get("FunctionVersion");
    let aliases: Vec<_> = aliases
        .into_iter()
        .filter(|a| wanted.is_none_or(|v| a.version == *v))
        .collect();
    let (page, next) = page(aliases, &params, |a| a.name.clone())?;
    let mut body = json!({
        "Aliases": page.iter().map(|a| shapes::alias_configuration(&service, a)).collect::<Vec<_>>()
    });
    if let Some(next) = next {
        body["NextMarker"] = next.into();
    }
    ok(StatusCode::OK, body)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutConcurrency {
    reserved_concurrent_executions: u32,
}

async fn put_concurrency(State(service): Api, Path(raw): Path<String>, body: Bytes) -> Answer {
    let name = unqualified(&raw)?;
    let request: PutConcurrency = parse(&body)?;
    let function = service
        .functions
        .put_concurrency(&name, Some(request.reserved_concurrent_executions))
        .await?;
    ok(
        StatusCode::OK,
        json!({ "ReservedConcurrentExecutions": function.reserved_concurrency }),
    )
}

async fn get_concurrency(State(service): Api, Path(raw): Path<String>) -> Answer {
    let name = unqualified(&raw)?;
    let function = service.functions.get(&name, Consistency::Linearizable).await?;
    let body = match function.reserved_concurrency {
        Some(reserved) => json!({ "ReservedConcurrentExecutions": reserved }),
        None => json!({}),
    };
    ok(StatusCode::OK, body)
}

async fn delete_concurrency(State(service): Api, Path(raw): Path<String>) -> Answer {
    let name = unqualified(&raw)?;
    service.functions.put_concurrency(&name, None).await?;
    no_content()
}

async fn account_settings(State(service): Api) -> Answer {
    let settings = service.membership.account_settings().await?;
    ok(
        StatusCode::OK,
        json!({
            "AccountLimit": {
                "TotalCodeSize": settings.code_storage_limit,
                "CodeSizeUnzipped": crate::service::limits::MAX_UNZIPPED_BYTES,
                "CodeSizeZipped": crate::service::limits::MAX_ZIPPED_BYTES,
                "ConcurrentExecutions": settings.concurrency,
                "UnreservedConcurrentExecutions": settings.unreserved,
            },
            "AccountUsage": {
                "TotalCodeSize": settings.total_code_size,
                "FunctionCount": settings.function_count,
            },
        }),
    )
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Destination {
    destination: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DestinationConfig {
    on_success: Option<Destination>,
    on_failure: Option<Destination>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct EventInvokeConfigBody {
    maximum_retry_attempts: Option<u32>,
    maximum_event_age_in_seconds: Option<u32>,
    destination_config: Option<DestinationConfig>,
}

/// `replace`: Put (what is left out goes back to its default); else Update (merge).
async fn write_event_invoke_config(
    service: Arc<Service>,
    raw: String,
    params: HashMap<String, String>,
    body: Bytes,
    replace: bool,
) -> Answer {
    let (name, qualifier) = function_name(&raw, &params)?;
    let request: EventInvokeConfigBody = parse(&body)?;
    let destinations = request.destination_config;
    let destination = |pick: fn(&DestinationConfig) -> &Option<Destination>| -> Option<Option<String>> {
        match destinations.as_ref().map(pick) {
            Some(Some(d)) => Some(d.destination.clone()),
            _ if replace => Some(None),
            _ => None,
        }
    };
    let change = EventConfigChange {
        max_retry_attempts: request
            .maximum_retry_attempts
            .or(replace.then_some(model::DEFAULT_MAX_RETRY_ATTEMPTS)),
        max_event_age_s: request
            .maximum_event_age_in_seconds
            .or(replace.then_some(model::DEFAULT_MAX_EVENT_AGE_S)),
        on_success: destination(|d| &d.on_success),
        on_failure: destination(|d| &d.on_failure),
    };
    let config = service.events.put_config(&name, &qualifier, change).await?;
    ok(StatusCode::OK, shapes::event_invoke_config(&service, &config))
}

async fn put_event_invoke_config(
    State(service): Api,
    Path(raw): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Answer {
    write_event_invoke_config(service, raw, params, body, true).await
}

async fn update_event_invoke_config(
    State(service): Api,
    Path(raw): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Answer {
    write_event_invoke_config(service, raw, params, body, false).await
}

async fn get_event_invoke_config(State(service): Api, Path(raw): Path<String>, Query(params): Params) -> Answer {
    let (name, qualifier) = function_name(&raw, &params)?;
    let config = service.events.get_config(&name, &qualifier).await?;
    ok(StatusCode::OK, shapes::event_invoke_config(&service, &config))
}

async fn delete_event_invoke_config(State(service): Api, Path(raw): Path<String>, Query(params): Params) -> Answer {
    let (name, qualifier) = function_name(&raw, &params)?;
    service.events.delete_config(&name, &qualifier).await?;
    no_content()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, LambdaError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| LambdaError::invalid(format!("{name} is not ASCII")))
        })
        .transpose()
}

async fn invoke(
    State(service): Api,
    Path(raw): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let (name, qualifier) = function_name(&raw, &params)?;
    let invocation_type = match header(&headers, "x-amz-invocation-type")? {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("Event") => InvocationType::Event,
        Some("DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(LambdaError::invalid(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )))
        }
    };
    let log_tail = match header(&headers, "x-amz-log-type")? {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(LambdaError::invalid(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [Tail, None]"
            )))
        }
    };
    // Base64-encoded JSON on the wire; the runtime gets the JSON, which the
    // service checks for every adapter.
    let client_context = match header(&headers, "x-amz-client-context")? {
        None => None,
        Some(encoded) => {
            let decoded = BASE64
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| LambdaError::invalid("Client context must be a valid Base64-encoded JSON object."))?;
            Some(decoded)
        }
    };
    let options = InvokeOptions {
        invocation_type,
        log_tail,
        client_context,
        region: None,
        max_retry_attempts: None,
        max_event_age_s: None,
    };
    let result = service.invocations.invoke(&name, &qualifier, body, options).await?;
    let mut response_headers = super::headers_with_request_id(&result.request_id);
    let status = match invocation_type {
        InvocationType::Event => StatusCode::ACCEPTED,
        InvocationType::DryRun => StatusCode::NO_CONTENT,
        InvocationType::RequestResponse => StatusCode::OK,
    };
    if invocation_type != InvocationType::Event {
        if let Ok(value) = HeaderValue::from_str(&result.executed_version) {
            response_headers.insert("X-Amz-Executed-Version", value);
        }
    }
    if let Some(error) = result
        .function_error
        .as_deref()
        .and_then(|e| HeaderValue::from_str(e).ok())
    {
        response_headers.insert("X-Amz-Function-Error", error);
    }
    if log_tail && invocation_type == InvocationType::RequestResponse {
        let tail = BASE64.encode(result.log_tail.unwrap_or_default());
        if let Ok(value) = HeaderValue::from_str(&tail) {
            response_headers.insert("X-Amz-Log-Result", value);
        }
    }
    if status == StatusCode::OK {
        response_headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok((status, response_headers, result.payload).into_response());
    }
    Ok((status, response_headers).into_response())
}
