//! The DHCP service's sockets: every socket option in one place.
//!
//! A DHCP server must receive broadcasts, so it binds the wildcard address
//! (or whatever the operator chose) and, to serve one network only, ties
//! the socket to an interface with `SO_BINDTODEVICE`. `SO_BROADCAST` lets
//! it answer clients that have no address yet; `SO_REUSEADDR` lets a
//! restarted server bind again at once.

use std::io;
use std::net::SocketAddrV4;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// A UDP socket for DHCP on `addr`, tied to `interface` when given. Must
/// be called inside a tokio runtime.
pub fn dhcp_socket(addr: SocketAddrV4, interface: Option<&str>) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    if let Some(name) = interface {
        socket.bind_device(Some(name.as_bytes()))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
