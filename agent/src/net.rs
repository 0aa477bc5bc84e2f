//! The one place multicast socket options live, for both ends of a
//! session: the server's sender and the agent's receiver, and the one place
//! datagrams are batched: [`Batcher`] sends runs of equal-sized datagrams
//! with one GSO send (UDP_SEGMENT), [`Datagrams`] takes many with one
//! `recvmmsg` and unpacks GRO-coalesced buffers, both through quinn-udp,
//! which falls back to one datagram a call where the kernel cannot.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
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
    wait(sock, nix::poll::PollFlags::POLLIN, timeout)
}

/// Waits until `sock` has room to send or `timeout` passes; true if it has.
pub fn wait_writable(sock: &UdpSocket, timeout: Duration) -> io::Result<bool> {
    wait(sock, nix::poll::PollFlags::POLLOUT, timeout)
}

fn wait(sock: &UdpSocket, events: nix::poll::PollFlags, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd};
    let ms = u16::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(sock.as_fd(), events)];
    match poll(&mut fds, ms) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The largest GSO send: under the 64 KiB an IP datagram can carry.
const MAX_BATCH_BYTES: usize = 65_000;

/// Collects datagrams for one destination and sends each run of
/// equal-sized ones (a shorter one may end a run) as one GSO send.
pub struct Batcher {
    state: quinn_udp::UdpSocketState,
    dest: SocketAddr,
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    /// Batches the kernel refused (counted; their datagrams are lost).
    pub failed_sends: u64,
    /// GSO sends made and datagrams in them, for logs.
    pub sends: u64,
    pub datagrams: u64,
}

impl Batcher {
    /// A batcher sending to `dest` on `sock`, which it makes non-blocking.
    pub fn new(sock: &UdpSocket, dest: SocketAddr) -> io::Result<Batcher> {
        let state = quinn_udp::UdpSocketState::new(sock.into())?;
        Ok(Batcher {
            state,
            dest,
            buf: Vec::with_capacity(MAX_BATCH_BYTES),
            segment: 0,
            count: 0,
            failed_sends: 0,
            sends: 0,
            datagrams: 0,
        })
    }

    /// Adds one datagram, sending what is batched first if it cannot join
    /// the run, and the run itself when full or when this datagram ends it.
    pub fn push(&mut self, sock: &UdpSocket, datagram: &[u8]) -> io::Result<()> {
        let max = self.state.max_gso_segments().max(1);
        if self.count > 0
            && (datagram.len() > self.segment || self.count >= max || self.buf.len() + datagram.len() > MAX_BATCH_BYTES)
        {
            self.flush(sock)?;
        }
        if self.count == 0 {
            self.segment = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
        if datagram.len() < self.segment || self.count >= max {
            self.flush(sock)?;
        }
        Ok(())
    }

    /// Sends whatever is batched, waiting (briefly) for room in the send
    /// buffer: a full buffer is back-pressure, not failure.
    pub fn flush(&mut self, sock: &UdpSocket) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let transmit = quinn_udp::Transmit {
            destination: self.dest,
            ecn: None,
            contents: &self.buf,
            segment_size: (self.count > 1).then_some(self.segment),
            src_ip: None,
        };
        let mut tries = 0;
        let result = loop {
            match self.state.try_send(sock.into(), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 50 => {
                    tries += 1;
                    wait_writable(sock, Duration::from_millis(20))?;
                }
                other => break other,
            }
        };
        match result {
            Ok(()) => {
                self.sends += 1;
                self.datagrams += self.count as u64;
            }
            // Lost datagrams are asked for again; quinn-udp turns GSO off
            // for this socket if the kernel refused the segmentation.
            Err(e) => {
                self.failed_sends += 1;
                if self.failed_sends.is_power_of_two() {
                    tracing::warn!(count = self.failed_sends, "send: {e}");
                }
            }
        }
        self.buf.clear();
        self.count = 0;
        Ok(())
    }
}

/// Datagrams per `recvmmsg` call, and bytes per buffer (room for a
/// GRO-coalesced run of full-sized datagrams).
const RECV_BATCH: usize = 8;
const RECV_BUFFER: usize = 64 << 10;

/// Receives datagrams many at a time (`recvmmsg`, GRO) from a socket
/// quinn-udp has set up, handing each to a callback.
pub struct Datagrams {
    state: quinn_udp::UdpSocketState,
    bufs: Vec<Vec<u8>>,
    metas: Vec<quinn_udp::RecvMeta>,
}

impl Datagrams {
    /// Sets `sock` up (non-blocking, GRO where the kernel has it).
    pub fn new(sock: &UdpSocket) -> io::Result<Datagrams> {
        let state = quinn_udp::UdpSocketState::new(sock.into())?;
        Ok(Datagrams {
            state,
            bufs: (0..RECV_BATCH).map(|_| vec![0u8; RECV_BUFFER]).collect(),
            metas: vec![quinn_udp::RecvMeta::default(); RECV_BATCH],
        })
    }

    /// Takes what is queued, up to about `max` datagrams, calling `each`
    /// with every datagram and its sender. Returns how many were taken
    /// (zero: the socket was empty).
    pub fn drain(
        &mut self,
        sock: &UdpSocket,
        max: usize,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let mut taken = 0;
        while taken < max {
            let mut slices: Vec<IoSliceMut<'_>> = self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n = match self.state.recv(sock.into(), &mut slices, &mut self.metas) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for (meta, buf) in self.metas.iter().zip(&self.bufs).take(n) {
                let stride = meta.stride.max(1);
                for d in buf[..meta.len].chunks(stride) {
                    each(meta.addr, d);
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }
}
