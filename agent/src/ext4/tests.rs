use super::*;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(prog: &str, args: &[&str]) -> String {
    let search = format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default());
    let out = Command::new(prog)
        .args(args)
        .env("PATH", search)
        .output()
        .unwrap_or_else(|e| panic!("{prog} not runnable ({e}): install e2fsprogs"));
    assert!(out.status.success(), "{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes a filesystem image of `size` bytes (sparse) in `dir`.
fn mkfs(dir: &Path, prog: &str, size: u64, args: &[&str]) -> PathBuf {
    let path = dir.join("fs.img");
    File::create(&path).unwrap().set_len(size).unwrap();
    let mut all = vec!["-F", "-q", "-E", "nodiscard"];
    all.extend_from_slice(args);
    all.push(path.to_str().unwrap());
    run(prog, &all);
    path
}

fn image(prog: &str, size: u64, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    fs::read(mkfs(dir.path(), prog, size, args)).unwrap()
}

/// What dumpe2fs says: free blocks, BLOCK_UNINIT groups, UUID.
struct Dump {
    free: RangeSet,
    block_uninit: usize,
    uuid: String,
}

fn dumpe2fs(path: &Path) -> Dump {
    let out = run("dumpe2fs", &[path.to_str().unwrap()]);
    let mut dump = Dump { free: RangeSet::new(), block_uninit: 0, uuid: String::new() };
    let mut in_groups = false;
    for line in out.lines() {
        if let Some(uuid) = line.strip_prefix("Filesystem UUID:") {
            dump.uuid = uuid.trim().to_string();
        }
        if line.starts_with("Group ") {
            in_groups = true;
            dump.block_uninit += usize::from(line.contains("BLOCK_UNINIT"));
        }
        // The header has a "Free blocks:" count too; only groups list ranges.
        let Some(list) = line.trim().strip_prefix("Free blocks:").filter(|_| in_groups) else {
            continue;
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            dump.free.insert(a.parse().unwrap(), b.parse::<u64>().unwrap() + 1);
        }
    }
    dump
}

/// Probes `path` and checks that `used` is exactly the complement of
/// dumpe2fs' free blocks; returns the info and the BLOCK_UNINIT count.
fn check_against_dumpe2fs(path: &Path) -> (ExtInfo, usize) {
    let file = File::open(path).unwrap();
    let info = probe(&file, file.metadata().unwrap().len()).unwrap().expect("ext magic");
    let bs = u64::from(info.block_size);
    let first = u64::from(bs == 1024);
    let mut unused = RangeSet::new();
    for r in info.used.gaps(first * bs, info.size) {
        assert!(r.start % bs == 0 && r.end % bs == 0, "unaligned gap {r:?}");
        unused.insert(r.start / bs, r.end / bs);
    }
    let dump = dumpe2fs(path);
    assert!(info.used.iter().all(|r| r.end <= info.size), "used past the end of the filesystem");
    assert!(unused == dump.free, "free blocks differ from dumpe2fs:\n ours {unused:?}\n dump {:?}", dump.free);
    let uuid: String = info.uuid.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(uuid, dump.uuid.replace('-', ""));
    assert_eq!(info.used.clip(0, 2048).map(|r| r.len()).sum::<u64>(), 2048, "boot block and superblock kept");
    (info, dump.block_uninit)
}

fn oracle(prog: &str, size: u64, args: &[&str]) -> (ExtInfo, usize) {
    let dir = tempfile::tempdir().unwrap();
    check_against_dumpe2fs(&mkfs(dir.path(), prog, size, args))
}

const MIB: u64 = 1 << 20;

#[test]
fn default_ext4_matches_dumpe2fs_including_block_uninit_groups() {
    let (info, uninit) = oracle("mkfs.ext4", 1024 * MIB, &["-L", "shoal-root"]);
    assert_eq!((info.kind, info.block_size, info.size), (ExtKind::Ext4, 4096, 1024 * MIB));
    assert_eq!(info.label, "shoal-root");
    assert!(uninit > 0, "expected BLOCK_UNINIT groups");
}

#[test]
fn populated_ext4_matches_dumpe2fs() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut written = 0;
    for d in 0..4 {
        let sub = tree.join(format!("dir{d}/nested"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..6 {
            let len = (next(&mut seed) % 600_000) as usize;
            let data: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8).collect();
            fs::write(sub.join(format!("file{f}")), &data).unwrap();
            written += len as u64;
        }
    }
    let sparse = File::create(tree.join("sparse")).unwrap();
    sparse.set_len(32 * MIB).unwrap();
    sparse.write_all_at(b"island of data", 16 * MIB).unwrap();
    fs::write(tree.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("dir0/nested/file0", tree.join("link")).unwrap();
    let path = mkfs(dir.path(), "mkfs.ext4", 128 * MIB, &["-b", "4096", "-d", tree.to_str().unwrap()]);
    let (info, _) = check_against_dumpe2fs(&path);
    let (empty, _) = oracle("mkfs.ext4", 128 * MIB, &["-b", "4096"]);
    let data = info.used.total() - empty.used.total();
    // Files plus a little for extent and directory blocks; the 32 MiB
    // sparse file's hole is not used.
    assert!((written..written + MIB).contains(&data), "{data} bytes used for {written} written");
}

#[test]
fn ext4_with_1k_blocks_matches_dumpe2fs() {
    let (info, uninit) = oracle("mkfs.ext4", 64 * MIB, &["-b", "1024"]);
    assert_eq!(info.block_size, 1024);
    assert!(uninit > 0);
}

#[test]
fn ext2_matches_dumpe2fs() {
    let (info, _) = oracle("mkfs.ext2", 128 * MIB, &["-b", "4096"]);
    assert_eq!(info.kind, ExtKind::Ext2);
}

#[test]
fn ext3_matches_dumpe2fs() {
    let (info, _) = oracle("mkfs.ext3", 128 * MIB, &["-b", "4096"]);
    assert_eq!(info.kind, ExtKind::Ext3);
}

#[test]
fn ext4_without_flex_bg_matches_dumpe2fs() {
    let (_, uninit) = oracle("mkfs.ext4", 512 * MIB, &["-b", "4096", "-O", "^flex_bg"]);
    assert!(uninit > 0, "uninit groups holding their own bitmaps");
}

#[test]
fn ext4_meta_bg_with_a_partial_last_meta_group_matches_dumpe2fs() {
    // 1 KiB blocks and 64-byte descriptors: 16 groups per meta group, 63 groups.
    let (_, uninit) = oracle("mkfs.ext4", 500 * MIB, &["-b", "1024", "-O", "meta_bg,^resize_inode"]);
    assert!(uninit > 0);
}

#[test]
fn ext4_64bit_with_many_groups_matches_dumpe2fs() {
    let (info, uninit) = oracle("mkfs.ext4", 3072 * MIB, &["-O", "64bit"]);
    assert_eq!(info.blocks, 3072 * MIB / 4096);
    assert!(uninit > 0);
}

#[test]
#[ignore = "17 TiB sparse image: 250 MB of /dev/shm and 10 s of dumpe2fs"]
fn ext4_above_16_tib_uses_the_high_words_of_64bit_locations() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = mkfs(dir.path(), "mkfs.ext4", 17 << 40, &["-O", "64bit,^has_journal,^resize_inode"]);
    let (info, uninit) = check_against_dumpe2fs(&path);
    assert!(info.blocks > 1 << 32 && uninit > 0);
}

#[test]
fn ext4_32bit_with_metadata_csum_matches_dumpe2fs() {
    oracle("mkfs.ext4", 1024 * MIB, &["-O", "^64bit"]);
}

#[test]
fn ext4_gdt_csum_matches_dumpe2fs() {
    let (_, uninit) = oracle("mkfs.ext4", 1024 * MIB, &["-O", "^metadata_csum,uninit_bg"]);
    assert!(uninit > 0);
}

#[test]
fn ext4_with_a_stored_checksum_seed_survives_a_uuid_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfs(dir.path(), "mkfs.ext4", 256 * MIB, &["-b", "4096", "-O", "metadata_csum_seed"]);
    run("tune2fs", &["-U", "0f3d4c5e-6a7b-4c8d-9e0f-1a2b3c4d5e6f", path.to_str().unwrap()]);
    check_against_dumpe2fs(&path);
}

#[test]
fn ext4_sparse_super2_matches_dumpe2fs() {
    oracle("mkfs.ext4", 1024 * MIB, &["-O", "sparse_super2"]);
}

/// Overwrites superblock bytes and recomputes the superblock checksum.
fn patch_superblock(img: &mut [u8], at: usize, bytes: &[u8]) {
    let sb = &mut img[1024..2048];
    sb[at..at + bytes.len()].copy_from_slice(bytes);
    let sum = crc32c(!0, &sb[..CHECKSUM_AT]);
    sb[CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
}

/// A borrowed image as a sized [`ReadAt`].
struct Bytes<'a>(&'a [u8]);

impl ReadAt for Bytes<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

fn probe_vec(img: &[u8]) -> Result<Option<ExtInfo>, Ext4Error> {
    probe(&Bytes(img), img.len() as u64)
}

#[test]
fn corrupt_checksums_are_errors() {
    let pristine = image("mkfs.ext4", 32 * MIB, &["-b", "4096"]);
    assert!(probe_vec(&pristine).unwrap().is_some());
    let mut img = pristine.clone();
    img[1024 + 0x78] ^= 0x20; // a label byte
    assert!(matches!(probe_vec(&img), Err(Ext4Error::SuperblockChecksum { .. })));
    let mut img = pristine.clone();
    img[4096 + 0x0C] ^= 1; // group 0's free block count
    assert!(matches!(probe_vec(&img), Err(Ext4Error::DescriptorChecksum { group: 0, .. })));
    let mut img = pristine.clone();
    let bitmap = u32::from_le_bytes(img[4096..4100].try_into().unwrap()) as usize * 4096;
    img[bitmap + 100] ^= 0x10;
    assert!(matches!(probe_vec(&img), Err(Ext4Error::BitmapChecksum { group: 0, .. })));

    let mut img = image("mkfs.ext4", 32 * MIB, &["-b", "4096", "-O", "^metadata_csum,uninit_bg"]);
    assert!(probe_vec(&img).unwrap().is_some());
    img[4096 + 0x0C] ^= 1;
    assert!(matches!(probe_vec(&img), Err(Ext4Error::DescriptorChecksum { group: 0, .. })));
}

#[test]
fn filesystem_larger_than_its_partition_is_an_error() {
    let img = image("mkfs.ext4", 32 * MIB, &["-b", "4096"]);
    let short = &img[..img.len() - 4096];
    assert!(matches!(probe_vec(short), Err(Ext4Error::TooBig { .. })));
}

#[test]
fn unsupported_and_damaged_superblocks_are_errors() {
    let bigalloc = image("mkfs.ext4", 64 * MIB, &["-O", "bigalloc", "-C", "16384"]);
    assert!(matches!(probe_vec(&bigalloc), Err(Ext4Error::Unsupported("bigalloc"))));
    let pristine = image("mkfs.ext4", 32 * MIB, &["-b", "4096"]);
    let cases: [(usize, &[u8]); 6] = [
        (0x60, &[0xC6, 0x12, 0, 0]),       // incompat needs_recovery set
        (0x62, &[0, 0x80]),                // an unknown incompat bit
        (0x04, &[0, 0, 0, 0]),             // zero block count
        (0x18, &[0xFF, 0xFF, 0xFF, 0xFF]), // absurd log block size
        (0x20, &[0, 0, 0, 0]),             // zero blocks per group
        (0x3A, &[0, 0]),                   // not cleanly unmounted
    ];
    for (at, bytes) in cases {
        let mut img = pristine.clone();
        patch_superblock(&mut img, at, bytes);
        assert!(probe_vec(&img).is_err(), "patch at {at:#x} accepted");
    }
}

#[test]
fn non_ext_data_is_not_ext() {
    assert!(probe_vec(&vec![0u8; 1 << 20]).unwrap().is_none());
    assert!(probe_vec(&[0x53, 0xEF]).unwrap().is_none());
    let swap = vec![0xA5u8; 64 << 10];
    assert!(probe_vec(&swap).unwrap().is_none());
}

fn next(state: &mut u64) -> u64 {
    // splitmix64
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn garbled_superblocks_and_descriptors_never_panic() {
    let variants: [(&str, &[&str]); 3] = [
        ("mkfs.ext2", &["-b", "1024"]),
        ("mkfs.ext4", &["-b", "1024", "-O", "^metadata_csum"]),
        ("mkfs.ext4", &["-b", "1024"]),
    ];
    let mut seed = 42;
    for (prog, args) in variants {
        let pristine = image(prog, 16 * MIB, args);
        let mut img = pristine.clone();
        for _ in 0..5000 {
            let mut touched: Vec<usize> = (1024 + CHECKSUM_AT..2048).collect();
            for _ in 0..1 + next(&mut seed) % 6 {
                // Mostly the superblock's fields and the first descriptors.
                let at = match next(&mut seed) % 3 {
                    0 => 1024 + next(&mut seed) % 0x180,
                    1 => 2048 + next(&mut seed) % 256,
                    _ => 1024 + next(&mut seed) % 2048,
                } as usize;
                img[at] = match next(&mut seed) % 4 {
                    0 => 0,
                    1 => 0xFF,
                    _ => next(&mut seed) as u8,
                };
                touched.push(at);
            }
            if next(&mut seed) & 1 == 0 {
                patch_superblock(&mut img, 0, &[]);
            }
            let _ = probe_vec(&img);
            for at in touched {
                img[at] = pristine[at];
            }
        }
    }
}

#[test]
fn bitmap_runs_match_a_bit_by_bit_scan() {
    let mut seed = 7;
    for round in 0..200 {
        let bitmap: Vec<u8> = (0..64)
            .map(|_| match next(&mut seed) % 4 {
                0 => 0,
                1 => 0xFF,
                _ => next(&mut seed) as u8,
            })
            .collect();
        let nbits = if round % 2 == 0 { 512 } else { next(&mut seed) % 513 };
        let mut runs = RangeSet::new();
        for_each_run(&bitmap, nbits, |a, b| runs.insert(a, b));
        let naive: RangeSet =
            (0..nbits).filter(|i| bitmap[(i / 8) as usize] >> (i % 8) & 1 == 1).map(|i| (i, i + 1)).collect();
        assert_eq!(runs, naive, "round {round}");
    }
}
