//! The chunk store: deduplication across images, nothing visible after a
//! crash mid-capture, garbage collection; import and export.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::*;

fn disk_with_files(bed: &Bed, name: &str, mib: u64, seed: u64) -> std::path::PathBuf {
    let disk = bed.path(name);
    fill_random(&disk, 0, mib * MIB, seed);
    let tree = bed.path(&format!("{name}.files"));
    real_files(&tree, mib * MIB / 4);
    mkfs_ext4(&disk, 0, mib * MIB, Some(&tree), &[]);
    disk
}

#[test]
fn shared_chunks_are_stored_once_and_gc_frees_only_unused_ones() {
    let bed = Bed::new();
    let a = disk_with_files(&bed, "a.img", 256, 1);
    bed.capture(&a, "a", &[]);
    let after_a = bed.chunk_files().len();
    // b: a copy of a with one extra file written into it by debugfs.
    let b = bed.path("b.img");
    std::fs::copy(&a, &b).unwrap();
    let extra = bed.path("extra");
    fill_random(&extra, 0, 3 * MIB, 9);
    sh(Command::new("debugfs").args(["-w", "-R"]).arg(format!("write {} extra", extra.display())).arg(&b));
    let rb = bed.capture(&b, "b", &[]);
    let new_chunks = rb["stats"]["new_chunks"].as_u64().unwrap();
    let chunks = rb["stats"]["chunks"].as_u64().unwrap();
    assert!(new_chunks <= 6 && new_chunks * 4 < chunks, "b stored {new_chunks} new of {chunks} chunks");
    assert_eq!(bed.chunk_files().len() as u64, after_a as u64 + new_chunks);

    // Nothing is unreferenced yet.
    let gc = bed.json(&["image", "gc"]);
    assert_eq!(gc["chunks_removed"], 0);
    bed.ok(&["image", "delete", "b"]);
    let dry = bed.json(&["image", "gc", "--dry-run"]);
    assert_eq!(dry["chunks_removed"].as_u64().unwrap(), new_chunks);
    assert_eq!(bed.chunk_files().len() as u64, after_a as u64 + new_chunks);
    let gc = bed.json(&["image", "gc"]);
    assert_eq!(gc["chunks_removed"].as_u64().unwrap(), new_chunks);
    assert_eq!(bed.chunk_files().len(), after_a);
    bed.ok(&["image", "verify", "a"]);
}

#[test]
fn a_capture_killed_midway_leaves_no_image_and_gc_cleans_up() {
    let bed = Bed::new();
    // Random data over most of a disk with no filesystem: capture must read
    // and store all of it, which takes long enough to be interrupted.
    let disk = bed.path("raw.img");
    fill_random(&disk, 0, 768 * MIB, 3);
    bed.ok(&["image", "list"]);
    let mut child = Command::new(shoal_bin())
        .args(["image", "capture", disk.to_str().unwrap(), "--name", "doomed", "--threads", "1"])
        .env("SHOAL_DATA_DIR", bed.store())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it has written chunks, then kill it without warning.
    let start = Instant::now();
    let tmp = bed.store().join("tmp");
    loop {
        let written = std::fs::read_dir(&tmp).unwrap().flatten().map(|d| dir_bytes(&d.path())).sum::<u64>();
        if written > 16 * MIB {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "capture finished before it could be killed");
        assert!(start.elapsed() < Duration::from_secs(60), "capture wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(bed.json(&["image", "list"]).as_array().unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(bed.store().join("images")).unwrap().count(), 0);
    let gc = bed.json(&["image", "gc"]);
    assert_eq!(gc["tmp_removed"], 1);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    // The store still works.
    let small = disk_with_files(&bed, "small.img", 32, 4);
    bed.capture(&small, "fine", &[]);
    bed.ok(&["image", "verify", "fine"]);
}

#[test]
fn sparse_raw_and_qcow2_imports_give_the_same_image_and_export_back() {
    let bed = Bed::new();
    let disk = bed.path("sparse.img");
    std::fs::File::create(&disk).unwrap().set_len(2 * GIB).unwrap();
    let tree = bed.path("files");
    real_files(&tree, 20 * MIB);
    mkfs_ext4(&disk, 0, 2 * GIB, Some(&tree), &[]);
    let raw = bed.json(&["image", "import", disk.to_str().unwrap(), "--name", "raw"]);
    // A 2 GiB sparse file: only its allocated blocks were read.
    assert!(raw["stats"]["read_bytes"].as_u64().unwrap() < 200 * MIB);

    let qcow = bed.path("disk.qcow2");
    sh(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&disk).arg(&qcow));
    bed.json(&["image", "import", qcow.to_str().unwrap(), "--name", "qcow"]);
    assert_eq!(bed.chunks("raw"), bed.chunks("qcow"), "qcow2 import differs from the raw capture");
    // Import's scratch file is gone.
    assert_eq!(std::fs::read_dir(bed.store().join("tmp")).unwrap().count(), 0);

    let out_raw = bed.path("out.raw");
    bed.ok(&["image", "export", "qcow", out_raw.to_str().unwrap()]);
    fsck(&out_raw);
    // Exported sparse: far fewer blocks than its size.
    let used = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&out_raw).unwrap()) * 512;
    assert!(used < 400 * MIB, "export uses {used} bytes");
    let out_qcow = bed.path("out.qcow2");
    bed.ok(&["image", "export", "raw", out_qcow.to_str().unwrap(), "--format", "qcow2"]);
    let info = sh(Command::new("qemu-img").args(["info", "--output=json"]).arg(&out_qcow));
    assert!(info.contains("\"qcow2\""));
    let back = bed.path("back.raw");
    sh(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&out_qcow).arg(&back));
    fsck(&back);
    let dumped = bed.path("dumped");
    dump_files(&back, &dumped);
    assert!(assert_same_files(&tree, &dumped) > 100);
    // Export refuses to overwrite.
    assert_eq!(bed.shoal(&["image", "export", "raw", out_raw.to_str().unwrap()]).status.code(), Some(1));
}
