//! Wiping a disk: every byte discarded (BLKDISCARD, fast, but what reads
//! back afterwards is up to the device) or zeroed (BLKZEROOUT, which
//! devices that can do it offload; otherwise the kernel writes zeros).
//! A file target gets its blocks deallocated either way.
//!
//! The work is done in steps of [`STEP`] bytes, so progress moves and no
//! single ioctl holds the disk for minutes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::capture::Progress;
use crate::device::Device;

/// Bytes per ioctl.
pub const STEP: u64 = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WipeMode {
    /// Tell the device every block is unused (TRIM/UNMAP).
    Discard,
    /// Make every block read back as zeros.
    Zero,
}

impl std::str::FromStr for WipeMode {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<WipeMode, &'static str> {
        match s {
            "discard" => Ok(WipeMode::Discard),
            "zero" => Ok(WipeMode::Zero),
            _ => Err("not discard or zero"),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WipeReport {
    pub mode: WipeMode,
    pub bytes: u64,
    #[serde(serialize_with = "crate::capture::secs")]
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WipeError {
    #[error("wiping {path}")]
    Io { path: String, source: std::io::Error },
    /// a discard wipe of a device that cannot discard did nothing
    #[error("{0} does not support discard: nothing was wiped (use the zero mode)")]
    NoDiscard(String),
}

/// Wipes the whole of `target`, then asks the kernel to reread its (now
/// absent) partition table.
pub fn wipe(target: &Path, mode: WipeMode, progress: &Progress) -> Result<WipeReport, WipeError> {
    let start = Instant::now();
    let err = |source| WipeError::Io { path: target.display().to_string(), source };
    let dev = Device::open_rw(target).map_err(err)?;
    let size = dev.size();
    progress.total.store(size, std::sync::atomic::Ordering::Relaxed);
    let mut at = 0;
    while at < size {
        let len = STEP.min(size - at);
        match mode {
            WipeMode::Zero => dev.zero_range(at, len).map_err(err)?,
            WipeMode::Discard => {
                if !dev.try_discard_range(at, len).map_err(err)? {
                    return Err(WipeError::NoDiscard(target.display().to_string()));
                }
            }
        }
        progress.add(len);
        at += len;
    }
    dev.sync().map_err(err)?;
    // The table is gone; a kernel that will not reread it is not an error.
    let _ = dev.reread_partitions();
    Ok(WipeReport { mode, bytes: size, elapsed: start.elapsed() })
}
