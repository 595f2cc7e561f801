//! One sandbox: a runtime process tree for one function version, serving one
//! invocation at a time through its own Runtime API.
//!
//! - `isolation.rs`: what this node can isolate with (bubblewrap, cgroups, private network);
//! - `cgroup.rs`: memory, pids and CPU limits, the freezer, OOM counts;
//! - `netns.rs`: a private network namespace holding the Runtime API listener.
//!
//! The sandbox owns its process, its cgroups and its Runtime API server;
//! dropping it kills and removes all three.

pub mod cgroup;
pub mod isolation;
pub mod netns;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use super::runtime_api::{self, Event, RuntimeChannel, RuntimeReply};
use cgroup::{Limits, SandboxGroup};
use isolation::Isolation;

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

/// Joins the cgroups named before `--`, sets rlimits, then execs the rest.
/// Arguments: the address-space limit in KiB (or "unlimited"), the
/// `cgroup.procs` files, `--`, the command.
const LAUNCHER: &str = r#"limit=$1; shift
while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift
ulimit -c 0
[ "$limit" = unlimited ] || ulimit -v "$limit"
exec "$@""#;

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
    pub memory_mb: u32,
    /// Whether the freezer holds it (only ever while idle).
    frozen: bool,
    pub started: Instant,
    pub last_used: Instant,
    pub invocations: u64,
}

/// A unique name for a sandbox's cgroup.
fn sandbox_name() -> String {
    format!("sandbox-{}", uuid::Uuid::new_v4().simple())
}

impl Sandbox {
    pub async fn start(launch: &Launch, isolation: &Isolation) -> std::io::Result<Sandbox> {
        let stop_watch = Instant::now();
        let stop = CancellationToken::new();
        let (listener, namespace) = if isolation.private_network {
            let network = netns::create()?;
            (network.listener, Some(network.namespace))
        } else {
            (std::net::TcpListener::bind("127.0.0.1:0")?, None)
        };
        let (address, channel) = runtime_api::serve(listener, stop.clone())?;
        let runtime_api = if namespace.is_some() {
            format!("127.0.0.1:{}", netns::RUNTIME_API_PORT)
        } else {
            address.to_string()
        };

        let group = match &isolation.cgroups {
            Some(cgroups) => {
                let limits = Limits {
                    memory_bytes: u64::from(launch.memory_mb) * 1024 * 1024,
                    pids: isolation.pids_limit,
                    // 128 MB gets weight 100, as Lambda gives CPU in proportion to memory.
                    cpu_weight: (launch.memory_mb * 100 / 128).max(1),
                };
                Some(cgroups.create(&sandbox_name(), limits).map_err(std::io::Error::other)?)
            }
            None => None,
        };
        let address_space_limit_kb = match (&group, launch.address_space_limit_ok) {
            (None, true) => (u64::from(launch.memory_mb) * 1024).to_string(),
            _ => "unlimited".to_string(),
        };

        // The launcher shell joins the cgroups, sets rlimits and execs the
        // sandbox. Doing that in a `pre_exec` hook instead would force a
        // fork() of this large multi-threaded process, which costs 10–25 ms;
        // without a hook the child is started with posix_spawn.
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(LAUNCHER)
            .arg("floe-sandbox")
            .arg(&address_space_limit_kb);
        if let Some(group) = &group {
            command.args(group.procs_paths());
        }
        command.arg("--");
        if let Some(namespace) = &namespace {
            // The namespace file is held open by this process until the sandbox is gone.
            command
                .arg(&isolation.nsenter)
                .arg(format!(
                    "--net=/proc/{}/fd/{}",
                    std::process::id(),
                    namespace.as_raw_fd()
                ))
                .arg("--");
        }
        match &isolation.bwrap {
            Some(bwrap) => {
                command
                    .arg(bwrap)
                    .args(isolation.bwrap_args(&launch.code_dir, &launch.bootstrap_dir));
                command.arg("--").arg(&launch.program);
            }
            None => {
                command.arg(&launch.program).current_dir(&launch.code_dir);
            }
        }
        command
            .args(&launch.args)
            .env_clear()
            .envs(launch.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
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
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(std::io::Error::other("sandbox output pipes missing"));
        };
        let now = Instant::now();
        tracing::debug!(
            setup_ms = stop_watch.elapsed().as_secs_f64() * 1000.0,
            "sandbox spawned"
        );
        Ok(Sandbox {
            child,
            stdout,
            stderr,
            channel,
            stop,
            group,
            _network: namespace,
            memory_mb: launch.memory_mb,
            frozen: false,
            started: now,
            last_used: now,
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
