//! The workload a chaos run drives through the public SDK while faults
//! happen: register writes and reads, synchronous invokes of a function
//! that reports its run, asynchronous invokes with unique ids, and a poller
//! of every node's view of the leadership. Every operation is recorded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use floe_client::proto;
use floe_client::Client;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncBufReadExt;

use crate::history::{now, LeaderView, Op, OpKind, Outcome, Recorder};

/// Registers (functions whose description is the register's value).
pub const REGISTERS: usize = 4;
/// The function that reports its runs.
pub const PROBE: &str = "probe";
/// How long one operation may take before it counts as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// A synchronous invoke's: longer than floe itself waits (a leader, then a
/// forwarded invocation's lease, timeout and slack), so that a timeout here
/// means floe hung.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(40);

/// Reports `start ID TIME LONGEST` and `end ID TIME` for every run, and
/// `event ID` for asynchronous ones, to the recorder named in the event.
const PROBE_SOURCE: &str = r#"
import os, socket, time

def report(address, line):
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=3) as s:
        s.sendall((line + "\n").encode())

def handler(event, context):
    address, sleep = event["recorder"], event.get("sleep", 0.1)
    # Each run its own id: an event's retries share their request id.
    run = "%s/%s" % (context.aws_request_id, os.urandom(6).hex())
    # A run that never reports its end (its node was killed) lasted at most its sleep.
    report(address, "start %s %.6f %.3f" % (run, time.time(), sleep + 0.05))
    if "id" in event:
        report(address, "event " + event["id"])
    time.sleep(sleep)
    report(address, "end %s %.6f" % (run, time.time()))
    return {"ok": True}
"#;

/// Listens for the probe's reports on `address` (an address of the test's
/// network) and records them; returns the address functions report to.
pub async fn start_report_listener(address: std::net::IpAddr, recorder: Recorder) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind((address, 0)).await?;
    let bound = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    recorder.report(&line);
                }
            });
        }
    });
    Ok(bound)
}

/// Creates the registers and the probe function.
pub async fn prepare(client: &Client, quota: u32) -> anyhow::Result<()> {
    client.set_region_quota("local", quota).await?;
    for key in 0..REGISTERS {
        let name = format!("register-{key}");
        crate::TestFunction {
            name: &name,
            runtime: "python3.11",
            handler: "app.handler",
            files: &[("app.py", "def handler(event, context):\n    return None\n")],
            memory_mb: 128,
            timeout_s: 3,
            environment: &[],
        }
        .deploy(client)
        .await?;
    }
    crate::TestFunction {
        name: PROBE,
        runtime: "python3.11",
        handler: "app.handler",
        files: &[("app.py", PROBE_SOURCE)],
        memory_mb: 128,
        timeout_s: 10,
        environment: &[],
    }
    .deploy(client)
    .await?;
    // Asynchronous retries soon, so a run's events settle within its drain time.
    client
        .put_event_invoke_config(proto::PutEventInvokeConfigRequest {
            function: PROBE.into(),
            qualifier: String::new(),
            max_retry_attempts: Some(2),
            max_event_age_s: Some(3600),
            on_success: None,
            on_failure: None,
        })
        .await?;
    Ok(())
}

/// An operation's outcome; a failure's message starts with its gRPC code ("Unavailable: …").
fn outcome<T>(result: Result<Result<T, floe_client::Error>, tokio::time::error::Elapsed>) -> (Outcome, Option<T>) {
    match result {
        Ok(Ok(value)) => (Outcome::Ok, Some(value)),
        Err(_) => (Outcome::Unknown("timed out".into()), None),
        Ok(Err(error)) => {
            let message = match error.code() {
                Some(code) => format!("{code:?}: {error}"),
                None => error.to_string(),
            };
            match error.code() {
                // The SDK's rule: Unavailable means nothing was done.
                Some(tonic::Code::Unavailable) => (Outcome::Fail(message), None),
                Some(tonic::Code::Unknown)
                | Some(tonic::Code::Internal)
                | Some(tonic::Code::DeadlineExceeded)
                | None => (Outcome::Unknown(message), None),
                Some(_) => (Outcome::Fail(message), None),
            }
        }
    }
}

/// Runs the workload until `stop` is set.
pub struct Workload {
    pub client: Arc<Client>,
    /// One client per node, for the leadership poller.
    pub node_clients: Vec<Client>,
    pub recorder: Recorder,
    pub report_to: String,
    pub seed: u64,
}

impl Workload {
    /// Starts `writers` register clients, `invokers` sync invokers, one
    /// event sender and the poller; they run until `stop`.
    pub fn start(self, writers: usize, invokers: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
        let this = Arc::new(self);
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for worker in 0..writers {
            let (this, stop, counter) = (this.clone(), stop.clone(), counter.clone());
            tasks.push(tokio::spawn(
                async move { this.registers(worker, &stop, &counter).await },
            ));
        }
        for worker in 0..invokers {
            let (this, stop) = (this.clone(), stop.clone());
            tasks.push(tokio::spawn(async move { this.invokes(worker, &stop).await }));
        }
        {
            let (this, stop, counter) = (this.clone(), stop.clone(), counter.clone());
            tasks.push(tokio::spawn(async move { this.events(&stop, &counter).await }));
        }
        let (this, stop) = (this.clone(), stop.clone());
        tasks.push(tokio::spawn(async move { this.poll_leaders(&stop).await }));
        tasks
    }

    async fn registers(&self, worker: usize, stop: &AtomicBool, counter: &AtomicU64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ (worker as u64 + 1));
        while !stop.load(Ordering::Relaxed) {
            let key = rng.random_range(0..REGISTERS);
            let name = format!("register-{key}");
            let invoked = now();
            if rng.random_bool(0.5) {
                let value = format!("w{}-{}", worker, counter.fetch_add(1, Ordering::Relaxed));
                let request = proto::UpdateFunctionRequest {
                    name,
                    description: Some(value.clone()),
                    ..Default::default()
                };
                let (outcome, _) =
                    outcome(tokio::time::timeout(OP_TIMEOUT, self.client.update_function(request)).await);
                self.recorder.op(Op {
                    kind: OpKind::Write { key, value },
                    invoked,
                    completed: now(),
                    outcome,
                });
            } else {
                let read = self.client.get_function(&name, proto::ReadConsistency::Linearizable);
                let (outcome, function) = outcome(tokio::time::timeout(OP_TIMEOUT, read).await);
                let value = function.and_then(|f| f.config).map(|c| c.description);
                self.recorder.op(Op {
                    kind: OpKind::Read { key, value },
                    invoked,
                    completed: now(),
                    outcome,
                });
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
        }
    }

    async fn invokes(&self, worker: usize, stop: &AtomicBool) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ (1000 + worker as u64));
        while !stop.load(Ordering::Relaxed) {
            let sleep = rng.random_range(0.05..0.3);
            let payload = serde_json::json!({ "recorder": self.report_to, "sleep": sleep });
            let invoked = now();
            let call = self.client.invoke(PROBE, "", payload.to_string().into_bytes());
            let (outcome, _) = outcome(tokio::time::timeout(INVOKE_TIMEOUT, call).await);
            // Throttled: back off a little (the others keep the quota full meanwhile).
            let pause = if matches!(outcome, Outcome::Fail(_)) {
                50..150
            } else {
                5..50
            };
            self.recorder.op(Op {
                kind: OpKind::Invoke,
                invoked,
                completed: now(),
                outcome,
            });
            tokio::time::sleep(Duration::from_millis(rng.random_range(pause))).await;
        }
    }

    async fn events(&self, stop: &AtomicBool, counter: &AtomicU64) {
        while !stop.load(Ordering::Relaxed) {
            let id = format!("event-{}-{}", self.seed, counter.fetch_add(1, Ordering::Relaxed));
            let payload = serde_json::json!({ "recorder": self.report_to, "sleep": 0.02, "id": id });
            let request = proto::InvokeRequest {
                function: PROBE.into(),
                payload: payload.to_string().into_bytes(),
                invocation_type: proto::InvocationType::Event as i32,
                ..Default::default()
            };
            let invoked = now();
            let (outcome, response) = outcome(tokio::time::timeout(OP_TIMEOUT, self.client.invoke_with(request)).await);
            if let Some(response) = response {
                self.recorder.event_request_id(&id, &response.request_id);
            }
            self.recorder.op(Op {
                kind: OpKind::Event { id },
                invoked,
                completed: now(),
                outcome,
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn poll_leaders(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            for (node, client) in self.node_clients.iter().enumerate() {
                let status = tokio::time::timeout(Duration::from_millis(500), client.cluster_status()).await;
                // Only a node's claim about itself counts: a follower may name
                // the previous leader for a moment after voting in a new term.
                match status {
                    Ok(Ok(status)) if status.leader_id == Some(status.node_id) => self.recorder.leader(LeaderView {
                        at: now(),
                        node,
                        term: status.term,
                        leader: status.leader_id,
                    }),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
