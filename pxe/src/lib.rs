//! Network boot services: DHCP (full and proxy, [`dhcp`]), a read-only
//! TFTP server ([`tftp`]) and iPXE script rendering ([`ipxe`]).
//!
//! This crate knows nothing of the catalog: boot decisions come through
//! [`dhcp::BootPolicy`], which the server implements. Both protocols have a
//! sans-IO core (`dhcp::Responder`, `tftp::transfer::Transfer`) and a thin
//! tokio driver; every packet from the network is decoded strictly and
//! fuzzed (`pxe/fuzz`).

#![forbid(unsafe_code)]

pub mod dhcp;
pub mod ipxe;
pub mod tftp;
