//! The sender's work set: which blocks of which chunks still have to go
//! out, merged across every request heard.
//!
//! Each chunk has one bit per block and is queued at most once, so any
//! number of receivers asking for the same blocks costs one transmission,
//! and memory is bounded by the image (one bit per block) whatever arrives.
//!
//! Order: two first-come-first-served queues, repairs (chunks made pending
//! by `RequestBlocks`) ahead of fresh chunks (`RequestChunks`), one chunk at
//! a time and its blocks in index order from where the last one left off.
//! Receivers hold only a few partial chunks, and a partial waiting for a
//! repair blocks a receiver's memory, so completing chunks beats starting
//! them. Repairs cannot starve fresh chunks for long: each repair is a chunk
//! someone holds in part, the guard below stops a block being repaired more
//! than once per guard time, and a chunk in either queue waits at most one
//! pass over that queue.
//!
//! Blocks sent within the last `guard` are taken to be still on their way
//! to whoever asks for them again: a request races the data when two
//! receivers ask for the same chunk a moment apart, and re-queueing would
//! send it twice. A receiver that really lost such a block asks again after
//! its suppression time, by which point the guard has run out. The work set
//! does not validate requests; the sender checks indices against the image
//! before calling it.

use std::collections::VecDeque;
use std::time::Duration;

use super::bitset::{BitSet, Recent};
use super::wire::IndexRanges;
use super::Time;

#[derive(Clone, Debug)]
struct ChunkWork {
    /// Allocated on first request.
    pending: Option<BitSet>,
    /// Blocks sent within one to two guard times; allocated on first send.
    sent: Option<Recent>,
    blocks: u32,
    /// Where the next block is looked for, so re-requested blocks behind
    /// it wait for the rest of the pass.
    cursor: u32,
    queued: Option<Queue>,
}

/// Which queue a request puts a chunk in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    Repair,
    Fresh,
}

#[derive(Clone, Debug)]
pub(crate) struct WorkSet {
    chunks: Vec<ChunkWork>,
    guard: Duration,
    repairs: VecDeque<u32>,
    fresh: VecDeque<u32>,
    pending_blocks: u64,
    /// Pending blocks of chunks in the repair queue.
    repair_blocks: u64,
}

impl WorkSet {
    /// A work set for chunks of the given block counts, nothing pending,
    /// that takes blocks sent within `guard` to be in flight.
    pub(crate) fn new(block_counts: impl IntoIterator<Item = u32>, guard: Duration) -> WorkSet {
        let chunks = block_counts
            .into_iter()
            .map(|blocks| ChunkWork { pending: None, sent: None, blocks, cursor: 0, queued: None })
            .collect();
        WorkSet { chunks, guard, repairs: VecDeque::new(), fresh: VecDeque::new(), pending_blocks: 0, repair_blocks: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.repairs.is_empty() && self.fresh.is_empty()
    }

    pub(crate) fn pending_blocks(&self) -> u64 {
        self.pending_blocks
    }

    /// Pending blocks that go out at repair priority.
    pub(crate) fn repair_blocks(&self) -> u64 {
        self.repair_blocks
    }

    pub(crate) fn queued_chunks(&self) -> usize {
        self.repairs.len() + self.fresh.len()
    }

    /// Makes every block of `chunk` not in flight pending; returns how
    /// many were not pending before.
    pub(crate) fn add_chunk(&mut self, now: Time, chunk: u32) -> u32 {
        self.add(now, chunk, Queue::Fresh, |bits, sent| bits.insert_range_except(0, u32::MAX, sent))
    }

    /// Makes the given blocks of `chunk` pending unless in flight; returns
    /// how many were not pending before.
    pub(crate) fn add_blocks(&mut self, now: Time, chunk: u32, blocks: &IndexRanges) -> u32 {
        let mark = |bits: &mut BitSet, sent: &[&BitSet]| {
            blocks.ranges().map(|r| bits.insert_range_except(r.start, r.end, sent)).sum()
        };
        self.add(now, chunk, Queue::Repair, mark)
    }

    fn add(&mut self, now: Time, chunk: u32, queue: Queue, mark: impl FnOnce(&mut BitSet, &[&BitSet]) -> u32) -> u32 {
        let Some(w) = self.chunks.get_mut(chunk as usize) else {
            return 0;
        };
        let bits = w.pending.get_or_insert_with(|| BitSet::new(w.blocks));
        if bits.is_full() {
            return 0;
        }
        let newly = match w.sent.as_mut() {
            Some(sent) => {
                sent.age(now, self.guard);
                mark(bits, &sent.sets())
            }
            None => mark(bits, &[]),
        };
        self.pending_blocks += u64::from(newly);
        if newly > 0 && w.queued.is_none() {
            w.queued = Some(queue);
            match queue {
                Queue::Repair => self.repairs.push_back(chunk),
                Queue::Fresh => self.fresh.push_back(chunk),
            }
        }
        if w.queued == Some(Queue::Repair) {
            self.repair_blocks += u64::from(newly);
        }
        newly
    }

    /// Takes the next block to send at `now`: `(chunk, block)`.
    /// Whether [`WorkSet::next`] would give the first block of a chunk not
    /// under way: no repairs queued, and the next fresh chunk not begun.
    pub(crate) fn next_starts_chunk(&self) -> bool {
        self.repairs.is_empty() && self.fresh.front().is_some_and(|&c| self.chunks[c as usize].cursor == 0)
    }

    pub(crate) fn next(&mut self, now: Time) -> Option<(u32, u32)> {
        loop {
            let queue = if self.repairs.is_empty() { &mut self.fresh } else { &mut self.repairs };
            let &chunk = queue.front()?;
            let w = &mut self.chunks[chunk as usize];
            let found = w.pending.as_mut().and_then(|bits| {
                let block = bits.next_one(w.cursor).or_else(|| bits.next_one(0))?;
                bits.remove(block);
                Some((block, bits.count()))
            });
            let Some((block, left)) = found else {
                // Queued chunks always have a pending block; recover if not.
                Self::finish_head(queue, w);
                continue;
            };
            let sent = w.sent.get_or_insert_with(|| Recent::new(w.blocks, now));
            sent.age(now, self.guard);
            sent.mark(block, block + 1);
            self.pending_blocks -= 1;
            if w.queued == Some(Queue::Repair) {
                self.repair_blocks -= 1;
            }
            w.cursor = block + 1;
            if left == 0 {
                Self::finish_head(queue, w);
            }
            return Some((chunk, block));
        }
    }

    fn finish_head(queue: &mut VecDeque<u32>, w: &mut ChunkWork) {
        queue.pop_front();
        w.queued = None;
        w.cursor = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Time = Time::ZERO;
    const GUARD: Duration = Duration::from_millis(5);

    fn drain(w: &mut WorkSet) -> Vec<(u32, u32)> {
        std::iter::from_fn(|| w.next(T)).collect()
    }

    fn new(blocks: &[u32]) -> WorkSet {
        WorkSet::new(blocks.iter().copied(), Duration::ZERO)
    }

    #[test]
    fn requests_for_the_same_blocks_merge_into_one_transmission() {
        let mut w = new(&[3, 2, 4]);
        assert_eq!(w.add_chunk(T, 2), 4);
        assert_eq!(w.add_chunk(T, 2), 0);
        assert_eq!(w.add_blocks(T, 2, &IndexRanges::from_ascending([1, 2])), 0);
        assert_eq!(w.add_chunk(T, 0), 3);
        assert_eq!(w.add_blocks(T, 0, &IndexRanges::from_ascending([1])), 0);
        assert_eq!((w.pending_blocks(), w.queued_chunks()), (7, 2));
        assert_eq!(drain(&mut w), vec![(2, 0), (2, 1), (2, 2), (2, 3), (0, 0), (0, 1), (0, 2)]);
        assert!(w.is_empty());
        assert_eq!(w.pending_blocks(), 0);
    }

    #[test]
    fn blocks_asked_again_behind_the_cursor_go_after_the_rest_of_the_pass() {
        let mut w = new(&[6, 1]);
        w.add_chunk(T, 0);
        w.add_chunk(T, 1);
        assert_eq!(w.next(T), Some((0, 0)));
        assert_eq!(w.next(T), Some((0, 1)));
        w.add_blocks(T, 0, &IndexRanges::from_ascending([0]));
        assert_eq!(drain(&mut w), vec![(0, 2), (0, 3), (0, 4), (0, 5), (0, 0), (1, 0)]);
    }

    #[test]
    fn repairs_go_before_fresh_chunks() {
        let mut w = new(&[3, 3, 3]);
        w.add_chunk(T, 0);
        w.add_chunk(T, 1);
        assert_eq!(w.next(T), Some((0, 0)));
        w.add_blocks(T, 2, &IndexRanges::from_ascending([1]));
        assert_eq!((w.pending_blocks(), w.repair_blocks()), (6, 1));
        assert_eq!(drain(&mut w), vec![(2, 1), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
        assert_eq!((w.pending_blocks(), w.repair_blocks()), (0, 0));
    }

    #[test]
    fn a_chunk_asked_again_after_it_went_out_is_queued_at_the_back() {
        let mut w = new(&[1, 1, 1]);
        w.add_chunk(T, 0);
        w.add_chunk(T, 1);
        assert_eq!(w.next(T), Some((0, 0)));
        w.add_chunk(T, 2);
        w.add_chunk(T, 0);
        assert_eq!(drain(&mut w), vec![(1, 0), (2, 0), (0, 0)]);
    }

    #[test]
    fn unknown_chunks_and_blocks_past_the_end_change_nothing() {
        let mut w = new(&[2]);
        assert_eq!(w.add_chunk(T, 1), 0);
        assert_eq!(w.add_blocks(T, 0, &IndexRanges::from_ascending([5, 6])), 0);
        assert!(w.is_empty());
        assert_eq!(w.next(T), None);
    }

    #[test]
    fn blocks_just_sent_are_not_queued_again_until_the_guard_runs_out() {
        let mut w = WorkSet::new([4], GUARD);
        w.add_chunk(T, 0);
        assert_eq!(w.next(T), Some((0, 0)));
        assert_eq!(w.next(T), Some((0, 1)));
        let soon = T + Duration::from_millis(1);
        assert_eq!(w.add_chunk(soon, 0), 0, "blocks 2 and 3 still pending, 0 and 1 in flight");
        assert_eq!(w.add_blocks(soon, 0, &IndexRanges::from_ascending([0, 1])), 0);
        assert_eq!(drain(&mut w), vec![(0, 2), (0, 3)]);
        let later = T + 2 * GUARD;
        assert_eq!(w.add_chunk(later, 0), 4);
    }
}
