//! The tokio driver: moves datagrams between the sockets and the
//! [`Responder`], and lease bytes between the responder and the lease
//! file. It makes no decision of its own.
//!
//! Receive → `handle` → send every transmit → act on every event, one
//! datagram at a time. A bad datagram, a failed send or a failed lease
//! write is logged and counted; the loop keeps serving.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_proto::codec::DecodeError;
use tokio::net::UdpSocket;
use tracing::{info, warn};

use super::config::{Config, ConfigError, Mode};
use super::counters::{Counters, DropReason};
use super::packet::MAX_PACKET;
use super::responder::{Destination, Event, Incoming, Listener, Responder, Transmit};
use super::{lease_file, net, BootPolicy};

/// Where and how the driver listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// The interface to serve (`SO_BINDTODEVICE`); all of them when `None`.
    pub interface: Option<String>,
    /// The address to bind. The wildcard, so that broadcasts arrive.
    pub listen_ip: Ipv4Addr,
    /// Where broadcast replies go: 255.255.255.255, or a loopback address
    /// in tests that must not touch a real network.
    pub broadcast_ip: Ipv4Addr,
    /// Where the pool's leases are kept across restarts.
    pub lease_file: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            interface: None,
            listen_ip: Ipv4Addr::UNSPECIFIED,
            broadcast_ip: Ipv4Addr::BROADCAST,
            lease_file: None,
        }
    }
}

/// Why the DHCP service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// the configuration was refused
    #[error("invalid dhcp configuration")]
    Config(#[from] ConfigError),
    /// a socket could not be opened or bound
    #[error("cannot bind dhcp socket {addr}")]
    Bind {
        addr: SocketAddrV4,
        #[source]
        source: io::Error,
    },
    /// the lease file could not be read
    #[error("cannot read lease file {path}")]
    LeaseFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// the lease file is not one we wrote; move it away to start afresh
    #[error("lease file {path} is corrupt")]
    LeaseDecode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
}

/// A bound DHCP service, ready to [`run`](DhcpServer::run).
pub struct DhcpServer {
    responder: Responder,
    counters: Arc<Counters>,
    dhcp: UdpSocket,
    proxy: Option<UdpSocket>,
    opts: ServerOptions,
}

impl DhcpServer {
    /// Checks the configuration, restores the pool's leases and binds the
    /// DHCP port (and, in proxy mode, the PXE boot port).
    pub async fn bind(cfg: Config, policy: Arc<dyn BootPolicy>, opts: ServerOptions) -> Result<Self, ServerError> {
        let ports = cfg.ports;
        let proxy_mode = cfg.mode == Mode::Proxy;
        let mut responder = Responder::new(cfg, policy)?;
        if let Some(path) = &opts.lease_file {
            let loaded =
                lease_file::load(path).map_err(|source| ServerError::LeaseFile { path: path.clone(), source })?;
            if let Some(bytes) = loaded {
                responder
                    .restore_leases(&bytes)
                    .map_err(|source| ServerError::LeaseDecode { path: path.clone(), source })?;
            }
        }
        let bind = |port| {
            let addr = SocketAddrV4::new(opts.listen_ip, port);
            net::dhcp_socket(addr, opts.interface.as_deref()).map_err(|source| ServerError::Bind { addr, source })
        };
        let dhcp = bind(ports.server)?;
        let proxy = if proxy_mode { Some(bind(ports.proxy)?) } else { None };
        let counters = responder.counters();
        Ok(DhcpServer { responder, counters, dhcp, proxy, opts })
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// The DHCP socket's address (useful when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.dhcp.local_addr()
    }

    /// The PXE boot socket's address, in proxy mode.
    pub fn proxy_local_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.proxy.as_ref().map(UdpSocket::local_addr)
    }

    /// Serves until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut dhcp_buf = vec![0u8; MAX_PACKET + 1];
        let mut proxy_buf = vec![0u8; MAX_PACKET + 1];
        info!(addr = ?self.dhcp.local_addr().ok(), interface = ?self.opts.interface, "dhcp: serving");
        loop {
            let (via, received) = tokio::select! {
                () = &mut shutdown => break,
                r = self.dhcp.recv_from(&mut dhcp_buf) => (Listener::Dhcp, r),
                r = recv_maybe(self.proxy.as_ref(), &mut proxy_buf) => (Listener::ProxyBoot, r),
            };
            let (len, src) = match received {
                Ok((len, SocketAddr::V4(src))) => (len, src),
                Ok((_, SocketAddr::V6(_))) => continue,
                Err(e) => {
                    // ICMP errors for earlier sends surface here; they say
                    // nothing about the next datagram.
                    warn!(error = %e, "dhcp: receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let bytes = match via {
                Listener::Dhcp => &dhcp_buf[..len],
                Listener::ProxyBoot => &proxy_buf[..len],
            };
            self.responder.handle(SystemTime::now(), Incoming { via, src }, bytes);
            while let Some(t) = self.responder.poll_transmit() {
                self.send(t).await;
            }
            while let Some(event) = self.responder.poll() {
                if event == Event::LeasesChanged {
                    self.persist().await;
                }
            }
        }
        info!("dhcp: stopped");
    }

    async fn send(&self, t: Transmit) {
        let socket = match (t.via, &self.proxy) {
            (Listener::ProxyBoot, Some(proxy)) => proxy,
            _ => &self.dhcp,
        };
        let dest = match t.dest {
            Destination::Broadcast { port } => SocketAddrV4::new(self.opts.broadcast_ip, port),
            Destination::Unicast(addr) => addr,
        };
        if let Err(e) = socket.send_to(&t.bytes, dest).await {
            warn!(%dest, error = %e, "dhcp: send failed");
            self.counters.count_drop(DropReason::SendFailed);
        }
    }

    async fn persist(&self) {
        let (Some(path), Some(bytes)) = (self.opts.lease_file.clone(), self.responder.lease_bytes()) else { return };
        let written =
            tokio::task::spawn_blocking(move || lease_file::store(&path, &bytes).map_err(|e| (path, e))).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err((path, e))) => warn!(path = %path.display(), error = %e, "dhcp: leases not saved"),
            Err(e) => warn!(error = %e, "dhcp: lease writer failed"),
        }
    }
}

/// Receives on `socket`, or never when there is none.
async fn recv_maybe(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}
