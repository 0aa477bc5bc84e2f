//! Sockets for the TFTP server, and the socket options behind them.
//!
//! The listening socket asks the kernel for each datagram's destination
//! address (`IP_PKTINFO`, `IPV6_RECVPKTINFO`), so that a server listening
//! on `0.0.0.0:69` of a multi-homed host can answer each client from the
//! address the client wrote to: every transfer gets a socket of its own
//! (its TID) bound to that address and an ephemeral port. Datagrams longer
//! than the buffer are reported as truncated, never half-read. IPv4-mapped
//! IPv6 addresses are turned into IPv4 for the transfer socket and the
//! peer. Nothing here knows TFTP.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One datagram taken off the listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the datagram, which may exceed the buffer if `truncated`.
    pub len: usize,
    /// The sender, as the socket reports it (to answer from this socket).
    pub from: SocketAddr,
    /// The address the datagram was sent to, port 0, ready to bind a
    /// transfer socket to; the socket's own address if the kernel said
    /// nothing.
    pub local: SocketAddr,
    pub truncated: bool,
}

/// The socket requests arrive on.
#[derive(Debug)]
pub struct Listener {
    socket: UdpSocket,
    local: SocketAddr,
}

impl Listener {
    /// Binds `addr` and turns on destination-address reporting. Must be
    /// called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        match addr {
            SocketAddr::V4(_) => socket::setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?,
            SocketAddr::V6(_) => {
                socket::setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
                // IPv4 clients of a dual-stack socket: best effort, as a
                // v6-only socket refuses it and needs nothing from it.
                let _ = socket::setsockopt(&socket, sockopt::Ipv4PacketInfo, &true);
            }
        }
        let local = socket.local_addr()?;
        Ok(Listener { socket: UdpSocket::from_std(socket)?, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for the next datagram.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let fallback = SocketAddr::new(self.local.ip(), 0);
        self.socket.async_io(Interest::READABLE, || recv_with_destination(&self.socket, buf, fallback)).await
    }

    /// Sends one datagram from the listening port (for refusals).
    pub async fn send_to(&self, bytes: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(bytes, dest).await
    }
}

fn recv_with_destination(socket: &UdpSocket, buf: &mut [u8], fallback: SocketAddr) -> io::Result<Received> {
    let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo, nix::libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC)?;
    let from = msg.address.as_ref().and_then(to_socket_addr).ok_or_else(|| io::Error::other("sender not ip"))?;
    let mut local = fallback;
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                let dst = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                let spec = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                // A broadcast or multicast destination is no address to
                // answer from; the kernel's choice of local address is.
                let ip = if dst.is_broadcast() || dst.is_multicast() { spec } else { dst };
                local = SocketAddr::new(IpAddr::V4(ip), 0);
            }
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                let scope = if is_link_local(&ip) { info.ipi6_ifindex } else { 0 };
                local = SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, scope));
            }
            _ => {}
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
    Ok(Received { len: msg.bytes, from, local, truncated })
}

fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// An IPv4-mapped IPv6 address as plain IPv4; others unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// A new socket for one transfer with `peer`: `local`'s address, an
/// ephemeral port. If the two are of different families (a dual-stack
/// listener that learnt no destination), the peer's family's unspecified
/// address is used, so the socket can reach the peer at all.
pub fn transfer_socket(local: SocketAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let mut addr = canonical(local);
    if addr.is_ipv4() != peer.is_ipv4() {
        addr = match peer {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
    }
    addr.set_port(0);
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listener_reports_sender_destination_and_truncation() {
        let l = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"hello", l.local_addr()).await.unwrap();
        let mut buf = [0; 3];
        let r = l.recv(&mut buf).await.unwrap();
        assert_eq!(r.from, client.local_addr().unwrap());
        assert_eq!(r.local, "127.0.0.1:0".parse().unwrap());
        assert_eq!((r.len, r.truncated, &buf), (5, true, b"hel"));
        let t = transfer_socket(r.local, r.from).unwrap();
        assert_eq!(t.local_addr().unwrap().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(t.local_addr().unwrap().port(), 0);
    }

    #[tokio::test]
    async fn a_mapped_local_address_gives_an_ipv4_transfer_socket() {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t = transfer_socket("[::ffff:127.0.0.1]:0".parse().unwrap(), peer).unwrap();
        assert_eq!(t.local_addr().unwrap().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:69".parse().unwrap();
        assert_eq!(canonical(mapped), "10.1.2.3:69".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:69".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
