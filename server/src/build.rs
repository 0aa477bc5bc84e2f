//! `shoal image build`: a bootable whole-disk image from a root filesystem
//! tree, in the manner of Brinkster's fsmaker.
//!
//! 1. a sparse disk file of the size asked for, in the store's scratch
//!    space (removed at the end, or by `gc` after a crash);
//! 2. an MBR with one bootable Linux partition from 1 MiB to the end
//!    (sfdisk);
//! 3. ext4 on it, filled from the tree (`mkfs.ext4 -d`, at the partition's
//!    offset), without the `64bit` feature, which EXTLINUX cannot read;
//! 4. the filesystem mounted (loop device, `shoal_agent::mount`), the
//!    kernel and initrd copied to `/boot`, `/boot/extlinux/extlinux.conf`
//!    written (root by filesystem UUID, console on ttyS0 and tty0) and
//!    `extlinux --install` run on it;
//! 5. syslinux's `mbr.bin` written to the first 440 bytes of the disk;
//! 6. the disk captured into the store with the ordinary capture.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use shoal_agent::device::Device;
use shoal_agent::mount::Mounted;

use crate::cli::BuildArgs;
use crate::image::{capture_into, run_tool, Failure, Out, Scratch};
use crate::store::Store;

/// Where Debian's syslinux packages put the MBR boot code.
const MBR_BIN: [&str; 2] = ["/usr/lib/EXTLINUX/mbr.bin", "/usr/lib/syslinux/mbr/mbr.bin"];
/// The partition starts here: 1 MiB, as every tool aligns.
const PART_START: u64 = 1 << 20;
/// The boot code's share of the MBR (the table starts at byte 446; 440
/// keeps the disk signature).
const BOOT_CODE: usize = 440;
/// The smallest disk worth building.
pub const MIN_SIZE: u64 = 16 << 20;

pub(crate) fn run(store: &Store, a: &BuildArgs, out: &Out) -> Result<(), Failure> {
    if !a.rootfs.is_dir() {
        return Err(anyhow!("--rootfs {}: not a directory", a.rootfs.display()).into());
    }
    for f in std::iter::once(&a.kernel).chain(a.initrd.as_ref()) {
        if !f.is_file() {
            return Err(anyhow!("{}: not a file", f.display()).into());
        }
    }
    let mbr = MBR_BIN.iter().map(Path::new).find(|p| p.exists()).ok_or_else(|| {
        anyhow!("no syslinux mbr.bin in {} (install extlinux and syslinux-common)", MBR_BIN.join(" or "))
    })?;
    let disk = Scratch(store.scratch(&format!("build-{}.raw", std::process::id())));
    make_disk(&disk.0, a, mbr)?;
    capture_into(store, &disk.0, &[], &[], &a.describe, &a.tuning, out)?;
    Ok(())
}

/// Steps 1 to 5: the bootable disk file.
fn make_disk(disk: &Path, a: &BuildArgs, mbr: &Path) -> anyhow::Result<()> {
    fs::File::create(disk).and_then(|f| f.set_len(a.size)).with_context(|| format!("creating {}", disk.display()))?;
    sfdisk(disk, &format!("label: dos\nstart={}, type=83, bootable\n", PART_START / 512))?;
    let (start, size) = {
        let dev = Device::open(disk)?;
        let t = shoal_agent::table::probe(&dev, dev.size())?.ok_or_else(|| anyhow!("sfdisk wrote no table"))?;
        let p = t.partitions.first().ok_or_else(|| anyhow!("sfdisk made no partition"))?;
        (p.start, p.size)
    };
    let uuid = new_uuid()?;
    run_tool(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-U", &uuid, "-O", "^64bit", "-E"])
            .arg(format!("nodiscard,offset={start}"))
            .arg("-d")
            .arg(&a.rootfs)
            .arg(disk)
            .arg(format!("{}k", size / 1024)),
    )
    .map_err(failure)?;
    let parent = disk.parent().ok_or_else(|| anyhow!("{}: no parent directory", disk.display()))?;
    let m = Mounted::ext(disk, start, size, parent).context("mounting the new filesystem")?;
    let boot = m.dir().join("boot");
    fs::create_dir_all(boot.join("extlinux")).context("creating /boot/extlinux")?;
    fs::copy(&a.kernel, boot.join("vmlinuz")).with_context(|| format!("copying {}", a.kernel.display()))?;
    if let Some(i) = &a.initrd {
        fs::copy(i, boot.join("initrd.img")).with_context(|| format!("copying {}", i.display()))?;
    }
    fs::write(boot.join("extlinux/extlinux.conf"), extlinux_conf(&uuid, a.initrd.is_some(), &a.append))
        .context("writing extlinux.conf")?;
    run_tool(Command::new("extlinux").args(["--install"]).arg(boot.join("extlinux"))).map_err(failure)?;
    m.unmount().context("unmounting the new filesystem")?;
    let code = fs::read(mbr).with_context(|| format!("reading {}", mbr.display()))?;
    let code = code.get(..BOOT_CODE.min(code.len())).unwrap_or_default();
    let f = fs::OpenOptions::new().write(true).open(disk)?;
    f.write_all_at(code, 0).and_then(|_| f.sync_all()).context("writing the MBR boot code")?;
    Ok(())
}

/// The boot menu: one entry, no prompt.
pub fn extlinux_conf(uuid: &str, initrd: bool, append: &str) -> String {
    let mut s = String::from("DEFAULT shoal\nPROMPT 0\nTIMEOUT 1\nSERIAL 0 115200\n\nLABEL shoal\n");
    s += "  LINUX /boot/vmlinuz\n";
    if initrd {
        s += "  INITRD /boot/initrd.img\n";
    }
    s += &format!("  APPEND root=UUID={uuid} ro console=tty0 console=ttyS0,115200");
    if !append.is_empty() {
        s += " ";
        s += append;
    }
    s + "\n"
}

/// A random (version 4) UUID for the filesystem.
fn new_uuid() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow!("random uuid: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

fn sfdisk(disk: &Path, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running sfdisk (install fdisk)")?;
    child.stdin.take().ok_or_else(|| anyhow!("sfdisk stdin"))?.write_all(script.as_bytes())?;
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!("sfdisk failed: {}", String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

fn failure(f: Failure) -> anyhow::Error {
    match f {
        Failure::Verify(e) | Failure::Usage(e) | Failure::Other(e) => e,
    }
}

/// `--size`: bytes, or a number with K, M, G or T (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s}: unknown unit {c} (K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s}: not a size"))?;
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("{s}: too large"))?;
    if bytes < MIN_SIZE {
        return Err(format!("{s}: at least {} MiB", MIN_SIZE >> 20));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_small_ones_are_refused() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("33554432"), Ok(32 << 20));
        assert!(parse_size("1M").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn the_boot_menu_names_the_root_by_uuid_and_the_initrd_only_when_there_is_one() {
        let c = extlinux_conf("u-u", true, "quiet");
        assert!(c.contains("INITRD /boot/initrd.img\n"));
        assert!(c.contains("APPEND root=UUID=u-u ro console=tty0 console=ttyS0,115200 quiet\n"));
        assert!(!extlinux_conf("u", false, "").contains("INITRD"));
    }
}
