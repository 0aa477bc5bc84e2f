//! Mounting an ext2/3/4 filesystem that lies somewhere in a disk or an
//! image file, read-write, on a private temporary directory: a loop
//! device over `[offset, offset + size)` of the source (LOOP_CONFIGURE,
//! Linux 5.8 and later, with autoclear), then mount(2) with nosuid, nodev
//! and noexec, since the filesystem is untrusted.
//!
//! [`Mounted`] unmounts, removes its directory and so frees the loop
//! device when dropped, also after a failure. The scrub step uses it to
//! edit a filesystem before capture, `shoal image build` to put a kernel
//! and a boot loader into a new one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

mod ioctl {
    // <linux/loop.h>
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, super::LoopConfig);
}

/// `struct loop_info64` of <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of <linux/loop.h>.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The loop device goes away when its last user (the mount) lets go.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// How long a new loop device node may take to appear in /dev.
const NODE_WAIT: Duration = Duration::from_secs(5);

/// A loop device over part of a file or disk. Closing it (dropping this)
/// while mounted leaves it to the mount; autoclear frees it afterwards.
pub struct LoopDevice {
    file: File,
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches a free loop device to `[offset, offset + size)` of `source`.
    pub fn attach(source: &Path, offset: u64, size: u64) -> io::Result<LoopDevice> {
        let backing = OpenOptions::new().read(true).write(true).open(source).map_err(|e| at(e, source, "open"))?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .map_err(|e| at(e, Path::new("/dev/loop-control"), "open (is the loop module loaded?)"))?;
        // Another program may take the free device between the two calls:
        // ask again a few times.
        let mut last = io::Error::other("no free loop device");
        for _ in 0..8 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
            let n = unsafe { ioctl::loop_ctl_get_free(control.as_raw_fd()) }
                .map_err(|e| at(e.into(), Path::new("/dev/loop-control"), "LOOP_CTL_GET_FREE"))?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let file = open_node(&path)?;
            let mut info = LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: size,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            };
            let name = source.as_os_str().as_encoded_bytes();
            let n = name.len().min(63);
            info.lo_file_name[..n].copy_from_slice(&name[..n]);
            let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| io::Error::other("negative fd"))?;
            let cfg = LoopConfig { fd, block_size: 0, info, reserved: [0; 8] };
            // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` through
            // the pointer, which points at a live, fully initialised local
            // laid out as the kernel's (repr(C), same field types).
            match unsafe { ioctl::loop_configure(file.as_raw_fd(), &cfg) } {
                Ok(_) => return Ok(LoopDevice { file, path }),
                Err(nix::errno::Errno::EBUSY) => last = at(io::Error::from_raw_os_error(libc::EBUSY), &path, "busy"),
                Err(e) => return Err(at(e.into(), &path, "LOOP_CONFIGURE")),
            }
        }
        Err(last)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Opens a loop device node, waiting for devtmpfs to make it.
fn open_node(path: &Path) -> io::Result<File> {
    let start = Instant::now();
    loop {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && start.elapsed() < NODE_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(at(e, path, "open")),
        }
    }
}

/// Makes a new directory only root can enter, under `parent`.
fn private_dir(parent: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    let dir = parent.join(format!("shoal-mnt-{:016x}", u64::from_le_bytes(rnd)));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| at(e, &dir, "mkdir"))?;
    Ok(dir)
}

/// An ext2/3/4 filesystem mounted read-write on a temporary directory.
pub struct Mounted {
    dir: PathBuf,
    mounted: bool,
    _loop: LoopDevice,
}

impl Mounted {
    /// Mounts the ext2/3/4 filesystem at `[offset, offset + size)` of
    /// `source` (a disk, a partition or an image file) on a new directory
    /// under `parent`.
    pub fn ext(source: &Path, offset: u64, size: u64, parent: &Path) -> io::Result<Mounted> {
        let dev = LoopDevice::attach(source, offset, size)?;
        let dir = private_dir(parent)?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        // The ext4 driver mounts ext2 and ext3 too (CONFIG_EXT4_USE_FOR_EXT2).
        if let Err(e) = mount(Some(dev.path()), &dir, Some("ext4"), flags, None::<&str>) {
            let _ = std::fs::remove_dir(&dir);
            return Err(at(e.into(), dev.path(), &format!("mount on {}", dir.display())));
        }
        Ok(Mounted { dir, mounted: true, _loop: dev })
    }

    /// Where the filesystem is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Flushes, unmounts and removes the directory, reporting failures
    /// (dropping does the same, silently).
    pub fn unmount(mut self) -> io::Result<()> {
        self.release()
    }

    fn release(&mut self) -> io::Result<()> {
        if self.mounted {
            if let Ok(f) = File::open(&self.dir) {
                let _ = nix::unistd::syncfs(&f);
            }
            umount2(&self.dir, MntFlags::empty()).map_err(|e| at(e.into(), &self.dir, "umount"))?;
            self.mounted = false;
            std::fs::remove_dir(&self.dir).map_err(|e| at(e, &self.dir, "rmdir"))?;
        }
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.release().is_err() && self.mounted {
            // Busy: detach it so that it goes away when its users do.
            let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn at(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}
