//! The executor: runs invocations in sandboxes on this node and keeps them
//! warm for the next call of the same function version.
//!
//! - `sandbox.rs`: one runtime process and its lifecycle;
//! - `runtime_api.rs`: the only code that speaks the in-sandbox protocol;
//! - `bootstrap/`: floe's own runtime bootstraps.

pub mod runtime_api;
pub mod sandbox;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use floe_raft_store::model::FunctionConfig;
use runtime_api::{Event, RuntimeReply};
use sandbox::{Failure, Launch, Sandbox};

use crate::config::ExecutorConfig;
use crate::service::ServiceError;

/// Lambda's limit on synchronous request and response payloads.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

const PYTHON_BOOTSTRAP: &str = include_str!("bootstrap/python.py");

/// Which sandboxes can serve an invocation: same function, version and
/// revision (so a changed `$LATEST` never reuses an old sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SandboxKey {
    pub function: String,
    pub version: String,
    pub revision_id: String,
}

/// Everything needed to run one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub key: SandboxKey,
    pub config: FunctionConfig,
    pub code_dir: PathBuf,
    pub request_id: String,
    pub invoked_function_arn: String,
    pub region: String,
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
}

/// Interpreters by runtime family, resolved once at start.
#[derive(Debug, Clone, Default)]
struct Interpreters {
    by_family: BTreeMap<String, PathBuf>,
}

pub struct Executor {
    interpreters: Interpreters,
    bootstrap_dir: PathBuf,
    idle: Mutex<HashMap<SandboxKey, Vec<Sandbox>>>,
    idle_timeout: Duration,
}

impl Executor {
    pub fn new(config: &ExecutorConfig, data_dir: &Path) -> anyhow::Result<Arc<Executor>> {
        let bootstrap_dir = data_dir.join("runtime");
        std::fs::create_dir_all(&bootstrap_dir)?;
        std::fs::write(bootstrap_dir.join("python_bootstrap.py"), PYTHON_BOOTSTRAP)?;
        let mut interpreters = Interpreters::default();
        for (family, program) in &config.interpreters {
            match resolve_interpreter(family, program) {
                Ok(path) => {
                    tracing::info!(%family, path = %path.display(), "runtime interpreter");
                    interpreters.by_family.insert(family.clone(), path);
                }
                Err(e) => {
                    tracing::warn!(%family, %program, error = %e, "runtime unavailable on this node")
                }
            }
        }
        Ok(Arc::new(Executor {
            interpreters,
            bootstrap_dir,
            idle: Mutex::new(HashMap::new()),
            idle_timeout: config.idle_timeout,
        }))
    }

    /// Stops sandboxes idle for longer than the idle timeout; runs until `shutdown`.
    pub async fn run_evictor(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let period =
            (self.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
            let now = Instant::now();
            let mut idle = self.idle.lock().expect("pool lock");
            for sandboxes in idle.values_mut() {
                sandboxes.retain(|s| now.duration_since(s.last_used) < self.idle_timeout);
            }
            idle.retain(|_, sandboxes| !sandboxes.is_empty());
        }
        self.idle.lock().expect("pool lock").clear();
    }

    /// Number of idle warm sandboxes.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .expect("pool lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    fn launch(&self, invocation: &Invocation) -> Result<Launch, ServiceError> {
        let config = &invocation.config;
        let runtime = config.runtime.as_str();
        let (program, args) = if runtime.starts_with("provided") {
            (invocation.code_dir.join("bootstrap"), Vec::new())
        } else if runtime.starts_with("python") {
            let python = self.interpreters.by_family.get("python").ok_or_else(|| {
                ServiceError::FailedPrecondition(format!(
                    "runtime {runtime} is not available on this node (no Python interpreter)"
                ))
            })?;
            let bootstrap = self.bootstrap_dir.join("python_bootstrap.py");
            (
                python.clone(),
                vec!["-s".to_string(), bootstrap.display().to_string()],
            )
        } else {
            return Err(ServiceError::FailedPrecondition(format!(
                "runtime {runtime} is not supported by this node yet"
            )));
        };
        let key = &invocation.key;
        let mut environment = vec![
            ("AWS_LAMBDA_FUNCTION_NAME".to_string(), key.function.clone()),
            (
                "AWS_LAMBDA_FUNCTION_VERSION".to_string(),
                key.version.clone(),
            ),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_string(),
                config.memory_mb.to_string(),
            ),
            ("AWS_REGION".to_string(), invocation.region.clone()),
            ("AWS_DEFAULT_REGION".to_string(), invocation.region.clone()),
            (
                "AWS_EXECUTION_ENV".to_string(),
                format!("AWS_Lambda_{runtime}"),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME".to_string(),
                format!("/aws/lambda/{}", key.function),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME".to_string(),
                format!(
                    "{}/[{}]{}",
                    today(),
                    key.version,
                    uuid::Uuid::new_v4().simple()
                ),
            ),
            (
                "LAMBDA_TASK_ROOT".to_string(),
                invocation.code_dir.display().to_string(),
            ),
            (
                "LAMBDA_RUNTIME_DIR".to_string(),
                self.bootstrap_dir.display().to_string(),
            ),
            ("_HANDLER".to_string(), config.handler.clone()),
            ("TZ".to_string(), ":UTC".to_string()),
            ("LANG".to_string(), "en_US.UTF-8".to_string()),
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
            ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
        ];
        environment.extend(
            config
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        Ok(Launch {
            program,
            args,
            code_dir: invocation.code_dir.clone(),
            environment,
        })
    }

    /// Runs an invocation in a warm sandbox of its version, or a new one.
    pub async fn invoke(&self, invocation: Invocation) -> Result<Outcome, ServiceError> {
        let warm = {
            let mut idle = self.idle.lock().expect("pool lock");
            idle.get_mut(&invocation.key)
                .and_then(|sandboxes| sandboxes.pop())
        };
        let (mut sandbox, cold_start) = match warm {
            Some(sandbox) => (sandbox, false),
            None => {
                let launch = self.launch(&invocation)?;
                let sandbox = Sandbox::start(&launch).await.map_err(|e| {
                    ServiceError::FailedPrecondition(format!("cannot start the sandbox: {e}"))
                })?;
                (sandbox, true)
            }
        };
        let timeout = Duration::from_secs(u64::from(invocation.config.timeout_s));
        let deadline_ms = crate::service::functions::now_ms() + timeout.as_millis() as i64;
        let event = Event {
            request_id: invocation.request_id.clone(),
            payload: invocation.payload.clone(),
            deadline_ms,
            invoked_function_arn: invocation.invoked_function_arn.clone(),
            client_context: None,
        };
        let reply = sandbox.invoke(event, timeout).await;
        let (outcome, keep) = match reply {
            Ok(RuntimeReply::Response(payload)) => (
                Outcome {
                    payload,
                    function_error: None,
                    cold_start,
                },
                true,
            ),
            Ok(RuntimeReply::Error { body, .. }) => (function_error(body, cold_start), true),
            Ok(RuntimeReply::InitError { body, .. }) => (function_error(body, cold_start), false),
            Err(Failure::Timeout) => (
                error_document(
                    "Sandbox.Timedout",
                    &format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()),
                    cold_start,
                ),
                false,
            ),
            Err(Failure::Exited(reason)) => {
                let logs = sandbox.recent_logs();
                tracing::debug!(function = %invocation.key.function, %reason, %logs, "sandbox exited");
                (
                    error_document("Runtime.ExitError", &reason, cold_start),
                    false,
                )
            }
        };
        if keep && sandbox.is_alive() {
            let mut idle = self.idle.lock().expect("pool lock");
            idle.entry(invocation.key).or_default().push(sandbox);
        }
        Ok(outcome)
    }
}

fn function_error(body: Bytes, cold_start: bool) -> Outcome {
    Outcome {
        payload: body,
        function_error: Some("Unhandled".to_string()),
        cold_start,
    }
}

fn error_document(error_type: &str, message: &str, cold_start: bool) -> Outcome {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    function_error(Bytes::from(body.to_string()), cold_start)
}

fn today() -> String {
    // Days since the epoch are enough to tell log streams apart by day.
    let days = crate::service::functions::now_ms() / 86_400_000;
    format!("day{days}")
}

/// Resolves an interpreter to its real path. For Python this asks the
/// interpreter itself, which sees through shims such as pyenv's.
fn resolve_interpreter(family: &str, program: &str) -> anyhow::Result<PathBuf> {
    if family == "python" {
        let output = std::process::Command::new(program)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        anyhow::ensure!(path.is_absolute(), "{program} did not report its path");
        return Ok(path);
    }
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| anyhow::anyhow!("{program} not found in PATH"))
}
