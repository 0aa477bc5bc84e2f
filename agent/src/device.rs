//! Block devices and image files behind one type: size, sector size,
//! where the data is, and the ways of making a range read back as zero.
//!
//! A regular file stands in for a disk everywhere (tests, exports, sparse
//! imports). For block devices the ioctls are the kernel's (BLKGETSIZE64,
//! BLKSSZGET, BLKZEROOUT, BLKDISCARD, BLKRRPART); for files the same
//! operations are `fallocate` and `SEEK_DATA`/`SEEK_HOLE`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};

use crate::ranges::RangeSet;
use crate::source::ReadAt;

mod ioctl {
    nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
    nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
    nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
    nix::ioctl_none!(blkrrpart, 0x12, 95);
}

/// An open disk, partition or image file.
pub struct Device {
    file: File,
    path: PathBuf,
    block: bool,
    size: u64,
    sector_size: u32,
}

impl Device {
    /// Opens for reading.
    pub fn open(path: &Path) -> io::Result<Device> {
        let file = File::open(path).map_err(|e| annotate(e, path, "open"))?;
        Device::from_file(file, path)
    }

    /// Opens an existing disk or file for writing. A block device is opened
    /// exclusively (`O_EXCL`), so one that is mounted or otherwise in use is
    /// refused rather than overwritten under the kernel's feet.
    pub fn open_rw(path: &Path) -> io::Result<Device> {
        let is_block = std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false);
        let flags = libc::O_CLOEXEC | if is_block { libc::O_EXCL } else { 0 };
        let file = OpenOptions::new().read(true).write(true).custom_flags(flags).open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                io::Error::new(e.kind(), format!("{}: in use (mounted, or held by another program)", path.display()))
            } else {
                annotate(e, path, "open for writing")
            }
        })?;
        Device::from_file(file, path)
    }

    /// Whether `path` is the null device (character device 1:3), which a
    /// load may write to in order to measure everything but the disk.
    pub fn is_null(path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3))
    }

    /// Opens the null device as a target of `size` bytes: writes succeed
    /// and go nowhere. Nothing can be read back from it.
    pub fn null(path: &Path, size: u64) -> io::Result<Device> {
        if !Device::is_null(path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not the null device", path.display()),
            ));
        }
        let file = OpenOptions::new().write(true).open(path).map_err(|e| annotate(e, path, "open for writing"))?;
        Ok(Device { file, path: path.to_owned(), block: false, size, sector_size: 512 })
    }

    /// Creates a new image file of `size` bytes, sparse, refusing to
    /// overwrite an existing one.
    pub fn create(path: &Path, size: u64) -> io::Result<Device> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| annotate(e, path, "create"))?;
        file.set_len(size).map_err(|e| annotate(e, path, "size"))?;
        Device::from_file(file, path)
    }

    fn from_file(file: File, path: &Path) -> io::Result<Device> {
        let meta = file.metadata()?;
        let ft = meta.file_type();
        let (block, size, sector_size) = if ft.is_block_device() {
            let mut size = 0u64;
            // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which
            // points at a live local.
            unsafe { ioctl::blkgetsize64(file.as_raw_fd(), &mut size) }
                .map_err(|e| annotate(e.into(), path, "BLKGETSIZE64"))?;
            let mut ss: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int through the pointer, which
            // points at a live local.
            unsafe { ioctl::blksszget(file.as_raw_fd(), &mut ss) }
                .map_err(|e| annotate(e.into(), path, "BLKSSZGET"))?;
            let ss = u32::try_from(ss).ok().filter(|s| (512..=65536).contains(s)).unwrap_or(512);
            (true, size, ss)
        } else if ft.is_file() {
            (false, meta.len(), 512)
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a block device or a regular file", path.display()),
            ));
        };
        Ok(Device { file, path: path.to_owned(), block, size, sector_size })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    pub fn is_block_device(&self) -> bool {
        self.block
    }

    /// Whether this is a whole disk: a block device that is not a
    /// partition of another (sysfs says which).
    pub fn is_whole_disk(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = self.file.metadata() else { return false };
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        self.block && !Path::new(&format!("/sys/dev/block/{major}:{minor}/partition")).exists()
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Tells the kernel we read front to back, so it reads ahead.
    pub fn advise_sequential(&self) {
        // Advice only: failure changes nothing but speed.
        let _ = nix::fcntl::posix_fadvise(&self.file, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
    }

    /// The ranges of `[start, end)` that may hold data. For a sparse file
    /// these skip its holes (SEEK_DATA/SEEK_HOLE); for a device or a file
    /// system that cannot say, it is the whole range.
    pub fn data_ranges(&self, start: u64, end: u64) -> io::Result<RangeSet> {
        let mut out = RangeSet::new();
        if self.block {
            out.insert(start, end);
            return Ok(out);
        }
        let mut at = start;
        while at < end {
            let data = match lseek(&self.file, to_off(at)?, Whence::SeekData) {
                Ok(d) => d as u64,
                Err(nix::errno::Errno::ENXIO) => break,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::EOPNOTSUPP) => {
                    out.insert(at, end);
                    break;
                }
                Err(e) => return Err(annotate(e.into(), &self.path, "SEEK_DATA")),
            };
            if data >= end {
                break;
            }
            let hole = match lseek(&self.file, to_off(data)?, Whence::SeekHole) {
                Ok(h) => h as u64,
                Err(e) => return Err(annotate(e.into(), &self.path, "SEEK_HOLE")),
            };
            out.insert(data, hole.min(end));
            at = hole;
        }
        Ok(out)
    }

    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| annotate(e, &self.path, &format!("write at byte {offset}")))
    }

    /// Makes `[offset, offset + len)` read back as zeros, as cheaply as the
    /// device allows: BLKZEROOUT on a disk, a punched hole in a file.
    pub fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        if self.block {
            let range = [offset, len];
            // SAFETY: BLKZEROOUT reads two u64s through the pointer, which
            // points at a live local array of two u64s.
            return unsafe { ioctl::blkzeroout(self.file.as_raw_fd(), &range) }
                .map(drop)
                .map_err(|e| annotate(e.into(), &self.path, &format!("zero bytes {offset}+{len}")));
        }
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate(&self.file, flags, to_off(offset)?, to_off(len)?) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EOPNOTSUPP) => self.write_zeros(offset, len),
            Err(e) => Err(annotate(e.into(), &self.path, &format!("zero bytes {offset}+{len}"))),
        }
    }

    /// Tells the device `[offset, offset + len)` is unused. Reads may then
    /// return anything; use [`Device::zero_range`] where zeros matter.
    pub fn discard_range(&self, offset: u64, len: u64) -> io::Result<()> {
        // Devices without discard: nothing to tell them.
        self.try_discard_range(offset, len).map(drop)
    }

    /// As [`Device::discard_range`], but says whether the device could
    /// discard at all (`false`: it did nothing).
    pub fn try_discard_range(&self, offset: u64, len: u64) -> io::Result<bool> {
        if len == 0 {
            return Ok(true);
        }
        if self.block {
            let range = [offset, len];
            // SAFETY: BLKDISCARD reads two u64s through the pointer, which
            // points at a live local array of two u64s.
            return match unsafe { ioctl::blkdiscard(self.file.as_raw_fd(), &range) } {
                Ok(_) => Ok(true),
                Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
                Err(e) => Err(annotate(e.into(), &self.path, &format!("discard bytes {offset}+{len}"))),
            };
        }
        self.zero_range(offset, len).map(|()| true)
    }

    fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; 1 << 20];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(zeros.len() as u64) as usize;
            self.write_all_at(&zeros[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Flushes written data to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all().map_err(|e| annotate(e, &self.path, "fsync"))
    }

    /// Asks the kernel to reread a disk's partition table after a
    /// whole-disk write. A no-op on files; EBUSY is reported, not fatal.
    pub fn reread_partitions(&self) -> io::Result<()> {
        if !self.block {
            return Ok(());
        }
        // SAFETY: BLKRRPART takes no argument.
        unsafe { ioctl::blkrrpart(self.file.as_raw_fd()) }
            .map(drop)
            .map_err(|e| annotate(e.into(), &self.path, "BLKRRPART"))
    }
}

impl ReadAt for Device {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

fn to_off(v: u64) -> io::Result<i64> {
    i64::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past 2^63"))
}

fn annotate(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_skip_the_holes_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let dev = Device::create(&path, 64 << 20).unwrap();
        dev.write_all_at(&[1u8; 4096], 8 << 20).unwrap();
        dev.write_all_at(&[2u8; 4096], 40 << 20).unwrap();
        let ranges = dev.data_ranges(0, 64 << 20).unwrap();
        let total = ranges.total();
        assert!((8192..4 << 20).contains(&total), "data ranges {ranges:?}");
        assert!(ranges.clip(8 << 20, (8 << 20) + 4096).next().is_some());
        assert!(ranges.clip(40 << 20, (40 << 20) + 4096).next().is_some());
    }

    #[test]
    fn zero_range_punches_a_file_back_to_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::create(&dir.path().join("f"), 1 << 20).unwrap();
        dev.write_all_at(&[9u8; 65536], 0).unwrap();
        dev.zero_range(4096, 8192).unwrap();
        let mut buf = vec![0u8; 65536];
        ReadAt::read_exact_at(&dev, &mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 9));
        assert!(buf[4096..12288].iter().all(|&b| b == 0));
        assert!(buf[12288..].iter().all(|&b| b == 9));
    }

    #[test]
    fn create_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        Device::create(&path, 4096).unwrap();
        assert!(Device::create(&path, 4096).is_err());
    }
}
