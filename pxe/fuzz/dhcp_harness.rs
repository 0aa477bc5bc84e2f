// The checks behind the `dhcp` fuzz target, included (not compiled on its
// own) by `fuzz_targets/dhcp.rs` and by `pxe/tests/dhcp.rs`, which replays
// `regressions/dhcp/*` and a run of mutated packets.

/// Runs every check on one input.
pub fn check(data: &[u8]) {
    check_decoder_and_policy(data);
    check_responders(data);
}

/// Registers every MAC whose last byte is even, at an address made from it.
struct EvenMacs;

impl shoal_pxe::dhcp::BootPolicy for EvenMacs {
    fn lookup(&self, mac: shoal_pxe::dhcp::Mac) -> Option<shoal_pxe::dhcp::NodeBoot> {
        let last = mac.0[5];
        (last & 1 == 0).then(|| shoal_pxe::dhcp::NodeBoot {
            ip: Some(std::net::Ipv4Addr::new(10, 0, 0, last)),
            hostname: Some(format!("pc{last}")),
            network_boot: last & 3 == 0,
        })
    }
}

/// Proxy mode, full mode with a pool and the menu, full mode without.
fn dhcp_configs() -> Vec<shoal_pxe::dhcp::Config> {
    use shoal_pxe::dhcp::{Config, FullConfig, PoolRange, UnknownClients};
    use std::net::Ipv4Addr;
    let server = Ipv4Addr::new(10, 0, 0, 1);
    let full = |pool: bool| FullConfig {
        netmask: Ipv4Addr::new(255, 255, 0, 0),
        routers: vec![server],
        dns: vec![server],
        domain: Some("fuzz.test".into()),
        lease_time: std::time::Duration::from_secs(600),
        pool: pool.then_some(PoolRange { first: Ipv4Addr::new(10, 0, 1, 0), last: Ipv4Addr::new(10, 0, 1, 3) }),
    };
    let mut menu = Config::full(server, full(true));
    menu.unknown = UnknownClients::Menu;
    vec![Config::proxy(server), menu, Config::full(server, full(false))]
}

fn check_decoder_and_policy(data: &[u8]) {
    use shoal_pxe::dhcp::packet::{self, PacketError};
    use shoal_pxe::dhcp::policy::{self, Decision};
    use shoal_pxe::dhcp::{BootPolicy, Listener, Mode};

    let req = match packet::decode(data) {
        Ok(req) => req,
        Err(e) => {
            assert_ne!(e, PacketError::DecoderPanic, "the pre-scan let through bytes dhcproto panics on");
            return;
        }
    };
    let node = EvenMacs.lookup(req.mac);
    for cfg in dhcp_configs() {
        for via in [Listener::Dhcp, Listener::ProxyBoot] {
            for node in [None, node.as_ref()] {
                let boot = match policy::decide(&req, &cfg, node, via) {
                    Decision::Offer { boot, .. } | Decision::Ack { boot, .. } | Decision::Inform { boot } => boot,
                    Decision::Proxy { boot, .. } => {
                        assert_eq!(cfg.mode, Mode::Proxy, "proxy answer in full mode");
                        Some(boot)
                    }
                    _ => None,
                };
                if let Some(boot) = boot {
                    assert!(!boot.file.is_empty() && boot.file.len() <= 255, "boot file {:?}", boot.file);
                }
            }
        }
    }
}

fn check_responders(data: &[u8]) {
    use shoal_pxe::dhcp::packet::MAX_PACKET;
    use shoal_pxe::dhcp::{Incoming, Listener, Mode, Responder};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::{Duration, UNIX_EPOCH};

    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for cfg in dhcp_configs() {
        let proxy = cfg.mode == Mode::Proxy;
        let mut r = Responder::new(cfg, std::sync::Arc::new(EvenMacs)).expect("fuzz configs are valid");
        for via in [Listener::Dhcp, Listener::ProxyBoot] {
            r.handle(now, Incoming { via, src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 9, 9), 68) }, data);
            let mut replies = 0;
            while let Some(t) = r.poll_transmit() {
                replies += 1;
                assert!(t.bytes.len() >= 240 && t.bytes.len() <= MAX_PACKET, "reply of {} bytes", t.bytes.len());
                assert_eq!(t.bytes[0], 2, "a reply is a BOOTREPLY");
                if proxy {
                    assert_eq!(t.bytes[16..20], [0; 4], "proxy mode gave out an address");
                }
            }
            assert!(replies <= 1, "{replies} replies to one datagram");
            while r.poll().is_some() {}
        }
    }
}
