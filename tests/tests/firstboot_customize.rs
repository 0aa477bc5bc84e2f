//! `shoal image customize`: the agent and its boot hook installed into an
//! image, captured back as a new version derived from the original, the
//! original left as it was. Needs root (loop mounts) and e2fsprogs.

use std::fs;
use std::path::Path;
use std::process::Command;

use shoal_tests::*;

/// An MBR disk with one ext4 partition holding a small OS tree; captured
/// as `os`, version 1.
fn os_image(bed: &Bed) {
    let tree = bed.path("tree");
    for d in ["etc/systemd/system", "usr/local/sbin", "root"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    fs::write(tree.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    fs::write(tree.join("etc/rc.local"), "#!/bin/sh -e\necho local\nexit 0\n").unwrap();
    let disk = bed.path("disk.img");
    fs::File::create(&disk).unwrap().set_len(320 * MIB).unwrap();
    sfdisk(&disk, "label: dos\nstart=2048, type=83\n");
    let (start, size) = partition(&disk, 1);
    mkfs_ext4(&disk, start, size, Some(&tree), &[]);
    bed.capture(&disk, "os", &["--version", "1"]);
}

/// `path` read from the ext4 filesystem of partition 1 of `disk`, with
/// debugfs (no mount).
fn read_in(bed: &Bed, disk: &Path, path: &str) -> Vec<u8> {
    let (start, size) = partition(disk, 1);
    let part = bed.path("part.img");
    extract(disk, start, size, &part);
    let out = Command::new("debugfs").args(["-R", &format!("cat {path}")]).arg(&part).output().unwrap();
    out.stdout
}

fn stat_in(bed: &Bed, disk: &Path, path: &str) -> String {
    let (start, size) = partition(disk, 1);
    let part = bed.path("part.img");
    extract(disk, start, size, &part);
    let out = Command::new("debugfs").args(["-R", &format!("stat {path}")]).arg(&part).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn customize_installs_the_agent_and_a_systemd_unit_as_a_new_version() {
    let bed = Bed::new();
    os_image(&bed);
    let v = bed.json(&["image", "customize", "os", "--agent", agent_bin().to_str().unwrap()]);
    assert_eq!(v["name"], "os");
    assert_eq!(v["version"], "1+firstboot");
    let disk = bed.path("new.img");
    bed.ok(&["image", "deploy", "os:1+firstboot", disk.to_str().unwrap()]);
    assert_eq!(read_in(&bed, &disk, "/usr/local/sbin/shoal-agent"), fs::read(agent_bin()).unwrap());
    assert!(stat_in(&bed, &disk, "/usr/local/sbin/shoal-agent").contains("Mode:  0755"));
    let unit = String::from_utf8(read_in(&bed, &disk, "/etc/systemd/system/shoal-firstboot.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/sbin/shoal-agent firstboot --url http://169.254.169.254\n"), "{unit}");
    let link = stat_in(&bed, &disk, "/etc/systemd/system/multi-user.target.wants/shoal-firstboot.service");
    assert!(link.contains("Type: symlink"), "{link}");
    // The new version derives from the original, which is unchanged.
    let info = bed.json(&["image", "info", "os:1+firstboot"]);
    let orig = bed.json(&["image", "info", "os:1"]);
    assert_eq!(info["base"], orig["id"], "{info}");
    let old = bed.path("old.img");
    bed.ok(&["image", "deploy", "os:1", old.to_str().unwrap()]);
    assert!(read_in(&bed, &old, "/usr/local/sbin/shoal-agent").is_empty());
}

#[test]
fn customize_with_an_rc_local_hook_adds_one_line_before_exit() {
    let bed = Bed::new();
    os_image(&bed);
    bed.ok(&[
        "image",
        "customize",
        "os",
        "--agent",
        agent_bin().to_str().unwrap(),
        "--hook",
        "rc-local",
        "--url",
        "http://10.0.0.1:4870",
        "--version",
        "2",
    ]);
    let disk = bed.path("new.img");
    bed.ok(&["image", "deploy", "os:2", disk.to_str().unwrap()]);
    let rc = String::from_utf8(read_in(&bed, &disk, "/etc/rc.local")).unwrap();
    assert_eq!(
        rc,
        "#!/bin/sh -e\necho local\n/usr/local/sbin/shoal-agent firstboot --url http://10.0.0.1:4870\nexit 0\n"
    );
    // A URL that would inject into the hook is refused before any work.
    let out =
        bed.shoal(&["image", "customize", "os", "--agent", agent_bin().to_str().unwrap(), "--url", "http://x;reboot"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
