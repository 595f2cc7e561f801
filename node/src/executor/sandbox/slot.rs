//! Prepared sandbox slots: the function-independent, slow part of starting a
//! sandbox, done ahead of time so a cold start does not wait for it.
//!
//! A slot is a fresh cgroup, a private network namespace holding the Runtime
//! API listener, and a waiting process — `floed __sandbox-slot` — that has
//! already joined the cgroups (moving a process between cgroups costs ~10 ms
//! of kernel synchronisation) and the namespace. On a cold start the executor
//! sets the function's limits and sends the waiter one JSON line saying what
//! to exec; the waiter execs it in place, keeping its cgroups, namespace and
//! output pipes.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::cgroup::{Limits, SandboxGroup};
use super::isolation::Isolation;
use super::netns::{self, PrivateNetwork};

/// The hidden `floed` subcommand a waiter runs as.
pub const WAITER_COMMAND: &str = "__sandbox-slot";

/// What a waiter execs.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub environment: Vec<(String, String)>,
    pub current_dir: Option<PathBuf>,
    /// RLIMIT_AS in bytes, where no memory cgroup can limit the sandbox.
    pub address_space_limit: Option<u64>,
}

/// A prepared slot, waiting to become a sandbox.
pub struct Slot {
    waiter: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: ChildStderr,
    pub group: Option<SandboxGroup>,
    pub network: Option<PrivateNetwork>,
}

/// A slot's pieces once its waiter has exec'd the runtime.
pub struct Launched {
    pub child: Child,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub group: Option<SandboxGroup>,
}

/// How long a waiter may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

impl Slot {
    /// Creates the cgroups and network, and starts a waiter inside them.
    pub async fn prepare(isolation: &Isolation) -> std::io::Result<Slot> {
        let network = if isolation.private_network {
            Some(netns::create()?)
        } else {
            None
        };
        let group = match &isolation.cgroups {
            Some(cgroups) => {
                // Generous until the function's limits are known; set in `launch`.
                let limits = Limits {
                    memory_bytes: 256 * 1024 * 1024,
                    pids: isolation.pids_limit,
                    cpu_weight: 100,
                };
                let name = format!(
                    "sandbox-{}-{}",
                    super::isolation::incarnation(),
                    uuid::Uuid::new_v4().simple()
                );
                Some(cgroups.create(&name, limits).map_err(std::io::Error::other)?)
            }
            None => None,
        };
        let mut command = Command::new(std::env::current_exe()?);
        command.arg(WAITER_COMMAND);
        if let Some(group) = &group {
            command.args(group.procs_paths());
        }
        command.arg("--");
        match &network {
            Some(network) => {
                use std::os::fd::AsRawFd;
                command.arg(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    network.namespace.as_raw_fd()
                ))
            }
            None => command.arg("-"),
        };
        let mut waiter = command
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (waiter.stdin.take(), waiter.stdout.take(), waiter.stderr.take())
        else {
            return Err(std::io::Error::other("sandbox slot pipes missing"));
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        match tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await {
            Ok(Ok(_)) if line.trim() == "ready" => {}
            _ => {
                let mut reason = String::new();
                let mut stderr = BufReader::new(stderr);
                let _ = tokio::time::timeout(Duration::from_millis(200), stderr.read_line(&mut reason)).await;
                return Err(std::io::Error::other(format!(
                    "sandbox slot did not start: {}",
                    reason.trim()
                )));
            }
        }
        Ok(Slot {
            waiter,
            stdin,
            stdout,
            stderr,
            group,
            network,
        })
    }

    /// Sets the function's limits and has the waiter exec `spec`.
    pub async fn launch(mut self, spec: &ExecSpec, limits: Limits) -> std::io::Result<Launched> {
        if let Some(group) = &self.group {
            group.set_limits(limits).map_err(std::io::Error::other)?;
        }
        let mut line = serde_json::to_vec(spec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        drop(self.stdin);
        // Nothing of the waiter's own is left unread: it printed only "ready".
        let stdout = self.stdout.into_inner();
        Ok(Launched {
            child: self.waiter,
            stdout,
            stderr: self.stderr,
            group: self.group,
        })
    }
}

/// The waiter itself, in the `floed __sandbox-slot` process: join the
/// cgroups and network namespace, say ready, read the exec spec, exec it.
/// Arguments: the `cgroup.procs` files, `--`, the namespace file or `-`.
pub fn run_waiter(args: &[String]) -> ! {
    let fail = |what: &str, error: &dyn std::fmt::Display| -> ! {
        eprintln!("floe sandbox slot: {what}: {error}");
        std::process::exit(125)
    };
    let separator = args
        .iter()
        .position(|a| a == "--")
        .unwrap_or_else(|| fail("usage", &"missing --"));
    for procs in &args[..separator] {
        if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
            fail(&format!("join {procs}"), &e);
        }
    }
    if let Some(namespace) = args.get(separator + 1).filter(|path| *path != "-") {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(namespace).unwrap_or_else(|e| fail("open the network namespace", &e));
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            fail("enter the network namespace", &std::io::Error::last_os_error());
        }
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
        // The node dropped the slot without using it.
        std::process::exit(0);
    }
    let spec: ExecSpec = serde_json::from_str(&line).unwrap_or_else(|e| fail("read the exec spec", &e));
    if let Some(bytes) = spec.address_space_limit {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    }
    let mut command = std::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.environment.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    if let Some(dir) = &spec.current_dir {
        command.current_dir(dir);
    }
    use std::os::unix::process::CommandExt;
    let error = command.exec();
    fail(&format!("exec {}", spec.program.display()), &error)
}
