//! Loading one partition onto a blank disk: the partition table the image
//! recorded is created first, so the partition has somewhere to go.
//!
//! A partition load (`--partition N`) onto a target without a table means
//! one of two things. If the target is a partition device or a file, it
//! *is* the partition, and the image goes at its start (see
//! [`crate::place`]). If it is a whole disk, it is blank: the image's own
//! table (recorded in the manifest from the source disk) is written, with
//! every partition where the source had it, and the image goes into
//! partition N. A whole disk and an image without a table is an error that
//! says what to do.
//!
//! Only MBR tables of primary partitions are created. GPT images, and MBR
//! images with logical partitions, are refused with a clear error: the disk
//! must then be partitioned first (sfdisk/sgdisk), after which the load
//! checks that partition N fits.

use shoal_proto::manifest::{Manifest, PartType, PartitionTable, TableKind};

use crate::device::Device;
use crate::place::PlaceError;
use crate::table;

/// The writes that create the image's table on a blank whole disk, if a
/// partition load onto `dest` needs one. Nothing is written here.
pub fn table_to_create(
    m: &Manifest,
    dest: &Device,
    partition: Option<u32>,
) -> Result<Option<Vec<(u64, Vec<u8>)>>, PlaceError> {
    let Some(n) = partition else { return Ok(None) };
    if !dest.is_whole_disk() || table::probe(dest, dest.size())?.is_some() {
        return Ok(None);
    }
    let blank = |why: String| PlaceError::BlankDisk { partition: n, why };
    let t = m.table.as_ref().ok_or_else(|| {
        blank("the image carries no partition table to create: partition the disk, or name the partition device".into())
    })?;
    if !t.partitions.iter().any(|p| p.number == n) {
        return Err(PlaceError::NoImagePartition(n));
    }
    let sector = mbr(t, dest.size()).map_err(blank)?;
    Ok(Some(vec![(0, sector)]))
}

/// Where partition `n` lands once the image's table exists: its start and
/// size on the source disk.
pub fn image_partition(m: &Manifest, n: u32) -> Option<(u64, u64)> {
    m.table.as_ref()?.partitions.iter().find(|p| p.number == n).map(|p| (p.start, p.size))
}

/// The first sector of an MBR disk holding `t`'s partitions. No boot code:
/// a partition load does not make a disk bootable.
pub fn mbr(t: &PartitionTable, disk_size: u64) -> Result<Vec<u8>, String> {
    if t.kind != TableKind::Mbr {
        return Err("the image's table is GPT, which the agent does not create yet: partition the disk first".into());
    }
    let mut s = vec![0u8; 512];
    if let Ok(id) = <[u8; 4]>::try_from(t.disk_id.as_slice()) {
        s[440..444].copy_from_slice(&id);
    }
    for p in &t.partitions {
        if !(1..=4).contains(&p.number) {
            return Err(format!("partition {} is a logical partition, which the agent does not create", p.number));
        }
        let PartType::Mbr(kind) = p.ptype else { return Err("a GPT partition type in an MBR table".into()) };
        if p.start % 512 != 0 || p.size % 512 != 0 || p.start == 0 {
            return Err(format!("partition {} is not on 512-byte sectors", p.number));
        }
        if p.start + p.size > disk_size {
            return Err(format!(
                "partition {} ends at byte {} but the disk has {disk_size} bytes",
                p.number,
                p.start + p.size
            ));
        }
        let (lba, sectors) = (u32::try_from(p.start / 512), u32::try_from(p.size / 512));
        let (Ok(lba), Ok(sectors)) = (lba, sectors) else {
            return Err(format!("partition {} lies past what an MBR can address", p.number));
        };
        let e = 446 + 16 * (p.number as usize - 1);
        s[e] = if p.bootable { 0x80 } else { 0 };
        // CHS fields: the "use LBA" values every modern tool writes.
        s[e + 1..e + 4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        s[e + 4] = kind;
        s[e + 5..e + 8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        s[e + 8..e + 12].copy_from_slice(&lba.to_le_bytes());
        s[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::manifest::{FsKind, Partition};

    fn part(number: u32, start: u64, size: u64, kind: u8) -> Partition {
        Partition {
            number,
            start,
            size,
            ptype: PartType::Mbr(kind),
            guid: None,
            name: String::new(),
            bootable: number == 1,
            fs: FsKind::Unknown,
            fs_label: String::new(),
            os: None,
        }
    }

    fn table(parts: Vec<Partition>) -> PartitionTable {
        PartitionTable { kind: TableKind::Mbr, disk_id: vec![1, 2, 3, 4], partitions: parts }
    }

    #[test]
    fn the_created_mbr_reads_back_as_the_image_table() {
        let t = table(vec![part(1, 1 << 20, 8 << 20, 0x83), part(2, 9 << 20, 4 << 20, 0x82)]);
        let sector = mbr(&t, 32 << 20).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::create(&dir.path().join("d"), 32 << 20).unwrap();
        dev.write_all_at(&sector, 0).unwrap();
        let got = table::probe(&dev, 32 << 20).unwrap().unwrap();
        let parts: Vec<(u32, u64, u64, bool)> =
            got.partitions.iter().map(|p| (p.number, p.start, p.size, p.bootable)).collect();
        assert_eq!(parts, [(1, 1 << 20, 8 << 20, true), (2, 9 << 20, 4 << 20, false)]);
        assert_eq!(got.disk_id, table::DiskId::Mbr(u32::from_le_bytes([1, 2, 3, 4])));
    }

    #[test]
    fn tables_that_cannot_be_created_say_why() {
        let small = mbr(&table(vec![part(1, 1 << 20, 64 << 20, 0x83)]), 32 << 20).unwrap_err();
        assert!(small.contains("ends at byte"), "{small}");
        let logical = mbr(&table(vec![part(5, 1 << 20, 1 << 20, 0x83)]), 32 << 20).unwrap_err();
        assert!(logical.contains("logical"), "{logical}");
        let gpt = PartitionTable { kind: TableKind::Gpt, disk_id: vec![0; 16], partitions: vec![] };
        assert!(mbr(&gpt, 32 << 20).unwrap_err().contains("GPT"));
    }
}
