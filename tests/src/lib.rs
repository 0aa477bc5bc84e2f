//! Fixtures for Shoal's integration tests: the built binaries, a scratch
//! store, and real disks made with e2fsprogs, sfdisk and mkswap.
//!
//! The tests need root (loop devices, FUSE) and the Debian packages that
//! `make deps` installs. Everything a test makes lives in a temporary
//! directory removed when the fixture drops, even when the test fails.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub mod fleet;
pub mod netbed;
pub mod osimage;
pub mod pxeboot;

pub use tempfile::TempDir;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The workspace's target directory, and the `shoal` binary, built once
/// per test process so tests never run a stale one.
pub fn shoal_bin() -> &'static Path {
    &bins().0
}

/// The hostile host of the multicast tests (`src/bin/shoal-forge.rs`).
pub fn forge_bin() -> PathBuf {
    bins().1.with_file_name("shoal-forge")
}

/// The `shoal-agent` binary, built with `shoal`.
pub fn agent_bin() -> &'static Path {
    &bins().1
}

fn bins() -> &'static (PathBuf, PathBuf) {
    static BIN: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BIN.get_or_init(|| {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("invariant: tests/ is in the workspace").to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--quiet", "--bin", "shoal", "--bin", "shoal-agent", "--bin", "shoal-forge"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(st.success(), "building the shoal binary failed");
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
        (target.join("debug/shoal"), target.join("debug/shoal-agent"))
    })
}

/// The statically linked, stripped release `shoal-agent` that the
/// initramfs needs, built once per test process into `target/static` (its
/// own target directory, so these flags never invalidate the normal build).
pub fn static_agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("invariant: tests/ is in the workspace").to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target = "x86_64-unknown-linux-gnu";
        let dir = root.join("target/static");
        let st = Command::new(cargo)
            .args(["build", "--quiet", "--profile", "agent", "-p", "shoal-agent", "--target", target, "--target-dir"])
            .arg(&dir)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(st.success(), "building the static shoal-agent failed");
        dir.join(target).join("agent/shoal-agent")
    })
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `shoal server` on a free loopback port, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("invariant: the url ends in :PORT")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory with a Shoal store in it.
pub struct Bed {
    pub dir: TempDir,
}

impl Default for Bed {
    fn default() -> Self {
        Bed::new()
    }
}

impl Bed {
    pub fn new() -> Bed {
        // /var/tmp: real disk, not tmpfs, so sparse files and fsync behave
        // as on a server.
        let dir = tempfile::Builder::new().prefix("shoal-test-").tempdir_in("/var/tmp").expect("temp dir");
        Bed { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// `shoal ARGS` against this bed's store.
    pub fn shoal(&self, args: &[&str]) -> Output {
        Command::new(shoal_bin())
            .args(args)
            .env("SHOAL_DATA_DIR", self.store())
            .stdin(Stdio::null())
            .output()
            .expect("shoal runs")
    }

    /// `shoal ARGS`, which must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.shoal(args);
        assert!(
            out.status.success(),
            "shoal {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `shoal --json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("shoal {args:?}: not JSON ({e}): {out}"))
    }

    /// `shoal server ARGS` on the bed's store, listening on `port` (a free
    /// one when 0) on loopback, logging to `server.log`; returns once it
    /// accepts connections.
    pub fn server(&self, port: u16, args: &[&str]) -> Server {
        let port = match port {
            0 => std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port(),
            p => p,
        };
        let child = Command::new(shoal_bin())
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("SHOAL_DATA_DIR", self.store())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(self.path("server.log")).expect("server log")))
            .spawn()
            .expect("shoal server runs");
        let s = Server { child, url: format!("http://127.0.0.1:{port}") };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < std::time::Duration::from_secs(20), "the server did not come up");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        s
    }

    /// Captures `src` as `name`; returns the capture's JSON report.
    pub fn capture(&self, src: &Path, name: &str, extra: &[&str]) -> serde_json::Value {
        let mut a = vec!["image", "capture", src.to_str().expect("utf-8 path"), "--name", name];
        a.extend_from_slice(extra);
        self.json(&a)
    }

    /// Captures, as image `img`, an ext4 disk of `mib` MiB holding real
    /// files over deleted random data (seeded by `seed`), and deploys it to
    /// a reference file, which it returns: what network loads must match.
    pub fn ext4_image(&self, mib: u64, seed: u64) -> PathBuf {
        let disk = self.path("disk.img");
        fill_random(&disk, 0, mib * MIB / 2, seed);
        std::fs::OpenOptions::new().write(true).open(&disk).expect("disk").set_len(mib * MIB).expect("size");
        let tree = self.path("files");
        real_files(&tree, mib * MIB / 4);
        mkfs_ext4(&disk, 0, mib * MIB, Some(&tree), &[]);
        self.capture(&disk, "img", &[]);
        let reference = self.path("reference.img");
        self.ok(&["image", "deploy", "img", reference.to_str().expect("utf-8 path")]);
        reference
    }

    /// The chunk hashes of an image, by (segment, window).
    pub fn chunks(&self, image: &str) -> Vec<(usize, u64, String)> {
        let info = self.json(&["image", "info", image]);
        let mut out = Vec::new();
        for (i, seg) in info["manifest"]["segments"].as_array().expect("segments").iter().enumerate() {
            for c in seg["chunks"].as_array().expect("chunks") {
                out.push((i, c["window"].as_u64().expect("window"), c["hash"].as_str().expect("hash").to_string()));
            }
        }
        out
    }

    /// Total bytes of the chunk files in the store.
    pub fn store_bytes(&self) -> u64 {
        dir_bytes(&self.store().join("chunks"))
    }

    /// Paths of every chunk file in the store.
    pub fn chunk_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in fs::read_dir(self.store().join("chunks")).expect("chunks dir") {
            for f in fs::read_dir(sub.expect("entry").path()).expect("chunk subdir") {
                out.push(f.expect("entry").path());
            }
        }
        out.sort();
        out
    }
}

pub fn dir_bytes(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().expect("metadata");
            n += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
        }
    }
    n
}

/// A fast deterministic byte stream (xorshift), for "deleted" data that
/// does not compress.
pub fn fill_random(path: &Path, offset: u64, len: u64, seed: u64) {
    let f = fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).expect("open");
    let mut s = seed | 1;
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0;
    while at < len {
        for w in buf.chunks_exact_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            w.copy_from_slice(&s.to_le_bytes());
        }
        let n = (len - at).min(buf.len() as u64) as usize;
        f.write_all_at(&buf[..n], offset + at).expect("write");
        at += n as u64;
    }
}

/// Copies real files (from /usr/share) into `dir` until about `bytes`.
pub fn real_files(dir: &Path, bytes: u64) -> u64 {
    fs::create_dir_all(dir).expect("mkdir");
    let mut total = 0;
    let mut stack = vec![PathBuf::from("/usr/share")];
    let mut n = 0u64;
    while let Some(p) = stack.pop() {
        let Ok(rd) = fs::read_dir(&p) else { continue };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if total >= bytes {
                return total;
            }
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let Ok(mut src) = File::open(e.path()) else { continue };
                let mut data = Vec::new();
                if src.read_to_end(&mut data).is_err() {
                    continue;
                }
                n += 1;
                let sub = dir.join(format!("d{:03}", n % 97));
                fs::create_dir_all(&sub).expect("mkdir");
                let name = format!("{n:06}-{}", e.file_name().to_string_lossy());
                File::create(sub.join(name)).and_then(|mut f| f.write_all(&data)).expect("write");
                total += data.len() as u64;
            }
        }
    }
    total
}

/// Makes an ext4 filesystem in `[offset, offset + size)` of `disk`, filled
/// from `files`, without zeroing what was there.
pub fn mkfs_ext4(disk: &Path, offset: u64, size: u64, files: Option<&Path>, extra: &[&str]) {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-E"]).arg(format!("nodiscard,offset={offset}"));
    cmd.args(extra);
    if let Some(d) = files {
        cmd.arg("-d").arg(d);
    }
    cmd.arg(disk).arg(format!("{}k", size / 1024));
    sh(&mut cmd);
}

/// Partitions `disk` with an sfdisk script.
pub fn sfdisk(disk: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sfdisk runs");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("script");
    let out = child.wait_with_output().expect("sfdisk");
    assert!(out.status.success(), "sfdisk failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Partition `n` of `disk` as (start, size) in bytes, from `sfdisk --json`.
pub fn partition(disk: &Path, n: usize) -> (u64, u64) {
    let out = sh(Command::new("sfdisk").arg("--json").arg(disk));
    let v: serde_json::Value = serde_json::from_str(&out).expect("sfdisk json");
    let t = &v["partitiontable"];
    let ss = t["sectorsize"].as_u64().unwrap_or(512);
    let p = t["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["node"].as_str().is_some_and(|s| s.ends_with(&n.to_string()) && !s.ends_with(&format!("1{n}"))))
        .expect("partition");
    (p["start"].as_u64().expect("start") * ss, p["size"].as_u64().expect("size") * ss)
}

/// Copies `[offset, offset + len)` of `disk` into a new sparse file.
pub fn extract(disk: &Path, offset: u64, len: u64, to: &Path) {
    sh(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=4M", "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"])
        .arg(format!("skip={offset}"))
        .arg(format!("count={len}")));
}

/// `e2fsck -fn` on a filesystem image; panics with its output on errors.
pub fn fsck(fs_image: &Path) {
    let out = Command::new("e2fsck").arg("-fn").arg(fs_image).output().expect("e2fsck runs");
    assert!(
        out.status.success(),
        "e2fsck -fn {} found problems:\n{}{}",
        fs_image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Extracts every file of an ext filesystem image with debugfs.
pub fn dump_files(fs_image: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    sh(Command::new("debugfs").arg("-R").arg(format!("rdump / {}", to.display())).arg(fs_image));
}

/// Asserts every regular file under `a` is under `b` with the same bytes.
/// Returns how many files were compared.
pub fn assert_same_files(a: &Path, b: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(a).expect("read dir") {
        let e = e.expect("entry");
        let ft = e.file_type().expect("type");
        let other = b.join(e.file_name());
        if ft.is_dir() {
            n += assert_same_files(&e.path(), &other);
        } else if ft.is_file() {
            let x = fs::read(e.path()).expect("read");
            let y = fs::read(&other).unwrap_or_else(|_| panic!("{} missing", other.display()));
            assert!(x == y, "{} differs", other.display());
            n += 1;
        }
    }
    n
}

/// Reads `len` bytes at `offset`.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path).expect("open").read_exact_at(&mut buf, offset).expect("read");
    buf
}

/// BLAKE3-free digest for "unchanged" checks: the file's bytes hashed with
/// std's SipHash in 1 MiB pieces.
pub fn digest(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut f = File::open(path).expect("open");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        buf[..n].hash(&mut h);
    }
    h.finish()
}

/// Makes a swap area of `size` bytes at `offset` of `disk` (this mkswap
/// has no --offset: it is made in a scratch file and its header copied).
pub fn mkswap_at(disk: &Path, offset: u64, size: u64, label: &str) {
    let tmp = tempfile::NamedTempFile::new_in("/var/tmp").expect("temp file");
    tmp.as_file().set_len(size).expect("size");
    sh(Command::new("mkswap").args(["-q", "-L", label]).arg(tmp.path()));
    let header = read_at(tmp.path(), 0, 65536);
    let f = fs::OpenOptions::new().write(true).open(disk).expect("open");
    f.write_all_at(&header, offset).expect("write");
}
