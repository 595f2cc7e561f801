//! `floe function`, `floe version` and `floe alias`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use floe_client::proto::{self, ReadConsistency};
use floe_client::{package, Client};

use crate::failure::{usage, Failure};
use crate::print::{print_alias, print_function, table};

#[derive(Args)]
pub struct ConfigFlags {
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
pub enum FunctionCommand {
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
pub enum VersionCommand {
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
pub enum AliasCommand {
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

pub async fn function(client: &Client, json: bool, command: FunctionCommand) -> Result<(), Failure> {
    match command {
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
                let mut table = table();
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
    }
    Ok(())
}

pub async fn version(client: &Client, json: bool, command: VersionCommand) -> Result<(), Failure> {
    match command {
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
                let mut table = table();
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
    }
    Ok(())
}

pub async fn alias(client: &Client, json: bool, command: AliasCommand) -> Result<(), Failure> {
    match command {
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
    }
    Ok(())
}
