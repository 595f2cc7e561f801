//! `floe invoke` and `floe logs`.

use clap::Args;
use floe_client::{proto, Client};

use crate::failure::{usage, Failure};

/// The arguments of `floe invoke`.
#[derive(Args)]
pub struct InvokeArgs {
    /// Function name, optionally with :VERSION or :ALIAS.
    pub target: String,
    /// The event: JSON text, or @FILE to read it from a file.
    #[arg(long, short, default_value = "{}")]
    pub payload: String,
    /// Print the tail of the invocation's log (START … REPORT) to stderr.
    #[arg(long)]
    pub log: bool,
    /// request-response: run now and wait; event: queue it (committed
    /// through Raft) and return at once; dry-run: only check the request.
    #[arg(long = "type", value_enum, default_value = "request-response")]
    pub invocation_type: InvocationTypeArg,
    /// Count against this region's quota instead of the entry node's.
    #[arg(long)]
    pub region: Option<String>,
    /// For events: retries after a failure (0–2), over the function's event config.
    #[arg(long)]
    pub max_retry_attempts: Option<u32>,
    /// For events: drop (to the failure destination) after this long, 1m–6h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_event_age: Option<std::time::Duration>,
}

/// The arguments of `floe logs`.
#[derive(Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new logs as they arrive.
    #[arg(long, short)]
    pub follow: bool,
    /// Only logs from the last DURATION, e.g. 10m or 2h.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: std::time::Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum InvocationTypeArg {
    RequestResponse,
    Event,
    DryRun,
}

pub fn seconds(duration: std::time::Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

pub async fn invoke(client: &Client, args: InvokeArgs) -> Result<(), Failure> {
    let InvokeArgs {
        target,
        payload,
        log,
        invocation_type,
        region,
        max_retry_attempts,
        max_event_age,
    } = args;
    let (function, qualifier) = target.split_once(':').unwrap_or((&target, ""));
    let payload = match payload.strip_prefix('@') {
        Some(path) => std::fs::read(path).map_err(|e| usage(format!("cannot read payload file {path}: {e}")))?,
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
    Ok(())
}

pub async fn logs(client: &Client, json: bool, args: LogsArgs) -> Result<(), Failure> {
    let LogsArgs { name, follow, since } = args;
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
    Ok(())
}
