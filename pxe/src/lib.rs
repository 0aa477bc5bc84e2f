//! Network boot services: DHCP (full and proxy), a read-only TFTP server
//! and iPXE script rendering.
//!
//! Empty for now: the network-boot work fills it. It will know nothing of
//! the catalog; boot decisions come through a trait the server implements.

#![forbid(unsafe_code)]
