//! `shoal image build`: a bootable disk image from a tiny busybox root
//! tree, deployed to a disk file with `shoal image deploy`, then booted by
//! QEMU (TCG) from that disk alone: SeaBIOS, syslinux's MBR code, EXTLINUX,
//! Debian's cloud kernel and a small busybox initrd that loads the virtio
//! disk driver (a module in that kernel), finds the root by UUID and
//! switches to it (`shoal_tests::osimage`). The root's /sbin/init prints a
//! marker on the serial console and powers off. Needs root (loop mounts)
//! and `make deps`.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::osimage::{self, MARKER};
use shoal_tests::*;

/// Firmware, boot loader, kernel and init under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

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
    let r = osimage::build(&bed, "tiny", "64M");
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
            .args(["-net", "none", "-smbios", "type=1,serial=built"])
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
    assert!(text.contains(&format!("{MARKER} node=built origin=built boots=1")), "{text}");
}
