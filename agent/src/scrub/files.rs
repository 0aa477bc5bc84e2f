//! Which files a scrub touches, and touching them, inside a filesystem
//! tree that is untrusted: every path is resolved with `openat2(2)` and
//! `RESOLVE_IN_ROOT`, so an absolute or `..` symlink in the image (say
//! `/etc/ssh -> /etc/ssh`) resolves inside the image, never on the host
//! running the scrub; the last component is never followed (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::shadow::lock_passwords;
use super::Category;

/// Shell and tool histories removed from `/root` and each `/home/*`.
pub const HISTORIES: [&str; 6] =
    [".bash_history", ".zsh_history", ".ash_history", ".python_history", ".lesshst", ".viminfo"];
/// Password files whose hashes are locked.
const PASSWORD_FILES: [&str; 4] = ["etc/shadow", "etc/shadow-", "etc/passwd", "etc/passwd-"];
/// Larger password files are not ours to rewrite.
const MAX_PASSWORD_FILE: u64 = 16 << 20;

/// What is done to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// Unlink a file or symlink (a directory goes with its contents).
    Remove,
    /// Truncate a regular file to zero bytes, keeping it.
    Truncate,
    /// Replace usable password hashes with `!`.
    LockPasswords,
}

/// One thing the scrub does, at a path relative to the filesystem's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub category: Category,
    pub path: PathBuf,
    pub op: Op,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The root directory of the tree being scrubbed.
pub struct Root(OwnedFd);

impl Root {
    pub fn open(dir: &Path) -> io::Result<Root> {
        let fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| at(e.into(), dir))?;
        Ok(Root(fd))
    }

    /// Opens directory `rel` (resolved inside the root); `None` if absent.
    fn dir(&self, rel: &Path) -> io::Result<Option<OwnedFd>> {
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(self.0.as_fd(), rel, how) {
            Ok(fd) => Ok(Some(fd)),
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(at(e.into(), rel)),
        }
    }

    /// What `rel` is, not following a final symlink; `None` if absent.
    fn kind(&self, rel: &Path) -> io::Result<Option<(Kind, u64)>> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else { return Ok(None) };
        match self.dir(parent)? {
            Some(d) => kind_at(d.as_fd(), name),
            None => Ok(None),
        }
    }
}

fn kind_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<(Kind, u64)>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                SFlag::S_IFREG => Kind::File,
                SFlag::S_IFDIR => Kind::Dir,
                SFlag::S_IFLNK => Kind::Symlink,
                _ => Kind::Other,
            };
            Ok(Some((kind, st.st_size as u64)))
        }
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(at(e.into(), Path::new(name))),
    }
}

/// The names in a directory, without `.` and `..`, sorted.
fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<PathBuf>> {
    let mut d = Dir::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(io::Error::from)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(PathBuf::from(OsStr::from_bytes(n)));
        }
    }
    out.sort();
    Ok(out)
}

/// Everything the scrub would do to the tree, in a stable order.
pub fn select(root: &Root) -> io::Result<Vec<Action>> {
    let mut out = Vec::new();
    let mut add = |category, path: PathBuf, op| out.push(Action { category, path, op });
    // SSH host keys.
    if let Some(d) = root.dir(Path::new("etc/ssh"))? {
        for n in names(d.as_fd())? {
            let host_key = n.as_os_str().as_bytes().starts_with(b"ssh_host_");
            if host_key && matches!(kind_at(d.as_fd(), n.as_os_str())?, Some((Kind::File | Kind::Symlink, _))) {
                add(Category::SshHostKeys, Path::new("etc/ssh").join(n), Op::Remove);
            }
        }
    }
    // Histories of root and of each home directory.
    let mut homes = vec![PathBuf::from("root")];
    if let Some(d) = root.dir(Path::new("home"))? {
        for n in names(d.as_fd())? {
            if matches!(kind_at(d.as_fd(), n.as_os_str())?, Some((Kind::Dir, _))) {
                homes.push(Path::new("home").join(n));
            }
        }
    }
    for home in homes {
        for h in HISTORIES {
            let p = home.join(h);
            if matches!(root.kind(&p)?, Some((Kind::File | Kind::Symlink, _))) {
                add(Category::ShellHistory, p, Op::Remove);
            }
        }
    }
    // Logs: every non-empty regular file under /var/log, directories kept.
    let mut stack = vec![PathBuf::from("var/log")];
    while let Some(dir) = stack.pop() {
        let Some(d) = root.dir(&dir)? else { continue };
        for n in names(d.as_fd())? {
            match kind_at(d.as_fd(), n.as_os_str())? {
                Some((Kind::File, size)) if size > 0 => add(Category::Logs, dir.join(n), Op::Truncate),
                Some((Kind::Dir, _)) => stack.push(dir.join(n)),
                _ => {}
            }
        }
    }
    // Machine identity.
    if matches!(root.kind(Path::new("etc/machine-id"))?, Some((Kind::File, size)) if size > 0) {
        add(Category::MachineId, "etc/machine-id".into(), Op::Truncate);
    }
    if matches!(root.kind(Path::new("var/lib/dbus/machine-id"))?, Some((Kind::File, _))) {
        add(Category::MachineId, "var/lib/dbus/machine-id".into(), Op::Remove);
    }
    // cloud-init's record of the instance it last ran as.
    for p in ["var/lib/cloud/instances", "var/lib/cloud/instance", "var/lib/cloud/data"] {
        if root.kind(Path::new(p))?.is_some() {
            add(Category::CloudInit, p.into(), Op::Remove);
        }
    }
    // Password hashes.
    for p in PASSWORD_FILES {
        if let Some(text) = read_small(root, Path::new(p))? {
            if !lock_passwords(&text).1.is_empty() {
                add(Category::Passwords, p.into(), Op::LockPasswords);
            }
        }
    }
    Ok(out)
}

/// A regular file's text, if it is one and not too large.
fn read_small(root: &Root, rel: &Path) -> io::Result<Option<String>> {
    match root.kind(rel)? {
        Some((Kind::File, size)) if size <= MAX_PASSWORD_FILE => {}
        _ => return Ok(None),
    }
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else { return Ok(None) };
    let Some(d) = root.dir(parent)? else { return Ok(None) };
    let mut f = open_file(d.as_fd(), name, OFlag::O_RDONLY)?;
    let mut text = String::new();
    // Not text: not a password file we understand.
    Ok(f.read_to_string(&mut text).ok().map(|_| text))
}

/// Opens a regular file without following a symlink, or refuses.
fn open_file(dir: BorrowedFd<'_>, name: &OsStr, mode: OFlag) -> io::Result<File> {
    let flags = mode | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).map_err(|e| at(e.into(), Path::new(name)))?;
    let st = fstat(&fd).map_err(|e| at(e.into(), Path::new(name)))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a regular file", name.display())));
    }
    Ok(File::from(fd))
}

/// Does one action. Returns the accounts locked, for `LockPasswords`.
pub fn apply(root: &Root, a: &Action) -> io::Result<Vec<String>> {
    let ctx = |e: io::Error| at(e, &a.path);
    let (Some(parent), Some(name)) = (a.path.parent(), a.path.file_name()) else { return Ok(Vec::new()) };
    let Some(d) = root.dir(parent).map_err(ctx)? else { return Ok(Vec::new()) };
    match a.op {
        Op::Remove => remove(d.as_fd(), name).map_err(ctx)?,
        Op::Truncate => open_file(d.as_fd(), name, OFlag::O_WRONLY).and_then(|f| f.set_len(0)).map_err(ctx)?,
        Op::LockPasswords => {
            let mut f = open_file(d.as_fd(), name, OFlag::O_RDWR).map_err(ctx)?;
            let mut text = String::new();
            f.read_to_string(&mut text).map_err(ctx)?;
            let (new, locked) = lock_passwords(&text);
            if !locked.is_empty() {
                // In place: the file keeps its inode, owner and mode.
                f.set_len(0).and_then(|_| f.write_all_at(new.as_bytes(), 0)).and_then(|_| f.sync_all()).map_err(ctx)?;
            }
            return Ok(locked);
        }
    }
    Ok(Vec::new())
}

/// Removes `name` in `dir`: a directory with everything in it.
fn remove(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some((Kind::Dir, _)) => {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let sub = openat(dir, name, flags, Mode::empty()).map_err(io::Error::from)?;
            for n in names(sub.as_fd())? {
                remove(sub.as_fd(), n.as_os_str())?;
            }
            unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(io::Error::from)
        }
        Some(_) => unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io::Error::from),
    }
}

fn at(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
