//! A token bucket per MAC, so one client (or one spoofer) flooding the
//! server cannot crowd out the others.
//!
//! Each MAC may send [`RateLimit::burst`] datagrams at once and
//! [`RateLimit::per_second`] sustained. At most [`RateLimit::max_clients`]
//! buckets exist; when the table is full, buckets that have refilled (their
//! MAC has been quiet) are forgotten, and if none has, the new MAC is
//! refused until one does. A clock that steps back counts as no time passing.

use std::collections::HashMap;

use super::config::RateLimit;
use super::Mac;

/// Tokens are counted in thousandths so refill needs no floating point.
const TOKEN: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// In thousandths of a datagram.
    tokens: u64,
    /// Milliseconds since the Unix epoch.
    last: u64,
}

/// Per-MAC token buckets. Time is passed in, in milliseconds.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<Mac, Bucket>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter { limit, buckets: HashMap::new() }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limit.burst) * TOKEN
    }

    fn refilled(&self, b: Bucket, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(b.last);
        b.tokens.saturating_add(elapsed.saturating_mul(u64::from(self.limit.per_second))).min(self.capacity())
    }

    /// Whether a datagram from `mac` may be served now; takes a token if so.
    pub fn allow(&mut self, mac: Mac, now_ms: u64) -> bool {
        if !self.buckets.contains_key(&mac) && self.buckets.len() >= self.limit.max_clients {
            let cap = self.capacity();
            let full: Vec<Mac> =
                self.buckets.iter().filter(|(_, &b)| self.refilled(b, now_ms) >= cap).map(|(&m, _)| m).collect();
            for m in full {
                self.buckets.remove(&m);
            }
            if self.buckets.len() >= self.limit.max_clients {
                return false;
            }
        }
        let fresh = Bucket { tokens: self.capacity(), last: now_ms };
        let bucket = self.buckets.get(&mac).copied().unwrap_or(fresh);
        let tokens = self.refilled(bucket, now_ms);
        let (allowed, tokens) = match tokens.checked_sub(TOKEN) {
            Some(left) => (true, left),
            None => (false, tokens),
        };
        self.buckets.insert(mac, Bucket { tokens, last: now_ms.max(bucket.last) });
        allowed
    }

    /// MACs being tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_clients: usize) -> RateLimiter {
        RateLimiter::new(RateLimit { burst: 3, per_second: 2, max_clients })
    }

    #[test]
    fn a_burst_passes_then_the_sustained_rate() {
        let mut l = limiter(10);
        let m = Mac([1; 6]);
        assert!((0..3).all(|_| l.allow(m, 1000)));
        assert!(!l.allow(m, 1000));
        assert!(!l.allow(m, 1400), "0.8 of a token is not enough");
        assert!(l.allow(m, 1500));
        assert!(l.allow(Mac([2; 6]), 1500), "another MAC is not affected");
    }

    #[test]
    fn a_full_table_forgets_quiet_macs_and_refuses_while_all_are_busy() {
        let mut l = limiter(2);
        for i in 0..2u8 {
            for _ in 0..3 {
                l.allow(Mac([i; 6]), 0);
            }
        }
        assert!(!l.allow(Mac([7; 6]), 0), "table full of busy MACs");
        assert!(l.allow(Mac([7; 6]), 10_000), "quiet MACs were forgotten");
        assert!(l.tracked() <= 2);
    }

    #[test]
    fn a_clock_stepping_back_does_not_refill() {
        let mut l = limiter(10);
        let m = Mac([1; 6]);
        assert!((0..3).all(|_| l.allow(m, 50_000)));
        assert!(!l.allow(m, 1_000));
        assert!(!l.allow(m, 50_000));
    }
}
