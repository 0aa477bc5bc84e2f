//! Fixtures for booting QEMU nodes from the network: a test initramfs
//! that prints a marker and its kernel command line on the serial console
//! and powers off, and a QEMU (TCG) node on a tap port of a [`NetBed`]'s
//! bridge, killed when it drops.
//!
//! The node's NIC is virtio-net. With QEMU's own ROM (`efi-virtio.rom`
//! from ipxe-qemu) the PXE client is iPXE, under SeaBIOS and OVMF alike:
//! it asks DHCP with user class "iPXE" and goes straight to the script.
//! Without it (`romfile=`), OVMF's own virtio driver and PXE client boot
//! the node, and fetch iPXE over TFTP first. SeaBIOS is told
//! `graphics=off`, so it copies the text screen, where iPXE writes, to the
//! serial console: the log shows every step.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netbed::NetBed;

/// What the test initramfs prints first on the console.
pub const MARKER: &str = "SHOAL-PXE-MARKER";

/// Debian's cloud kernel, from `make deps`.
pub fn kernel() -> PathBuf {
    let mut found: Vec<PathBuf> = fs::read_dir("/boot")
        .expect("/boot")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
        })
        .collect();
    found.sort();
    found.pop().expect("a cloud kernel in /boot (make deps installs linux-image-cloud-amd64)")
}

/// Writes a newc initramfs whose /init (static busybox) prints
/// `MARKER <kernel command line>` on /dev/console and powers off.
pub fn write_initramfs(path: &Path) {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         /bin/busybox echo \"{MARKER} $(/bin/busybox cat /proc/cmdline)\" > /dev/console\n\
         /bin/busybox poweroff -f\n"
    );
    let mut out = Vec::new();
    let mut ino = 0;
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        ino += 1;
        let fields = [ino, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, rdev.0, rdev.1, name.len() as u32 + 1, 0];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    for dir in ["bin", "dev", "proc"] {
        entry(dir, 0o040755, (0, 0), b"");
    }
    entry("dev/console", 0o020600, (5, 1), b"");
    entry("bin/busybox", 0o100755, (0, 0), &busybox);
    entry("init", 0o100755, (0, 0), init.as_bytes());
    entry("TRAILER!!!", 0, (0, 0), b"");
    File::create(path).and_then(|mut f| f.write_all(&out)).expect("write initramfs");
}

/// What the local disk's boot sector prints on the serial port.
pub const LOCAL_MARKER: &str = "SHOAL-LOCAL-DISK";

/// Writes a 1 MiB disk whose MBR boot code prints [`LOCAL_MARKER`] on
/// COM1 and halts: proof that a node booted its local disk.
pub fn write_local_disk(path: &Path) {
    #[rustfmt::skip]
    let code: [u8; 22] = [
        0xFA,                   // cli
        0x31, 0xC0,             // xor ax, ax
        0x8E, 0xD8,             // mov ds, ax
        0xBE, 0x16, 0x7C,       // mov si, 0x7c00 + 22 (the message)
        0xBA, 0xF8, 0x03,       // mov dx, 0x3f8 (COM1)
        0xAC,                   // next: lodsb
        0x84, 0xC0,             // test al, al
        0x74, 0x03,             // jz done
        0xEE,                   // out dx, al
        0xEB, 0xF8,             // jmp next
        0xF4,                   // done: hlt
        0xEB, 0xFD,             // jmp done
    ];
    let mut disk = vec![0u8; 1 << 20];
    disk[..code.len()].copy_from_slice(&code);
    let msg = format!("{LOCAL_MARKER}\r\n\0");
    disk[code.len()..code.len() + msg.len()].copy_from_slice(msg.as_bytes());
    disk[510] = 0x55;
    disk[511] = 0xAA;
    fs::write(path, disk).expect("write disk");
}

/// Firmware of a QEMU node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, and QEMU's iPXE ROM as the PXE client.
    Bios,
    /// OVMF (with a scratch copy of its variable store); its own PXE
    /// client unless `ipxe_rom`.
    Uefi { ipxe_rom: bool },
}

/// A QEMU node on the bed's bridge. Killed on drop.
pub struct QemuNode {
    child: Child,
    tap: String,
    pub serial: PathBuf,
}

impl QemuNode {
    /// Boots a diskless node with `mac` from the network, its serial
    /// console going to `dir/serial-TAP.log`.
    pub fn boot(bed: &NetBed, tap: &str, mac: &str, firmware: Firmware, dir: &Path) -> QemuNode {
        QemuNode::boot_with_disk(bed, tap, mac, firmware, dir, None)
    }

    /// [`QemuNode::boot`] with a local disk (after the network in boot order).
    pub fn boot_with_disk(
        bed: &NetBed,
        tap: &str,
        mac: &str,
        firmware: Firmware,
        dir: &Path,
        disk: Option<&Path>,
    ) -> QemuNode {
        bed.add_tap(tap);
        let serial = dir.join(format!("serial-{tap}.log"));
        let mut cmd = bed.hub_command("qemu-system-x86_64");
        cmd.args(["-m", "512", "-no-reboot"]);
        let nic = format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=1");
        if let Some(disk) = disk {
            cmd.arg("-drive").arg(format!("file={},format=raw,if=ide,index=0", disk.display()));
        }
        cmd.arg("-device");
        match firmware {
            Firmware::Bios => {
                // strict: only the NIC is in the boot order, so a local disk
                // boots only if iPXE boots it.
                cmd.arg(nic).args(["-boot", "order=n,strict=on"]);
            }
            Firmware::Uefi { ipxe_rom } => {
                cmd.arg(if ipxe_rom { nic } else { format!("{nic},romfile=") });
                let vars = dir.join(format!("OVMF_VARS-{tap}.fd"));
                fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF vars (make deps installs ovmf)");
                cmd.args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"])
                    .arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", vars.display()));
            }
        }
        QemuNode::spawn(cmd, tap, serial, dir)
    }

    /// Starts `cmd` (a `qemu-system-x86_64` run in the bed's hub, with
    /// the node's memory, disks, firmware and boot options), adding what
    /// every node has: TCG, no display, the serial console into `serial`
    /// and the NIC's backend on `tap` (as netdev `n0`, which `cmd`'s NIC
    /// names). QEMU's own messages go to `dir/qemu-TAP.log`.
    pub fn spawn(mut cmd: std::process::Command, tap: &str, serial: PathBuf, dir: &Path) -> QemuNode {
        cmd.args(["-accel", "tcg", "-display", "none", "-monitor", "none", "-machine", "graphics=off"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no")]);
        let log = File::create(dir.join(format!("qemu-{tap}.log"))).expect("qemu log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("qemu-system-x86_64 runs");
        QemuNode { child, tap: tap.to_owned(), serial }
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits for the initramfs's marker line and returns it; panics with
    /// the console after `timeout` or if QEMU exits first.
    pub fn wait_for_marker(&mut self, timeout: Duration) -> String {
        self.wait_for_line(MARKER, timeout)
    }

    /// Waits for a whole console line starting with `marker`.
    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let console = self.console();
            // Only a whole line: the console file grows a byte at a time.
            if let Some(at) = console.find(marker) {
                if let Some(end) = console[at..].find('\n') {
                    return console[at..at + end].trim_end().to_owned();
                }
            }
            let exited = self.child.try_wait().expect("qemu status");
            if exited.is_some() || start.elapsed() > timeout {
                let log = fs::read_to_string(self.serial.with_file_name(format!("qemu-{}.log", self.tap)));
                panic!(
                    "no {marker} after {:?} (qemu exit: {exited:?}); qemu: {}\nconsole:\n{console}",
                    start.elapsed(),
                    log.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether QEMU has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("qemu status").is_some()
    }

    /// Waits for QEMU to exit on its own (the initramfs powers off).
    pub fn wait_for_exit(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.child.try_wait().expect("qemu status").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for QemuNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
