//! A network test bed in namespaces: one hub namespace holding a Linux
//! bridge, and a server and N nodes each in its own namespace, joined to
//! the bridge by veth pairs. Nothing touches the host's own network: the
//! bridge lives in the hub namespace, and every address (10.99.0.0/24) is
//! inside namespaces this bed made. Packet loss is injected with nftables
//! in a node's namespace. Dropping the bed kills what runs in its
//! namespaces and deletes them, even when the test failed.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sh;

/// One host of the bed.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub addr: Ipv4Addr,
}

impl Host {
    /// `cmd` run inside this host's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Drops `percent`% of the UDP packets this host receives.
    pub fn udp_loss(&self, percent: u32) {
        self.nft(&format!("add rule inet shoal input meta l4proto udp numgen random mod 100 < {percent} drop"));
    }

    /// Drops every multicast packet this host receives (IGMP snooping gone
    /// wrong, the most common field failure).
    pub fn block_multicast(&self) {
        self.nft("add rule inet shoal input ip daddr 224.0.0.0/4 drop");
    }

    /// Removes every injected fault.
    pub fn heal(&self) {
        self.nft("flush chain inet shoal input");
    }

    fn nft(&self, rule: &str) {
        let _ = Command::new("ip").args(["netns", "exec", &self.ns, "nft", "add", "table", "inet", "shoal"]).output();
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "add", "chain", "inet", "shoal", "input"])
            .arg("{ type filter hook input priority 0; }")
            .output();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "nft"]);
        c.args(rule.split(' '));
        sh(&mut c);
    }
}

pub struct NetBed {
    hub: String,
    pub server: Host,
    pub nodes: Vec<Host>,
    children: Vec<Child>,
}

impl NetBed {
    /// A bed with a server and `nodes` nodes.
    pub fn new(nodes: usize) -> NetBed {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let id = format!("shoal{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let hub = format!("{id}-hub");
        let mut bed = NetBed {
            hub: hub.clone(),
            server: Host { ns: format!("{id}-srv"), addr: Ipv4Addr::new(10, 99, 0, 1) },
            nodes: (0..nodes)
                .map(|i| Host { ns: format!("{id}-n{i}"), addr: Ipv4Addr::new(10, 99, 0, 10 + i as u8) })
                .collect(),
            children: Vec::new(),
        };
        sh(Command::new("ip").args(["netns", "add", &hub]));
        sh(Command::new("ip").args(["-n", &hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]));
        sh(Command::new("ip").args(["-n", &hub, "link", "set", "br0", "up"]));
        let hosts: Vec<Host> = std::iter::once(bed.server.clone()).chain(bed.nodes.clone()).collect();
        for (i, h) in hosts.iter().enumerate() {
            bed.add_host(i, h);
        }
        bed
    }

    fn add_host(&mut self, i: usize, h: &Host) {
        let port = format!("p{i}");
        sh(Command::new("ip").args(["netns", "add", &h.ns]));
        sh(Command::new("ip")
            .args(["-n", &self.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &h.ns]));
        sh(Command::new("ip").args(["-n", &self.hub, "link", "set", &port, "master", "br0", "up"]));
        sh(Command::new("ip").args(["-n", &h.ns, "addr", "add", &format!("{}/24", h.addr), "dev", "eth0"]));
        sh(Command::new("ip").args(["-n", &h.ns, "link", "set", "eth0", "up"]));
        sh(Command::new("ip").args(["-n", &h.ns, "link", "set", "lo", "up"]));
        sh(Command::new("ip").args(["-n", &h.ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]));
    }

    /// Starts `cmd` (made with [`Host::command`]); it is killed when the bed
    /// drops.
    pub fn spawn(&mut self, mut cmd: Command) -> usize {
        let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }

    /// `cmd` run inside the hub namespace (where the bridge and taps are).
    pub fn hub_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hub]).arg(program);
        c
    }

    /// Makes a tap device on the bridge, in the hub namespace, for a QEMU
    /// started with [`NetBed::hub_command`]; it goes with the namespace.
    pub fn add_tap(&self, name: &str) {
        sh(Command::new("ip").args(["-n", &self.hub, "tuntap", "add", "dev", name, "mode", "tap"]));
        sh(Command::new("ip").args(["-n", &self.hub, "link", "set", name, "master", "br0", "up"]));
    }
}

impl Drop for NetBed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let all = std::iter::once(self.server.ns.clone()).chain(self.nodes.iter().map(|n| n.ns.clone()));
        for ns in all.chain(std::iter::once(self.hub.clone())) {
            // Anything still running inside would keep the namespace's
            // network alive: kill it before deleting.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}
