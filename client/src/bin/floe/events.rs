//! `floe events`: queued and failed asynchronous events, and how they are retried.

use clap::Subcommand;
use floe_client::{proto, Client};

use crate::failure::Failure;
use crate::invoke::seconds;
use crate::print::table;

#[derive(Subcommand)]
pub enum EventsCommand {
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

pub async fn run(client: &Client, json: bool, command: EventsCommand) -> Result<(), Failure> {
    match command {
        EventsCommand::Failed {
            name,
            replay,
            delete,
            ids,
        } => {
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
                    let mut table = table();
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
        EventsCommand::Queued { name } => {
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
                let mut table = table();
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
        EventsCommand::Config {
            target,
            max_retry_attempts,
            max_event_age,
            on_success,
            on_failure,
            delete,
        } => {
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
    }
    Ok(())
}
