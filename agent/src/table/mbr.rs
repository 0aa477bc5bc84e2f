//! The MBR partition table: four primary slots and the chain of extended
//! boot records (EBRs) that holds the logical partitions.
//!
//! Sectors are 512 bytes. An EBR's data entry starts relative to the EBR
//! itself; its link entry points at the next EBR relative to the start of
//! the extended partition in the MBR.
//!
//! Every quantity here is a u32 count of sectors: a sum of two of them, and
//! its byte offset, fit in a u64 with room to spare, so plain arithmetic
//! cannot overflow.

use super::{read, DiskId, PartKind, Partition, Reader, Table, TableError, TableKind};
use crate::ranges::RangeSet;
use crate::source::ReadAt;

pub(super) const SECTOR: u64 = 512;
pub(super) const SECTOR_LEN: usize = 512;
/// Where the four 16-byte partition entries start.
pub(super) const ENTRIES_OFFSET: usize = 446;
pub(super) const ENTRY_LEN: usize = 16;
/// Type of the protective MBR entry of a GPT disk.
pub(super) const PROTECTIVE: u8 = 0xEE;
/// How many EBRs one chain may hold (Linux stops at a similar bound).
pub(super) const MAX_EBRS: usize = 256;

/// One 16-byte partition entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub boot: u8,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

impl Entry {
    fn parse(r: &mut Reader<'_>) -> Result<Entry, TableError> {
        let boot = r.u8()?;
        r.skip(3)?; // CHS of the first sector: unused, LBA is authoritative.
        let kind = r.u8()?;
        r.skip(3)?; // CHS of the last sector.
        let start = r.u32()?;
        let sectors = r.u32()?;
        Ok(Entry { boot, kind, start, sectors })
    }

    /// Linux and libfdisk treat an entry of size zero as empty, whatever
    /// its type.
    pub fn is_used(&self) -> bool {
        self.sectors != 0
    }

    pub fn is_extended(&self) -> bool {
        matches!(self.kind, 0x05 | 0x0F | 0x85)
    }

    pub fn is_empty(&self) -> bool {
        self.kind == 0 && self.sectors == 0
    }
}

/// A sector that ends in 0x55AA: an MBR or an EBR.
#[derive(Clone, Debug)]
pub(super) struct BootSector {
    pub disk_signature: u32,
    pub entries: [Entry; 4],
}

impl BootSector {
    /// `None` when the 0x55AA signature is missing.
    pub fn parse(sector: &[u8]) -> Result<Option<BootSector>, TableError> {
        let mut r = Reader::new(sector, "boot sector");
        r.skip(440)?;
        let disk_signature = r.u32()?;
        r.skip(2)?;
        let entries = [Entry::parse(&mut r)?, Entry::parse(&mut r)?, Entry::parse(&mut r)?, Entry::parse(&mut r)?];
        let magic: [u8; 2] = r.array()?;
        Ok((magic == [0x55, 0xAA]).then_some(BootSector { disk_signature, entries }))
    }

    pub fn boot_flags_valid(&self) -> bool {
        self.entries.iter().all(|e| e.boot == 0x00 || e.boot == 0x80)
    }

    /// Any 0xEE entry, hybrid MBRs included: the GPT wins.
    pub fn is_protective(&self) -> bool {
        self.entries.iter().any(|e| e.kind == PROTECTIVE)
    }
}

/// Whether sector 0 is the boot sector of a FAT, NTFS or exFAT filesystem
/// rather than an MBR. Like libblkid, a FAT boot sector wins even when the
/// bytes at 446 would pass for partition entries: mistaking a filesystem
/// for a table loses data, the other way round only costs a raw capture.
pub(super) fn looks_like_filesystem(sector: &[u8]) -> Result<bool, TableError> {
    let mut r = Reader::new(sector, "boot sector");
    let jump: [u8; 3] = r.array()?;
    let oem: [u8; 8] = r.array()?;
    if &oem == b"NTFS    " || &oem == b"EXFAT   " {
        return Ok(true);
    }
    let bytes_per_sector = u16::from_le_bytes(r.array()?);
    let sectors_per_cluster = r.u8()?;
    let reserved = u16::from_le_bytes(r.array()?);
    let fats = r.u8()?;
    r.skip(4)?; // root entries, 16-bit sector count
    let media = r.u8()?;
    let mut magic = Reader::new(sector, "boot sector");
    magic.skip(0x36)?;
    let fat16: [u8; 8] = magic.array()?;
    magic.skip(0x52 - 0x3E)?;
    let fat32: [u8; 8] = magic.array()?;
    let has_magic = [b"FAT12   ", b"FAT16   ", b"FAT     "].contains(&&fat16)
        || fat16.starts_with(b"MSDOS")
        || &fat32 == b"FAT32   "
        || fat32.starts_with(b"MSWIN");
    let bpb_valid = (jump[0] == 0xEB || jump[0] == 0xE9)
        && bytes_per_sector.is_power_of_two()
        && (512..=4096).contains(&bytes_per_sector)
        && sectors_per_cluster.is_power_of_two()
        && reserved != 0
        && fats != 0
        && (media == 0xF0 || media >= 0xF8);
    Ok(has_magic && bpb_valid)
}

/// Decodes an MBR that is not protective. `Ok(None)` when its primary
/// entries are not plausible.
pub(super) fn decode(src: &dyn ReadAt, disk_size: u64, mbr: &BootSector) -> Result<Option<Table>, TableError> {
    let disk_sectors = disk_size / SECTOR;
    let mut spans = Vec::new();
    for e in mbr.entries.iter().filter(|e| e.is_used()) {
        let start = u64::from(e.start);
        let end = start + u64::from(e.sectors);
        if start == 0 || end > disk_sectors {
            return Ok(None);
        }
        spans.push((start, end));
    }
    if spans.is_empty() || overlapping(&mut spans) {
        return Ok(None);
    }
    if mbr.entries.iter().filter(|e| e.is_used() && e.is_extended()).count() > 1 {
        return Err(TableError::Mbr("more than one extended partition"));
    }

    let mut metadata = RangeSet::new();
    metadata.insert(0, SECTOR);
    let mut partitions = Vec::new();
    let mut logicals = Vec::new();
    for (number, e) in (1u32..).zip(mbr.entries.iter()) {
        if !e.is_used() {
            continue;
        }
        partitions.push(partition(number, u64::from(e.start), e)?);
        if e.is_extended() {
            logicals = walk_chain(src, e, &mut metadata)?;
        }
    }
    partitions.extend(logicals);
    Ok(Some(Table {
        kind: TableKind::Mbr,
        sector_size: SECTOR as u32,
        disk_id: DiskId::Mbr(mbr.disk_signature),
        partitions,
        gpt: None,
        metadata,
    }))
}

/// Follows the EBR chain of the extended partition `ext`, which the caller
/// has checked lies inside the disk.
fn walk_chain(src: &dyn ReadAt, ext: &Entry, metadata: &mut RangeSet) -> Result<Vec<Partition>, TableError> {
    let ext_start = u64::from(ext.start);
    let ext_end = ext_start + u64::from(ext.sectors);
    let mut logicals = Vec::new();
    let mut visited: Vec<u64> = Vec::new();
    // Every EBR sector and logical partition, to check that none overlap.
    let mut spans = Vec::new();
    let mut ebr = ext_start;
    loop {
        if visited.contains(&ebr) {
            return Err(TableError::EbrLoop { lba: ebr });
        }
        if visited.len() == MAX_EBRS {
            return Err(TableError::TooManyLogicals { max: MAX_EBRS });
        }
        visited.push(ebr);
        let offset = ebr * SECTOR;
        metadata.insert(offset, offset + SECTOR);
        let sector = read(src, offset, SECTOR_LEN)?;
        let Some(boot) = BootSector::parse(&sector)? else {
            // An extended partition with no logicals may hold a blank EBR.
            if ebr == ext_start && sector.iter().all(|&b| b == 0) {
                break;
            }
            return Err(TableError::Ebr { lba: ebr, reason: "missing 0x55aa signature" });
        };
        spans.push((ebr, ebr + 1));

        let mut data = None;
        let mut link = None;
        for e in boot.entries.iter().filter(|e| e.is_used()) {
            let slot = if e.is_extended() { &mut link } else { &mut data };
            if slot.replace(*e).is_some() {
                return Err(TableError::Ebr { lba: ebr, reason: "more than one logical partition or link" });
            }
        }
        if let Some(d) = data {
            let start = ebr + u64::from(d.start);
            let end = start + u64::from(d.sectors);
            if d.start == 0 || end > ext_end {
                return Err(TableError::Ebr { lba: ebr, reason: "logical partition outside the extended partition" });
            }
            let number = 5 + logicals.len() as u32;
            logicals.push(partition(number, start, &d)?);
            spans.push((start, end));
        }
        let Some(l) = link else { break };
        ebr = ext_start + u64::from(l.start);
        if ebr >= ext_end {
            return Err(TableError::Ebr { lba: ebr, reason: "link points outside the extended partition" });
        }
    }
    if overlapping(&mut spans) {
        return Err(TableError::Mbr("logical partitions or extended boot records overlap"));
    }
    Ok(logicals)
}

fn partition(number: u32, start_lba: u64, e: &Entry) -> Result<Partition, TableError> {
    let start = start_lba.checked_mul(SECTOR).ok_or(TableError::Overflow("partition start"))?;
    Ok(Partition {
        number,
        start,
        size: u64::from(e.sectors) * SECTOR,
        kind: PartKind::Mbr(e.kind),
        guid: None,
        name: String::new(),
        bootable: e.boot == 0x80,
        attributes: 0,
        extended: e.is_extended(),
    })
}

/// Whether any two half-open spans overlap. Sorts `spans`.
pub(super) fn overlapping(spans: &mut [(u64, u64)]) -> bool {
    spans.sort_unstable();
    spans.windows(2).any(|w| matches!(w, [a, b] if b.0 < a.1))
}
