//! The sender's pacing: a token bucket that spends bytes at the current
//! rate, and the additive-increase / multiplicative-decrease rule that moves
//! the rate between a floor and the configured ceiling.
//!
//! The loss signal is the re-send ratio of one control interval: blocks
//! that receivers' `RequestBlocks` made pending again (each block counted
//! once however many receivers asked, which is what suppression leaves the
//! sender to see) over blocks sent. Every control interval:
//!
//! - excess ≥ [`DECREASE_AT`] and ≥ half the baseline, or ratio ≥
//!   [`OVERLOAD_AT`]: rate × 3/4, not below the floor;
//! - excess ≤ [`INCREASE_AT`] and the bucket, not the work set, limited the
//!   interval: rate + ceiling / 32, not above the ceiling;
//! - otherwise, or with fewer than [`MIN_SAMPLE`] blocks sent: hold.
//!
//! The excess is the ratio over the lowest ratio of the last
//! [`BASELINE_INTERVALS`] intervals: loss that stays the same whatever the
//! rate (a lossy link, a flaky port) is not a sign of sending too fast, and
//! backing off for it only makes every receiver wait; loss that rises with
//! the rate is. Past [`OVERLOAD_AT`] the rate falls regardless.
//!
//! The decrease is gentler than TCP's halving because much of the loss on
//! an imaging network is a slow port or a busy receiver rather than a full
//! queue, and a floor keeps one lossy receiver from stopping everyone. The
//! pacer knows nothing of chunks or receivers, and reads no clock.

use std::time::Duration;

use super::Time;

const NANOS: u128 = 1_000_000_000;

/// Re-send ratio at or above which the rate falls: 1 in 20.
pub(crate) const DECREASE_AT: (u64, u64) = (1, 20);
/// Re-send ratio at or below which the rate may rise: 1 in 100.
pub(crate) const INCREASE_AT: (u64, u64) = (1, 100);
/// Re-send ratio at or above which the rate falls whatever the baseline.
pub(crate) const OVERLOAD_AT: (u64, u64) = (1, 2);
/// Intervals whose lowest ratio is the baseline loss.
pub(crate) const BASELINE_INTERVALS: usize = 10;
/// Blocks an interval must have sent for its ratio to mean anything.
pub(crate) const MIN_SAMPLE: u64 = 16;

/// Spends units (bytes, or requests) at `rate` per second with up to `cap`
/// saved up. Credit is kept in unit-nanoseconds so no fraction is lost.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: u64,
    cap: u64,
    credit: u128,
    last: Time,
}

impl TokenBucket {
    /// A bucket that starts full.
    pub(crate) fn new(rate: u64, cap: u64, now: Time) -> TokenBucket {
        TokenBucket { rate, cap, credit: u128::from(cap) * NANOS, last: now }
    }

    fn refill(&mut self, now: Time) {
        let earned = now.saturating_since(self.last).as_nanos().saturating_mul(u128::from(self.rate));
        self.credit = self.credit.saturating_add(earned).min(u128::from(self.cap) * NANOS);
        if now > self.last {
            self.last = now;
        }
    }

    /// Whether `n` units are available now (spending nothing).
    pub(crate) fn has(&mut self, now: Time, n: u64) -> bool {
        self.refill(now);
        self.credit >= u128::from(n) * NANOS
    }

    /// Spends `n` units if they are available.
    pub(crate) fn take(&mut self, now: Time, n: u64) -> bool {
        let ok = self.has(now, n);
        if ok {
            self.credit -= u128::from(n) * NANOS;
        }
        ok
    }

    /// Spends `n` units or whatever is left, for traffic that must go.
    pub(crate) fn force(&mut self, now: Time, n: u64) {
        self.refill(now);
        self.credit = self.credit.saturating_sub(u128::from(n) * NANOS);
    }

    /// When `n` units will be available, assuming nothing else is spent.
    pub(crate) fn ready_at(&self, n: u64) -> Time {
        let need = (u128::from(n) * NANOS).saturating_sub(self.credit);
        let wait = need.div_ceil(u128::from(self.rate.max(1)));
        self.last + Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
    }

    pub(crate) fn set_rate(&mut self, now: Time, rate: u64, cap: u64) {
        self.refill(now);
        self.rate = rate;
        self.cap = cap;
        self.credit = self.credit.min(u128::from(cap) * NANOS);
    }
}

/// Limits of the rate controller, in bytes per second.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateLimits {
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) burst: Duration,
    pub(crate) interval: Duration,
}

/// The token bucket for block bytes and the rule that sets its rate.
#[derive(Clone, Debug)]
pub(crate) struct Pacer {
    limits: RateLimits,
    rate: u64,
    bucket: TokenBucket,
    next_control: Time,
    sent: u64,
    resent: u64,
    limited: bool,
    /// Re-send ratios (parts per million) of the last intervals that sent
    /// enough to judge, newest last.
    history: std::collections::VecDeque<u64>,
}

/// What one control step did, for the sender's statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Hold,
    Increase,
    Decrease,
}

impl Pacer {
    pub(crate) fn new(limits: RateLimits, initial: u64, now: Time) -> Pacer {
        let bucket = TokenBucket::new(initial, burst_bytes(initial, limits.burst), now);
        let next_control = now + limits.interval;
        let history = std::collections::VecDeque::with_capacity(BASELINE_INTERVALS);
        Pacer { limits, rate: initial, bucket, next_control, sent: 0, resent: 0, limited: false, history }
    }

    pub(crate) fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether the bucket holds `reserve` bytes (the largest datagram), so
    /// a wake-up at [`Pacer::ready_at`] can always send. If not, notes that
    /// pacing, not a lack of work, held sending back.
    pub(crate) fn can_send(&mut self, now: Time, reserve: u64) -> bool {
        let ok = self.bucket.has(now, reserve);
        self.limited |= !ok;
        ok
    }

    /// Spends `bytes` for a block that went out.
    pub(crate) fn block_sent(&mut self, now: Time, bytes: u64) {
        self.bucket.force(now, bytes);
        self.sent += 1;
    }

    /// Spends `bytes` for a datagram that goes regardless (status).
    pub(crate) fn force_send(&mut self, now: Time, bytes: u64) {
        self.bucket.force(now, bytes);
    }

    /// When the bucket will hold `reserve` bytes.
    pub(crate) fn ready_at(&self, reserve: u64) -> Time {
        self.bucket.ready_at(reserve)
    }

    /// Counts blocks a receiver's request made pending again.
    pub(crate) fn on_resend(&mut self, blocks: u64) {
        self.resent += blocks;
    }

    pub(crate) fn next_control(&self) -> Time {
        self.next_control
    }

    /// Runs the control rule if its interval has passed.
    pub(crate) fn control(&mut self, now: Time) -> Option<Step> {
        if now < self.next_control {
            return None;
        }
        self.next_control = now + self.limits.interval;
        let (sent, resent, limited) = (self.sent, self.resent, self.limited);
        (self.sent, self.resent, self.limited) = (0, 0, false);
        let ppm = |(a, b): (u64, u64)| a * 1_000_000 / b;
        let step = if sent < MIN_SAMPLE {
            Step::Hold
        } else {
            let ratio = resent.saturating_mul(1_000_000) / sent;
            let baseline = self.history.iter().copied().min().unwrap_or(0);
            if self.history.len() == BASELINE_INTERVALS {
                self.history.pop_front();
            }
            self.history.push_back(ratio);
            // Over a lossy baseline, random spread alone is of its order:
            // a rise must also be half the baseline to count.
            let excess = ratio.saturating_sub(baseline);
            if excess >= ppm(DECREASE_AT).max(baseline / 2) || ratio >= ppm(OVERLOAD_AT) {
                Step::Decrease
            } else if excess <= ppm(INCREASE_AT) && limited {
                Step::Increase
            } else {
                Step::Hold
            }
        };
        let rate = match step {
            Step::Hold => self.rate,
            Step::Decrease => (self.rate / 4 * 3).max(self.limits.min),
            Step::Increase => self.rate.saturating_add(self.limits.max / 32).min(self.limits.max),
        };
        if rate != self.rate {
            self.rate = rate;
            self.bucket.set_rate(now, rate, burst_bytes(rate, self.limits.burst));
        }
        Some(step)
    }
}

/// A bucket big enough for `burst` at `rate`, and never less than two of
/// the largest datagrams so a slow rate still sends whole blocks.
fn burst_bytes(rate: u64, burst: Duration) -> u64 {
    let at_rate = u128::from(rate) * burst.as_nanos() / NANOS;
    u64::try_from(at_rate).unwrap_or(u64::MAX).max(2 * super::MAX_DATAGRAM as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> RateLimits {
        RateLimits { min: 100_000, max: 3_200_000, burst: 2 * MS, interval: 100 * MS }
    }

    #[test]
    fn bucket_spends_at_its_rate_and_says_when_it_refills() {
        let t0 = Time::from_nanos(5);
        let mut b = TokenBucket::new(1_000_000, 3000, t0);
        assert!(b.take(t0, 3000));
        assert!(!b.take(t0, 1));
        let at = b.ready_at(1000);
        assert_eq!(at, t0 + MS);
        assert!(!b.has(Time::from_nanos(at.as_nanos() - 1), 1000));
        assert!(b.take(at, 1000));
        // Credit never exceeds the cap however long it waits.
        assert!(!b.has(t0 + Duration::from_secs(3600), 3001));
    }

    fn interval(p: &mut Pacer, now: &mut Time, sent: u64, resent: u64) -> Option<Step> {
        for _ in 0..sent {
            p.block_sent(*now, 1);
        }
        p.limited = true;
        p.on_resend(resent);
        *now = *now + 100 * MS;
        p.control(*now)
    }

    #[test]
    fn rate_falls_on_resends_rises_when_clean_and_stays_in_bounds() {
        let mut now = Time::ZERO;
        let mut p = Pacer::new(limits(), 1_600_000, now);
        assert_eq!(interval(&mut p, &mut now, 100, 0), Some(Step::Increase));
        assert_eq!(p.rate(), 1_700_000);
        assert_eq!(interval(&mut p, &mut now, 100, 10), Some(Step::Decrease));
        assert_eq!(p.rate(), 1_275_000);
        assert_eq!(interval(&mut p, &mut now, 100, 3), Some(Step::Hold));
        assert_eq!(interval(&mut p, &mut now, 100, 1), Some(Step::Increase));
        assert_eq!(p.rate(), 1_375_000);
        assert_eq!(interval(&mut p, &mut now, 5, 5), Some(Step::Hold), "too few blocks to judge");
        for _ in 0..50 {
            interval(&mut p, &mut now, 100, 100);
        }
        assert_eq!(p.rate(), 100_000);
        for _ in 0..100 {
            interval(&mut p, &mut now, 100, 0);
        }
        assert_eq!(p.rate(), 3_200_000);
    }

    #[test]
    fn steady_loss_that_does_not_follow_the_rate_does_not_hold_it_down() {
        let mut now = Time::ZERO;
        let mut p = Pacer::new(limits(), 1_600_000, now);
        // 20% of blocks lost at every rate: the first interval counts as a
        // rise, after that it is the baseline and the rate climbs.
        assert_eq!(interval(&mut p, &mut now, 100, 20), Some(Step::Decrease));
        for _ in 0..100 {
            interval(&mut p, &mut now, 100, 20);
        }
        assert_eq!(p.rate(), 3_200_000);
        // Loss rising above that baseline is congestion again.
        assert_eq!(interval(&mut p, &mut now, 100, 30), Some(Step::Decrease));
    }

    #[test]
    fn rate_does_not_rise_while_the_work_set_is_what_limits_sending() {
        let mut now = Time::ZERO;
        let mut p = Pacer::new(limits(), 1_600_000, now);
        for _ in 0..100 {
            assert!(p.can_send(now, 1));
            p.block_sent(now, 1);
        }
        now = now + 100 * MS;
        assert_eq!(p.control(now), Some(Step::Hold));
        assert_eq!(p.control(now), None, "one step per interval");
    }

    #[test]
    fn a_slow_rate_still_bursts_whole_datagrams() {
        assert_eq!(burst_bytes(1, Duration::from_secs(1)), 2 * crate::mcast::MAX_DATAGRAM as u64);
        assert_eq!(burst_bytes(10_000_000, 2 * MS), 20_000);
    }
}
