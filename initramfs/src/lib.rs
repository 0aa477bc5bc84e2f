//! Builds the agent initramfs: a newc cpio with the static `shoal-agent`
//! as /init, the server's public key and the kernel modules the agent
//! needs, with their dependencies from modules.dep.
//!
//! Empty for now: the node-side work fills it.

#![forbid(unsafe_code)]
