//! The TFTP root: regular files opened beneath one directory, and nothing
//! else.
//!
//! Confinement is the kernel's, not string checks: the root directory is
//! held open as an `O_PATH` descriptor and every name is opened with
//! `openat2(2)` relative to it, with `RESOLVE_BENEATH` (no step of the
//! resolution may leave the root: `..` above it, absolute symlinks and
//! symlinks that lead out all fail with `EXDEV`) and
//! `RESOLVE_NO_MAGICLINKS` (no `/proc/*/fd`-style links). Symlinks that stay
//! inside the root are followed. On top of that, names are refused before
//! any syscall when they hold a backslash or a `..` component, so the
//! common attacks never reach the filesystem and are logged as what they
//! are.
//!
//! Name rules, for clients:
//!
//! - Leading `/` characters are dropped: `/pxelinux.cfg/default` is
//!   `pxelinux.cfg/default` under the root, the way pxelinux and many
//!   firmware clients send names. There is no way to name a file outside.
//! - A backslash anywhere is refused (access violation) rather than mapped
//!   to `/`: Windows boot loaders are not served, and a name has exactly
//!   one meaning.
//! - Only regular files are served; directories, devices, FIFOs and
//!   sockets are refused after opening (`O_NONBLOCK`, so a FIFO cannot
//!   stall the open). Files are opened read-only; nothing here writes.
//!
//! What this does not stop: a hard link inside the root to a file outside
//! it is the same file, and is served. Whoever can write the root decides
//! what it holds. Needs Linux 5.6 or later for `openat2`.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{self, Mode, SFlag};

use super::packet::ErrorCode;

/// How often to retry an `openat2` the kernel asks to be retried (`EAGAIN`
/// after a concurrent rename) before giving up.
const OPEN_ATTEMPTS: usize = 3;

/// Why the root directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// the root directory could not be opened
    #[error("opening tftp root {path}: {source}")]
    Open { path: PathBuf, source: Errno },
    /// the kernel has no openat2 (Linux before 5.6), so confinement is impossible
    #[error("openat2 is not available; the tftp root cannot be confined")]
    Openat2Unsupported,
}

/// Why a name was not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// the name holds a backslash or is empty
    #[error("name refused: {0}")]
    BadName(&'static str),
    /// resolving the name would leave the root (`..`, a symlink out, a magic link, a loop)
    #[error("path escapes the root")]
    Escapes,
    /// no such file
    #[error("file not found")]
    NotFound,
    /// the file exists and may not be read
    #[error("permission denied")]
    Denied,
    /// a directory, device, FIFO or socket
    #[error("not a regular file")]
    NotRegular,
    /// anything else the kernel said
    #[error("open failed: {0}")]
    Os(Errno),
}

impl OpenError {
    /// The TFTP error code and message the client gets. Escapes, bad names
    /// and non-regular files all read "access violation": a client learns
    /// nothing about what lies outside the root.
    pub fn to_tftp(&self) -> (ErrorCode, &'static str) {
        match self {
            OpenError::NotFound => (ErrorCode::FileNotFound, "file not found"),
            OpenError::Os(_) => (ErrorCode::NotDefined, "cannot open file"),
            OpenError::BadName(_) | OpenError::Escapes | OpenError::Denied | OpenError::NotRegular => {
                (ErrorCode::AccessViolation, "access violation")
            }
        }
    }
}

/// A directory files are served from.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens `path` as the root, and checks that `openat2` works.
    pub fn new(path: &Path) -> Result<Root, RootError> {
        let open = |source| RootError::Open { path: path.to_owned(), source };
        let dir =
            fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).map_err(open)?;
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH);
        match fcntl::openat2(&dir, ".", how) {
            Ok(_) => Ok(Root { dir, path: path.to_owned() }),
            Err(Errno::ENOSYS) => Err(RootError::Openat2Unsupported),
            Err(e) => Err(open(e)),
        }
    }

    /// The directory this root was opened from, for log lines.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a requested name read-only, returning the file and its size.
    pub fn open(&self, name: &str) -> Result<(File, u64), OpenError> {
        let relative = confine(name)?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut attempt = 0;
        let fd = loop {
            attempt += 1;
            match fcntl::openat2(&self.dir, relative, how) {
                Ok(fd) => break fd,
                Err(Errno::EAGAIN | Errno::EINTR) if attempt < OPEN_ATTEMPTS => continue,
                Err(e) => return Err(classify(e)),
            }
        };
        let st = stat::fstat(&fd).map_err(OpenError::Os)?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(OpenError::NotRegular);
        }
        // A regular file's size is never negative.
        Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
    }
}

/// The name relative to the root, or why it is refused before any syscall.
fn confine(name: &str) -> Result<&str, OpenError> {
    if name.contains('\\') {
        return Err(OpenError::BadName("backslash"));
    }
    let relative = name.trim_start_matches('/');
    if relative.is_empty() {
        return Err(OpenError::BadName("empty"));
    }
    if relative.split('/').any(|c| c == "..") {
        return Err(OpenError::Escapes);
    }
    Ok(relative)
}

fn classify(e: Errno) -> OpenError {
    match e {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENAMETOOLONG => OpenError::NotFound,
        Errno::EXDEV | Errno::ELOOP => OpenError::Escapes,
        Errno::EACCES | Errno::EPERM => OpenError::Denied,
        other => OpenError::Os(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, Root) {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), b"inside").unwrap();
        std::fs::write(top.path().join("secret"), b"outside").unwrap();
        symlink("sub/file", root.join("inner-link")).unwrap();
        symlink("../secret", root.join("outer-link")).unwrap();
        symlink(top.path().join("secret"), root.join("absolute-link")).unwrap();
        symlink("/proc/self/root/etc/passwd", root.join("magic-link")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let r = Root::new(&root).unwrap();
        (top, r)
    }

    fn read(root: &Root, name: &str) -> Result<Vec<u8>, OpenError> {
        let (mut f, size) = root.open(name)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, size);
        Ok(out)
    }

    #[test]
    fn files_and_symlinks_inside_the_root_are_served_with_or_without_a_leading_slash() {
        let (_top, root) = tree();
        assert_eq!(read(&root, "sub/file").unwrap(), b"inside");
        assert_eq!(read(&root, "/sub/file").unwrap(), b"inside");
        assert_eq!(read(&root, "//sub//file").unwrap(), b"inside");
        assert_eq!(read(&root, "inner-link").unwrap(), b"inside");
        assert_eq!(read(&root, "sub/./file").unwrap(), b"inside");
    }

    #[test]
    fn every_way_out_of_the_root_is_refused() {
        let (_top, root) = tree();
        for name in ["../secret", "/../secret", "sub/../../secret", "outer-link", "absolute-link", "magic-link", "loop"]
        {
            assert_eq!(read(&root, name), Err(OpenError::Escapes), "{name}");
        }
    }

    #[test]
    fn backslashes_empty_names_and_non_regular_files_are_refused() {
        let (_top, root) = tree();
        assert_eq!(read(&root, "sub\\file"), Err(OpenError::BadName("backslash")));
        assert_eq!(read(&root, "/"), Err(OpenError::BadName("empty")));
        assert_eq!(read(&root, "sub"), Err(OpenError::NotRegular));
        assert_eq!(read(&root, "sub/"), Err(OpenError::NotRegular));
        assert_eq!(read(&root, "missing"), Err(OpenError::NotFound));
        assert_eq!(read(&root, "sub/file/x"), Err(OpenError::NotFound));
        assert_eq!(OpenError::NotFound.to_tftp().0, ErrorCode::FileNotFound);
        assert_eq!(OpenError::Escapes.to_tftp(), (ErrorCode::AccessViolation, "access violation"));
    }

    #[test]
    fn a_fifo_in_the_root_is_refused_without_blocking() {
        let (top, root) = tree();
        nix::unistd::mkfifo(&top.path().join("root/fifo"), Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        assert_eq!(read(&root, "fifo"), Err(OpenError::NotRegular));
    }
}
