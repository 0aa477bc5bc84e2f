//! Whole disks with MBR and GPT tables, partitions that start anywhere,
//! swap, unknown data, and partition images deployed into other disks.

use std::process::Command;

use shoal_tests::*;

/// A GPT disk: p1 ext4 at an odd start over random data, p2 swap, p3
/// unknown data with zero runs. Returns the disk and the files in p1.
fn gpt_disk(bed: &Bed) -> (std::path::PathBuf, std::path::PathBuf) {
    let disk = bed.path("gpt.img");
    fill_random(&disk, 0, 300 * MIB, 7);
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(400 * MIB).unwrap();
    sfdisk(
        &disk,
        "label: gpt\nstart=2049, size=300000, name=root\nstart=303104, size=65536, type=swap, name=swap\nstart=370001, size=100000, name=data\n",
    );
    let tree = bed.path("files");
    real_files(&tree, 30 * MIB);
    let (s1, z1) = partition(&disk, 1);
    mkfs_ext4(&disk, s1, z1, Some(&tree), &["-L", "rootfs"]);
    let (s2, _) = partition(&disk, 2);
    mkswap_at(&disk, s2, 32 * MIB, "swp");
    // p3: 1 MiB of data, a zero run, 1 MiB more; the rest of it stays random.
    let (s3, _) = partition(&disk, 3);
    fill_random(&disk, s3, MIB, 99);
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&disk).unwrap(),
        &vec![0; 8 * MIB as usize],
        s3 + MIB,
    )
    .unwrap();
    (disk, tree)
}

#[test]
fn gpt_disk_with_ext4_swap_and_unknown_partitions_round_trips() {
    let bed = Bed::new();
    let (disk, tree) = gpt_disk(&bed);
    let report = bed.capture(&disk, "gpt", &["--os", "1=Testix 9"]);
    let info = bed.json(&["image", "info", "gpt"]);
    let parts = info["manifest"]["table"]["partitions"].as_array().unwrap();
    let fs: Vec<_> = parts.iter().map(|p| p["fs"].as_str().unwrap().to_string()).collect();
    assert_eq!(fs, ["ext4", "swap", "unknown"]);
    assert_eq!(parts[0]["start"].as_u64().unwrap(), 2049 * 512);
    assert_eq!(parts[0]["fs_label"], "rootfs");
    assert_eq!(parts[0]["os"], "Testix 9");
    // Swap contributes one page and ext4 (146 MiB over random data) only
    // its ~30 MiB of files; the unknown partition (~40 MiB of random data)
    // and the random bytes past it up to 300 MiB (~71 MiB, unpartitioned
    // so possibly meaningful) are kept whole.
    let read = report["stats"]["read_bytes"].as_u64().unwrap();
    let raw = report["stats"]["raw_bytes"].as_u64().unwrap();
    assert!(raw < 175 * MIB, "restores {raw} bytes");
    assert!(read >= raw);

    // Deploy onto a larger disk that holds other data: the GPT is moved to
    // the new end and the disk verifies.
    let out = bed.path("big.img");
    fill_random(&out, 0, 64 * MIB, 3);
    std::fs::OpenOptions::new().write(true).open(&out).unwrap().set_len(600 * MIB).unwrap();
    let dep = bed.json(&["image", "deploy", "gpt", out.to_str().unwrap()]);
    assert_eq!(dep["gpt_grown"], true);
    sh(Command::new("sgdisk").arg("-v").arg(&out));
    assert_eq!(partition(&out, 1), partition(&disk, 1));
    bed.ok(&["image", "verify", "gpt", "--target", out.to_str().unwrap()]);

    let (s1, z1) = partition(&out, 1);
    let p1 = bed.path("p1.img");
    extract(&out, s1, z1, &p1);
    fsck(&p1);
    let dumped = bed.path("dumped");
    dump_files(&p1, &dumped);
    assert!(assert_same_files(&tree, &dumped) > 100);
    // The swap header survived, so the area needs no mkswap.
    let (s2, _) = partition(&out, 2);
    assert_eq!(&read_at(&out, s2 + 4096 - 10, 10), b"SWAPSPACE2");
    // The unknown partition's data, and its zero run, are exact.
    let (s3, z3) = partition(&disk, 3);
    assert_eq!(read_at(&out, s3, z3 as usize), read_at(&disk, s3, z3 as usize));
}

#[test]
fn partition_image_deploys_into_another_disks_partition() {
    let bed = Bed::new();
    let (disk, tree) = gpt_disk(&bed);
    let report = bed.capture(&disk, "root", &["--partition", "1"]);
    assert_eq!(report["kind"], "partition");

    // Another disk, MBR this time, with a bigger partition 1 at another start.
    let other = bed.path("other.img");
    fill_random(&other, 0, 200 * MIB, 11);
    std::fs::OpenOptions::new().write(true).open(&other).unwrap().set_len(256 * MIB).unwrap();
    sfdisk(&other, "label: dos\nstart=63, size=400000, type=83\n");
    let before = read_at(&other, 0, 512);
    bed.ok(&["image", "deploy", "root", other.to_str().unwrap(), "--partition", "1"]);
    assert_eq!(read_at(&other, 0, 512), before, "the target's MBR was touched");
    let (s, z) = partition(&other, 1);
    assert_eq!(s, 63 * 512);
    let p = bed.path("p.img");
    extract(&other, s, z, &p);
    fsck(&p);
    let dumped = bed.path("dumped");
    dump_files(&p, &dumped);
    assert!(assert_same_files(&tree, &dumped) > 100);

    // The same image straight onto a file (the partition itself).
    let f = bed.path("bare.img");
    bed.ok(&["image", "deploy", "root", f.to_str().unwrap()]);
    fsck(&f);
}

#[test]
fn one_partition_can_be_taken_from_a_whole_disk_image() {
    let bed = Bed::new();
    let (disk, _) = gpt_disk(&bed);
    bed.capture(&disk, "whole", &[]);
    let (_, z1) = partition(&disk, 1);
    let f = bed.path("p1.img");
    std::fs::File::create(&f).unwrap().set_len(z1).unwrap();
    bed.ok(&["image", "deploy", "whole", f.to_str().unwrap(), "--partition", "1"]);
    fsck(&f);
}

#[test]
fn mbr_logical_partitions_and_combo_images() {
    let bed = Bed::new();
    let disk = bed.path("mbr.img");
    fill_random(&disk, 0, 100 * MIB, 5);
    std::fs::OpenOptions::new().write(true).open(&disk).unwrap().set_len(200 * MIB).unwrap();
    sfdisk(
        &disk,
        "label: dos\nstart=63, size=60000, type=83\nstart=61440, size=300000, type=5\nstart=63488, size=100000, type=83\nstart=165001, size=100000, type=82\n",
    );
    let (s1, z1) = partition(&disk, 1);
    mkfs_ext4(&disk, s1, z1, None, &["-t", "ext2"]);
    let (s5, z5) = partition(&disk, 5);
    let tree = bed.path("files");
    real_files(&tree, 10 * MIB);
    std::fs::create_dir_all(tree.join("usr/lib")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("usr/lib/os-release"), "NAME=\"Shoalix\"\nPRETTY_NAME=\"Shoalix 1.0 (test)\"\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", tree.join("etc/os-release")).unwrap();
    mkfs_ext4(&disk, s5, z5, Some(&tree), &["-b", "1024"]);
    let (s6, _) = partition(&disk, 6);
    mkswap_at(&disk, s6, 40 * MIB, "swap6");

    let info = {
        bed.capture(&disk, "mbr", &[]);
        bed.json(&["image", "info", "mbr"])
    };
    let parts = info["manifest"]["table"]["partitions"].as_array().unwrap();
    let got: Vec<(u64, String)> =
        parts.iter().map(|p| (p["number"].as_u64().unwrap(), p["fs"].as_str().unwrap().into())).collect();
    assert_eq!(got, [(1, "ext2".into()), (2, "extended".into()), (5, "ext4".into()), (6, "swap".into())]);
    // The OS on partition 5 is read from its /etc/os-release (a symlink).
    assert_eq!(parts[2]["os"], "Shoalix 1.0 (test)");
    assert_eq!(parts[0]["os"], serde_json::Value::Null);

    // A combo image of partitions 1 and 5 onto a copy of the table.
    bed.capture(&disk, "combo", &["--partition", "1", "--partition", "5"]);
    let out = bed.path("out.img");
    std::fs::File::create(&out).unwrap().set_len(200 * MIB).unwrap();
    let dump = sh(Command::new("sfdisk").arg("--dump").arg(&disk));
    sfdisk(&out, &dump);
    bed.ok(&["image", "deploy", "combo", out.to_str().unwrap()]);
    let p5 = bed.path("p5.img");
    extract(&out, s5, z5, &p5);
    fsck(&p5);
    let p1 = bed.path("p1.img");
    extract(&out, s1, z1, &p1);
    fsck(&p1);
    let dumped = bed.path("dumped");
    dump_files(&p5, &dumped);
    assert!(assert_same_files(&tree, &dumped) > 10);
}
