//! The `floe` CLI end to end against a real node: create a Python function
//! from a directory, invoke it, publish versions, route an alias.

use std::path::Path;

use chaos_tests::TestCluster;

/// Runs `floe` and returns (exit code, stdout, stderr).
fn floe(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    chaos_tests::run_floe(&[&["--endpoint", endpoint], args].concat())
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = floe(endpoint, args);
    assert_eq!(code, 0, "floe {args:?} failed: {stderr}");
    stdout
}

fn write_handler(dir: &Path, tag: &str) {
    std::fs::write(
        dir.join("app.py"),
        format!(
            "import helper\n\ndef handler(event, context):\n    return {{'tag': '{tag}', 'echo': event, 'version': context.function_version, 'greeting': helper.greet(event.get('name', 'world'))}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("helper.py"), "def greet(name):\n    return 'hello ' + name\n").unwrap();
}

fn invoke(endpoint: &str, target: &str) -> serde_json::Value {
    let stdout = ok(endpoint, &["invoke", target, "--payload", r#"{"name":"floe"}"#]);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn create_invoke_publish_and_route_an_alias() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1).await?;
    let endpoint = cluster.address(0);
    let code = tempfile::tempdir()?;
    write_handler(code.path(), "v1");
    let code_path = code.path().to_str().unwrap();

    ok(
        &endpoint,
        &[
            "function",
            "create",
            "greeter",
            "--runtime",
            "python3.11",
            "--handler",
            "app.handler",
            "--code",
            code_path,
        ],
    );
    let first = invoke(&endpoint, "greeter");
    assert_eq!(first["tag"], "v1");
    assert_eq!(first["greeting"], "hello floe");
    assert_eq!(first["echo"]["name"], "floe");
    assert_eq!(first["version"], "$LATEST");

    assert!(ok(&endpoint, &["version", "publish", "greeter"]).contains("version 1"));
    write_handler(code.path(), "v2");
    ok(&endpoint, &["function", "update", "greeter", "--code", code_path]);
    assert_eq!(
        invoke(&endpoint, "greeter")["tag"],
        "v2",
        "$LATEST runs the new code at once"
    );
    assert!(ok(&endpoint, &["version", "publish", "greeter"]).contains("version 2"));
    // Publishing an unchanged $LATEST returns the latest version.
    assert!(ok(&endpoint, &["version", "publish", "greeter"]).contains("version 2"));

    ok(&endpoint, &["alias", "create", "greeter", "live", "--version", "1"]);
    let through_alias = invoke(&endpoint, "greeter:live");
    assert_eq!(through_alias["tag"], "v1");
    assert_eq!(through_alias["version"], "1");
    ok(&endpoint, &["alias", "update", "greeter", "live", "--version", "2"]);
    let through_alias = invoke(&endpoint, "greeter:live");
    assert_eq!(through_alias["tag"], "v2");
    assert_eq!(through_alias["version"], "2");
    assert_eq!(invoke(&endpoint, "greeter:1")["tag"], "v1", "version 1 is immutable");

    let versions = ok(&endpoint, &["--json", "version", "list", "greeter"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&versions)?,
        serde_json::json!(["$LATEST", "1", "2"])
    );
    // Every invocation's log, from every node, framed by Lambda's lines.
    let mut logs = String::new();
    for _ in 0..50 {
        logs = ok(&endpoint, &["logs", "greeter"]);
        if logs.matches("REPORT RequestId").count() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logs.matches("START RequestId").count() >= 5, "{logs}");
    assert!(logs.contains("Version: 2"), "{logs}");
    // `floe logs -f` prints new invocations as they happen.
    let mut follower = chaos_tests::floe_command()
        .args(["--endpoint", &endpoint, "logs", "greeter", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = follower.stdout.take().expect("piped stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // It prints the logs so far, then the new invocation's: one START more than before.
    let before = logs.matches("START RequestId").count();
    let followed = invoke(&endpoint, "greeter:live");
    let started = std::time::Instant::now();
    let mut starts = 0;
    while starts <= before && started.elapsed() < std::time::Duration::from_secs(10) {
        if let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(200)) {
            starts += usize::from(line.starts_with("START RequestId:"));
        }
    }
    let seen = starts > before;
    follower.kill()?;
    let _ = follower.wait();
    assert!(seen, "floe logs -f printed the new invocation ({followed})");
    let status = ok(&endpoint, &["cluster", "status"]);
    assert!(status.contains("leader"), "{status}");
    // The answering node's background workers, by name.
    for worker in [
        "heartbeats running",
        "event-dispatcher running",
        "sandbox-evictor running",
    ] {
        assert!(status.contains(worker), "{worker}: {status}");
    }

    // Events: accepted with a request id, run, and (failing, without retries) kept for replay.
    let stdout = ok(&endpoint, &["function", "concurrency", "greeter", "0"]);
    assert!(stdout.contains("greeter"), "{stdout}");
    let (code, _, stderr) = floe(&endpoint, &["invoke", "greeter"]);
    assert_eq!(code, 8, "a function reserved at 0 is throttled: {stderr}");
    assert!(
        stderr.contains("ReservedFunctionConcurrentInvocationLimitExceeded"),
        "{stderr}"
    );
    ok(&endpoint, &["function", "concurrency", "greeter"]);
    ok(&endpoint, &["events", "config", "greeter", "--max-retry-attempts", "0"]);
    let shown = ok(&endpoint, &["events", "config", "greeter"]);
    assert!(
        shown.contains("max retry attempts 0") && shown.contains("failed-event store"),
        "{shown}"
    );
    let (code, _, stderr) = floe(&endpoint, &["invoke", "greeter", "--type", "dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("(204)"), "{stderr}");
    let request_id = ok(&endpoint, &["invoke", "greeter", "--type", "event", "--payload", "[1]"]);
    let request_id = request_id.trim();
    assert_eq!(request_id.len(), 36, "a request id: {request_id}");
    let started = std::time::Instant::now();
    let listed = loop {
        let listed = ok(&endpoint, &["--json", "events", "failed", "greeter"]);
        if listed.contains(request_id) || started.elapsed() > std::time::Duration::from_secs(20) {
            break listed;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // The handler calls event.get on a list: it fails, and with no retries the store keeps it.
    assert!(
        listed.contains(request_id) && listed.contains("RetriesExhausted"),
        "{listed}"
    );
    assert!(listed.contains("AttributeError"), "{listed}");
    let replayed = ok(&endpoint, &["events", "failed", "greeter", "--replay"]);
    assert!(replayed.contains("replayed 1"), "{replayed}");
    let deleted = loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let listed = ok(&endpoint, &["--json", "events", "failed", "greeter"]);
        if listed.contains(request_id) || started.elapsed() > std::time::Duration::from_secs(40) {
            break ok(
                &endpoint,
                &["events", "failed", "greeter", "--delete", "--id", request_id],
            );
        }
    };
    assert!(
        deleted.contains("deleted 1"),
        "the replayed event failed again and came back: {deleted}"
    );

    // Errors a person can act on, with distinct exit codes.
    let (code, _, stderr) = floe(&endpoint, &["invoke", "missing"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("function missing not found"), "{stderr}");
    let (code, _, stderr) = floe(
        &endpoint,
        &[
            "function",
            "create",
            "greeter",
            "--runtime",
            "python3.11",
            "--handler",
            "app.handler",
            "--code",
            code_path,
        ],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    let (code, _, stderr) = floe(
        &endpoint,
        &[
            "function",
            "create",
            "bad name",
            "--runtime",
            "python3.11",
            "--handler",
            "app.handler",
            "--code",
            code_path,
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = floe("127.0.0.1:1", &["function", "list"]);
    assert_eq!(code, 5, "an unreachable cluster: {stderr}");
    Ok(())
}
