//! Scrubbing a disk before it is captured: what makes one machine's disk
//! that machine's, and must not be copied onto every node loaded from the
//! image, is removed from each ext2/3/4 filesystem being captured.
//!
//! **This modifies the source disk.** Each filesystem is mounted
//! read-write (a loop device over its bytes, on a private temporary
//! directory: see [`crate::mount`]), edited, and unmounted before the
//! capture reads it. Capture with scrubbing off to leave a disk untouched.
//!
//! | category        | what                                                        |
//! |-----------------|-------------------------------------------------------------|
//! | `ssh-host-keys` | `/etc/ssh/ssh_host_*` removed (regenerated on boot)          |
//! | `shell-history` | `.bash_history` and friends in `/root` and `/home/*` removed |
//! | `logs`          | regular files under `/var/log` truncated, directories kept   |
//! | `machine-id`    | `/etc/machine-id` emptied, `/var/lib/dbus/machine-id` removed |
//! | `cloud-init`    | `/var/lib/cloud/{instances,instance,data}` removed           |
//! | `passwords`     | hashes in `/etc/shadow` (and `passwd`, `-` backups) become `!` |
//!
//! Filesystems of other kinds, and swap, are left alone. A filesystem that
//! looks like ext but cannot be read or mounted stops the capture: it
//! would otherwise be captured unscrubbed.

pub mod files;
pub mod shadow;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::device::Device;
use crate::ext4;
use crate::mount::Mounted;
use crate::source::{ReadAt, Slice};
use crate::table;

/// A kind of machine-specific state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    SshHostKeys,
    ShellHistory,
    Logs,
    MachineId,
    CloudInit,
    Passwords,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::SshHostKeys,
        Category::ShellHistory,
        Category::Logs,
        Category::MachineId,
        Category::CloudInit,
        Category::Passwords,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::SshHostKeys => "ssh-host-keys",
            Category::ShellHistory => "shell-history",
            Category::Logs => "logs",
            Category::MachineId => "machine-id",
            Category::CloudInit => "cloud-init",
            Category::Passwords => "passwords",
        }
    }
}

impl FromStr for Category {
    type Err = String;

    fn from_str(s: &str) -> Result<Category, String> {
        Category::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            let all: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
            format!("not a scrub category (one of {})", all.join(", "))
        })
    }
}

/// What to scrub: every category but those kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubConfig {
    pub keep: Vec<Category>,
}

/// What a scrub did to one filesystem.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FsReport {
    /// `None` for a filesystem on the whole source.
    pub partition: Option<u32>,
    /// Paths touched, per category (relative to the filesystem's root).
    pub done: BTreeMap<Category, Vec<String>>,
    /// Accounts whose passwords were locked.
    pub locked_accounts: Vec<String>,
}

impl FsReport {
    /// One line per category: `logs: 12 (var/log/syslog, ...)`.
    pub fn lines(&self) -> Vec<String> {
        self.done
            .iter()
            .map(|(c, paths)| {
                let mut shown: Vec<&str> = paths.iter().take(3).map(String::as_str).collect();
                if paths.len() > 3 {
                    shown.push("...");
                }
                let extra = if *c == Category::Passwords && !self.locked_accounts.is_empty() {
                    format!("; accounts locked: {}", self.locked_accounts.join(", "))
                } else {
                    String::new()
                };
                format!("{}: {} ({}){extra}", c.name(), paths.len(), shown.join(", "))
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScrubError {
    /// the source's partition table cannot be read
    #[error("partition table")]
    Table(#[from] table::TableError),
    /// a filesystem looks like ext2/3/4 but cannot be read
    #[error("{0}: looks like ext2/3/4 but cannot be read, so it cannot be scrubbed (capture with scrubbing off to take it as it is)")]
    Unreadable(String),
    /// mounting, editing or unmounting failed
    #[error("{what}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ScrubError {
    let what = what.into();
    move |source| ScrubError::Io { what, source }
}

/// Scrubs the tree at `dir` (a mounted filesystem, or any directory).
pub fn scrub_tree(dir: &Path, cfg: &ScrubConfig) -> io::Result<FsReport> {
    let root = files::Root::open(dir)?;
    let mut report = FsReport::default();
    for a in files::select(&root)? {
        if cfg.keep.contains(&a.category) {
            continue;
        }
        let locked = files::apply(&root, &a)?;
        for name in locked {
            if !report.locked_accounts.contains(&name) {
                report.locked_accounts.push(name);
            }
        }
        report.done.entry(a.category).or_default().push(a.path.display().to_string());
    }
    Ok(report)
}

/// Scrubs the ext2/3/4 filesystems of `source` that a capture of
/// `partitions` (all of them when empty) would take, mounting each on a
/// directory under `scratch`.
pub fn scrub_source(
    source: &Path,
    partitions: &[u32],
    cfg: &ScrubConfig,
    scratch: &Path,
) -> Result<Vec<FsReport>, ScrubError> {
    let regions = {
        // Exclusive for a disk: one with a mounted filesystem is refused
        // rather than mounted a second time.
        let dev = Device::open_rw(source).map_err(io_err(format!("opening {}", source.display())))?;
        ext_regions(&dev, partitions)?
    };
    let mut out = Vec::new();
    for (partition, offset, size) in regions {
        let what = match partition {
            Some(n) => format!("partition {n} of {}", source.display()),
            None => source.display().to_string(),
        };
        let m = Mounted::ext(source, offset, size, scratch).map_err(io_err(format!("mounting {what}")))?;
        let mut report = scrub_tree(m.dir(), cfg).map_err(io_err(format!("scrubbing {what}")))?;
        m.unmount().map_err(io_err(format!("unmounting {what}")))?;
        report.partition = partition;
        out.push(report);
    }
    Ok(out)
}

/// The ext filesystems a capture of `partitions` covers: (partition,
/// offset, size).
fn ext_regions(dev: &Device, partitions: &[u32]) -> Result<Vec<(Option<u32>, u64, u64)>, ScrubError> {
    let size = dev.size();
    let mut candidates = Vec::new();
    match table::probe(dev, size)? {
        Some(t) => {
            for p in t.partitions.iter().filter(|p| !p.extended) {
                if partitions.is_empty() || partitions.contains(&p.number) {
                    candidates.push((Some(p.number), p.start, p.size));
                }
            }
        }
        None => candidates.push((None, 0, size)),
    }
    let mut out = Vec::new();
    for (n, start, len) in candidates {
        let slice = Slice::new(dev as &dyn ReadAt, start, len);
        match ext4::probe(&slice, len) {
            Ok(Some(info)) => out.push((n, start, info.size.min(len))),
            Ok(None) => {}
            Err(_) => return Err(ScrubError::Unreadable(n.map_or("the source".into(), |n| format!("partition {n}")))),
        }
    }
    Ok(out)
}

/// Where scrub mounts go by default: the agent's tmpfs in the initramfs,
/// else the system's temporary directory.
pub fn default_scratch() -> PathBuf {
    if std::process::id() == 1 {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests;
