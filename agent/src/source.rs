//! Random-access reads from a disk, a partition or an image file.
//!
//! Every filesystem and partition-table probe reads through [`ReadAt`], so
//! the probes can be tested on in-memory images and the capture pipeline can
//! wrap the device with error handling of its own.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// A source of bytes addressed by absolute offset.
pub trait ReadAt: Sync {
    /// Fills `buf` from `offset`; a short read is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

/// A window onto part of another source: offsets are relative to `base`
/// and reads past `len` fail, so a filesystem probe cannot wander out of
/// its partition.
pub struct Slice<'a> {
    inner: &'a dyn ReadAt,
    base: u64,
    len: u64,
}

impl<'a> Slice<'a> {
    pub fn new(inner: &'a dyn ReadAt, base: u64, len: u64) -> Self {
        Slice { inner, base, len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl ReadAt for Slice<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the partition"))?;
        let _ = end;
        let abs = self.base.checked_add(offset).ok_or(io::ErrorKind::UnexpectedEof)?;
        self.inner.read_exact_at(buf, abs)
    }
}
