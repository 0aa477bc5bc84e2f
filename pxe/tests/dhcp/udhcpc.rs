//! busybox `udhcpc` against the server, each test in its own pair of
//! network namespaces joined by a veth pair (deleted on drop, pass or
//! fail). Needs root, iproute2 and busybox; skipped with a message without.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_pxe::dhcp::{Config, DropReason, FullConfig, Mac, NodeBoot, PoolRange, ServerOptions};

use super::fixture::{eventually, hook_env, hook_script, Lan, NsServer, SERVER_IP};

const NODE: Mac = Mac([2, 0, 0, 0x77, 0, 0x21]);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 21);

fn nodes() -> HashMap<Mac, NodeBoot> {
    HashMap::from([(NODE, NodeBoot { ip: Some(NODE_IP), hostname: Some("pc21".into()), network_boot: false })])
}

fn config(pool: bool) -> Config {
    Config::full(
        SERVER_IP,
        FullConfig {
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            routers: vec![SERVER_IP],
            dns: vec![Ipv4Addr::new(10, 77, 0, 53)],
            domain: Some("test.shoal".into()),
            lease_time: Duration::from_secs(120),
            pool: pool
                .then_some(PoolRange { first: Ipv4Addr::new(10, 77, 0, 100), last: Ipv4Addr::new(10, 77, 0, 110) }),
        },
    )
}

fn options(lease_file: Option<&Path>) -> ServerOptions {
    ServerOptions {
        interface: Some("s0".into()),
        lease_file: lease_file.map(Path::to_path_buf),
        ..ServerOptions::default()
    }
}

/// `udhcpc` in the client namespace: `args` then the hook script.
/// `ip netns exec` execs it, so the child's pid is udhcpc's own.
fn udhcpc(lan: &Lan, dir: &Path, args: &[&str]) -> Command {
    let mut c = lan.client.command("busybox");
    c.args(["udhcpc", "-i", "c0", "-f", "-t", "5", "-T", "1"]).args(args).arg("-s");
    c.arg(hook_script(dir)).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// A running udhcpc, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One exchange (`-q`: quit once bound, `-n`: give up if not); the
/// address it got, if any.
fn lease_once(lan: &Lan, dir: &Path) -> Option<Ipv4Addr> {
    let _ = std::fs::remove_file(dir.join("bound"));
    let ok = udhcpc(lan, dir, &["-q", "-n", "-A", "1"]).status().is_ok_and(|s| s.success());
    let env = hook_env(dir, "bound")?;
    assert!(ok, "udhcpc failed after binding");
    env.get("ip")?.parse().ok()
}

#[test]
fn udhcpc_gets_a_registered_nodes_fixed_address_and_options_then_renews() {
    if !super::fixture::netns_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new();
    lan.set_client_mac(NODE);
    let server = NsServer::start(&lan.server, config(false), nodes(), options(None));
    let client = Running(udhcpc(&lan, dir.path(), &[]).spawn().unwrap());
    eventually(Duration::from_secs(15), || hook_env(dir.path(), "bound").is_some());
    let env = hook_env(dir.path(), "bound").expect("udhcpc bound");
    assert_eq!(env.get("ip").map(String::as_str), Some("10.77.0.21"));
    assert_eq!(env.get("router").map(String::as_str), Some("10.77.0.1"));
    assert_eq!(env.get("lease").map(String::as_str), Some("120"));
    assert_eq!(env.get("subnet").map(String::as_str), Some("255.255.255.0"));
    assert_eq!(env.get("dns").map(|d| d.trim()), Some("10.77.0.53"));
    assert_eq!(env.get("hostname").map(String::as_str), Some("pc21"));
    assert_eq!(env.get("domain").map(String::as_str), Some("test.shoal"));
    assert_eq!(env.get("serverid").map(String::as_str), Some("10.77.0.1"));
    assert!(!env.contains_key("boot_file"), "this node boots locally");

    // SIGUSR1: renew now. udhcpc unicasts a REQUEST with ciaddr set
    // (RENEWING) and the ACK comes back unicast to the leased address.
    let kill = Command::new("busybox").args(["kill", "-USR1", &client.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let renewed = eventually(Duration::from_secs(15), || hook_env(dir.path(), "renew").is_some());
    drop(client);
    assert!(renewed, "no renewal; counters {:?}", server.counters.snapshot());
    let env = hook_env(dir.path(), "renew").unwrap();
    assert_eq!(env.get("ip").map(String::as_str), Some("10.77.0.21"));
    assert_eq!(env.get("lease").map(String::as_str), Some("120"));
    let s = server.counters.snapshot();
    // udhcpc may repeat its renewing REQUEST; each is acked, none refused.
    assert!(s.offers == 1 && s.acks >= 2 && s.naks == 0 && s.dropped_total() == 0, "{s:?}");
}

#[test]
fn udhcpc_gets_a_pool_address_for_an_unknown_mac_only_when_the_pool_is_on() {
    if !super::fixture::netns_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new();
    lan.set_client_mac(Mac([2, 0, 0, 0x77, 0, 0x99]));
    {
        let server = NsServer::start(&lan.server, config(false), nodes(), options(None));
        assert_eq!(lease_once(&lan, dir.path()), None);
        let s = server.counters.snapshot();
        assert!(s.discover >= 1 && s.offers == 0, "{s:?}");
        assert_eq!(s.dropped(DropReason::UnknownClient), s.discover);
    }
    let server = NsServer::start(&lan.server, config(true), nodes(), options(None));
    assert_eq!(lease_once(&lan, dir.path()), Some(Ipv4Addr::new(10, 77, 0, 100)));
    let env = hook_env(dir.path(), "bound").unwrap();
    assert_eq!(env.get("router").map(String::as_str), Some("10.77.0.1"));
    assert_eq!(server.counters.snapshot().acks, 1);
}

#[test]
fn pool_leases_survive_a_server_restart() {
    if !super::fixture::netns_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("leases");
    let lan = Lan::new();
    let first = Mac([2, 0, 0, 0x77, 0, 0xa1]);
    let second = Mac([2, 0, 0, 0x77, 0, 0xa2]);
    {
        let _server = NsServer::start(&lan.server, config(true), nodes(), options(Some(&leases)));
        lan.set_client_mac(first);
        assert_eq!(lease_once(&lan, dir.path()), Some(Ipv4Addr::new(10, 77, 0, 100)));
    }
    assert!(leases.exists(), "lease file written");
    let _server = NsServer::start(&lan.server, config(true), nodes(), options(Some(&leases)));
    lan.set_client_mac(second);
    assert_eq!(lease_once(&lan, dir.path()), Some(Ipv4Addr::new(10, 77, 0, 101)), "first's lease was kept");
    lan.set_client_mac(first);
    assert_eq!(lease_once(&lan, dir.path()), Some(Ipv4Addr::new(10, 77, 0, 100)), "first gets its address back");
}
