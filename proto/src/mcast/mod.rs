//! The multicast session: one sender streams one image's chunks to any
//! number of receivers, driven by what the receivers ask for (in the manner
//! of Emulab's Frisbee).
//!
//! Both sides know the image's chunk list from the signed manifest, fetched
//! separately over HTTP. A chunk is named by its index in the manifest's
//! flattened chunk list and cut into [`BLOCK_SIZE`] blocks. Receivers
//! multicast their requests, so peers hear them and hold back their own
//! (suppression); the sender merges all requests into one work set and paces
//! itself with a token bucket whose rate follows the re-sends asked for.
//!
//! - [`wire`]: the versioned packet codec.
//! - [`sender`]: the sender's state machine: work set, pacing, status.
//! - [`receiver`]: the receiver's state machine: assembly, the memory
//!   bound, requests, suppression, silence detection.
//! - inside: the sender's work set (`work`), its token bucket and rate rule
//!   (`pacer`), and the block sets both sides keep (`bitset`).
//!
//! Both machines have the shape of quinn-proto's connection: `handle(now,
//! from, bytes)`, `handle_timeout(now)`, `poll_transmit(now, buf)`,
//! `poll_timeout()` and `poll()`. They open no socket, read no clock (time
//! comes in as [`Time`]) and draw no OS randomness (the receiver takes a
//! seed). Every datagram goes to the session's multicast group; which group
//! and port that is, and the socket options that make it work, belong to the
//! caller.
//!
//! What this module does not do: verify chunks (the caller hashes each
//! [`receiver::Event::Chunk`] against the manifest and answers with
//! `chunk_done` or `chunk_failed`), read chunk bytes (the sender names the
//! bytes a block carries and the caller appends them), or fall back to HTTP
//! (the receiver reports a silent sender and the caller decides).

use std::ops::Add;
use std::time::Duration;

mod bitset;
mod pacer;
pub mod receiver;
pub mod sender;
pub mod wire;
mod work;

pub use receiver::{Receiver, ReceiverConfig, ReceiverStats};
pub use sender::{Sender, SenderConfig, SenderStats};
pub use wire::{IndexRanges, Message, Packet, ReceiverId, SessionId, BLOCK_SIZE, MAX_DATAGRAM};

/// A point on the caller's monotonic clock, in nanoseconds since an origin
/// the caller picks (its process start, or zero in a simulation). Only
/// differences matter. Arithmetic saturates instead of panicking, so a
/// far-future deadline is just "never".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    /// The time `d` after the origin, e.g. `Instant::now() - start`.
    pub fn from_duration(d: Duration) -> Time {
        Time(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time since the origin, to map back onto the caller's clock.
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

/// A datagram [`Sender::poll_transmit`] or [`Receiver::poll_transmit`] wrote
/// into the caller's buffer, to be sent to the session's multicast group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written to the buffer.
    pub size: usize,
    /// For a block, the chunk bytes the caller must append after the
    /// `size` bytes of header before sending; `None` for every other
    /// message.
    pub payload: Option<Payload>,
}

/// Bytes of one chunk that complete a block datagram: `chunk`'s encoded
/// bytes `[offset, offset + len)`, always inside the chunk's `csize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub chunk: u32,
    pub offset: u32,
    pub len: u32,
}

/// Why a sender or receiver could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// the image has no chunks or more than a session can address
    #[error("chunk count {0} outside 1..={max}", max = wire::MAX_CHUNKS)]
    ChunkCount(usize),
    /// a chunk's encoded size is zero or over the largest chunk
    #[error("chunk {index}: size {csize} outside 1..={max}", max = crate::chunk::MAX_CHUNK_BYTES)]
    ChunkSize { index: u32, csize: u32 },
    /// a chunk to receive is not in the image
    #[error("needed chunk {0} is past the end of the image")]
    NeedOutOfRange(u32),
    /// a needed chunk cannot fit the receiver's memory bound on its own
    #[error("chunk {index} of {csize} bytes exceeds the memory bound of {max} bytes")]
    ChunkOverBound { index: u32, csize: u32, max: u64 },
    /// a limit, rate or interval is zero or inconsistent
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

/// Checks a session's chunk sizes: what both machines are built from.
fn check_chunk_sizes(sizes: &[u32]) -> Result<(), ConfigError> {
    if sizes.is_empty() || sizes.len() > wire::MAX_CHUNKS as usize {
        return Err(ConfigError::ChunkCount(sizes.len()));
    }
    for (index, &csize) in (0u32..).zip(sizes) {
        if csize == 0 || csize as usize > crate::chunk::MAX_CHUNK_BYTES {
            return Err(ConfigError::ChunkSize { index, csize });
        }
    }
    Ok(())
}

/// A small deterministic generator (SplitMix64) for back-off jitter. Not
/// for anything an attacker must not guess.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration drawn uniformly from `[lo, hi)`; `lo` if the range is empty.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ns = u64::try_from(lo.as_nanos()).unwrap_or(u64::MAX);
        let hi_ns = u64::try_from(hi.as_nanos()).unwrap_or(u64::MAX);
        match hi_ns.checked_sub(lo_ns) {
            Some(span) if span > 0 => Duration::from_nanos(lo_ns + self.next_u64() % span),
            _ => lo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_arithmetic_saturates_instead_of_panicking() {
        let t = Time::from_nanos(u64::MAX - 1);
        assert_eq!(t + Duration::from_secs(1), Time::from_nanos(u64::MAX));
        assert_eq!(Time::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(Time::from_duration(Duration::MAX), Time::from_nanos(u64::MAX));
    }

    #[test]
    fn rng_is_deterministic_and_stays_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let d = a.between(Duration::from_millis(5), Duration::from_millis(15));
            assert_eq!(d, b.between(Duration::from_millis(5), Duration::from_millis(15)));
            assert!(d >= Duration::from_millis(5) && d < Duration::from_millis(15));
        }
        assert_eq!(a.between(Duration::from_secs(2), Duration::from_secs(1)), Duration::from_secs(2));
    }

    #[test]
    fn chunk_sizes_must_be_addressable() {
        assert_eq!(check_chunk_sizes(&[]), Err(ConfigError::ChunkCount(0)));
        assert_eq!(check_chunk_sizes(&[1, 0]), Err(ConfigError::ChunkSize { index: 1, csize: 0 }));
        assert!(check_chunk_sizes(&[1, u32::MAX]).is_err());
        assert!(check_chunk_sizes(&[1, 5000]).is_ok());
    }
}
