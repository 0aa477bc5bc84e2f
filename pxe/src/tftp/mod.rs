//! A read-only TFTP server (RFC 1350) with option negotiation (RFC 2347),
//! block size (RFC 2348), timeout and transfer size (RFC 2349) and
//! windowing (RFC 7440), for handing iPXE and the agent to booting nodes.
//!
//! - [`packet`]: the strict, bounded codec for every datagram (its
//!   reader and writer in `codec`).
//! - [`options`]: what a read request's options are granted.
//! - [`transfer`]: one read transfer as a sans-IO state machine with the
//!   shape every Shoal protocol machine has (`handle`, `handle_timeout`,
//!   `poll_transmit`, `poll_timeout`, `poll`).
//! - [`root`]: the served directory; names are resolved by the kernel with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so nothing outside
//!   it can be named.
//! - [`server`]: the tokio driver: listener, one socket and task per
//!   transfer, limits, counters and logs. [`net`] holds its socket options.
//! - [`counters`]: what the server did, as atomics for an exporter.
//!
//! Architecture invariant: `codec`, `packet`, `options`, `transfer`,
//! `netascii` and `limit` do no I/O and read no clock; only `server`, `net` and `root`
//! touch the system.
//!
//! Deliberately absent: writes (WRQ always gets ERROR 2, whatever the
//! permissions), the `mail` mode, multicast TFTP (RFC 2090), `utimeout`
//! and other non-RFC options (ignored), and any mapping of names beyond
//! dropping a leading `/` (no backslash mapping, no rewrite rules).

mod codec;
pub mod counters;
pub mod limit;
pub mod net;
mod netascii;
pub mod options;
pub mod packet;
pub mod root;
pub mod server;
pub mod transfer;

pub use counters::{Counters, Snapshot};
pub use limit::RateLimit;
pub use options::TransferConfig;
pub use packet::{ErrorCode, Mode, Options, Packet, PacketError, Request};
pub use root::{OpenError, Root};
pub use server::{Server, ServerConfig, ServerError};
pub use transfer::{Event, Failure, Refusal, Stats, Transfer, Transmit};
