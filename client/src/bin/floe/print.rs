//! How `floe` prints what the cluster answers: tables for people, JSON with `--json`.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use floe_client::proto;

/// An empty table in floe's style.
pub fn table() -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table
}

pub fn print_function(json: bool, info: &proto::FunctionInfo) {
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

pub fn print_alias(json: bool, alias: &proto::AliasInfo) {
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
