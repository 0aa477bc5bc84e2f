//! Shoal's formats and protocols, with no I/O.
//!
//! - [`manifest`]: what an image is (identity, partition table, the chunk
//!   of each window) in one canonical encoding, signed with ed25519.
//! - [`chunk`]: one window of a disk as an extent list and a zstd frame,
//!   and the verification steps that turn untrusted bytes into writable data.
//! - [`mcast`]: the multicast session protocol: wire codec and the sans-IO
//!   sender and receiver state machines.
//! - [`codec`]: the one bounded reader and canonical writer every decoder
//!   here uses.
//! - [`id`]: identifier newtypes.
//! - [`initramfs`]: where the agent initramfs puts its files, shared by
//!   the builder and the agent.
//!
//! Nothing here opens a file, a socket or a clock, or draws randomness:
//! callers pass time and random bytes in. Compression is computation, so
//! zstd is used here; tokio is not a dependency (a test checks).

#![forbid(unsafe_code)]

pub mod chunk;
pub mod codec;
pub mod id;
pub mod initramfs;
pub mod manifest;
pub mod mcast;

pub use chunk::WINDOW_SIZE;
pub use id::{ChunkHash, ImageId, KeyId, Mac, ParseMacError, RawHash};
