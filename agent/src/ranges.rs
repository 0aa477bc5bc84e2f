//! Sets of byte ranges: what a capture reads, what a deploy must zero.

/// A half-open byte range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub fn new(start: u64, end: u64) -> Self {
        debug_assert!(start <= end);
        Range { start, end }
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// Sorted, non-overlapping, non-adjacent ranges. Inserting merges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// Adds `[start, end)`, merging with anything it touches. Appending in
    /// ascending order (the common case) is amortised O(1).
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if start > last.end {
                self.ranges.push(Range::new(start, end));
                return;
            }
            if start >= last.start {
                last.end = last.end.max(end);
                return;
            }
        } else {
            self.ranges.push(Range::new(start, end));
            return;
        }
        // Out of order: find the first range that ends at or after `start`.
        let i = self.ranges.partition_point(|r| r.end < start);
        let mut j = i;
        let mut new = Range::new(start, end);
        while j < self.ranges.len() && self.ranges[j].start <= new.end {
            new.start = new.start.min(self.ranges[j].start);
            new.end = new.end.max(self.ranges[j].end);
            j += 1;
        }
        self.ranges.splice(i..j, std::iter::once(new));
    }

    /// Adds every range of `other`, shifted by `offset`.
    pub fn insert_shifted(&mut self, other: &RangeSet, offset: u64) {
        for r in other.iter() {
            self.insert(r.start + offset, r.end + offset);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Range> + '_ {
        self.ranges.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(Range::len).sum()
    }

    /// The parts of `[start, end)` this set covers, in order.
    pub fn clip(&self, start: u64, end: u64) -> impl Iterator<Item = Range> + '_ {
        let i = self.ranges.partition_point(|r| r.end <= start);
        self.ranges[i..]
            .iter()
            .take_while(move |r| r.start < end)
            .map(move |r| Range::new(r.start.max(start), r.end.min(end)))
    }

    /// The parts of `[start, end)` this set does not cover, in order.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<Range> {
        let mut out = Vec::new();
        let mut at = start;
        for r in self.clip(start, end) {
            if r.start > at {
                out.push(Range::new(at, r.start));
            }
            at = r.end;
        }
        if at < end {
            out.push(Range::new(at, end));
        }
        out
    }
}

impl FromIterator<(u64, u64)> for RangeSet {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        let mut set = RangeSet::new();
        for (s, e) in iter {
            set.insert(s, e);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_overlapping_and_adjacent_in_any_order() {
        let set: RangeSet = [(10, 20), (30, 40), (20, 25), (5, 8), (35, 50), (0, 1)].into_iter().collect();
        let got: Vec<_> = set.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(got, vec![(0, 1), (5, 8), (10, 25), (30, 50)]);
        assert_eq!(set.total(), 1 + 3 + 15 + 20);
    }

    #[test]
    fn insert_spanning_many_collapses_them() {
        let mut set: RangeSet = [(0, 2), (4, 6), (8, 10), (20, 30)].into_iter().collect();
        set.insert(1, 9);
        let got: Vec<_> = set.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(got, vec![(0, 10), (20, 30)]);
    }

    #[test]
    fn clip_and_gaps_partition_a_window() {
        let set: RangeSet = [(10, 20), (30, 40)].into_iter().collect();
        let clip: Vec<_> = set.clip(15, 35).map(|r| (r.start, r.end)).collect();
        assert_eq!(clip, vec![(15, 20), (30, 35)]);
        let gaps: Vec<_> = set.gaps(0, 50).iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(gaps, vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(set.gaps(12, 18), vec![]);
    }
}
