//! Tables made by sfdisk decode to what `sfdisk --json` reports, and
//! filesystems without a table decode to nothing.

use super::*;

const TIB: u64 = 1 << 40;

#[test]
fn mbr_primaries_at_odd_starts_and_three_logicals_match_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "mbr.img", 64 * MIB);
    sfdisk(
        &img,
        "label: dos\n\
         label-id: 0x12345678\n\
         start=63, size=1900, type=83, bootable\n\
         start=2049, size=4000, type=7\n\
         start=8192, size=100000, type=f\n\
         start=8193, size=1000, type=83\n\
         start=10000, size=1000, type=82\n\
         start=20000, size=2000, type=c\n",
    );
    let table = probe_file(&img).unwrap().expect("an mbr");
    assert_matches_sfdisk(&table, &sfdisk_json(&img));

    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 5, 6, 7]);
    assert!(table.partitions.iter().find(|p| p.number == 3).is_some_and(|p| p.extended));
    // The MBR and one EBR per logical, each with a 0x55AA signature.
    let metadata: Vec<(u64, u64)> = table.metadata.iter().map(|r| (r.start, r.end)).collect();
    let ebrs = [8192, 9999, 19999];
    let mut expected = vec![(0, 512)];
    expected.extend(ebrs.iter().map(|lba| (lba * 512, lba * 512 + 512)));
    assert_eq!(metadata, expected);
    let bytes = read_file(&img);
    for (start, end) in metadata {
        assert_eq!(bytes[end as usize - 2..end as usize], [0x55, 0xAA], "sector at {start}");
    }
}

#[test]
fn mbr_extended_partition_without_logicals_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "ext.img", 16 * MIB);
    sfdisk(&img, "label: dos\nstart=2048, size=4096, type=83\nstart=8192, type=5\n");
    let table = probe_file(&img).unwrap().expect("an mbr");
    assert_matches_sfdisk(&table, &sfdisk_json(&img));
    assert_eq!(table.metadata.len(), 2, "the mbr and the blank ebr");
}

#[test]
fn mbr_partition_ending_past_2_tib_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "big-mbr.img", 3 * TIB);
    sfdisk(&img, "label: dos\nstart=2048, size=1GiB, type=83\n");
    // Starts below 2^32 sectors, ends past 2 TiB: offsets must be 64-bit.
    // sfdisk will not make this (it keeps an MBR below 2^32 sectors) but
    // reads it.
    let mut entry = [0u8; 16];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    entry[12..16].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    apply(&img, &[(446 + 16, entry.to_vec())]);
    let table = probe_file(&img).unwrap().expect("an mbr");
    assert_matches_sfdisk(&table, &sfdisk_json(&img));
    assert!(table.partitions[1].end() > 2 * TIB);
}

#[test]
fn gpt_names_uuids_and_attributes_match_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "gpt.img", 64 * MIB);
    sfdisk(
        &img,

        "label: gpt\n\
         label-id: 01234567-89AB-CDEF-0123-456789ABCDEF\n\
         start=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\", attrs=\"LegacyBIOSBootable\"\n\
         start=6145, size=10000, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root ü\", uuid=11111111-2222-3333-4444-555555555555\n\
         start=20000, size=2000, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, attrs=\"RequiredPartition GUID:60,63\"\n\
         start=30000, size=2000, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"a name of exactly thirty-six chars!!\"\n",
    );
    let table = probe_file(&img).unwrap().expect("a gpt");
    assert_matches_sfdisk(&table, &sfdisk_json(&img));
    assert_eq!(table.partitions[3].name.chars().count(), 36);

    let layout = table.gpt.as_ref().expect("gpt layout");
    let sectors = 64 * MIB / 512;
    assert_eq!(layout.used, GptCopy::Primary);
    assert!(layout.other_copy_valid);
    assert_eq!((layout.primary_header_lba, layout.primary_entries_lba), (1, 2));
    assert_eq!((layout.backup_header_lba, layout.backup_entries_lba), (sectors - 1, sectors - 33));
    assert_eq!((layout.entry_count, layout.entry_size), (128, 128));
    let metadata: Vec<(u64, u64)> = table.metadata.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(metadata, [(0, 34 * 512), ((sectors - 33) * 512, sectors * 512)]);
}

#[test]
fn gpt_with_a_longer_entry_array_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "gpt256.img", 32 * MIB);
    sfdisk(&img, "label: gpt\ntable-length: 256\nsize=1MiB\nsize=1MiB\n");
    let table = probe_file(&img).unwrap().expect("a gpt");
    assert_matches_sfdisk(&table, &sfdisk_json(&img));
    assert_eq!(table.gpt.as_ref().map(|l| l.entry_count), Some(256));
}

#[test]
fn gpt_on_4096_byte_sectors_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "gpt4k.img", 64 * MIB);
    sfdisk_4k(
        &img,
        "label: gpt\nsize=1MiB, type=uefi, name=\"esp\"\nstart=1000, size=3000, type=linux, name=\"root\"\n",
    );
    let table = probe_file(&img).unwrap().expect("a gpt");
    assert_eq!(table.sector_size, 4096);
    assert_matches_sfdisk(&table, &sfdisk_json_4k(&img));
    let layout = table.gpt.as_ref().expect("gpt layout");
    assert_eq!(layout.backup_header_lba, 64 * MIB / 4096 - 1);
    assert!(layout.other_copy_valid);
}

#[test]
fn gpt_partition_past_2_tib_matches_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "big-gpt.img", 3 * TIB);
    sfdisk(
        &img,
        "label: gpt\nsize=1GiB, type=linux, name=\"low\"\nstart=5000000000, size=1GiB, type=linux, name=\"high\"\n",
    );
    let table = probe_file(&img).unwrap().expect("a gpt");
    assert_matches_sfdisk(&table, &sfdisk_json(&img));
    assert!(table.partitions[1].start > 2 * TIB);
    let layout = table.gpt.as_ref().expect("gpt layout");
    assert_eq!(layout.backup_header_lba, 3 * TIB / 512 - 1);
    assert!(layout.other_copy_valid);
}

/// A FAT filesystem on a bare 64 MiB file, made by mkfs.vfat (Debian
/// package dosfstools) when it is installed, else a hand-made boot sector of
/// the same shape.
fn fat(dir: &Path, bits: u8) -> PathBuf {
    let img = disk(dir, &format!("fat{bits}.img"), 64 * MIB);
    let mkfs = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].iter().any(|d| Path::new(d).join("mkfs.vfat").exists());
    if mkfs {
        let mut cmd = tool("mkfs.vfat");
        cmd.args(["-F", &bits.to_string()]).arg(&img);
        run(cmd, "");
    } else {
        eprintln!("mkfs.vfat not found (Debian package dosfstools): using a hand-made FAT{bits} boot sector");
        let mut s = vec![0u8; 512];
        s[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
        s[3..11].copy_from_slice(b"mkfs.fat");
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[13] = 4; // sectors per cluster
        s[14] = if bits == 32 { 32 } else { 4 }; // reserved sectors
        s[16] = 2; // FATs
        s[21] = 0xF8; // media
        let (at, magic) = if bits == 32 { (82, "FAT32   ".to_string()) } else { (54, format!("FAT{bits}   ")) };
        s[at..at + 8].copy_from_slice(magic.as_bytes());
        s[510..512].copy_from_slice(&[0x55, 0xAA]);
        apply(&img, &[(0, s)]);
    }
    img
}

/// A partition entry that would pass for a Linux partition at 2048.
fn plausible_entry() -> Vec<u8> {
    let mut entry = vec![0u8; 16];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&4096u32.to_le_bytes());
    entry
}

#[test]
fn fat_and_ext4_filesystems_without_a_table_are_not_tables() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [12, 16, 32] {
        let img = fat(dir.path(), bits);
        assert!(probe_file(&img).unwrap().is_none(), "FAT{bits} passed for a partition table");
    }
    let img = disk(dir.path(), "ext4.img", 64 * MIB);
    let mut cmd = tool("mkfs.ext4");
    cmd.args(["-q", "-F"]).arg(&img);
    run(cmd, "");
    assert!(probe_file(&img).unwrap().is_none(), "ext4 passed for a partition table");
}

#[test]
fn fat_boot_sector_wins_over_plausible_entries() {
    let dir = tempfile::tempdir().unwrap();
    let img = fat(dir.path(), 32);
    // A well-formed entry in the boot code area: still a filesystem, as
    // libblkid decides.
    apply(&img, &[(446, plausible_entry())]);
    assert!(probe_file(&img).unwrap().is_none());
}

#[test]
fn ntfs_and_exfat_boot_sectors_win_over_plausible_entries() {
    for oem in [b"NTFS    ", b"EXFAT   "] {
        let mut img = vec![0u8; 8 << 20];
        img[0..3].copy_from_slice(&[0xEB, 0x52, 0x90]);
        img[3..11].copy_from_slice(oem);
        img[446..462].copy_from_slice(&plausible_entry());
        img[510..512].copy_from_slice(&[0x55, 0xAA]);
        assert!(probe(&img, 8 << 20).unwrap().is_none());
        img[3..11].copy_from_slice(b"MSWIN4.1");
        assert!(probe(&img, 8 << 20).unwrap().is_some(), "the same sector without the oem id is an mbr");
    }
}

#[test]
fn blank_and_tiny_disks_have_no_table() {
    assert!(probe(&vec![0u8; 1 << 20], 1 << 20).unwrap().is_none());
    assert!(probe(&vec![0u8; 100], 100).unwrap().is_none());
    let mut only_signature = vec![0u8; 1 << 20];
    only_signature[510..512].copy_from_slice(&[0x55, 0xAA]);
    assert!(probe(&only_signature, 1 << 20).unwrap().is_none());
}
