//! Loading one partition: onto a blank whole disk (a loop device) the
//! image's MBR is created first; onto a disk with a table the partition
//! must fit; a GPT image onto a blank disk is refused with the reason.
//! Needs root (loop devices).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_tests::*;

/// A loop device over a file, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(file: &Path) -> Loop {
        Loop(sh(Command::new("losetup").args(["--find", "--show"]).arg(file)).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A source disk with two partitions, ext4 of real files on the second.
fn source(bed: &Bed, label: &str) -> PathBuf {
    let disk = bed.path("src.img");
    fs::File::create(&disk).unwrap().set_len(64 * MIB).unwrap();
    sfdisk(&disk, &format!("label: {label}\nstart=2048, size=16MiB\nsize=32MiB\n"));
    let (start, size) = partition(&disk, 2);
    let tree = bed.path("tree");
    real_files(&tree, 4 * MIB);
    mkfs_ext4(&disk, start, size, Some(&tree), &[]);
    disk
}

fn blank(bed: &Bed, name: &str) -> PathBuf {
    let f = bed.path(name);
    fs::File::create(&f).unwrap().set_len(64 * MIB).unwrap();
    f
}

#[test]
fn a_partition_image_onto_a_blank_disk_creates_the_image_table() {
    let bed = Bed::new();
    let src = source(&bed, "dos");
    bed.capture(&src, "p2", &["-p", "2"]);
    let file = blank(&bed, "node.img");
    {
        let dev = Loop::new(&file);
        let out = bed.shoal(&["image", "deploy", "p2", &dev.0, "-p", "2"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("the image's was created"));
    }
    for n in [1, 2] {
        assert_eq!(partition(&file, n), partition(&src, n), "partition {n}");
    }
    let (start, size) = partition(&src, 2);
    let (a, b) = (bed.path("a"), bed.path("b"));
    extract(&src, start, size, &a);
    extract(&file, start, size, &b);
    assert_eq!(digest(&a), digest(&b));
    fsck(&b);
}

#[test]
fn a_partition_image_onto_a_disk_with_a_table_must_fit() {
    let bed = Bed::new();
    let src = source(&bed, "dos");
    bed.capture(&src, "p2", &["-p", "2"]);
    let small = blank(&bed, "small.img");
    sfdisk(&small, "label: dos\nstart=2048, size=16MiB\nsize=8MiB\n");
    let before = digest(&small);
    let out = bed.shoal(&["image", "deploy", "p2", small.to_str().unwrap(), "-p", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("target partition 2 is"), "{err}");
    assert_eq!(digest(&small), before, "a refused deploy wrote to the disk");
    let out = bed.shoal(&["image", "deploy", "p2", small.to_str().unwrap(), "-p", "3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no partition 3"));
}

#[test]
fn a_gpt_partition_image_onto_a_blank_disk_is_refused_with_the_reason() {
    let bed = Bed::new();
    let src = source(&bed, "gpt");
    bed.capture(&src, "g2", &["-p", "2"]);
    let file = blank(&bed, "node.img");
    let dev = Loop::new(&file);
    let out = bed.shoal(&["image", "deploy", "g2", &dev.0, "-p", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no partition table") && err.contains("GPT"), "{err}");
}
