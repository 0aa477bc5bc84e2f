//! The Shoal agent and its disk library.
//!
//! The disk library reads partition tables and filesystem allocation maps,
//! and reads and writes the extents of an image: the `shoal` command line
//! reuses it for offline capture and deploy, and the agent (PID 1 in the
//! initramfs) uses it to load nodes.
//!
//! [`init`] is the agent as PID 1 in the initramfs: mounts, modules, its
//! own DHCP client, then the task (today from the kernel command line):
//! a load ([`load`]), a capture to the server ([`upload`], after
//! [`scrub`]) or a wipe ([`wipe`]).
//!
//! What is not here: HTTP routing, the catalog, the chunk store (all in the
//! server), and any wire or image format (in `shoal-proto`).

pub mod blank;
pub mod capture;
pub mod check;
pub mod deploy;
pub mod device;
pub mod ext4;
pub mod firstboot;
pub mod init;
pub mod load;
pub mod mount;
pub mod net;
pub mod os_release;
pub mod place;
pub mod plan;
pub mod ranges;
pub mod scrub;
pub mod source;
pub mod swap;
pub mod table;
pub mod upload;
pub mod wipe;
