//! A harness that runs real `floed` processes on loopback ports, each with
//! its own data dir, and can kill, stop, restart and add them.
//!
//! The multi-node tests in `tests/` use it, and so does the fault-injection
//! suite: [`net`] (nodes in network namespaces: partitions, loss, slow
//! links), [`workload`] (operations through the SDK), [`history`] (what
//! happened), [`checker`] (the promises), [`chaos`] (scenarios and runs).

pub mod chaos;
pub mod checker;
pub mod history;
pub mod net;
pub mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use floe_client::Client;

/// The access key every test cluster's first node creates at bootstrap.
pub const TEST_ACCESS_KEY_ID: &str = "FLOETESTACCESSKEY000";
pub const TEST_SECRET_ACCESS_KEY: &str = "floe-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ";

pub fn test_credentials() -> floe_client::Credentials {
    floe_client::Credentials {
        access_key_id: TEST_ACCESS_KEY_ID.into(),
        secret_access_key: TEST_SECRET_ACCESS_KEY.into(),
    }
}

/// An SDK client signing with the test key.
pub async fn connect<I, S>(endpoints: I) -> anyhow::Result<Client>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Ok(Client::connect_with(endpoints, Some(test_credentials())).await?)
}

/// The `floe` CLI, signing with the test key.
pub fn floe_command() -> Command {
    let mut command = Command::new(binary("floe"));
    command
        .env("FLOE_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
        .env("FLOE_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
        .env_remove("FLOE_CREDENTIALS");
    command
}

/// Runs the `floe` CLI (signing with the test key): (exit code, stdout, stderr).
pub fn run_floe(args: &[&str]) -> (i32, String, String) {
    let output = floe_command().args(args).output().expect("run floe");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `floed` alone with its data in `data_dir` and all three listeners on free
/// loopback ports (add the flags a test is about).
pub fn floed_on_loopback(data_dir: &Path) -> Command {
    let mut command = Command::new(binary("floed"));
    command.arg("--data-dir").arg(data_dir).args([
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ]);
    command
}

/// Signs a Lambda REST request in `headers` (which hold its `host`) with
/// the test key, over a body whose SHA-256 is `payload_hash`, as botocore
/// signs it.
pub fn sign_rest(headers: &mut http::HeaderMap, method: &str, path: &str, payload_hash: &str) {
    floe_proto::sigv4::sign(
        &test_credentials(),
        "local",
        floe_proto::sigv4::REST_SERVICE,
        method,
        path,
        "",
        headers,
        payload_hash,
        std::time::SystemTime::now(),
    );
}

/// Finds a binary built by cargo next to the running test's target dir.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut profile_dir = exe.parent().expect("target dir");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target dir");
    }
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (cargo build --workspace) or set {}_BIN",
        path.display(),
        name.to_uppercase()
    );
    path
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `floed` process and its data dir.
pub struct NodeProcess {
    pub data_dir: PathBuf,
    /// The node's public gRPC address, known once it has started.
    pub address: Option<String>,
    /// The node's peer (node-to-node) address, known once it has started.
    pub peer_address: Option<String>,
    child: Option<Child>,
    /// Flags added to the node's command line (kept across restarts).
    pub extra_args: Vec<String>,
    /// Environment variables added to the node's (kept across restarts).
    pub extra_env: Vec<(String, String)>,
}

impl NodeProcess {
    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The node's log so far (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How long a node may take to exit after SIGTERM (it drains invocations
/// and stops Raft; a hang is a bug).
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// Settings every test node gets: fast elections, small snapshots.
pub const TEST_CONFIG: &str = r#"
[raft]
heartbeat_interval = "50ms"
election_timeout_min = "300ms"
election_timeout_max = "600ms"
snapshot_after_entries = 50
keep_entries_after_snapshot = 0
leader_wait = "10s"
"#;

/// Several floed processes forming one cluster.
pub struct TestCluster {
    pub nodes: Vec<NodeProcess>,
    /// Set when the nodes run in their own network namespaces.
    network: Option<net::Network>,
    /// tmpfs mounts under the data dirs (small disks that can be filled).
    mounts: Vec<PathBuf>,
    /// `FLOE_FAILPOINTS` for every node (honoured by test builds only).
    failpoints: Option<String>,
    root: tempfile::TempDir,
    config_path: PathBuf,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Processes first (NodeProcess::drop), then their disks and network.
        self.nodes.clear();
        for mount in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
    }
}

impl TestCluster {
    /// A cluster of `size` voters with [`TEST_CONFIG`]: node 1 bootstraps, the others join it.
    pub async fn start(size: usize) -> anyhow::Result<TestCluster> {
        Self::start_with(size, TEST_CONFIG).await
    }

    /// A cluster of `size` voters whose nodes read `config` (TOML).
    pub async fn start_with(size: usize, config: &str) -> anyhow::Result<TestCluster> {
        let mut cluster = Self::empty(config)?;
        cluster.boot(size).await?;
        Ok(cluster)
    }

    /// No node yet: each is started with [`TestCluster::start_node`].
    pub fn empty(config: &str) -> anyhow::Result<TestCluster> {
        let root = tempfile::tempdir()?;
        let config_path = root.path().join("floed.toml");
        std::fs::write(&config_path, config)?;
        Ok(TestCluster {
            nodes: Vec::new(),
            network: None,
            mounts: Vec::new(),
            failpoints: None,
            root,
            config_path,
        })
    }

    /// Starts a node with `extra_args` and waits until it listens; its index.
    pub async fn start_node(&mut self, extra_args: Vec<String>) -> anyhow::Result<usize> {
        let index = self.add_process(extra_args)?;
        self.wait_started(index).await?;
        Ok(index)
    }

    /// A directory of the cluster's own, removed with it.
    pub fn scratch_dir(&self) -> &Path {
        self.root.path()
    }

    /// A cluster whose nodes each run in their own network namespace
    /// (`10.77.x.i`), so that links between them can be cut and slowed.
    /// `small_disks`: each data dir on its own 256 MiB tmpfs, to be filled.
    pub async fn start_networked(
        size: usize,
        config: &str,
        small_disks: bool,
        failpoints: Option<&str>,
    ) -> anyhow::Result<TestCluster> {
        let root = tempfile::tempdir()?;
        let config_path = root.path().join("floed.toml");
        std::fs::write(&config_path, config)?;
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            network: Some(net::Network::create(size)?),
            mounts: Vec::new(),
            failpoints: failpoints.map(String::from),
            root,
            config_path,
        };
        if small_disks {
            for index in 0..size {
                let dir = cluster.root.path().join(format!("node{}", index + 1));
                std::fs::create_dir_all(&dir)?;
                let status = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs"])
                    .arg(&dir)
                    .status()?;
                if !status.success() {
                    bail!("mount a tmpfs on {}", dir.display());
                }
                cluster.mounts.push(dir);
            }
        }
        cluster.boot(size).await?;
        Ok(cluster)
    }

    async fn boot(&mut self, size: usize) -> anyhow::Result<()> {
        let cluster = self;
        cluster.add_process(Vec::new())?;
        cluster.wait_started(0).await?;
        for _ in 1..size {
            cluster.join_new_node().await?;
        }
        cluster.wait_for_voters(size).await?;
        Ok(())
    }

    /// The cluster's network, when its nodes run in namespaces.
    pub fn network(&self) -> anyhow::Result<&net::Network> {
        self.network
            .as_ref()
            .context("this cluster runs on loopback, not in namespaces")
    }

    /// SIGSTOP: the node stops answering, its sockets stay open.
    pub fn pause(&mut self, index: usize) {
        if let Some(pid) = self.nodes[index].pid() {
            unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, index: usize) {
        if let Some(pid) = self.nodes[index].pid() {
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        }
    }

    /// Fills node `index`'s disk (its data dir's filesystem) to the last
    /// byte; returns the file to delete to free it.
    pub fn fill_disk(&self, index: usize) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        let path = self.nodes[index].data_dir.join("disk-filler");
        let mut file = std::fs::File::create(&path)?;
        let block = vec![0u8; 1 << 20];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Fill the last partial block too.
        while file.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        Ok(path)
    }

    /// Undoes every fault: links whole, paused nodes resumed, stopped nodes
    /// restarted; waits until every node is a voter again.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        if let Some(network) = &self.network {
            network.heal()?;
        }
        for index in 0..self.nodes.len() {
            self.resume(index);
            if !self.nodes[index].is_running() {
                self.restart(index).await?;
            }
        }
        self.wait_for_voters(self.nodes.len()).await
    }

    fn add_process(&mut self, extra_args: Vec<String>) -> anyhow::Result<usize> {
        let index = self.nodes.len();
        let data_dir = self.root.path().join(format!("node{}", index + 1));
        self.nodes.push(NodeProcess {
            data_dir,
            address: None,
            peer_address: None,
            child: None,
            extra_args,
            extra_env: Vec::new(),
        });
        let (listen, peer_listen) = match &self.network {
            Some(network) => (
                format!("{}:7400", network.address(index)),
                format!("{}:7402", network.address(index)),
            ),
            None => ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string()),
        };
        self.spawn(index, &listen, &peer_listen)?;
        Ok(index)
    }

    fn spawn(&mut self, index: usize, listen: &str, peer_listen: &str) -> anyhow::Result<()> {
        let config_path = self.config_path.clone();
        let node = &mut self.nodes[index];
        for file in ["floed.addr", "floed.http", "floed.peer"] {
            let _ = std::fs::remove_file(node.data_dir.join(file));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.data_dir.with_extension("log"))?;
        let (mut command, http_listen) = match &self.network {
            Some(network) => {
                // nsenter enters only the network namespace: `ip netns exec`
                // would also remount /sys, hiding /sys/fs/cgroup from the node
                // (its sandboxes then ran without cgroups).
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{}", network.namespace(index)))
                    .arg("--")
                    .arg(binary("floed"));
                (command, format!("{}:7401", network.address(index)))
            }
            None => (Command::new(binary("floed")), "127.0.0.1:0".to_string()),
        };
        if let Some(failpoints) = &self.failpoints {
            command.env("FLOE_FAILPOINTS", failpoints);
        }
        let child = command
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(listen)
            .arg("--peer-listen")
            .arg(peer_listen)
            .args(["--http-listen", &http_listen])
            .env("FLOE_BOOTSTRAP_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
            .env("FLOE_BOOTSTRAP_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
            .args(&node.extra_args)
            .envs(node.extra_env.iter().map(|(k, v)| (k, v)))
            // The dispatcher's debug lines say why an event waited.
            .env("FLOE_LOG", "info,openraft=warn,floe_node::service::dispatch=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn floed")?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits for node `index` to write its address file.
    async fn wait_started(&mut self, index: usize) -> anyhow::Result<String> {
        let path = self.nodes[index].data_dir.join("floed.addr");
        wait_for("the node's address file", Duration::from_secs(20), || {
            let exists = path.exists();
            async move { exists }
        })
        .await
        .with_context(|| self.nodes[index].log())?;
        let address = std::fs::read_to_string(&path)?;
        // Written before the address file.
        let peer_address = std::fs::read_to_string(self.nodes[index].data_dir.join("floed.peer"))?;
        self.nodes[index].address = Some(address.clone());
        self.nodes[index].peer_address = Some(peer_address);
        Ok(address)
    }

    /// The first join token, which node 1 wrote to its data dir (once its
    /// bootstrap finished, shortly after it started listening).
    pub async fn join_token(&self) -> anyhow::Result<String> {
        let path = self.nodes[0].data_dir.join("join-token");
        wait_for("node 1's join token", Duration::from_secs(20), || {
            let exists = path.exists();
            async move { exists }
        })
        .await?;
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .to_string())
    }

    /// Starts a new node that joins through the running members (their
    /// public addresses, with node 1's first join token); returns its index.
    pub async fn join_new_node(&mut self) -> anyhow::Result<usize> {
        let members = self.addresses().join(",");
        let token = self.join_token().await?;
        let index = self.add_process(vec!["--join".into(), members, "--join-token".into(), token])?;
        self.wait_started(index).await?;
        Ok(index)
    }

    /// Starts a node that joins through the running members with `token`,
    /// once it listens (it may still be refused); returns its index.
    pub async fn start_joining_node(&mut self, token: &str) -> anyhow::Result<usize> {
        let members = self.addresses().join(",");
        let index = self.add_process(vec!["--join".into(), members, "--join-token".into(), token.into()])?;
        self.wait_started(index).await?;
        Ok(index)
    }

    /// Waits for node `index` to exit by itself (say, refused); its exit status.
    pub async fn wait_exit(&mut self, index: usize, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.nodes[index].child.as_mut().context("not started")?;
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {index} still runs after {timeout:?}:\n{}",
                    self.nodes[index].log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a node that waits to be added (`--no-bootstrap`); returns its index.
    pub async fn start_waiting_node(&mut self) -> anyhow::Result<usize> {
        let index = self.add_process(vec!["--no-bootstrap".into()])?;
        self.wait_started(index).await?;
        Ok(index)
    }

    /// Addresses of the nodes that are running.
    pub fn addresses(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(|node| if node.is_running() { node.address.clone() } else { None })
            .collect()
    }

    /// Peer addresses of the nodes that are running.
    pub fn peer_addresses(&mut self) -> Vec<String> {
        self.nodes
            .iter_mut()
            .filter_map(|node| {
                if node.is_running() {
                    node.peer_address.clone()
                } else {
                    None
                }
            })
            .collect()
    }

    /// Node `index`'s public gRPC address.
    pub fn address(&self, index: usize) -> String {
        self.nodes[index].address.clone().expect("started node")
    }

    /// Node `index`'s node-to-node address (its peer listener).
    pub fn peer_address(&self, index: usize) -> String {
        self.nodes[index].peer_address.clone().expect("started node")
    }

    /// The Lambda REST API address of node `index` (as it wrote it when it started).
    pub fn http_address(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].data_dir.join("floed.http")).expect("started node's REST address")
    }

    /// An SDK client over every running node.
    pub async fn client(&mut self) -> anyhow::Result<Client> {
        connect(self.addresses()).await
    }

    /// An SDK client talking to one node only.
    pub async fn client_of(&self, index: usize) -> anyhow::Result<Client> {
        connect([self.address(index)]).await
    }

    /// kill -9.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the node to exit; one that has not exited
    /// within `SHUTDOWN_LIMIT` (its shutdown hangs) is killed, and that is an error.
    pub fn terminate(&mut self, index: usize) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.nodes[index].child.take().context("node not running")?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + SHUTDOWN_LIMIT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "node {index} did not exit within {SHUTDOWN_LIMIT:?} of SIGTERM{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts a stopped node on its old address, from its data dir.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let (address, peer_address) = (self.address(index), self.peer_address(index));
        self.spawn(index, &address, &peer_address)?;
        self.wait_started(index).await?;
        Ok(())
    }

    /// The status as seen by node `index`.
    pub async fn status(&self, index: usize) -> anyhow::Result<floe_client::proto::ClusterStatus> {
        Ok(self.client_of(index).await?.cluster_status().await?)
    }

    /// The index of the node that leads, as seen by the running nodes.
    pub async fn leader(&mut self) -> anyhow::Result<usize> {
        let addresses = self.addresses();
        for address in addresses {
            let client = connect([address]).await?.with_retry_for(Duration::from_millis(200));
            if let Ok(status) = client.cluster_status().await {
                if let Some(index) = self
                    .nodes
                    .iter()
                    .position(|n| n.address.as_deref() == Some(&status.leader_address))
                {
                    if status.leader_id.is_some() {
                        return Ok(index);
                    }
                }
            }
        }
        bail!("no leader")
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            text.push_str(&format!("\n--- node index {index} ({:?}) ---\n", node.address));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Copies every node's whole log to `dir/{prefix}-node{index}.log`.
    pub fn save_logs(&self, dir: &Path, prefix: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (index, node) in self.nodes.iter().enumerate() {
            std::fs::write(dir.join(format!("{prefix}-node{index}.log")), node.log())?;
        }
        Ok(())
    }

    /// Waits until a leader reports `count` voters.
    pub async fn wait_for_voters(&mut self, count: usize) -> anyhow::Result<()> {
        let addresses = self.addresses();
        let result = wait_for(&format!("{count} voters"), Duration::from_secs(30), || {
            let addresses = addresses.clone();
            async move {
                let Ok(client) = connect(addresses).await else {
                    return false;
                };
                let client = client.with_retry_for(Duration::from_millis(200));
                match client.cluster_status().await {
                    Ok(status) => {
                        status.leader_id.is_some() && status.nodes.iter().filter(|n| n.voter).count() == count
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
        result.with_context(|| self.logs())
    }

    pub fn data_dir(&self, index: usize) -> &Path {
        &self.nodes[index].data_dir
    }
}

/// A free loopback port (bound and released), for tests that need one up front.
pub fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// A function to deploy in a test: its runtime, handler and files.
pub struct TestFunction<'a> {
    pub name: &'a str,
    pub runtime: &'a str,
    pub handler: &'a str,
    pub files: &'a [(&'a str, &'a str)],
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub environment: &'a [(&'a str, &'a str)],
}

impl TestFunction<'_> {
    /// Zips the files (keeping `bootstrap` executable) and creates the function.
    pub async fn deploy(&self, client: &Client) -> anyhow::Result<floe_client::proto::FunctionInfo> {
        let dir = tempfile::tempdir()?;
        for (path, text) in self.files {
            let full = dir.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&full, text)?;
            if *path == "bootstrap" {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let config = floe_client::proto::FunctionConfig {
            runtime: self.runtime.into(),
            handler: self.handler.into(),
            memory_mb: self.memory_mb,
            timeout_s: self.timeout_s,
            environment: self
                .environment
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            description: String::new(),
        };
        let zip = floe_client::package::zip_directory(dir.path())?;
        Ok(client.create_function(self.name, config, zip).await?)
    }
}

/// A Python 3.11 function's configuration: `app.handler`, 128 MB, 3 s.
pub fn python_config() -> floe_client::proto::FunctionConfig {
    floe_client::proto::FunctionConfig {
        runtime: "python3.11".into(),
        handler: "app.handler".into(),
        memory_mb: 128,
        timeout_s: 3,
        environment: Default::default(),
        description: String::new(),
    }
}

/// A package whose `app.handler` runs one Python statement, e.g. `return event`.
pub fn python_package(statement: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("app.py"),
        format!("def handler(event, context):\n    {statement}\n"),
    )
    .expect("write app.py");
    floe_client::package::zip_directory(dir.path()).expect("zip")
}

/// An invocation's payload as JSON (panics with the raw payload if it is not JSON).
pub fn body(response: &floe_client::proto::InvokeResponse) -> serde_json::Value {
    serde_json::from_slice(&response.payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&response.payload)))
}

/// The node-to-node client as node 1 (its certificate and key, from its data
/// dir), trusting the members whose certificates are in the data dirs: a
/// test or benchmark that calls the peer plane the way the nodes do.
pub fn member_peers(cluster: &TestCluster) -> anyhow::Result<floe_node::cluster::peers::Peers> {
    member_peers_as(cluster, 0)
}

/// [`member_peers`] with node `index`'s certificate and key.
pub fn member_peers_as(cluster: &TestCluster, index: usize) -> anyhow::Result<floe_node::cluster::peers::Peers> {
    use floe_node::cluster::tls::{key_pin, read_pem_certificate, PeerTls, Pins};
    use floe_node::service::cluster::read_node_id;
    let pins = Pins::default();
    let mut pinned = std::collections::BTreeMap::new();
    for node in &cluster.nodes {
        let path = node.data_dir.join("tls").join("node.crt");
        let Some(id) = read_node_id(&node.data_dir)? else {
            continue;
        };
        if !path.exists() {
            continue;
        }
        let certificate = read_pem_certificate(&path)?;
        pinned.insert(id, key_pin(&certificate).map_err(anyhow::Error::msg)?);
    }
    pins.set(pinned);
    let data_dir = &cluster.nodes[index].data_dir;
    let id = read_node_id(data_dir)?.context("the node has no id")?;
    let tls = PeerTls::load(data_dir, id, None, pins)?.context("the node has no peer certificate")?;
    Ok(floe_node::cluster::peers::Peers::with_tls(
        tls.client_config().map_err(anyhow::Error::msg)?,
    ))
}

/// A CA and a server certificate for 127.0.0.1 in `dir`: (ca.crt, node.crt, node.key).
pub fn write_public_pki(
    dir: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};
    use std::os::unix::fs::PermissionsExt;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own (OpenSSL takes a certificate named as its issuer for self-signed).
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "floe test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let certificate = params.signed_by(&key, &issuer)?;
    let paths = (dir.join("ca.crt"), dir.join("node.crt"), dir.join("node.key"));
    std::fs::write(&paths.0, ca.pem())?;
    std::fs::write(&paths.1, certificate.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    std::fs::set_permissions(&paths.2, std::fs::Permissions::from_mode(0o600))?;
    Ok(paths)
}

/// Asks the leader at `leader` for a grant through the node-to-node client
/// the nodes use (the benchmarks and the scheduling tests time and load the
/// scheduler this way).
pub async fn grant(
    peers: &floe_node::cluster::peers::Peers,
    leader: &str,
    ask: &floe_node::wire::GrantAsk,
) -> anyhow::Result<floe_node::wire::Grant> {
    match peers.grant(leader, ask).await? {
        floe_node::wire::GrantReply::Granted(grant) => Ok(grant),
        other => bail!("not granted: {other:?}"),
    }
}

/// Gives a grant of [`grant`] back.
pub async fn release(
    peers: &floe_node::cluster::peers::Peers,
    leader: &str,
    ask: &floe_node::wire::GrantAsk,
    grant: &floe_node::wire::Grant,
) -> anyhow::Result<()> {
    let release = floe_node::wire::Release {
        grant: grant.id,
        term: grant.term,
        node: grant.node,
        key: ask.key.clone(),
        warm: grant.warm,
    };
    peers.release(leader, &release).await?;
    Ok(())
}
