//! Per-client request rate: a token bucket for each client address, on the
//! caller's clock.
//!
//! Each address may make `burst` requests at once and `per_second` after
//! that. The table of addresses is bounded: when it is full, addresses
//! whose buckets have refilled are forgotten (they are indistinguishable
//! from new ones), and if none has, a new address is refused until one
//! does. A flood from many spoofed addresses can therefore shut new
//! clients out for about `burst / per_second` seconds, but cannot grow
//! memory. No I/O, no clock of its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// How many requests a client address may make.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests a quiet client may make at once.
    pub burst: u32,
    /// Requests per second after the burst.
    pub per_second: u32,
    /// Client addresses tracked at most.
    pub max_clients: usize,
}

impl Default for RateLimit {
    /// Room for a pxelinux client probing a dozen config names, and for a
    /// rack of clients booting together.
    fn default() -> Self {
        RateLimit { burst: 64, per_second: 16, max_clients: 4096 }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every client seen lately.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter { limit, buckets: HashMap::new() }
    }

    /// Whether `client` may make a request at `now`; takes a token if so.
    pub fn allow(&mut self, now: Instant, client: IpAddr) -> bool {
        let burst = f64::from(self.limit.burst);
        if !self.buckets.contains_key(&client) && self.buckets.len() >= self.limit.max_clients {
            self.forget_full(now);
            if self.buckets.len() >= self.limit.max_clients {
                return false;
            }
        }
        let rate = f64::from(self.limit.per_second);
        let b = self.buckets.entry(client).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops every bucket that has refilled by `now`.
    fn forget_full(&mut self, now: Instant) {
        let (burst, rate) = (f64::from(self.limit.burst), f64::from(self.limit.per_second));
        self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_burst_is_allowed_then_requests_come_at_the_rate() {
        let mut l = RateLimiter::new(RateLimit { burst: 3, per_second: 2, max_clients: 10 });
        let t0 = Instant::now();
        assert_eq!((0..5).map(|_| l.allow(t0, ip(1))).collect::<Vec<_>>(), [true, true, true, false, false]);
        assert!(l.allow(t0, ip(2)), "another client has its own bucket");
        assert!(!l.allow(t0 + Duration::from_millis(400), ip(1)));
        assert!(l.allow(t0 + Duration::from_millis(500), ip(1)));
        assert!(!l.allow(t0 + Duration::from_millis(500), ip(1)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..4).filter(|_| l.allow(later, ip(1))).count(), 3, "tokens never exceed the burst");
    }

    #[test]
    fn the_table_of_clients_stays_bounded() {
        let mut l = RateLimiter::new(RateLimit { burst: 2, per_second: 1, max_clients: 4 });
        let t0 = Instant::now();
        for n in 0..4 {
            assert!(l.allow(t0, ip(n)));
        }
        assert!(!l.allow(t0, ip(9)), "a full table refuses a new client");
        assert_eq!(l.tracked(), 4);
        assert!(l.allow(t0 + Duration::from_secs(2), ip(9)), "refilled buckets are forgotten");
        assert_eq!(l.tracked(), 1);
    }
}
