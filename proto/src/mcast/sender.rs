//! The sender of one multicast session: merges receivers' requests into a
//! work set, streams the blocks they ask for at a paced, adaptive rate, and
//! multicasts a status heartbeat.
//!
//! The sender never touches chunk bytes. For a block, [`Sender::poll_transmit`]
//! writes the 30-byte header and returns a [`Payload`] naming the chunk and
//! byte range the caller appends before sending. That keeps this crate free
//! of I/O without a callback trait: the caller may read the range from a
//! file, an mmap or a cache, or hand header and payload to `sendmsg` as two
//! iovecs, and a slow or failing read is the caller's error to handle, not
//! a state the machine must model. The cost is a contract: the caller must
//! append exactly `payload.len` bytes of that chunk, or receivers will fail
//! its hash and ask again.
//!
//! Merging and order (the work set): a request marks blocks pending, one
//! bit per block, so any number of receivers asking for the same blocks
//! costs one transmission. Repairs (`RequestBlocks`) go before fresh chunks
//! (`RequestChunks`), one chunk at a time, first come first served. Blocks
//! sent within `resend_guard` are taken to be in flight and are not queued
//! again: that is what keeps two receivers asking a moment apart from
//! costing two copies.
//!
//! Pacing (the pacer): a token bucket spends bytes at the current rate.
//! Every `control_interval` the rate falls by a quarter when the blocks
//! receivers asked to have re-sent rise 1 in 20 of the blocks sent (and
//! half again) above the lowest re-send ratio of the last second (loss that
//! does not follow the rate is not congestion), or reach half of them; it rises by 1/32 of
//! the ceiling when they stay within 1 in 100 of that baseline and the
//! bucket (not a lack of work) held sending back, and otherwise holds;
//! always between `min_rate` and `max_rate`.
//!
//! Flow control: a receiver whose writer is behind (it holds all the
//! chunks it may) says `Busy`, and the sender holds back the start of new
//! chunks for `busy_pause` (blocks of a chunk under way and repairs still
//! go), so it runs at the pace of the slowest writer instead of learning
//! it from blocks dropped for lack of room and sending them again. A
//! receiver that stays full for `max_pause` on end (a stalled disk, or a
//! forger) is not waited for during the next `max_pause`: it falls behind
//! and is repaired later, and the others go on.
//!
//! What the sender does not do: authenticate receivers (requests are
//! unauthenticated by design; each receiver id has a message budget, ids
//! past [`MAX_TRACKED_RECEIVERS`] share one, and a flood can at worst keep
//! the whole image queued at the floor rate, never stop the others), or
//! decide when a session ends ([`Event::Idle`] tells the caller no one has
//! asked for anything lately and nothing is left to send).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use super::pacer::{Pacer, RateLimits, Step, TokenBucket};
use super::wire::{self, Message, Packet, ReceiverId, Report, SessionId, Status, BLOCK_HEADER_LEN, BLOCK_SIZE};
use super::work::WorkSet;
use super::{check_chunk_sizes, ConfigError, Payload, Time, Transmit};

/// Receivers tracked one by one; messages from any more share one
/// throttle, so forged receiver ids cannot grow memory.
pub const MAX_TRACKED_RECEIVERS: usize = 4096;
/// A tracked receiver not heard from for this long is dropped
/// ([`Event::Lost`]).
pub const RECEIVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Events held for the caller; past this, events are dropped and counted.
const MAX_EVENTS: usize = 4096;
/// The largest block datagram: what the bucket must hold before one goes.
const MAX_BLOCK_DATAGRAM: u64 = (BLOCK_HEADER_LEN + BLOCK_SIZE) as u64;

/// How a sender paces itself and when it speaks up.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// The rate ceiling, in bytes per second of datagrams.
    pub max_rate: u64,
    /// The floor the rate never falls below, however much loss is heard.
    pub min_rate: u64,
    /// Where the rate starts.
    pub initial_rate: u64,
    /// How much sending the token bucket may save up, as time at the
    /// current rate; lets the caller batch datagrams.
    pub burst: Duration,
    /// How often the rate is adjusted.
    pub control_interval: Duration,
    /// How often a status is multicast.
    pub status_interval: Duration,
    /// No requests for this long and nothing left to send: [`Event::Idle`].
    pub idle_timeout: Duration,
    /// Blocks sent within this long (up to twice this long) are taken to
    /// be in flight and are not queued again by a request: a round trip
    /// and a burst on a LAN, below a receiver's `partial_idle` so that a
    /// real repair is never ignored.
    pub resend_guard: Duration,
    /// Messages accepted from one receiver per second, and in a burst.
    pub receiver_messages_per_sec: u64,
    pub receiver_message_burst: u64,
    /// How long a `Busy` holds back new chunks (longer than a receiver's
    /// `busy_repeat`, so a receiver that stays full keeps the hold).
    pub busy_pause: Duration,
    /// The longest run of holds; after it, `Busy` is not heeded for as long.
    pub max_pause: Duration,
}

impl SenderConfig {
    /// Defaults under a rate ceiling of `max_rate` bytes per second: start
    /// at half of it, never below 1/32 of it.
    pub fn new(max_rate: u64) -> SenderConfig {
        SenderConfig {
            max_rate,
            min_rate: (max_rate / 32).max(1),
            initial_rate: (max_rate / 2).max(1),
            burst: Duration::from_millis(2),
            control_interval: Duration::from_millis(100),
            status_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            resend_guard: Duration::from_millis(2),
            receiver_messages_per_sec: 1000,
            receiver_message_burst: 1000,
            busy_pause: Duration::from_millis(15),
            max_pause: Duration::from_millis(500),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let c = self;
        if c.max_rate < wire::MAX_DATAGRAM as u64 {
            return Err(ConfigError::Invalid("max_rate below one datagram a second"));
        }
        if c.min_rate == 0 || c.min_rate > c.initial_rate || c.initial_rate > c.max_rate {
            return Err(ConfigError::Invalid("rates must satisfy 0 < min <= initial <= max"));
        }
        if [c.control_interval, c.status_interval, c.idle_timeout].contains(&Duration::ZERO) {
            return Err(ConfigError::Invalid("intervals must be positive"));
        }
        if c.receiver_messages_per_sec == 0 || c.receiver_message_burst == 0 {
            return Err(ConfigError::Invalid("receiver message budget must be positive"));
        }
        Ok(())
    }
}

/// What the sender tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A receiver was heard from for the first time.
    Joined { receiver: ReceiverId, from: SocketAddr },
    /// A receiver said it is leaving.
    Left { receiver: ReceiverId },
    /// A receiver went quiet for [`RECEIVER_TIMEOUT`] and is forgotten.
    Lost { receiver: ReceiverId },
    /// A receiver's progress report.
    Report(Report),
    /// No request for `idle_timeout` and nothing left to send. Reported
    /// once per idle period.
    Idle,
}

/// Counters for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SenderStats {
    pub packets_received: u64,
    /// Not a packet of this protocol or version.
    pub malformed: u64,
    /// Another session's packets.
    pub foreign_session: u64,
    /// Blocks and statuses heard back (our own, or another sender's).
    pub ignored: u64,
    /// Requests naming chunks or blocks outside the image.
    pub bad_requests: u64,
    /// Receiver messages over their receiver's budget.
    pub throttled: u64,
    pub chunk_requests: u64,
    pub block_requests: u64,
    /// Blocks that `RequestBlocks` made pending again: the loss signal.
    pub resend_blocks: u64,
    pub blocks_sent: u64,
    /// Datagram bytes sent, headers and payloads.
    pub bytes_sent: u64,
    /// Chunk bytes sent in blocks: over the image's bytes, the session's
    /// multicast efficiency.
    pub payload_bytes_sent: u64,
    pub statuses_sent: u64,
    pub rate_increases: u64,
    pub rate_decreases: u64,
    pub events_dropped: u64,
    /// `Busy` messages heard, and those not heeded (past `max_pause`).
    pub busy_heard: u64,
    pub busy_ignored: u64,
}

#[derive(Clone, Debug)]
struct Peer {
    last_heard: Time,
    budget: TokenBucket,
}

/// The sender's state machine.
///
/// Call order, from one task:
///
/// 1. for each datagram received on the group: [`Sender::handle`];
/// 2. when the time from [`Sender::poll_timeout`] has come:
///    [`Sender::handle_timeout`];
/// 3. drain [`Sender::poll`] for events;
/// 4. drain [`Sender::poll_transmit`], appending each block's payload,
///    and send each datagram to the group; it returns `None` when the
///    token bucket is empty, so stop there;
/// 5. sleep until [`Sender::poll_timeout`] or the next datagram.
pub struct Sender {
    config: SenderConfig,
    session: SessionId,
    sizes: Vec<u32>,
    work: WorkSet,
    pacer: Pacer,
    peers: BTreeMap<ReceiverId, Peer>,
    /// Budget shared by receivers past [`MAX_TRACKED_RECEIVERS`].
    overflow: TokenBucket,
    status_seq: u64,
    status_due: bool,
    next_status: Time,
    last_request: Time,
    idle_reported: bool,
    events: VecDeque<Event>,
    stats: SenderStats,
    /// No new chunk is started before this (a receiver is busy).
    paused_until: Time,
    /// When the current run of holds began.
    pause_run_start: Time,
    /// `Busy` is not heeded before this.
    busy_ignored_until: Time,
}

impl Sender {
    /// A sender for an image whose chunks have the given encoded sizes
    /// (`csize` in manifest order), starting at `now`.
    pub fn new(
        config: SenderConfig,
        session: SessionId,
        chunk_sizes: Vec<u32>,
        now: Time,
    ) -> Result<Sender, ConfigError> {
        config.check()?;
        check_chunk_sizes(&chunk_sizes)?;
        let limits = RateLimits {
            min: config.min_rate,
            max: config.max_rate,
            burst: config.burst,
            interval: config.control_interval,
        };
        let (per_sec, burst) = (config.receiver_messages_per_sec, config.receiver_message_burst);
        Ok(Sender {
            work: WorkSet::new(chunk_sizes.iter().map(|&c| wire::block_count(c)), config.resend_guard),
            pacer: Pacer::new(limits, config.initial_rate, now),
            overflow: TokenBucket::new(per_sec, burst, now),
            next_status: now + config.status_interval,
            config,
            session,
            sizes: chunk_sizes,
            peers: BTreeMap::new(),
            status_seq: 0,
            status_due: true,
            last_request: now,
            idle_reported: false,
            events: VecDeque::new(),
            stats: SenderStats::default(),
            paused_until: now,
            pause_run_start: now,
            busy_ignored_until: now,
        })
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The current sending rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.pacer.rate()
    }

    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    /// Blocks waiting to be sent.
    pub fn pending_blocks(&self) -> u64 {
        self.work.pending_blocks()
    }

    /// Chunks with blocks waiting to be sent.
    pub fn queued_chunks(&self) -> usize {
        self.work.queued_chunks()
    }

    /// Receivers currently tracked.
    pub fn receivers(&self) -> usize {
        self.peers.len()
    }

    /// Takes one datagram from the group. Anything malformed, foreign or
    /// out of range is counted and dropped.
    pub fn handle(&mut self, now: Time, from: SocketAddr, bytes: &[u8]) {
        self.stats.packets_received += 1;
        let Ok(packet) = Packet::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if packet.session != self.session {
            self.stats.foreign_session += 1;
            return;
        }
        let Some(receiver) = packet.message.receiver() else {
            self.stats.ignored += 1;
            return;
        };
        if !self.admit(now, receiver, from, matches!(packet.message, Message::Leave { .. })) {
            self.stats.throttled += 1;
            return;
        }
        match packet.message {
            Message::Join { .. } => self.activity(now),
            Message::Leave { receiver } => {
                if self.peers.remove(&receiver).is_some() {
                    self.push_event(Event::Left { receiver });
                }
            }
            Message::RequestChunks { chunks, .. } => {
                if chunks.end() as usize > self.sizes.len() {
                    self.stats.bad_requests += 1;
                    return;
                }
                self.stats.chunk_requests += 1;
                for range in chunks.ranges() {
                    for chunk in range {
                        self.work.add_chunk(now, chunk);
                    }
                }
                self.activity(now);
            }
            Message::RequestBlocks { chunk, blocks, .. } => {
                let Some(&csize) = self.sizes.get(chunk as usize) else {
                    self.stats.bad_requests += 1;
                    return;
                };
                if blocks.end() > wire::block_count(csize) {
                    self.stats.bad_requests += 1;
                    return;
                }
                self.stats.block_requests += 1;
                let newly = u64::from(self.work.add_blocks(now, chunk, &blocks));
                self.stats.resend_blocks += newly;
                self.pacer.on_resend(newly);
                self.activity(now);
            }
            Message::Report(report) => self.push_event(Event::Report(report)),
            Message::Busy { .. } => self.on_busy(now),
            Message::Block(_) | Message::Status(_) => {}
        }
    }

    /// Charges a receiver's message to its budget, tracking the receiver
    /// if there is room. False if over budget.
    fn admit(&mut self, now: Time, receiver: ReceiverId, from: SocketAddr, leaving: bool) -> bool {
        if let Some(peer) = self.peers.get_mut(&receiver) {
            peer.last_heard = now;
            return peer.budget.take(now, 1);
        }
        if leaving || self.peers.len() >= MAX_TRACKED_RECEIVERS {
            return self.overflow.take(now, 1);
        }
        let (per_sec, burst) = (self.config.receiver_messages_per_sec, self.config.receiver_message_burst);
        let mut budget = TokenBucket::new(per_sec, burst, now);
        let ok = budget.take(now, 1);
        self.peers.insert(receiver, Peer { last_heard: now, budget });
        self.push_event(Event::Joined { receiver, from });
        ok
    }

    /// A receiver is full: hold back new chunks, within `max_pause`.
    fn on_busy(&mut self, now: Time) {
        self.stats.busy_heard += 1;
        if now >= self.paused_until {
            // The last run of holds is over. If it ran to its cap, some
            // receiver stayed busy on end: it is not heeded for a while.
            let capped = self.paused_until > self.pause_run_start
                && self.paused_until == self.pause_run_start + self.config.max_pause;
            if capped {
                self.busy_ignored_until = self.paused_until + self.config.max_pause;
            }
            if now < self.busy_ignored_until {
                self.stats.busy_ignored += 1;
                return;
            }
            self.pause_run_start = now;
        }
        let limit = self.pause_run_start + self.config.max_pause;
        self.paused_until = self.paused_until.max((now + self.config.busy_pause).min(limit));
    }

    /// Whether the next block would start a new chunk while a receiver
    /// asked for a hold.
    fn held_back(&self, now: Time) -> bool {
        now < self.paused_until && self.work.next_starts_chunk()
    }

    fn activity(&mut self, now: Time) {
        self.last_request = now;
        self.idle_reported = false;
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }

    /// Runs whatever is due at `now`: status, rate control, idleness and
    /// forgetting silent receivers. Harmless to call early.
    pub fn handle_timeout(&mut self, now: Time) {
        if now >= self.next_status {
            self.status_due = true;
            self.next_status = now + self.config.status_interval;
            self.forget_silent_receivers(now);
        }
        match self.pacer.control(now) {
            Some(Step::Increase) => self.stats.rate_increases += 1,
            Some(Step::Decrease) => self.stats.rate_decreases += 1,
            Some(Step::Hold) | None => {}
        }
        if !self.idle_reported
            && self.work.is_empty()
            && now.saturating_since(self.last_request) >= self.config.idle_timeout
        {
            self.idle_reported = true;
            self.push_event(Event::Idle);
        }
    }

    fn forget_silent_receivers(&mut self, now: Time) {
        let lost: Vec<ReceiverId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_since(p.last_heard) >= RECEIVER_TIMEOUT)
            .map(|(&id, _)| id)
            .collect();
        for receiver in lost {
            self.peers.remove(&receiver);
            self.push_event(Event::Lost { receiver });
        }
    }

    /// Writes the next datagram into `buf` (replacing its contents), or
    /// returns `None` if there is nothing to send or the rate says wait.
    /// For a block, `buf` holds the header and the returned [`Payload`]
    /// names the chunk bytes to append.
    pub fn poll_transmit(&mut self, now: Time, buf: &mut Vec<u8>) -> Option<Transmit> {
        if self.status_due {
            self.status_due = false;
            let status = Status {
                seq: self.status_seq,
                rate: self.pacer.rate(),
                chunks_total: self.sizes.len() as u32,
                backlog: self.work.pending_blocks(),
                repair_backlog: self.work.repair_blocks(),
            };
            self.status_seq += 1;
            let bytes = Packet { session: self.session, message: Message::Status(status) }.encode();
            self.pacer.force_send(now, bytes.len() as u64);
            self.stats.statuses_sent += 1;
            return Some(self.emit(buf, &bytes, None));
        }
        if self.work.is_empty() {
            return None;
        }
        // Reserve a full datagram before choosing the block, so a wake-up
        // at `poll_timeout` can always send one.
        if self.held_back(now) || !self.pacer.can_send(now, MAX_BLOCK_DATAGRAM) {
            return None;
        }
        let (chunk, index) = self.work.next(now)?;
        let csize = self.sizes[chunk as usize];
        // The work set only holds indices below the block count of a chunk
        // in `sizes`, so the span exists; fall back to nothing if not.
        let (offset, len) = wire::block_span(csize, index)?;
        let header = wire::encode_block_header(self.session, chunk, index, wire::block_count(csize), len);
        let size = (header.len() + len as usize) as u64;
        self.pacer.block_sent(now, size);
        self.stats.blocks_sent += 1;
        Some(self.emit(buf, &header, Some(Payload { chunk, offset, len })))
    }

    fn emit(&mut self, buf: &mut Vec<u8>, bytes: &[u8], payload: Option<Payload>) -> Transmit {
        buf.clear();
        buf.extend_from_slice(bytes);
        let payload_len = payload.map_or(0, |p| u64::from(p.len));
        self.stats.bytes_sent += bytes.len() as u64 + payload_len;
        self.stats.payload_bytes_sent += payload_len;
        Transmit { size: bytes.len(), payload }
    }

    /// When [`Sender::handle_timeout`] (and then `poll_transmit`) should
    /// next run. Always `Some`: the status heartbeat never stops.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut at = self.next_status.min(self.pacer.next_control());
        if !self.work.is_empty() {
            let ready = self.pacer.ready_at(MAX_BLOCK_DATAGRAM);
            at = at.min(if self.held_back(ready) { ready.max(self.paused_until) } else { ready });
        } else if !self.idle_reported {
            at = at.min(self.last_request + self.config.idle_timeout);
        }
        Some(at)
    }

    /// The next event, if any.
    pub fn poll(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
