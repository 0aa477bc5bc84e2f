//! One read transfer as a sans-IO state machine: options, windows of DATA,
//! ACKs, retransmission and the end of the transfer.
//!
//! [`Transfer`] opens no socket and reads no clock: datagrams come in
//! through [`Transfer::handle`], time through `now` arguments, and file
//! bytes through the [`Read`] the driver hands over (a file, or a slice in
//! tests and fuzzing). The driver decides which socket and address the
//! transfer owns; the machine only compares the source of each datagram
//! with the peer it was created for.
//!
//! Protocol behaviour:
//!
//! - Granted options (see [`super::options`]) go out in an OACK, answered
//!   by ACK 0; otherwise DATA 1 goes out at once.
//! - DATA goes out a window at a time (RFC 7440; a window of 1 is plain
//!   RFC 1350). An ACK of block `k` inside the window acknowledges
//!   everything up to `k` and the next window starts at `k + 1`, so an ACK
//!   short of the window's end makes the rest go again, as RFC 7440 asks.
//! - An ACK for the last acknowledged block, or for one before it, moves
//!   nothing and sends nothing: a duplicate ACK never causes a resend, which
//!   is what keeps the Sorcerer's Apprentice bug away. Only the timer does.
//! - On a timeout the window (or OACK) goes again and the timeout doubles,
//!   up to the configured maximum; after `retries` timeouts in a row with
//!   no progress the transfer fails. Progress resets both.
//! - Block numbers are 16-bit on the wire and wrap from 65535 to 0; inside
//!   they are `u64` indices, so files of any length transfer.
//! - A datagram from any address but the peer's gets ERROR 5 back and
//!   changes nothing. A malformed datagram from the peer is ignored; a
//!   well-formed one that is not an ACK or ERROR gets ERROR 4 and ends the
//!   transfer; an ERROR from the peer ends it silently.
//! - The transfer ends when the block shorter than the block size (possibly
//!   empty) is acknowledged.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::netascii::NetAscii;
use super::options::{negotiate, TransferConfig};
use super::packet::{self, ErrorCode, Mode, Opcode, Options, Packet, PacketError};

/// Errors queued for wrong-TID senders at most; more are dropped.
const MAX_PENDING_ERRORS: usize = 8;
/// Refusal events queued at most; more are dropped (counted in stats).
const MAX_EVENTS: usize = 64;

/// A datagram [`Transfer::poll_transmit`] wrote to the front of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub size: usize,
}

/// What the driver hears about: the outcome, once, and datagrams refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer acknowledged the last block.
    Complete,
    /// The transfer ended without completing.
    Failed(Failure),
    /// A datagram was refused and the transfer goes on.
    Refused { from: SocketAddr, reason: Refusal },
}

/// Why a transfer ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// no acknowledgement after every retransmission
    #[error("timed out after {0} retransmissions")]
    TimedOut(u32),
    /// the peer sent an error
    #[error("peer sent error {code:?}: {message}")]
    Peer { code: ErrorCode, message: String },
    /// the peer sent a packet a reading client never sends
    #[error("peer sent an unexpected {0:?}")]
    Unexpected(Opcode),
    /// the file could not be read
    #[error("reading the file failed: {0}")]
    Read(io::ErrorKind),
    /// the driver's buffer is shorter than `max_datagram`
    #[error("transmit buffer too small")]
    BufferTooSmall,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// it came from another address or port than the peer's (answered
    /// with ERROR 5)
    WrongTid,
    /// it did not decode
    Malformed(PacketError),
}

/// Counts for one transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// DATA packets sent, first sends and resends.
    pub data_sent: u64,
    /// DATA packets sent again (after a timeout or a short ACK).
    pub data_resent: u64,
    /// Payload bytes sent, resends included.
    pub bytes_sent: u64,
    /// Payload bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// ACKs that moved nothing (duplicates, stale, out of the window).
    pub acks_ignored: u64,
    /// Timeouts that caused a resend.
    pub timeouts: u64,
    /// Refusal events dropped because the queue was full.
    pub events_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The OACK is to be sent (`send`) or waits for ACK 0.
    Negotiating {
        send: bool,
    },
    Sending,
    Done,
}

enum Content<R> {
    Octet(R),
    NetAscii(NetAscii<R>),
}

/// One read transfer to one peer.
///
/// Call order, for the driver:
///
/// 1. [`Transfer::new`], then drain [`Transfer::poll_transmit`] until it
///    returns `None`, sending each datagram from the transfer's socket.
/// 2. Wait for a datagram or for [`Transfer::poll_timeout`], whichever
///    comes first; pass it to [`Transfer::handle`] or
///    [`Transfer::handle_timeout`].
/// 3. Drain [`Transfer::poll_transmit`], then [`Transfer::poll`].
/// 4. Repeat from 2 until [`Transfer::is_finished`].
///
/// `now` must not go backwards between calls.
pub struct Transfer<R> {
    peer: SocketAddr,
    content: Content<R>,
    blksize: u16,
    windowsize: u16,
    oack: Option<Options>,
    state: State,
    /// Index of the first unacknowledged block; block indices start at 1.
    base: u64,
    /// Next index to send in this round.
    next: u64,
    /// Highest index sent so far.
    sent_high: u64,
    /// Payloads of blocks `base..`, read but not acknowledged.
    window: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    /// Index of the block shorter than `blksize`, once read.
    last: Option<u64>,
    rto_first: Duration,
    rto: Duration,
    rto_max: Duration,
    retries: u32,
    max_retries: u32,
    deadline: Option<Instant>,
    errors: VecDeque<(SocketAddr, ErrorCode, &'static str)>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl<R: Read> Transfer<R> {
    /// A transfer of `source`'s bytes to `peer`, which asked for `mode` and
    /// `options`. `size` is the file's length, for `tsize`, when known.
    pub fn new(
        peer: SocketAddr,
        mode: Mode,
        options: &Options,
        source: R,
        size: Option<u64>,
        config: &TransferConfig,
    ) -> Self {
        let n = negotiate(options, mode, size, config);
        let content = match mode {
            Mode::Octet => Content::Octet(source),
            Mode::NetAscii => Content::NetAscii(NetAscii::new(source)),
        };
        Transfer {
            peer,
            content,
            blksize: n.blksize,
            windowsize: n.windowsize,
            oack: n.oack,
            state: if n.oack.is_some() { State::Negotiating { send: true } } else { State::Sending },
            base: 1,
            next: 1,
            sent_high: 0,
            window: VecDeque::new(),
            spare: Vec::new(),
            last: None,
            rto_first: n.timeout,
            rto: n.timeout,
            rto_max: config.max_timeout.max(n.timeout),
            retries: 0,
            max_retries: config.retries,
            deadline: None,
            errors: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The peer this transfer sends to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The agreed block size.
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// The agreed window, in blocks.
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    /// The shortest buffer [`Transfer::poll_transmit`] accepts.
    pub fn max_datagram(&self) -> usize {
        (packet::DATA_HEADER + usize::from(self.blksize)).max(packet::MAX_ERROR_MESSAGE)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the transfer is over and has nothing left to send.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done && self.errors.is_empty()
    }

    /// A datagram arrived from `from`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        // Time matters only when sending; kept for the common shape.
        let _ = now;
        if self.state == State::Done {
            return;
        }
        if from != self.peer {
            if self.errors.len() < MAX_PENDING_ERRORS {
                self.errors.push_back((from, ErrorCode::UnknownTid, "unknown transfer id"));
            }
            self.refused(from, Refusal::WrongTid);
            return;
        }
        match Packet::decode(bytes) {
            Err(e) => self.refused(from, Refusal::Malformed(e)),
            Ok(Packet::Ack { block }) => self.on_ack(block),
            Ok(Packet::Error { code, message }) => {
                let message: String = String::from_utf8_lossy(message).chars().take(128).collect();
                self.finish(Event::Failed(Failure::Peer { code, message }));
            }
            Ok(other) => {
                self.errors.push_back((self.peer, ErrorCode::IllegalOperation, "illegal tftp operation"));
                self.finish(Event::Failed(Failure::Unexpected(other.opcode())));
            }
        }
    }

    /// The deadline from [`Transfer::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return,
        }
        self.deadline = None;
        if self.retries >= self.max_retries {
            self.finish(Event::Failed(Failure::TimedOut(self.retries)));
            return;
        }
        self.retries += 1;
        self.stats.timeouts += 1;
        self.rto = self.rto.saturating_mul(2).min(self.rto_max);
        match self.state {
            State::Negotiating { .. } => self.state = State::Negotiating { send: true },
            State::Sending => self.next = self.base,
            State::Done => {}
        }
    }

    /// When [`Transfer::handle_timeout`] is due: the last send plus the
    /// current retransmission timeout. `None` before anything was sent
    /// (drain [`Transfer::poll_transmit`] first) and once the transfer is
    /// over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Done => None,
            _ => self.deadline,
        }
    }

    /// Writes the next datagram to send into `buf`, which must hold
    /// [`Transfer::max_datagram`] bytes.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((dest, code, message)) = self.errors.pop_front() {
            let packet = Packet::Error { code, message: message.as_bytes() };
            return match packet.encode(buf) {
                Ok(size) => Some(Transmit { dest, size }),
                Err(_) => self.buffer_too_small(),
            };
        }
        match self.state {
            State::Negotiating { send: true } => {
                let oack = Packet::Oack(self.oack.unwrap_or_default());
                let Ok(size) = oack.encode(buf) else { return self.buffer_too_small() };
                self.state = State::Negotiating { send: false };
                self.deadline = Some(now + self.rto);
                Some(Transmit { dest: self.peer, size })
            }
            State::Sending => self.transmit_data(now, buf),
            State::Negotiating { send: false } | State::Done => None,
        }
    }

    /// The next event, if any.
    pub fn poll(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn transmit_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let window_end = self.base + u64::from(self.windowsize);
        if self.next >= window_end || self.last.is_some_and(|l| self.next > l) {
            return None;
        }
        let need = packet::DATA_HEADER + usize::from(self.blksize);
        if buf.len() < need {
            return self.buffer_too_small();
        }
        let slot = usize::try_from(self.next - self.base).unwrap_or(usize::MAX);
        if slot >= self.window.len() {
            if let Err(e) = self.read_block() {
                self.errors.push_back((self.peer, ErrorCode::NotDefined, "read error"));
                self.finish(Event::Failed(Failure::Read(e.kind())));
                return self.poll_transmit(now, buf);
            }
        }
        let data = self.window.get(slot)?;
        buf[..packet::DATA_HEADER].copy_from_slice(&packet::data_header(self.next as u16));
        buf[packet::DATA_HEADER..][..data.len()].copy_from_slice(data);
        self.stats.data_sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        if self.next <= self.sent_high {
            self.stats.data_resent += 1;
        }
        self.sent_high = self.sent_high.max(self.next);
        self.next += 1;
        self.deadline = Some(now + self.rto);
        Some(Transmit { dest: self.peer, size: packet::DATA_HEADER + data.len() })
    }

    /// Reads the block after the window's last into the window.
    fn read_block(&mut self) -> io::Result<()> {
        let mut block = self.spare.pop().unwrap_or_default();
        block.resize(usize::from(self.blksize), 0);
        let mut filled = 0;
        while filled < block.len() {
            let n = match &mut self.content {
                Content::Octet(r) => r.read(&mut block[filled..]),
                Content::NetAscii(r) => r.read(&mut block[filled..]),
            };
            match n {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        block.truncate(filled);
        let index = self.base + self.window.len() as u64;
        if filled < usize::from(self.blksize) {
            self.last = Some(index);
        }
        self.window.push_back(block);
        Ok(())
    }

    fn on_ack(&mut self, block: u16) {
        match self.state {
            State::Negotiating { .. } if block == 0 => {
                self.state = State::Sending;
                self.progress();
            }
            State::Sending => {
                // The ACK names a block in (base - 1) ..= sent_high, seen
                // through 16 bits; at most 65536 candidates, so one match.
                let acked = self.base - 1;
                let ahead = u64::from(block.wrapping_sub(acked as u16));
                if ahead == 0 || ahead > self.sent_high - acked {
                    self.stats.acks_ignored += 1;
                    return;
                }
                let upto = acked + ahead;
                while self.base <= upto {
                    if let Some(mut b) = self.window.pop_front() {
                        self.stats.bytes_acked += b.len() as u64;
                        b.clear();
                        self.spare.push(b);
                    }
                    self.base += 1;
                }
                if self.last == Some(upto) {
                    self.finish(Event::Complete);
                    return;
                }
                self.next = self.base;
                self.progress();
            }
            State::Negotiating { .. } | State::Done => self.stats.acks_ignored += 1,
        }
    }

    fn progress(&mut self) {
        self.retries = 0;
        self.rto = self.rto_first;
        self.deadline = None;
    }

    fn finish(&mut self, event: Event) {
        self.state = State::Done;
        self.deadline = None;
        self.window.clear();
        self.spare.clear();
        self.events.push_back(event);
    }

    fn refused(&mut self, from: SocketAddr, reason: Refusal) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(Event::Refused { from, reason });
        } else {
            self.stats.events_dropped += 1;
        }
    }

    fn buffer_too_small(&mut self) -> Option<Transmit> {
        self.errors.clear();
        if self.state != State::Done {
            self.finish(Event::Failed(Failure::BufferTooSmall));
        }
        None
    }
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
