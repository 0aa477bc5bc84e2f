//! A fleet of QEMU nodes (TCG, SeaBIOS with QEMU's iPXE ROM) reloaded by
//! `shoal server` the way an operator does it: nodes registered in the
//! catalog, a job created through the API, and each node PXE-booting
//! through Shoal's DHCP and HTTP into the agent initramfs, which takes its
//! task from the server, loads over multicast, reports and powers off.
//! Powering a node on again boots its own disk (its decision is back to
//! `local`: iPXE sanboots it). Used by `tests/fleet.rs` and by the demo
//! (`src/bin/shoal-demo.rs`), which prints what this measures.
//!
//! The server runs in the bed's server namespace (10.99.0.1); QEMU runs
//! in the hub, on tap ports of the bridge. Node `i` is `n{i+1}` with MAC
//! `52:54:00:5d:00:0{i+1}`, address 10.99.0.{21+i} and a virtio disk
//! (`/dev/vda`) in a sparse file; QEMU's SMBIOS serial is its name, so
//! the marker OS of [`crate::osimage`] knows which node it runs on.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::netbed::NetBed;
use crate::pxeboot::{kernel, QemuNode};
use crate::{sh, shoal_bin, static_agent_bin, Bed};

/// The server's address on the bed, and its API.
pub const SERVER: &str = "10.99.0.1";
pub const URL: &str = "http://10.99.0.1:4870";

/// One node of the fleet.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub mac: String,
    pub tap: String,
    pub disk: PathBuf,
    /// Power-ons so far (each gets its own console file).
    pub boots: u32,
}

/// One power-on of a node, until it powered itself off.
#[derive(Debug)]
pub struct Run {
    pub node: String,
    pub console: String,
    /// From power-on to power-off.
    pub wall: Duration,
    /// From power-on to the agent's first line, if the agent ran.
    pub to_agent: Option<Duration>,
}

pub struct Fleet<'a> {
    pub dir: &'a Bed,
    pub net: NetBed,
    pub nodes: Vec<Node>,
    /// An admin token of project `default`.
    pub token: String,
}

/// Builds the agent initramfs (static agent, the store's key, busybox for
/// the debug shell) into the bed; returns its path.
pub fn agent_initramfs(dir: &Bed) -> PathBuf {
    let key = dir.path("server.pub");
    fs::write(&key, dir.ok(&["key"])).expect("key");
    let out = dir.path("agent.img");
    let version =
        kernel().file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("vmlinuz-")).map(String::from);
    let version = version.expect("a vmlinuz-VERSION kernel");
    let agent = static_agent_bin().to_str().expect("utf-8 path").to_string();
    dir.json(&[
        "initramfs",
        "build",
        "--kernel-version",
        &version,
        "--agent",
        &agent,
        "--key",
        key.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    out
}

impl<'a> Fleet<'a> {
    /// Starts `shoal server` on a new bed with the agent initramfs at
    /// `initrd` and registers `n` nodes with empty disks of `disk_bytes`.
    pub fn new(dir: &'a Bed, initrd: &Path, n: usize, disk_bytes: u64) -> Fleet<'a> {
        let mut net = NetBed::new(0);
        let log = fs::File::create(dir.path("shoal.log")).expect("log");
        let mut cmd = net.server.command(shoal_bin());
        cmd.arg("--data-dir").arg(dir.store());
        cmd.args(["server", "--listen", &format!("{SERVER}:4870"), "--mcast-iface", SERVER]);
        cmd.args(["--dhcp", "full", "--dhcp-iface", "eth0", "--boot-retry-secs", "2"]);
        // The agent powers the node off when done: the fleet (or a power
        // driver) powers it on again, into its disk.
        cmd.args(["--agent-cmdline", "console=ttyS0,115200 shoal.after=poweroff"]);
        cmd.arg("--agent-kernel").arg(kernel()).arg("--agent-initrd").arg(initrd);
        cmd.env("NO_COLOR", "1").stdout(Stdio::null()).stderr(log);
        net.spawn(cmd);
        let start = Instant::now();
        while !fs::read_to_string(dir.path("shoal.log")).unwrap_or_default().contains("shoal server ready") {
            assert!(start.elapsed() < Duration::from_secs(60), "shoal server did not start:\n{}", server_log(dir));
            std::thread::sleep(Duration::from_millis(100));
        }
        let token = dir.ok(&["token", "create", "--project", "default", "--admin"]).trim().to_string();
        let mut fleet = Fleet { dir, net, nodes: Vec::new(), token };
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let mac = format!("52:54:00:5d:00:{:02x}", i + 1);
            let ip = format!("10.99.0.{}", 21 + i);
            fleet.api(&["node", "register", &name, "--mac", &mac, "--type", "qemu", "--ip", &ip, "--disk", "/dev/vda"]);
            let disk = dir.path(&format!("{name}.disk"));
            fs::File::create(&disk).and_then(|f| f.set_len(disk_bytes)).expect("node disk");
            fleet.nodes.push(Node { tap: format!("tap{}", i + 1), name, mac, disk, boots: 0 });
        }
        fleet
    }

    /// `shoal --json ARGS` as a client of the server's API, from the
    /// server's namespace; panics unless it succeeds.
    pub fn api(&self, args: &[&str]) -> serde_json::Value {
        let mut cmd = self.net.server.command(shoal_bin());
        cmd.arg("--json").args(args).env("SHOAL_URL", URL).env("SHOAL_TOKEN", &self.token);
        let out = sh(&mut cmd);
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
    }

    /// `curl` against the API from the server's namespace.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let mut cmd = self.net.server.command("curl");
        cmd.args(["-fsS", "-X", "POST", "-H", "Content-Type: application/json"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg("--data")
            .arg(body.to_string())
            .arg(format!("{URL}{path}"));
        let out = sh(&mut cmd);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("POST {path}: {e}: {out}"))
    }

    /// Powers the nodes `which` on together and waits until each has
    /// powered itself off; panics after `timeout` with the consoles.
    pub fn power_on(&mut self, which: &[usize], timeout: Duration) -> Vec<Run> {
        let start = Instant::now();
        let mut running: Vec<(usize, QemuNode, Option<Duration>)> = Vec::new();
        for &i in which {
            let n = &mut self.nodes[i];
            n.boots += 1;
            if n.boots == 1 {
                self.net.add_tap(&n.tap);
            }
            let serial = self.dir.path(&format!("console-{}-{}.log", n.name, n.boots));
            let mut cmd = self.net.hub_command("qemu-system-x86_64");
            cmd.args(["-m", "256", "-smp", "1"])
                .args(["-smbios", &format!("type=1,serial={}", n.name)])
                .arg("-drive")
                .arg(format!("file={},format=raw,if=none,id=d0", n.disk.display()))
                // The NIC boots first: iPXE sanboots the disk when the
                // decision is local (SeaBIOS maps only drives in its boot
                // order, so the disk has a place after the NIC).
                .args(["-device", "virtio-blk-pci,drive=d0,bootindex=2"])
                .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={},bootindex=1", n.mac)])
                // The kernel RNG's seed: TCG's default CPU has no RDRAND.
                .args(["-device", "virtio-rng-pci"]);
            running.push((i, QemuNode::spawn(cmd, &n.tap, serial, self.dir.dir.path()), None));
        }
        let mut runs = Vec::new();
        while !running.is_empty() {
            let mut k = 0;
            while k < running.len() {
                let (_, q, to_agent) = &mut running[k];
                if to_agent.is_none() && q.console().contains("running as PID 1") {
                    *to_agent = Some(start.elapsed());
                }
                if q.exited() {
                    let (i, q, to_agent) = running.remove(k);
                    runs.push(Run {
                        node: self.nodes[i].name.clone(),
                        console: q.console(),
                        wall: start.elapsed(),
                        to_agent,
                    });
                    continue;
                }
                if start.elapsed() > timeout {
                    let all: Vec<String> =
                        running.iter().map(|(i, q, _)| format!("{}:\n{}", self.nodes[*i].name, q.console())).collect();
                    panic!(
                        "not every node powered off within {timeout:?}; server log:\n{}\n{}",
                        server_log(self.dir),
                        all.join("\n")
                    );
                }
                k += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        runs.sort_by(|a, b| a.node.cmp(&b.node));
        runs
    }

    /// Waits for a job to end; returns it.
    pub fn wait_job(&self, id: &serde_json::Value, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let j = self.api(&["job", "show", &id.to_string()]);
            if j["state"] != "pending" && j["state"] != "running" {
                return j;
            }
            assert!(start.elapsed() < timeout, "job {id} did not end within {timeout:?}: {j}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `shoal image verify IMAGE --target DISK` on the bed's store.
    pub fn verify(&self, image: &str, disk: &Path) -> bool {
        let out = self.dir.shoal(&["image", "verify", image, "--target", disk.to_str().expect("utf-8 path")]);
        out.status.success()
    }
}

/// `shoal server`'s log so far.
pub fn server_log(dir: &Bed) -> String {
    fs::read_to_string(dir.path("shoal.log")).unwrap_or_default()
}

/// The agent's console line containing `what`: its seconds since the
/// kernel started, and the line.
pub fn agent_line(console: &str, what: &str) -> Option<(f64, String)> {
    let line = console.lines().find(|l| l.contains("shoal-agent:") && l.contains(what))?;
    let stamp = line.trim_start_matches(|c| c != '[').trim_start_matches('[');
    let secs = stamp.split(']').next().and_then(|s| s.trim().parse().ok())?;
    Some((secs, line.to_string()))
}

/// What the load's report line says: (chunks by multicast, bytes
/// written, seconds).
pub fn load_figures(console: &str) -> Option<(u64, u64, f64)> {
    let (_, line) = agent_line(console, " done: ")?;
    let num_before = |marker: &str| -> Option<String> {
        let head = line.split(marker).next()?;
        head.rsplit(' ').next().map(str::to_string)
    };
    let multicast = num_before(" by multicast")?.parse().ok()?;
    let bytes = num_before(" bytes written")?.parse().ok()?;
    let secs = line.rsplit(" in ").next()?.trim_end_matches(" s").trim().parse().ok()?;
    Some((multicast, bytes, secs))
}

/// The marker OS's line on a console, if it booted.
pub fn marker_line(console: &str) -> Option<String> {
    console.lines().find(|l| l.starts_with(crate::osimage::MARKER)).map(|l| l.trim().to_string())
}
