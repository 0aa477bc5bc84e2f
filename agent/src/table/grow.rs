//! Making a GPT valid on a disk larger than the image written onto it, as
//! `sgdisk -e` does: the backup entry array and header move to the new end
//! of the disk, the primary header's alternate and last usable LBAs follow,
//! and the protective MBR covers the whole disk.
//!
//! The last usable LBA becomes the block before the new backup array, as
//! sfdisk lays out a new table (gdisk 1.0.9 instead rounds it down to 1 MiB
//! and leaves a gap before the backup header). The stale backup left at
//! the old end is not erased: it lies outside every partition and no tool
//! looks for a backup there.

use super::gpt::{self, Header};
use super::mbr::{self, BootSector};
use super::{read, DiskId, GptCopy, Table, TableError, TableKind};
use crate::source::ReadAt;

/// The writes `(offset, bytes)` that make the GPT of `table` valid on a
/// disk of `new_disk_size` bytes, in a safe order: backup array, backup
/// header, the primary array (only when the primary copy was damaged),
/// primary header, protective MBR.
///
/// `table` is what [`super::probe`] returned for the image (at capture, or
/// on the target before growing); `src` is the target disk after the image
/// was written: the copy that `probe` used is read back from it and must
/// still match `table`. When that copy was the backup, the primary is
/// rebuilt from it. An MBR table needs nothing. A hybrid MBR is left as it
/// is.
pub fn grow_gpt(src: &dyn ReadAt, table: &Table, new_disk_size: u64) -> Result<Vec<(u64, Vec<u8>)>, TableError> {
    let layout = match (table.kind, &table.gpt) {
        (TableKind::Mbr, _) => return Ok(Vec::new()),
        (TableKind::Gpt, Some(layout)) => layout,
        (TableKind::Gpt, None) => return Err(TableError::TargetMismatch("gpt table without a layout")),
    };
    let ss = table.sector_size;
    if ss != 512 && ss != 4096 {
        return Err(TableError::TargetMismatch("unsupported sector size"));
    }
    let new_sectors = new_disk_size / u64::from(ss);
    let old_sectors = layout.backup_header_lba.saturating_add(1);
    let (_, old_size) = gpt::byte_span(0, old_sectors, ss)?;
    let shrinks = TableError::DiskShrinks { old: old_size, new: new_disk_size };
    if new_sectors < old_sectors {
        return Err(shrinks);
    }

    let used_lba = match layout.used {
        GptCopy::Primary => layout.primary_header_lba,
        GptCopy::Backup => layout.backup_header_lba,
    };
    let copy = gpt::load(src, ss, new_sectors, used_lba, layout.used)?;
    let h = &copy.header;
    let same = DiskId::Gpt(h.disk_guid) == table.disk_id
        && h.first_usable == layout.first_usable_lba
        && h.last_usable == layout.last_usable_lba
        && h.entry_count == layout.entry_count
        && h.entry_size == layout.entry_size;
    if !same {
        return Err(TableError::TargetMismatch("header differs"));
    }

    let array_sectors = h.array_sectors(ss);
    let backup_lba = new_sectors - 1;
    let backup_entries = backup_lba.checked_sub(array_sectors);
    let last_usable = backup_entries.and_then(|lba| lba.checked_sub(1));
    let (Some(backup_entries), Some(last_usable)) = (backup_entries, last_usable) else {
        return Err(shrinks);
    };
    if last_usable < h.last_usable {
        return Err(shrinks);
    }
    let primary_entries = layout.primary_entries_lba;
    let primary_array_fits =
        primary_entries >= 2 && primary_entries.checked_add(array_sectors).is_some_and(|end| end <= h.first_usable);
    if !primary_array_fits {
        return Err(TableError::TargetMismatch("primary entry array overlaps the usable range"));
    }

    let (_, padded_len) = gpt::byte_span(0, array_sectors, ss)?;
    let mut array = copy.array.clone();
    array.resize(usize::try_from(padded_len).map_err(|_| TableError::Overflow("entry array"))?, 0);
    let offset = |lba| gpt::byte_span(lba, 0, ss).map(|(start, _)| start);

    let mut writes = vec![
        (offset(backup_entries)?, array.clone()),
        (offset(backup_lba)?, patched(h, backup_lba, 1, backup_entries, last_usable)?),
    ];
    if layout.used == GptCopy::Backup {
        writes.push((offset(primary_entries)?, array));
    }
    writes.push((offset(1)?, patched(h, 1, backup_lba, primary_entries, last_usable)?));
    if let Some(sector) = protective_mbr(src, new_sectors)? {
        writes.push((0, sector));
    }
    Ok(writes)
}

/// The header block of `h` with new locations and a fresh CRC.
fn patched(h: &Header, my_lba: u64, alternate: u64, entries_lba: u64, last_usable: u64) -> Result<Vec<u8>, TableError> {
    let mut block = h.block.clone();
    put(&mut block, gpt::MY_LBA_OFFSET, &my_lba.to_le_bytes())?;
    put(&mut block, gpt::ALTERNATE_LBA_OFFSET, &alternate.to_le_bytes())?;
    put(&mut block, gpt::LAST_USABLE_OFFSET, &last_usable.to_le_bytes())?;
    put(&mut block, gpt::ENTRIES_LBA_OFFSET, &entries_lba.to_le_bytes())?;
    let crc = gpt::header_crc(&block, h.header_size)?;
    put(&mut block, gpt::CRC_OFFSET, &crc.to_le_bytes())?;
    Ok(block)
}

/// Sector 0 with the size of its 0xEE entry set to cover the new disk, or
/// `None` to leave it alone: a hybrid MBR, or a 0xEE entry not at LBA 1.
fn protective_mbr(src: &dyn ReadAt, new_sectors: u64) -> Result<Option<Vec<u8>>, TableError> {
    let mut sector = read(src, 0, mbr::SECTOR_LEN)?;
    let Some(boot) = BootSector::parse(&sector)? else {
        return Ok(None);
    };
    let mut present = (0usize..).zip(boot.entries.iter()).filter(|(_, e)| !e.is_empty());
    let (Some((slot, entry)), None) = (present.next(), present.next()) else {
        return Ok(None);
    };
    if entry.kind != mbr::PROTECTIVE || entry.start != 1 {
        return Ok(None);
    }
    let size = u32::try_from(new_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
    // The size is the last field of the 16-byte entry.
    let at = mbr::ENTRIES_OFFSET + slot * mbr::ENTRY_LEN + 12;
    put(&mut sector, at, &size.to_le_bytes())?;
    Ok(Some(sector))
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) -> Result<(), TableError> {
    let end = offset.checked_add(bytes.len()).ok_or(TableError::Overflow("write offset"))?;
    buf.get_mut(offset..end).ok_or(TableError::Truncated { what: "gpt write" })?.copy_from_slice(bytes);
    Ok(())
}
