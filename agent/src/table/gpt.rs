//! The GUID partition table: a header at LBA 1 with its entry array, and a
//! backup header at the end of the disk with its own copy of the array.
//!
//! A copy is used only when its header CRC, its geometry, its entry array
//! CRC and every used entry check out. The primary copy wins; the backup is
//! used when the primary fails, and the layout says so.

use super::{read, DiskId, GptCopy, GptLayout, PartKind, Partition, Reader, Table, TableError, TableKind};
use crate::ranges::RangeSet;
use crate::source::ReadAt;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const MIN_HEADER_SIZE: u32 = 92;
const MIN_ENTRY_SIZE: u32 = 128;
/// No tool writes entries larger than 128 bytes; the bound keeps the array
/// (at most 4 MiB) cheap to read.
const MAX_ENTRY_SIZE: u32 = 1024;
const MAX_ENTRIES: u32 = 4096;
const NAME_BYTES: usize = 72;
/// Logical block sizes tried, in order.
const SECTOR_SIZES: [u32; 2] = [512, 4096];
/// GPT attribute bit 2: legacy BIOS bootable.
const LEGACY_BOOTABLE: u64 = 1 << 2;

/// Byte offsets of the header fields that [`super::grow`] rewrites.
pub(super) const CRC_OFFSET: usize = 16;
pub(super) const MY_LBA_OFFSET: usize = 24;
pub(super) const ALTERNATE_LBA_OFFSET: usize = 32;
pub(super) const LAST_USABLE_OFFSET: usize = 48;
pub(super) const ENTRIES_LBA_OFFSET: usize = 72;

/// A GPT header that passed every check against a disk of `sectors` blocks.
#[derive(Clone, Debug)]
pub(super) struct Header {
    /// The whole block the header was read from.
    pub block: Vec<u8>,
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Bytes in the entry array: at most `MAX_ENTRIES * MAX_ENTRY_SIZE`
    /// once the header is checked, and the product of two u32s cannot
    /// overflow a u64 before that.
    pub fn array_len(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    pub fn array_sectors(&self, sector_size: u32) -> u64 {
        self.array_len().div_ceil(u64::from(sector_size))
    }

    /// Whether `other` describes the same table from the other end.
    fn agrees_with(&self, other: &Header) -> bool {
        self.disk_guid == other.disk_guid
            && self.first_usable == other.first_usable
            && self.last_usable == other.last_usable
            && self.entry_count == other.entry_count
            && self.entry_size == other.entry_size
            && self.entries_crc == other.entries_crc
            && self.alternate_lba == other.my_lba
            && other.alternate_lba == self.my_lba
    }
}

/// One verified copy: header, raw entry array and decoded partitions.
pub(super) struct Verified {
    pub header: Header,
    pub array: Vec<u8>,
    pub partitions: Vec<Partition>,
}

/// Decodes the GPT of a disk whose MBR is protective.
pub(super) fn decode(src: &dyn ReadAt, disk_size: u64) -> Result<Table, TableError> {
    let ss = detect_sector_size(src, disk_size)?;
    let sectors = disk_size / u64::from(ss);
    let last_lba = sectors.checked_sub(1).ok_or(TableError::GptMissing)?;

    let primary_header = read_header(src, ss, sectors, 1, GptCopy::Primary);
    let primary_entries_hint = primary_header.as_ref().ok().map(|h| h.entries_lba);
    let alternate = primary_header.as_ref().ok().map(|h| h.alternate_lba).filter(|&a| a < sectors);
    let primary = primary_header.and_then(|h| verify_entries(src, ss, h, GptCopy::Primary));

    let mut backup = None;
    let mut backup_err = None;
    for lba in alternate.into_iter().chain((alternate != Some(last_lba)).then_some(last_lba)) {
        match load(src, ss, sectors, lba, GptCopy::Backup) {
            Ok(copy) => {
                backup = Some(copy);
                break;
            }
            Err(e) => {
                backup_err.get_or_insert(e);
            }
        }
    }

    let (used, other_header, used_copy) = match (primary, backup) {
        (Ok(p), b) => (p, b.map(|b| b.header), GptCopy::Primary),
        (Err(_), Some(b)) => (b, None, GptCopy::Backup),
        (Err(primary), None) => {
            return Err(TableError::NoValidGpt {
                primary: Box::new(primary),
                backup: Box::new(backup_err.unwrap_or(TableError::GptMissing)),
            })
        }
    };
    let h = &used.header;
    let array_sectors = h.array_sectors(ss);
    let layout = match used_copy {
        GptCopy::Primary => {
            let backup_header_lba = other_header.as_ref().map_or(alternate.unwrap_or(last_lba), |b| b.my_lba);
            // Where a backup array belongs when no backup header says: just
            // before the header, so inside the disk.
            let fallback_entries = backup_header_lba.saturating_sub(array_sectors);
            GptLayout {
                first_usable_lba: h.first_usable,
                last_usable_lba: h.last_usable,
                primary_header_lba: 1,
                backup_header_lba,
                primary_entries_lba: h.entries_lba,
                backup_entries_lba: other_header.as_ref().map_or(fallback_entries, |b| b.entries_lba),
                entry_count: h.entry_count,
                entry_size: h.entry_size,
                used: GptCopy::Primary,
                other_copy_valid: other_header.as_ref().is_some_and(|b| h.agrees_with(b)),
            }
        }
        GptCopy::Backup => GptLayout {
            first_usable_lba: h.first_usable,
            last_usable_lba: h.last_usable,
            primary_header_lba: 1,
            backup_header_lba: h.my_lba,
            primary_entries_lba: primary_entries_hint.unwrap_or(2),
            backup_entries_lba: h.entries_lba,
            entry_count: h.entry_count,
            entry_size: h.entry_size,
            used: GptCopy::Backup,
            other_copy_valid: false,
        },
    };

    let mut metadata = RangeSet::new();
    for (lba, count) in [
        (0, 1),
        (1, 1),
        (layout.primary_entries_lba, array_sectors),
        (layout.backup_entries_lba, array_sectors),
        (layout.backup_header_lba, 1),
    ] {
        let (start, end) = byte_span(lba, count, ss)?;
        metadata.insert(start, end);
    }
    Ok(Table {
        kind: TableKind::Gpt,
        sector_size: ss,
        disk_id: DiskId::Gpt(h.disk_guid),
        partitions: used.partitions,
        gpt: Some(layout),
        metadata,
    })
}

/// Finds the logical block size: "EFI PART" at LBA 1, else at the last
/// LBA (the primary may be destroyed), trying 512 then 4096 bytes.
fn detect_sector_size(src: &dyn ReadAt, disk_size: u64) -> Result<u32, TableError> {
    let has_signature = |offset: u64| read(src, offset, SIGNATURE.len()).map(|b| b == SIGNATURE);
    for ss in SECTOR_SIZES {
        if disk_size / u64::from(ss) >= 3 && has_signature(u64::from(ss))? {
            return Ok(ss);
        }
    }
    for ss in SECTOR_SIZES {
        let sectors = disk_size / u64::from(ss);
        if sectors >= 3 && has_signature((sectors - 1) * u64::from(ss))? {
            return Ok(ss);
        }
    }
    Err(TableError::GptMissing)
}

/// Reads and verifies the copy whose header is at `lba`.
pub(super) fn load(src: &dyn ReadAt, ss: u32, sectors: u64, lba: u64, copy: GptCopy) -> Result<Verified, TableError> {
    let header = read_header(src, ss, sectors, lba, copy)?;
    verify_entries(src, ss, header, copy)
}

fn read_header(src: &dyn ReadAt, ss: u32, sectors: u64, lba: u64, copy: GptCopy) -> Result<Header, TableError> {
    let bad = |reason| TableError::GptHeader { copy, lba, reason };
    let (offset, _) = byte_span(lba, 1, ss)?;
    let block = read(src, offset, ss as usize)?;
    let mut r = Reader::new(&block, "gpt header");
    if &r.array::<8>()? != SIGNATURE {
        return Err(bad("bad signature"));
    }
    if r.u32()? != REVISION {
        return Err(bad("unsupported revision"));
    }
    let header_size = r.u32()?;
    let crc = r.u32()?;
    r.skip(4)?; // reserved
    let h = Header {
        header_size,
        my_lba: r.u64()?,
        alternate_lba: r.u64()?,
        first_usable: r.u64()?,
        last_usable: r.u64()?,
        disk_guid: r.array()?,
        entries_lba: r.u64()?,
        entry_count: r.u32()?,
        entry_size: r.u32()?,
        entries_crc: r.u32()?,
        block: Vec::new(),
    };
    if !(MIN_HEADER_SIZE..=ss).contains(&header_size) {
        return Err(bad("header size out of range"));
    }
    if header_crc(&block, header_size)? != crc {
        return Err(bad("header crc mismatch"));
    }
    if h.my_lba != lba {
        return Err(bad("header is not at the lba it names"));
    }
    if h.first_usable > h.last_usable || h.last_usable >= sectors {
        return Err(bad("usable range is empty or beyond the end of the disk"));
    }
    if h.entry_size < MIN_ENTRY_SIZE || h.entry_size > MAX_ENTRY_SIZE || h.entry_size & 7 != 0 {
        return Err(bad("entry size out of range"));
    }
    if h.entry_count == 0 || h.entry_count > MAX_ENTRIES {
        return Err(bad("entry count out of range"));
    }
    let array_end = h.entries_lba.checked_add(h.array_sectors(ss)).filter(|&end| end <= sectors);
    let Some(array_end) = array_end else {
        return Err(bad("entry array beyond the end of the disk"));
    };
    let array_placed = match copy {
        GptCopy::Primary => h.entries_lba > h.my_lba && array_end <= h.first_usable,
        GptCopy::Backup => h.entries_lba > h.last_usable && array_end <= h.my_lba,
    };
    if !array_placed {
        return Err(bad("entry array overlaps the header or the usable range"));
    }
    // The backup array fits between the usable range and the backup header
    // (which may lie past the end of a smaller disk: then the backup is
    // looked for at the last LBA).
    let backup_room = h.last_usable.checked_add(h.array_sectors(ss));
    if copy == GptCopy::Primary && !matches!(backup_room, Some(end) if end < h.alternate_lba) {
        return Err(bad("alternate lba leaves no room for the backup after the usable range"));
    }
    Ok(Header { block, ..h })
}

/// The CRC32 of the first `header_size` bytes of `block` with the CRC field
/// zeroed.
pub(super) fn header_crc(block: &[u8], header_size: u32) -> Result<u32, TableError> {
    let short = TableError::Truncated { what: "gpt header" };
    let mut bytes = block.get(..header_size as usize).ok_or(short)?.to_vec();
    bytes.get_mut(CRC_OFFSET..CRC_OFFSET + 4).ok_or(TableError::Truncated { what: "gpt header" })?.fill(0);
    Ok(crc32fast::hash(&bytes))
}

fn verify_entries(src: &dyn ReadAt, ss: u32, header: Header, copy: GptCopy) -> Result<Verified, TableError> {
    let (offset, _) = byte_span(header.entries_lba, 0, ss)?;
    let len = usize::try_from(header.array_len()).map_err(|_| TableError::Overflow("entry array"))?;
    let array = read(src, offset, len)?;
    if crc32fast::hash(&array) != header.entries_crc {
        return Err(TableError::GptEntryArrayCrc { copy });
    }
    let partitions = decode_entries(&header, &array, ss, copy)?;
    Ok(Verified { header, array, partitions })
}

fn decode_entries(h: &Header, array: &[u8], ss: u32, copy: GptCopy) -> Result<Vec<Partition>, TableError> {
    let mut partitions = Vec::new();
    let mut spans = Vec::new();
    let records = array.chunks_exact(h.entry_size as usize);
    for (index, record) in (0u32..).zip(records) {
        let bad = |reason| TableError::GptEntry { copy, index, reason };
        let mut r = Reader::new(record, "gpt entry");
        let type_guid: [u8; 16] = r.array()?;
        if type_guid == [0; 16] {
            continue;
        }
        let guid: [u8; 16] = r.array()?;
        let first = r.u64()?;
        let last = r.u64()?;
        let attributes = r.u64()?;
        let name = r.take(NAME_BYTES)?;
        if first > last {
            return Err(bad("first lba after last lba"));
        }
        if first < h.first_usable || last > h.last_usable {
            return Err(bad("partition outside the usable range"));
        }
        // `last < sectors`, so neither the sum nor the byte offsets overflow
        // for any disk that fits in a u64 of bytes; check anyway.
        let (start, end) = byte_span(first, last - first + 1, ss)?;
        spans.push((first, last, index));
        partitions.push(Partition {
            number: index + 1,
            start,
            size: end - start,
            kind: PartKind::Gpt(type_guid),
            guid: Some(guid),
            name: decode_name(name),
            bootable: attributes & LEGACY_BOOTABLE != 0,
            attributes,
            extended: false,
        });
    }
    spans.sort_unstable();
    for pair in spans.windows(2) {
        if let [(_, a_last, _), (b_first, _, index)] = pair {
            if b_first <= a_last {
                return Err(TableError::GptEntry { copy, index: *index, reason: "overlaps another partition" });
            }
        }
    }
    Ok(partitions)
}

/// UTF-16LE, up to 36 units, ending at the first NUL. Unpaired surrogates
/// become U+FFFD: a name is for people, not worth rejecting a disk over.
fn decode_name(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            _ => 0,
        })
        .take_while(|&unit| unit != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// The bytes `[lba * ss, (lba + count) * ss)`, overflow-checked.
pub(super) fn byte_span(lba: u64, count: u64, ss: u32) -> Result<(u64, u64), TableError> {
    let ss = u64::from(ss);
    let start = lba.checked_mul(ss).ok_or(TableError::Overflow("gpt offset"))?;
    let end = lba.checked_add(count).and_then(|end| end.checked_mul(ss)).ok_or(TableError::Overflow("gpt offset"))?;
    Ok((start, end))
}
