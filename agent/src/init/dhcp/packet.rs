//! DHCP on the wire, client side: requests are built with `dhcproto`;
//! replies, which are untrusted, are read with the shared bounded reader
//! (`shoal_proto::codec::Reader`), never with `dhcproto`'s decoder (which
//! can panic on malformed options, and a panic in PID 1 reboots the node).

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, Message, OptionCode};
use dhcproto::Encodable;
use shoal_proto::codec::{DecodeError, Reader};

use crate::init::cmdline::Mac;

const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const BOOTREPLY: u8 = 2;

/// The vendor class the agent announces (option 60), so a DHCP server can
/// tell it from the node's firmware and installed OS.
pub const VENDOR_CLASS: &[u8] = b"shoal-agent";

/// The reply types the client acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

/// The fields of a server's reply the client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub xid: u32,
    pub mac: Mac,
    pub yiaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    pub netmask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
}

fn ip(b: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

/// Reads a BOOTREPLY. Options we do not use are skipped by their length;
/// ones we use must have the length their code requires.
pub fn parse_reply(buf: &[u8]) -> Result<Reply, DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8("op")? != BOOTREPLY {
        return Err(DecodeError::Invalid("op"));
    }
    let (htype, hlen) = (r.u8("htype")?, r.u8("hlen")?);
    if htype != 1 || hlen != 6 {
        return Err(DecodeError::Invalid("hardware type"));
    }
    let _hops = r.u8("hops")?;
    let xid = u32::from_be_bytes(r.array("xid")?);
    let _secs_flags = r.take(4, "secs and flags")?;
    let _ciaddr = r.take(4, "ciaddr")?;
    let yiaddr = Ipv4Addr::from(r.array::<4>("yiaddr")?);
    let _siaddr_giaddr = r.take(8, "siaddr and giaddr")?;
    let chaddr = r.array::<16>("chaddr")?;
    let _sname_file = r.take(64 + 128, "sname and file")?;
    if r.array::<4>("magic cookie")? != MAGIC_COOKIE {
        return Err(DecodeError::BadMagic("magic cookie"));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&chaddr[..6]);
    let mut reply = Reply {
        kind: ReplyKind::Nak,
        xid,
        mac: Mac(mac),
        yiaddr,
        server_id: None,
        netmask: None,
        router: None,
        lease_secs: None,
    };
    let mut kind = None;
    while r.remaining() > 0 {
        let code = r.u8("option code")?;
        match code {
            0 => continue,
            255 => break,
            _ => {}
        }
        let len = r.u8("option length")? as usize;
        let v = r.take(len, "option value")?;
        let bad = || DecodeError::Invalid("option length");
        match code {
            53 => kind = Some(*v.first().filter(|_| len == 1).ok_or_else(bad)?),
            54 => reply.server_id = Some(ip(v).ok_or_else(bad)?),
            1 => reply.netmask = Some(ip(v).ok_or_else(bad)?),
            3 => reply.router = Some(v.get(..4).and_then(ip).filter(|_| len % 4 == 0).ok_or_else(bad)?),
            51 => reply.lease_secs = Some(u32::from_be_bytes(v.try_into().map_err(|_| bad())?)),
            _ => {}
        }
    }
    reply.kind = match kind {
        Some(2) => ReplyKind::Offer,
        Some(5) => ReplyKind::Ack,
        Some(6) => ReplyKind::Nak,
        Some(_) => return Err(DecodeError::Invalid("message type")),
        None => return Err(DecodeError::Invalid("no message type")),
    };
    Ok(reply)
}

/// A DISCOVER, or a REQUEST for `offered` from `server` (SELECTING state,
/// RFC 2131 4.3.2). The broadcast flag is set: the client has no address
/// yet, so it can only hear broadcast replies.
pub fn request(mac: Mac, xid: u32, secs: u16, select: Option<(Ipv4Addr, Ipv4Addr)>) -> Result<Vec<u8>, String> {
    let any = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, any, any, any, any, &mac.0);
    msg.set_flags(Flags::default().set_broadcast());
    msg.set_secs(secs);
    let opts = msg.opts_mut();
    let kind = if select.is_some() { v4::MessageType::Request } else { v4::MessageType::Discover };
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClassIdentifier(VENDOR_CLASS.to_vec()));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::AddressLeaseTime,
        OptionCode::ServerIdentifier,
    ]));
    if let Some((addr, server)) = select {
        opts.insert(DhcpOption::RequestedIpAddress(addr));
        opts.insert(DhcpOption::ServerIdentifier(server));
    }
    msg.to_vec().map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dhcproto::{Decodable, Decoder};

    pub const MAC: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    /// A server's reply, built with dhcproto.
    pub fn reply(kind: v4::MessageType, xid: u32, yiaddr: Ipv4Addr) -> Vec<u8> {
        let any = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, any, yiaddr, any, any, &MAC.0);
        m.set_opcode(v4::Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 99, 0, 1)));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 99, 0, 254), Ipv4Addr::new(10, 99, 0, 253)]));
        o.insert(DhcpOption::AddressLeaseTime(3600));
        o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(1, 1, 1, 1)]));
        m.to_vec().unwrap()
    }

    #[test]
    fn an_ack_reads_back_with_the_fields_the_client_uses() {
        let yi = Ipv4Addr::new(10, 99, 0, 100);
        let r = parse_reply(&reply(v4::MessageType::Ack, 77, yi)).unwrap();
        assert_eq!((r.kind, r.xid, r.mac, r.yiaddr), (ReplyKind::Ack, 77, MAC, yi));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 99, 0, 1)));
        assert_eq!(r.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(r.router, Some(Ipv4Addr::new(10, 99, 0, 254)));
        assert_eq!(r.lease_secs, Some(3600));
    }

    #[test]
    fn requests_decode_as_broadcast_discover_and_request() {
        let d = Message::decode(&mut Decoder::new(&request(MAC, 9, 0, None).unwrap())).unwrap();
        assert_eq!(d.opts().msg_type(), Some(v4::MessageType::Discover));
        assert!(d.flags().broadcast());
        assert_eq!(&d.chaddr()[..6], &MAC.0);
        let sel = (Ipv4Addr::new(10, 99, 0, 100), Ipv4Addr::new(10, 99, 0, 1));
        let q = Message::decode(&mut Decoder::new(&request(MAC, 9, 3, Some(sel)).unwrap())).unwrap();
        assert_eq!(q.opts().msg_type(), Some(v4::MessageType::Request));
        assert_eq!(q.opts().get(OptionCode::RequestedIpAddress), Some(&DhcpOption::RequestedIpAddress(sel.0)));
        assert_eq!(q.opts().get(OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(sel.1)));
        assert_eq!(q.xid(), 9);
    }

    #[test]
    fn every_truncation_and_mutation_is_an_error_or_a_reply_never_a_panic() {
        let good = reply(v4::MessageType::Offer, 5, Ipv4Addr::new(10, 0, 0, 2));
        for cut in 0..good.len() {
            let _ = parse_reply(&good[..cut]);
        }
        assert!(parse_reply(&good[..240]).is_err(), "no message type");
        let mut s = 0x9e3779b97f4a7c15u64;
        for _ in 0..20_000 {
            let mut m = good.clone();
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let at = 236 + (s as usize % (m.len() - 236));
                m[at] = (s >> 32) as u8;
            }
            let _ = parse_reply(&m);
        }
    }

    #[test]
    fn requests_and_bad_options_are_refused() {
        let req = request(MAC, 1, 0, None).unwrap();
        assert_eq!(parse_reply(&req), Err(DecodeError::Invalid("op")));
        let mut m = reply(v4::MessageType::Ack, 1, Ipv4Addr::new(10, 0, 0, 2));
        // The first option is the message type (53, length 1): make it length 2.
        let at = m.windows(3).position(|w| w == [53, 1, 5]).unwrap();
        m[at + 1] = 2;
        assert!(parse_reply(&m).is_err());
    }
}
