//! One sandbox: a runtime process tree for one function version, serving one
//! invocation at a time through its own Runtime API.
//!
//! - `isolation.rs`: what this node can isolate with (bubblewrap, cgroups, private network);
//! - `cgroup.rs`: memory, pids and CPU limits, the freezer, OOM counts;
//! - `netns.rs`: a private network namespace holding the Runtime API listener;
//! - `slot.rs`: sandboxes prepared ahead (cgroups joined, namespace entered).
//!
//! The sandbox owns its process, its cgroups and its Runtime API server;
//! dropping it kills and removes all three.

pub mod cgroup;
pub mod isolation;
pub mod netns;
pub mod slot;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio_util::sync::CancellationToken;

use super::runtime_api::{self, Event, RuntimeChannel, RuntimeReply};
use cgroup::{Limits, SandboxGroup};
use isolation::Isolation;
use slot::{ExecSpec, Slot};

/// What a sandbox runs and how.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program and its arguments as the sandbox sees them.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Host paths of the code and of floe's bootstraps (bound read-only).
    pub code_dir: PathBuf,
    pub bootstrap_dir: PathBuf,
    /// The full environment: nothing of the node's own leaks in.
    pub environment: Vec<(String, String)>,
    pub memory_mb: u32,
    /// Whether an address-space rlimit may stand in for a memory cgroup
    /// (V8 cannot run under one).
    pub address_space_limit_ok: bool,
}

/// Why an invocation got no reply from the runtime.
#[derive(Debug)]
pub enum Failure {
    Timeout,
    Exited { reason: String, out_of_memory: bool },
}

/// Most log bytes kept from one invocation (the tail is kept).
const MAX_INVOCATION_LOG: usize = 256 * 1024;

pub struct Sandbox {
    child: Child,
    stdout: ChildStdout,
    stderr: ChildStderr,
    channel: RuntimeChannel,
    stop: CancellationToken,
    group: Option<SandboxGroup>,
    /// The private network namespace, held open while the sandbox lives.
    _network: Option<std::fs::File>,
    /// The memory it holds against the node's capacity, until it is dropped.
    _reservation: super::Reservation,
    /// Whether the freezer holds it (only ever while idle).
    frozen: bool,
    pub started: Instant,
    pub last_used: Instant,
    pub invocations: u64,
}

impl Sandbox {
    /// Turns a prepared slot into a sandbox running `launch`.
    pub async fn start(
        launch: &Launch,
        isolation: &Isolation,
        mut slot: Slot,
        reservation: super::Reservation,
    ) -> std::io::Result<Sandbox> {
        let started = Instant::now();
        let stop = CancellationToken::new();
        let (listener, namespace) = match slot.network.take() {
            Some(network) => (network.listener, Some(network.namespace)),
            None => (std::net::TcpListener::bind("127.0.0.1:0")?, None),
        };
        let (address, channel) = runtime_api::serve(listener, stop.clone())?;
        let runtime_api = if namespace.is_some() {
            format!("127.0.0.1:{}", netns::RUNTIME_API_PORT)
        } else {
            address.to_string()
        };
        let mut environment = launch.environment.clone();
        environment.push(("AWS_LAMBDA_RUNTIME_API".to_string(), runtime_api));
        let (program, args, current_dir) = match &isolation.bwrap {
            Some(bwrap) => {
                let mut args = isolation.bwrap_args(&launch.code_dir, &launch.bootstrap_dir);
                args.push("--".into());
                args.push(launch.program.display().to_string());
                args.extend(launch.args.iter().cloned());
                (bwrap.clone(), args, None)
            }
            None => (
                launch.program.clone(),
                launch.args.clone(),
                Some(launch.code_dir.clone()),
            ),
        };
        let spec = ExecSpec {
            program,
            args,
            environment,
            current_dir,
            address_space_limit: (slot.group.is_none() && launch.address_space_limit_ok)
                .then(|| u64::from(launch.memory_mb) * 1024 * 1024),
        };
        let limits = Limits {
            memory_bytes: u64::from(launch.memory_mb) * 1024 * 1024,
            pids: isolation.pids_limit,
            // 128 MB gets weight 100, as Lambda gives CPU in proportion to memory.
            cpu_weight: (launch.memory_mb * 100 / 128).max(1),
        };
        let launched = match slot.launch(&spec, limits).await {
            Ok(launched) => launched,
            Err(e) => {
                stop.cancel();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("start {}: {e}", launch.program.display()),
                ));
            }
        };
        Ok(Sandbox {
            child: launched.child,
            stdout: launched.stdout,
            stderr: launched.stderr,
            channel,
            stop,
            group: launched.group,
            _network: namespace,
            _reservation: reservation,
            frozen: false,
            started,
            last_used: started,
            invocations: 0,
        })
    }

    /// How long the runtime took to get ready (to its first `/next`), once known.
    pub fn init_duration(&self) -> Option<Duration> {
        self.channel.first_poll.get().map(|at| at.duration_since(self.started))
    }

    /// Runs one event and waits for the runtime's reply, the timeout, or the
    /// process's exit, collecting what it writes meanwhile.
    pub async fn invoke(&mut self, event: Event, timeout: Duration) -> (Result<RuntimeReply, Failure>, Vec<u8>) {
        self.invocations += 1;
        let mut logs = Vec::new();
        let mut reply = self.channel.send(event).await;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut out_buffer = [0u8; 8192];
        let mut err_buffer = [0u8; 8192];
        let (mut out_open, mut err_open) = (true, true);
        let outcome = loop {
            tokio::select! {
                biased;
                reply = &mut reply => {
                    break reply.map_err(|_| Failure::Exited { reason: "Runtime exited without providing a reason".into(), out_of_memory: false });
                }
                read = self.stdout.read(&mut out_buffer), if out_open => match read {
                    Ok(n) if n > 0 => logs.extend_from_slice(&out_buffer[..n]),
                    _ => out_open = false,
                },
                read = self.stderr.read(&mut err_buffer), if err_open => match read {
                    Ok(n) if n > 0 => logs.extend_from_slice(&err_buffer[..n]),
                    _ => err_open = false,
                },
                status = self.child.wait() => {
                    // It may have posted its reply just before exiting (an init error does).
                    break match reply.try_recv() {
                        Ok(reply) => Ok(reply),
                        Err(_) => {
                            let out_of_memory = self.group.as_ref().is_some_and(|g| g.oom_kills() > 0);
                            let reason = match status {
                                _ if out_of_memory => "Runtime exited with error: signal: killed (out of memory)".to_string(),
                                Ok(status) => format!("Runtime exited with error: {status}"),
                                Err(e) => format!("Runtime exited with error: {e}"),
                            };
                            Err(Failure::Exited { reason, out_of_memory })
                        }
                    };
                }
                _ = &mut deadline => break Err(Failure::Timeout),
            }
        };
        // Whatever the runtime wrote before answering is in the pipes now.
        drain_now(self.stdout.as_raw_fd(), &mut logs);
        drain_now(self.stderr.as_raw_fd(), &mut logs);
        if logs.len() > MAX_INVOCATION_LOG {
            logs.drain(..logs.len() - MAX_INVOCATION_LOG);
        }
        self.last_used = Instant::now();
        (outcome, logs)
    }

    /// Stops (or resumes) every process of the sandbox while it is idle.
    pub fn set_frozen(&mut self, frozen: bool) {
        if let Some(group) = &self.group {
            match group.set_frozen(frozen) {
                Ok(()) => self.frozen = frozen,
                Err(e) => tracing::warn!(error = %e, frozen, "freezer"),
            }
        }
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Peak memory of the sandbox in MB, when known.
    pub fn max_memory_used_mb(&self) -> Option<u64> {
        let bytes = match &self.group {
            Some(group) => group.peak_memory()?,
            None => {
                let pid = self.child.id()?;
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024
            }
        };
        Some(bytes.div_ceil(1024 * 1024))
    }

    /// True while the runtime process runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Reads what is buffered in a non-blocking pipe right now.
fn drain_now(fd: i32, logs: &mut Vec<u8>) {
    let mut buffer = [0u8; 8192];
    loop {
        let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        if n <= 0 {
            return;
        }
        logs.extend_from_slice(&buffer[..n as usize]);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = self.child.start_kill();
        // The cgroups (if any) kill what is left and remove themselves on drop.
    }
}
