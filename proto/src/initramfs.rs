//! Where things are in the agent initramfs: the contract between the
//! builder (`shoal-initramfs`) and the agent running as PID 1. Paths are
//! absolute on the node; the builder writes them without the leading `/`.

/// The static agent, run by the kernel as PID 1.
pub const INIT: &str = "/init";

/// The server's manifest-signing public key, one hex line (as `shoal key`
/// prints it). The agent trusts manifests signed with this key only.
pub const SERVER_KEY: &str = "/etc/shoal/server.pub";

/// Kernel modules, each at its path relative to `/lib/modules/VERSION` in
/// the kernel's tree (e.g. `kernel/drivers/net/virtio_net.ko`), always
/// uncompressed.
pub const MODULES_DIR: &str = "/lib/modules";

/// The modules to load, one path relative to [`MODULES_DIR`] a line, in
/// load order (every module after the modules it depends on).
pub const MODULE_LIST: &str = "/etc/shoal/modules.load";

/// busybox, when the initramfs was built with one: the debug shell.
pub const BUSYBOX: &str = "/bin/busybox";
