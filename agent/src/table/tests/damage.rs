//! Damaged and hostile tables: the GPT backup takes over from a damaged
//! primary, and what cannot be trusted is an error or no table.

use super::*;

/// A 16-byte MBR partition entry.
fn entry(boot: u8, kind: u8, start: u32, sectors: u32) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[0] = boot;
    e[4] = kind;
    e[8..12].copy_from_slice(&start.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    e
}

/// Writes a boot sector with `entries` and the 0x55AA signature at `lba`.
fn boot_sector(img: &mut [u8], lba: u64, entries: &[[u8; 16]]) {
    let at = lba as usize * 512;
    for (i, e) in entries.iter().enumerate() {
        img[at + 446 + 16 * i..at + 462 + 16 * i].copy_from_slice(e);
    }
    img[at + 510..at + 512].copy_from_slice(&[0x55, 0xAA]);
}

/// An 8 MiB disk whose MBR holds one extended partition at 2048.
fn extended_disk() -> Vec<u8> {
    let mut img = vec![0u8; 8 << 20];
    boot_sector(&mut img, 0, &[entry(0, 0x05, 2048, 10000)]);
    img
}

fn gpt_disk(ss: u32) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let img = small_gpt(dir.path(), 8 * MIB, ss);
    (dir, img)
}

// A `Vec`, not a slice: `probe` takes a sized `ReadAt`.
#[allow(clippy::ptr_arg)]
fn probe_mem(img: &Vec<u8>) -> Result<Option<Table>, TableError> {
    probe(img, img.len() as u64)
}

#[test]
fn gpt_primary_header_with_a_flipped_byte_falls_back_to_the_backup() {
    let (_dir, mut img) = gpt_disk(512);
    let good = probe_mem(&img).unwrap().expect("a gpt");
    img[512 + 0x40] ^= 0x01; // a byte of the disk guid: header crc mismatch
    let table = probe_mem(&img).unwrap().expect("a gpt");
    let layout = table.gpt.as_ref().expect("gpt layout");
    assert_eq!(layout.used, GptCopy::Backup);
    assert!(!layout.other_copy_valid);
    assert_eq!(table.partitions, good.partitions);
    assert_eq!(table.disk_id, good.disk_id);
    assert_eq!(table.metadata, good.metadata);
}

#[test]
fn gpt_primary_entry_array_with_a_flipped_byte_falls_back_to_the_backup() {
    let (_dir, mut img) = gpt_disk(512);
    let good = probe_mem(&img).unwrap().expect("a gpt");
    img[1024 + 56] ^= 0x20; // first letter of the first name
    let table = probe_mem(&img).unwrap().expect("a gpt");
    assert_eq!(table.gpt.as_ref().map(|l| l.used), Some(GptCopy::Backup));
    assert_eq!(table.partitions, good.partitions);
}

#[test]
fn gpt_with_its_primary_header_wiped_is_found_through_the_backup() {
    for ss in [512u32, 4096] {
        let (_dir, mut img) = gpt_disk(ss);
        let good = probe_mem(&img).unwrap().expect("a gpt");
        let ssz = ss as usize;
        img[ssz..2 * ssz].fill(0);
        let table = probe_mem(&img).unwrap().expect("a gpt");
        assert_eq!(table.sector_size, ss);
        assert_eq!(table.gpt.as_ref().map(|l| l.used), Some(GptCopy::Backup));
        assert_eq!(table.partitions, good.partitions);
    }
}

#[test]
fn gpt_with_a_damaged_backup_uses_the_primary_and_says_the_backup_is_bad() {
    let (_dir, mut img) = gpt_disk(512);
    let last = img.len() - 512;
    img[last + 0x40] ^= 0x01;
    let table = probe_mem(&img).unwrap().expect("a gpt");
    let layout = table.gpt.as_ref().expect("gpt layout");
    assert_eq!(layout.used, GptCopy::Primary);
    assert!(!layout.other_copy_valid);
    assert_eq!(layout.backup_header_lba, (img.len() / 512 - 1) as u64);
}

#[test]
fn gpt_with_both_copies_damaged_is_an_error() {
    let (_dir, mut img) = gpt_disk(512);
    let last = img.len() - 512;
    img[512 + 0x40] ^= 0x01;
    img[last + 0x40] ^= 0x01;
    let err = probe_mem(&img).unwrap_err();
    assert!(matches!(err, TableError::NoValidGpt { .. }), "{err}");
    assert!(err.to_string().contains("header crc mismatch"), "{err}");

    let (_dir, mut img) = gpt_disk(512);
    img[512..1024].fill(0);
    img[last..].fill(0);
    assert!(matches!(probe_mem(&img), Err(TableError::GptMissing)));
}

#[test]
fn gpt_entry_outside_the_usable_range_is_an_error_even_with_good_crcs() {
    let (_dir, mut img) = gpt_disk(512);
    let last_usable = u64::from_le_bytes(img[512 + 48..512 + 56].try_into().unwrap());
    for copy in [1024, img.len() - 33 * 512] {
        // Entry 0's last LBA.
        img[copy + 40..copy + 48].copy_from_slice(&(last_usable + 1).to_le_bytes());
    }
    fix_gpt_crcs(&mut img, 512);
    let err = probe_mem(&img).unwrap_err();
    assert!(err.to_string().contains("entry 0: partition outside the usable range"), "{err}");
}

#[test]
fn gpt_overlapping_entries_are_an_error() {
    let (_dir, mut img) = gpt_disk(512);
    for copy in [1024, img.len() - 33 * 512] {
        // Entry 1 starts where entry 0 starts.
        let first = img[copy + 32..copy + 40].to_vec();
        img[copy + 128 + 32..copy + 128 + 40].copy_from_slice(&first);
    }
    fix_gpt_crcs(&mut img, 512);
    let err = probe_mem(&img).unwrap_err();
    assert!(err.to_string().contains("overlaps another partition"), "{err}");
}

#[test]
fn hybrid_mbr_is_read_as_gpt() {
    let (_dir, mut img) = gpt_disk(512);
    let good = probe_mem(&img).unwrap().expect("a gpt");
    // gdisk's hybrid: a FAT entry for the first partition beside the 0xEE.
    let esp = &good.partitions[0];
    let hybrid = entry(0x80, 0x0C, (esp.start / 512) as u32, (esp.size / 512) as u32);
    img[446 + 16..446 + 32].copy_from_slice(&hybrid);
    let table = probe_mem(&img).unwrap().expect("a gpt");
    assert_eq!(table.kind, TableKind::Gpt);
    assert_eq!(table.partitions, good.partitions);
}

#[test]
fn protective_mbr_without_a_gpt_is_an_error() {
    let mut img = vec![0u8; 8 << 20];
    boot_sector(&mut img, 0, &[entry(0, 0xEE, 1, (8 << 11) - 1)]);
    assert!(matches!(probe_mem(&img), Err(TableError::GptMissing)));
}

#[test]
fn ebr_chain_that_loops_is_an_error() {
    let mut img = extended_disk();
    // EBR at 2048 links to 2248 (2048 + 200), which links back to 2048.
    boot_sector(&mut img, 2048, &[entry(0, 0x83, 1, 100), entry(0, 0x05, 200, 200)]);
    boot_sector(&mut img, 2248, &[entry(0, 0x83, 1, 100), entry(0, 0x05, 0, 200)]);
    assert!(matches!(probe_mem(&img), Err(TableError::EbrLoop { lba: 2048 })));

    let mut img = extended_disk();
    boot_sector(&mut img, 2048, &[entry(0, 0x83, 1, 100), entry(0, 0x05, 0, 200)]);
    assert!(matches!(probe_mem(&img), Err(TableError::EbrLoop { lba: 2048 })));
}

#[test]
fn ebr_chain_longer_than_the_bound_is_an_error() {
    let mut img = vec![0u8; 8 << 20];
    boot_sector(&mut img, 0, &[entry(0, 0x05, 2048, 4 * 300)]);
    for i in 0..300u32 {
        let link = if i < 299 { entry(0, 0x05, 4 * (i + 1), 4) } else { [0; 16] };
        boot_sector(&mut img, u64::from(2048 + 4 * i), &[entry(0, 0x83, 1, 3), link]);
    }
    assert!(matches!(probe_mem(&img), Err(TableError::TooManyLogicals { .. })));

    // Within the bound the same chain decodes, logicals numbered from 5.
    boot_sector(&mut img, 2048 + 4 * 199, &[entry(0, 0x83, 1, 3), [0; 16]]);
    let table = probe_mem(&img).unwrap().expect("an mbr");
    assert_eq!(table.partitions.len(), 201);
    assert_eq!(table.partitions.last().map(|p| (p.number, p.start)), Some((204, (2048 + 4 * 199 + 1) * 512)));
    assert_eq!(table.metadata.len(), 201);
}

#[test]
fn logical_partition_outside_its_extended_partition_is_an_error() {
    let mut img = extended_disk();
    boot_sector(&mut img, 2048, &[entry(0, 0x83, 1, 10000)]);
    let err = probe_mem(&img).unwrap_err();
    assert!(err.to_string().contains("outside the extended partition"), "{err}");
}

#[test]
fn ebr_without_a_signature_is_an_error() {
    let mut img = extended_disk();
    boot_sector(&mut img, 2048, &[entry(0, 0x83, 1, 100), entry(0, 0x05, 200, 200)]);
    img[2248 * 512 + 446] = 0x83; // not blank, no signature
    assert!(matches!(probe_mem(&img), Err(TableError::Ebr { lba: 2248, .. })));
}

#[test]
fn implausible_mbr_entries_mean_no_table() {
    let cases: [&[[u8; 16]]; 5] = [
        &[entry(0x01, 0x83, 2048, 100)],                                             // boot flag
        &[entry(0, 0x83, 2048, 100), entry(0, 0x83, 2100, 100)],                     // overlap
        &[entry(0, 0x83, 2048, 1 << 20)],                                            // past the end
        &[entry(0, 0x83, 0, 100)],                                                   // over the mbr
        &[entry(0, 0x83, 2048, 100), entry(0x80, 0x83, 4096, 0), entry(7, 0, 0, 0)], // boot flag of an empty slot
    ];
    for entries in cases {
        let mut img = vec![0u8; 8 << 20];
        boot_sector(&mut img, 0, entries);
        assert!(probe_mem(&img).unwrap().is_none(), "{entries:?}");
    }
}

#[test]
fn read_failure_is_an_io_error_with_its_offset() {
    let mut img = extended_disk();
    img.truncate(4096);
    let err = probe(&img, 8 << 20).unwrap_err();
    assert!(matches!(err, TableError::Io { offset, .. } if offset == 2048 * 512), "{err}");
}
