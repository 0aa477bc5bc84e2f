//! A small DHCP client (RFC 2131, INIT → SELECTING → REQUESTING → BOUND),
//! as a sans-IO state machine in the shape every protocol here has.
//!
//! Call order: [`DhcpClient::new`], then loop: send everything
//! [`DhcpClient::poll_transmit`] gives (to 255.255.255.255:67), wait for a
//! datagram on port 68 until [`DhcpClient::poll_timeout`], hand it to
//! [`DhcpClient::handle`] or, at the deadline, call
//! [`DhcpClient::handle_timeout`]; check [`DhcpClient::poll`] for the
//! lease. Time is a `Duration` since any fixed start the caller picks.
//!
//! The agent lives for one task, so there is no renewal: a lease that
//! expires during a load is used on regardless (the server will not hand
//! the address out while the node still answers ARP). Replies must carry
//! our transaction id and MAC; a NAK, or no ACK after a few REQUESTs,
//! starts over with a DISCOVER.

pub mod packet;

use std::net::Ipv4Addr;
use std::time::Duration;

use packet::{parse_reply, ReplyKind};

use super::cmdline::Mac;

/// First retransmission delay; doubles each time up to [`MAX_BACKOFF`].
/// Short, because nodes boot to load, and one lost DISCOVER should cost
/// a second, not RFC 2131's four.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// REQUESTs sent for one offer before starting over.
const MAX_REQUESTS: u32 = 4;

/// An address and how to route from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: Option<u32>,
}

impl Lease {
    pub fn prefix_len(&self) -> u32 {
        u32::from(self.netmask).leading_ones()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Selecting,
    Requesting { offer: Lease, sent: u32 },
    Bound,
}

/// What the client has to tell its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Bound(Lease),
    /// The server refused our REQUEST; the client starts over.
    Nak {
        server: Option<Ipv4Addr>,
    },
}

pub struct DhcpClient {
    mac: Mac,
    xid: u32,
    state: State,
    start: Duration,
    /// When the next message goes out, and how long to wait after it.
    next_send: Duration,
    backoff: Duration,
    events: Vec<Event>,
    /// Replies refused (malformed, not ours), for the log.
    pub ignored: u64,
}

impl DhcpClient {
    /// A client that will DISCOVER at once. `xid` should differ between
    /// nodes booting together (the caller seeds it).
    pub fn new(mac: Mac, xid: u32, now: Duration) -> DhcpClient {
        DhcpClient {
            mac,
            xid,
            state: State::Selecting,
            start: now,
            next_send: now,
            backoff: FIRST_BACKOFF,
            events: Vec::new(),
            ignored: 0,
        }
    }

    fn restart(&mut self, now: Duration) {
        self.state = State::Selecting;
        self.xid = self.xid.wrapping_add(1);
        self.next_send = now;
        self.backoff = FIRST_BACKOFF;
    }

    /// A datagram from port 67.
    pub fn handle(&mut self, now: Duration, bytes: &[u8]) {
        let Ok(r) = parse_reply(bytes) else {
            self.ignored += 1;
            return;
        };
        if r.xid != self.xid || r.mac != self.mac {
            self.ignored += 1;
            return;
        }
        match (&self.state, r.kind) {
            (State::Selecting, ReplyKind::Offer) => {
                let (Some(server), false) = (r.server_id, r.yiaddr.is_unspecified()) else {
                    self.ignored += 1;
                    return;
                };
                let offer = Lease {
                    addr: r.yiaddr,
                    netmask: r.netmask.unwrap_or_else(|| classful_mask(r.yiaddr)),
                    router: r.router,
                    server,
                    lease_secs: r.lease_secs,
                };
                self.state = State::Requesting { offer, sent: 0 };
                self.next_send = now;
                self.backoff = FIRST_BACKOFF;
            }
            (State::Requesting { offer, .. }, ReplyKind::Ack)
                if r.yiaddr == offer.addr && r.server_id.map_or(true, |s| s == offer.server) =>
            {
                let mut lease = offer.clone();
                // The ACK's parameters are the ones that count.
                lease.netmask = r.netmask.unwrap_or(lease.netmask);
                lease.router = r.router.or(lease.router);
                lease.lease_secs = r.lease_secs.or(lease.lease_secs);
                self.state = State::Bound;
                self.events.push(Event::Bound(lease));
            }
            (State::Requesting { offer, .. }, ReplyKind::Nak) if r.server_id.map_or(true, |s| s == offer.server) => {
                self.events.push(Event::Nak { server: r.server_id });
                self.restart(now);
            }
            _ => self.ignored += 1,
        }
    }

    /// Called at or after [`DhcpClient::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Duration) {
        if let State::Requesting { sent, .. } = self.state {
            if sent >= MAX_REQUESTS && now >= self.next_send {
                self.restart(now);
            }
        }
    }

    /// The next message to broadcast, if one is due: its bytes replace
    /// `buf`'s.
    pub fn poll_transmit(&mut self, now: Duration, buf: &mut Vec<u8>) -> Option<usize> {
        if now < self.next_send {
            return None;
        }
        let secs = u16::try_from(now.saturating_sub(self.start).as_secs()).unwrap_or(u16::MAX);
        let select = match &mut self.state {
            State::Selecting => None,
            State::Requesting { sent, .. } if *sent >= MAX_REQUESTS => return None,
            State::Requesting { offer, sent } => {
                *sent += 1;
                Some((offer.addr, offer.server))
            }
            State::Bound => return None,
        };
        let bytes = packet::request(self.mac, self.xid, secs, select).ok()?;
        self.next_send = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        *buf = bytes;
        Some(buf.len())
    }

    /// When to call [`DhcpClient::handle_timeout`] or poll again.
    pub fn poll_timeout(&self) -> Option<Duration> {
        (self.state != State::Bound).then_some(self.next_send)
    }

    pub fn poll(&mut self) -> Option<Event> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }
}

/// The netmask of the address's class, for servers that send none.
fn classful_mask(a: Ipv4Addr) -> Ipv4Addr {
    match a.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

#[cfg(test)]
mod tests;
