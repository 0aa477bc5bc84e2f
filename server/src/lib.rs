//! The `shoal` server and command line.
//!
//! Today: the local chunk store and image catalog ([`store`]), the
//! server's signing keys ([`keys`]), the offline image commands
//! ([`image`]: capture, deploy, verify, import, export) built on the
//! agent's disk library, `shoal image build` ([`build`]: a bootable disk
//! image from a root filesystem tree), `shoal initramfs build`
//! ([`initramfs`]); the control plane's catalog ([`catalog`]: projects,
//! tokens, images' metadata, nodes, jobs, in SQLite), its HTTP API ([`api`],
//! with [`metrics`]) and the CLI's client of it ([`client`]); and the daemon
//! ([`serve`]: image serving, multicast sessions, uploads from capturing
//! agents, network boot with DHCP, TFTP and iPXE scripts), the job runner
//! that executes the catalog's jobs ([`jobs`], with the webhook) and the
//! power drivers it switches nodes with ([`power`]).
//!
//! What is not here: partition-table and filesystem parsing, and the
//! capture and deploy pipelines (all in `shoal-agent`); formats (in
//! `shoal-proto`).

pub mod api;
pub mod build;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod customize;
pub mod image;
pub mod initramfs;
pub mod jobs;
pub mod keys;
pub mod metadata;
pub mod metrics;
pub mod power;
pub mod progress;
pub mod serve;
pub mod store;
