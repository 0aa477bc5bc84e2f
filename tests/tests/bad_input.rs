//! Bad input gets a clear error and loses nothing: damaged chunks and
//! manifests, targets of the wrong size, a damaged superblock, unreadable
//! sectors.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shoal_tests::*;

fn small_disk(bed: &Bed) -> PathBuf {
    let disk = bed.path("disk.img");
    fill_random(&disk, 0, 48 * MIB, 1);
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(64 * MIB).unwrap();
    let tree = bed.path("files");
    real_files(&tree, 12 * MIB);
    mkfs_ext4(&disk, 0, 64 * MIB, Some(&tree), &[]);
    disk
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A target file full of old data, and its digest.
fn old_target(bed: &Bed, size: u64) -> (PathBuf, u64) {
    let t = bed.path("target.img");
    fill_random(&t, 0, size, 42);
    let d = digest(&t);
    (t, d)
}

fn damage_a_chunk(bed: &Bed, how: impl Fn(&mut Vec<u8>)) {
    let files = bed.chunk_files();
    let victim = files.iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(victim).unwrap();
    how(&mut bytes);
    let mut perm = std::fs::metadata(victim).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(victim, perm).unwrap();
    std::fs::write(victim, bytes).unwrap();
}

fn assert_damage_refused(bed: &Bed) {
    let out = bed.shoal(&["image", "verify", "img"]);
    assert_eq!(out.status.code(), Some(3), "verify: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("window"), "verify names no window");
    let (t, before) = old_target(bed, 64 * MIB);
    let out = bed.shoal(&["image", "deploy", "img", t.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "deploy: {}", stderr(&out));
    assert!(stderr(&out).contains("nothing was written"), "{}", stderr(&out));
    assert_eq!(digest(&t), before, "the target changed");
}

#[test]
fn a_chunk_with_a_flipped_bit_is_refused_before_anything_is_written() {
    let bed = Bed::new();
    bed.capture(&small_disk(&bed), "img", &[]);
    damage_a_chunk(&bed, |b| {
        let i = b.len() / 2;
        b[i] ^= 0x04;
    });
    assert_damage_refused(&bed);
}

#[test]
fn a_truncated_chunk_is_refused_before_anything_is_written() {
    let bed = Bed::new();
    bed.capture(&small_disk(&bed), "img", &[]);
    damage_a_chunk(&bed, |b| b.truncate(b.len() - 100));
    assert_damage_refused(&bed);
}

#[test]
fn a_manifest_with_a_wrong_signature_is_refused_everywhere() {
    let bed = Bed::new();
    let r = bed.capture(&small_disk(&bed), "img", &[]);
    let id = r["id"].as_str().unwrap();
    let path = bed.store().join("images").join(format!("{id}.manifest"));
    let mut bytes = std::fs::read(&path).unwrap();
    // The image name sits early in the body; change one letter of it.
    let at = bytes.windows(3).position(|w| w == b"img").unwrap();
    bytes[at] = b'I';
    std::fs::write(&path, bytes).unwrap();
    for cmd in [&["image", "info", id][..], &["image", "verify", id], &["image", "deploy", id, "/nonexistent"]] {
        let out = bed.shoal(cmd);
        assert_eq!(out.status.code(), Some(3), "{cmd:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("signature"), "{cmd:?}: {}", stderr(&out));
    }
    let out = bed.shoal(&["image", "list"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("signature"), "list does not warn: {}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&id[..16]));
}

#[test]
fn a_manifest_signed_by_another_server_is_untrusted() {
    let a = Bed::new();
    let b = Bed::new();
    let r = a.capture(&small_disk(&a), "img", &[]);
    let id = r["id"].as_str().unwrap();
    b.ok(&["image", "list"]);
    let name = format!("{id}.manifest");
    std::fs::copy(a.store().join("images").join(&name), b.store().join("images").join(&name)).unwrap();
    let out = b.shoal(&["image", "info", id]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("untrusted key"), "{}", stderr(&out));
}

#[test]
fn a_target_smaller_than_the_image_is_refused_untouched() {
    let bed = Bed::new();
    bed.capture(&small_disk(&bed), "img", &[]);
    let (t, before) = old_target(&bed, 32 * MIB);
    let out = bed.shoal(&["image", "deploy", "img", t.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("needs 67108864"), "{}", stderr(&out));
    assert_eq!(digest(&t), before);
}

#[test]
fn a_partition_image_refuses_a_smaller_partition() {
    let bed = Bed::new();
    let disk = bed.path("gpt.img");
    std::fs::File::create(&disk).unwrap().set_len(128 * MIB).unwrap();
    sfdisk(&disk, "label: gpt\nstart=2048, size=100000\nstart=104448, size=50000\n");
    let (s, z) = partition(&disk, 1);
    mkfs_ext4(&disk, s, z, None, &[]);
    bed.capture(&disk, "p1", &["--partition", "1"]);
    let before = digest(&disk);
    let out = bed.shoal(&["image", "deploy", "p1", disk.to_str().unwrap(), "--partition", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("target partition 2 is"), "{}", stderr(&out));
    let out = bed.shoal(&["image", "deploy", "p1", disk.to_str().unwrap(), "--partition", "7"]);
    assert!(stderr(&out).contains("no partition 7"), "{}", stderr(&out));
    assert_eq!(digest(&disk), before);
}

#[test]
fn a_damaged_ext4_superblock_falls_back_to_zero_detection_with_a_warning() {
    let bed = Bed::new();
    let disk = small_disk(&bed);
    // Corrupt s_blocks_per_group (offset 32 in the superblock at 1024);
    // metadata_csum makes the checksum disagree as well.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xff, 0xff, 0x00, 0x00], 1024 + 32).unwrap();
    drop(f);
    let out = bed.shoal(&["--json", "image", "capture", disk.to_str().unwrap(), "--name", "img"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("zero detection"), "no warning: {}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!r["warnings"].as_array().unwrap().is_empty());
    // Everything non-zero was kept: a fresh deploy is the source, byte for byte.
    let t = bed.path("copy.img");
    bed.ok(&["image", "deploy", "img", t.to_str().unwrap()]);
    assert_eq!(digest(&t), digest(&disk));
}

/// Mounts the disk through FUSE with `[bad_start, bad_end)` unreadable.
struct FailingMount {
    child: Child,
    mnt: PathBuf,
}

impl FailingMount {
    fn new(image: &Path, mnt: &Path, bad_start: u64, bad_end: u64) -> FailingMount {
        std::fs::create_dir_all(mnt).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eio_fuse.py");
        let child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(image)
            .arg(mnt)
            .arg(bad_start.to_string())
            .arg(bad_end.to_string())
            .spawn()
            .expect("python3 runs");
        let m = FailingMount { child, mnt: mnt.to_owned() };
        let start = Instant::now();
        while !m.mnt.join("disk").exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "FUSE mount did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for FailingMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn unreadable_source_sectors_fail_the_capture_naming_the_sector() {
    let bed = Bed::new();
    let disk = small_disk(&bed);
    // The superblock, group descriptors and first bitmaps sit in the first
    // MiB: make sector 4096 (byte 2 MiB) onwards for 4 KiB unreadable, inside
    // the inode tables.
    let bad = 2 * MIB;
    let fm = FailingMount::new(&disk, &bed.path("fuse"), bad, bad + 4096);
    let out = bed.shoal(&["image", "capture", fm.mnt.join("disk").to_str().unwrap(), "--name", "img"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("read error at byte {bad} (sector {})", bad / 512)), "{}", stderr(&out));
    assert!(stderr(&out).contains("Input/output error"), "{}", stderr(&out));
    // Nothing half-made is visible, and nothing is left behind.
    let list = bed.json(&["image", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(bed.store().join("tmp")).unwrap().count(), 0);
    assert!(bed.chunk_files().is_empty());
}
