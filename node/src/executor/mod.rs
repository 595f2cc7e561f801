//! The executor: runs invocations in sandboxes on this node and keeps them
//! warm for the next call of the same function version.
//!
//! - `sandbox/`: one runtime process tree, its isolation and limits;
//! - `runtime_api.rs`: the only code that speaks the in-sandbox protocol;
//! - `logs.rs`: per-function invocation logs;
//! - `bootstrap/`: floe's own runtime bootstraps (Python, Node.js).
//!
//! The warm pool keeps idle sandboxes per [`SandboxKey`], frozen while idle.
//! Every sandbox, busy or idle, reserves its function's memory; the sum stays
//! within the node's capacity, and when a new sandbox does not fit the least
//! recently used idle ones are stopped first.

pub mod logs;
pub mod runtime_api;
pub mod sandbox;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use floe_raft_store::model::FunctionConfig;
use runtime_api::{Event, RuntimeReply};
use sandbox::isolation::Isolation;
use sandbox::slot::Slot;
use sandbox::{Failure, Launch, Sandbox};

use crate::config::ExecutorConfig;
use crate::error::NodeError;

/// Why an invocation could not start here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecutorError {
    /// This node cannot run the function's runtime.
    #[error("runtime {runtime} is not available on this node: {why}")]
    RuntimeUnavailable { runtime: String, why: String },
    /// Every byte of sandbox memory is taken by running sandboxes.
    #[error("this node's sandbox memory is full ({reserved_mb} of {capacity_mb} MB in use)")]
    MemoryFull { reserved_mb: u64, capacity_mb: u64 },
    #[error("cannot start the sandbox: {0}")]
    CannotStart(String),
}

impl From<ExecutorError> for NodeError {
    fn from(error: ExecutorError) -> Self {
        let message = error.to_string();
        match error {
            ExecutorError::RuntimeUnavailable { .. } | ExecutorError::CannotStart(_) => {
                NodeError::FailedPrecondition(message)
            }
            // Retry later (or elsewhere): not the caller's quota, this node's room.
            ExecutorError::MemoryFull { .. } => NodeError::Throttled(message),
        }
    }
}
use crate::shared::{now_ms, SandboxKey};

/// Lambda's limit on synchronous request and response payloads.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// An idle sandbox is frozen once it has been idle this long.
const FREEZE_AFTER: Duration = Duration::from_millis(100);

/// How much of an invocation's log an invoke can ask to get back.
pub const LOG_TAIL_BYTES: usize = 4 * 1024;

const PYTHON_BOOTSTRAP: &str = include_str!("bootstrap/python.py");
const NODE_BOOTSTRAP: &str = include_str!("bootstrap/node.js");

/// Everything needed to run one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub key: SandboxKey,
    pub config: FunctionConfig,
    pub code_dir: PathBuf,
    pub request_id: String,
    pub invoked_function_arn: String,
    pub region: String,
    pub client_context: Option<String>,
    pub payload: Bytes,
}

/// The result of an invocation that ran (successfully or not).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub payload: Bytes,
    /// `Some("Unhandled")` when the function failed.
    pub function_error: Option<String>,
    /// True when a new sandbox was started for this call.
    pub cold_start: bool,
    /// START … END … REPORT, as Lambda writes them.
    pub log: String,
    /// Whether the sandbox went back to the pool for the next call.
    pub warm: bool,
}

/// An interpreter and the host directory it needs inside sandboxes.
#[derive(Debug, Clone)]
struct Interpreter {
    program: PathBuf,
    prefix: PathBuf,
}

/// Memory one sandbox holds against the node's capacity. It is given back
/// when the sandbox is dropped, however that happens — evicted, failed, or
/// abandoned when a caller hangs up mid-invocation.
pub struct Reservation {
    reserved_mb: Arc<AtomicU64>,
    mb: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.reserved_mb.fetch_sub(self.mb, Ordering::SeqCst);
    }
}

/// What a call gets from the pool: a warm sandbox, or memory to start one.
enum Checkout {
    Warm(Box<Sandbox>),
    Cold(Reservation),
}

/// Idle sandboxes; each holds its own [`Reservation`].
#[derive(Default)]
struct Pool {
    idle: HashMap<SandboxKey, Vec<Sandbox>>,
}

impl Pool {
    /// Stops the least recently used idle sandbox; false when none is idle.
    fn evict_least_recently_used(&mut self) -> bool {
        let oldest = self
            .idle
            .iter()
            .flat_map(|(key, sandboxes)| {
                sandboxes
                    .iter()
                    .enumerate()
                    .map(move |(i, s)| (key.clone(), i, s.last_used))
            })
            .min_by_key(|(_, _, last_used)| *last_used);
        let Some((key, index, _)) = oldest else { return false };
        if let Some(sandboxes) = self.idle.get_mut(&key) {
            sandboxes.swap_remove(index);
            if sandboxes.is_empty() {
                self.idle.remove(&key);
            }
        }
        true
    }

    /// Stops idle sandboxes of the same function version with another revision: they can never run again.
    fn evict_stale_revisions(&mut self, key: &SandboxKey) {
        let stale: Vec<SandboxKey> = self
            .idle
            .keys()
            .filter(|k| k.function == key.function && k.version == key.version && k.revision_id != key.revision_id)
            .cloned()
            .collect();
        for stale_key in stale {
            self.idle.remove(&stale_key);
        }
    }
}

pub struct Executor {
    /// Slots prepared ahead for cold starts, and the signal to prepare more.
    prepared: Mutex<Vec<Slot>>,
    prepared_target: usize,
    refill: tokio::sync::Notify,
    interpreters: BTreeMap<String, Interpreter>,
    bootstrap_dir: PathBuf,
    pub isolation: Isolation,
    pool: Mutex<Pool>,
    /// Memory reserved by all sandboxes, idle or busy (see [`Reservation`]).
    reserved_mb: Arc<AtomicU64>,
    idle_timeout: Duration,
    memory_capacity_mb: u64,
    pub logs: logs::LogStore,
}

/// Three quarters of the machine's memory, in MB.
fn default_capacity_mb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kb = meminfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(4 * 1024 * 1024);
    total_kb / 1024 * 3 / 4
}

impl Executor {
    pub fn new(config: &ExecutorConfig, data_dir: &Path) -> anyhow::Result<Arc<Executor>> {
        let bootstrap_dir = data_dir.join("runtime");
        std::fs::create_dir_all(&bootstrap_dir)?;
        std::fs::write(bootstrap_dir.join("python_bootstrap.py"), PYTHON_BOOTSTRAP)?;
        std::fs::write(bootstrap_dir.join("node_bootstrap.js"), NODE_BOOTSTRAP)?;
        let mut interpreters = BTreeMap::new();
        for (family, program) in &config.interpreters {
            match resolve_interpreter(family, program) {
                Ok(interpreter) => {
                    tracing::info!(%family, path = %interpreter.program.display(), "runtime interpreter");
                    interpreters.insert(family.clone(), interpreter);
                }
                Err(e) => tracing::warn!(%family, %program, error = %e, "runtime unavailable on this node"),
            }
        }
        let mut read_only: Vec<PathBuf> = interpreters
            .values()
            .map(|i| i.prefix.clone())
            .filter(|prefix| !prefix.starts_with("/usr") && prefix != Path::new("/"))
            .collect();
        read_only.extend(config.read_only_paths.iter().cloned());
        read_only.sort();
        read_only.dedup();
        let isolation = Isolation::detect(config, data_dir, read_only)?;
        let memory_capacity_mb = config
            .memory_capacity
            .map(|b| b.as_u64() / (1024 * 1024))
            .unwrap_or_else(default_capacity_mb);
        Ok(Arc::new(Executor {
            prepared: Mutex::new(Vec::new()),
            prepared_target: config.prepared_sandboxes,
            refill: tokio::sync::Notify::new(),
            interpreters,
            bootstrap_dir,
            isolation,
            pool: Mutex::new(Pool::default()),
            reserved_mb: Arc::new(AtomicU64::new(0)),
            idle_timeout: config.idle_timeout,
            memory_capacity_mb,
            logs: logs::LogStore::open(data_dir, config.log_retention.as_u64())?,
        }))
    }

    /// Stops sandboxes idle for longer than the idle timeout; runs until `shutdown`.
    /// Freezes sandboxes idle for a moment and stops those idle for longer than the idle
    /// timeout; runs until `shutdown`.
    ///
    /// Freezing waits [`FREEZE_AFTER`] rather than following each response at once, so
    /// back-to-back calls of a busy function neither pay for freezing nor for thawing.
    pub async fn run_evictor(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(FREEZE_AFTER) => {}
            }
            let now = Instant::now();
            let mut pool = self.pool.lock().expect("pool lock");
            for sandboxes in pool.idle.values_mut() {
                sandboxes.retain_mut(|s| {
                    let idle = now.duration_since(s.last_used);
                    if idle >= FREEZE_AFTER && idle < self.idle_timeout && !s.is_frozen() {
                        s.set_frozen(true);
                    }
                    idle < self.idle_timeout
                });
            }
            pool.idle.retain(|_, sandboxes| !sandboxes.is_empty());
        }
        self.pool.lock().expect("pool lock").idle.clear();
    }

    /// Keeps `executor.prepared_sandboxes` slots ready for cold starts, from
    /// the node's first cold start on (a node that runs nothing holds none);
    /// runs until `shutdown`.
    pub async fn run_slot_preparer(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.refill.notified() => {}
            }
            while self.prepared.lock().expect("slots lock").len() < self.prepared_target {
                match Slot::prepare(&self.isolation).await {
                    Ok(slot) => self.prepared.lock().expect("slots lock").push(slot),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not prepare a sandbox slot; trying again at the next cold start");
                        break;
                    }
                }
            }
        }
        self.prepared.lock().expect("slots lock").clear();
    }

    /// A prepared slot, or a new one when none is ready.
    async fn take_slot(&self) -> std::io::Result<Slot> {
        let ready = self.prepared.lock().expect("slots lock").pop();
        self.refill.notify_one();
        match ready {
            Some(slot) => Ok(slot),
            None => Slot::prepare(&self.isolation).await,
        }
    }

    fn launch(&self, invocation: &Invocation) -> Result<Launch, ExecutorError> {
        let config = &invocation.config;
        let runtime = config.runtime.as_str();
        let task_root = self.isolation.task_root(&invocation.code_dir);
        let runtime_dir = self.isolation.runtime_dir(&self.bootstrap_dir);
        let interpreter = |family: &str| {
            self.interpreters
                .get(family)
                .ok_or_else(|| ExecutorError::RuntimeUnavailable {
                    runtime: runtime.to_string(),
                    why: format!("no {family} interpreter"),
                })
        };
        let (program, args, address_space_limit_ok) = if runtime.starts_with("provided") {
            (task_root.join("bootstrap"), Vec::new(), true)
        } else if runtime.starts_with("python") {
            let bootstrap = runtime_dir.join("python_bootstrap.py");
            (
                interpreter("python")?.program.clone(),
                // -S: no site-packages scan (tens of ms per cold start); functions bring their
                // dependencies in their package, which is on sys.path.
                vec!["-S".into(), bootstrap.display().to_string()],
                true,
            )
        } else if runtime.starts_with("nodejs") {
            // V8 sizes its heap from this, not from the cgroup limit.
            let heap_mb = (config.memory_mb * 9 / 10).max(64);
            let bootstrap = runtime_dir.join("node_bootstrap.js");
            (
                interpreter("nodejs")?.program.clone(),
                vec![
                    format!("--max-old-space-size={heap_mb}"),
                    bootstrap.display().to_string(),
                ],
                false,
            )
        } else {
            return Err(ExecutorError::RuntimeUnavailable {
                runtime: runtime.to_string(),
                why: "this node does not support it".into(),
            });
        };
        let key = &invocation.key;
        let mut environment = vec![
            ("AWS_LAMBDA_FUNCTION_NAME".to_string(), key.function.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION".to_string(), key.version.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_string(),
                config.memory_mb.to_string(),
            ),
            ("AWS_REGION".to_string(), invocation.region.clone()),
            ("AWS_DEFAULT_REGION".to_string(), invocation.region.clone()),
            ("AWS_EXECUTION_ENV".to_string(), format!("AWS_Lambda_{runtime}")),
            ("AWS_LAMBDA_INITIALIZATION_TYPE".to_string(), "on-demand".to_string()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".to_string(),
                format!("/aws/lambda/{}", key.function),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME".to_string(),
                format!(
                    "{}/[{}]{}",
                    log_stream_day(),
                    key.version,
                    uuid::Uuid::new_v4().simple()
                ),
            ),
            ("LAMBDA_TASK_ROOT".to_string(), task_root.display().to_string()),
            ("LAMBDA_RUNTIME_DIR".to_string(), runtime_dir.display().to_string()),
            ("_HANDLER".to_string(), config.handler.clone()),
            ("TZ".to_string(), ":UTC".to_string()),
            ("LANG".to_string(), "en_US.UTF-8".to_string()),
            ("HOME".to_string(), "/tmp".to_string()),
            ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
            ("NODE_PATH".to_string(), format!("{}/node_modules", task_root.display())),
        ];
        environment.extend(config.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Launch {
            program,
            args,
            code_dir: invocation.code_dir.clone(),
            bootstrap_dir: self.bootstrap_dir.clone(),
            environment,
            memory_mb: config.memory_mb,
            address_space_limit_ok,
        })
    }

    /// This node's load for the scheduler: memory capacity, memory no sandbox
    /// holds, and idle sandboxes per key.
    pub fn load(&self) -> (u64, u64, Vec<(SandboxKey, u32)>) {
        let pool = self.pool.lock().expect("pool lock");
        let idle = pool
            .idle
            .iter()
            .map(|(key, sandboxes)| (key.clone(), sandboxes.len() as u32))
            .collect();
        let free = self
            .memory_capacity_mb
            .saturating_sub(self.reserved_mb.load(Ordering::SeqCst));
        (self.memory_capacity_mb, free, idle)
    }

    /// Takes a warm sandbox of this key, or reserves memory for a new one.
    fn checkout(&self, key: &SandboxKey, memory_mb: u32) -> Result<Checkout, ExecutorError> {
        // Reservations only grow under the pool lock, so the check and the add are one step.
        let mut pool = self.pool.lock().expect("pool lock");
        pool.evict_stale_revisions(key);
        if let Some(sandbox) = pool.idle.get_mut(key).and_then(Vec::pop) {
            return Ok(Checkout::Warm(Box::new(sandbox)));
        }
        let needed = u64::from(memory_mb);
        while self.reserved_mb.load(Ordering::SeqCst) + needed > self.memory_capacity_mb {
            if !pool.evict_least_recently_used() {
                return Err(ExecutorError::MemoryFull {
                    reserved_mb: self.reserved_mb.load(Ordering::SeqCst),
                    capacity_mb: self.memory_capacity_mb,
                });
            }
        }
        self.reserved_mb.fetch_add(needed, Ordering::SeqCst);
        Ok(Checkout::Cold(Reservation {
            reserved_mb: self.reserved_mb.clone(),
            mb: needed,
        }))
    }

    /// Runs an invocation in a warm sandbox of its version, or a new one.
    pub async fn invoke(&self, invocation: Invocation) -> Result<Outcome, ExecutorError> {
        let memory_mb = invocation.config.memory_mb;
        let (mut sandbox, cold_start) = match self.checkout(&invocation.key, memory_mb)? {
            Checkout::Warm(mut sandbox) => {
                if sandbox.is_frozen() {
                    sandbox.set_frozen(false);
                }
                (*sandbox, false)
            }
            // On any error below the reservation is dropped, which gives the memory back.
            Checkout::Cold(reservation) => {
                let launch = self.launch(&invocation)?;
                let slot = self.take_slot().await.map_err(cannot_start)?;
                let sandbox = Sandbox::start(&launch, &self.isolation, slot, reservation)
                    .await
                    .map_err(cannot_start)?;
                (sandbox, true)
            }
        };
        let timeout = Duration::from_secs(u64::from(invocation.config.timeout_s));
        let event = Event {
            request_id: invocation.request_id.clone(),
            payload: invocation.payload.clone(),
            deadline_ms: now_ms() + timeout.as_millis() as i64,
            invoked_function_arn: invocation.invoked_function_arn.clone(),
            client_context: invocation.client_context.clone(),
        };
        let started = Instant::now();
        let (reply, output) = sandbox.invoke(event, timeout).await;
        // As on Lambda, a cold start's duration does not count the runtime's init.
        let duration = match sandbox.init_duration() {
            Some(init) if cold_start => started
                .elapsed()
                .saturating_sub(init.saturating_sub(started - sandbox.started)),
            _ => started.elapsed(),
        };
        let (payload, function_error, keep, note) = match reply {
            Ok(RuntimeReply::Response(payload)) => (payload, None, true, None),
            Ok(RuntimeReply::Error { body, .. }) => (body, Some("Unhandled"), true, None),
            Ok(RuntimeReply::InitError { body, .. }) => (body, Some("Unhandled"), false, None),
            Err(Failure::Timeout) => {
                let message = format!("Task timed out after {:.2} seconds", timeout.as_secs_f64());
                (
                    error_document("Sandbox.Timedout", &message),
                    Some("Unhandled"),
                    false,
                    Some(message),
                )
            }
            Err(Failure::Exited { reason, out_of_memory }) => {
                let kind = if out_of_memory {
                    "Runtime.OutOfMemory"
                } else {
                    "Runtime.ExitError"
                };
                (
                    error_document(kind, &reason),
                    Some("Unhandled"),
                    false,
                    Some(format!("{reason} {kind}")),
                )
            }
        };
        let log = self.log_text(&invocation, &sandbox, &output, note.as_deref(), duration, cold_start);
        let warm = keep && sandbox.is_alive();
        if warm {
            let mut pool = self.pool.lock().expect("pool lock");
            pool.idle.entry(invocation.key.clone()).or_default().push(sandbox);
        }
        Ok(Outcome {
            payload,
            function_error: function_error.map(str::to_string),
            cold_start,
            log,
            warm,
        })
    }

    /// The invocation's log framed by Lambda's START, END and REPORT lines.
    fn log_text(
        &self,
        invocation: &Invocation,
        sandbox: &Sandbox,
        output: &[u8],
        note: Option<&str>,
        duration: Duration,
        cold_start: bool,
    ) -> String {
        let id = &invocation.request_id;
        let mut text = format!("START RequestId: {id} Version: {}\n", invocation.key.version);
        text.push_str(&String::from_utf8_lossy(output));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if let Some(note) = note {
            text.push_str(&format!("{id} {note}\n"));
        }
        text.push_str(&format!("END RequestId: {id}\n"));
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let memory = invocation.config.memory_mb;
        let used = sandbox.max_memory_used_mb().unwrap_or(0).min(u64::from(memory));
        text.push_str(&format!(
            "REPORT RequestId: {id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory} MB\tMax Memory Used: {used} MB\t",
            duration_ms.ceil() as u64
        ));
        if cold_start {
            if let Some(init) = sandbox.init_duration() {
                text.push_str(&format!("Init Duration: {:.2} ms\t", init.as_secs_f64() * 1000.0));
            }
        }
        text.push('\n');
        text
    }
}

fn cannot_start(error: std::io::Error) -> ExecutorError {
    ExecutorError::CannotStart(error.to_string())
}

fn error_document(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string())
}

/// `YYYY/MM/DD` of today (UTC), as Lambda's log stream names start.
fn log_stream_day() -> String {
    let days = now_ms().div_euclid(86_400_000);
    let (year, month, day) = floe_raft_store::time::civil_from_days(days);
    format!("{year:04}/{month:02}/{day:02}")
}

/// Resolves an interpreter to its real path and the prefix sandboxes need.
/// Python is asked itself, which sees through shims such as pyenv's.
fn resolve_interpreter(family: &str, program: &str) -> anyhow::Result<Interpreter> {
    if family == "python" {
        let output = std::process::Command::new(program)
            .args(["-c", "import sys; print(sys.executable); print(sys.base_prefix)"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let mut lines = text.lines();
        let executable = PathBuf::from(lines.next().unwrap_or_default().trim());
        let prefix = PathBuf::from(lines.next().unwrap_or_default().trim());
        anyhow::ensure!(
            executable.is_absolute() && prefix.is_absolute(),
            "{program} did not report its paths"
        );
        return Ok(Interpreter {
            program: executable,
            prefix,
        });
    }
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| anyhow::anyhow!("{program} not found in PATH"))?
    };
    let program = std::fs::canonicalize(&path)?;
    // …/bin/node → … (the prefix holds its libraries).
    let prefix = program
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(Interpreter { program, prefix })
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_stream_day_is_a_date() {
        let day = super::log_stream_day();
        assert_eq!(day.len(), 10, "{day}");
        assert!(day.starts_with("20"), "{day}");
    }
}
