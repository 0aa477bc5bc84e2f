//! The dynamic pool: which address each unknown MAC holds, and until when.
//!
//! Addresses are offered lowest free first, except that a client gets back
//! the address it last held (or the one it asks for) when that is free.
//! An offer holds its address for [`OFFER_HOLD_SECS`]; a REQUEST binds it
//! for the lease time. Expired leases keep their MAC until someone else
//! needs the address, so a client that comes back gets the same one. A
//! declined address is kept out of use for [`DECLINE_HOLD_SECS`].
//!
//! Bound leases are what survives a restart: [`Pool::encode`] and
//! [`Pool::decode`] in the shared codec (little-endian, bounded, trailing
//! bytes refused); the driver writes the bytes to disk.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use shoal_proto::codec::{DecodeError, Reader, Writer};

use super::config::{PoolRange, MAX_POOL};
use super::Mac;

/// How long an offered address waits for the client's REQUEST.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long a declined address stays out of use.
pub const DECLINE_HOLD_SECS: u64 = 600;

const MAGIC: &[u8; 8] = b"SHLEASE1";
/// MAC, address, expiry.
const ENTRY_LEN: usize = 6 + 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Offered,
    Bound,
    Declined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    /// None once declined: nobody holds it.
    mac: Option<Mac>,
    /// Unix seconds.
    expires: u64,
    state: State,
}

/// Why the pool refused to bind an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// the address is not in the pool's range
    NotInPool,
    /// another client holds it, it was declined, or a node owns it
    Taken,
}

/// The pool's leases. Times are Unix seconds, passed in.
#[derive(Debug, Clone)]
pub struct Pool {
    range: PoolRange,
    leases: BTreeMap<Ipv4Addr, Lease>,
    by_mac: HashMap<Mac, Ipv4Addr>,
}

impl Pool {
    pub fn new(range: PoolRange) -> Self {
        Pool { range, leases: BTreeMap::new(), by_mac: HashMap::new() }
    }

    /// Whether `mac` may have `ip` now: nobody else holds it, or their
    /// hold has run out.
    fn is_free_for(&self, ip: Ipv4Addr, mac: Mac, now: u64) -> bool {
        match self.leases.get(&ip) {
            None => true,
            Some(l) => (l.mac == Some(mac) && l.state != State::Declined) || l.expires <= now,
        }
    }

    /// Picks an address for `mac` and holds it. `reserved` says which
    /// addresses belong to registered nodes; it is asked only about
    /// candidates, lowest first.
    pub fn offer(
        &mut self,
        mac: Mac,
        wanted: Option<Ipv4Addr>,
        now: u64,
        reserved: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let usable = |ip: Ipv4Addr| self.range.contains(ip) && self.is_free_for(ip, mac, now) && !reserved(ip);
        let ip = self
            .by_mac
            .get(&mac)
            .copied()
            .filter(|&ip| usable(ip))
            .or_else(|| wanted.filter(|&ip| usable(ip)))
            .or_else(|| self.range.iter().find(|ip| !self.leases.contains_key(ip) && !reserved(*ip)))
            .or_else(|| self.range.iter().find(|&ip| usable(ip)))?;
        match self.leases.get(&ip) {
            // Already bound to this client: an offer does not shorten it.
            Some(l) if l.mac == Some(mac) && l.state == State::Bound && l.expires > now => {}
            _ => self.take(ip, mac, now.saturating_add(OFFER_HOLD_SECS), State::Offered),
        }
        Some(ip)
    }

    /// Binds `ip` to `mac` until `now + lease_secs`.
    pub fn bind(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        now: u64,
        lease_secs: u64,
        reserved: &dyn Fn(Ipv4Addr) -> bool,
    ) -> Result<(), Refusal> {
        if !self.range.contains(ip) {
            return Err(Refusal::NotInPool);
        }
        if !self.is_free_for(ip, mac, now) || reserved(ip) {
            return Err(Refusal::Taken);
        }
        self.take(ip, mac, now.saturating_add(lease_secs), State::Bound);
        Ok(())
    }

    fn take(&mut self, ip: Ipv4Addr, mac: Mac, expires: u64, state: State) {
        if let Some(old) = self.leases.get(&ip).and_then(|l| l.mac).filter(|&old| old != mac) {
            self.by_mac.remove(&old);
        }
        if let Some(prev) = self.by_mac.insert(mac, ip).filter(|&prev| prev != ip) {
            self.leases.remove(&prev);
        }
        self.leases.insert(ip, Lease { mac: Some(mac), expires, state });
    }

    /// The client gives `ip` back. True if that changed a bound lease.
    pub fn release(&mut self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        match self.leases.get_mut(&ip) {
            Some(l) if l.mac == Some(mac) && l.state == State::Bound && l.expires > now => {
                l.expires = now;
                true
            }
            _ => false,
        }
    }

    /// The client found `ip` in use: keep it out of use for a while. True
    /// if the client held it.
    pub fn decline(&mut self, mac: Mac, ip: Ipv4Addr, now: u64) -> bool {
        match self.leases.get_mut(&ip) {
            Some(l) if l.mac == Some(mac) && l.state != State::Declined => {
                *l = Lease { mac: None, expires: now.saturating_add(DECLINE_HOLD_SECS), state: State::Declined };
                self.by_mac.remove(&mac);
                true
            }
            _ => false,
        }
    }

    /// The address `mac` holds or last held, and when that runs out.
    pub fn lease_of(&self, mac: Mac) -> Option<(Ipv4Addr, u64)> {
        let ip = *self.by_mac.get(&mac)?;
        self.leases.get(&ip).map(|l| (ip, l.expires))
    }

    /// The bound leases (expired ones too: they remember who had what).
    pub fn encode(&self) -> Vec<u8> {
        let bound: Vec<_> = self.leases.iter().filter(|(_, l)| l.state == State::Bound).collect();
        let mut w = Writer::new();
        w.raw(MAGIC);
        w.count(bound.len());
        for (ip, lease) in bound {
            w.raw(lease.mac.map(|m| m.0).unwrap_or_default().as_slice());
            w.u32(u32::from(*ip));
            w.u64(lease.expires);
        }
        w.into_bytes()
    }

    /// A pool with the leases `bytes` hold. Leases outside `range` (the
    /// range may have changed since they were written) are dropped.
    pub fn decode(range: PoolRange, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.array::<8>("lease file magic")? != *MAGIC {
            return Err(DecodeError::BadMagic("lease file"));
        }
        let n = r.count(MAX_POOL, ENTRY_LEN, "lease count")?;
        let mut pool = Pool::new(range);
        for _ in 0..n {
            let mac = Mac(r.array("lease mac")?);
            let ip = Ipv4Addr::from(r.u32("lease address")?);
            let expires = r.u64("lease expiry")?;
            if pool.leases.contains_key(&ip) || pool.by_mac.contains_key(&mac) {
                return Err(DecodeError::Invalid("lease repeated"));
            }
            if range.contains(ip) {
                pool.take(ip, mac, expires, State::Bound);
            }
        }
        r.finish("lease file")?;
        Ok(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);

    fn pool() -> Pool {
        Pool::new(PoolRange { first: Ipv4Addr::new(10, 0, 0, 100), last: Ipv4Addr::new(10, 0, 0, 101) })
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    const NONE: &dyn Fn(Ipv4Addr) -> bool = &|_| false;

    #[test]
    fn offers_lowest_free_and_skips_reserved_and_held_addresses() {
        let mut p = pool();
        assert_eq!(p.offer(A, None, 0, &|a| a == ip(100)), Some(ip(101)));
        assert_eq!(p.offer(B, None, 0, NONE), Some(ip(100)));
        assert_eq!(p.offer(Mac([9; 6]), None, 0, NONE), None, "both held");
        // The hold runs out, and the address can go to someone else.
        assert_eq!(p.offer(Mac([9; 6]), None, OFFER_HOLD_SECS + 1, NONE), Some(ip(100)));
    }

    #[test]
    fn a_client_gets_its_last_address_back_after_release() {
        let mut p = pool();
        assert_eq!(p.offer(A, Some(ip(101)), 0, NONE), Some(ip(101)));
        p.bind(A, ip(101), 1, 100, NONE).unwrap();
        assert_eq!(p.bind(B, ip(101), 2, 100, NONE), Err(Refusal::Taken));
        assert_eq!(p.bind(B, ip(7), 2, 100, NONE), Err(Refusal::NotInPool));
        assert!(p.release(A, ip(101), 3));
        assert_eq!(p.offer(A, None, 4, NONE), Some(ip(101)));
    }

    #[test]
    fn a_declined_address_is_not_offered_again_for_a_while() {
        let mut p = pool();
        p.bind(A, ip(100), 0, 100, NONE).unwrap();
        assert!(p.decline(A, ip(100), 1));
        assert_eq!(p.offer(A, Some(ip(100)), 2, NONE), Some(ip(101)));
        assert_eq!(p.bind(B, ip(100), 3, 100, NONE), Err(Refusal::Taken));
        assert_eq!(p.bind(B, ip(100), 2 + DECLINE_HOLD_SECS, 100, NONE), Ok(()));
    }

    #[test]
    fn bound_leases_survive_encode_and_decode_and_garbage_is_refused() {
        let mut p = pool();
        p.bind(A, ip(101), 0, 500, NONE).unwrap();
        p.offer(B, None, 0, NONE);
        let bytes = p.encode();
        let q = Pool::decode(p.range, &bytes).unwrap();
        assert_eq!(q.lease_of(A), Some((ip(101), 500)));
        assert_eq!(q.lease_of(B), None, "offers are not persisted");
        for cut in 0..bytes.len() {
            assert!(Pool::decode(p.range, &bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Pool::decode(p.range, &long).is_err());
    }
}
