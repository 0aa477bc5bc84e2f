//! Builds the agent initramfs: a zstd-compressed newc cpio holding the
//! static `shoal-agent` as `/init`, the server's public key, and the kernel
//! modules for common NICs and disks with everything they depend on
//! (resolved from `modules.dep`), plus the list of them in load order that
//! the agent reads. busybox can be added for a debug shell.
//!
//! Where each file goes is `shoal_proto::initramfs`, the contract with the
//! agent. The archive is reproducible: entries sorted by path, owner root,
//! every time 0, inode numbers in order, single-threaded zstd; the same
//! inputs give the same bytes.
//!
//! Modules are stored uncompressed whatever the kernel tree holds (`.ko`,
//! `.ko.xz`, `.ko.zst`): a kernel without `CONFIG_MODULE_DECOMPRESS`, such
//! as Debian 12's, cannot load compressed ones, and the archive is
//! compressed as a whole anyway.
//!
//! What is not here: the kernel itself, and anything about how the agent
//! boots (the `init` module of `shoal-agent`).

#![forbid(unsafe_code)]

pub mod elf;
pub mod modules;
pub mod newc;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use shoal_proto::initramfs as layout;
use shoal_proto::KeyId;

pub use modules::ModuleName;
use modules::{DepError, ModuleDeps};
use newc::{Entry, Kind};

/// The drivers a node needs to reach its disk and the network: virtio (with
/// its PCI transport), SCSI disks, NVMe, AHCI and common Intel and Mellanox
/// NICs; and virtio-rng, which seeds the kernel's random number generator
/// in VMs without RDRAND (the agent needs it for DHCP and the session);
/// and loop, through which the capture task mounts the filesystems it
/// scrubs. Those a kernel lacks or has built in are reported and skipped.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_rng",
    "sd_mod",
    "nvme",
    "ahci",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "mlx5_core",
    "loop",
];

/// zstd level for the archive: it is built once and unpacked at every boot.
pub const DEFAULT_LEVEL: i32 = 19;

/// What to build from.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// The kernel's modules, e.g. `/lib/modules/6.1.0-56-cloud-amd64`.
    pub modules_dir: PathBuf,
    /// The static `shoal-agent`.
    pub agent: PathBuf,
    /// The key the agent trusts manifests from.
    pub key: KeyId,
    pub busybox: Option<PathBuf>,
    pub modules: Vec<ModuleName>,
    pub level: i32,
}

impl BuildConfig {
    /// The default modules and compression level.
    pub fn new(modules_dir: PathBuf, agent: PathBuf, key: KeyId) -> BuildConfig {
        let modules = DEFAULT_MODULES.iter().map(|m| ModuleName::new(m)).collect();
        BuildConfig { modules_dir, agent, key, busybox: None, modules, level: DEFAULT_LEVEL }
    }
}

/// What went in.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BuildReport {
    pub agent_bytes: u64,
    pub busybox_bytes: Option<u64>,
    /// Module files in load order, relative to the modules directory.
    pub modules: Vec<String>,
    /// Wanted modules the kernel has built in.
    pub builtin: Vec<String>,
    /// Wanted modules this kernel does not have.
    pub absent: Vec<String>,
    pub entries: usize,
    pub cpio_bytes: u64,
    pub compressed_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// an input file could not be read
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    /// the agent cannot run as /init
    #[error("the agent {path}")]
    Agent { path: PathBuf, source: elf::ElfError },
    #[error("resolving module dependencies")]
    Deps(#[from] DepError),
    /// a module file could not be decompressed
    #[error("decompressing {path}")]
    Decompress { path: PathBuf, source: io::Error },
    /// a module compressed with something other than xz or zstd
    #[error("{0}: only .ko, .ko.xz and .ko.zst modules are supported")]
    ModuleFormat(PathBuf),
    #[error("compressing the archive")]
    Compress(#[source] io::Error),
    #[error("writing {path}")]
    Write { path: PathBuf, source: io::Error },
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    fs::read(path).map_err(|source| BuildError::Read { path: path.to_owned(), source })
}

/// Strips the leading `/` of a layout path.
fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The archive's entries, sorted, with every parent directory present.
struct Tree(BTreeMap<String, Entry>);

impl Tree {
    fn add(&mut self, path: &str, perm: u32, kind: Kind) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            self.0.entry(dir.to_string()).or_insert(Entry { path: dir.to_string(), perm: 0o755, kind: Kind::Dir });
            at += i + 1;
        }
        self.0.insert(path.to_string(), Entry { path: path.to_string(), perm, kind });
    }
}

/// The module file's bytes, uncompressed, and its name without the
/// compression suffix.
fn module_file(dir: &Path, path: &str) -> Result<(String, Vec<u8>), BuildError> {
    let full = dir.join(path);
    let bytes = read(&full)?;
    let err = |source| BuildError::Decompress { path: full.clone(), source };
    if let Some(base) = path.strip_suffix(".zst") {
        Ok((base.to_string(), zstd::decode_all(&bytes[..]).map_err(err)?))
    } else if let Some(base) = path.strip_suffix(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut &bytes[..], &mut out).map_err(|e| err(io::Error::other(e.to_string())))?;
        Ok((base.to_string(), out))
    } else if path.ends_with(".ko") {
        Ok((path.to_string(), bytes))
    } else {
        Err(BuildError::ModuleFormat(full))
    }
}

/// Builds the compressed archive.
pub fn build(cfg: &BuildConfig) -> Result<(Vec<u8>, BuildReport), BuildError> {
    let mut report = BuildReport::default();
    let mut tree = Tree(BTreeMap::new());
    for dir in ["dev", "proc", "sys", "run", "etc/shoal", "lib/modules"] {
        tree.add(dir, 0o755, Kind::Dir);
    }
    tree.add("tmp", 0o1777, Kind::Dir);
    // The kernel opens /dev/console for init's stdin, stdout and stderr
    // before devtmpfs is mounted: without this node init has none.
    tree.add("dev/console", 0o600, Kind::CharDev(5, 1));

    let agent = read(&cfg.agent)?;
    elf::check_static(&agent).map_err(|source| BuildError::Agent { path: cfg.agent.clone(), source })?;
    report.agent_bytes = agent.len() as u64;
    tree.add(rel(layout::INIT), 0o755, Kind::File(agent));
    tree.add(rel(layout::SERVER_KEY), 0o644, Kind::File(format!("{}\n", cfg.key).into_bytes()));

    if let Some(bb) = &cfg.busybox {
        let bytes = read(bb)?;
        report.busybox_bytes = Some(bytes.len() as u64);
        tree.add(rel(layout::BUSYBOX), 0o755, Kind::File(bytes));
        tree.add("bin/sh", 0o777, Kind::Symlink("busybox".into()));
    }

    let dep_path = cfg.modules_dir.join("modules.dep");
    let deps = ModuleDeps::parse(&String::from_utf8_lossy(&read(&dep_path)?))?;
    let builtin = match fs::read_to_string(cfg.modules_dir.join("modules.builtin")) {
        Ok(text) => modules::builtin(&text),
        Err(_) => Default::default(),
    };
    let (order, unknown) = deps.resolve(&cfg.modules)?;
    for name in unknown {
        if builtin.contains(&name) {
            report.builtin.push(name.to_string());
        } else {
            report.absent.push(name.to_string());
        }
    }
    let mut list = String::new();
    for path in &order {
        let (name, bytes) = module_file(&cfg.modules_dir, path)?;
        tree.add(&format!("{}/{name}", rel(layout::MODULES_DIR)), 0o644, Kind::File(bytes));
        list.push_str(&name);
        list.push('\n');
        report.modules.push(name);
    }
    tree.add(rel(layout::MODULE_LIST), 0o644, Kind::File(list.into_bytes()));

    let entries: Vec<Entry> = tree.0.into_values().collect();
    report.entries = entries.len();
    let cpio = newc::write(&entries);
    report.cpio_bytes = cpio.len() as u64;
    let compressed = zstd::stream::encode_all(&cpio[..], cfg.level).map_err(BuildError::Compress)?;
    report.compressed_bytes = compressed.len() as u64;
    Ok((compressed, report))
}

/// Builds the archive into `out`, replacing it only once it is complete.
pub fn build_to(cfg: &BuildConfig, out: &Path) -> Result<BuildReport, BuildError> {
    let (bytes, report) = build(cfg)?;
    let err = |source| BuildError::Write { path: out.to_owned(), source };
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, &bytes).map_err(err)?;
    fs::rename(&tmp, out).map_err(err)?;
    Ok(report)
}

/// Why an archive could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("decompressing")]
    Decompress(#[source] io::Error),
    #[error("cpio")]
    Cpio(#[from] shoal_proto::codec::DecodeError),
}

/// The entries of a compressed archive made by [`build`].
pub fn read_archive(bytes: &[u8]) -> Result<Vec<Entry>, ReadError> {
    let cpio = zstd::stream::decode_all(bytes).map_err(ReadError::Decompress)?;
    Ok(newc::read(&cpio)?)
}

#[cfg(test)]
mod tests;
