//! `grow_gpt` leaves a GPT that sgdisk verifies and sfdisk reads with the
//! new last usable LBA.

use super::*;

/// Runs `sgdisk -v` and asserts it finds no problems.
fn assert_sgdisk_verifies(img: &Path) {
    let mut cmd = tool("sgdisk");
    cmd.arg("-v").arg(img);
    let out = run(cmd, "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
}

/// A GPT made by sfdisk on a 64 MiB disk, copied onto a `size` disk.
fn imaged_onto(dir: &Path, size: u64) -> (PathBuf, Table) {
    let small = disk(dir, "small.img", 64 * MIB);
    sfdisk(
        &small,

        "label: gpt\nsize=8MiB, type=uefi, name=\"esp\"\nsize=16MiB, type=linux, name=\"root\"\ntype=linux, name=\"data\"\n",
    );
    let big = disk(dir, "big.img", size);
    apply(&big, &[(0, read_file(&small))]);
    let table = probe_file(&small).unwrap().expect("a gpt");
    (big, table)
}

#[test]
fn grown_gpt_passes_sgdisk_verify_and_ends_at_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let (img, before) = imaged_onto(dir.path(), 128 * MIB);
    let file = File::open(&img).unwrap();

    // The backup is still valid in the middle of the larger disk.
    let probed = probe_file(&img).unwrap().expect("a gpt");
    assert_eq!(probed.partitions, before.partitions);
    let layout = probed.gpt.as_ref().expect("gpt layout");
    assert!(layout.other_copy_valid);
    assert_eq!(layout.backup_header_lba, 64 * MIB / 512 - 1);

    let writes = grow_gpt(&file, &probed, 128 * MIB).unwrap();
    apply(&img, &writes);
    assert_sgdisk_verifies(&img);

    let sectors = 128 * MIB / 512;
    let json = sfdisk_json(&img);
    assert_eq!(json["partitiontable"]["lastlba"], sectors - 34);
    let after = probe_file(&img).unwrap().expect("a gpt");
    assert_matches_sfdisk(&after, &json);
    assert_eq!(after.partitions, before.partitions);
    let layout = after.gpt.as_ref().expect("gpt layout");
    assert_eq!((layout.used, layout.other_copy_valid), (GptCopy::Primary, true));
    assert_eq!((layout.backup_header_lba, layout.last_usable_lba), (sectors - 1, sectors - 34));
    let mbr = read_file(&img);
    assert_eq!(mbr[446 + 12..446 + 16], ((sectors - 1) as u32).to_le_bytes(), "protective mbr size");
}

#[test]
fn grown_gpt_agrees_with_sgdisk_e_but_for_the_end_of_the_usable_range() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = imaged_onto(dir.path(), 128 * MIB);
    let theirs = dir.path().join("theirs.img");
    std::fs::copy(&img, &theirs).unwrap();
    let mut cmd = tool("sgdisk");
    cmd.arg("-e").arg(&theirs);
    run(cmd, "");

    let probed = probe_file(&img).unwrap().expect("a gpt");
    apply(&img, &grow_gpt(&File::open(&img).unwrap(), &probed, 128 * MIB).unwrap());
    let (ours, theirs) = (read_file(&img), read_file(&theirs));
    let sectors = (128 * MIB / 512) as usize;
    // sgdisk also recomputes the CHS address of the last sector, which
    // nothing reads; the LBA size must agree.
    assert_eq!(ours[446 + 12..446 + 16], theirs[446 + 12..446 + 16], "protective mbr size");
    // gdisk 1.0.9 rounds the last usable LBA down to its 1 MiB alignment
    // and puts the backup array just after it, leaving a gap before the
    // backup header. Like sfdisk we put the array right before the header
    // and leave the space up to it usable.
    let u64_at = |disk: &[u8], at: usize| u64::from_le_bytes(disk[at..at + 8].try_into().unwrap());
    for (what, lba) in [("primary header", 1), ("backup header", sectors - 1)] {
        let at = lba * 512;
        let masked = |disk: &[u8]| {
            let mut h = disk[at..at + 92].to_vec();
            h[16..20].fill(0); // crc
            h[48..56].fill(0); // last usable lba
            if lba != 1 {
                h[72..80].fill(0); // entry array lba
            }
            h
        };
        assert_eq!(masked(&ours), masked(&theirs), "{what} differs from sgdisk -e");
        assert_eq!(u64_at(&ours, at + 48), sectors as u64 - 34, "{what}: our last usable lba");
        assert!(u64_at(&theirs, at + 48) <= u64_at(&ours, at + 48));
    }
    let backup_array = |disk: &[u8]| {
        let at = u64_at(disk, (sectors - 1) * 512 + 72) as usize * 512;
        disk[at..at + 32 * 512].to_vec()
    };
    assert!(backup_array(&ours) == backup_array(&theirs), "backup entry array differs from sgdisk -e");
    assert_eq!(u64_at(&ours, (sectors - 1) * 512 + 72), sectors as u64 - 33);

    // And sgdisk's layout, with its gap before the backup header, decodes.
    let table = probe(&theirs, theirs.len() as u64).unwrap().expect("a gpt");
    let layout = table.gpt.as_ref().expect("gpt layout");
    assert_eq!((layout.used, layout.other_copy_valid), (GptCopy::Primary, true));
    assert_eq!(layout.backup_entries_lba, u64_at(&theirs, (sectors - 1) * 512 + 72));
}

#[test]
fn grow_rebuilds_a_damaged_primary_from_the_backup() {
    // Capture probes the source, whose primary is damaged; deploy writes
    // the image onto a larger disk and grows the table it was given.
    let dir = tempfile::tempdir().unwrap();
    let (img, before) = imaged_onto(dir.path(), 128 * MIB);
    let source = dir.path().join("small.img");
    apply(&source, &[(512 + 0x40, vec![0xFF]), (1024, vec![0xFF; 16])]);
    let captured = probe_file(&source).unwrap().expect("a gpt");
    assert_eq!(captured.gpt.as_ref().map(|l| l.used), Some(GptCopy::Backup));
    apply(&img, &[(0, read_file(&source))]);
    // On the larger disk alone the backup cannot be found: it is not at
    // the end and the damaged primary cannot say where it is.
    assert!(matches!(probe_file(&img), Err(TableError::NoValidGpt { .. })));

    apply(&img, &grow_gpt(&File::open(&img).unwrap(), &captured, 128 * MIB).unwrap());
    assert_sgdisk_verifies(&img);
    let after = probe_file(&img).unwrap().expect("a gpt");
    assert_eq!(after.gpt.as_ref().map(|l| (l.used, l.other_copy_valid)), Some((GptCopy::Primary, true)));
    assert_eq!(after.partitions, before.partitions);
}

#[test]
fn grow_past_2_tib_caps_the_protective_mbr_size() {
    let dir = tempfile::tempdir().unwrap();
    let size = 3 << 40;
    let (img, _) = imaged_onto(dir.path(), size);
    let probed = probe_file(&img).unwrap().expect("a gpt");
    apply(&img, &grow_gpt(&File::open(&img).unwrap(), &probed, size).unwrap());
    assert_sgdisk_verifies(&img);
    let mbr = read_file_head(&img);
    assert_eq!(mbr[446 + 12..446 + 16], [0xFF; 4], "protective mbr size");
    let after = probe_file(&img).unwrap().expect("a gpt");
    assert_eq!(after.gpt.as_ref().map(|l| l.backup_header_lba), Some(size / 512 - 1));
}

#[test]
fn grow_on_4096_byte_sectors_ends_at_the_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let small = small_gpt(dir.path(), 64 * MIB, 4096);
    let img = disk(dir.path(), "big4k.img", 128 * MIB);
    apply(&img, &[(0, small)]);
    let probed = probe_file(&img).unwrap().expect("a gpt");
    apply(&img, &grow_gpt(&File::open(&img).unwrap(), &probed, 128 * MIB).unwrap());

    let sectors = 128 * MIB / 4096;
    let json = sfdisk_json_4k(&img);
    assert_eq!(json["partitiontable"]["lastlba"], sectors - 6, "4 blocks of entries and a header");
    let after = probe_file(&img).unwrap().expect("a gpt");
    assert_matches_sfdisk(&after, &json);
    assert_eq!(after.gpt.as_ref().map(|l| (l.backup_header_lba, l.other_copy_valid)), Some((sectors - 1, true)));
}

#[test]
fn grow_onto_a_smaller_disk_is_an_error_and_mbr_needs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = imaged_onto(dir.path(), 128 * MIB);
    let probed = probe_file(&img).unwrap().expect("a gpt");
    let file = File::open(&img).unwrap();
    let err = grow_gpt(&file, &probed, 32 * MIB).unwrap_err();
    assert!(matches!(err, TableError::DiskShrinks { old, new } if old == 64 * MIB && new == 32 * MIB), "{err}");

    let mbr = disk(dir.path(), "mbr.img", 16 * MIB);
    sfdisk(&mbr, "label: dos\nsize=4MiB, type=83\n");
    let table = probe_file(&mbr).unwrap().expect("an mbr");
    assert!(grow_gpt(&File::open(&mbr).unwrap(), &table, 64 * MIB).unwrap().is_empty());
}

#[test]
fn grow_refuses_a_target_that_does_not_hold_the_probed_table() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = imaged_onto(dir.path(), 128 * MIB);
    let probed = probe_file(&img).unwrap().expect("a gpt");
    let other = dir.path().join("other.img");
    File::create(&other).unwrap().set_len(128 * MIB).unwrap();
    sfdisk(&other, "label: gpt\nsize=1MiB\n");
    let err = grow_gpt(&File::open(&other).unwrap(), &probed, 128 * MIB).unwrap_err();
    assert!(matches!(err, TableError::TargetMismatch(_)), "{err}");
}

fn read_file_head(img: &Path) -> Vec<u8> {
    let mut head = vec![0u8; 512];
    FileExt::read_exact_at(&File::open(img).unwrap(), &mut head, 0).unwrap();
    head
}
