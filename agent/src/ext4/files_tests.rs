use super::*;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;
const PRETTY: &str = "Debian GNU/Linux 12 (bookworm)";
const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
    VERSION_ID=\"12\"\nID=debian\n";
/// Over 60 bytes, so stored in a data block: a slow symlink.
const LONG_DIR: &str = "a-directory-name-long-enough-that-links-to-it-are-slow-symlinks";

fn command(prog: &str, args: &[&str]) -> Output {
    let search = format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default());
    Command::new(prog)
        .args(args)
        .env("PATH", search)
        .output()
        .unwrap_or_else(|e| panic!("{prog} not runnable ({e}): install e2fsprogs"))
}

fn run(prog: &str, args: &[&str]) -> String {
    let out = command(prog, args);
    assert!(out.status.success(), "{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn debugfs(img: &Path, request: &str) -> String {
    run("debugfs", &["-R", request, img.to_str().unwrap()])
}

/// Runs debugfs requests that change the image, one per line.
fn debugfs_write(img: &Path, requests: &[String]) {
    let script = img.with_extension("debugfs");
    fs::write(&script, requests.join("\n")).unwrap();
    run("debugfs", &["-w", "-f", script.to_str().unwrap(), img.to_str().unwrap()]);
}

/// Makes an image of `size` bytes holding `tree`, then has e2fsck index
/// its directories (mkfs -d writes them linear).
fn mkfs(dir: &Path, prog: &str, size: u64, args: &[&str], tree: Option<&Path>) -> PathBuf {
    let path = dir.join(format!("{prog}{}.img", args.join("").replace(['-', ',', '^', ' '], "")));
    File::create(&path).unwrap().set_len(size).unwrap();
    let mut all = vec!["-F", "-q", "-E", "nodiscard"];
    all.extend_from_slice(args);
    if let Some(tree) = tree {
        all.extend(["-d", tree.to_str().unwrap()]);
    }
    all.push(path.to_str().unwrap());
    run(prog, &all);
    let fsck = command("e2fsck", &["-fyD", path.to_str().unwrap()]);
    assert!(matches!(fsck.status.code(), Some(0 | 1)), "e2fsck: {}", String::from_utf8_lossy(&fsck.stdout));
    path
}

fn next(state: &mut u64) -> u64 {
    // splitmix64
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len).map(|_| next(seed) as u8).collect()
}

/// A Debian-like tree: /etc/os-release a relative symlink into /usr/lib,
/// an htree directory, a slow symlink, sparse files with many extents and
/// one needing triple indirect blocks with 1 KiB blocks, and link loops.
fn os_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let mut seed = 0x5eed;
    for sub in ["etc", "usr/lib", "many", "small", &format!("usr/lib/{LONG_DIR}")] {
        fs::create_dir_all(tree.join(sub)).unwrap();
    }
    fs::write(tree.join("usr/lib/os-release"), OS_RELEASE).unwrap();
    symlink("../usr/lib/os-release", tree.join("etc/os-release")).unwrap();
    fs::write(tree.join(format!("usr/lib/{LONG_DIR}/target")), random(&mut seed, 5000)).unwrap();
    symlink(format!("/usr/lib/{LONG_DIR}/target"), tree.join("etc/slow")).unwrap();
    symlink(format!("../usr/lib/{LONG_DIR}"), tree.join("etc/slowdir")).unwrap();
    symlink("usr/lib", tree.join("lib")).unwrap();
    symlink("/etc/os-release", tree.join("absolute")).unwrap();
    symlink("dangling", tree.join("broken")).unwrap();
    symlink("loop-b", tree.join("loop-a")).unwrap();
    symlink("loop-a", tree.join("loop-b")).unwrap();
    symlink("self", tree.join("self")).unwrap();
    // chain-0 -> chain-1 -> ... -> chain-16 -> os-release: 17 links.
    for i in 0..16 {
        symlink(format!("chain-{}", i + 1), tree.join(format!("chain-{i}"))).unwrap();
    }
    symlink("usr/lib/os-release", tree.join("chain-16")).unwrap();
    for i in 0..1200 {
        fs::write(tree.join(format!("many/entry-{i:04}")), format!("entry {i}\n")).unwrap();
    }
    for (name, len) in [("empty", 0), ("sixty", 60), ("hundred", 100), ("block", 4096), ("dense", 3_000_000)] {
        fs::write(tree.join("small").join(name), random(&mut seed, len)).unwrap();
    }
    // Islands of data between holes: one extent each, so two index levels.
    let islands = File::create(tree.join("islands")).unwrap();
    for i in 0..1500 {
        islands.write_all_at(&random(&mut seed, 4096), i * 8192).unwrap();
    }
    // Past 64 MiB + 268 KiB: triple indirect with 1 KiB blocks.
    let far = File::create(tree.join("far")).unwrap();
    far.write_all_at(&random(&mut seed, 3000), 66 * MIB).unwrap();
    tree
}

fn read(img: &[u8], path: &str) -> Result<Option<Vec<u8>>, Ext4Error> {
    read_file(&Bytes(img), img.len() as u64, path, usize::MAX)
}

/// Every regular file under `tree` read back through the image.
fn check_tree(img: &[u8], tree: &Path, dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let inside = format!("/{}", path.strip_prefix(tree).unwrap().display());
        let kind = fs::symlink_metadata(&path).unwrap().file_type();
        if kind.is_dir() {
            check_tree(img, tree, &path);
        } else if kind.is_file() {
            let got = read(img, &inside).unwrap_or_else(|e| panic!("{inside}: {e}"));
            assert!(got == Some(fs::read(&path).unwrap()), "{inside} differs from its source");
        }
    }
}

/// What debugfs says of `path`'s inode.
fn stat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("stat {path}"))
}

fn check_image(img_path: &Path, tree: &Path) {
    let img = fs::read(img_path).unwrap();
    check_tree(&img, tree, tree);
    let release = fs::read(tree.join("usr/lib/os-release")).unwrap();
    let target = fs::read(tree.join(format!("usr/lib/{LONG_DIR}/target"))).unwrap();
    for (path, want) in [
        ("/etc/os-release", &release),
        ("/absolute", &release),
        ("/lib/os-release", &release),
        ("etc/os-release", &release),
        ("//etc/./../etc//os-release", &release),
        ("/chain-1", &release),
        ("/etc/slow", &target),
        ("/etc/slowdir/target", &target),
    ] {
        assert_eq!(read(&img, path).unwrap().as_ref(), Some(want), "{path}");
    }
    assert_eq!(read_file(&img, img.len() as u64, "/small/dense", 1000).unwrap().unwrap().len(), 1000);
    assert_eq!(os_release(&img, img.len() as u64).as_deref(), Some(PRETTY));
    if run("dumpe2fs", &["-h", img_path.to_str().unwrap()]).contains("dir_index") {
        assert!(debugfs(img_path, "htree /many").contains("Root node"), "/many is not an htree");
    }
    // With inline_data, debugfs calls a link in i_block and system.data fast.
    let slow = stat(img_path, "/etc/slow");
    assert!(!slow.contains("Fast link") || slow.contains("system.data"), "/etc/slow is a fast symlink");
    assert!(stat(img_path, "/etc/os-release").contains("Fast link"), "/etc/os-release is a slow symlink");
}

fn check_mkfs(prog: &str, args: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tree = os_tree(dir.path());
    let img = mkfs(dir.path(), prog, 48 * MIB, args, Some(&tree));
    check_image(&img, &tree);
    (dir, img, tree)
}

#[test]
fn ext4_files_match_their_sources_through_extent_indexes_and_htree() {
    let (_dir, img, _) = check_mkfs("mkfs.ext4", &["-b", "4096"]);
    assert!(debugfs(&img, "ex /islands").contains(" 0/ 2 "), "two levels of extent index");
}

#[test]
fn ext4_with_1k_blocks_files_match_their_sources() {
    let (_dir, img, _) = check_mkfs("mkfs.ext4", &["-b", "1024"]);
    assert!(debugfs(&img, "ex /islands").contains(" 0/ 2 "));
}

#[test]
fn ext4_without_metadata_csum_or_64bit_files_match_their_sources() {
    check_mkfs("mkfs.ext4", &["-b", "1024", "-O", "^metadata_csum,^64bit,uninit_bg"]);
}

#[test]
fn ext4_inline_data_files_and_directories_match_their_sources() {
    let (_dir, img, _) = check_mkfs("mkfs.ext4", &["-b", "1024", "-O", "inline_data"]);
    for path in ["/small/hundred", "/usr/lib/os-release", "/etc", "/etc/slow"] {
        assert!(stat(&img, path).contains("Flags: 0x10000000"), "{path} not inline");
    }
    for path in ["/small/hundred", "/etc/slow"] {
        assert!(stat(&img, path).contains("system.data ("), "{path} not spilling into system.data");
    }
}

#[test]
fn ext2_block_maps_with_triple_indirect_blocks_match_their_sources() {
    let (_dir, img, _) = check_mkfs("mkfs.ext2", &["-b", "1024"]);
    let far = stat(&img, "/far");
    assert!(far.contains("(TIND)") && stat(&img, "/small/dense").contains("(DIND)"), "{far}");
}

#[test]
fn ext2_revision_0_without_filetype_files_match_their_sources() {
    let (_dir, img, _) = check_mkfs("mkfs.ext2", &["-b", "1024", "-r", "0"]);
    assert!(run("dumpe2fs", &["-h", img.to_str().unwrap()]).contains("Filesystem features:      (none)"));
}

#[test]
fn ext3_files_match_their_sources() {
    check_mkfs("mkfs.ext3", &["-b", "4096"]);
}

#[test]
fn missing_paths_and_non_files_are_none() {
    let (_dir, img, _) = check_mkfs("mkfs.ext4", &["-b", "1024"]);
    let img = fs::read(img).unwrap();
    for path in [
        "/nonexistent",
        "/etc/nonexistent",
        "/nonexistent/../etc/os-release",
        "/etc/os-release/",
        "/etc/os-release/x",
        "/etc",
        "/",
        "",
        "/broken",
        "/many/entry-9999",
    ] {
        assert!(read(&img, path).unwrap().is_none(), "{path}");
    }
}

#[test]
fn symlink_loops_and_chains_over_16_links_are_errors() {
    let (_dir, img, _) = check_mkfs("mkfs.ext4", &["-b", "1024"]);
    let img = fs::read(img).unwrap();
    for path in ["/loop-a", "/self", "/self/x", "/chain-0"] {
        assert!(matches!(read(&img, path), Err(Ext4Error::SymlinkLoop(16))), "{path}");
    }
}

#[test]
fn fragmented_and_uninitialised_extents_read_as_debugfs_dumps_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "mkfs.ext4", 4 * MIB, &["-b", "1024"], None);
    let mut seed = 99;
    let (payload, junk) = (dir.path().join("payload"), dir.path().join("junk"));
    fs::write(&payload, random(&mut seed, 300_000)).unwrap();
    fs::write(&junk, random(&mut seed, 1024)).unwrap();
    let junk = junk.to_str().unwrap();
    // Fill with one-block files and free every other one; then a deleted
    // file leaves data behind for the uninitialised extent to cover.
    let mut requests: Vec<String> = (0..300).map(|i| format!("write {junk} f{i}")).collect();
    requests.extend((0..300).step_by(2).map(|i| format!("rm f{i}")));
    requests.push(format!("write {} payload", payload.to_str().unwrap()));
    requests.extend((0..200).map(|i| format!("write {junk} g{i}")));
    requests.extend((0..200).map(|i| format!("rm g{i}")));
    requests.extend(["write /dev/null fa", "fallocate fa 0 199", "sif fa size 204800"].map(String::from));
    debugfs_write(&img, &requests);
    let bytes = fs::read(&img).unwrap();
    assert_eq!(read(&bytes, "/payload").unwrap(), Some(fs::read(&payload).unwrap()));
    let extents = debugfs(&img, "ex /payload");
    assert!(extents.contains(" 0/ 1 ") && extents.lines().count() > 20, "payload not fragmented:\n{extents}");
    assert_eq!(read(&bytes, "/fa").unwrap(), Some(vec![0; 204_800]));
    let uninit = debugfs(&img, "ex /fa");
    let line = uninit.lines().find(|l| l.contains("Uninit")).expect("an uninitialised extent");
    let physical: usize = line.split_whitespace().nth(7).unwrap().parse().unwrap();
    assert!(bytes[physical * 1024..][..1024].iter().any(|&b| b != 0), "the extent covers stale data");
}

#[test]
fn corrupt_inode_checksum_is_an_error() {
    let (_dir, img, _) = check_mkfs("mkfs.ext4", &["-b", "1024"]);
    let at = inode_location(&img, "/usr/lib/os-release");
    let mut bytes = fs::read(&img).unwrap();
    bytes[at + 0x0C] ^= 1; // the modification time
    assert!(matches!(read(&bytes, "/etc/os-release"), Err(Ext4Error::InodeChecksum { what: "inode", .. })));
    assert_eq!(os_release(&bytes, bytes.len() as u64), None);
}

#[test]
fn os_release_falls_back_to_usr_lib() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("usr/lib")).unwrap();
    fs::write(tree.join("usr/lib/os-release"), "NAME=Fedora\nVERSION_ID=40\n").unwrap();
    let img = fs::read(mkfs(dir.path(), "mkfs.ext4", 8 * MIB, &[], Some(&tree))).unwrap();
    assert_eq!(os_release(&img, img.len() as u64).as_deref(), Some("Fedora 40"));
    let empty = fs::read(mkfs(dir.path(), "mkfs.ext4", 8 * MIB, &["-b", "1024"], None)).unwrap();
    assert_eq!(os_release(&empty, empty.len() as u64), None);
    assert_eq!(os_release(&vec![0u8; MIB as usize], MIB), None);
    assert!(read(&vec![0u8; MIB as usize], "/etc/os-release").unwrap().is_none());
}

/// Byte offset of `path`'s inode, from debugfs.
fn inode_location(img: &Path, path: &str) -> usize {
    let out = debugfs(img, &format!("imap {path}"));
    let (block, offset) = out.split_once("located at block ").unwrap().1.split_once(", offset ").unwrap();
    let offset = offset.trim().trim_start_matches("0x");
    let bs: usize = run("dumpe2fs", &["-h", img.to_str().unwrap()])
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    block.parse::<usize>().unwrap() * bs + usize::from_str_radix(offset, 16).unwrap()
}

/// Byte ranges worth garbling: the inodes, directory blocks and extent or
/// indirect blocks a lookup of the interesting paths goes through.
fn targets(img: &Path, bs: usize) -> Vec<(usize, usize)> {
    let paths = ["/", "/etc", "/etc/os-release", "/usr", "/usr/lib", "/usr/lib/os-release", "/many", "/islands"];
    let mut out: Vec<(usize, usize)> = paths.iter().map(|p| (inode_location(img, p), 256)).collect();
    out.extend(["/etc/slow", "/lib", "/small/dense", "/small", "/far"].iter().map(|p| (inode_location(img, p), 256)));
    for path in ["/", "/etc", "/usr/lib", "/many", "/islands", "/small/dense", "/etc/slow", "/far"] {
        let stat = stat(img, path);
        for block in stat.split(", ").chain(stat.split_whitespace()).filter_map(|item| {
            let (tag, block) = item.split_once("):")?;
            let block: usize = block.split(['-', '\n', ',']).next()?.trim().parse().ok()?;
            let metadata = ["(IND", "(DIND", "(TIND", "(ETB"].iter().any(|t| tag.contains(t));
            (metadata || ["/", "/etc", "/usr/lib", "/many"].contains(&path)).then_some(block)
        }) {
            out.push((block * bs, bs));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[test]
fn garbled_inodes_directories_and_extents_never_panic_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let tree = os_tree(dir.path());
    let variants: [(&str, &[&str], usize); 4] = [
        ("mkfs.ext2", &["-b", "1024"], 1024),
        ("mkfs.ext4", &["-b", "1024", "-O", "^metadata_csum"], 1024),
        ("mkfs.ext4", &["-b", "4096", "-O", "^metadata_csum,inline_data"], 4096),
        ("mkfs.ext4", &["-b", "1024"], 1024),
    ];
    let mut seed = 7;
    let started = std::time::Instant::now();
    for (prog, args, bs) in variants {
        let path = mkfs(dir.path(), prog, 48 * MIB, args, Some(&tree));
        let targets = targets(&path, bs);
        assert!(targets.len() > 20, "{} places to garble", targets.len());
        let pristine = fs::read(&path).unwrap();
        let mut img = pristine.clone();
        let len = img.len() as u64;
        for _ in 0..2000 {
            let mut touched = Vec::new();
            for _ in 0..1 + next(&mut seed) % 4 {
                let (start, span) = targets[(next(&mut seed) % targets.len() as u64) as usize];
                let at = start + (next(&mut seed) % span as u64) as usize;
                img[at] = match next(&mut seed) % 4 {
                    0 => 0,
                    1 => 0xFF,
                    2 => img[at] ^ (1 << (next(&mut seed) % 8)),
                    _ => next(&mut seed) as u8,
                };
                touched.push(at);
            }
            let src = Bytes(&img);
            let _ = os_release(&src, len);
            for path in ["/many/entry-1100", "/etc/slow", "/lib/os-release", "/small/dense", "/far"] {
                let _ = read_file(&src, len, path, 64 << 10);
            }
            let _ = read_file(&src, len, "/islands", 1 << 20);
            for at in touched {
                img[at] = pristine[at];
            }
        }
    }
    assert!(started.elapsed().as_secs() < 60, "garbled images took {:?}", started.elapsed());
}

/// A borrowed image as a [`ReadAt`], without copying it.
struct Bytes<'a>(&'a [u8]);

impl ReadAt for Bytes<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}
