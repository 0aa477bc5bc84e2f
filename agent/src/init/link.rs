//! The node's network: finding its NICs in sysfs, choosing one, and
//! getting an address for it by DHCP.
//!
//! A NIC is any device in `/sys/class/net` of type Ethernet (ARPHRD 1)
//! except loopback. With BOOTIF the named NIC is used; without it (or if
//! it does not appear) each NIC is tried in turn, in name order, for a few
//! seconds each, round after round until the overall deadline.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::cmdline::Mac;
use super::dhcp::{DhcpClient, Event, Lease};
use super::netlink::Netlink;

/// Waiting for a link's carrier.
const CARRIER_WAIT: Duration = Duration::from_secs(10);
/// DHCP on one NIC before trying the next.
const DHCP_PER_NIC: Duration = Duration::from_secs(8);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: Mac,
    pub index: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// no Ethernet NIC appeared (no driver for it in the initramfs?)
    #[error("no network interface appeared within {0:?}")]
    NoNic(Duration),
    /// DHCP found no server on any NIC
    #[error("no DHCP answer on {nics} within {secs} s")]
    NoLease { nics: String, secs: u64 },
    #[error("configuring {nic}")]
    Configure { nic: String, source: io::Error },
}

fn sysfs(nic: &str, attr: &str) -> Option<String> {
    fs::read_to_string(format!("/sys/class/net/{nic}/{attr}")).ok().map(|s| s.trim().to_string())
}

/// The Ethernet NICs present now, by name.
pub fn nics() -> Vec<Nic> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/class/net") else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "lo" || sysfs(&name, "type").as_deref() != Some("1") {
            continue;
        }
        let mac = sysfs(&name, "address").and_then(|a| Mac::parse(&a));
        let index = sysfs(&name, "ifindex").and_then(|i| i.parse().ok());
        if let (Some(mac), Some(index)) = (mac, index) {
            out.push(Nic { name, mac, index });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Waits until a NIC is there (`want`'s, if given) or `timeout` passes;
/// returns the NICs to try, the wanted one alone if it came.
pub fn wait_for_nics(want: Option<Mac>, timeout: Duration) -> Result<Vec<Nic>, LinkError> {
    let start = Instant::now();
    loop {
        let all = nics();
        if let Some(mac) = want {
            if let Some(n) = all.iter().find(|n| n.mac == mac) {
                return Ok(vec![n.clone()]);
            }
        } else if !all.is_empty() {
            // Drivers probe one device at a time: let the rest show up.
            std::thread::sleep(Duration::from_millis(200));
            return Ok(nics());
        }
        if start.elapsed() > timeout {
            if !all.is_empty() {
                tracing::warn!(
                    "BOOTIF {} not found: trying every NIC",
                    want.map(|m| m.to_string()).unwrap_or_default()
                );
                return Ok(all);
            }
            return Err(LinkError::NoNic(timeout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_carrier(nic: &Nic) -> bool {
    let start = Instant::now();
    while start.elapsed() < CARRIER_WAIT {
        if sysfs(&nic.name, "carrier").as_deref() == Some("1") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A transaction id that differs between nodes booting at once: the MAC
/// and the time since boot (no randomness needed, or available this early
/// without blocking).
fn xid(mac: Mac, now: Duration) -> u32 {
    let m = mac.0;
    u32::from_be_bytes([m[2], m[3], m[4], m[5]]) ^ now.subsec_nanos().rotate_left(13)
}

/// Runs DHCP on `nic` until a lease or `until`.
fn dhcp_on(nic: &Nic, until: Instant) -> io::Result<Option<Lease>> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_broadcast(true)?;
    // The NIC has no address yet: only the device binding says where the
    // broadcasts go and which replies are ours.
    sock.bind_device(Some(nic.name.as_bytes()))?;
    sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
    let sock: std::net::UdpSocket = sock.into();
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let clock = Instant::now();
    let now = || clock.elapsed();
    let mut client = DhcpClient::new(nic.mac, xid(nic.mac, super::console::uptime()), now());
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1501];
    while Instant::now() < until {
        while client.poll_transmit(now(), &mut out).is_some() {
            match sock.send_to(&out, to) {
                Ok(_) => tracing::debug!("{}: DHCP request sent ({} bytes)", nic.name, out.len()),
                Err(e) => tracing::debug!("{}: DHCP send: {e}", nic.name),
            }
        }
        while let Some(ev) = client.poll() {
            match ev {
                Event::Bound(lease) => return Ok(Some(lease)),
                Event::Nak { server } => tracing::warn!("DHCP NAK from {server:?} on {}: starting over", nic.name),
            }
        }
        let wait = client.poll_timeout().map_or(Duration::from_millis(100), |t| t.saturating_sub(now()));
        let left = until.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(wait.min(left).max(Duration::from_millis(10))))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                tracing::debug!("{}: {n} bytes from {from}", nic.name);
                client.handle(now(), &buf[..n]);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
        client.handle_timeout(now());
    }
    Ok(None)
}

/// Brings NICs up one at a time until one gets a lease by DHCP, then
/// gives it the address and, if the lease names a router, the default
/// route. Returns the NIC and its lease.
pub fn bring_up(candidates: &[Nic], deadline: Duration) -> Result<(Nic, Lease), LinkError> {
    let start = Instant::now();
    let mut nl = Netlink::open().map_err(|source| LinkError::Configure { nic: "netlink".into(), source })?;
    let _ = nl.link_up(1); // lo, for anything that talks to itself
    loop {
        for nic in candidates {
            let cfg = |source| LinkError::Configure { nic: nic.name.clone(), source };
            nl.link_up(nic.index).map_err(cfg)?;
            if !wait_carrier(nic) {
                tracing::warn!("{} ({}): no carrier", nic.name, nic.mac);
                continue;
            }
            tracing::info!("{} ({}): link up, asking DHCP", nic.name, nic.mac);
            let until = (Instant::now() + DHCP_PER_NIC).min(start + deadline);
            match dhcp_on(nic, until) {
                Ok(Some(lease)) => {
                    nl.add_address(nic.index, lease.addr, lease.prefix_len() as u8).map_err(cfg)?;
                    if let Some(gw) = lease.router {
                        nl.default_route(nic.index, gw).map_err(cfg)?;
                    }
                    return Ok((nic.clone(), lease));
                }
                Ok(None) => tracing::warn!("{}: no DHCP answer", nic.name),
                Err(e) => tracing::warn!("{}: DHCP: {e}", nic.name),
            }
            if start.elapsed() >= deadline {
                break;
            }
        }
        if start.elapsed() >= deadline {
            let nics = candidates.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(LinkError::NoLease { nics, secs: deadline.as_secs() });
        }
    }
}
