//! The `floe` command-line tool: a thin layer over the SDK.
//!
//! Exit codes: 0 success; 1 unexpected error; 2 bad usage or invalid argument;
//! 3 not found; 4 conflict (already exists, revision mismatch, precondition);
//! 5 cluster unavailable; 6 the invoked function failed; 7 outcome unknown;
//! 8 throttled (over a concurrency quota, or no node has room: retry later).
//! 9 not authenticated (no, unknown or wrong access key).
//!
//! One module per command group (`functions`, `invoke`, `events`,
//! `cluster`), printing in `print`, exit codes in `failure`.

mod cluster;
mod events;
mod failure;
mod functions;
mod invoke;
mod print;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use floe_client::{Client, Error};

use failure::Failure;

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
    /// Talk TLS to the nodes (floed --tls-cert) and trust the CA certificate in this PEM file.
    #[arg(long, global = true, env = "FLOE_CA")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, inspect, change and delete functions.
    #[command(subcommand)]
    Function(functions::FunctionCommand),
    /// Publish and list immutable versions.
    #[command(subcommand)]
    Version(functions::VersionCommand),
    /// Named pointers to versions, with optional weighted routing.
    #[command(subcommand)]
    Alias(functions::AliasCommand),
    /// Invoke NAME[:QUALIFIER] and print its result (or, for an event, its request id).
    Invoke(invoke::InvokeArgs),
    /// Asynchronous events: queued and failed ones, and how they are retried.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Print a function's invocation logs from every node.
    Logs(invoke::LogsArgs),
    /// Cluster membership and status.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Region concurrency quotas.
    #[command(subcommand)]
    Quota(cluster::QuotaCommand),
    /// Access keys that sign requests (floe CLI, SDK, boto3, aws CLI).
    #[command(subcommand)]
    Auth(cluster::AuthCommand),
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let credentials = match &cli.credentials {
        Some(path) => Some(floe_client::auth::read_credentials_file(path, &cli.profile).map_err(Error::from)?),
        None => floe_client::auth::default_credentials().map_err(Error::from)?,
    };
    let ca = match &cli.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| Error::Endpoint {
            endpoint: cli.endpoint.join(","),
            message: format!("cannot read the CA certificate {}: {e}", path.display()),
        })?),
        None => None,
    };
    let client = Client::connect_tls(cli.endpoint.clone(), credentials, ca.as_deref())
        .await?
        .with_retry_for(cli.wait);
    let json = cli.json;
    match cli.command {
        Command::Function(command) => functions::function(&client, json, command).await,
        Command::Version(command) => functions::version(&client, json, command).await,
        Command::Alias(command) => functions::alias(&client, json, command).await,
        Command::Invoke(args) => invoke::invoke(&client, args).await,
        Command::Logs(args) => invoke::logs(&client, json, args).await,
        Command::Events(command) => events::run(&client, json, command).await,
        Command::Cluster(command) => cluster::cluster(&client, json, command).await,
        Command::Quota(command) => cluster::quota(&client, command).await,
        Command::Auth(command) => cluster::auth(&client, json, command).await,
    }
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
