//! What the TFTP server has done, as atomics any thread may read: the
//! figures a Prometheus exporter will publish later. Counters only go up;
//! nothing here formats or exports them.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters, shared between the listener and its transfers.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of every counter at one moment (each read separately,
        /// so two counters may be a few events apart).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Snapshot {
            /// Every counter with its name, for an exporter.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Read requests that decoded and passed the rate limit.
    requests,
    /// Transfers started (a file was opened and the first packet queued).
    transfers_started,
    /// Transfers whose last block was acknowledged.
    transfers_ok,
    /// Transfers that ended early (timeout, peer error, read error).
    transfers_failed,
    /// File bytes the clients acknowledged.
    bytes_acked,
    /// File bytes sent, retransmissions included.
    bytes_sent,
    /// DATA packets sent again.
    blocks_resent,
    /// Datagrams that did not decode (on the listener or a transfer).
    malformed,
    /// Stray DATA, ACK, ERROR or OACK datagrams on the listener.
    stray,
    /// Requests for names that do not exist (ERROR 1).
    not_found,
    /// Requests for names that would leave the root (ERROR 2).
    escapes,
    /// Requests refused for their name, permissions or file type (ERROR 2).
    denied,
    /// Write requests (always refused, ERROR 2).
    write_requests,
    /// Requests refused because of the concurrent-transfer limit (ERROR 0).
    busy,
    /// Requests dropped silently by the per-client rate limit.
    rate_limited,
    /// Read requests repeated while their transfer was running (ignored).
    duplicate_requests,
    /// Datagrams to a transfer from the wrong address or port (ERROR 5).
    wrong_tid,
    /// Transfers that ran out of retransmissions.
    timeouts,
    /// Transfers the client ended with an ERROR.
    peer_errors,
    /// Transfers the client broke with a packet a reader never sends.
    protocol_errors,
    /// Socket and file errors.
    io_errors,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        Counters::add(counter, 1);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_copies_every_counter_by_name() {
        let c = Counters::default();
        Counters::bump(&c.requests);
        Counters::add(&c.bytes_sent, 512);
        let s = c.snapshot();
        assert_eq!((s.requests, s.bytes_sent, s.busy), (1, 512, 0));
        assert!(s.fields().contains(&("bytes_sent", 512)));
        assert_eq!(s.fields().len(), 21);
    }
}
