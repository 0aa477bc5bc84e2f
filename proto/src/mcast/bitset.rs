//! A fixed-length set of block indices, one bit each: the sender's pending
//! blocks of a chunk, the receiver's received blocks; and [`Recent`], the
//! indices touched lately (blocks just sent, blocks just asked for).
//!
//! Range operations work a word at a time, so marking a whole chunk of
//! three thousand blocks costs fifty word writes. Indices past the length
//! are never set: every operation clamps to it.

use std::time::Duration;

use super::Time;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BitSet {
    words: Vec<u64>,
    len: u32,
    ones: u32,
}

impl BitSet {
    pub(crate) fn new(len: u32) -> BitSet {
        BitSet { words: vec![0; len.div_ceil(64) as usize], len, ones: 0 }
    }

    /// How many indices are set.
    pub(crate) fn count(&self) -> u32 {
        self.ones
    }

    pub(crate) fn is_full(&self) -> bool {
        self.ones == self.len
    }

    pub(crate) fn contains(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets `i`; true if it was not set before.
    pub(crate) fn insert(&mut self, i: u32) -> bool {
        self.insert_range(i, i.saturating_add(1)) == 1
    }

    /// Clears `i`; true if it was set.
    pub(crate) fn remove(&mut self, i: u32) -> bool {
        if !self.contains(i) {
            return false;
        }
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        self.ones -= 1;
        true
    }

    /// Sets `[start, end)` (clamped to the length); returns how many
    /// indices were newly set.
    pub(crate) fn insert_range(&mut self, start: u32, end: u32) -> u32 {
        self.insert_range_except(start, end, &[])
    }

    /// Sets the indices of `[start, end)` that none of `except` holds;
    /// returns how many were newly set.
    pub(crate) fn insert_range_except(&mut self, start: u32, end: u32, except: &[&BitSet]) -> u32 {
        let end = end.min(self.len);
        let mut newly = 0;
        let mut i = start;
        while i < end {
            let w = (i / 64) as usize;
            let lo = i % 64;
            let hi = (end - (i - lo)).min(64);
            let mut mask = if hi - lo == 64 { u64::MAX } else { ((1u64 << (hi - lo)) - 1) << lo };
            mask &= !except.iter().fold(0, |acc, o| acc | o.words.get(w).copied().unwrap_or(0));
            newly += (mask & !self.words[w]).count_ones();
            self.words[w] |= mask;
            i = i - lo + 64;
        }
        self.ones += newly;
        newly
    }

    /// Sets every index; returns how many were newly set.
    #[cfg(test)]
    pub(crate) fn fill(&mut self) -> u32 {
        self.insert_range(0, self.len)
    }

    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
        self.ones = 0;
    }

    /// The first set index at or after `from`.
    pub(crate) fn next_one(&self, from: u32) -> Option<u32> {
        self.next_matching(from, |_, w| w)
    }

    /// Indices set in neither this set nor any of `others`, ascending.
    /// Words an other set lacks count as empty.
    pub(crate) fn zeros_outside<'a>(&'a self, others: &'a [&'a BitSet]) -> impl Iterator<Item = u32> + 'a {
        let mut at = 0u32;
        std::iter::from_fn(move || {
            let taken = |w: usize| others.iter().fold(0, |acc, o| acc | o.words.get(w).copied().unwrap_or(0));
            let i = self.next_matching(at, |w, word| !(word | taken(w)))?;
            at = i + 1;
            Some(i)
        })
    }

    /// The first index at or after `from` whose bit in `f(word index,
    /// word)` is set, scanning a word at a time.
    fn next_matching(&self, from: u32, f: impl Fn(usize, u64) -> u64) -> Option<u32> {
        let mut i = from;
        while i < self.len {
            let w = (i / 64) as usize;
            let bits = f(w, self.words[w]) & (u64::MAX << (i % 64));
            if bits != 0 {
                let found = (w as u32) * 64 + bits.trailing_zeros();
                return (found < self.len).then_some(found);
            }
            i = (w as u32 + 1) * 64;
        }
        None
    }
}

/// Indices marked lately: two generations, so an index stays marked for
/// between one and two periods after it was marked.
#[derive(Clone, Debug)]
pub(crate) struct Recent {
    current: BitSet,
    previous: BitSet,
    since: Time,
}

impl Recent {
    pub(crate) fn new(len: u32, now: Time) -> Recent {
        Recent { current: BitSet::new(len), previous: BitSet::new(len), since: now }
    }

    /// Rotates the generations up to `now`; call before reading or
    /// marking. Generations span whole periods from the first mark, so
    /// however rarely this is called, a mark is forgotten at the first call
    /// between one and two periods after it was made.
    pub(crate) fn age(&mut self, now: Time, period: Duration) {
        let elapsed = now.saturating_since(self.since);
        if elapsed < period {
            return;
        }
        if elapsed >= period.saturating_mul(2) {
            self.previous.clear();
            self.since = now;
        } else {
            std::mem::swap(&mut self.previous, &mut self.current);
            self.since = self.since + period;
        }
        self.current.clear();
    }

    pub(crate) fn mark(&mut self, start: u32, end: u32) {
        self.current.insert_range(start, end);
    }

    /// Both generations, to pass as `except` or `others`.
    pub(crate) fn sets(&self) -> [&BitSet; 2] {
        [&self.current, &self.previous]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_count_only_new_bits_and_clamp_to_the_length() {
        let mut b = BitSet::new(130);
        assert_eq!(b.insert_range(10, 70), 60);
        assert_eq!(b.insert_range(60, 200), 60);
        assert_eq!(b.count(), 120);
        assert!(b.contains(129) && !b.contains(130) && !b.contains(9));
        assert!(!b.insert(10) && b.insert(0));
        assert!(b.remove(0) && !b.remove(0) && !b.remove(500));
        assert_eq!(b.fill(), 10);
        assert!(b.is_full());
        b.clear();
        assert_eq!((b.count(), b.next_one(0)), (0, None));
    }

    #[test]
    fn scans_find_ones_and_zeros_across_words() {
        let mut b = BitSet::new(200);
        b.insert_range(0, 64);
        b.insert(130);
        assert_eq!(b.next_one(64), Some(130));
        assert_eq!(b.next_one(131), None);
        let mut asked = BitSet::new(200);
        asked.insert_range(64, 130);
        asked.insert_range(131, 199);
        assert_eq!(b.zeros_outside(&[&asked]).collect::<Vec<_>>(), vec![199]);
        assert_eq!(b.zeros_outside(&[]).count(), 200 - 65);
    }

    #[test]
    fn insert_range_except_skips_what_the_others_hold() {
        let mut b = BitSet::new(100);
        let mut held = BitSet::new(100);
        held.insert_range(10, 90);
        assert_eq!(b.insert_range_except(0, 100, &[&held]), 20);
        assert!(b.contains(9) && !b.contains(10) && b.contains(90));
    }

    #[test]
    fn recent_marks_last_between_one_and_two_periods() {
        let period = Duration::from_millis(10);
        let t = |ms| Time::ZERO + Duration::from_millis(ms);
        let held = |r: &Recent, i| r.sets().iter().any(|s| s.contains(i));
        let mut r = Recent::new(8, t(0));
        r.mark(1, 2);
        r.age(t(9), period);
        assert!(held(&r, 1));
        r.age(t(15), period);
        r.mark(2, 3);
        assert!(held(&r, 1), "one period on, still there");
        r.age(t(20), period);
        assert!(!held(&r, 1), "two periods on, gone however late the first rotation was");
        assert!(held(&r, 2));
        r.age(t(100), period);
        assert!(!held(&r, 2), "a long pause forgets everything");
        // A mark made late in a generation still lasts at least a period.
        let mut r = Recent::new(8, t(0));
        r.mark(3, 4);
        r.age(t(19), period);
        r.mark(4, 5);
        r.age(t(28), period);
        assert!(held(&r, 4) && !held(&r, 3));
    }

    #[test]
    fn an_empty_set_is_empty_and_full() {
        let mut b = BitSet::new(0);
        assert!(b.is_full());
        assert_eq!((b.fill(), b.next_one(0), b.zeros_outside(&[]).count()), (0, None, 0));
    }
}
