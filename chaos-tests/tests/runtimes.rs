//! Each runtime against a real node: success, handler error, init errors,
//! timeout, out of memory, crash, environment, context, /tmp on a warm
//! sandbox, and cold versus warm starts.

use chaos_tests::{body, TestCluster, TestFunction};
use floe_client::proto::{InvokeRequest, InvokeResponse};
use floe_client::Client;
use serde_json::{json, Value};

/// One runtime's handlers, each a `(file, source)` pair exporting `handler`.
struct Runtime {
    id: &'static str,
    file: &'static str,
    /// A `bootstrap` shipped in the package (for `provided` runtimes).
    bootstrap: Option<&'static str>,
    ok: &'static str,
    fails: &'static str,
    import_error: &'static str,
    sleeps: &'static str,
    hogs_memory: &'static str,
    crashes: &'static str,
    context: &'static str,
    counts_in_tmp: &'static str,
}

const PYTHON: Runtime = Runtime {
    id: "python3.11",
    file: "app.py",
    bootstrap: None,
    ok: "def handler(event, context):\n    print('handled', event)\n    return {'echo': event}\n",
    fails: "class Boom(Exception):\n    pass\n\ndef handler(event, context):\n    raise Boom('it broke')\n",
    import_error: "import no_such_module\n\ndef handler(event, context):\n    return 1\n",
    sleeps: "import time\n\ndef handler(event, context):\n    time.sleep(30)\n",
    hogs_memory: "def handler(event, context):\n    hog = bytearray(400 * 1024 * 1024)\n    for i in range(0, len(hog), 4096):\n        hog[i] = 1\n    return len(hog)\n",
    crashes: "import os\n\ndef handler(event, context):\n    os._exit(3)\n",
    context: "import os\n\ndef handler(event, context):\n    return {'function_name': context.function_name, 'function_version': context.function_version,\n            'arn': context.invoked_function_arn, 'memory': context.memory_limit_in_mb,\n            'request_id': context.aws_request_id, 'remaining': context.get_remaining_time_in_millis(),\n            'log_group': context.log_group_name, 'log_stream': context.log_stream_name,\n            'client_context': context.client_context and {'custom': context.client_context.custom}, 'env': dict(os.environ)}\n",
    counts_in_tmp: "import os\n\ndef handler(event, context):\n    path = '/tmp/count'\n    count = int(open(path).read()) + 1 if os.path.exists(path) else 1\n    open(path, 'w').write(str(count))\n    return count\n",
};

const NODE: Runtime = Runtime {
    id: "nodejs20.x",
    file: "app.js",
    bootstrap: None,
    ok: "exports.handler = async (event, context) => { console.log('handled', JSON.stringify(event)); return { echo: event }; };\n",
    fails: "class Boom extends Error { constructor(m) { super(m); this.name = 'Boom'; } }\nexports.handler = async () => { throw new Boom('it broke'); };\n",
    import_error: "require('no-such-module');\nexports.handler = async () => 1;\n",
    sleeps: "exports.handler = () => new Promise((resolve) => setTimeout(resolve, 30000));\n",
    hogs_memory: "exports.handler = async () => { const hog = Buffer.alloc(400 * 1024 * 1024, 1); return hog.length; };\n",
    crashes: "exports.handler = async () => { process.exit(3); };\n",
    context: "exports.handler = async (event, context) => ({ function_name: context.functionName, function_version: context.functionVersion,\n  arn: context.invokedFunctionArn, memory: context.memoryLimitInMB, request_id: context.awsRequestId,\n  remaining: context.getRemainingTimeInMillis(), log_group: context.logGroupName, log_stream: context.logStreamName,\n  client_context: context.clientContext, env: process.env });\n",
    counts_in_tmp: "const fs = require('fs');\nexports.handler = async () => { const p = '/tmp/count'; const n = fs.existsSync(p) ? Number(fs.readFileSync(p, 'utf8')) + 1 : 1; fs.writeFileSync(p, String(n)); return n; };\n",
};

/// The `provided` runtime: the package's own `bootstrap` (here a shell script
/// that starts a Python runtime client) runs the same Python handlers.
const PROVIDED: Runtime = Runtime {
    id: "provided.al2023",
    bootstrap: Some("#!/bin/sh\nexec /usr/bin/python3 -S \"$LAMBDA_RUNTIME_DIR/python_bootstrap.py\"\n"),
    ..PYTHON
};

impl Runtime {
    fn files<'a>(&self, source: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut files = vec![(self.file, source)];
        if let Some(bootstrap) = self.bootstrap {
            files.push(("bootstrap", bootstrap));
        }
        files
    }
}

async fn deploy(client: &Client, runtime: &Runtime, name: &str, source: &str, memory_mb: u32, timeout_s: u32) {
    TestFunction {
        name,
        runtime: runtime.id,
        handler: "app.handler",
        files: &runtime.files(source),
        memory_mb,
        timeout_s,
        environment: &[("GREETING", "hi there")],
    }
    .deploy(client)
    .await
    .unwrap_or_else(|e| panic!("deploy {name}: {e}"));
}

async fn invoke(client: &Client, name: &str, payload: Value) -> InvokeResponse {
    client
        .invoke_with(InvokeRequest {
            function: name.into(),
            payload: payload.to_string().into_bytes(),
            log_tail: true,
            client_context: json!({"custom": {"from": "test"}}).to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("invoke {name}: {e}"))
}

async fn check_runtime(runtime: &Runtime) {
    let cluster = TestCluster::start(1).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    let rt = runtime.id;

    // Success, with its output framed by START/END/REPORT and a cold then a warm start.
    deploy(&client, runtime, "ok", runtime.ok, 128, 3).await;
    let first = invoke(&client, "ok", json!({"n": 1})).await;
    assert_eq!(
        first.function_error,
        "",
        "{rt}: {}",
        String::from_utf8_lossy(&first.payload)
    );
    assert_eq!(body(&first), json!({"echo": {"n": 1}}), "{rt}");
    assert!(first.cold_start, "{rt}: the first call starts a sandbox");
    let log = &first.log_result;
    assert!(
        log.starts_with(&format!("START RequestId: {} Version: $LATEST", first.request_id)),
        "{rt}: {log}"
    );
    assert!(
        log.contains("handled"),
        "{rt}: the function's output is in its log: {log}"
    );
    assert!(
        log.contains(&format!("END RequestId: {}", first.request_id)),
        "{rt}: {log}"
    );
    for field in [
        "Duration: ",
        "Billed Duration: ",
        "Memory Size: 128 MB",
        "Max Memory Used: ",
        "Init Duration: ",
    ] {
        assert!(log.contains(field), "{rt}: REPORT lacks {field:?}: {log}");
    }
    let second = invoke(&client, "ok", json!({"n": 2})).await;
    assert!(!second.cold_start, "{rt}: the second call reuses the warm sandbox");
    assert!(
        !second.log_result.contains("Init Duration"),
        "{rt}: {}",
        second.log_result
    );

    // A handler error.
    deploy(&client, runtime, "fails", runtime.fails, 128, 3).await;
    let failed = invoke(&client, "fails", json!({})).await;
    assert_eq!(failed.function_error, "Unhandled", "{rt}");
    let error = body(&failed);
    assert_eq!(error["errorMessage"], "it broke", "{rt}: {error}");
    assert_eq!(error["errorType"], "Boom", "{rt}: {error}");
    assert!(error["stackTrace"].is_array(), "{rt}: {error}");
    // The sandbox survives a handler error.
    assert!(!invoke(&client, "fails", json!({})).await.cold_start, "{rt}");

    // Init errors: a failing import, and a handler that does not exist.
    deploy(&client, runtime, "import-error", runtime.import_error, 128, 3).await;
    let failed = invoke(&client, "import-error", json!({})).await;
    assert_eq!(failed.function_error, "Unhandled", "{rt}");
    assert_eq!(
        body(&failed)["errorType"],
        "Runtime.ImportModuleError",
        "{rt}: {}",
        body(&failed)
    );
    TestFunction {
        name: "no-handler",
        runtime: runtime.id,
        handler: "app.missing",
        files: &runtime.files(runtime.ok),
        memory_mb: 128,
        timeout_s: 3,
        environment: &[],
    }
    .deploy(&client)
    .await
    .unwrap();
    let failed = invoke(&client, "no-handler", json!({})).await;
    assert_eq!(
        body(&failed)["errorType"],
        "Runtime.HandlerNotFound",
        "{rt}: {}",
        body(&failed)
    );

    // Timeout: the sandbox is killed and the next call starts a new one.
    deploy(&client, runtime, "sleeps", runtime.sleeps, 128, 1).await;
    let timed_out = invoke(&client, "sleeps", json!({})).await;
    assert_eq!(timed_out.function_error, "Unhandled", "{rt}");
    assert_eq!(
        body(&timed_out)["errorMessage"],
        "Task timed out after 1.00 seconds",
        "{rt}"
    );
    assert!(
        timed_out.log_result.contains("Task timed out after 1.00 seconds"),
        "{rt}: {}",
        timed_out.log_result
    );
    assert!(
        invoke(&client, "sleeps", json!({})).await.cold_start,
        "{rt}: a timed-out sandbox is replaced"
    );

    // Out of memory.
    deploy(&client, runtime, "hog", runtime.hogs_memory, 128, 10).await;
    let oom = invoke(&client, "hog", json!({})).await;
    assert_eq!(
        oom.function_error,
        "Unhandled",
        "{rt}: {}",
        String::from_utf8_lossy(&oom.payload)
    );
    let error = body(&oom);
    let text = error.to_string().to_lowercase();
    assert!(
        text.contains("memory"),
        "{rt}: the error says it ran out of memory: {error}"
    );
    assert!(
        oom.log_result.contains("Max Memory Used: 128 MB"),
        "{rt}: REPORT shows the memory at its limit: {}",
        oom.log_result
    );

    // A crash: reported, and the next call cold-starts.
    deploy(&client, runtime, "crashes", runtime.crashes, 128, 3).await;
    let crashed = invoke(&client, "crashes", json!({})).await;
    assert_eq!(
        body(&crashed)["errorType"],
        "Runtime.ExitError",
        "{rt}: {}",
        body(&crashed)
    );
    assert!(
        body(&crashed)["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("Runtime exited"),
        "{rt}"
    );
    assert!(invoke(&client, "crashes", json!({})).await.cold_start, "{rt}");

    // Context and environment.
    deploy(&client, runtime, "context", runtime.context, 256, 7).await;
    let response = invoke(&client, "context", json!({})).await;
    let context = body(&response);
    assert_eq!(context["function_name"], "context", "{rt}: {context}");
    assert_eq!(context["function_version"], "$LATEST", "{rt}");
    assert_eq!(
        context["arn"], "arn:aws:lambda:local:000000000000:function:context",
        "{rt}"
    );
    assert_eq!(context["memory"].to_string().trim_matches('"'), "256", "{rt}");
    assert_eq!(context["request_id"], response.request_id.as_str(), "{rt}");
    let remaining = context["remaining"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= 7000, "{rt}: remaining {remaining}");
    assert_eq!(context["log_group"], "/aws/lambda/context", "{rt}");
    assert!(context["log_stream"].as_str().unwrap().contains("[$LATEST]"), "{rt}");
    assert_eq!(context["client_context"]["custom"]["from"], "test", "{rt}: {context}");
    let env = &context["env"];
    assert_eq!(env["GREETING"], "hi there", "{rt}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "context", "{rt}");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256", "{rt}");
    assert_eq!(env["AWS_REGION"], "local", "{rt}");
    assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task", "{rt}");
    assert_eq!(env["_HANDLER"], "app.handler", "{rt}");
    assert_eq!(env["TZ"], ":UTC", "{rt}");
    assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001", "{rt}");
    for leaked in ["CARGO", "HOSTNAME", "RUST_LOG", "FLOE_LOG", "USER"] {
        assert!(
            env.get(leaked).is_none(),
            "{rt}: the node's {leaked} leaked into the sandbox"
        );
    }

    // /tmp persists in a warm sandbox.
    deploy(&client, runtime, "counter", runtime.counts_in_tmp, 128, 3).await;
    let counts: Vec<Value> = [
        invoke(&client, "counter", json!({})).await,
        invoke(&client, "counter", json!({})).await,
    ]
    .iter()
    .map(body)
    .collect();
    assert_eq!(counts, vec![json!(1), json!(2)], "{rt}");

    // Logs are kept and readable through the API.
    chaos_tests::wait_for("both logs of `ok`", std::time::Duration::from_secs(5), || async {
        client.get_logs("ok", 0, 0).await.map(|r| r.len() == 2).unwrap_or(false)
    })
    .await
    .unwrap();
    let records = client.get_logs("ok", 0, 0).await.unwrap();
    assert!(records[0].text.contains("handled"), "{rt}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_runtime() {
    check_runtime(&PYTHON).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nodejs_runtime() {
    check_runtime(&NODE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn provided_runtime() {
    check_runtime(&PROVIDED).await;
}
