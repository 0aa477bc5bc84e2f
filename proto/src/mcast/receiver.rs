//! The receiver of one multicast session: assembles blocks into chunks,
//! hands each finished chunk to the caller to verify, keeps its memory
//! bound, asks for what it lacks, holds back requests its peers already
//! made, and notices when the sender has gone silent.
//!
//! This file is the bookkeeping: the state of every chunk (not needed,
//! needed, being assembled, handed out, done), assembly, the verdicts, and
//! silence. What to ask for and when (rounds, suppression, back-off,
//! repairs) is the policy in `requests`.
//!
//! Memory. At most `max_held_chunks` chunks, and `max_held_bytes` bytes,
//! are held at once: being assembled, or handed out in [`Event::Chunk`] and
//! not yet answered. A block of a needed chunk that does not fit is dropped
//! (and counted); the chunk is asked for again later.
//!
//! Silence. No status or block for `silence_timeout` (which must be several
//! of the sender's status intervals) raises [`Event::SenderSilent`] and
//! stops requests: the sender's heartbeat never stops, so the first status
//! heard ([`Event::SenderHeard`]) resumes them, and until then requests
//! would only make the sender stream to no one.
//!
//! What the receiver does not do: verify chunks (the caller hashes each
//! [`Event::Chunk`] and answers [`Receiver::chunk_done`] or
//! [`Receiver::chunk_failed`]), write them, or fetch them over HTTP when
//! [`Event::SenderSilent`] says multicast is not arriving (chunks fetched
//! that way are reported with [`Receiver::chunk_done`] like any other).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use super::bitset::{BitSet, Recent};
use super::wire::{self, Block, Message, Packet, ReceiverId, Report, SessionId, Status, MAX_RANGES};
use super::{check_chunk_sizes, ConfigError, Rng, Time, Transmit};

mod requests;

/// Limits and timers of a receiver.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Chunks held at once: being assembled plus handed to the caller and
    /// not yet answered with `chunk_done` or `chunk_failed`.
    pub max_held_chunks: usize,
    /// Bytes those chunks may take. Every needed chunk must fit on its own.
    pub max_held_bytes: u64,
    /// Chunks in progress (held or asked for) the receiver aims to keep;
    /// at most [`MAX_RANGES`].
    pub request_window: usize,
    /// The first and shortest interval between request rounds.
    pub request_interval: Duration,
    /// The longest the back-off stretches the interval to.
    pub max_request_interval: Duration,
    /// A partial chunk with no new block for this long, plus four blocks'
    /// time at the sender's announced rate, is asked to be completed
    /// (after a further random delay of up to this long).
    pub partial_idle: Duration,
    /// How long a request, heard or sent, stands in for asking again,
    /// on top of the time the sender's backlog needs.
    pub suppress_for: Duration,
    /// No status or block for this long: [`Event::SenderSilent`].
    pub silence_timeout: Duration,
    /// How often to multicast a progress [`Report`]; `None` for only the
    /// final one.
    pub report_interval: Option<Duration>,
    /// While full (holding all it may, with chunks still needed), how
    /// often to say `Busy` so the sender holds back new chunks.
    pub busy_repeat: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_held_chunks: 8,
            max_held_bytes: 64 << 20,
            request_window: 8,
            request_interval: Duration::from_millis(50),
            max_request_interval: Duration::from_secs(2),
            partial_idle: Duration::from_millis(5),
            suppress_for: Duration::from_millis(30),
            silence_timeout: Duration::from_secs(5),
            report_interval: Some(Duration::from_secs(5)),
            busy_repeat: Duration::from_millis(5),
        }
    }
}

impl ReceiverConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let c = self;
        if c.max_held_chunks == 0 || c.max_held_bytes == 0 {
            return Err(ConfigError::Invalid("receiver must be able to hold a chunk"));
        }
        if c.request_window == 0 || c.request_window > MAX_RANGES as usize {
            return Err(ConfigError::Invalid("request window outside 1..=MAX_RANGES"));
        }
        let timers = [c.request_interval, c.partial_idle, c.suppress_for, c.silence_timeout];
        if timers.contains(&Duration::ZERO) || c.report_interval == Some(Duration::ZERO) {
            return Err(ConfigError::Invalid("intervals must be positive"));
        }
        if c.max_request_interval < c.request_interval {
            return Err(ConfigError::Invalid("max_request_interval below request_interval"));
        }
        Ok(())
    }
}

/// What the receiver tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A chunk's bytes, complete but unverified. Answer with
    /// [`Receiver::chunk_done`] once it is verified and written, or
    /// [`Receiver::chunk_failed`] if its hash does not match; until then it
    /// counts against the receiver's memory bound.
    Chunk { index: u32, bytes: Vec<u8> },
    /// Neither a status nor a block for `silence_timeout`, since `since`.
    /// The caller may fall back to HTTP; the receiver stops asking and
    /// keeps listening.
    SenderSilent { since: Time },
    /// The sender was heard again after [`Event::SenderSilent`].
    SenderHeard,
    /// Every needed chunk is done; a final report and a leave are queued.
    Done,
}

/// Counters for logs, reports and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiverStats {
    pub packets_received: u64,
    /// Not a packet of this protocol or version.
    pub malformed: u64,
    /// Another session's packets.
    pub foreign_session: u64,
    /// Blocks or statuses that contradict the manifest: a chunk index
    /// past the image, a block count or length that does not match the
    /// chunk's size, a status with another chunk count.
    pub invalid: u64,
    /// Well-formed blocks of chunks this receiver does not need (now).
    pub unneeded_blocks: u64,
    pub duplicate_blocks: u64,
    /// Blocks of needed chunks dropped because the memory bound was full.
    pub no_room_blocks: u64,
    /// `Busy` messages sent: times the writer was behind.
    pub busy_sent: u64,
    /// Block payload bytes accepted, duplicates excluded.
    pub bytes_received: u64,
    /// Request messages sent.
    pub requests_sent: u64,
    /// Requests held back, whole or in part, because a peer asked.
    pub requests_suppressed: u64,
    pub peer_requests_heard: u64,
    /// Our own packets heard back through multicast loopback.
    pub own_echoes: u64,
    pub chunks_delivered: u64,
    pub chunks_failed: u64,
    pub chunks_done: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    NotNeeded,
    /// Needed, none of it held; when it was last asked for, by anyone.
    Needed {
        asked: Option<Time>,
    },
    /// Being assembled: an entry in `partials`.
    Partial,
    /// Handed to the caller, awaiting its verdict.
    Delivered,
    Done,
}

#[derive(Clone, Debug)]
struct Partial {
    data: Vec<u8>,
    have: BitSet,
    /// Blocks asked for lately, by us or a peer: kept for between half of
    /// and all of the time a repair request stands.
    asked: Recent,
    last_block: Time,
    /// When to ask for the missing blocks if nothing more arrives; `None`
    /// once asked (later rounds retry).
    repair_at: Option<Time>,
}

/// The receiver's state machine.
///
/// Call order, from one task:
///
/// 1. for each datagram received on the group: [`Receiver::handle`];
/// 2. when the time from [`Receiver::poll_timeout`] has come:
///    [`Receiver::handle_timeout`];
/// 3. drain [`Receiver::poll`]; verify each [`Event::Chunk`] and answer
///    with [`Receiver::chunk_done`] or [`Receiver::chunk_failed`] (now or
///    later, from the same task);
/// 4. drain [`Receiver::poll_transmit`] and send each datagram to the group;
/// 5. sleep until [`Receiver::poll_timeout`] (`None`: finished) or the next
///    datagram.
pub struct Receiver {
    config: ReceiverConfig,
    session: SessionId,
    id: ReceiverId,
    sizes: Vec<u32>,
    states: Vec<ChunkState>,
    /// Exactly the chunks in [`ChunkState::Needed`].
    needed: BTreeSet<u32>,
    /// Needed chunks whose blocks went by while there was no room: asked
    /// for again as a repair, which the sender counts as loss and slows
    /// down for (a receiver that cannot keep up is losing blocks).
    starved: BTreeSet<u32>,
    partials: BTreeMap<u32, Partial>,
    delivered: usize,
    held_bytes: u64,
    /// Needed chunks not yet done.
    remaining: usize,
    rng: Rng,
    next_round: Time,
    backoff: u32,
    /// The sender was heard since the last round.
    heard: bool,
    last_heard: Time,
    /// When the last block of a chunk we need arrived: while blocks keep
    /// coming, the sender is working through the requests it holds.
    last_progress: Time,
    /// The sender's last status, if any: for its rate and backlog.
    sender: Option<Status>,
    silent: bool,
    next_report: Option<Time>,
    finished: bool,
    outbox: VecDeque<Message<'static>>,
    events: VecDeque<Event>,
    stats: ReceiverStats,
    /// The largest needed chunk: room for it means room for any.
    largest: u32,
    /// When `Busy` was last said.
    busy_said: Option<Time>,
}

impl Receiver {
    /// A receiver of the image whose chunks have the given encoded sizes
    /// (manifest order), needing the chunks in `need` (a restart, or a disk
    /// that already holds some windows, needs fewer). `seed` drives the
    /// request jitter; give each receiver its own.
    pub fn new(
        config: ReceiverConfig,
        session: SessionId,
        id: ReceiverId,
        chunk_sizes: Vec<u32>,
        need: impl IntoIterator<Item = u32>,
        seed: u64,
        now: Time,
    ) -> Result<Receiver, ConfigError> {
        config.check()?;
        check_chunk_sizes(&chunk_sizes)?;
        let mut states = vec![ChunkState::NotNeeded; chunk_sizes.len()];
        let mut needed = BTreeSet::new();
        for index in need {
            let Some(&csize) = chunk_sizes.get(index as usize) else {
                return Err(ConfigError::NeedOutOfRange(index));
            };
            if u64::from(csize) > config.max_held_bytes {
                return Err(ConfigError::ChunkOverBound { index, csize, max: config.max_held_bytes });
            }
            states[index as usize] = ChunkState::Needed { asked: None };
            needed.insert(index);
        }
        let largest = needed.iter().map(|&i| chunk_sizes[i as usize]).max().unwrap_or(0);
        let mut rng = Rng::new(seed);
        let first_round = now + rng.between(Duration::ZERO, config.request_interval);
        let mut r = Receiver {
            next_report: config.report_interval.map(|i| now + i),
            remaining: needed.len(),
            config,
            session,
            id,
            sizes: chunk_sizes,
            states,
            needed,
            starved: BTreeSet::new(),
            partials: BTreeMap::new(),
            delivered: 0,
            held_bytes: 0,
            rng,
            next_round: first_round,
            backoff: 0,
            heard: false,
            last_heard: now,
            last_progress: now,
            sender: None,
            silent: false,
            finished: false,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
            largest,
            busy_said: None,
        };
        if r.remaining == 0 {
            r.finish();
        } else {
            r.outbox.push_back(Message::Join { receiver: id });
        }
        Ok(r)
    }

    pub fn id(&self) -> ReceiverId {
        self.id
    }

    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Needed chunks not yet done.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Every needed chunk is done.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes one datagram from the group. Anything malformed, foreign,
    /// inconsistent with the manifest or unneeded is counted and dropped.
    pub fn handle(&mut self, now: Time, _from: SocketAddr, bytes: &[u8]) {
        self.stats.packets_received += 1;
        if self.finished {
            return;
        }
        let Ok(packet) = Packet::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        if packet.session != self.session {
            self.stats.foreign_session += 1;
            return;
        }
        if packet.message.receiver() == Some(self.id) {
            self.stats.own_echoes += 1;
            return;
        }
        match packet.message {
            Message::Block(block) => self.on_block(now, block),
            Message::Status(status) => {
                if status.chunks_total as usize == self.sizes.len() {
                    self.heard_sender(now);
                    self.sender = Some(status);
                } else {
                    self.stats.invalid += 1;
                }
            }
            Message::RequestChunks { chunks, .. } => {
                self.stats.peer_requests_heard += 1;
                self.heard_chunk_request(now, &chunks);
            }
            Message::RequestBlocks { chunk, blocks, .. } => {
                self.stats.peer_requests_heard += 1;
                self.heard_block_request(now, chunk, &blocks);
            }
            Message::Join { .. } | Message::Leave { .. } | Message::Report(_) | Message::Busy { .. } => {}
        }
    }

    fn heard_sender(&mut self, now: Time) {
        self.last_heard = self.last_heard.max(now);
        self.heard = true;
        if self.silent {
            self.silent = false;
            self.events.push_back(Event::SenderHeard);
        }
    }

    fn on_block(&mut self, now: Time, b: Block<'_>) {
        let Some(&csize) = self.sizes.get(b.chunk as usize) else {
            self.stats.invalid += 1;
            return;
        };
        let span = wire::block_span(csize, b.index);
        let Some((offset, len)) =
            span.filter(|&(_, len)| b.count == wire::block_count(csize) && len as usize == b.payload.len())
        else {
            self.stats.invalid += 1;
            return;
        };
        self.heard_sender(now);
        match self.states[b.chunk as usize] {
            ChunkState::Partial => {}
            ChunkState::Needed { .. } if self.has_room(csize) => {
                self.needed.remove(&b.chunk);
                self.starved.remove(&b.chunk);
                self.states[b.chunk as usize] = ChunkState::Partial;
                self.held_bytes += u64::from(csize);
                let blocks = wire::block_count(csize);
                let partial = Partial {
                    data: vec![0; csize as usize],
                    have: BitSet::new(blocks),
                    asked: Recent::new(blocks, now),
                    last_block: now,
                    repair_at: None,
                };
                self.partials.insert(b.chunk, partial);
            }
            ChunkState::Needed { .. } => {
                self.stats.no_room_blocks += 1;
                self.starved.insert(b.chunk);
                if self.is_full() {
                    self.say_busy(now);
                }
                return;
            }
            ChunkState::NotNeeded | ChunkState::Delivered | ChunkState::Done => {
                self.stats.unneeded_blocks += 1;
                return;
            }
        }
        // Invariant kept by every transition: Partial state <=> an entry.
        let Some(p) = self.partials.get_mut(&b.chunk) else {
            return;
        };
        if !p.have.insert(b.index) {
            self.stats.duplicate_blocks += 1;
            return;
        }
        let (start, end) = (offset as usize, offset as usize + len as usize);
        p.data[start..end].copy_from_slice(b.payload);
        p.last_block = now;
        self.last_progress = now;
        p.repair_at = Some(now + requests::repair_delay(&self.config, self.sender.as_ref(), &mut self.rng));
        self.stats.bytes_received += u64::from(len);
        if p.have.is_full() {
            if let Some(p) = self.partials.remove(&b.chunk) {
                self.states[b.chunk as usize] = ChunkState::Delivered;
                self.delivered += 1;
                self.stats.chunks_delivered += 1;
                self.events.push_back(Event::Chunk { index: b.chunk, bytes: p.data });
            }
        }
        if self.is_full() {
            self.say_busy(now);
        }
    }

    /// The writer is behind: holding all it may, at least half of it
    /// handed out and awaiting the caller's verdict, while chunks are still
    /// needed (a new chunk's blocks would be dropped). Being full of
    /// chunks still being assembled is the network's doing, not the
    /// writer's: repairs, not a hold, are the answer to that.
    fn is_full(&self) -> bool {
        !self.needed.is_empty() && self.delivered * 2 >= self.config.max_held_chunks && !self.has_room(self.largest)
    }

    /// Queues a `Busy`, at most once per `busy_repeat`.
    fn say_busy(&mut self, now: Time) {
        if self.busy_said.is_some_and(|t| now.saturating_since(t) < self.config.busy_repeat) {
            return;
        }
        self.busy_said = Some(now);
        self.stats.busy_sent += 1;
        self.outbox.push_back(Message::Busy { receiver: self.id });
    }

    /// Chunks held: being assembled, or handed out and awaiting a verdict.
    pub fn held_chunks(&self) -> usize {
        self.partials.len() + self.delivered
    }

    /// Bytes the held chunks take.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    fn has_room(&self, csize: u32) -> bool {
        self.held_chunks() < self.config.max_held_chunks
            && self.held_bytes + u64::from(csize) <= self.config.max_held_bytes
    }

    /// The chunk is written (verified from [`Event::Chunk`], or obtained
    /// some other way, e.g. over HTTP): it is no longer needed. Ignored
    /// for chunks that were never needed or are already done.
    pub fn chunk_done(&mut self, now: Time, index: u32) {
        let Some(&csize) = self.sizes.get(index as usize) else {
            return;
        };
        match self.states[index as usize] {
            ChunkState::Needed { .. } => {
                self.needed.remove(&index);
                self.starved.remove(&index);
            }
            ChunkState::Partial => {
                self.partials.remove(&index);
                self.held_bytes -= u64::from(csize);
            }
            ChunkState::Delivered => {
                self.delivered -= 1;
                self.held_bytes -= u64::from(csize);
            }
            ChunkState::NotNeeded | ChunkState::Done => return,
        }
        self.states[index as usize] = ChunkState::Done;
        self.remaining -= 1;
        self.stats.chunks_done += 1;
        if self.remaining == 0 {
            self.finish();
        } else {
            self.bring_round_forward(now);
        }
    }

    /// The bytes of [`Event::Chunk`] `index` did not verify: drop them and
    /// fetch the chunk again. Ignored unless that chunk is awaiting a
    /// verdict.
    pub fn chunk_failed(&mut self, now: Time, index: u32) {
        if self.states.get(index as usize) != Some(&ChunkState::Delivered) {
            return;
        }
        self.delivered -= 1;
        self.held_bytes -= u64::from(self.sizes[index as usize]);
        self.states[index as usize] = ChunkState::Needed { asked: None };
        self.needed.insert(index);
        self.stats.chunks_failed += 1;
        self.bring_round_forward(now);
    }

    fn finish(&mut self) {
        self.finished = true;
        self.outbox.push_back(Message::Report(self.report(true)));
        self.outbox.push_back(Message::Leave { receiver: self.id });
        self.events.push_back(Event::Done);
    }

    fn report(&self, done: bool) -> Report {
        Report {
            receiver: self.id,
            bytes_received: self.stats.bytes_received,
            duplicate_blocks: self.stats.duplicate_blocks,
            requests_sent: self.stats.requests_sent,
            chunks_done: self.stats.chunks_done,
            done,
        }
    }

    /// Runs whatever is due at `now`: a request round, a progress report,
    /// silence detection. Harmless to call early.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.finished {
            return;
        }
        if !self.silent && now.saturating_since(self.last_heard) >= self.config.silence_timeout {
            self.silent = true;
            self.events.push_back(Event::SenderSilent { since: self.last_heard });
        }
        if let Some(at) = self.next_report.filter(|&at| now >= at) {
            self.outbox.push_back(Message::Report(self.report(false)));
            self.next_report = self.config.report_interval.map(|i| at.max(now) + i);
        }
        if self.is_full() {
            self.say_busy(now);
        }
        self.run_rounds(now);
    }

    /// Writes the next datagram into `buf` (replacing its contents), or
    /// returns `None` if nothing is queued.
    pub fn poll_transmit(&mut self, _now: Time, buf: &mut Vec<u8>) -> Option<Transmit> {
        let message = self.outbox.pop_front()?;
        let bytes = Packet { session: self.session, message }.encode();
        buf.clear();
        buf.extend_from_slice(&bytes);
        Some(Transmit { size: bytes.len(), payload: None })
    }

    /// When [`Receiver::handle_timeout`] should next run; `None` once
    /// finished.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.finished {
            return None;
        }
        let mut at = self.next_round;
        if !self.silent {
            at = at.min(self.last_heard + self.config.silence_timeout);
        }
        if let Some(report) = self.next_report {
            at = at.min(report);
        }
        if let Some(said) = self.busy_said.filter(|_| self.is_full()) {
            at = at.min(said + self.config.busy_repeat);
        }
        Some(self.repair_timers().fold(at, Time::min))
    }

    /// The next event, if any.
    pub fn poll(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
#[path = "receiver_tests.rs"]
mod tests;
