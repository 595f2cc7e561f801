//! The `floe` command-line tool: a thin layer over the SDK.
//!
//! Exit codes: 0 success; 1 unexpected error; 2 bad usage or invalid argument;
//! 3 not found; 4 conflict (already exists, revision mismatch, precondition);
//! 5 cluster unavailable; 6 the invoked function failed; 7 outcome unknown;
//! 8 throttled (over a concurrency quota, or no node has room: retry later).
//! 9 not authenticated (no, unknown or wrong access key).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use floe_client::proto::{self, ReadConsistency};
use floe_client::{package, Client, Error};

#[derive(Parser)]
#[command(
    name = "floe",
    version,
    about = "Drive a floe cluster: functions, versions, aliases, invocations, membership."
)]
struct Cli {
    /// Cluster endpoints (host:port), comma-separated; any member works.
    #[arg(
        long,
        short,
        global = true,
        env = "FLOE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    endpoint: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// How long to keep retrying while no node answers or no leader is elected.
    #[arg(long, global = true, default_value = "5s", value_parser = humantime::parse_duration)]
    wait: std::time::Duration,
    /// Access key file (AWS shared-credentials format). Without it: FLOE_ACCESS_KEY_ID and
    /// FLOE_SECRET_ACCESS_KEY, else ./floe-data/credentials (written by a node started here).
    #[arg(long, global = true, env = "FLOE_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// The profile to read from the credentials file.
    #[arg(long, global = true, env = "FLOE_PROFILE", default_value = "default")]
    profile: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, inspect, change and delete functions.
    #[command(subcommand)]
    Function(FunctionCommand),
    /// Publish and list immutable versions.
    #[command(subcommand)]
    Version(VersionCommand),
    /// Named pointers to versions, with optional weighted routing.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Invoke NAME[:QUALIFIER] and print its result (or, for an event, its request id).
    Invoke {
        /// Function name, optionally with :VERSION or :ALIAS.
        target: String,
        /// The event: JSON text, or @FILE to read it from a file.
        #[arg(long, short, default_value = "{}")]
        payload: String,
        /// Print the tail of the invocation's log (START … REPORT) to stderr.
        #[arg(long)]
        log: bool,
        /// request-response: run now and wait; event: queue it (committed
        /// through Raft) and return at once; dry-run: only check the request.
        #[arg(long = "type", value_enum, default_value = "request-response")]
        invocation_type: InvocationTypeArg,
        /// Count against this region's quota instead of the entry node's.
        #[arg(long)]
        region: Option<String>,
        /// For events: retries after a failure (0–2), over the function's event config.
        #[arg(long)]
        max_retry_attempts: Option<u32>,
        /// For events: drop (to the failure destination) after this long, 1m–6h.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_event_age: Option<std::time::Duration>,
    },
    /// Asynchronous events: the failed-event store.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Print a function's invocation logs from every node.
    Logs {
        name: String,
        /// Keep printing new logs as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// Only logs from the last DURATION, e.g. 10m or 2h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
    },
    /// Cluster membership and status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Region concurrency quotas.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Access keys that sign requests (floe CLI, SDK, boto3, aws CLI).
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Create, list and delete access keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an access key and print its secret (shown this once only).
    Create {
        #[arg(long, default_value = "")]
        description: String,
        /// Also write the key to FILE (AWS shared-credentials format, mode 0600).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// List access keys (ids and descriptions; secrets are never kept).
    List,
    /// Delete an access key: requests signed with it are refused from then on.
    Delete { access_key_id: String },
}

#[derive(Args)]
struct ConfigFlags {
    /// Runtime id, e.g. python3.11, nodejs20.x, provided.al2023.
    #[arg(long)]
    runtime: Option<String>,
    /// Handler, e.g. app.handler (module.function).
    #[arg(long)]
    handler: Option<String>,
    /// Memory in MB (128–10240).
    #[arg(long)]
    memory: Option<u32>,
    /// Timeout in seconds (1–900).
    #[arg(long)]
    timeout: Option<u32>,
    /// Environment variable KEY=VALUE (repeatable); replaces the whole environment.
    #[arg(long = "env", value_parser = parse_key_value)]
    environment: Vec<(String, String)>,
    #[arg(long)]
    description: Option<String>,
    /// Code: a directory (zipped on the fly) or a .zip file.
    #[arg(long)]
    code: Option<PathBuf>,
}

#[derive(Subcommand)]
enum FunctionCommand {
    /// Create a function from a directory or zip file.
    Create {
        name: String,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Show a function's $LATEST.
    Get {
        name: String,
        /// Read this node's state without asking the leader (may be behind).
        #[arg(long)]
        stale: bool,
    },
    /// List functions.
    List {
        #[arg(long)]
        stale: bool,
    },
    /// Change $LATEST: only the flags given change.
    Update {
        name: String,
        #[command(flatten)]
        config: ConfigFlags,
        /// Refuse the update unless $LATEST still has this revision id.
        #[arg(long)]
        if_revision: Option<String>,
    },
    /// Delete a function with its versions and aliases.
    Delete { name: String },
    /// Reserve concurrency for a function (omit N to remove the reservation).
    Concurrency { name: String, reserved: Option<u32> },
}

#[derive(Subcommand)]
enum VersionCommand {
    /// Freeze $LATEST as a new version (or return the latest, if unchanged).
    Publish {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List $LATEST and the published versions.
    List { name: String },
}

#[derive(Subcommand)]
enum AliasCommand {
    /// Point a new alias at a version.
    Create {
        function: String,
        name: String,
        #[arg(long)]
        version: String,
        /// Send a share of traffic to a second version: VERSION=WEIGHT, e.g. 2=0.1.
        #[arg(long, value_parser = parse_routing)]
        routing: Option<(String, f64)>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change an alias: only the flags given change.
    Update {
        function: String,
        name: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long, value_parser = parse_routing, conflicts_with = "no_routing")]
        routing: Option<(String, f64)>,
        /// Remove the alias's routing.
        #[arg(long)]
        no_routing: bool,
        #[arg(long)]
        description: Option<String>,
    },
    Get {
        function: String,
        name: String,
    },
    List {
        function: String,
    },
    Delete {
        function: String,
        name: String,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Nodes, roles, regions, leader, Raft term and index.
    Status,
    /// Add the node at ADDRESS (started with --no-bootstrap) to the cluster.
    Add { address: String },
    /// Remove node ID from the cluster.
    Remove { id: u64 },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InvocationTypeArg {
    RequestResponse,
    Event,
    DryRun,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List NAME's events that failed for good (no failure destination), or replay or delete them.
    Failed {
        name: String,
        /// Queue them again as new events (attempts and age start over).
        #[arg(long, conflicts_with = "delete")]
        replay: bool,
        /// Delete them.
        #[arg(long)]
        delete: bool,
        /// Only these event ids (repeatable); default: all of NAME's.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
    /// List NAME's events still queued: accepted, not yet run to an outcome, soonest due first.
    Queued { name: String },
    /// Show or change how NAME[:QUALIFIER]'s events are retried and where their records go.
    Config {
        target: String,
        /// Retries after a failure, 0–2 (default 2).
        #[arg(long)]
        max_retry_attempts: Option<u32>,
        /// Maximum age of an event, 1m–6h (default 6h).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_event_age: Option<std::time::Duration>,
        /// Function that gets a record of each success ("" to clear).
        #[arg(long)]
        on_success: Option<String>,
        /// Function that gets a record of each final failure ("" to clear; default: the failed-event store).
        #[arg(long)]
        on_failure: Option<String>,
        /// Remove the configuration (back to the defaults).
        #[arg(long)]
        delete: bool,
    },
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Set REGION's concurrency quota.
    Set { region: String, concurrency: u32 },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.to_string(), value.to_string()))
}

fn parse_routing(text: &str) -> Result<(String, f64), String> {
    let (version, weight) = text
        .split_once('=')
        .ok_or_else(|| format!("expected VERSION=WEIGHT, got {text:?}"))?;
    let weight: f64 = weight
        .parse()
        .map_err(|_| format!("weight {weight:?} is not a number"))?;
    Ok((version.to_string(), weight))
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        if let Some(reason) = error.throttle_reason() {
            return Failure {
                code: 8,
                message: format!("throttled ({reason}): {error}"),
            };
        }
        let code = match error.code() {
            Some(tonic::Code::InvalidArgument) | Some(tonic::Code::ResourceExhausted) => 2,
            Some(tonic::Code::NotFound) => 3,
            Some(tonic::Code::AlreadyExists) | Some(tonic::Code::FailedPrecondition) => 4,
            Some(tonic::Code::Unavailable) | Some(tonic::Code::DeadlineExceeded) => 5,
            Some(tonic::Code::Unknown) => 7,
            Some(tonic::Code::Unauthenticated) | Some(tonic::Code::PermissionDenied) => 9,
            None => 2,
            _ => 1,
        };
        let mut message = error.to_string();
        if code == 9 {
            message.push_str(
                "\nGive an access key with --credentials FILE, or FLOE_ACCESS_KEY_ID and FLOE_SECRET_ACCESS_KEY \
                 (a new cluster's first node wrote one to <data dir>/credentials; `floe auth key create` makes more).",
            );
        }
        Failure { code, message }
    }
}

/// Whole seconds; a duration past `u32::MAX` seconds stays out of range (the cluster refuses it) rather than wrapping.
fn seconds(duration: std::time::Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// Writes a key in AWS's shared-credentials format, readable by the owner only.
fn write_credentials(path: &std::path::Path, id: &str, secret: &str) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| usage(format!("cannot create {}: {e}", path.display())))?;
    writeln!(
        file,
        "[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}"
    )
    .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn consistency(stale: bool) -> ReadConsistency {
    if stale {
        ReadConsistency::Stale
    } else {
        ReadConsistency::Linearizable
    }
}

fn load_code(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    package::load(path).map_err(|e| usage(format!("cannot read code at {}: {e}", path.display())))
}

fn environment(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

fn print_function(json: bool, info: &proto::FunctionInfo) {
    let config = info.config.clone().unwrap_or_default();
    let code = info.code.clone().unwrap_or_default();
    if json {
        let value = serde_json::json!({
            "name": info.name, "runtime": config.runtime, "handler": config.handler,
            "memory_mb": config.memory_mb, "timeout_s": config.timeout_s,
            "environment": config.environment, "description": config.description,
            "code_sha256": code.sha256, "code_size": code.size, "revision_id": info.revision_id,
            "latest_version": info.latest_version, "reserved_concurrency": info.reserved_concurrency,
        });
        println!("{value}");
        return;
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let rows: Vec<(&str, String)> = vec![
        ("name", info.name.clone()),
        ("runtime", config.runtime),
        ("handler", config.handler),
        ("memory", format!("{} MB", config.memory_mb)),
        ("timeout", format!("{} s", config.timeout_s)),
        (
            "environment",
            config.environment.keys().cloned().collect::<Vec<_>>().join(", "),
        ),
        ("description", config.description),
        ("code", format!("sha256:{} ({} bytes)", code.sha256, code.size)),
        ("revision", info.revision_id.clone()),
        ("latest version", info.latest_version.to_string()),
        (
            "reserved concurrency",
            info.reserved_concurrency
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    for (key, value) in rows {
        table.add_row(vec![key.to_string(), value]);
    }
    println!("{table}");
}

fn print_alias(json: bool, alias: &proto::AliasInfo) {
    let routing = alias
        .routing
        .as_ref()
        .map(|r| format!("{}={}", r.additional_version, r.weight))
        .unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({"function": alias.function, "name": alias.name, "version": alias.version,
                "routing": routing, "description": alias.description, "revision_id": alias.revision_id})
        );
    } else {
        println!("{}:{} -> {} {}", alias.function, alias.name, alias.version, routing);
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let credentials = match &cli.credentials {
        Some(path) => Some(floe_client::auth::read_credentials_file(path, &cli.profile).map_err(Error::from)?),
        None => floe_client::auth::default_credentials().map_err(Error::from)?,
    };
    let client = Client::connect_with(cli.endpoint.clone(), credentials)
        .await?
        .with_retry_for(cli.wait);
    let json = cli.json;
    match cli.command {
        Command::Function(command) => match command {
            FunctionCommand::Create { name, config } => {
                let code = config
                    .code
                    .as_ref()
                    .ok_or_else(|| usage("--code DIR|ZIP is required"))?;
                let zip = load_code(code)?;
                let wire = proto::FunctionConfig {
                    runtime: config.runtime.ok_or_else(|| usage("--runtime is required"))?,
                    handler: config.handler.ok_or_else(|| usage("--handler is required"))?,
                    memory_mb: config.memory.unwrap_or(128),
                    timeout_s: config.timeout.unwrap_or(3),
                    environment: environment(&config.environment),
                    description: config.description.unwrap_or_default(),
                };
                print_function(json, &client.create_function(&name, wire, zip).await?);
            }
            FunctionCommand::Get { name, stale } => {
                print_function(json, &client.get_function(&name, consistency(stale)).await?)
            }
            FunctionCommand::List { stale } => {
                let functions = client.list_functions(consistency(stale)).await?;
                if json {
                    let names: Vec<_> = functions.iter().map(|f| f.name.clone()).collect();
                    println!("{}", serde_json::json!(names));
                } else {
                    let mut table = Table::new();
                    table.load_preset(UTF8_FULL_CONDENSED);
                    table.set_header(vec![
                        "NAME",
                        "RUNTIME",
                        "HANDLER",
                        "MEMORY",
                        "TIMEOUT",
                        "LATEST VERSION",
                    ]);
                    for function in functions {
                        let config = function.config.unwrap_or_default();
                        table.add_row(vec![
                            function.name,
                            config.runtime,
                            config.handler,
                            format!("{} MB", config.memory_mb),
                            format!("{} s", config.timeout_s),
                            function.latest_version.to_string(),
                        ]);
                    }
                    println!("{table}");
                }
            }
            FunctionCommand::Update {
                name,
                config,
                if_revision,
            } => {
                let zip_file = config.code.as_deref().map(load_code).transpose()?;
                let request = proto::UpdateFunctionRequest {
                    name,
                    runtime: config.runtime,
                    handler: config.handler,
                    memory_mb: config.memory,
                    timeout_s: config.timeout,
                    environment: (!config.environment.is_empty()).then(|| proto::Environment {
                        variables: environment(&config.environment),
                    }),
                    description: config.description,
                    zip_file,
                    expected_revision_id: if_revision,
                };
                print_function(json, &client.update_function(request).await?);
            }
            FunctionCommand::Delete { name } => {
                client.delete_function(&name).await?;
                eprintln!("deleted function {name}");
            }
            FunctionCommand::Concurrency { name, reserved } => {
                print_function(json, &client.put_function_concurrency(&name, reserved).await?)
            }
        },
        Command::Version(command) => match command {
            VersionCommand::Publish { name, description } => {
                let version = client.publish_version(&name, &description).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"function": version.function, "version": version.version})
                    );
                } else {
                    println!("published {} version {}", version.function, version.version);
                }
            }
            VersionCommand::List { name } => {
                let versions = client.list_versions(&name).await?;
                if json {
                    let list: Vec<_> = versions.iter().map(|v| v.version.clone()).collect();
                    println!("{}", serde_json::json!(list));
                } else {
                    let mut table = Table::new();
                    table.load_preset(UTF8_FULL_CONDENSED);
                    table.set_header(vec!["VERSION", "RUNTIME", "HANDLER", "CODE SHA256", "DESCRIPTION"]);
                    for version in versions {
                        let config = version.config.unwrap_or_default();
                        let code = version.code.unwrap_or_default();
                        table.add_row(vec![
                            version.version,
                            config.runtime,
                            config.handler,
                            code.sha256.chars().take(12).collect(),
                            version.description,
                        ]);
                    }
                    println!("{table}");
                }
            }
        },
        Command::Alias(command) => match command {
            AliasCommand::Create {
                function,
                name,
                version,
                routing,
                description,
            } => {
                let request = proto::CreateAliasRequest {
                    function,
                    name,
                    version,
                    routing: routing.map(|(additional_version, weight)| proto::AliasRouting {
                        additional_version,
                        weight,
                    }),
                    description,
                };
                print_alias(json, &client.create_alias(request).await?);
            }
            AliasCommand::Update {
                function,
                name,
                version,
                routing,
                no_routing,
                description,
            } => {
                let routing = match (routing, no_routing) {
                    (Some((additional_version, weight)), _) => Some(proto::AliasRouting {
                        additional_version,
                        weight,
                    }),
                    (None, true) => Some(proto::AliasRouting::default()),
                    (None, false) => None,
                };
                let request = proto::UpdateAliasRequest {
                    function,
                    name,
                    version,
                    routing,
                    description,
                    expected_revision_id: None,
                };
                print_alias(json, &client.update_alias(request).await?);
            }
            AliasCommand::Get { function, name } => print_alias(json, &client.get_alias(&function, &name).await?),
            AliasCommand::List { function } => {
                for alias in client.list_aliases(&function).await? {
                    print_alias(json, &alias);
                }
            }
            AliasCommand::Delete { function, name } => {
                client.delete_alias(&function, &name).await?;
                eprintln!("deleted alias {function}:{name}");
            }
        },
        Command::Invoke {
            target,
            payload,
            log,
            invocation_type,
            region,
            max_retry_attempts,
            max_event_age,
        } => {
            let (function, qualifier) = target.split_once(':').unwrap_or((&target, ""));
            let payload = match payload.strip_prefix('@') {
                Some(path) => {
                    std::fs::read(path).map_err(|e| usage(format!("cannot read payload file {path}: {e}")))?
                }
                None => payload.into_bytes(),
            };
            let result = client
                .invoke_with(proto::InvokeRequest {
                    function: function.to_string(),
                    qualifier: qualifier.to_string(),
                    payload,
                    log_tail: log,
                    invocation_type: match invocation_type {
                        InvocationTypeArg::RequestResponse => proto::InvocationType::RequestResponse,
                        InvocationTypeArg::Event => proto::InvocationType::Event,
                        InvocationTypeArg::DryRun => proto::InvocationType::DryRun,
                    } as i32,
                    region: region.unwrap_or_default(),
                    max_retry_attempts,
                    max_event_age_s: max_event_age.map(seconds),
                    ..Default::default()
                })
                .await?;
            match result.status_code {
                202 => {
                    println!("{}", result.request_id);
                    eprintln!("accepted event {} (202)", result.request_id);
                    return Ok(());
                }
                204 => {
                    eprintln!(
                        "dry run: {target} resolves to version {} (204)",
                        result.executed_version
                    );
                    return Ok(());
                }
                _ => {}
            }
            println!("{}", String::from_utf8_lossy(&result.payload));
            if log {
                eprint!("{}", result.log_result);
            }
            eprintln!(
                "executed version {} on node {} (request {}{})",
                result.executed_version,
                result.node_id,
                result.request_id,
                if result.cold_start { ", cold start" } else { "" }
            );
            if !result.function_error.is_empty() {
                return Err(Failure {
                    code: 6,
                    message: format!("the function failed ({})", result.function_error),
                });
            }
        }
        Command::Events(EventsCommand::Failed {
            name,
            replay,
            delete,
            ids,
        }) => {
            if replay {
                let count = client.replay_failed_events(&name, ids).await?;
                println!("replayed {count} failed events of {name}");
            } else if delete {
                let count = client.delete_failed_events(&name, ids).await?;
                println!("deleted {count} failed events of {name}");
            } else {
                let events = client.list_failed_events(&name).await?;
                if json {
                    for e in &events {
                        println!(
                            "{}",
                            serde_json::json!({"id": e.id, "function": e.function, "qualifier": e.qualifier,
                                "payload": e.payload, "condition": e.condition, "attempts": e.attempts,
                                "last_error": e.last_error, "accepted_ms": e.accepted_ms, "failed_ms": e.failed_ms})
                        );
                    }
                } else {
                    let mut table = Table::new();
                    table.load_preset(UTF8_FULL_CONDENSED);
                    table.set_header(vec![
                        "ID",
                        "QUALIFIER",
                        "CONDITION",
                        "ATTEMPTS",
                        "LAST ERROR",
                        "PAYLOAD",
                    ]);
                    for e in &events {
                        table.add_row(vec![
                            e.id.clone(),
                            e.qualifier.clone(),
                            e.condition.clone(),
                            e.attempts.to_string(),
                            e.last_error.chars().take(80).collect(),
                            e.payload.chars().take(60).collect(),
                        ]);
                    }
                    println!("{table}");
                    println!("{} failed events", events.len());
                }
            }
        }
        Command::Events(EventsCommand::Queued { name }) => {
            let events = client.list_queued_events(&name).await?;
            if json {
                for e in &events {
                    println!(
                        "{}",
                        serde_json::json!({"id": e.id, "qualifier": e.qualifier, "attempts": e.attempts,
                            "accepted_ms": e.accepted_ms, "due_ms": e.due_ms, "last_error": e.last_error,
                            "max_retry_attempts": e.max_retry_attempts, "max_event_age_s": e.max_event_age_s})
                    );
                }
            } else {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let seconds = |ms: i64| format!("{:.1} s", ms as f64 / 1000.0);
                let mut table = Table::new();
                table.load_preset(UTF8_FULL_CONDENSED);
                table.set_header(vec!["ID", "QUALIFIER", "AGE", "ATTEMPTS", "DUE IN", "LAST ERROR"]);
                for e in &events {
                    table.add_row(vec![
                        e.id.clone(),
                        e.qualifier.clone(),
                        seconds(now_ms.saturating_sub(e.accepted_ms)),
                        format!("{}/{}", e.attempts, e.max_retry_attempts + 1),
                        if e.due_ms <= now_ms {
                            "now".to_string()
                        } else {
                            seconds(e.due_ms - now_ms)
                        },
                        e.last_error.chars().take(80).collect(),
                    ]);
                }
                println!("{table}");
                println!("{} queued events", events.len());
            }
        }
        Command::Events(EventsCommand::Config {
            target,
            max_retry_attempts,
            max_event_age,
            on_success,
            on_failure,
            delete,
        }) => {
            let (function, qualifier) = target.split_once(':').unwrap_or((&target, ""));
            if delete {
                client.delete_event_invoke_config(function, qualifier).await?;
                println!("deleted the event invoke config of {target}");
                return Ok(());
            }
            let changing =
                max_retry_attempts.is_some() || max_event_age.is_some() || on_success.is_some() || on_failure.is_some();
            let config = if changing {
                client
                    .put_event_invoke_config(proto::PutEventInvokeConfigRequest {
                        function: function.to_string(),
                        qualifier: qualifier.to_string(),
                        max_retry_attempts,
                        max_event_age_s: max_event_age.map(seconds),
                        on_success,
                        on_failure,
                    })
                    .await?
            } else {
                client.get_event_invoke_config(function, qualifier).await?
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"function": config.function, "qualifier": config.qualifier,
                        "max_retry_attempts": config.max_retry_attempts, "max_event_age_s": config.max_event_age_s,
                        "on_success": config.on_success, "on_failure": config.on_failure})
                );
            } else {
                let or_default = |d: &str, default: &str| {
                    if d.is_empty() {
                        default.to_string()
                    } else {
                        d.to_string()
                    }
                };
                println!(
                    "{}:{}  max retry attempts {}  max event age {} s  on success: {}  on failure: {}",
                    config.function,
                    config.qualifier,
                    config.max_retry_attempts,
                    config.max_event_age_s,
                    or_default(&config.on_success, "-"),
                    or_default(&config.on_failure, "failed-event store")
                );
            }
        }
        Command::Auth(AuthCommand::Key(command)) => match command {
            KeyCommand::Create { description, output } => {
                let created = client.create_access_key(&description).await?;
                let key = created.key.unwrap_or_default();
                if let Some(path) = &output {
                    write_credentials(path, &key.access_key_id, &created.secret_access_key)?;
                }
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"access_key_id": key.access_key_id,
                            "secret_access_key": created.secret_access_key, "description": key.description})
                    );
                } else {
                    println!("access key id:     {}", key.access_key_id);
                    println!("secret access key: {}", created.secret_access_key);
                    eprintln!("The secret is shown this once: the cluster keeps only a digest of it.");
                }
            }
            KeyCommand::List => {
                let keys = client.list_access_keys().await?;
                if json {
                    let keys: Vec<_> = keys
                        .iter()
                        .map(|k| {
                            serde_json::json!({"access_key_id": k.access_key_id,
                            "description": k.description, "created_ms": k.created_ms})
                        })
                        .collect();
                    println!("{}", serde_json::json!(keys));
                } else {
                    let mut table = Table::new();
                    table.load_preset(UTF8_FULL_CONDENSED);
                    table.set_header(vec!["ACCESS KEY ID", "CREATED", "DESCRIPTION"]);
                    for key in keys {
                        let created =
                            std::time::UNIX_EPOCH + std::time::Duration::from_millis(key.created_ms.max(0) as u64);
                        table.add_row(vec![
                            key.access_key_id,
                            humantime::format_rfc3339_seconds(created).to_string(),
                            key.description,
                        ]);
                    }
                    println!("{table}");
                }
            }
            KeyCommand::Delete { access_key_id } => {
                client.delete_access_key(&access_key_id).await?;
                if !json {
                    println!("deleted access key {access_key_id}");
                }
            }
        },
        Command::Logs { name, follow, since } => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let mut cursor = now_ms - since.as_millis() as i64;
            loop {
                for record in client.get_logs(&name, cursor, 0).await? {
                    cursor = cursor.max(record.time_ms);
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"time_ms": record.time_ms, "node_id": record.node_id,
                                "version": record.version, "request_id": record.request_id, "text": record.text})
                        );
                    } else {
                        print!("{}", record.text);
                    }
                }
                if !follow {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        Command::Cluster(command) => match command {
            ClusterCommand::Status => {
                let status = client.cluster_status().await?;
                if json {
                    let nodes: Vec<_> = status
                        .nodes
                        .iter()
                        .map(|n| serde_json::json!({"id": n.id, "address": n.address, "region": n.region, "role": n.role, "voter": n.voter, "sandbox_mode": n.sandbox_mode,
                            "running": n.load.as_ref().map(|l| l.running), "idle_sandboxes": n.load.as_ref().map(|l| l.idle_sandboxes),
                            "free_memory_mb": n.load.as_ref().map(|l| l.free_memory_mb), "live": n.load.as_ref().map(|l| l.live)}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"node_id": status.node_id, "leader_id": status.leader_id, "term": status.term,
                            "last_log_index": status.last_log_index, "applied_index": status.applied_index, "nodes": nodes,
                            "regions": status.usage.iter().map(|u| serde_json::json!({"region": u.region, "running": u.running, "quota": u.quota})).collect::<Vec<_>>()})
                    );
                } else {
                    let mut table = Table::new();
                    table.load_preset(UTF8_FULL_CONDENSED);
                    table.set_header(vec![
                        "ID",
                        "ADDRESS",
                        "REGION",
                        "ROLE",
                        "VOTER",
                        "MATCHED INDEX",
                        "SANDBOX",
                        "RUNNING",
                        "IDLE",
                        "FREE MB",
                        "HEARTBEAT",
                    ]);
                    for node in &status.nodes {
                        table.add_row(vec![
                            node.id.to_string(),
                            node.address.clone(),
                            node.region.clone(),
                            node.role.clone(),
                            if node.voter { "yes" } else { "no" }.to_string(),
                            node.matched_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                            node.sandbox_mode.clone(),
                            node.load
                                .as_ref()
                                .map(|l| l.running.to_string())
                                .unwrap_or_else(|| "-".into()),
                            node.load
                                .as_ref()
                                .map(|l| l.idle_sandboxes.to_string())
                                .unwrap_or_else(|| "-".into()),
                            node.load
                                .as_ref()
                                .map(|l| l.free_memory_mb.to_string())
                                .unwrap_or_else(|| "-".into()),
                            node.load
                                .as_ref()
                                .map(|l| {
                                    format!("{} ms ago{}", l.last_heartbeat_ms, if l.live { "" } else { " (stale)" })
                                })
                                .unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    println!("{table}");
                    let leader = status
                        .leader_id
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "none".into());
                    println!(
                        "leader: {leader}   term: {}   last log index: {}   applied: {}   snapshot: {}   (answered by node {})",
                        status.term, status.last_log_index, status.applied_index, status.snapshot_index, status.node_id
                    );
                    for usage in &status.usage {
                        println!(
                            "region {}: {} running / quota {}",
                            usage.region, usage.running, usage.quota
                        );
                    }
                }
            }
            ClusterCommand::Add { address } => {
                let id = client.add_node(&address).await?;
                println!("added node {id} at {address}");
            }
            ClusterCommand::Remove { id } => {
                client.remove_node(id).await?;
                println!("removed node {id}");
            }
        },
        Command::Quota(QuotaCommand::Set { region, concurrency }) => {
            client.set_region_quota(&region, concurrency).await?;
            println!("region {region}: quota {concurrency}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("floe: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
