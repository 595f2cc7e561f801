//! How sandboxes are isolated on this node, decided once at start and said
//! out loud: bubblewrap namespaces (mount, pid, ipc, uts, and a private
//! network unless disabled) with cgroup limits, or, where the machine cannot
//! give those, plain processes with rlimits and a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

use super::cgroup::Cgroups;
use crate::config::{ExecutorConfig, NetworkMode, SandboxMode};

/// This run of the node: a prefix of its sandboxes' group names, so that
/// its reaper kills only its own, and the next run only those of earlier ones.
pub fn incarnation() -> &'static str {
    static INCARNATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INCARNATION.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
}

/// Where a sandbox sees its code and floe's bootstraps.
pub const TASK_ROOT: &str = "/var/task";
pub const RUNTIME_DIR: &str = "/var/runtime";

/// The isolation this node applies to every sandbox.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// `Some` when sandboxes run under bubblewrap.
    pub bwrap: Option<PathBuf>,
    /// A private network namespace per sandbox (bubblewrap and root only).
    pub private_network: bool,
    pub cgroups: Option<Cgroups>,
    /// Kills this run's sandboxes once the node's process ends, however it ends.
    pub reaper: Option<std::sync::Arc<super::cgroup::Reaper>>,
    /// Size of each sandbox's private /tmp.
    pub tmp_bytes: u64,
    pub pids_limit: u32,
    /// Host paths bound read-only into every sandbox (interpreters' prefixes).
    pub read_only: Vec<PathBuf>,
}

fn bwrap_works(bwrap: &Path) -> bool {
    Command::new(bwrap)
        .args(["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"])
        .args([
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--",
            "/bin/true",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

impl Isolation {
    /// Detects what the machine offers, within what the config allows, and
    /// logs the result (a warning for anything weaker than full isolation).
    /// `data_dir` tells this node's cgroups apart from other nodes' on the same machine.
    pub fn detect(config: &ExecutorConfig, data_dir: &Path, read_only: Vec<PathBuf>) -> anyhow::Result<Isolation> {
        let bwrap = match config.sandbox {
            SandboxMode::Process => None,
            SandboxMode::Auto | SandboxMode::Bubblewrap => {
                let found = find_in_path("bwrap").filter(|path| bwrap_works(path));
                if found.is_none() && config.sandbox == SandboxMode::Bubblewrap {
                    anyhow::bail!("executor.sandbox = \"bubblewrap\" but bwrap is missing or does not work here (apt-get install bubblewrap)");
                }
                found
            }
        };
        let is_root = unsafe { libc::geteuid() } == 0;
        let private_network = bwrap.is_some() && is_root && config.network == NetworkMode::Isolated;
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
        let instance = format!("floe-{}", &hex::encode(digest)[..12]);
        let cgroups = match Cgroups::detect(&instance) {
            Ok(cgroups) => {
                let killed = cgroups.kill_sandboxes("sandbox-", Some(&format!("sandbox-{}-", incarnation())));
                if killed > 0 {
                    tracing::warn!(killed, "killed sandboxes left by an earlier run of this node");
                }
                Some(cgroups)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no usable cgroups: memory limits fall back to rlimits, idle sandboxes are not frozen");
                None
            }
        };
        let reaper = match &cgroups {
            Some(cgroups) => match cgroups.start_reaper(incarnation()) {
                Ok(reaper) => Some(std::sync::Arc::new(reaper)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the sandbox reaper: sandboxes frozen when this node is killed will stay");
                    None
                }
            },
            None => None,
        };
        let isolation = Isolation {
            bwrap,
            private_network,
            cgroups,
            reaper,
            tmp_bytes: config.tmp_size.as_u64(),
            pids_limit: config.pids_limit,
            read_only,
        };
        if isolation.bwrap.is_none() {
            tracing::warn!(
                "SANDBOXES ARE NOT ISOLATED: functions run as plain processes with rlimits (no namespaces); \
                 install bubblewrap to isolate them"
            );
        } else if !isolation.private_network && config.network == NetworkMode::Isolated {
            tracing::warn!("sandboxes share the host network (a private network needs root)");
        }
        tracing::info!(mode = %isolation.describe(), "sandbox isolation");
        Ok(isolation)
    }

    /// A short description for `floe cluster status` and the log.
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.bwrap.is_some() { "bubblewrap" } else { "process" }.to_string()];
        if self.bwrap.is_some() {
            parts.push(
                if self.private_network {
                    "private-net"
                } else {
                    "host-net"
                }
                .to_string(),
            );
        }
        parts.push(match &self.cgroups {
            Some(cgroups) => format!("cgroup-{}", cgroups.version()),
            None => "rlimits".to_string(),
        });
        parts.join("+")
    }

    /// The task root a sandbox sees for a code directory.
    pub fn task_root(&self, code_dir: &Path) -> PathBuf {
        if self.bwrap.is_some() {
            PathBuf::from(TASK_ROOT)
        } else {
            code_dir.to_path_buf()
        }
    }

    /// The runtime directory a sandbox sees for floe's bootstraps.
    pub fn runtime_dir(&self, bootstrap_dir: &Path) -> PathBuf {
        if self.bwrap.is_some() {
            PathBuf::from(RUNTIME_DIR)
        } else {
            bootstrap_dir.to_path_buf()
        }
    }

    /// The bubblewrap arguments that build one sandbox's view of the machine.
    pub fn bwrap_args(&self, code_dir: &Path, bootstrap_dir: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Merged-/usr systems have these as links; older ones as directories.
        for dir in ["/bin", "/sbin", "/lib", "/lib64", "/lib32"] {
            let path = Path::new(dir);
            if path.is_symlink() {
                if let Ok(target) = std::fs::read_link(path) {
                    args.extend(["--symlink".into(), target.display().to_string(), dir.into()]);
                }
            } else if path.exists() {
                args.extend(["--ro-bind".into(), dir.into(), dir.into()]);
            }
        }
        // Only what programs need from /etc: name resolution, TLS roots, time zones, users.
        for file in [
            "/etc/resolv.conf",
            "/etc/hosts",
            "/etc/nsswitch.conf",
            "/etc/localtime",
            "/etc/passwd",
            "/etc/group",
            "/etc/ssl",
            "/etc/ca-certificates",
            "/etc/ld.so.cache",
            "/etc/alternatives",
        ] {
            args.extend(["--ro-bind-try".into(), file.into(), file.into()]);
        }
        for path in &self.read_only {
            args.extend([
                "--ro-bind".into(),
                path.display().to_string(),
                path.display().to_string(),
            ]);
        }
        args.extend([
            "--ro-bind".into(),
            code_dir.display().to_string(),
            TASK_ROOT.into(),
            "--ro-bind".into(),
            bootstrap_dir.display().to_string(),
            RUNTIME_DIR.into(),
            "--proc".into(),
            "/proc".into(),
            "--dev".into(),
            "/dev".into(),
            "--size".into(),
            self.tmp_bytes.to_string(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--chdir".into(),
            TASK_ROOT.into(),
        ]);
        args
    }
}
