//! The receiver's request policy: what to ask for, when, and what to hold
//! back because a peer already asked. The bookkeeping it reads and marks
//! (chunk states, partial chunks) lives in the parent module.
//!
//! Rounds. Every request round (a randomized, backed-off timer) the
//! receiver asks for
//!
//! 1. the missing blocks of each partial chunk that has gone idle: no
//!    block for `partial_idle` plus four blocks' time at the rate the
//!    sender announces (a chunk still streaming is left alone), and
//! 2. whole chunks it needs, lowest index first, so that held chunks and
//!    chunks asked for add up to at most `request_window`: receivers ask
//!    for a few chunks at a time, which keeps everyone's requests
//!    overlapping and the sender's queue short.
//!
//! Repairs do not wait for the next round: a partial chunk going idle
//! brings a round forward to a random point of the following
//! `partial_idle`. Partial chunks hold the receiver's memory, and asking
//! early is cheap: the sender merges blocks it still has queued and skips
//! blocks it has just sent. A finished or failed chunk brings the next
//! round forward to within half an interval, so the window refills.
//!
//! Suppression (Frisbee's trick). Requests go to the group, so every
//! receiver hears every other's. A chunk or block someone asked for is not
//! asked for again, by anyone who heard it, until the sender has had time
//! to serve it: `suppress_for` plus the sender's backlog (from its last
//! status) at its rate, repairs counting only the repair backlog since they
//! go first, capped at `max_request_interval`. Our own requests stand the
//! same way, so that is also how soon a lost request or a lost repair is
//! asked for again. A whole-chunk request also stands for as long as blocks
//! we need keep arriving: the sender serves its queue first come first
//! served, so while it streams, a chunk not yet started is most likely
//! queued, and asking again would only risk a second copy (a receiver or
//! sender running late, descheduled or writing, makes "not yet started" look
//! like "lost"). A request that really was lost is asked again once the
//! stream pauses. Whatever still overlaps, the sender's work set merges.
//!
//! Lack of room is loss. Blocks of a needed chunk that arrive while the
//! receiver holds all it may (its writers are behind) are dropped; when
//! that chunk is asked for again it is asked as a repair of all its
//! blocks, which the sender counts as re-sends and slows down for, instead
//! of as a fresh chunk, which it would not.
//!
//! Back-off. A round is drawn uniformly from [½, 1½) of the current
//! interval, so N receivers spread out and the first to ask silences the
//! rest. The interval starts at `request_interval` and doubles, up to
//! `max_request_interval`, after each round that asked for something when
//! nothing at all (no block, no status) had been heard from the sender
//! since the previous round; hearing the sender resets it. Back-off spares
//! a sender that is gone or unreachable; loss alone does not slow a
//! receiver down, since a sender that is heard merges repeated requests.

use std::time::Duration;

use super::{ChunkState, Receiver, ReceiverConfig};
use crate::mcast::wire::{self, IndexRanges, Message, Status};
use crate::mcast::{Rng, Time};

/// Messages queued for the caller to send; a round is skipped while this
/// many are still waiting (a caller that stopped draining).
const MAX_OUTBOX: usize = 256;
/// Doublings of the request interval, at most.
const MAX_BACKOFF_SHIFT: u32 = 16;

impl Receiver {
    /// Runs the round due at `now`, if any: the scheduled one (which also
    /// moves the back-off), or one a stalled partial chunk brought forward.
    pub(super) fn run_rounds(&mut self, now: Time) {
        if now < self.next_round {
            if self.repair_timers().any(|t| t <= now) {
                self.request_round(now);
            }
            return;
        }
        let asked = self.request_round(now);
        if self.heard {
            self.backoff = 0;
        } else if asked {
            self.backoff = (self.backoff + 1).min(MAX_BACKOFF_SHIFT);
        }
        self.heard = false;
        let interval = self.config.request_interval.saturating_mul(1 << self.backoff);
        let interval = interval.min(self.config.max_request_interval);
        self.next_round = now + self.rng.between(interval / 2, interval * 3 / 2);
    }

    /// The partial chunks' repair deadlines.
    pub(super) fn repair_timers(&self) -> impl Iterator<Item = Time> + '_ {
        self.partials.values().filter_map(|p| p.repair_at)
    }

    /// Brings the next round forward to within half an interval.
    pub(super) fn bring_round_forward(&mut self, now: Time) {
        let soon = now + self.rng.between(Duration::ZERO, self.config.request_interval / 2);
        self.next_round = self.next_round.min(soon);
    }

    /// A peer asked for whole chunks: they count as asked for, and the
    /// blocks of any we hold in part are on their way too.
    pub(super) fn heard_chunk_request(&mut self, now: Time, chunks: &IndexRanges) {
        let n = self.sizes.len() as u32;
        let repair_wait = self.request_stands(true);
        for r in chunks.ranges() {
            let (start, end) = (r.start.min(n), r.end.min(n));
            for &c in self.needed.range(start..end) {
                self.states[c as usize] = ChunkState::Needed { asked: Some(now) };
            }
            for p in self.partials.range_mut(start..end).map(|(_, p)| p) {
                p.asked.age(now, repair_wait / 2);
                p.asked.mark(0, u32::MAX);
            }
        }
    }

    /// A peer asked for blocks of a chunk: if we hold it in part, those
    /// blocks count as asked for.
    pub(super) fn heard_block_request(&mut self, now: Time, chunk: u32, blocks: &IndexRanges) {
        let repair_wait = self.request_stands(true);
        if let Some(p) = self.partials.get_mut(&chunk) {
            p.asked.age(now, repair_wait / 2);
            blocks.ranges().for_each(|r| p.asked.mark(r.start, r.end));
        }
    }

    /// How long a request (ours or a peer's) stands before the same thing
    /// is asked again: `suppress_for` plus the sender's backlog ahead of it.
    fn request_stands(&self, repair: bool) -> Duration {
        let backlog = self.sender.map_or(0, |s| if repair { s.repair_backlog } else { s.backlog });
        let wait = self.config.suppress_for + sending_time(self.sender.as_ref(), backlog);
        wait.min(self.config.max_request_interval.max(self.config.suppress_for))
    }

    /// Queues this round's requests; true if it asked for anything.
    fn request_round(&mut self, now: Time) -> bool {
        // While the sender is silent its heartbeat, not a request, ends the
        // silence; requests would only make it send to no one. Due repair
        // timers are dropped either way (later rounds retry) so that a
        // timer in the past never makes the caller spin.
        if self.silent || self.outbox.len() >= MAX_OUTBOX {
            for p in self.partials.values_mut() {
                p.repair_at = p.repair_at.filter(|&t| t > now);
            }
            return false;
        }
        let before = self.outbox.len();
        let (chunk_wait, repair_wait) = (self.request_stands(false), self.request_stands(true));
        let idle = partial_idle(&self.config, self.sender.as_ref());
        for (&chunk, p) in self.partials.iter_mut() {
            let idle_at = p.last_block + idle;
            if now < idle_at {
                // Not stalled after all (the sender's rate fell): look again
                // when it would be, so a due timer never spins.
                p.repair_at = p.repair_at.map(|t| t.max(idle_at));
                continue;
            }
            p.repair_at = None;
            p.asked.age(now, repair_wait / 2);
            let blocks = IndexRanges::from_ascending(p.have.zeros_outside(&p.asked.sets()));
            if blocks.is_empty() {
                self.stats.requests_suppressed += 1;
                continue;
            }
            blocks.ranges().for_each(|r| p.asked.mark(r.start, r.end));
            self.outbox.push_back(Message::RequestBlocks { receiver: self.id, chunk, blocks });
        }
        let window = self.config.request_window.saturating_sub(self.held_chunks());
        let mut ask = Vec::new();
        let mut starved = Vec::new();
        let mut suppressed = false;
        let progress = self.last_progress;
        for &c in self.needed.iter().take(window) {
            match &mut self.states[c as usize] {
                ChunkState::Needed { asked: Some(t) } if now.saturating_since((*t).max(progress)) < chunk_wait => {
                    suppressed = true
                }
                ChunkState::Needed { asked } => {
                    *asked = Some(now);
                    if self.starved.remove(&c) {
                        starved.push(c);
                    } else {
                        ask.push(c);
                    }
                }
                _ => {}
            }
        }
        self.stats.requests_suppressed += u64::from(suppressed);
        // At most `request_window` <= MAX_RANGES indices: all fit.
        let chunks = IndexRanges::from_ascending(ask);
        if !chunks.is_empty() {
            self.outbox.push_back(Message::RequestChunks { receiver: self.id, chunks });
        }
        for chunk in starved {
            let blocks = IndexRanges::from_ascending(0..wire::block_count(self.sizes[chunk as usize]));
            self.outbox.push_back(Message::RequestBlocks { receiver: self.id, chunk, blocks });
        }
        let sent = self.outbox.len() - before;
        self.stats.requests_sent += sent as u64;
        sent > 0
    }
}

/// How long after a block a partial chunk's repair falls due: stalled
/// (see [`partial_idle`]) plus a random spread of up to `partial_idle`, so
/// that receivers missing the same blocks do not all ask at once.
pub(super) fn repair_delay(config: &ReceiverConfig, sender: Option<&Status>, rng: &mut Rng) -> Duration {
    partial_idle(config, sender) + rng.between(Duration::ZERO, config.partial_idle)
}

/// How long a partial chunk must go without a block to count as stalled:
/// the configured floor plus four blocks at the sender's rate.
fn partial_idle(config: &ReceiverConfig, sender: Option<&Status>) -> Duration {
    config.partial_idle + sending_time(sender, 4)
}

/// How long `blocks` block datagrams take at the sender's announced rate
/// (zero before its first status).
fn sending_time(sender: Option<&Status>, blocks: u64) -> Duration {
    let bytes = u128::from(blocks) * (wire::BLOCK_HEADER_LEN + wire::BLOCK_SIZE) as u128;
    match sender.map_or(0, |s| s.rate) {
        0 => Duration::ZERO,
        rate => Duration::from_nanos(u64::try_from(bytes * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX)),
    }
}
