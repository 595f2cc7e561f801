//! Sandboxes on real nodes: isolation between functions and from the node,
//! the warm pool (concurrency, idle eviction, memory capacity), oversized
//! responses, and packages that follow their function across nodes.

use std::time::Duration;

use chaos_tests::{body, wait_for, TestCluster, TestFunction, TEST_CONFIG};
use floe_client::proto::{InvokeResponse, ReadConsistency};
use floe_client::Client;
use serde_json::{json, Value};

async fn python(client: &Client, name: &str, source: &str, memory_mb: u32) -> floe_client::proto::FunctionInfo {
    TestFunction {
        name,
        runtime: "python3.11",
        handler: "app.handler",
        files: &[("app.py", source)],
        memory_mb,
        timeout_s: 10,
        environment: &[],
    }
    .deploy(client)
    .await
    .unwrap_or_else(|e| panic!("deploy {name}: {e}"))
}

async fn invoke(client: &Client, name: &str, payload: Value) -> InvokeResponse {
    client
        .invoke(name, "", payload.to_string().into_bytes())
        .await
        .unwrap_or_else(|e| panic!("invoke {name}: {e}"))
}

const VICTIM: &str = "import os\n\ndef handler(event, context):\n    open('/tmp/secret', 'w').write('s3cret')\n    return sorted(os.listdir('/var/task'))\n";

const ATTACKER: &str = r#"import os, socket

def handler(event, context):
    results = {}
    for path in event['paths']:
        try:
            with open(path, 'rb') as f:
                results[path] = 'READ ' + f.read(40).hex()
        except Exception as e:
            results[path] = type(e).__name__
    try:
        socket.create_connection(('127.0.0.1', event['node_port']), timeout=1)
        results['node_port'] = 'CONNECTED'
    except Exception as e:
        results['node_port'] = type(e).__name__
    try:
        open('/var/task/app.py', 'a').write('# tampered')
        results['own_code'] = 'WRITTEN'
    except Exception as e:
        results['own_code'] = type(e).__name__
    results['processes'] = len([p for p in os.listdir('/proc') if p.isdigit()])
    return results
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_function_cannot_reach_another_function_or_the_node() {
    let cluster = TestCluster::start(1).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    let victim = python(&client, "victim", VICTIM, 128).await;
    assert_eq!(body(&invoke(&client, "victim", json!({})).await), json!(["app.py"]));
    python(&client, "attacker", ATTACKER, 128).await;

    let data_dir = cluster.data_dir(0);
    let victim_code = data_dir
        .join("packages/code")
        .join(&victim.code.unwrap().sha256)
        .join("app.py");
    let paths = [
        "/tmp/secret".to_string(),
        victim_code.display().to_string(),
        data_dir.join("node_id").display().to_string(),
        data_dir.join("raft/CURRENT").display().to_string(),
        "/root/.cargo/credentials.toml".to_string(),
        "/etc/shadow".to_string(),
    ];
    let node_port: u16 = cluster.address(0).rsplit(':').next().unwrap().parse().unwrap();
    let results = body(&invoke(&client, "attacker", json!({"paths": paths, "node_port": node_port})).await);
    for path in &paths {
        let outcome = results[path.as_str()].as_str().unwrap();
        assert!(!outcome.starts_with("READ"), "the attacker read {path}: {results}");
    }
    assert_ne!(
        results["node_port"], "CONNECTED",
        "the attacker reached the node's port: {results}"
    );
    assert_ne!(results["own_code"], "WRITTEN", "code is read-only: {results}");
    assert!(
        results["processes"].as_u64().unwrap() <= 3,
        "the attacker sees other processes: {results}"
    );
    // The victim's /tmp still holds its secret, untouched.
    assert_eq!(body(&invoke(&client, "victim", json!({})).await), json!(["app.py"]));
}

const IDENTITY: &str = "import time, uuid\nID = str(uuid.uuid4())\n\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return ID\n";

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_calls_get_their_own_sandboxes_and_idle_ones_are_evicted() {
    let config = format!("{TEST_CONFIG}\n[executor]\nidle_timeout = \"2s\"\n");
    let cluster = TestCluster::start_with(1, &config).await.unwrap();
    let client = std::sync::Arc::new(cluster.client_of(0).await.unwrap());
    python(&client, "identity", IDENTITY, 128).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { invoke(&client, "identity", json!({"sleep": 1})).await })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(body(&call.await.unwrap()));
    }
    ids.sort_by_key(|v| v.to_string());
    ids.dedup();
    assert_eq!(ids.len(), 3, "three overlapping calls ran in three sandboxes: {ids:?}");
    // Idle sandboxes are frozen after a moment; a call thaws one and it serves as before.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warm = invoke(&client, "identity", json!({})).await;
    assert!(
        !warm.cold_start && ids.contains(&body(&warm)),
        "a later call reuses one of them"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_idle = invoke(&client, "identity", json!({})).await;
    assert!(
        after_idle.cold_start,
        "idle sandboxes were evicted after the idle timeout"
    );
    assert!(!ids.contains(&body(&after_idle)));
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_capacity_evicts_the_least_recently_used_sandbox() {
    let config = format!("{TEST_CONFIG}\n[executor]\nmemory_capacity = \"256MiB\"\n");
    let cluster = TestCluster::start_with(1, &config).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    for name in ["first", "second", "third"] {
        python(&client, name, IDENTITY, 128).await;
    }
    assert!(invoke(&client, "first", json!({})).await.cold_start);
    assert!(invoke(&client, "second", json!({})).await.cold_start);
    assert!(
        !invoke(&client, "first", json!({})).await.cold_start,
        "both fit in 256 MiB"
    );
    // A third does not fit: the least recently used (second) makes room.
    assert!(invoke(&client, "third", json!({})).await.cold_start);
    assert!(
        !invoke(&client, "first", json!({})).await.cold_start,
        "first was used more recently"
    );
    assert!(
        invoke(&client, "second", json!({})).await.cold_start,
        "second was evicted"
    );
    // A function larger than the whole capacity is refused clearly.
    python(&client, "huge", IDENTITY, 512).await;
    let error = client.invoke("huge", "", b"{}".to_vec()).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::ResourceExhausted), "{error}");
    assert_eq!(error.throttle_reason(), Some("InsufficientCapacity"), "{error}");
    assert!(error.to_string().contains("512 MB free"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_response_is_refused_with_lambdas_error() {
    let cluster = TestCluster::start(1).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    python(
        &client,
        "big",
        "def handler(event, context):\n    return 'x' * (7 * 1024 * 1024)\n",
        256,
    )
    .await;
    let response = invoke(&client, "big", json!({})).await;
    assert_eq!(response.function_error, "Unhandled");
    assert_eq!(
        body(&response)["errorType"],
        "Function.ResponseSizeTooLarge",
        "{}",
        body(&response)
    );
    // The sandbox keeps serving.
    python(&client, "small", "def handler(event, context):\n    return 'ok'\n", 128).await;
    assert_eq!(body(&invoke(&client, "small", json!({})).await), json!("ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_reaches_a_node_that_was_down_when_it_was_created() {
    let mut cluster = TestCluster::start(3).await.unwrap();
    // Node C misses the upload; A and B hold the package (a majority).
    cluster.kill(2);
    let client_a = cluster.client_of(0).await.unwrap();
    python(
        &client_a,
        "travels",
        "def handler(event, context):\n    return 'from anywhere'\n",
        128,
    )
    .await;
    // C comes back alone in its region, so that invocations naming it must run on C.
    cluster.nodes[2].extra_args = vec!["--region".into(), "c-only".into()];
    cluster.restart(2).await.unwrap();
    let client_c = cluster.client_of(2).await.unwrap();
    wait_for("C to learn of the function", Duration::from_secs(20), || async {
        client_c.get_function("travels", ReadConsistency::Stale).await.is_ok()
    })
    .await
    .unwrap();
    // With A gone, C fetches the package from B on its cold start.
    cluster.kill(0);
    let response = client_c
        .invoke_with(floe_client::proto::InvokeRequest {
            function: "travels".into(),
            payload: b"{}".to_vec(),
            region: "c-only".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(body(&response), json!("from anywhere"));
    assert_eq!(
        response.node_id,
        cluster.status(2).await.unwrap().node_id,
        "it ran on C"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn process_mode_runs_functions_and_says_they_are_not_isolated() {
    let config = format!("{TEST_CONFIG}\n[executor]\nsandbox = \"process\"\n");
    let cluster = TestCluster::start_with(1, &config).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    let status = client.cluster_status().await.unwrap();
    assert!(
        status.nodes[0].sandbox_mode.starts_with("process"),
        "{:?}",
        status.nodes[0]
    );
    assert!(
        cluster.nodes[0].log().contains("SANDBOXES ARE NOT ISOLATED"),
        "the node warns loudly"
    );
    python(
        &client,
        "plain",
        "import os\n\ndef handler(event, context):\n    return os.environ['LAMBDA_TASK_ROOT']\n",
        128,
    )
    .await;
    let task_root = body(&invoke(&client, "plain", json!({})).await);
    assert!(
        task_root.as_str().unwrap().contains("/packages/code/"),
        "runs from the node's copy: {task_root}"
    );
}

/// Processes whose command line names `text` (a node's data dir: its
/// sandboxes bind their code from there).
fn processes_naming(text: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(text))
                .unwrap_or(false)
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// A node killed with kill -9 leaves no sandbox behind, also when its idle
/// sandboxes are frozen (a frozen process cannot take the signal that
/// bubblewrap's --die-with-parent sends): its reaper kills them. If the
/// reaper is gone too, the node's next start kills them.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_leaves_no_sandbox_behind() {
    let mut cluster = TestCluster::start(1).await.unwrap();
    let client = cluster.client_of(0).await.unwrap();
    let status = client.cluster_status().await.unwrap();
    let data_dir = cluster.data_dir(0).display().to_string();
    python(&client, "idle", "def handler(event, context):\n    return 1\n", 128).await;
    let sandboxes = || processes_naming(&format!("{data_dir}/packages/code/"));

    // Twice: first the reaper cleans up after kill -9; then, with the reaper
    // killed as well, the restarted node does.
    for round in ["reaper", "restart"] {
        invoke(&client, "idle", json!({})).await;
        // Idle long enough to be frozen, where the node has a freezer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = sandboxes();
        assert!(!before.is_empty(), "{round}: the sandbox runs");
        let reaper: Vec<i32> = processes_naming("__sandbox-reaper");
        let pid = cluster.nodes[0].pid().expect("running") as i32;
        let own_reaper: Vec<i32> = reaper
            .into_iter()
            .filter(|r| {
                std::fs::read_to_string(format!("/proc/{r}/stat")).is_ok_and(|stat| {
                    stat.rsplit(')').next().unwrap_or("").split_whitespace().nth(1) == Some(&pid.to_string())
                })
            })
            .collect();
        if round == "restart" {
            if status.nodes[0].sandbox_mode.contains("cgroup") {
                assert_eq!(own_reaper.len(), 1, "the node runs one reaper");
            }
            for r in &own_reaper {
                unsafe { libc::kill(*r, libc::SIGKILL) };
            }
        }
        cluster.kill(0);
        if round == "restart" {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.restart(0).await.unwrap();
        }
        wait_for(
            &format!("{round}: the killed node's sandboxes to go"),
            Duration::from_secs(10),
            || {
                let left: Vec<i32> = before.iter().copied().filter(|p| alive(*p)).collect();
                async move { left.is_empty() }
            },
        )
        .await
        .unwrap();
        if round == "reaper" {
            cluster.restart(0).await.unwrap();
        }
    }
}
