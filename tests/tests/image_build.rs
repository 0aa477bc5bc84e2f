//! `shoal image build`: a bootable disk image from a tiny busybox root
//! tree, deployed to a disk file with `shoal image deploy`, then booted by
//! QEMU (TCG) from that disk alone: SeaBIOS, syslinux's MBR code, EXTLINUX,
//! Debian's cloud kernel and a small busybox initrd that loads the virtio
//! disk driver (a module in that kernel), finds the root by UUID and
//! switches to it. The root's /sbin/init prints a marker on the serial
//! console and powers off. Needs root (loop mounts) and `make deps`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::*;

const MARKER: &str = "SHOAL-IMAGE-BOOTED";
/// Firmware, boot loader, kernel and init under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// The virtio disk driver and what it needs, in load order.
const MODULES: [&str; 6] =
    ["virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "virtio_blk"];

/// The newest kernel in /boot with its modules: (vmlinuz, version).
fn kernel() -> (PathBuf, String) {
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

fn script(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A tree with static busybox as /bin/busybox and its applets as symlinks.
fn busybox_tree(dir: &Path, applets: &[&str]) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    for d in ["dev", "proc", "sys", "tmp", "etc"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for a in applets {
        symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
}

/// The root filesystem: /sbin/init prints the marker and powers off.
fn rootfs(bed: &Bed) -> PathBuf {
    let root = bed.path("rootfs");
    busybox_tree(&root, &["sh", "mount", "echo", "poweroff", "sync"]);
    script(
        &root.join("sbin/init"),
        &format!("#!/bin/sh\nmount -t proc proc /proc\nmount -t devtmpfs dev /dev\necho {MARKER} >/dev/console\nsync\npoweroff -f\n"),
    );
    fs::write(root.join("etc/hostname"), "built\n").unwrap();
    root
}

/// The image's initrd: loads the virtio disk driver, mounts the root the
/// kernel command line names (root=UUID=...) and switches to it.
fn initrd(bed: &Bed, version: &str) -> PathBuf {
    let dir = bed.path("initrd");
    busybox_tree(&dir, &["sh", "mount", "insmod", "findfs", "switch_root", "sleep", "sed", "cat", "echo"]);
    let deps = fs::read_to_string(Path::new("/lib/modules").join(version).join("modules.dep")).unwrap();
    fs::create_dir_all(dir.join("lib/modules")).unwrap();
    for m in MODULES {
        let rel = deps
            .lines()
            .filter_map(|l| l.split(':').next())
            .find(|p| p.rsplit('/').next() == Some(&format!("{m}.ko")))
            .unwrap_or_else(|| panic!("{m} is not a module of {version}"));
        fs::copy(Path::new("/lib/modules").join(version).join(rel), dir.join(format!("lib/modules/{m}.ko"))).unwrap();
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
            MODULES.join(" ")
        ),
    );
    symlink("busybox", dir.join("bin/seq")).unwrap();
    symlink("busybox", dir.join("bin/mkdir")).unwrap();
    let out = bed.path("initrd.cpio");
    sh(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio --quiet -o -H newc > {}",
        dir.display(),
        out.display()
    )));
    out
}

/// QEMU, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_built_image_deployed_to_a_disk_boots_from_that_disk_alone() {
    let bed = Bed::new();
    let (vmlinuz, version) = kernel();
    let root = rootfs(&bed);
    let initrd = initrd(&bed, &version);
    let r = bed.json(&[
        "image",
        "build",
        "--rootfs",
        root.to_str().unwrap(),
        "--kernel",
        vmlinuz.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--size",
        "64M",
        "--out",
        "tiny",
    ]);
    assert_eq!(r["kind"], "whole-disk", "{r}");
    let disk = bed.path("node.img");
    bed.ok(&["image", "deploy", "tiny", disk.to_str().unwrap()]);
    assert_eq!(fs::metadata(&disk).unwrap().len(), 64 * MIB);

    let console = bed.path("console.log");
    let start = Instant::now();
    let mut q = Qemu(
        Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "256", "-smp", "1", "-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()))
            .args(["-net", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(bed.path("qemu.err")).unwrap()))
            .spawn()
            .expect("qemu-system-x86_64 runs"),
    );
    let text = loop {
        let text = fs::read_to_string(&console).unwrap_or_default();
        if text.contains(MARKER) {
            break text;
        }
        if let Some(st) = q.0.try_wait().unwrap() {
            panic!("qemu exited ({st}) without the marker; console:\n{text}");
        }
        assert!(start.elapsed() < BOOT_TIMEOUT, "no {MARKER} within {BOOT_TIMEOUT:?}; console:\n{text}");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("booted from its own disk in {:.1} s (wall)", start.elapsed().as_secs_f64());
    assert!(text.contains("initrd: root UUID="), "{text}");
}
