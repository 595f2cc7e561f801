//! Invocations on one node: warm and cold, next to the same handler in a
//! running interpreter and to spawning the bare interpreter.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chaos_tests::TestCluster;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::{ms, summarize, DEFAULT_CONFIG};

/// A runtime's no-op handler, its floor server, and how to spawn its bare interpreter.
struct RuntimeBench {
    id: &'static str,
    file: &'static str,
    handler: &'static str,
    /// Serves `handler` over TCP, one JSON line in, one out; prints its port.
    floor_server: &'static str,
    interpreter: &'static str,
    bare: &'static [&'static str],
}

const PYTHON_BENCH: RuntimeBench = RuntimeBench {
    id: "python3.11",
    file: "app.py",
    handler: "def handler(event, context):\n    return {'ok': True}\n",
    floor_server: r#"
import json, socket, sys
sys.path.insert(0, sys.argv[1])
import app
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reader = conn.makefile("rb")
for line in reader:
    conn.sendall(json.dumps(app.handler(json.loads(line), None)).encode() + b"\n")
"#,
    interpreter: "python3",
    bare: &["-c", "pass"],
};

const NODE_BENCH: RuntimeBench = RuntimeBench {
    id: "nodejs20.x",
    file: "app.js",
    handler: "exports.handler = async () => ({ ok: true });\n",
    floor_server: r#"
const net = require('net');
const readline = require('readline');
const app = require(require('path').join(process.argv[1], 'app.js'));
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  readline.createInterface({ input: socket }).on('line', async (line) => {
    socket.write(JSON.stringify(await app.handler(JSON.parse(line), {})) + '\n');
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"#,
    interpreter: "node",
    bare: &["-e", "0"],
};

/// The real path of an interpreter (python3 may be a shim).
fn real_interpreter(name: &str) -> anyhow::Result<String> {
    if name == "python3" {
        let out = std::process::Command::new(name)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()?;
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Resident memory of a process and of all its descendants, in MiB.
fn tree_rss_mib(root: u32) -> (f64, f64) {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    let mut rss: std::collections::HashMap<u32, u64> = Default::default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(ppid) = field("PPid:") {
            children.entry(ppid as u32).or_default().push(pid);
        }
        rss.insert(pid, field("VmRSS:").unwrap_or(0));
    }
    let own = rss.get(&root).copied().unwrap_or(0);
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        total += rss.get(&pid).copied().unwrap_or(0);
        stack.extend(children.get(&pid).cloned().unwrap_or_default());
    }
    (own as f64 / 1024.0, total as f64 / 1024.0)
}

pub async fn invoke_bench(
    runtime: &str,
    warm_calls: usize,
    cold_starts: usize,
    callers: usize,
    warm_sandboxes: usize,
) -> anyhow::Result<()> {
    let bench = match runtime {
        "python" => PYTHON_BENCH,
        "nodejs" | "node" => NODE_BENCH,
        other => bail!("unknown runtime {other}: use python or nodejs"),
    };
    let interpreter = real_interpreter(bench.interpreter)?;
    println!("== {} invocations on one node (interpreter {interpreter}) ==", bench.id);
    let cluster = TestCluster::start_with(1, DEFAULT_CONFIG).await?;
    let client = std::sync::Arc::new(cluster.client_of(0).await?);
    let node_pid = cluster.nodes[0].pid().context("node pid")?;
    let idle_rss = tree_rss_mib(node_pid).0;
    let deploy = |name: String| {
        let client = client.clone();
        async move {
            chaos_tests::TestFunction {
                name: &name,
                runtime: bench.id,
                handler: "app.handler",
                files: &[(bench.file, bench.handler)],
                memory_mb: 128,
                timeout_s: 10,
                environment: &[],
            }
            .deploy(&client)
            .await
        }
    };

    // Floor: the handler in an already-running interpreter, over a local socket.
    let code = tempfile::tempdir()?;
    std::fs::write(code.path().join(bench.file), bench.handler)?;
    let mut floor = tokio::process::Command::new(&interpreter)
        .args(if bench.interpreter == "python3" {
            vec!["-c"]
        } else {
            vec!["-e"]
        })
        .arg(bench.floor_server)
        .arg(code.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut floor_out = BufReader::new(floor.stdout.take().context("floor stdout")?);
    let mut port = String::new();
    floor_out.read_line(&mut port).await?;
    let stream = TcpStream::connect(("127.0.0.1", port.trim().parse::<u16>()?)).await?;
    stream.set_nodelay(true)?;
    let mut floor_conn = BufReader::new(stream);
    let mut floor_samples = Vec::new();
    let mut line = String::new();
    for i in 0..warm_calls + 100 {
        let started = Instant::now();
        floor_conn.get_mut().write_all(b"{\"n\":1}\n").await?;
        line.clear();
        floor_conn.read_line(&mut line).await?;
        if i >= 100 {
            floor_samples.push(started.elapsed());
        }
    }
    drop(floor);

    // Warm invocations through the SDK.
    deploy("warm".into()).await?;
    let mut warm_samples = Vec::new();
    for i in 0..warm_calls + 100 {
        let started = Instant::now();
        let response = client.invoke("warm", "", b"{\"n\":1}".to_vec()).await?;
        anyhow::ensure!(response.function_error.is_empty(), "the handler failed");
        if i >= 100 {
            warm_samples.push(started.elapsed());
        }
    }
    let (floor_p50, floor_p99) = summarize(floor_samples);
    let (warm_p50, warm_p99) = summarize(warm_samples);

    // Warm throughput with concurrent callers (each overlapping call gets its own sandbox).
    let per_caller = warm_calls / callers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    client.invoke("warm", "", b"{}".to_vec()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let throughput = (per_caller * callers) as f64 / started.elapsed().as_secs_f64();

    // Cold starts: the first call after create, sandbox included, next to the bare interpreter's spawn.
    let mut cold_samples = Vec::new();
    let mut spawn_samples = Vec::new();
    for i in 0..cold_starts {
        let name = format!("cold-{i}");
        deploy(name.clone()).await?;
        let started = Instant::now();
        let response = client.invoke(&name, "", b"{}".to_vec()).await?;
        cold_samples.push(started.elapsed());
        anyhow::ensure!(response.cold_start, "expected a cold start");
        let started = Instant::now();
        let status = tokio::process::Command::new(&interpreter)
            .args(bench.bare)
            .env_clear()
            .status()
            .await?;
        spawn_samples.push(started.elapsed());
        anyhow::ensure!(status.success(), "bare interpreter failed");
    }
    let (cold_p50, cold_p99) = summarize(cold_samples);
    let (spawn_p50, _) = summarize(spawn_samples);

    // Memory with many warm sandboxes.
    for i in 0..warm_sandboxes.saturating_sub(cold_starts + 1) {
        let name = format!("resident-{i}");
        deploy(name.clone()).await?;
        client.invoke(&name, "", b"{}".to_vec()).await?;
    }
    let (node_rss, tree_rss) = tree_rss_mib(node_pid);

    println!("| measure | floe | baseline (same run) |");
    println!("| --- | --- | --- |");
    println!("| warm invoke p50 / p99 (SDK, gRPC) | {} / {} | {} / {} handler in a running interpreter over a local socket |", ms(warm_p50), ms(warm_p99), ms(floor_p50), ms(floor_p99));
    println!(
        "| warm overhead over the floor, p50 | {} | target ≤ 1 ms |",
        ms(warm_p50.saturating_sub(floor_p50))
    );
    println!("| cold start p50 / p99 (first call after create) | {} / {} | {} bare `{} {}` spawn; target ≤ 2× + 20 ms = {} |", ms(cold_p50), ms(cold_p99), ms(spawn_p50), bench.interpreter, bench.bare.join(" "), ms(spawn_p50 * 2 + Duration::from_millis(20)));
    println!("| warm throughput, {callers} callers | {throughput:.0} invocations/s | |");
    println!("| floed RSS idle | {idle_rss:.1} MiB | |");
    println!("| floed RSS with {warm_sandboxes} warm sandboxes (with the sandboxes) | {node_rss:.1} MiB ({tree_rss:.1} MiB) | |");
    Ok(())
}
