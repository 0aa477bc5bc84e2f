//! The one place multicast socket options live, for both ends of a
//! session: the server's sender and the agent's receiver.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// A UDP socket that sends to and hears `group:port` through the interface
/// with address `iface` (unspecified: the kernel's choice by route).
pub fn multicast_socket(group: Ipv4Addr, port: u16, iface: Ipv4Addr, ttl: u32) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    // Bind the group address itself so only this session's traffic arrives.
    s.bind(&SocketAddrV4::new(group, port).into())?;
    s.join_multicast_v4(&group, &iface)?;
    if !iface.is_unspecified() {
        s.set_multicast_if_v4(&iface)?;
    }
    s.set_multicast_ttl_v4(ttl)?;
    // Peers' datagrams matter (requests, for suppression); our own do not.
    s.set_multicast_loop_v4(false)?;
    // Room for a burst of blocks or of requests from many receivers.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    Ok(s.into())
}

/// Waits until `sock` has a datagram or `timeout` passes (at millisecond
/// resolution, rounded up); true if one is waiting.
pub fn wait_readable(sock: &UdpSocket, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags};
    let ms = u16::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, ms) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
