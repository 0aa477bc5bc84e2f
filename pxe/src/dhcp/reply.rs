//! An answer as bytes, through `dhcproto`'s encoder.
//!
//! Fields follow RFC 2131 table 3: a NAK carries no address, no lease and
//! no boot information; an ACK to INFORM has no `yiaddr` and no lease time;
//! `xid`, `flags`, `giaddr` and option 82 are echoed. A reply to a PXE
//! client also echoes its vendor class and GUID (option 97) and tells it,
//! with PXE discovery control bit 3 (option 43, sub-option 6), to load the
//! boot file named here rather than look for boot servers.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, relay::RelayAgentInformation, DhcpOption, Flags, Message, Opcode};
use dhcproto::Encodable;

use super::config::FullConfig;
use super::packet::{ClientClass, ClientGuid, Request, MAX_PACKET};
use super::policy::Boot;
use super::Mac;

/// The smallest reply we send: the BOOTP minimum, which some PXE ROMs
/// still expect. Shorter replies are padded after the end option.
const MIN_REPLY: usize = 300;
/// Vendor options for a PXE client: discovery control = 8 (use the boot
/// file in this reply), then the end of the encapsulated list.
const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// The DHCP message types a server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

/// Why a reply could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// the reply does not fit the client's maximum message size
    #[error("reply of {size} bytes over the client's limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// `dhcproto` refused a value
    #[error("option encoder: {0}")]
    Encoder(String),
}

/// Everything a reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    pub kind: ReplyKind,
    pub xid: u32,
    pub mac: Mac,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub server_id: Ipv4Addr,
    /// Option 51 (with T1 and T2 derived from it).
    pub lease_secs: Option<u32>,
    /// Netmask, routers, DNS and domain.
    pub network: Option<&'a FullConfig>,
    pub hostname: Option<&'a str>,
    pub boot: Option<&'a Boot>,
    pub guid: Option<ClientGuid>,
    pub relay_info: Option<&'a RelayAgentInformation>,
    /// Option 56, on NAKs.
    pub message: Option<&'static str>,
    /// The client's maximum message size, capped at [`MAX_PACKET`].
    pub max_size: usize,
}

impl<'a> Reply<'a> {
    /// A reply to `req` with what it echoes filled in and nothing else.
    pub fn to(req: &'a Request, kind: ReplyKind, server_id: Ipv4Addr) -> Self {
        Reply {
            kind,
            xid: req.xid,
            mac: req.mac,
            broadcast: req.broadcast,
            ciaddr: if kind == ReplyKind::Ack { req.ciaddr } else { Ipv4Addr::UNSPECIFIED },
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            server_id,
            lease_secs: None,
            network: None,
            hostname: None,
            boot: None,
            guid: req.guid,
            relay_info: req.relay_info.as_ref(),
            message: None,
            max_size: usize::from(req.max_message_size).min(MAX_PACKET),
        }
    }

    /// The reply's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let nak = self.kind == ReplyKind::Nak;
        let unless_nak = |ip: Ipv4Addr| if nak { Ipv4Addr::UNSPECIFIED } else { ip };
        let mut msg = Message::new_with_id(
            self.xid,
            unless_nak(self.ciaddr),
            unless_nak(self.yiaddr),
            unless_nak(self.siaddr),
            self.giaddr,
            self.mac.as_bytes(),
        );
        msg.set_opcode(Opcode::BootReply);
        // A relay must broadcast a NAK (RFC 2131 4.3.2).
        let broadcast = self.broadcast || (nak && !self.giaddr.is_unspecified());
        msg.set_flags(if broadcast { Flags::default().set_broadcast() } else { Flags::default() });
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(match self.kind {
            ReplyKind::Offer => v4::MessageType::Offer,
            ReplyKind::Ack => v4::MessageType::Ack,
            ReplyKind::Nak => v4::MessageType::Nak,
        }));
        opts.insert(DhcpOption::ServerIdentifier(self.server_id));
        if let Some(text) = self.message {
            opts.insert(DhcpOption::Message(text.to_owned()));
        }
        if let Some(info) = self.relay_info {
            opts.insert(DhcpOption::RelayAgentInformation(info.clone()));
        }
        if !nak {
            self.insert_configuration(&mut msg);
        }
        let mut bytes = msg.to_vec().map_err(|e| EncodeError::Encoder(e.to_string()))?;
        if bytes.len() > self.max_size {
            return Err(EncodeError::TooLarge { size: bytes.len(), max: self.max_size });
        }
        if bytes.len() < MIN_REPLY {
            bytes.resize(MIN_REPLY, 0);
        }
        Ok(bytes)
    }

    fn insert_configuration(&self, msg: &mut Message) {
        if let Some(boot) = self.boot {
            // The file field holds 128 bytes with its NUL; longer names
            // (URLs) travel in option 67 alone.
            if boot.file.len() < 128 {
                msg.set_fname(boot.file.as_bytes());
            }
        }
        let opts = msg.opts_mut();
        if let Some(lease) = self.lease_secs {
            opts.insert(DhcpOption::AddressLeaseTime(lease));
            opts.insert(DhcpOption::Renewal(lease / 2));
            opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
        }
        if let Some(net) = self.network {
            opts.insert(DhcpOption::SubnetMask(net.netmask));
            if !net.routers.is_empty() {
                opts.insert(DhcpOption::Router(net.routers.clone()));
            }
            if !net.dns.is_empty() {
                opts.insert(DhcpOption::DomainNameServer(net.dns.clone()));
            }
            if let Some(domain) = &net.domain {
                opts.insert(DhcpOption::DomainName(domain.clone()));
            }
        }
        if let Some(name) = self.hostname.filter(|n| !n.is_empty() && n.len() <= 255) {
            opts.insert(DhcpOption::Hostname(name.to_owned()));
        }
        if let Some(boot) = self.boot {
            opts.insert(DhcpOption::BootfileName(boot.file.as_bytes().to_vec()));
            if let Some(class) = boot.class.vendor_class() {
                opts.insert(DhcpOption::ClassIdentifier(class.to_vec()));
            }
            if boot.class == ClientClass::Pxe {
                opts.insert(DhcpOption::VendorExtensions(PXE_VENDOR_OPTIONS.to_vec()));
            }
            if let Some(guid) = self.guid {
                let mut id = vec![0];
                id.extend_from_slice(&guid.0);
                opts.insert(DhcpOption::ClientMachineIdentifier(id));
            }
        }
    }
}
