//! Configuring a NIC over rtnetlink: link up, an IPv4 address, a default
//! route. The three messages `ip link set up`, `ip addr add` and `ip route
//! add` send, built by hand: three message types did not justify a netlink
//! crate (the `rtnetlink` crate is async and brings tokio into the agent),
//! and a netlink socket needs no `unsafe`, unlike the SIOCSIF* ioctls.
//!
//! Netlink is in host byte order; addresses are in network order.

use std::io::{self, Read};
use std::net::Ipv4Addr;

use socket2::{Domain, Protocol, Socket, Type};

const NETLINK_ROUTE: i32 = 0;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_DHCP: u8 = 16;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// One netlink request: header, fixed part, attributes.
struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32) -> Msg {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        Msg(b)
    }

    fn raw(mut self, bytes: &[u8]) -> Msg {
        self.0.extend_from_slice(bytes);
        self
    }

    fn attr(mut self, kind: u16, value: &[u8]) -> Msg {
        self.0.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        while self.0.len() % 4 != 0 {
            self.0.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// `ip link set IFINDEX up`.
pub fn link_up(index: u32, seq: u32) -> Vec<u8> {
    // ifinfomsg: family AF_UNSPEC, padding, device type.
    let mut ifi = vec![0u8; 4];
    ifi.extend_from_slice(&(index as i32).to_ne_bytes());
    ifi.extend_from_slice(&IFF_UP.to_ne_bytes()); // flags
    ifi.extend_from_slice(&IFF_UP.to_ne_bytes()); // change mask
    Msg::new(RTM_NEWLINK, 0, seq).raw(&ifi).finish()
}

/// `ip addr replace ADDR/PREFIX brd + dev IFINDEX`.
pub fn add_address(index: u32, addr: Ipv4Addr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut ifa = vec![AF_INET, prefix, 0, RT_SCOPE_UNIVERSE];
    ifa.extend_from_slice(&index.to_ne_bytes());
    let host_bits = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
    let brd = Ipv4Addr::from(u32::from(addr) | host_bits);
    Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .raw(&ifa)
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets())
        .attr(IFA_BROADCAST, &brd.octets())
        .finish()
}

/// `ip route replace default via GATEWAY dev IFINDEX proto dhcp`.
pub fn default_route(index: u32, gateway: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut rtm = vec![AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_DHCP, RT_SCOPE_UNIVERSE, RTN_UNICAST];
    rtm.extend_from_slice(&0u32.to_ne_bytes()); // flags
    Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq)
        .raw(&rtm)
        .attr(RTA_GATEWAY, &gateway.octets())
        .attr(RTA_OIF, &index.to_ne_bytes())
        .finish()
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The outcome of request `seq` in a datagram from the kernel: `Some(0)`
/// success, `Some(-errno)` refusal, `None` not its acknowledgement.
pub fn ack_of(buf: &[u8], seq: u32) -> Option<i32> {
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = ne_u32(buf, at)? as usize;
        let kind = u16::from_ne_bytes(buf.get(at + 4..at + 6)?.try_into().ok()?);
        if len < 16 || at + len > buf.len() {
            return None;
        }
        if kind == NLMSG_ERROR && ne_u32(buf, at + 8)? == seq {
            return Some(ne_u32(buf, at + 16)? as i32);
        }
        at += (len + 3) & !3;
    }
    None
}

/// A NETLINK_ROUTE socket that sends requests and waits for their acks.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let sock = Socket::new(Domain::from(libc::AF_NETLINK), Type::RAW, Some(Protocol::from(NETLINK_ROUTE)))?;
        sock.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        Ok(Netlink { sock, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Sends one request made by `build(seq)` and waits for its ack.
    fn call(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        let seq = self.next_seq();
        let msg = build(seq);
        // Unconnected and unaddressed: netlink sends to the kernel.
        self.sock.send(&msg)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = (&self.sock).read(&mut buf)?;
            match ack_of(&buf[..n], seq) {
                Some(0) => return Ok(()),
                Some(e) => return Err(io::Error::from_raw_os_error(-e)),
                None => continue,
            }
        }
    }

    pub fn link_up(&mut self, index: u32) -> io::Result<()> {
        self.call(|seq| link_up(index, seq))
    }

    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        self.call(|seq| add_address(index, addr, prefix, seq))
    }

    pub fn default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        self.call(|seq| default_route(index, gateway, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
    }

    #[test]
    fn messages_carry_their_length_type_flags_and_sequence() {
        let m = add_address(3, Ipv4Addr::new(10, 99, 0, 100), 24, 7);
        assert_eq!(ne_u32(&m, 0), Some(m.len() as u32));
        assert_eq!(m.len() % 4, 0);
        assert_eq!(u16_at(&m, 4), RTM_NEWADDR);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        assert_eq!(ne_u32(&m, 8), Some(7));
        // ifaddrmsg, then IFA_LOCAL, IFA_ADDRESS and IFA_BROADCAST of 8 bytes each.
        assert_eq!(&m[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(ne_u32(&m, 20), Some(3));
        assert_eq!(m.len(), 24 + 3 * 8);
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (8, IFA_LOCAL));
        assert_eq!(&m[28..32], &[10, 99, 0, 100]);
        assert_eq!(&m[44..48], &[10, 99, 0, 255], "broadcast");
    }

    #[test]
    fn link_up_sets_and_masks_only_the_up_flag() {
        let m = link_up(2, 1);
        assert_eq!(m.len(), 16 + 16);
        assert_eq!(u16_at(&m, 4), RTM_NEWLINK);
        assert_eq!((ne_u32(&m, 20), ne_u32(&m, 24), ne_u32(&m, 28)), (Some(2), Some(IFF_UP), Some(IFF_UP)));
    }

    #[test]
    fn the_default_route_goes_via_the_gateway_out_of_the_nic() {
        let m = default_route(4, Ipv4Addr::new(10, 99, 0, 1), 9);
        assert_eq!(&m[16..24], &[AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_DHCP, RT_SCOPE_UNIVERSE, RTN_UNICAST]);
        assert_eq!((u16_at(&m, 30), &m[32..36]), (RTA_GATEWAY, &[10, 99, 0, 1][..]));
        assert_eq!((u16_at(&m, 38), ne_u32(&m, 40)), (RTA_OIF, Some(4)));
    }

    fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&errno.to_ne_bytes());
        b.extend_from_slice(&[0u8; 16]); // the request's header
        b
    }

    #[test]
    fn acks_are_matched_by_sequence_and_bad_lengths_end_the_scan() {
        let mut two = error_msg(4, 0);
        two.extend(error_msg(5, -17));
        assert_eq!(ack_of(&two, 4), Some(0));
        assert_eq!(ack_of(&two, 5), Some(-17));
        assert_eq!(ack_of(&two, 6), None);
        let mut bad = error_msg(4, 0);
        bad[0] = 200;
        assert_eq!(ack_of(&bad, 4), None);
        bad[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(ack_of(&bad, 4), None);
        for cut in 0..36 {
            assert_eq!(ack_of(&error_msg(4, 0)[..cut], 4), None);
        }
    }
}
