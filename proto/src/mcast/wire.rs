//! The multicast wire format, version 1: one message per UDP datagram.
//!
//! Every packet starts with the same 14-byte header, then the message body,
//! all through [`crate::codec`] (little-endian integers, `u32` counts):
//!
//! | bytes | field                                       |
//! |-------|---------------------------------------------|
//! | 4     | magic `"SHMC"`                              |
//! | 1     | version, 1                                  |
//! | 1     | message type (1 Join .. 7 Report)           |
//! | 8     | [`SessionId`]                               |
//! | ...   | body, see [`Message`]                       |
//!
//! Decoding is strict and canonical: unknown magic, version or type, a count
//! over its bound, ranges that are empty, unsorted, overlapping or adjacent,
//! a block whose index or length contradicts its count, and trailing bytes
//! are all errors; whatever decodes re-encodes to the same bytes. What the
//! decoder cannot know (whether a chunk index exists in this session's
//! image, whether a block count matches the chunk's size) the sender and
//! receiver check against the manifest.

use std::fmt;
use std::ops::Range;

use crate::chunk::MAX_CHUNK_BYTES;
use crate::codec::{DecodeError, Reader, Writer};

const MAGIC: &[u8; 4] = b"SHMC";
const VERSION: u8 = 1;
/// Magic, version, type and session id.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 8;

/// The largest datagram the protocol sends: a 1500-byte Ethernet MTU less
/// 20 bytes of IPv4 header and 8 of UDP, so nothing is ever fragmented.
pub const MAX_DATAGRAM: usize = 1500 - 20 - 8;

/// Header, chunk, block index, block count and payload length.
pub const BLOCK_HEADER_LEN: usize = HEADER_LEN + 4 + 4 + 4 + 4;

/// Payload bytes in every block but a chunk's last. A block datagram is at
/// most `BLOCK_HEADER_LEN + BLOCK_SIZE` = 1438 bytes: 34 bytes under
/// [`MAX_DATAGRAM`], kept as slack for a later version's header (or an IPv4
/// option) without renumbering every block of every chunk. 1408 is a
/// multiple of 64, so a block never splits a cache line of the chunk.
pub const BLOCK_SIZE: usize = 1408;
const _: () = assert!(BLOCK_HEADER_LEN + BLOCK_SIZE <= MAX_DATAGRAM);

/// The most blocks a chunk can have: the largest encoded chunk in blocks.
pub const MAX_BLOCKS: u32 = MAX_CHUNK_BYTES.div_ceil(BLOCK_SIZE) as u32;

/// The most chunks a session serves: a 64 TiB image of 4 MiB windows.
pub const MAX_CHUNKS: u32 = 1 << 24;

/// The most ranges one request carries. A receiver with more gaps asks for
/// the first ones and the rest next time.
pub const MAX_RANGES: u32 = 128;
/// The largest request: header, receiver, chunk, count and the ranges.
const MAX_REQUEST_LEN: usize = HEADER_LEN + 8 + 4 + 4 + 8 * MAX_RANGES as usize;
const _: () = assert!(MAX_REQUEST_LEN <= MAX_DATAGRAM);

/// Which multicast session a packet belongs to; the server picks one per
/// session so that a stale receiver or a neighbouring session on the same
/// group is ignored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// One receiver process: random per process, so a restarted receiver is a
/// new one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReceiverId(pub u64);

macro_rules! hex_u64 {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:016x})", stringify!($name), self.0)
            }
        }
    };
}
hex_u64!(SessionId);
hex_u64!(ReceiverId);

/// How many blocks a chunk of `csize` encoded bytes has.
pub fn block_count(csize: u32) -> u32 {
    // BLOCK_SIZE fits u32; csize is at most MAX_CHUNK_BYTES where it matters.
    csize.div_ceil(BLOCK_SIZE as u32)
}

/// Where block `index` of a chunk of `csize` bytes lies: `(offset, len)`,
/// or `None` if the chunk has no such block.
pub fn block_span(csize: u32, index: u32) -> Option<(u32, u32)> {
    let offset = index.checked_mul(BLOCK_SIZE as u32).filter(|&o| o < csize)?;
    Some((offset, (csize - offset).min(BLOCK_SIZE as u32)))
}

/// A non-empty set of `u32` indices (chunks or blocks) as sorted, disjoint,
/// non-adjacent half-open ranges, at most [`MAX_RANGES`] of them. The only
/// way to build one keeps those rules, so every value encodes canonically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexRanges(Vec<(u32, u32)>);

impl IndexRanges {
    /// Collects ascending indices into ranges, taking what fits: an index
    /// not above the previous one is skipped, and the collection stops
    /// before the range past [`MAX_RANGES`]. May be empty, which is not
    /// sendable.
    pub fn from_ascending(indices: impl IntoIterator<Item = u32>) -> IndexRanges {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for i in indices {
            let full = out.len() == MAX_RANGES as usize;
            match out.last_mut() {
                Some((_, end)) if i < *end => continue,
                Some((_, end)) if i == *end && i < u32::MAX => *end += 1,
                _ if full || i == u32::MAX => break,
                _ => out.push((i, i + 1)),
            }
        }
        IndexRanges(out)
    }

    /// The ranges `[start, end)`, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u32>> + '_ {
        self.0.iter().map(|&(s, e)| s..e)
    }

    /// Every index, ascending.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One past the largest index; 0 when empty.
    pub fn end(&self) -> u32 {
        self.0.last().map_or(0, |&(_, e)| e)
    }

    /// How many indices the ranges cover.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(s, e)| u64::from(e - s)).sum()
    }

    fn encode(&self, w: &mut Writer) {
        w.count(self.0.len());
        for &(s, e) in &self.0 {
            w.u32(s);
            w.u32(e);
        }
    }

    fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<IndexRanges, DecodeError> {
        let n = r.count(MAX_RANGES, 8, what)?;
        if n == 0 {
            return Err(DecodeError::Invalid(what));
        }
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(n);
        for _ in 0..n {
            let (start, end) = (r.u32(what)?, r.u32(what)?);
            if start >= end || out.last().is_some_and(|&(_, prev)| start <= prev) {
                return Err(DecodeError::Invalid(what));
            }
            out.push((start, end));
        }
        Ok(IndexRanges(out))
    }
}

/// One block of a chunk, its payload borrowed from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block<'a> {
    pub chunk: u32,
    pub index: u32,
    /// How many blocks the chunk has; the receiver checks it against the
    /// chunk's size in the manifest.
    pub count: u32,
    pub payload: &'a [u8],
}

/// The sender's heartbeat, multicast every status interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Counts up by one per status sent.
    pub seq: u64,
    /// The current sending rate in bytes per second.
    pub rate: u64,
    /// Chunks in the session's image.
    pub chunks_total: u32,
    /// Blocks waiting to be sent, of which `repair_backlog` are repairs
    /// (sent first): with `rate`, how long a request takes to be served.
    pub backlog: u64,
    pub repair_backlog: u64,
}

/// A receiver's progress, sent periodically and when it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub receiver: ReceiverId,
    /// Block payload bytes accepted, duplicates excluded.
    pub bytes_received: u64,
    pub duplicate_blocks: u64,
    pub requests_sent: u64,
    pub chunks_done: u32,
    pub done: bool,
}

/// A message body. Layouts after the header (`u32` counts):
///
/// | type | message       | body                                                                 |
/// |------|---------------|----------------------------------------------------------------------|
/// | 1    | Join          | receiver u64                                                         |
/// | 2    | Leave         | receiver u64                                                         |
/// | 3    | RequestChunks | receiver u64, count, (start u32, end u32)*                           |
/// | 4    | RequestBlocks | receiver u64, chunk u32, count, (start u32, end u32)*                |
/// | 5    | Block         | chunk u32, index u32, count u32, len u32, payload                    |
/// | 6    | Status        | seq u64, rate u64, chunks u32, backlog u64, repair backlog u64       |
/// | 7    | Report        | receiver u64, bytes u64, dups u64, requests u64, chunks u32, done u8 |
/// | 8    | Busy          | receiver u64                                                         |
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Join {
        receiver: ReceiverId,
    },
    Leave {
        receiver: ReceiverId,
    },
    /// Whole chunks the receiver has none of.
    RequestChunks {
        receiver: ReceiverId,
        chunks: IndexRanges,
    },
    /// Blocks a receiver still lacks of a chunk it holds in part.
    RequestBlocks {
        receiver: ReceiverId,
        chunk: u32,
        blocks: IndexRanges,
    },
    Block(Block<'a>),
    Status(Status),
    Report(Report),
    /// The receiver holds all it may (its writer is behind): hold back new
    /// chunks for a moment; blocks of chunks under way may go on.
    Busy {
        receiver: ReceiverId,
    },
}

impl Message<'_> {
    fn kind(&self) -> u8 {
        match self {
            Message::Join { .. } => 1,
            Message::Leave { .. } => 2,
            Message::RequestChunks { .. } => 3,
            Message::RequestBlocks { .. } => 4,
            Message::Block(_) => 5,
            Message::Status(_) => 6,
            Message::Report(_) => 7,
            Message::Busy { .. } => 8,
        }
    }

    /// The receiver a receiver's message speaks for; `None` for the
    /// sender's messages.
    pub fn receiver(&self) -> Option<ReceiverId> {
        match self {
            Message::Join { receiver }
            | Message::Leave { receiver }
            | Message::Busy { receiver }
            | Message::RequestChunks { receiver, .. }
            | Message::RequestBlocks { receiver, .. } => Some(*receiver),
            Message::Report(r) => Some(r.receiver),
            Message::Block(_) | Message::Status(_) => None,
        }
    }
}

/// A whole datagram: which session, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub session: SessionId,
    pub message: Message<'a>,
}

fn header(w: &mut Writer, session: SessionId, kind: u8) {
    w.raw(MAGIC);
    w.u8(VERSION);
    w.u8(kind);
    w.u64(session.0);
}

/// Whether a datagram claims, by its header alone, to come from a sender
/// (a block or a status). Receivers that know the sender's address use it
/// to drop such datagrams from anyone else before decoding them.
pub fn from_sender(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && &bytes[..4] == MAGIC && bytes[4] == VERSION && matches!(bytes[5], 5 | 6)
}

/// Writes a block datagram up to its payload: [`Packet::encode`] of the
/// block less its last `payload_len` bytes. The sender uses it so the
/// caller can append chunk bytes straight from its store.
pub fn encode_block_header(session: SessionId, chunk: u32, index: u32, count: u32, payload_len: u32) -> Vec<u8> {
    let mut w = Writer::new();
    header(&mut w, session, 5);
    w.u32(chunk);
    w.u32(index);
    w.u32(count);
    w.u32(payload_len);
    w.into_bytes()
}

impl<'a> Packet<'a> {
    /// The canonical bytes, at most [`MAX_DATAGRAM`].
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        header(&mut w, self.session, self.message.kind());
        match &self.message {
            Message::Join { receiver } | Message::Leave { receiver } | Message::Busy { receiver } => w.u64(receiver.0),
            Message::RequestChunks { receiver, chunks } => {
                w.u64(receiver.0);
                chunks.encode(&mut w);
            }
            Message::RequestBlocks { receiver, chunk, blocks } => {
                w.u64(receiver.0);
                w.u32(*chunk);
                blocks.encode(&mut w);
            }
            Message::Block(b) => {
                w.u32(b.chunk);
                w.u32(b.index);
                w.u32(b.count);
                w.bytes(b.payload);
            }
            Message::Status(s) => {
                w.u64(s.seq);
                w.u64(s.rate);
                w.u32(s.chunks_total);
                w.u64(s.backlog);
                w.u64(s.repair_backlog);
            }
            Message::Report(r) => {
                w.u64(r.receiver.0);
                w.u64(r.bytes_received);
                w.u64(r.duplicate_blocks);
                w.u64(r.requests_sent);
                w.u32(r.chunks_done);
                w.bool(r.done);
            }
        }
        w.into_bytes()
    }

    /// Parses one untrusted datagram.
    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        if bytes.len() > MAX_DATAGRAM {
            let (len, max) = (bytes.len() as u64, MAX_DATAGRAM as u64);
            return Err(DecodeError::TooLong { what: "mcast packet", len, max });
        }
        let mut r = Reader::new(bytes);
        if r.take(4, "mcast magic")? != MAGIC || r.u8("mcast version")? != VERSION {
            return Err(DecodeError::BadMagic("mcast packet"));
        }
        let kind = r.u8("mcast type")?;
        let session = SessionId(r.u64("session id")?);
        let message = match kind {
            1 => Message::Join { receiver: ReceiverId(r.u64("receiver id")?) },
            2 => Message::Leave { receiver: ReceiverId(r.u64("receiver id")?) },
            3 => {
                let receiver = ReceiverId(r.u64("receiver id")?);
                Message::RequestChunks { receiver, chunks: IndexRanges::decode(&mut r, "chunk ranges")? }
            }
            4 => {
                let receiver = ReceiverId(r.u64("receiver id")?);
                let chunk = r.u32("requested chunk")?;
                Message::RequestBlocks { receiver, chunk, blocks: IndexRanges::decode(&mut r, "block ranges")? }
            }
            5 => Message::Block(decode_block(&mut r)?),
            6 => {
                let (seq, rate, chunks_total) = (r.u64("status seq")?, r.u64("status rate")?, r.u32("status chunks")?);
                let (backlog, repair_backlog) = (r.u64("status backlog")?, r.u64("status backlog")?);
                if repair_backlog > backlog {
                    return Err(DecodeError::Invalid("status backlog: repairs over the total"));
                }
                Message::Status(Status { seq, rate, chunks_total, backlog, repair_backlog })
            }
            7 => Message::Report(Report {
                receiver: ReceiverId(r.u64("receiver id")?),
                bytes_received: r.u64("report bytes")?,
                duplicate_blocks: r.u64("report duplicates")?,
                requests_sent: r.u64("report requests")?,
                chunks_done: r.u32("report chunks")?,
                done: r.bool("report done")?,
            }),
            8 => Message::Busy { receiver: ReceiverId(r.u64("receiver id")?) },
            _ => return Err(DecodeError::Invalid("mcast type")),
        };
        r.finish("mcast packet")?;
        Ok(Packet { session, message })
    }
}

fn decode_block<'a>(r: &mut Reader<'a>) -> Result<Block<'a>, DecodeError> {
    let chunk = r.u32("block chunk")?;
    let index = r.u32("block index")?;
    let count = r.u32("block count")?;
    if count == 0 || count > MAX_BLOCKS {
        return Err(DecodeError::TooLong { what: "block count", len: count.into(), max: MAX_BLOCKS.into() });
    }
    if index >= count {
        return Err(DecodeError::Invalid("block index: past the block count"));
    }
    let payload = r.bytes(BLOCK_SIZE as u32, "block payload")?;
    // Every block but the last is full; the last holds at least one byte.
    if payload.is_empty() || (index + 1 < count && payload.len() != BLOCK_SIZE) {
        return Err(DecodeError::Invalid("block payload: length contradicts the block index"));
    }
    Ok(Block { chunk, index, count, payload })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
