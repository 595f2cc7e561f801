//! cgroup limits for sandboxes, on cgroup v2 (unified) or v1 (one hierarchy
//! per controller), whichever the machine has.
//!
//! This is a few files per sandbox — memory limit, pids limit, CPU weight,
//! freezer, OOM counter — written directly: both formats are small and
//! stable, and writing them ourselves keeps the hybrid layouts some machines
//! have (v1 controllers, v2 mounted without controllers) under our control.
//! Each sandbox gets a child group under the node's own group.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Which cgroup interface the machine offers.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// One unified hierarchy; `root` is the node's own group.
    V2 { root: PathBuf },
    /// One hierarchy per controller; each path is the node's group in that controller.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
        freezer: PathBuf,
    },
}

/// Limits for one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// Relative CPU share, proportional to memory as Lambda does.
    pub cpu_weight: u32,
}

/// The node's group in each v1 controller, or its v2 group, from /proc/self/cgroup.
fn own_groups() -> anyhow::Result<Vec<(String, String)>> {
    let text = fs::read_to_string("/proc/self/cgroup").context("read /proc/self/cgroup")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            Some((controllers, path))
        })
        .collect())
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!("floe-probe-{}", std::process::id()));
    let ok = fs::create_dir(&probe).is_ok();
    let _ = fs::remove_dir(&probe);
    ok
}

impl Cgroups {
    /// Finds a usable cgroup interface: v2 with memory, pids and cpu, else v1 with all four controllers.
    ///
    /// `instance` names this node's own group under its parent (several nodes
    /// may share a machine and a parent group; each cleans up only its own).
    pub fn detect(instance: &str) -> anyhow::Result<Cgroups> {
        let groups = own_groups()?;
        let unified = Path::new("/sys/fs/cgroup");
        if let Some((_, path)) = groups.iter().find(|(controllers, _)| controllers.is_empty()) {
            let controllers = fs::read_to_string(unified.join("cgroup.controllers")).unwrap_or_default();
            let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
            if has("memory") && has("pids") && has("cpu") {
                let root = unified.join(path.trim_start_matches('/')).join(instance);
                fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
                // A v2 group that holds processes cannot enable controllers for
                // children; floe's groups hold none, so enable them here.
                let _ = fs::write(root.join("cgroup.subtree_control"), "+memory +pids +cpu");
                if writable(&root) {
                    return Ok(Cgroups::V2 { root });
                }
            }
        }
        let v1 = |name: &str| -> anyhow::Result<PathBuf> {
            let (_, path) = groups
                .iter()
                .find(|(controllers, _)| controllers.split(',').any(|c| c == name))
                .with_context(|| format!("no v1 {name} controller"))?;
            let dir = Path::new("/sys/fs/cgroup")
                .join(name)
                .join(path.trim_start_matches('/'))
                .join(instance);
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            if !writable(&dir) {
                bail!("{} is not writable", dir.display());
            }
            Ok(dir)
        };
        Ok(Cgroups::V1 {
            memory: v1("memory")?,
            pids: v1("pids")?,
            cpu: v1("cpu")?,
            freezer: v1("freezer")?,
        })
    }

    /// The node's own group in each hierarchy (one for v2, four for v1).
    fn roots(&self) -> Vec<&PathBuf> {
        match self {
            Cgroups::V2 { root } => vec![root],
            Cgroups::V1 {
                memory,
                pids,
                cpu,
                freezer,
            } => vec![memory, pids, cpu, freezer],
        }
    }

    /// Kills the sandboxes whose group name starts with `prefix` and removes
    /// their groups. Frozen processes cannot take a signal, so a node killed
    /// while sandboxes idle frozen leaves them behind for ever unless someone
    /// thaws and kills them: the next start of the node (leftovers of every
    /// earlier incarnation), or its reaper (see [`run_reaper`]).
    pub fn kill_sandboxes(&self, prefix: &str, except: Option<&str>) -> usize {
        let names: std::collections::BTreeSet<String> = self
            .roots()
            .iter()
            .flat_map(|root| fs::read_dir(root).into_iter().flatten().flatten())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(prefix) && except.is_none_or(|except| !name.starts_with(except)))
            .collect();
        for name in &names {
            let dirs: Vec<PathBuf> = self.roots().iter().map(|root| root.join(name)).collect();
            let version = if matches!(self, Cgroups::V2 { .. }) { 2 } else { 1 };
            // Dropping the group kills what is inside and removes it.
            drop(SandboxGroup { dirs, version });
        }
        names.len()
    }

    /// The arguments that describe these groups to a reaper.
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![self.version().to_string()];
        args.extend(self.roots().iter().map(|root| root.display().to_string()));
        args
    }

    fn from_args(args: &[String]) -> Option<Cgroups> {
        match args {
            [version, root] if version == "v2" => Some(Cgroups::V2 { root: root.into() }),
            [version, memory, pids, cpu, freezer] if version == "v1" => Some(Cgroups::V1 {
                memory: memory.into(),
                pids: pids.into(),
                cpu: cpu.into(),
                freezer: freezer.into(),
            }),
            _ => None,
        }
    }

    /// Starts this node's reaper: a small process that waits for the node
    /// to exit, however it exits (kill -9 included), then kills the
    /// sandboxes of this incarnation (`sandbox-{incarnation}-…`). Dropping
    /// the returned handle closes the pipe it waits on.
    pub fn start_reaper(&self, incarnation: &str) -> std::io::Result<Reaper> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg(REAPER_COMMAND)
            .arg(incarnation)
            .args(self.to_args())
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let pipe = child.stdin.take();
        Ok(Reaper {
            _pipe: pipe,
            _child: child,
        })
    }

    pub fn version(&self) -> &'static str {
        match self {
            Cgroups::V2 { .. } => "v2",
            Cgroups::V1 { .. } => "v1",
        }
    }

    /// Creates the groups of one sandbox with its limits.
    pub fn create(&self, name: &str, limits: Limits) -> anyhow::Result<SandboxGroup> {
        let (dirs, version) = match self {
            Cgroups::V2 { root } => (vec![root.join(name)], 2),
            Cgroups::V1 {
                memory,
                pids,
                cpu,
                freezer,
            } => ([memory, pids, cpu, freezer].iter().map(|d| d.join(name)).collect(), 1),
        };
        for dir in &dirs {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let group = SandboxGroup { dirs, version };
        group.set_limits(limits)?;
        Ok(group)
    }
}

/// The hidden `floed` subcommand a reaper runs as.
pub const REAPER_COMMAND: &str = "__sandbox-reaper";

/// A running reaper; its pipe closes when the node's process ends.
#[derive(Debug)]
pub struct Reaper {
    _pipe: Option<std::process::ChildStdin>,
    _child: std::process::Child,
}

/// The reaper itself, in the `floed __sandbox-reaper` process. Arguments:
/// the incarnation, then the groups (`v2 ROOT` or `v1 MEMORY PIDS CPU FREEZER`).
pub fn run_reaper(args: &[String]) -> ! {
    use std::io::Read;
    let (Some(incarnation), Some(cgroups)) = (args.first(), args.get(1..).and_then(Cgroups::from_args)) else {
        eprintln!("floe sandbox reaper: usage: {REAPER_COMMAND} INCARNATION v2 ROOT | v1 MEMORY PIDS CPU FREEZER");
        std::process::exit(2)
    };
    // Signals of the node's terminal (Ctrl-C) are for the node: the reaper
    // must outlive it.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    // Blocks until the node's end of the pipe closes: it exited.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let killed = cgroups.kill_sandboxes(&format!("sandbox-{incarnation}-"), None);
    if killed > 0 {
        eprintln!("floe sandbox reaper: the node exited; killed its {killed} remaining sandboxes");
    }
    // Let the removal threads finish.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::process::exit(0)
}

fn write_knob(dir: &Path, file: &str, value: String) -> anyhow::Result<()> {
    fs::write(dir.join(file), &value).with_context(|| format!("write {value} to {}/{file}", dir.display()))
}

/// The groups of one sandbox. Dropping it kills what is left inside and removes them.
#[derive(Debug)]
pub struct SandboxGroup {
    /// v2: one dir; v1: memory, pids, cpu, freezer.
    dirs: Vec<PathBuf>,
    version: u8,
}

impl SandboxGroup {
    /// Sets (or changes) the memory, pids and CPU limits.
    pub fn set_limits(&self, limits: Limits) -> anyhow::Result<()> {
        let memory = limits.memory_bytes.to_string();
        if self.version == 2 {
            let dir = &self.dirs[0];
            write_knob(dir, "memory.max", memory)?;
            // No swap: a function gets exactly its configured memory.
            let _ = write_knob(dir, "memory.swap.max", "0".into());
            write_knob(dir, "pids.max", limits.pids.to_string())?;
            write_knob(dir, "cpu.weight", limits.cpu_weight.clamp(1, 10_000).to_string())?;
        } else {
            let dir = &self.dirs[0];
            // memory+swap may never be below memory: order the two writes so it never is.
            if write_knob(dir, "memory.limit_in_bytes", memory.clone()).is_err() {
                let _ = write_knob(dir, "memory.memsw.limit_in_bytes", memory.clone());
                write_knob(dir, "memory.limit_in_bytes", memory.clone())?;
            }
            let _ = write_knob(dir, "memory.memsw.limit_in_bytes", memory);
            write_knob(&self.dirs[1], "pids.max", limits.pids.to_string())?;
            // v1 shares: 1024 is the default weight of one CPU.
            write_knob(
                &self.dirs[2],
                "cpu.shares",
                (limits.cpu_weight * 1024 / 100).max(2).to_string(),
            )?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its pid to, to join the groups.
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|dir| dir.join("cgroup.procs")).collect()
    }

    fn freezer_dir(&self) -> &Path {
        self.dirs.last().expect("a group has a dir")
    }

    /// Freezes (or thaws) every process of the sandbox.
    pub fn set_frozen(&self, frozen: bool) -> std::io::Result<()> {
        if self.version == 2 {
            fs::write(self.freezer_dir().join("cgroup.freeze"), if frozen { "1" } else { "0" })
        } else {
            fs::write(
                self.freezer_dir().join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            )
        }
    }

    /// How many times the kernel's OOM killer fired in this sandbox.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.version == 2 {
            (self.dirs[0].join("memory.events"), "oom_kill")
        } else {
            (self.dirs[0].join("memory.oom_control"), "oom_kill")
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        let count = text
            .lines()
            .filter_map(|line| line.strip_prefix(key)?.trim().parse::<u64>().ok())
            .next()
            .unwrap_or(0);
        if count == 0 && self.version == 1 {
            // Older v1 kernels have no oom_kill counter: a hit limit is the sign.
            let failcnt = fs::read_to_string(self.dirs[0].join("memory.failcnt")).unwrap_or_default();
            return u64::from(failcnt.trim().parse::<u64>().unwrap_or(0) > 0);
        }
        count
    }

    /// Peak memory use in bytes, when the kernel reports it.
    pub fn peak_memory(&self) -> Option<u64> {
        let file = if self.version == 2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        fs::read_to_string(self.dirs[0].join(file)).ok()?.trim().parse().ok()
    }

    /// Kills every process left in the sandbox's groups.
    fn kill_all(&self) {
        if self.version == 2 && fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // A frozen process cannot die: thaw first.
        let _ = self.set_frozen(false);
        for dir in &self.dirs {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

impl Drop for SandboxGroup {
    fn drop(&mut self) {
        self.kill_all();
        let dirs = std::mem::take(&mut self.dirs);
        // The kernel removes a group only once its processes are gone, which
        // takes a moment after SIGKILL: wait for that off the caller's thread.
        std::thread::spawn(move || {
            for dir in dirs.iter().rev() {
                for _ in 0..500 {
                    if fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! The file formats, against a directory standing in for cgroupfs (the
    //! kernel side is exercised by the sandbox tests on a real node).
    use super::*;

    const LIMITS: Limits = Limits {
        memory_bytes: 128 * 1024 * 1024,
        pids: 64,
        cpu_weight: 200,
    };

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap_or_default()
    }

    #[test]
    fn v2_limits_freezer_and_oom_counter() {
        let root = tempfile::tempdir().unwrap();
        let cgroups = Cgroups::V2 {
            root: root.path().to_path_buf(),
        };
        let group = cgroups.create("sandbox-a", LIMITS).unwrap();
        let dir = root.path().join("sandbox-a");
        assert_eq!(read(&dir, "memory.max"), "134217728");
        assert_eq!(read(&dir, "memory.swap.max"), "0");
        assert_eq!(read(&dir, "pids.max"), "64");
        assert_eq!(read(&dir, "cpu.weight"), "200");
        assert_eq!(group.procs_paths(), vec![dir.join("cgroup.procs")]);
        group.set_frozen(true).unwrap();
        assert_eq!(read(&dir, "cgroup.freeze"), "1");
        fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(group.oom_kills(), 1);
        fs::write(dir.join("memory.peak"), "52428800\n").unwrap();
        assert_eq!(group.peak_memory(), Some(52_428_800));
    }

    #[test]
    fn v1_limits_across_controllers() {
        let root = tempfile::tempdir().unwrap();
        let controller = |name: &str| root.path().join(name);
        let cgroups = Cgroups::V1 {
            memory: controller("memory"),
            pids: controller("pids"),
            cpu: controller("cpu"),
            freezer: controller("freezer"),
        };
        let group = cgroups.create("sandbox-b", LIMITS).unwrap();
        let dir = |name: &str| controller(name).join("sandbox-b");
        assert_eq!(read(&dir("memory"), "memory.limit_in_bytes"), "134217728");
        assert_eq!(read(&dir("pids"), "pids.max"), "64");
        assert_eq!(
            read(&dir("cpu"), "cpu.shares"),
            "2048",
            "weight 100 is one CPU's 1024 shares"
        );
        assert_eq!(group.procs_paths().len(), 4);
        group.set_frozen(true).unwrap();
        assert_eq!(read(&dir("freezer"), "freezer.state"), "FROZEN");
        fs::write(
            dir("memory").join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(group.oom_kills(), 2);
    }
}
