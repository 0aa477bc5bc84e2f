//! Fixtures for the DHCP tests: packets built with `dhcproto` (and raw
//! bytes for malformed ones), a server on 127.0.0.1 with ephemeral ports,
//! and network namespaces joined by a veth pair, deleted on drop.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcproto::v4::{self, DhcpOption, Flags, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable};
use shoal_pxe::dhcp::{Config, Counters, CountersSnapshot, DhcpServer, Mac, NodeBoot, Ports, ServerOptions};
use tokio::net::UdpSocket;

/// A client request built with `dhcproto`, broadcast flag set.
pub fn request(mac: Mac, kind: MessageType, opts: Vec<DhcpOption>) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(0x0051_07a1, z, z, z, z, mac.as_bytes());
    msg.set_opcode(Opcode::BootRequest);
    msg.set_flags(Flags::default().set_broadcast());
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    for opt in opts {
        msg.opts_mut().insert(opt);
    }
    msg.to_vec().expect("test packets encode")
}

/// A PXE ROM's DISCOVER for architecture `arch`.
pub fn pxe_discover(mac: Mac, arch: u16) -> Vec<u8> {
    request(mac, MessageType::Discover, pxe_options(arch))
}

pub fn pxe_options(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes()),
        DhcpOption::ClientSystemArchitecture(arch.into()),
        DhcpOption::ClientMachineIdentifier([&[0u8][..], &[0x11; 16]].concat()),
    ]
}

/// A request assembled by hand: header, cookie, the given raw options
/// (each `[code, len, body..]` or whatever the test wants), then end.
pub fn raw_request(mac: Mac, options: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![0u8; 236];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&0x0051_07a1_u32.to_be_bytes());
    b[10] = 0x80;
    b[28..34].copy_from_slice(mac.as_bytes());
    b.extend_from_slice(&[99, 130, 83, 99]);
    for opt in options {
        b.extend_from_slice(opt);
    }
    b.push(255);
    b
}

/// Decodes a message we built or our server sent (trusted bytes).
pub fn parse(bytes: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(bytes)).expect("server replies decode")
}

pub fn reply_type(msg: &Message) -> Option<MessageType> {
    msg.opts().msg_type()
}

pub fn boot_file(msg: &Message) -> Option<String> {
    match msg.opts().get(v4::OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => Some(String::from_utf8_lossy(f).into_owned()),
        _ => None,
    }
}

pub fn vendor_class(msg: &Message) -> Option<Vec<u8>> {
    match msg.opts().get(v4::OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(c)) => Some(c.clone()),
        _ => None,
    }
}

/// Polls `f` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A DHCP server on 127.0.0.1 (ephemeral ports, broadcasts to loopback)
/// and a client socket it answers.
pub struct Loopback {
    pub server: SocketAddr,
    pub proxy: Option<SocketAddr>,
    pub client: UdpSocket,
    pub counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Loopback {
    pub async fn start(mut cfg: Config, nodes: HashMap<Mac, NodeBoot>) -> Self {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        cfg.ports = Ports { server: 0, client: client.local_addr().unwrap().port(), proxy: 0 };
        let opts = ServerOptions {
            listen_ip: Ipv4Addr::LOCALHOST,
            broadcast_ip: Ipv4Addr::LOCALHOST,
            ..ServerOptions::default()
        };
        let server = DhcpServer::bind(cfg, Arc::new(nodes), opts).await.unwrap();
        let addr = server.local_addr().unwrap();
        let proxy = server.proxy_local_addr().map(|a| a.unwrap());
        let counters = server.counters();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Loopback { server: addr, proxy, client, counters, stop: Some(stop) }
    }

    /// Sends `bytes` to `to` and waits up to `wait` for a reply.
    pub async fn ask(&self, to: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Message> {
        self.client.send_to(bytes, to).await.unwrap();
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, self.client.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(parse(&buf[..n])),
            _ => None,
        }
    }

    /// Sends `bytes` to `to` and waits up to `wait` for a reply to `mac`,
    /// skipping replies to others.
    pub async fn ask_for(&self, to: SocketAddr, bytes: &[u8], mac: Mac, wait: Duration) -> Option<Message> {
        self.client.send_to(bytes, to).await.unwrap();
        let end = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, _) = tokio::time::timeout_at(end, self.client.recv_from(&mut buf)).await.ok()?.ok()?;
            let msg = parse(&buf[..n]);
            if msg.chaddr() == mac.as_bytes() {
                return Some(msg);
            }
        }
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether this machine can run the namespace tests: root, `ip`, busybox.
pub fn netns_ready() -> bool {
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    let ready = ok("ip", &["netns", "list"]) && ok("busybox", &["true"]) && ok("ip", &["-V"]);
    let probe = Netns::new("probe");
    if !ready || probe.is_none() {
        eprintln!("skipped: needs root, iproute2 and busybox (apt-get install busybox)");
        return false;
    }
    true
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn new(tag: &str) -> Option<Self> {
        let name = format!("shoal-dhcp-{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let ok = Command::new("ip").args(["netns", "add", &name]).stderr(Stdio::null()).status().ok()?.success();
        let ns = Netns { name };
        (ok && ns.ip(&["link", "set", "lo", "up"])).then_some(ns)
    }

    /// Runs `ip -n NAME args..`; true on success.
    pub fn ip(&self, args: &[&str]) -> bool {
        Command::new("ip").arg("-n").arg(&self.name).args(args).status().is_ok_and(|s| s.success())
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a new thread that has joined this namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Two namespaces joined by a veth pair: the server's `s0` with
/// `10.77.0.1/24`, the client's `c0` with no address.
pub struct Lan {
    pub server: Netns,
    pub client: Netns,
}

pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

impl Lan {
    pub fn new() -> Self {
        let server = Netns::new("srv").expect("server namespace");
        let client = Netns::new("cli").expect("client namespace");
        let made = Command::new("ip")
            .args(["link", "add", "s0", "netns", &server.name, "type", "veth", "peer", "name", "c0", "netns"])
            .arg(&client.name)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made, "veth pair");
        assert!(server.ip(&["addr", "add", "10.77.0.1/24", "dev", "s0"]));
        assert!(server.ip(&["link", "set", "s0", "up"]));
        assert!(client.ip(&["link", "set", "c0", "up"]));
        Lan { server, client }
    }

    /// Gives the client interface a new MAC (and drops its addresses).
    pub fn set_client_mac(&self, mac: Mac) {
        assert!(self.client.ip(&["addr", "flush", "dev", "c0"]));
        assert!(self.client.ip(&["link", "set", "c0", "down"]));
        assert!(self.client.ip(&["link", "set", "c0", "address", &mac.to_string()]));
        assert!(self.client.ip(&["link", "set", "c0", "up"]));
    }
}

/// A DHCP server running on its own thread inside a namespace; stopped and
/// joined on drop.
pub struct NsServer {
    pub counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsServer {
    pub fn start(ns: &Netns, cfg: Config, nodes: HashMap<Mac, NodeBoot>, opts: ServerOptions) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let server = DhcpServer::bind(cfg, Arc::new(nodes), opts).await.expect("bind in namespace");
                ready_tx.send(server.counters()).unwrap();
                server
                    .run(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let counters = ready_rx.recv_timeout(Duration::from_secs(10)).expect("server started");
        NsServer { counters, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A busybox `udhcpc` hook script that records each event's environment
/// in `dir/EVENT` and configures the address on bound and renew (so that a
/// renewal can go out unicast).
pub fn hook_script(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("hook.sh");
    let script = format!(
        "#!/bin/sh\nenv > '{dir}/'\"$1\".tmp && mv '{dir}/'\"$1\".tmp '{dir}/'\"$1\"\n\
         case \"$1\" in bound|renew) ip addr replace \"$ip/${{mask:-24}}\" dev \"$interface\" ;; esac\nexit 0\n",
        dir = dir.display()
    );
    std::fs::write(&path, script).unwrap();
    Command::new("chmod").arg("755").arg(&path).status().unwrap();
    path
}

/// The `KEY=value` lines a hook recorded for `event`, if it ran.
pub fn hook_env(dir: &std::path::Path, event: &str) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join(event)).ok()?;
    Some(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
}
