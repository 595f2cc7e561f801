//! A real network for a test cluster: each node in its own network
//! namespace, joined by veth pairs to a bridge in a hub namespace, and the
//! test process (in the root namespace) on the same bridge. Faults are made
//! where the traffic really flows:
//! - partitions and packet loss with nftables rules inside a node's namespace;
//! - slow links with a qdisc on its veth: `netem` delay where the kernel has
//!   it, else a `tbf` rate limit (these machines' kernels lack netem).
//!
//! Names carry the creating process's id, so a later run can tell a crashed
//! run's leftovers (its process is gone) and remove them.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

const PREFIX: &str = "floechaos";

/// Runs a command; fails with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("run {program} (is iproute2/nftables installed?)"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

/// nft inside `namespace`.
fn nft(namespace: &str, rules: &str) -> anyhow::Result<()> {
    run("ip", &["netns", "exec", namespace, "nft", rules])
}

/// One cluster's network: nodes `0..n` at `10.77.{subnet}.{i + 1}`, the test at `.254`.
pub struct Network {
    /// Namespace names, one per node.
    namespaces: Vec<String>,
    hub: String,
    subnet: u8,
    /// The root namespace's end of its veth.
    root_link: String,
    /// The slow-link qdisc this kernel supports.
    netem: bool,
}

impl Network {
    /// Removes namespaces and links left by runs whose process has died.
    pub fn clean_up_crashed_runs() {
        let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid: u32 = rest.split('-').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            if pid != 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", name]);
            }
        }
        // Root-side links of dead runs: `fc{subnet}r` whose hub namespace is gone
        // disappear with it (a veth dies with its peer's namespace).
    }

    /// Creates the namespaces, the bridge and the links for `nodes` nodes.
    pub fn create(nodes: usize) -> anyhow::Result<Network> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        Self::clean_up_crashed_runs();
        let pid = std::process::id();
        // A subnet no other live network of this machine uses.
        let taken = existing_subnets();
        let start = (pid + NEXT.fetch_add(1, Ordering::SeqCst) * 7) % 200;
        let subnet = (0..200)
            .map(|i| ((start + i) % 200 + 20) as u8)
            .find(|s| !taken.contains(s))
            .context("no free 10.77.x.0/24 subnet")?;
        let tag = format!("{PREFIX}{subnet}-{pid}");
        let hub = format!("{tag}-hub");
        let mut network = Network {
            namespaces: (0..nodes).map(|i| format!("{tag}-n{i}")).collect(),
            hub,
            subnet,
            root_link: format!("fc{subnet}r"),
            netem: false,
        };
        let _ = ip(&["link", "del", &network.root_link]);
        network.build().inspect_err(|_| network.destroy())?;
        network.netem = {
            let probe = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &network.namespaces[0],
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    "lo",
                    "root",
                    "netem",
                    "delay",
                    "1ms",
                ])
                .output();
            let ok = probe.is_ok_and(|o| o.status.success());
            if ok {
                let _ = run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        &network.namespaces[0],
                        "tc",
                        "qdisc",
                        "del",
                        "dev",
                        "lo",
                        "root",
                    ],
                );
            }
            ok
        };
        Ok(network)
    }

    fn build(&self) -> anyhow::Result<()> {
        ip(&["netns", "add", &self.hub])?;
        ip(&["-n", &self.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &self.hub, "link", "set", "br0", "up"])?;
        for (i, namespace) in self.namespaces.iter().enumerate() {
            ip(&["netns", "add", namespace])?;
            let (inner, outer) = (format!("fc{}n{i}", self.subnet), format!("fc{}b{i}", self.subnet));
            ip(&["link", "add", &inner, "type", "veth", "peer", "name", &outer])?;
            ip(&["link", "set", &inner, "netns", namespace])?;
            ip(&["link", "set", &outer, "netns", &self.hub])?;
            ip(&["-n", &self.hub, "link", "set", &outer, "master", "br0"])?;
            ip(&["-n", &self.hub, "link", "set", &outer, "up"])?;
            let address = format!("{}/24", self.address(i));
            ip(&["-n", namespace, "addr", "add", &address, "dev", &inner])?;
            ip(&["-n", namespace, "link", "set", &inner, "up"])?;
            ip(&["-n", namespace, "link", "set", "lo", "up"])?;
            nft(namespace, "add table inet floe")?;
            nft(
                namespace,
                "add chain inet floe input { type filter hook input priority 0; }",
            )?;
            nft(
                namespace,
                "add chain inet floe output { type filter hook output priority 0; }",
            )?;
        }
        let root_peer = format!("fc{}h", self.subnet);
        ip(&[
            "link",
            "add",
            &self.root_link,
            "type",
            "veth",
            "peer",
            "name",
            &root_peer,
        ])?;
        ip(&["link", "set", &root_peer, "netns", &self.hub])?;
        ip(&["-n", &self.hub, "link", "set", &root_peer, "master", "br0"])?;
        ip(&["-n", &self.hub, "link", "set", &root_peer, "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.client_address()),
            "dev",
            &self.root_link,
        ])?;
        ip(&["link", "set", &self.root_link, "up"])?;
        Ok(())
    }

    pub fn address(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, node as u8 + 1)
    }

    /// Where the test process is reached from the nodes (functions report here).
    pub fn client_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    pub fn namespace(&self, node: usize) -> &str {
        &self.namespaces[node]
    }

    /// Cuts every link between the nodes of `side` and the others (both ways).
    /// The test process still reaches every node.
    pub fn partition(&self, side: &[usize]) -> anyhow::Result<()> {
        let others: Vec<usize> = (0..self.namespaces.len()).filter(|i| !side.contains(i)).collect();
        for &a in side {
            for &b in &others {
                self.cut(a, b)?;
                self.cut(b, a)?;
            }
        }
        Ok(())
    }

    /// Drops what `from` sends to `to` and what `from` receives from `to`.
    fn cut(&self, from: usize, to: usize) -> anyhow::Result<()> {
        let peer = self.address(to);
        nft(
            &self.namespaces[from],
            &format!("add rule inet floe input ip saddr {peer} drop"),
        )?;
        nft(
            &self.namespaces[from],
            &format!("add rule inet floe output ip daddr {peer} drop"),
        )
    }

    /// Drops `percent` of the packets a node receives from and sends to its peers.
    pub fn lose(&self, node: usize, percent: u32) -> anyhow::Result<()> {
        let subnet = format!("10.77.{}.0/24", self.subnet);
        let client = self.client_address();
        nft(
            &self.namespaces[node],
            &format!("add rule inet floe input ip saddr {subnet} ip saddr != {client} numgen random mod 100 < {percent} drop"),
        )?;
        nft(
            &self.namespaces[node],
            &format!("add rule inet floe output ip daddr {subnet} ip daddr != {client} numgen random mod 100 < {percent} drop"),
        )
    }

    /// Slows a node's link: `delay_ms` of netem delay, or where the kernel
    /// has no netem, a rate limit that queues packets for up to that long.
    pub fn slow(&self, node: usize, delay_ms: u32) -> anyhow::Result<()> {
        let device = format!("fc{}n{node}", self.subnet);
        let delay = format!("{delay_ms}ms");
        let namespace = &self.namespaces[node];
        if self.netem {
            run(
                "ip",
                &[
                    "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", &device, "root", "netem", "delay",
                    &delay,
                ],
            )
        } else {
            run(
                "ip",
                &[
                    "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", &device, "root", "tbf", "rate",
                    "2mbit", "burst", "16kb", "latency", &delay,
                ],
            )
        }
    }

    /// What `slow` uses on this kernel.
    pub fn slow_link_kind(&self) -> &'static str {
        if self.netem {
            "netem delay"
        } else {
            "tbf rate limit (no netem in this kernel)"
        }
    }

    /// Removes every fault: all links whole, no loss, no delay.
    pub fn heal(&self) -> anyhow::Result<()> {
        for (i, namespace) in self.namespaces.iter().enumerate() {
            nft(namespace, "flush table inet floe")?;
            let device = format!("fc{}n{i}", self.subnet);
            let _ = run(
                "ip",
                &["netns", "exec", namespace, "tc", "qdisc", "del", "dev", &device, "root"],
            );
        }
        Ok(())
    }

    fn destroy(&self) {
        let _ = ip(&["link", "del", &self.root_link]);
        for namespace in &self.namespaces {
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Subnets of live networks (from the namespaces' names).
fn existing_subnets() -> Vec<u8> {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix(PREFIX))
        .filter_map(|rest| rest.split('-').next()?.parse().ok())
        .collect()
}
