//! The newc ("new ASCII") cpio format the kernel unpacks into its rootfs:
//! a writer that gives the same bytes for the same entries, and a bounded
//! reader to check what was written.
//!
//! Each entry is a 110-byte header (`070701` and thirteen 8-digit hex
//! fields), the NUL-terminated name padded to a multiple of 4, and the data
//! padded to a multiple of 4. `TRAILER!!!` ends the archive.

use std::fmt::Write as _;

use shoal_proto::codec::{DecodeError, Reader};

const MAGIC: &[u8; 6] = b"070701";
const HEADER: usize = 110;
const TRAILER: &str = "TRAILER!!!";
/// No name in an archive we read is longer than this.
const MAX_NAME: usize = 4096;

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A character device node (major, minor).
    CharDev(u32, u32),
}

/// One archive member. Owner is always root; the time is always 0, so the
/// same entries give the same archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The path without a leading `/`, e.g. `etc/shoal/server.pub`.
    pub path: String,
    /// Permission bits only (the file type comes from `kind`).
    pub perm: u32,
    pub kind: Kind,
}

impl Entry {
    pub fn mode(&self) -> u32 {
        let ty = match self.kind {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDev(..) => S_IFCHR,
        };
        ty | (self.perm & 0o7777)
    }

    fn data(&self) -> &[u8] {
        match &self.kind {
            Kind::File(d) => d,
            Kind::Symlink(t) => t.as_bytes(),
            Kind::Dir | Kind::CharDev(..) => &[],
        }
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, rdev: (u32, u32), name: &str) {
    let mut h = String::with_capacity(HEADER);
    h.push_str("070701");
    // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    for v in [ino, mode, 0, 0, nlink, 0, size as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0] {
        let _ = write!(h, "{v:08x}");
    }
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// The archive of `entries`, in the order given (callers sort them; a
/// directory must come before what it holds). Inode numbers count from 1.
pub fn write(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let nlink = if e.kind == Kind::Dir { 2 } else { 1 };
        let rdev = if let Kind::CharDev(ma, mi) = e.kind { (ma, mi) } else { (0, 0) };
        let data = e.data();
        header(&mut out, i as u32 + 1, e.mode(), nlink, data.len(), rdev, &e.path);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, (0, 0), TRAILER);
    out
}

fn hex_field(r: &mut Reader<'_>, what: &'static str) -> Result<u32, DecodeError> {
    let b = r.array::<8>(what)?;
    let s = std::str::from_utf8(&b).map_err(|_| DecodeError::Invalid(what))?;
    u32::from_str_radix(s, 16).map_err(|_| DecodeError::Invalid(what))
}

fn skip_pad(r: &mut Reader<'_>, at: usize) -> Result<(), DecodeError> {
    r.take((4 - at % 4) % 4, "padding").map(|_| ())
}

/// Reads an uncompressed newc archive back into entries (up to the
/// trailer; anything after it is ignored, as the kernel does with padding).
pub fn read(buf: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    loop {
        let start = buf.len() - r.remaining();
        if r.take(6, "magic")? != MAGIC {
            return Err(DecodeError::BadMagic("cpio header"));
        }
        let mut f = [0u32; 13];
        for v in &mut f {
            *v = hex_field(&mut r, "cpio header field")?;
        }
        let [_ino, mode, _uid, _gid, _nlink, _mtime, size, _, _, rmaj, rmin, namesize, _check] = f;
        let namesize = namesize as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(DecodeError::TooLong { what: "cpio name", len: namesize as u64, max: MAX_NAME as u64 });
        }
        let name = r.take(namesize, "cpio name")?;
        let name = std::str::from_utf8(&name[..namesize - 1]).map_err(|_| DecodeError::NotUtf8("cpio name"))?;
        skip_pad(&mut r, start + HEADER + namesize)?;
        if name == TRAILER {
            return Ok(out);
        }
        let data_at = buf.len() - r.remaining();
        let data = r.take(size as usize, "cpio data")?;
        skip_pad(&mut r, data_at + size as usize)?;
        let kind = match mode & 0o170000 {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File(data.to_vec()),
            S_IFLNK => {
                Kind::Symlink(String::from_utf8(data.to_vec()).map_err(|_| DecodeError::NotUtf8("symlink target"))?)
            }
            S_IFCHR => Kind::CharDev(rmaj, rmin),
            _ => return Err(DecodeError::Invalid("cpio file type")),
        };
        out.push(Entry { path: name.to_string(), perm: mode & 0o7777, kind });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry { path: "dev".into(), perm: 0o755, kind: Kind::Dir },
            Entry { path: "dev/console".into(), perm: 0o600, kind: Kind::CharDev(5, 1) },
            Entry { path: "init".into(), perm: 0o755, kind: Kind::File(b"\x7fELF...".to_vec()) },
            Entry { path: "sh".into(), perm: 0o777, kind: Kind::Symlink("busybox".into()) },
        ]
    }

    #[test]
    fn written_entries_read_back_the_same() {
        let bytes = write(&sample());
        assert_eq!(read(&bytes).unwrap(), sample());
    }

    #[test]
    fn every_header_and_data_starts_on_a_four_byte_boundary() {
        let bytes = write(&sample());
        assert_eq!(bytes.len() % 4, 0);
        // Each header starts with the magic at a multiple of 4.
        let starts: Vec<usize> = bytes.windows(6).enumerate().filter(|(_, w)| *w == MAGIC).map(|(i, _)| i).collect();
        assert_eq!(starts.len(), sample().len() + 1, "one header per entry plus the trailer");
        assert!(starts.iter().all(|s| s % 4 == 0), "{starts:?}");
    }

    #[test]
    fn the_header_matches_what_cpio_writes() {
        let bytes = write(&[Entry { path: "a".into(), perm: 0o644, kind: Kind::File(b"xyz".to_vec()) }]);
        let h = std::str::from_utf8(&bytes[..HEADER]).unwrap();
        let fields = [
            "00000001", "000081a4", "00000000", "00000000", "00000001", "00000000", "00000003", "00000000", "00000000",
            "00000000", "00000000", "00000002", "00000000",
        ];
        assert_eq!(h, format!("070701{}", fields.concat()));
        // Header and name together are padded to 4 (110 + 2 = 112), then the data.
        assert_eq!(&bytes[HEADER..HEADER + 2], b"a\0");
        assert_eq!(&bytes[HEADER + 2..HEADER + 6], b"xyz\0");
    }

    #[test]
    fn truncated_or_garbled_archives_are_errors() {
        let bytes = write(&sample());
        for cut in [0, 5, 50, HEADER + 3, bytes.len() - 1] {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(read(&bad).is_err());
        let mut bad = bytes;
        bad[6] = b'g';
        assert!(read(&bad).is_err());
    }
}
