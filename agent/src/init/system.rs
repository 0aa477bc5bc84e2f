//! PID 1's dealings with the kernel: the filesystems every Linux program
//! expects, the initramfs's kernel modules, waiting for devices, the
//! debug shell, and powering off or rebooting.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use shoal_proto::initramfs as layout;

use super::cmdline::After;

/// Mounts proc, sysfs, devtmpfs, and tmpfs on /run and /tmp. A mount that
/// is already there (EBUSY) is fine.
pub fn mount_filesystems() -> Vec<(String, io::Error)> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let table: [(&str, &str, MsFlags, Option<&str>); 5] = [
        ("proc", "/proc", nosuid, None),
        ("sysfs", "/sys", nosuid, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        ("tmpfs", "/run", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755")),
        ("tmpfs", "/tmp", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777")),
    ];
    let mut failed = Vec::new();
    for (fstype, target, flags, data) in table {
        let _ = fs::create_dir_all(target);
        match mount(Some(fstype), target, Some(fstype), flags, data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => failed.push((target.to_string(), io::Error::from(e))),
        }
    }
    failed
}

/// What loading the initramfs's modules did.
#[derive(Debug, Default)]
pub struct ModulesLoaded {
    pub loaded: usize,
    pub already: usize,
    pub failed: Vec<(String, io::Error)>,
}

/// Loads the modules in [`layout::MODULE_LIST`], in order. The builder
/// stores them uncompressed (kernels without CONFIG_MODULE_DECOMPRESS
/// cannot take compressed ones), so each file goes straight to
/// finit_module(2). A module that fails (hardware absent, already built
/// in) is recorded and the rest still load.
pub fn load_modules() -> ModulesLoaded {
    let mut r = ModulesLoaded::default();
    let list = match fs::read_to_string(layout::MODULE_LIST) {
        Ok(l) => l,
        Err(e) => {
            r.failed.push((layout::MODULE_LIST.to_string(), e));
            return r;
        }
    };
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new(layout::MODULES_DIR).join(rel);
        let res =
            File::open(&path).and_then(|f| finit_module(&f, c"", ModuleInitFlags::empty()).map_err(io::Error::from));
        match res {
            Ok(()) => r.loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => r.already += 1,
            Err(e) => r.failed.push((rel.to_string(), e)),
        }
    }
    r
}

/// Waits until `path` exists (devtmpfs makes a disk's node when its driver
/// finds it) or `timeout` passes.
pub fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether the kernel's random number generator is initialised, i.e.
/// getrandom(2) would not block.
pub fn rng_ready() -> bool {
    let mut b = [0u8; 1];
    // SAFETY: `b` is valid for writes of `b.len()` bytes for the whole
    // call; GRND_NONBLOCK only makes the call fail instead of blocking.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    n == 1
}

/// Waits for [`rng_ready`]; `false` if `timeout` passed first.
pub fn wait_for_rng(timeout: Duration) -> bool {
    let start = Instant::now();
    while !rng_ready() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The block devices the kernel has, for the log (`vda 512 MiB`).
pub fn disks() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let sectors: u64 =
                fs::read_to_string(e.path().join("size")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            out.push(format!("{name} {} MiB", sectors / 2048));
        }
    }
    out.sort();
    out
}

/// The process's peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs busybox's shell on the console until it exits. `false` without
/// busybox.
pub fn shell() -> bool {
    if !Path::new(layout::BUSYBOX).exists() {
        return false;
    }
    // Every applet as a link in /bin, for the person at the console.
    let _ = std::process::Command::new(layout::BUSYBOX).args(["--install", "-s", "/bin"]).status();
    let status =
        std::process::Command::new(layout::BUSYBOX).arg("sh").env("PATH", "/bin:/sbin").env("PS1", "shoal# ").status();
    if let Err(e) = status {
        tracing::error!("starting the shell: {e}");
    }
    true
}

/// Syncs, then reboots or powers off. Only returns if the kernel refuses.
pub fn power(after: After) -> io::Error {
    nix::unistd::sync();
    let how = match after {
        After::Reboot => RebootMode::RB_AUTOBOOT,
        After::Poweroff => RebootMode::RB_POWER_OFF,
    };
    match reboot(how) {
        Ok(never) => match never {},
        Err(e) => io::Error::from(e),
    }
}
