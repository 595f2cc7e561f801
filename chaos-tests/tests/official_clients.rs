//! AWS's own runtime interface clients, unmodified, as `provided` runtimes:
//! `awslambdaric` from PyPI and the Rust `lambda_runtime` crate.

use std::os::unix::fs::PermissionsExt;

use chaos_tests::{binary, body, TestCluster};
use floe_client::proto::FunctionConfig;
use floe_client::Client;
use serde_json::json;

fn provided(handler: &str) -> FunctionConfig {
    FunctionConfig {
        runtime: "provided.al2023".into(),
        handler: handler.into(),
        memory_mb: 128,
        timeout_s: 10,
        environment: Default::default(),
        description: String::new(),
    }
}

fn executable(path: &std::path::Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The interpreter the node runs Python with (the one `.ci/run` installs awslambdaric into).
fn python() -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", "import awslambdaric, sys; print(sys.executable)"])
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "awslambdaric is not installed for python3 (python3 -m pip install awslambdaric): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

async fn check_echo(client: &Client, name: &str) {
    let response = client.invoke(name, "", br#"{"hello":"ric"}"#.to_vec()).await.unwrap();
    assert_eq!(
        response.function_error,
        "",
        "{}",
        String::from_utf8_lossy(&response.payload)
    );
    let result = body(&response);
    assert_eq!(result["echo"], json!({"hello": "ric"}), "{result}");
    assert_eq!(result["request_id"], response.request_id.as_str(), "{result}");
    assert_eq!(result["function_name"], name, "{result}");
    let warm = client.invoke(name, "", br#"{"hello":"again"}"#.to_vec()).await.unwrap();
    assert!(!warm.cold_start, "the official client keeps its sandbox warm");
    assert_eq!(body(&warm)["echo"], json!({"hello": "again"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn awslambdaric_runs_a_python_handler() {
    let cluster = TestCluster::start(1).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "import os\n\ndef handler(event, context):\n    if 'fail' in event:\n        raise ValueError('asked to fail')\n    return {'echo': event, 'request_id': context.aws_request_id, 'function_name': context.function_name}\n",
    )
    .unwrap();
    let bootstrap = dir.path().join("bootstrap");
    std::fs::write(
        &bootstrap,
        format!("#!/bin/sh\nexec {} -m awslambdaric app.handler\n", python()),
    )
    .unwrap();
    executable(&bootstrap);
    let zip = floe_client::package::zip_directory(dir.path()).unwrap();
    client
        .create_function("ric-python", provided("app.handler"), zip)
        .await
        .unwrap();
    check_echo(&client, "ric-python").await;
    let failed = client
        .invoke("ric-python", "", br#"{"fail":1}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(failed.function_error, "Unhandled");
    assert_eq!(body(&failed)["errorMessage"], "asked to fail", "{}", body(&failed));
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_lambda_runtime_runs_as_a_bootstrap() {
    let cluster = TestCluster::start(1).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("bootstrap");
    std::fs::copy(binary("rust-bootstrap"), &bootstrap).unwrap();
    executable(&bootstrap);
    let zip = floe_client::package::zip_directory(dir.path()).unwrap();
    client
        .create_function("rust-fn", provided("bootstrap"), zip)
        .await
        .unwrap();
    check_echo(&client, "rust-fn").await;
    let failed = client.invoke("rust-fn", "", br#"{"fail":1}"#.to_vec()).await.unwrap();
    assert_eq!(failed.function_error, "Unhandled");
    assert!(
        body(&failed)["errorMessage"]
            .as_str()
            .unwrap()
            .contains("asked to fail"),
        "{}",
        body(&failed)
    );
}
