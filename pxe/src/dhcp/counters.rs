//! What the DHCP service did, as counters that other threads can read
//! while it runs: requests by type, replies by type, drops by reason.

use std::sync::atomic::{AtomicU64, Ordering};

use super::packet::MessageKind;
use super::reply::ReplyKind;

/// Why a datagram got no answer. Each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// larger than [`super::packet::MAX_PACKET`]
    Oversized,
    /// refused by the decoder
    Malformed,
    /// `dhcproto` panicked on bytes the pre-scan let through
    DecoderPanic,
    /// a reply, or a message type only servers send
    NotClientRequest,
    /// over the per-MAC rate limit
    RateLimited,
    /// addressed to another server (option 54), or part of the site
    /// server's exchange in proxy mode
    NotForUs,
    /// proxy mode: not a PXE or HTTP boot client
    NotPxe,
    /// a MAC the boot policy does not know, and no pool or menu for it
    UnknownClient,
    /// proxy mode: a registered node whose next boot is local
    LocalBoot,
    /// no boot file for the client's architecture and class
    NoBootFile,
    /// the dynamic pool has no free address
    PoolExhausted,
    /// a message type this mode does not answer on this port
    Unexpected,
    /// the reply could not be encoded within the client's size limit
    EncodeFailed,
    /// the driver could not send the reply
    SendFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::DecoderPanic,
        DropReason::NotClientRequest,
        DropReason::RateLimited,
        DropReason::NotForUs,
        DropReason::NotPxe,
        DropReason::UnknownClient,
        DropReason::LocalBoot,
        DropReason::NoBootFile,
        DropReason::PoolExhausted,
        DropReason::Unexpected,
        DropReason::EncodeFailed,
        DropReason::SendFailed,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::DecoderPanic => "decoder_panic",
            DropReason::NotClientRequest => "not_client_request",
            DropReason::RateLimited => "rate_limited",
            DropReason::NotForUs => "not_for_us",
            DropReason::NotPxe => "not_pxe",
            DropReason::UnknownClient => "unknown_client",
            DropReason::LocalBoot => "local_boot",
            DropReason::NoBootFile => "no_boot_file",
            DropReason::PoolExhausted => "pool_exhausted",
            DropReason::Unexpected => "unexpected",
            DropReason::EncodeFailed => "encode_failed",
            DropReason::SendFailed => "send_failed",
        }
    }
}

/// Live counters. Relaxed atomics: each is a tally, not a synchronisation
/// point.
#[derive(Debug, Default)]
pub struct Counters {
    discover: AtomicU64,
    request: AtomicU64,
    decline: AtomicU64,
    release: AtomicU64,
    inform: AtomicU64,
    offers: AtomicU64,
    acks: AtomicU64,
    naks: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    pub fn count_request(&self, kind: MessageKind) {
        let c = match kind {
            MessageKind::Discover => &self.discover,
            MessageKind::Request => &self.request,
            MessageKind::Decline => &self.decline,
            MessageKind::Release => &self.release,
            MessageKind::Inform => &self.inform,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_reply(&self, kind: ReplyKind) {
        let c = match kind {
            ReplyKind::Offer => &self.offers,
            ReplyKind::Ack => &self.acks,
            ReplyKind::Nak => &self.naks,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters' values now.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            discover: get(&self.discover),
            request: get(&self.request),
            decline: get(&self.decline),
            release: get(&self.release),
            inform: get(&self.inform),
            offers: get(&self.offers),
            acks: get(&self.acks),
            naks: get(&self.naks),
            drops: self.drops.each_ref().map(get),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    pub discover: u64,
    pub request: u64,
    pub decline: u64,
    pub release: u64,
    pub inform: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl CountersSnapshot {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Drops for every reason together.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `(reason, count)` for each reason.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.dropped(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?} out of order in ALL");
        }
        let c = Counters::default();
        c.count_drop(DropReason::SendFailed);
        c.count_drop(DropReason::Malformed);
        c.count_drop(DropReason::Malformed);
        let s = c.snapshot();
        assert_eq!(s.dropped(DropReason::Malformed), 2);
        assert_eq!(s.dropped(DropReason::SendFailed), 1);
        assert_eq!(s.dropped_total(), 3);
    }
}
