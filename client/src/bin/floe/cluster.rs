//! `floe cluster`, `floe quota` and `floe auth`.

use std::path::PathBuf;

use clap::Subcommand;
use floe_client::Client;

use crate::failure::{usage, Failure};
use crate::print::table;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Nodes, roles, regions, leader, Raft term and index.
    Status,
    /// Add the node started with --no-bootstrap whose gRPC address (its --listen) is ADDRESS:
    /// it is sent a one-use join token and joins with it.
    Add {
        #[arg(value_name = "ADDRESS")]
        address: String,
    },
    /// Remove node ID from the cluster (its certificate is refused at once).
    Remove { id: u64 },
    /// Join tokens, which admit new nodes (`floed --join ADDRESS --join-token TOKEN`).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a join token and print it (the cluster keeps only its digest).
    Create {
        /// How long it admits nodes, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// How many nodes it admits [default: any number until it expires].
        #[arg(long)]
        uses: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Set REGION's concurrency quota.
    Set { region: String, concurrency: u32 },
}

#[derive(Subcommand)]
pub enum AuthCommand {
    /// Create, list and delete access keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
pub enum KeyCommand {
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

/// When a certificate expires, from now ("in 29d 23h"), or "-" when unknown.
fn expiry(expires_ms: i64) -> String {
    if expires_ms <= 0 {
        return "-".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let left = std::time::Duration::from_secs(((expires_ms - now).max(0) / 1000) as u64 / 3600 * 3600);
    if left.is_zero() {
        "expired".into()
    } else {
        format!("in {}", humantime::format_duration(left))
    }
}

pub async fn cluster(client: &Client, json: bool, command: ClusterCommand) -> Result<(), Failure> {
    match command {
        ClusterCommand::Status => {
            let status = client.cluster_status().await?;
            if json {
                let nodes: Vec<_> = status
                        .nodes
                        .iter()
                        .map(|n| serde_json::json!({"id": n.id, "address": n.address, "peer_address": n.peer_address, "region": n.region, "role": n.role, "voter": n.voter, "sandbox_mode": n.sandbox_mode, "certificate_expires_ms": n.certificate_expires_ms,
                            "running": n.load.as_ref().map(|l| l.running), "idle_sandboxes": n.load.as_ref().map(|l| l.idle_sandboxes),
                            "free_memory_mb": n.load.as_ref().map(|l| l.free_memory_mb), "live": n.load.as_ref().map(|l| l.live)}))
                        .collect();
                println!(
                    "{}",
                    serde_json::json!({"node_id": status.node_id, "leader_id": status.leader_id, "term": status.term,
                            "last_log_index": status.last_log_index, "applied_index": status.applied_index, "nodes": nodes,
                            "regions": status.usage.iter().map(|u| serde_json::json!({"region": u.region, "running": u.running, "quota": u.quota})).collect::<Vec<_>>(),
                        "workers": status.workers.iter().map(|w| serde_json::json!({"name": w.name, "state": w.state})).collect::<Vec<_>>(),
                        "unknown_key_barriers": status.unknown_key_barriers,
                        "unverified_body_bytes_peak": status.unverified_body_bytes_peak})
                );
            } else {
                let mut table = table();
                table.set_header(vec![
                    "ID",
                    "ADDRESS",
                    "PEER ADDRESS",
                    "REGION",
                    "ROLE",
                    "VOTER",
                    "MATCHED INDEX",
                    "SANDBOX",
                    "CERT EXPIRES",
                    "RUNNING",
                    "IDLE",
                    "FREE MB",
                    "HEARTBEAT",
                ]);
                for node in &status.nodes {
                    table.add_row(vec![
                        node.id.to_string(),
                        node.address.clone(),
                        node.peer_address.clone(),
                        node.region.clone(),
                        node.role.clone(),
                        if node.voter { "yes" } else { "no" }.to_string(),
                        node.matched_index.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                        node.sandbox_mode.clone(),
                        expiry(node.certificate_expires_ms),
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
                            .map(|l| format!("{} ms ago{}", l.last_heartbeat_ms, if l.live { "" } else { " (stale)" }))
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
                let workers: Vec<String> = status
                    .workers
                    .iter()
                    .map(|w| format!("{} {}", w.name, w.state))
                    .collect();
                println!("workers of node {}: {}", status.node_id, workers.join(", "));
            }
        }
        ClusterCommand::Add { address } => {
            let id = client.add_node(&address).await?;
            println!("added node {id} at {address}");
        }
        ClusterCommand::Token(TokenCommand::Create { ttl, uses }) => {
            if uses == Some(0) {
                return Err(usage("--uses must be at least 1"));
            }
            let created = client.create_join_token(ttl, uses.unwrap_or(0)).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": created.token, "id": created.id, "expires_ms": created.expires_ms})
                );
            } else {
                println!("{}", created.token);
                eprintln!(
                    "join token {} admits {} until {} (Unix ms); start a node with --join ADDRESS --join-token TOKEN",
                    created.id,
                    uses.map(|n| format!("{n} node(s)"))
                        .unwrap_or_else(|| "any number of nodes".into()),
                    created.expires_ms
                );
            }
        }
        ClusterCommand::Remove { id } => {
            client.remove_node(id).await?;
            println!("removed node {id}");
        }
    }
    Ok(())
}

pub async fn quota(client: &Client, command: QuotaCommand) -> Result<(), Failure> {
    let QuotaCommand::Set { region, concurrency } = command;
    client.set_region_quota(&region, concurrency).await?;
    println!("region {region}: quota {concurrency}");
    Ok(())
}

pub async fn auth(client: &Client, json: bool, command: AuthCommand) -> Result<(), Failure> {
    let AuthCommand::Key(command) = command;
    match command {
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
                let mut table = table();
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
    }
    Ok(())
}
