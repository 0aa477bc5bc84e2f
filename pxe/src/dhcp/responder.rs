//! The DHCP service as a sans-IO state machine: datagrams and the time go
//! in, datagrams to send and events come out. Its state is the dynamic
//! pool, the rate limiter and the counters.
//!
//! Call order, for each datagram received: [`Responder::handle`], then
//! [`Responder::poll_transmit`] until `None`, then [`Responder::poll`] until
//! `None` (on [`Event::LeasesChanged`], persist [`Responder::lease_bytes`]).
//! One request yields at most one reply.
//!
//! Nothing that arrives is trusted: a datagram that does not decode, is
//! over its MAC's rate limit or that the policy does not answer gets no
//! reply, one `debug` log line and a [`DropReason`] counter. A flood of
//! junk therefore costs counters, not log volume; replies are logged at
//! `info`.
//!
//! There is no `handle_timeout`/`poll_timeout`: nothing here happens
//! without a datagram. Lease and offer expiry and rate-limit refill are
//! computed from the `now` each datagram brings. Time is wall-clock
//! (`SystemTime`) because leases outlive the process.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use shoal_proto::codec::DecodeError;
use tracing::{debug, info, warn};

use super::config::{Config, ConfigError, Mode};
use super::counters::{Counters, DropReason};
use super::packet::{self, Request};
use super::policy::{self, Address, Boot, Decision};
use super::pool::{Pool, Refusal};
use super::ratelimit::RateLimiter;
use super::reply::{Reply, ReplyKind};
use super::{BootPolicy, Mac};

/// Which socket a datagram came in on, and goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The DHCP server port (67).
    Dhcp,
    /// The PXE boot server port (4011), proxy mode.
    ProxyBoot,
}

/// Where a datagram came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub via: Listener,
    pub src: SocketAddrV4,
}

/// Where a reply goes (RFC 2131 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The local broadcast address; the driver may map it to another.
    Broadcast {
        port: u16,
    },
    Unicast(SocketAddrV4),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub via: Listener,
    pub dest: Destination,
    pub bytes: Vec<u8>,
}

/// Something the driver or the operator should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The pool's bound leases changed: persist [`Responder::lease_bytes`].
    LeasesChanged,
    /// A client found its address in use by another machine.
    Declined { mac: Mac, ip: Ipv4Addr },
}

/// The DHCP service's state and decisions; see the module doc for the
/// call order.
pub struct Responder {
    cfg: Arc<Config>,
    policy: Arc<dyn BootPolicy>,
    pool: Option<Pool>,
    limiter: RateLimiter,
    counters: Arc<Counters>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Responder {
    /// Refuses a configuration that does not validate.
    pub fn new(cfg: Config, policy: Arc<dyn BootPolicy>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Responder {
            pool: cfg.pool().map(Pool::new),
            limiter: RateLimiter::new(cfg.rate_limit),
            cfg: Arc::new(cfg),
            policy,
            counters: Arc::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Replaces the pool's leases with those `bytes` hold (from
    /// [`Responder::lease_bytes`] of an earlier run). No-op without a pool.
    pub fn restore_leases(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if let Some(range) = self.cfg.pool() {
            self.pool = Some(Pool::decode(range, bytes)?);
        }
        Ok(())
    }

    /// The pool's bound leases, encoded; `None` without a pool.
    pub fn lease_bytes(&self) -> Option<Vec<u8>> {
        self.pool.as_ref().map(Pool::encode)
    }

    pub fn pool(&self) -> Option<&Pool> {
        self.pool.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The live counters, shareable with other threads.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Takes one datagram. Bad input is counted and logged, never answered.
    pub fn handle(&mut self, now: SystemTime, from: Incoming, bytes: &[u8]) {
        let req = match packet::decode(bytes) {
            Ok(req) => req,
            Err(e) => {
                debug!(src = %from.src, len = bytes.len(), error = %e, "dhcp: refused datagram");
                self.counters.count_drop(e.reason());
                return;
            }
        };
        self.counters.count_request(req.kind);
        let now_ms = unix_ms(now);
        if !self.limiter.allow(req.mac, now_ms) {
            debug!(mac = %req.mac, "dhcp: rate limited");
            self.counters.count_drop(DropReason::RateLimited);
            return;
        }
        let node = self.policy.lookup(req.mac);
        let decision = policy::decide(&req, &self.cfg, node.as_ref(), from.via);
        self.act(now_ms / 1000, from, &req, decision);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn act(&mut self, now: u64, from: Incoming, req: &Request, decision: Decision) {
        let cfg = Arc::clone(&self.cfg);
        let full = match &cfg.mode {
            Mode::Full(full) => Some(full),
            Mode::Proxy => None,
        };
        let lease_secs = full.map(|f| u32::try_from(f.lease_time.as_secs()).unwrap_or(u32::MAX));
        let policy = Arc::clone(&self.policy);
        let is_reserved = |ip| policy.is_reserved(ip);
        let (kind, ip, boot, hostname) = match decision {
            Decision::Ignore(reason) => return self.ignore(req, reason),
            Decision::Offer { address, boot, hostname } => {
                let ip = match (address, self.pool.as_mut()) {
                    (Address::Fixed(ip), _) => Some(ip),
                    (Address::Pool(wanted), Some(pool)) => pool.offer(req.mac, wanted, now, &is_reserved),
                    (Address::Pool(_), None) => None,
                };
                let Some(ip) = ip else { return self.ignore(req, DropReason::PoolExhausted) };
                (ReplyKind::Offer, Some(ip), boot, hostname)
            }
            Decision::Ack { address, boot, hostname } => {
                let bound = match (address, self.pool.as_mut()) {
                    (Address::Fixed(ip), _) => Ok(ip),
                    (Address::Pool(Some(ip)), Some(pool)) => {
                        let secs = u64::from(lease_secs.unwrap_or_default());
                        pool.bind(req.mac, ip, now, secs, &is_reserved).map(|()| ip)
                    }
                    (Address::Pool(_), _) => Err(Refusal::NotInPool),
                };
                match bound {
                    Ok(ip) => {
                        if matches!(address, Address::Pool(_)) {
                            self.events.push_back(Event::LeasesChanged);
                        }
                        (ReplyKind::Ack, Some(ip), boot, hostname)
                    }
                    Err(_) => return self.nak(from, req, "requested address is not available"),
                }
            }
            Decision::Nak(text) => return self.nak(from, req, text),
            Decision::Inform { boot } => (ReplyKind::Ack, None, boot, None),
            Decision::Release(address) => {
                if let (Address::Pool(Some(ip)), Some(pool)) = (address, self.pool.as_mut()) {
                    if pool.release(req.mac, ip, now) {
                        self.events.push_back(Event::LeasesChanged);
                    }
                }
                debug!(mac = %req.mac, "dhcp: release");
                return;
            }
            Decision::Decline(address) => {
                let ip = match address {
                    Address::Fixed(ip) | Address::Pool(Some(ip)) => ip,
                    Address::Pool(None) => return,
                };
                if let Some(pool) = self.pool.as_mut().filter(|_| matches!(address, Address::Pool(_))) {
                    if pool.decline(req.mac, ip, now) {
                        self.events.push_back(Event::LeasesChanged);
                    }
                }
                warn!(mac = %req.mac, %ip, "dhcp: client declined its address: another machine uses it");
                self.events.push_back(Event::Declined { mac: req.mac, ip });
                return;
            }
            Decision::Proxy { kind, boot } => (kind, None, Some(boot), None),
        };
        let mut reply = Reply::to(req, kind, cfg.server_ip);
        if let Some(ip) = ip {
            reply.yiaddr = ip;
            reply.lease_secs = lease_secs;
        }
        reply.network = full;
        reply.hostname = hostname.as_deref();
        reply.boot = boot.as_ref();
        if boot.is_some() {
            reply.siaddr = cfg.next_server;
        }
        self.emit(from, req, reply, boot.as_ref());
    }

    fn nak(&mut self, from: Incoming, req: &Request, text: &'static str) {
        let mut reply = Reply::to(req, ReplyKind::Nak, self.cfg.server_ip);
        reply.message = Some(text);
        self.emit(from, req, reply, None);
    }

    fn emit(&mut self, from: Incoming, req: &Request, reply: Reply<'_>, boot: Option<&Boot>) {
        let kind = reply.kind;
        let yiaddr = reply.yiaddr;
        match reply.encode() {
            Ok(bytes) => {
                let dest = self.destination(from, req, kind);
                info!(mac = %req.mac, ?kind, %yiaddr, file = boot.map(|b| b.file.as_str()), ?dest, "dhcp: reply");
                self.counters.count_reply(kind);
                self.transmits.push_back(Transmit { via: from.via, dest, bytes });
            }
            Err(e) => {
                warn!(mac = %req.mac, error = %e, "dhcp: reply not encoded");
                self.counters.count_drop(DropReason::EncodeFailed);
            }
        }
    }

    fn ignore(&mut self, req: &Request, reason: DropReason) {
        debug!(mac = %req.mac, kind = ?req.kind, reason = reason.as_str(), "dhcp: no answer");
        self.counters.count_drop(reason);
    }

    /// RFC 2131 4.1: relayed replies go to the relay; NAKs are broadcast;
    /// a client with an address gets unicast; everyone else broadcast
    /// (unicast to a client without an address needs an ARP entry only raw
    /// sockets could add). The PXE boot port answers the sender.
    fn destination(&self, from: Incoming, req: &Request, kind: ReplyKind) -> Destination {
        let ports = self.cfg.ports;
        if from.via == Listener::ProxyBoot && !from.src.ip().is_unspecified() {
            return Destination::Unicast(from.src);
        }
        if !req.giaddr.is_unspecified() {
            return Destination::Unicast(SocketAddrV4::new(req.giaddr, ports.server));
        }
        if kind != ReplyKind::Nak && !req.ciaddr.is_unspecified() {
            return Destination::Unicast(SocketAddrV4::new(req.ciaddr, ports.client));
        }
        Destination::Broadcast { port: ports.client }
    }
}

/// Milliseconds since the Unix epoch; 0 for a clock before it.
fn unix_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
