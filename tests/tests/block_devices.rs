//! Real block devices (loop devices): capture from one, deploy to another
//! with each free-space policy, and refuse one that is mounted.

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_tests::*;

/// A loop device with partition scanning, detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(file: &Path) -> Loop {
        let dev = sh(Command::new("losetup").args(["--find", "--show", "--partscan"]).arg(file));
        Loop { dev: PathBuf::from(dev.trim()) }
    }

    /// Partition `n`'s device. The test kernel may lack the MBR/GPT parsers
    /// that make BLKRRPART create partition devices, so they are added
    /// with partx (BLKPG), as on any kernel.
    fn part(&self, n: u32) -> PathBuf {
        let _ = Command::new("partx").arg("-d").arg(&self.dev).output();
        sh(Command::new("partx").arg("-a").arg(&self.dev));
        let p = PathBuf::from(format!("{}p{n}", self.dev.display()));
        wait_for(&p);
        p
    }

    fn path(&self) -> &str {
        self.dev.to_str().expect("utf-8 device path")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.dev).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn gpt_disk(bed: &Bed, name: &str, size: u64) -> PathBuf {
    let disk = bed.path(name);
    fill_random(&disk, 0, size / 2, 17);
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(size).unwrap();
    sfdisk(&disk, "label: gpt\nstart=2048, size=200000, name=root\n");
    let tree = bed.path("files");
    real_files(&tree, 20 * MIB);
    let (s, z) = partition(&disk, 1);
    mkfs_ext4(&disk, s, z, Some(&tree), &[]);
    disk
}

/// Waits for udev-less partition nodes to appear.
fn wait_for(p: &Path) {
    for _ in 0..100 {
        if p.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} did not appear", p.display());
}

#[test]
fn capture_from_and_deploy_to_loop_devices_with_every_free_policy() {
    let bed = Bed::new();
    let src_file = gpt_disk(&bed, "src.img", 160 * MIB);
    let src = Loop::new(&src_file);
    bed.capture(&src.dev, "disk", &[]);
    bed.capture(&src.dev, "root", &["--partition", "1"]);

    for free in ["leave", "zero", "discard"] {
        let t_file = bed.path(&format!("t-{free}.img"));
        fill_random(&t_file, 0, 256 * MIB, 23);
        let t = Loop::new(&t_file);
        let out = bed.json(&["image", "deploy", "disk", t.path(), "--free", free]);
        assert_eq!(out["gpt_grown"], true, "{free}");
        if free != "leave" {
            assert!(out["stats"]["free_bytes"].as_u64().unwrap() > 10 * MIB, "{free}: {out}");
        }
        bed.ok(&["image", "verify", "disk", "--target", t.path()]);
        let p1 = t.part(1);
        fsck(&p1);
        if free == "zero" {
            // Free space in the filesystem now reads as zeros: a copy of the
            // partition compresses to almost nothing beyond the files.
            let (s, z) = partition(&t_file, 1);
            let tail = read_at(&t_file, s + z - 4 * MIB, 4 * MIB as usize);
            assert!(tail.iter().all(|&b| b == 0), "free space not zeroed");
        }
        // A partition image straight onto the partition device.
        bed.ok(&["image", "deploy", "root", p1.to_str().unwrap()]);
        fsck(&p1);
    }
}

#[test]
fn a_mounted_target_is_refused() {
    let bed = Bed::new();
    let src_file = gpt_disk(&bed, "src.img", 160 * MIB);
    bed.capture(&src_file, "root", &["--partition", "1"]);
    let t_file = gpt_disk(&bed, "t.img", 160 * MIB);
    let t = Loop::new(&t_file);
    let p1 = t.part(1);
    let mnt = bed.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(Command::new("mount").arg("-o").arg("ro").arg(&p1).arg(&mnt));
    let out = bed.shoal(&["image", "deploy", "root", p1.to_str().unwrap()]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", String::from_utf8_lossy(&out.stderr));
}
