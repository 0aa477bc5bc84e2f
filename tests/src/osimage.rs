//! A small bootable OS image to load onto nodes, built from Debian's
//! packages with `shoal image build`: Debian's cloud kernel, a busybox
//! initrd that loads the virtio disk driver (a module in that kernel),
//! finds the root by UUID and switches to it, and a busybox root whose
//! init is a marker service. It prints [`MARKER`] with the node's name
//! (QEMU's SMBIOS serial), the node the disk was first booted on, and a
//! boot count, both kept on the disk; then it powers off. A capture of a
//! booted node therefore carries its origin to wherever it is deployed.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{sh, Bed};

/// What the image's init prints first on the console.
pub const MARKER: &str = "SHOAL-OS-MARKER";

/// The virtio disk driver and what it needs, in load order.
pub const DISK_MODULES: [&str; 6] =
    ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk"];

/// The newest kernel in /boot with its modules: (vmlinuz, version).
pub fn kernel() -> (PathBuf, String) {
    let mut found: Vec<(PathBuf, String)> = fs::read_dir("/boot")
        .expect("/boot")
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules").join(&v).join("modules.dep").exists().then(|| (e.path(), v))
        })
        .collect();
    found.sort();
    found.pop().expect("a kernel in /boot with its modules (make deps installs linux-image-cloud-amd64)")
}

/// Writes an executable script.
pub fn script(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("a path in a tree")).expect("mkdir");
    fs::write(path, text).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A tree with static busybox as /bin/busybox and its applets as symlinks.
pub fn busybox_tree(dir: &Path, applets: &[&str]) {
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    for d in ["dev", "proc", "sys", "tmp", "etc"] {
        fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("/bin/busybox (busybox-static)");
    for a in applets {
        symlink("busybox", dir.join("bin").join(a)).expect("symlink");
    }
}

/// The root filesystem; its /sbin/init is the marker service.
pub fn rootfs(bed: &Bed) -> PathBuf {
    let root = bed.path("rootfs");
    busybox_tree(&root, &["sh", "mount", "echo", "cat", "poweroff", "sync", "mkdir", "test"]);
    fs::create_dir_all(root.join("var/lib/shoal-demo")).expect("mkdir");
    script(
        &root.join("sbin/init"),
        &format!(
            "#!/bin/sh\n\
             mount -t proc proc /proc\nmount -t devtmpfs dev /dev\nmount -t sysfs sys /sys\n\
             mount -o remount,rw /\n\
             me=$(cat /sys/class/dmi/id/product_serial 2>/dev/null)\n\
             d=/var/lib/shoal-demo\n\
             test -s $d/origin || echo \"$me\" > $d/origin\n\
             n=$(cat $d/boots 2>/dev/null); n=$((${{n:-0}} + 1)); echo $n > $d/boots\n\
             sync; mount -o remount,ro /\n\
             echo \"{MARKER} node=$me origin=$(cat $d/origin) boots=$n\" > /dev/console\n\
             poweroff -f\n"
        ),
    );
    fs::write(root.join("etc/hostname"), "shoal-demo\n").expect("hostname");
    root
}

/// The image's initrd: loads the virtio disk driver, mounts the root the
/// kernel command line names (root=UUID=...) and switches to it.
pub fn initrd(bed: &Bed, version: &str) -> PathBuf {
    initrd_with(bed, version, &DISK_MODULES)
}

/// [`initrd`] loading `modules` (from `version`'s, in this order).
pub fn initrd_with(bed: &Bed, version: &str, modules: &[&str]) -> PathBuf {
    let dir = bed.path("initrd");
    busybox_tree(
        &dir,
        &["sh", "mount", "insmod", "findfs", "switch_root", "sleep", "sed", "cat", "echo", "seq", "mkdir"],
    );
    let deps = fs::read_to_string(Path::new("/lib/modules").join(version).join("modules.dep")).expect("modules.dep");
    fs::create_dir_all(dir.join("lib/modules")).expect("mkdir");
    for m in modules {
        let rel = deps
            .lines()
            .filter_map(|l| l.split(':').next())
            .find(|p| p.rsplit('/').next() == Some(&format!("{m}.ko")))
            .unwrap_or_else(|| panic!("{m} is not a module of {version}"));
        fs::copy(Path::new("/lib/modules").join(version).join(rel), dir.join(format!("lib/modules/{m}.ko")))
            .expect("copy module");
    }
    script(
        &dir.join("init"),
        &format!(
            "#!/bin/sh\nmount -t devtmpfs dev /dev\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n\
             for m in {}; do insmod /lib/modules/$m.ko; done\n\
             root=$(sed -n 's/.*root=\\([^ ]*\\).*/\\1/p' /proc/cmdline)\n\
             for i in $(seq 1 100); do dev=$(findfs \"$root\" 2>/dev/null) && break; sleep 0.1; done\n\
             echo \"initrd: root $root is $dev\"\n\
             mkdir -p /newroot && mount -o ro \"$dev\" /newroot || exec sh\n\
             exec switch_root /newroot /sbin/init\n",
            modules.join(" ")
        ),
    );
    let out = bed.path("initrd.cpio");
    sh(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio --quiet -o -H newc > {}",
        dir.display(),
        out.display()
    )));
    out
}

/// Builds the image `name` of `size` (e.g. `64M`) into the bed's store
/// with `shoal image build`; returns the build's JSON report.
pub fn build(bed: &Bed, name: &str, size: &str) -> serde_json::Value {
    let (vmlinuz, version) = kernel();
    let root = rootfs(bed);
    let initrd = initrd(bed, &version);
    bed.json(&[
        "image",
        "build",
        "--rootfs",
        root.to_str().expect("utf-8 path"),
        "--kernel",
        vmlinuz.to_str().expect("utf-8 path"),
        "--initrd",
        initrd.to_str().expect("utf-8 path"),
        "--size",
        size,
        "--out",
        name,
    ])
}
