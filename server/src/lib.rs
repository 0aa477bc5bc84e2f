//! The `shoal` server and command line.
//!
//! Today: the local chunk store and image catalog ([`store`]), the
//! server's signing keys ([`keys`]), the offline image commands
//! ([`image`]: capture, deploy, verify, import, export) built on the
//! agent's disk library, `shoal image build` ([`build`]: a bootable disk
//! image from a root filesystem tree), `shoal initramfs build`
//! ([`initramfs`]), and the daemon ([`serve`]: HTTP API, multicast
//! sessions, uploads from capturing agents, network boot with DHCP, TFTP
//! and iPXE scripts). Jobs, power control and the catalog database come
//! with later work.
//!
//! What is not here: partition-table and filesystem parsing, and the
//! capture and deploy pipelines (all in `shoal-agent`); formats (in
//! `shoal-proto`).

pub mod build;
pub mod cli;
pub mod image;
pub mod initramfs;
pub mod keys;
pub mod progress;
pub mod serve;
pub mod store;
