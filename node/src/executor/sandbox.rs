//! One sandbox: a runtime process for one function version, serving one
//! invocation at a time through its own Runtime API.
//!
//! Today the sandbox is a plain child process with a cleared environment and
//! the code directory as its working directory. Namespaces, cgroups and the
//! freezer (issue: execution engine) go behind this same type.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::runtime_api::{self, Event, RuntimeChannel, RuntimeReply};

/// What a sandbox runs and how.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program and its arguments (an interpreter and floe's bootstrap, or the package's `bootstrap`).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub code_dir: PathBuf,
    /// The full environment: nothing of the node's own leaks in.
    pub environment: Vec<(String, String)>,
}

/// Why an invocation got no reply from the runtime.
#[derive(Debug)]
pub enum Failure {
    Timeout,
    Exited(String),
}

/// The last bytes a sandbox wrote to stdout and stderr.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

pub struct Sandbox {
    child: Child,
    channel: RuntimeChannel,
    stop: CancellationToken,
    logs: Arc<Mutex<Vec<u8>>>,
    pub started: Instant,
    pub last_used: Instant,
    pub invocations: u64,
}

impl Sandbox {
    pub async fn start(launch: &Launch) -> std::io::Result<Sandbox> {
        let stop = CancellationToken::new();
        let (address, channel) = runtime_api::serve(stop.clone()).await?;
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .current_dir(&launch.code_dir)
            .env_clear()
            .envs(
                launch
                    .environment
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                stop.cancel();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("start {}: {e}", launch.program.display()),
                ));
            }
        };
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(drain(stdout, logs.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(drain(stderr, logs.clone()));
        }
        let now = Instant::now();
        Ok(Sandbox {
            child,
            channel,
            stop,
            logs,
            started: now,
            last_used: now,
            invocations: 0,
        })
    }

    /// Runs one event and waits for the runtime's reply, the timeout, or the process's exit.
    pub async fn invoke(
        &mut self,
        event: Event,
        timeout: Duration,
    ) -> Result<RuntimeReply, Failure> {
        self.invocations += 1;
        let mut reply = self.channel.send(event).await;
        let outcome = tokio::select! {
            biased;
            reply = &mut reply => reply.map_err(|_| Failure::Exited("Runtime exited without providing a reason".into())),
            status = self.child.wait() => {
                // It may have posted its reply just before exiting (an init error does).
                match reply.try_recv() {
                    Ok(reply) => Ok(reply),
                    Err(_) => Err(Failure::Exited(match status {
                        Ok(status) => format!("Runtime exited with error: {status}"),
                        Err(e) => format!("Runtime exited with error: {e}"),
                    })),
                }
            }
            _ = tokio::time::sleep(timeout) => Err(Failure::Timeout),
        };
        self.last_used = Instant::now();
        outcome
    }

    /// The sandbox's recent output (stdout and stderr interleaved).
    pub fn recent_logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().expect("log buffer")).into_owned()
    }

    /// True while the runtime process runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = self.child.start_kill();
    }
}

async fn drain(mut stream: impl tokio::io::AsyncRead + Unpin, logs: Arc<Mutex<Vec<u8>>>) {
    let mut buffer = vec![0u8; 8192];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut logs = logs.lock().expect("log buffer");
                logs.extend_from_slice(&buffer[..n]);
                if logs.len() > LOG_BUFFER_BYTES {
                    let excess = logs.len() - LOG_BUFFER_BYTES;
                    logs.drain(..excess);
                }
            }
        }
    }
}
