//! DHCP for network boot: full service for registered nodes (with an
//! optional dynamic pool), or proxyDHCP beside a site's own DHCP server.
//!
//! A datagram goes through these steps, one module each:
//!
//! - [`packet`]: untrusted bytes → [`packet::Request`]. A bounded pre-scan
//!   (the shared `shoal_proto::codec::Reader`) checks the header and every
//!   option length before `dhcproto` sees the bytes; `dhcproto` then decodes
//!   under `catch_unwind` as a second guard.
//! - [`ratelimit`]: a token bucket per MAC against floods.
//! - [`policy`]: the pure decision. Given the request, the [`Config`] and
//!   what the [`BootPolicy`] says about the MAC: an answer or silence, and
//!   which boot file (by client architecture, or the iPXE script URL).
//! - [`pool`]: the dynamic pool's leases and their file encoding.
//! - [`reply`]: the answer as bytes, through `dhcproto`'s encoder.
//! - [`responder`]: the sans-IO state machine that strings these together.
//! - [`server`] and [`net`]: the tokio driver and its sockets; [`lease_file`]
//!   keeps the pool's leases on disk across restarts.
//!
//! **API boundary.** This module knows nothing of the catalog: it asks a
//! [`BootPolicy`] about a MAC and gets a [`NodeBoot`] back (fixed address,
//! hostname, whether to boot from the network).
//!
//! **Architecture invariant.** Only `server`, `net` and `lease_file` do I/O.
//! Everything else takes the time as an argument and can be driven by tests
//! and fuzzers byte for byte. Proxy mode never hands out an address.
//!
//! Deliberately absent: BOOTP (requests without option 53), option overload
//! (option 52), DHCPv6, ICMP probing before a pool offer, failover.

use std::collections::HashMap;
use std::net::Ipv4Addr;

pub mod config;
pub mod counters;
pub mod lease_file;
pub mod net;
pub mod packet;
pub mod policy;
pub mod pool;
pub mod ratelimit;
pub mod reply;
pub mod responder;
pub mod server;

pub use config::{BootConfig, Config, ConfigError, FullConfig, Mode, PoolRange, Ports, RateLimit, UnknownClients};
pub use counters::{Counters, CountersSnapshot, DropReason};
pub use packet::{ClientArch, ClientClass, MessageKind, PacketError, Request};
pub use responder::{Destination, Event, Incoming, Listener, Responder, Transmit};
pub use server::{DhcpServer, ServerError, ServerOptions};

pub use shoal_proto::{Mac, ParseMacError};

/// What the catalog says about a registered node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBoot {
    /// The node's fixed address (full mode); without one it gets a pool
    /// address like an unknown client.
    pub ip: Option<Ipv4Addr>,
    /// Sent as option 12 when set.
    pub hostname: Option<String>,
    /// Whether to hand the node a boot file. When false, full mode still
    /// gives it its address and proxy mode stays silent, so its firmware
    /// falls through to the local disk.
    pub network_boot: bool,
}

/// Where the DHCP service learns about nodes. The server implements it over
/// the catalog; tests use a map.
pub trait BootPolicy: Send + Sync {
    /// The registered node with this MAC, if any.
    fn lookup(&self, mac: Mac) -> Option<NodeBoot>;

    /// Whether `ip` is some registered node's fixed address; the dynamic
    /// pool never hands such an address out.
    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        let _ = ip;
        false
    }
}

impl BootPolicy for HashMap<Mac, NodeBoot> {
    fn lookup(&self, mac: Mac) -> Option<NodeBoot> {
        self.get(&mac).cloned()
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.values().any(|n| n.ip == Some(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_its_display_form() {
        let mac = Mac([0x02, 0xab, 0, 1, 0x10, 0xff]);
        assert_eq!(mac.to_string(), "02:ab:00:01:10:ff");
        assert_eq!("02:ab:00:01:10:ff".parse::<Mac>(), Ok(mac));
        assert_eq!("02-AB-00-01-10-FF".parse::<Mac>(), Ok(mac));
    }

    #[test]
    fn mac_parse_refuses_wrong_shapes() {
        for bad in ["", "02:ab:00:01:10", "02:ab:00:01:10:ff:00", "2:ab:00:01:10:ff", "zz:ab:00:01:10:ff"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
