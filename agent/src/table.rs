//! Partition tables: reading MBR and GPT, and growing a GPT onto a larger
//! disk.
//!
//! [`probe`] reads the table at the start of a disk or whole-disk image and
//! returns its partitions (numbered as Linux numbers them), the disk
//! identifier, the GPT geometry, and the byte ranges the table itself
//! occupies, so that capture can copy them verbatim. [`grow_gpt`] computes
//! the writes that make a GPT valid again after a whole-disk image was
//! written onto a larger disk, as `sgdisk -e` does.
//!
//! Every byte read from the disk is untrusted: lengths are bounded,
//! arithmetic is checked, and malformed input is an error (or "no table"),
//! never a panic.
//!
//! What is not here: creating or editing partitions; writing to a disk
//! (`grow_gpt` returns the writes); repairing a damaged GPT (the caller is
//! told which copy was used); BSD, Apple, Sun or other labels, and BSD
//! disklabels nested in MBR partitions; MBR on disks with sectors other
//! than 512 bytes; GPT on sector sizes other than 512 and 4096 bytes;
//! more than one extended partition in an MBR.

mod gpt;
mod grow;
mod mbr;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

use crate::ranges::RangeSet;
use crate::source::ReadAt;

pub use grow::grow_gpt;

/// Which kind of table a disk carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Mbr,
    Gpt,
}

/// The identifier of the whole disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskId {
    /// The 32-bit MBR disk signature at byte 440.
    Mbr(u32),
    /// The GPT disk GUID, raw as stored on disk (see [`guid_string`]).
    Gpt([u8; 16]),
}

/// The type of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// The MBR system id byte (0x83 Linux, 0x07 NTFS, 0x05 extended, ...).
    Mbr(u8),
    /// The GPT partition type GUID, raw as stored on disk.
    Gpt([u8; 16]),
}

/// One of the two copies of a GPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptCopy {
    /// The header at LBA 1 and its entry array.
    Primary,
    /// The header at the end of the disk and its entry array.
    Backup,
}

impl fmt::Display for GptCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GptCopy::Primary => "primary",
            GptCopy::Backup => "backup",
        })
    }
}

/// Where the parts of a GPT are, in logical blocks of `Table::sector_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptLayout {
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// Always 1.
    pub primary_header_lba: u64,
    pub backup_header_lba: u64,
    /// From the primary header when it could be read, else 2 (where every
    /// tool puts it).
    pub primary_entries_lba: u64,
    /// From the backup header when it could be read, else the blocks just
    /// before the backup header.
    pub backup_entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    /// The copy the partitions were read from. `Backup` means the primary
    /// copy is damaged: the caller should warn.
    pub used: GptCopy,
    /// Whether the copy not used also verified and agrees with the one used.
    /// `false` with `used == Primary` means the backup is damaged or stale.
    pub other_copy_valid: bool,
}

impl GptLayout {
    /// Blocks taken by one entry array.
    pub fn entry_array_sectors(&self, sector_size: u32) -> u64 {
        let bytes = u64::from(self.entry_count) * u64::from(self.entry_size);
        bytes.div_ceil(u64::from(sector_size).max(1))
    }
}

/// One partition. Offsets and sizes are in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// As Linux numbers them: MBR primaries 1..=4 by slot, logicals from 5
    /// in chain order; GPT entry index + 1.
    pub number: u32,
    pub start: u64,
    pub size: u64,
    pub kind: PartKind,
    /// The GPT unique partition GUID, raw as stored on disk; `None` on MBR.
    pub guid: Option<[u8; 16]>,
    /// The GPT partition name; empty on MBR.
    pub name: String,
    /// MBR boot flag 0x80, or GPT attribute bit 2 (legacy BIOS bootable).
    pub bootable: bool,
    /// The GPT attribute bits; 0 on MBR.
    pub attributes: u64,
    /// An MBR extended partition: a container of logical partitions that
    /// holds no filesystem itself.
    pub extended: bool,
}

impl Partition {
    /// The byte just past the partition.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// A decoded partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub kind: TableKind,
    /// Bytes per logical block: 512 for MBR, 512 or 4096 for GPT.
    pub sector_size: u32,
    pub disk_id: DiskId,
    /// Sorted by number.
    pub partitions: Vec<Partition>,
    /// Present exactly when `kind` is `Gpt`.
    pub gpt: Option<GptLayout>,
    /// The byte ranges the table itself occupies: the MBR sector and every
    /// EBR; or the protective MBR block, both GPT headers and both entry
    /// arrays.
    pub metadata: RangeSet,
}

/// Why a partition table could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error("partition table: read of {len} bytes at offset {offset} failed")]
    Io {
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("partition table: {what} is shorter than its layout")]
    Truncated { what: &'static str },
    #[error("mbr: {0}")]
    Mbr(&'static str),
    #[error("mbr: extended boot record at sector {lba}: {reason}")]
    Ebr { lba: u64, reason: &'static str },
    #[error("mbr: extended boot record chain loops back to sector {lba}")]
    EbrLoop { lba: u64 },
    #[error("mbr: more than {max} extended boot records")]
    TooManyLogicals { max: usize },
    #[error("gpt: protective mbr but no gpt header at lba 1 or at the end of the disk")]
    GptMissing,
    #[error("gpt: {copy} header at lba {lba}: {reason}")]
    GptHeader { copy: GptCopy, lba: u64, reason: &'static str },
    #[error("gpt: {copy} entry array crc mismatch")]
    GptEntryArrayCrc { copy: GptCopy },
    #[error("gpt: {copy} entry {index}: {reason}")]
    GptEntry { copy: GptCopy, index: u32, reason: &'static str },
    #[error("gpt: no valid copy (primary: {primary}; backup: {backup})")]
    NoValidGpt { primary: Box<TableError>, backup: Box<TableError> },
    #[error("gpt: cannot grow onto {new} bytes, the table needs at least {old}")]
    DiskShrinks { old: u64, new: u64 },
    #[error("gpt: the table on the target disk does not match the probed table: {0}")]
    TargetMismatch(&'static str),
    #[error("partition table: {0} overflows 64 bits")]
    Overflow(&'static str),
}

/// Reads the partition table of a disk of `disk_size` bytes.
///
/// `Ok(None)` means the disk has no partition table: no 0x55AA signature,
/// a filesystem boot sector (FAT, NTFS, exFAT), or an MBR whose entries are
/// not plausible (bad boot flags, entries outside the disk or overlapping,
/// no entry at all). A protective MBR (any type 0xEE entry, hybrids
/// included) means GPT, and a GPT that cannot be read is an error.
pub fn probe(src: &dyn ReadAt, disk_size: u64) -> Result<Option<Table>, TableError> {
    if disk_size < mbr::SECTOR {
        return Ok(None);
    }
    let sector = read(src, 0, mbr::SECTOR_LEN)?;
    let Some(boot) = mbr::BootSector::parse(&sector)? else {
        return Ok(None);
    };
    if mbr::looks_like_filesystem(&sector)? || !boot.boot_flags_valid() {
        return Ok(None);
    }
    if boot.is_protective() {
        return gpt::decode(src, disk_size).map(Some);
    }
    mbr::decode(src, disk_size, &boot)
}

/// Formats a GUID stored on disk the way sfdisk prints it: the first three
/// fields little-endian, upper case (blkid prints the same in lower case).
pub fn guid_string(guid: &[u8; 16]) -> String {
    let [a0, a1, a2, a3, b0, b1, c0, c1, rest @ ..] = *guid;
    let mut s = format!("{a3:02X}{a2:02X}{a1:02X}{a0:02X}-{b1:02X}{b0:02X}-{c1:02X}{c0:02X}-");
    for (i, byte) in rest.iter().enumerate() {
        if i == 2 {
            s.push('-');
        }
        s.push_str(&format!("{byte:02X}"));
    }
    s
}

/// Reads `len` bytes at `offset`.
fn read(src: &dyn ReadAt, offset: u64, len: usize) -> Result<Vec<u8>, TableError> {
    let mut buf = vec![0; len];
    src.read_exact_at(&mut buf, offset).map_err(|source| TableError::Io { offset, len, source })?;
    Ok(buf)
}

/// A cursor over a borrowed record: every read is bounds-checked and a
/// short record is an error naming `what`.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TableError> {
        let (head, tail) = self.buf.split_at_checked(n).ok_or(TableError::Truncated { what: self.what })?;
        self.buf = tail;
        Ok(head)
    }

    fn skip(&mut self, n: usize) -> Result<(), TableError> {
        self.take(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TableError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| TableError::Truncated { what: self.what })
    }

    fn u8(&mut self) -> Result<u8, TableError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, TableError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, TableError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
