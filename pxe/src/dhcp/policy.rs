//! The decision, pure: a request, the configuration and what the boot
//! policy says about the MAC go in; what to answer (or why not) comes out.
//!
//! Boot files: a PXE ROM or UEFI firmware gets the file its architecture
//! (option 93) maps to; UEFI HTTP boot (vendor class "HTTPClient") gets a
//! URL and must be told "HTTPClient" back. iPXE, known by user class
//! "iPXE", always gets the HTTP script URL instead of a binary, so it never
//! loads itself again. Unknown machines are ignored or sent to the menu.
//!
//! **Architecture invariant.** [`Decision::Proxy`] has no address field:
//! proxy mode cannot hand out an address, by construction.

use std::net::Ipv4Addr;

use super::config::{Config, FullConfig, Mode, UnknownClients, MAX_BOOT_FILE};
use super::counters::DropReason;
use super::packet::{ClientArch, ClientClass, MessageKind, Request};
use super::reply::ReplyKind;
use super::responder::Listener;
use super::{Mac, NodeBoot};

/// Where a full-mode client's address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// A registered node's own address.
    Fixed(Ipv4Addr),
    /// The dynamic pool, preferably the address the client names.
    Pool(Option<Ipv4Addr>),
}

/// A boot file or URL, and the vendor class to echo with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub file: String,
    pub class: ClientClass,
}

/// What the responder should do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No answer.
    Ignore(DropReason),
    /// Full mode, DISCOVER: offer an address.
    Offer { address: Address, boot: Option<Boot>, hostname: Option<String> },
    /// Full mode, REQUEST: confirm an address (the pool may still refuse).
    Ack { address: Address, boot: Option<Boot>, hostname: Option<String> },
    /// Full mode, REQUEST: the client asks for an address that is not its.
    Nak(&'static str),
    /// Full mode, INFORM: configuration for a client that has an address.
    Inform { boot: Option<Boot> },
    /// Full mode, RELEASE: the client gives its address back. No reply.
    Release(Address),
    /// Full mode, DECLINE: the client found its address in use. No reply.
    Decline(Address),
    /// Proxy mode: boot information, as an OFFER on the DHCP port or an
    /// ACK on the boot server port.
    Proxy { kind: ReplyKind, boot: Boot },
}

/// Decides what to answer. `node` is the boot policy's answer for the MAC.
pub fn decide(req: &Request, cfg: &Config, node: Option<&NodeBoot>, via: Listener) -> Decision {
    match &cfg.mode {
        Mode::Full(full) => decide_full(req, cfg, full, node, via),
        Mode::Proxy => decide_proxy(req, cfg, node, via),
    }
}

fn decide_full(req: &Request, cfg: &Config, full: &FullConfig, node: Option<&NodeBoot>, via: Listener) -> Decision {
    if via != Listener::Dhcp {
        return Decision::Ignore(DropReason::Unexpected);
    }
    if node.and_then(|n| n.ip).is_none() && full.pool.is_none() {
        return Decision::Ignore(DropReason::UnknownClient);
    }
    // A REQUEST naming another server is that server's; DECLINE and
    // RELEASE must name us.
    let ours = !matches!(req.server_id, Some(id) if id != cfg.server_ip);
    let named_us = req.server_id == Some(cfg.server_ip);
    let address = |wanted| match node.and_then(|n| n.ip) {
        Some(ip) => Address::Fixed(ip),
        None => Address::Pool(wanted),
    };
    let boot = || boot_file(req, cfg, node).ok();
    let hostname = node.and_then(|n| n.hostname.clone());
    match req.kind {
        MessageKind::Discover => Decision::Offer { address: address(req.requested_ip), boot: boot(), hostname },
        MessageKind::Request if !ours => Decision::Ignore(DropReason::NotForUs),
        MessageKind::Request => {
            // SELECTING and INIT-REBOOT name the address in option 50;
            // RENEWING and REBINDING in ciaddr.
            let Some(wanted) = req.requested_ip.or_else(|| unicast(req.ciaddr)) else {
                return Decision::Ignore(DropReason::Malformed);
            };
            match node.and_then(|n| n.ip) {
                Some(ip) if ip != wanted => Decision::Nak("requested address is not this client's"),
                _ => Decision::Ack { address: address(Some(wanted)), boot: boot(), hostname },
            }
        }
        MessageKind::Decline => match req.requested_ip {
            Some(ip) if named_us => Decision::Decline(address(Some(ip))),
            _ => Decision::Ignore(DropReason::NotForUs),
        },
        MessageKind::Release => match unicast(req.ciaddr) {
            Some(ip) if named_us => Decision::Release(address(Some(ip))),
            _ => Decision::Ignore(DropReason::NotForUs),
        },
        MessageKind::Inform => Decision::Inform { boot: boot() },
    }
}

fn decide_proxy(req: &Request, cfg: &Config, node: Option<&NodeBoot>, via: Listener) -> Decision {
    if req.class == ClientClass::Other {
        return Decision::Ignore(DropReason::NotPxe);
    }
    let kind = match (via, req.kind) {
        (Listener::Dhcp, MessageKind::Discover) => ReplyKind::Offer,
        // The REQUEST on port 67 is for the site server, unless it names us.
        (Listener::Dhcp, MessageKind::Request) if req.server_id == Some(cfg.server_ip) => ReplyKind::Ack,
        (Listener::Dhcp, MessageKind::Request) => return Decision::Ignore(DropReason::NotForUs),
        (Listener::ProxyBoot, MessageKind::Request | MessageKind::Inform) => ReplyKind::Ack,
        _ => return Decision::Ignore(DropReason::Unexpected),
    };
    match boot_file(req, cfg, node) {
        Ok(boot) => Decision::Proxy { kind, boot },
        Err(reason) => Decision::Ignore(reason),
    }
}

/// The boot file for this client, or why it gets none.
pub fn boot_file(req: &Request, cfg: &Config, node: Option<&NodeBoot>) -> Result<Boot, DropReason> {
    if req.class == ClientClass::Other && !req.ipxe {
        return Err(DropReason::NotPxe);
    }
    let registered = match node {
        Some(n) if n.network_boot => true,
        Some(_) => return Err(DropReason::LocalBoot),
        None if cfg.unknown == UnknownClients::Menu => false,
        None => return Err(DropReason::UnknownClient),
    };
    let template = if req.ipxe {
        if registered {
            &cfg.boot.script_url
        } else {
            &cfg.boot.menu_url
        }
    } else {
        // PXE ROMs too old to send option 93 are BIOS ones.
        let arch = req.arch.unwrap_or(ClientArch::BIOS);
        let file = cfg.boot.files.get(&arch).ok_or(DropReason::NoBootFile)?;
        if is_url(file) != (req.class == ClientClass::Http) {
            return Err(DropReason::NoBootFile);
        }
        file
    };
    let file = render(template, req.mac, cfg.server_ip);
    if file.len() > MAX_BOOT_FILE {
        return Err(DropReason::NoBootFile);
    }
    Ok(Boot { file, class: req.class })
}

/// Expands `{mac}` and `{server}` in a boot file template.
pub fn render(template: &str, mac: Mac, server: Ipv4Addr) -> String {
    template.replace("{mac}", &mac.to_string()).replace("{server}", &server.to_string())
}

fn is_url(file: &str) -> bool {
    file.starts_with("http://") || file.starts_with("https://")
}

fn unicast(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::config::PoolRange;
    use std::time::Duration;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);

    fn full(pool: bool) -> Config {
        Config::full(
            SERVER,
            FullConfig {
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                routers: vec![SERVER],
                dns: vec![],
                domain: None,
                lease_time: Duration::from_secs(3600),
                pool: pool
                    .then_some(PoolRange { first: Ipv4Addr::new(10, 0, 0, 100), last: Ipv4Addr::new(10, 0, 0, 110) }),
            },
        )
    }

    fn node(network_boot: bool) -> NodeBoot {
        NodeBoot { ip: Some(NODE_IP), hostname: Some("pc1".into()), network_boot }
    }

    fn pxe(kind: MessageKind, arch: u16) -> Request {
        Request {
            kind,
            xid: 7,
            mac: MAC,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: None,
            server_id: None,
            arch: Some(ClientArch(arch)),
            class: ClientClass::Pxe,
            ipxe: false,
            guid: None,
            max_message_size: 576,
            relay_info: None,
        }
    }

    fn file(d: Decision) -> String {
        match d {
            Decision::Proxy { boot, .. } => boot.file,
            Decision::Offer { boot: Some(boot), .. } | Decision::Ack { boot: Some(boot), .. } => boot.file,
            other => panic!("no boot file in {other:?}"),
        }
    }

    #[test]
    fn architecture_picks_the_boot_file() {
        let cfg = Config::proxy(SERVER);
        let n = node(true);
        let got = |arch| file(decide(&pxe(MessageKind::Discover, arch), &cfg, Some(&n), Listener::Dhcp));
        assert_eq!(got(0), "undionly.kpxe");
        assert_eq!(got(7), "ipxe.efi");
        assert_eq!(got(9), "ipxe.efi");
        assert_eq!(got(11), "ipxe-arm64.efi");
        let unmapped = decide(&pxe(MessageKind::Discover, 0x1234), &cfg, Some(&n), Listener::Dhcp);
        assert_eq!(unmapped, Decision::Ignore(DropReason::NoBootFile));
    }

    #[test]
    fn http_boot_client_gets_a_url_and_its_class_back() {
        let cfg = Config::proxy(SERVER);
        let mut req = pxe(MessageKind::Discover, 16);
        req.class = ClientClass::Http;
        let d = decide(&req, &cfg, Some(&node(true)), Listener::Dhcp);
        let Decision::Proxy { boot, .. } = d else { panic!("{d:?}") };
        assert_eq!(boot.file, "http://10.0.0.1/boot/ipxe.efi");
        assert_eq!(boot.class.vendor_class(), Some(&b"HTTPClient"[..]));
        // A PXE ROM claiming the HTTP architecture cannot fetch a URL.
        let d = decide(&pxe(MessageKind::Discover, 16), &cfg, Some(&node(true)), Listener::Dhcp);
        assert_eq!(d, Decision::Ignore(DropReason::NoBootFile));
    }

    #[test]
    fn ipxe_gets_the_script_url_not_another_ipxe_binary() {
        let cfg = Config::proxy(SERVER);
        for arch in [0, 7, 9, 11] {
            let mut req = pxe(MessageKind::Discover, arch);
            req.ipxe = true;
            let got = file(decide(&req, &cfg, Some(&node(true)), Listener::Dhcp));
            assert_eq!(got, "http://10.0.0.1/boot/02:00:00:00:00:01.ipxe");
        }
    }

    #[test]
    fn architecture_map_is_configurable() {
        let mut cfg = Config::proxy(SERVER);
        cfg.boot.files.insert(ClientArch::EFI_BC, "snponly.efi".into());
        cfg.boot.files.remove(&ClientArch::BIOS);
        let n = node(true);
        assert_eq!(file(decide(&pxe(MessageKind::Discover, 7), &cfg, Some(&n), Listener::Dhcp)), "snponly.efi");
        let bios = decide(&pxe(MessageKind::Discover, 0), &cfg, Some(&n), Listener::Dhcp);
        assert_eq!(bios, Decision::Ignore(DropReason::NoBootFile));
    }

    #[test]
    fn unknown_machines_are_ignored_or_sent_to_the_menu() {
        let mut cfg = Config::proxy(SERVER);
        let d = decide(&pxe(MessageKind::Discover, 0), &cfg, None, Listener::Dhcp);
        assert_eq!(d, Decision::Ignore(DropReason::UnknownClient));
        cfg.unknown = UnknownClients::Menu;
        assert_eq!(file(decide(&pxe(MessageKind::Discover, 0), &cfg, None, Listener::Dhcp)), "undionly.kpxe");
        let mut req = pxe(MessageKind::Discover, 0);
        req.ipxe = true;
        assert_eq!(file(decide(&req, &cfg, None, Listener::Dhcp)), "http://10.0.0.1/boot/menu.ipxe");
    }

    #[test]
    fn full_mode_gives_unknown_machines_an_address_only_from_the_pool() {
        let req = pxe(MessageKind::Discover, 0);
        assert_eq!(decide(&req, &full(false), None, Listener::Dhcp), Decision::Ignore(DropReason::UnknownClient));
        let d = decide(&req, &full(true), None, Listener::Dhcp);
        assert_eq!(d, Decision::Offer { address: Address::Pool(None), boot: None, hostname: None });
    }

    #[test]
    fn full_mode_offers_a_registered_node_its_fixed_address() {
        let d = decide(&pxe(MessageKind::Discover, 0), &full(false), Some(&node(true)), Listener::Dhcp);
        let Decision::Offer { address, boot, hostname } = d else { panic!("{d:?}") };
        assert_eq!(address, Address::Fixed(NODE_IP));
        assert_eq!(boot.map(|b| b.file).as_deref(), Some("undionly.kpxe"));
        assert_eq!(hostname.as_deref(), Some("pc1"));
        // A node booting locally still gets its address, without a file.
        let d = decide(&pxe(MessageKind::Discover, 0), &full(false), Some(&node(false)), Listener::Dhcp);
        assert!(matches!(d, Decision::Offer { boot: None, .. }), "{d:?}");
    }

    #[test]
    fn full_mode_requests_are_acked_naked_or_left_to_their_server() {
        let cfg = full(false);
        let n = node(true);
        let mut req = pxe(MessageKind::Request, 0);
        req.server_id = Some(SERVER);
        req.requested_ip = Some(NODE_IP);
        assert!(matches!(decide(&req, &cfg, Some(&n), Listener::Dhcp), Decision::Ack { .. }));
        req.requested_ip = Some(Ipv4Addr::new(10, 0, 0, 99));
        assert!(matches!(decide(&req, &cfg, Some(&n), Listener::Dhcp), Decision::Nak(_)));
        req.server_id = Some(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(decide(&req, &cfg, Some(&n), Listener::Dhcp), Decision::Ignore(DropReason::NotForUs));
        // RENEWING: no server id, no option 50, the address in ciaddr.
        let mut renew = pxe(MessageKind::Request, 0);
        renew.ciaddr = NODE_IP;
        assert!(matches!(decide(&renew, &cfg, Some(&n), Listener::Dhcp), Decision::Ack { .. }));
    }

    #[test]
    fn proxy_mode_answers_only_pxe_clients_and_only_with_boot_information() {
        let cfg = Config::proxy(SERVER);
        let n = node(true);
        let mut plain = pxe(MessageKind::Discover, 0);
        plain.class = ClientClass::Other;
        plain.arch = None;
        assert_eq!(decide(&plain, &cfg, Some(&n), Listener::Dhcp), Decision::Ignore(DropReason::NotPxe));
        let offer = decide(&pxe(MessageKind::Discover, 0), &cfg, Some(&n), Listener::Dhcp);
        assert!(matches!(offer, Decision::Proxy { kind: ReplyKind::Offer, .. }), "{offer:?}");
        let site_request = decide(&pxe(MessageKind::Request, 0), &cfg, Some(&n), Listener::Dhcp);
        assert_eq!(site_request, Decision::Ignore(DropReason::NotForUs));
        let boot_request = decide(&pxe(MessageKind::Request, 0), &cfg, Some(&n), Listener::ProxyBoot);
        assert!(matches!(boot_request, Decision::Proxy { kind: ReplyKind::Ack, .. }), "{boot_request:?}");
        let local = decide(&pxe(MessageKind::Discover, 0), &cfg, Some(&node(false)), Listener::Dhcp);
        assert_eq!(local, Decision::Ignore(DropReason::LocalBoot));
    }
}
