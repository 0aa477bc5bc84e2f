//! Capture and deploy of a real ext4 filesystem: only allocated data is
//! read, the result is byte-for-byte the same files, and chunking is
//! deterministic window by window.

use std::collections::BTreeMap;
use std::process::Command;

use shoal_tests::*;

const WINDOW: u64 = 4 * MIB;

/// An ext4 disk holding real files written over `deleted` bytes of random
/// data (what a disk looks like after files were deleted).
fn disk_over_deleted_data(bed: &Bed, size: u64, deleted: u64, files: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let disk = bed.path("disk.img");
    fill_random(&disk, 0, deleted, 0x5eed);
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(size).unwrap();
    let tree = bed.path("files");
    real_files(&tree, files);
    mkfs_ext4(&disk, 0, size, Some(&tree), &[]);
    (disk, tree)
}

#[test]
fn ext4_over_a_gib_of_deleted_data_round_trips_and_beats_plain_zstd() {
    let bed = Bed::new();
    let (disk, tree) = disk_over_deleted_data(&bed, 1280 * MIB, 1100 * MIB, 120 * MIB);

    let report = bed.capture(&disk, "deleted", &[]);
    let read = report["stats"]["read_bytes"].as_u64().unwrap();
    assert!(read < 300 * MIB, "capture read {read} bytes of a disk with ~120 MiB of files");

    // A plain zstd of the whole disk, as a naive imager would store it.
    let zst = bed.path("disk.img.zst");
    sh(Command::new("zstd").args(["-q", "-3", "-T0", "-f"]).arg(&disk).arg("-o").arg(&zst));
    let plain = std::fs::metadata(&zst).unwrap().len();
    let ours = bed.store_bytes();
    eprintln!(
        "1280 MiB disk, 1100 MiB deleted: capture read {read} bytes, image {ours} bytes, plain zstd -3 {plain} bytes"
    );
    assert!(ours * 4 < plain, "image {ours} bytes is not far smaller than plain zstd {plain} bytes");

    let out = bed.path("out.img");
    bed.ok(&["image", "deploy", "deleted", out.to_str().unwrap()]);
    fsck(&out);
    let dumped = bed.path("dumped");
    dump_files(&out, &dumped);
    let n = assert_same_files(&tree, &dumped);
    assert!(n > 1000, "only {n} files compared");
    bed.ok(&["image", "verify", "deleted", "--target", out.to_str().unwrap()]);
}

#[test]
fn capturing_the_same_disk_twice_gives_identical_chunks() {
    let bed = Bed::new();
    let (disk, _) = disk_over_deleted_data(&bed, 256 * MIB, 200 * MIB, 40 * MIB);
    bed.capture(&disk, "a", &[]);
    let files_after_first = bed.chunk_files();
    bed.capture(&disk, "b", &[]);
    assert_eq!(bed.chunks("a"), bed.chunks("b"));
    // The second capture stored nothing new.
    assert_eq!(bed.chunk_files(), files_after_first);
}

#[test]
fn changing_one_file_changes_only_the_windows_it_touches() {
    let bed = Bed::new();
    let (disk, _) = disk_over_deleted_data(&bed, 512 * MIB, 400 * MIB, 60 * MIB);
    bed.capture(&disk, "before", &[]);
    let before_disk = bed.path("before.img");
    sh(Command::new("cp").arg("--sparse=always").arg(&disk).arg(&before_disk));

    // Rewrite 64 KiB in the middle of one file, in place, through the kernel.
    let mnt = bed.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(Command::new("mount").args(["-o", "loop"]).arg(&disk).arg(&mnt));
    let victim = std::fs::read_dir(mnt.join("d001"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&victim).unwrap().len();
    let res = std::panic::catch_unwind(|| {
        let f = std::fs::OpenOptions::new().write(true).open(&victim).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xa5; 65536], len / 2).unwrap();
        f.sync_all().unwrap();
    });
    sh(Command::new("umount").arg(&mnt));
    res.unwrap();

    bed.capture(&disk, "after", &[]);
    let a: BTreeMap<u64, String> = bed.chunks("before").into_iter().map(|(_, w, h)| (w, h)).collect();
    let b: BTreeMap<u64, String> = bed.chunks("after").into_iter().map(|(_, w, h)| (w, h)).collect();
    let windows: std::collections::BTreeSet<u64> = a.keys().chain(b.keys()).copied().collect();
    let mut changed = Vec::new();
    for w in windows {
        if a.get(&w) != b.get(&w) {
            // A chunk may only change where the disk changed.
            let x = read_at(&before_disk, w * WINDOW, WINDOW as usize);
            let y = read_at(&disk, w * WINDOW, WINDOW as usize);
            assert!(x != y, "window {w}: chunk changed but the disk did not");
            changed.push(w);
        }
    }
    // The file's data window, plus the metadata a write touches (superblock,
    // inode table, journal); never a wholesale change.
    assert!(!changed.is_empty(), "no chunk changed");
    assert!(changed.len() <= 8, "{} of {} windows changed: {changed:?}", changed.len(), a.len());
}
