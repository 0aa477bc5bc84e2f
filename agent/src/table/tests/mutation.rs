//! Seeded random mutations of valid tables: decoding never panics, and
//! whatever decodes stays inside the disk.

use super::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Checks what a decode of a mutated disk of `disk_size` bytes promises.
fn assert_inside(table: &Table, disk_size: u64) {
    for p in &table.partitions {
        assert!(p.start.checked_add(p.size).is_some_and(|end| end <= disk_size), "{p:?} past {disk_size}");
        assert!(p.size > 0 && p.start > 0, "{p:?}");
    }
    for r in table.metadata.iter() {
        assert!(r.end <= disk_size, "metadata {r:?} past {disk_size}");
    }
    assert_eq!(table.gpt.is_some(), table.kind == TableKind::Gpt);
}

/// Mutates bytes of `base` inside its table metadata `rounds` times and
/// decodes each result. `fix` recomputes the GPT CRCs after the mutation,
/// so that the checks behind the CRCs get exercised too.
fn mutate(base: &[u8], rounds: u64, seed: u64, fix: Option<usize>) -> (u64, u64) {
    let mut img = base.to_vec();
    let table = probe(&img, img.len() as u64).unwrap().expect("the base image has a table");
    let ranges: Vec<(u64, u64)> = table.metadata.iter().map(|r| (r.start, r.end)).collect();
    let (mut decoded, mut rejected) = (0, 0);
    for round in 0..rounds {
        let mut rng = Rng::new(seed ^ round);
        for _ in 0..=rng.below(8) {
            let (start, end) = ranges[rng.below(ranges.len() as u64) as usize];
            let at = (start + rng.below(end - start)) as usize;
            img[at] = match rng.below(3) {
                0 => img[at] ^ (1 << rng.below(8)),
                1 => rng.next() as u8,
                _ => [0x00, 0xFF, 0x80, 0x05, 0xEE, 0x01][rng.below(6) as usize],
            };
        }
        if let Some(ss) = fix {
            if rng.below(2) == 0 {
                fix_gpt_crcs(&mut img, ss);
            }
        }
        let disk_size = match rng.below(8) {
            0 => rng.below(img.len() as u64 * 2),
            1 => u64::MAX - rng.below(1 << 20),
            _ => img.len() as u64,
        };
        match probe(&img, disk_size) {
            Ok(Some(t)) => {
                decoded += 1;
                assert_inside(&t, disk_size);
                let _ = grow_gpt(&img, &t, disk_size.saturating_add(rng.below(1 << 30)));
            }
            Ok(None) | Err(_) => rejected += 1,
        }
        for &(start, end) in &ranges {
            img[start as usize..end as usize].copy_from_slice(&base[start as usize..end as usize]);
        }
    }
    (decoded, rejected)
}

#[test]
fn mutated_mbr_with_logicals_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let img = disk(dir.path(), "mbr.img", 16 * MIB);
    sfdisk(
        &img,
        "label: dos\nstart=63, size=1000, type=83\nstart=2048, type=5\n\
         start=2049, size=1000, type=83\nstart=4096, size=1000, type=82\nstart=8192, size=1000, type=7\n",
    );
    let (decoded, rejected) = mutate(&read_file(&img), 20_000, 0x4D42_5200, None);
    assert!(decoded > 100 && rejected > 100, "decoded {decoded}, rejected {rejected}");
}

#[test]
fn mutated_gpt_never_panics() {
    for ss in [512u32, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let base = small_gpt(dir.path(), 8 * MIB, ss);
        let (decoded, rejected) = mutate(&base, 10_000, 0x4750_5400 + u64::from(ss), Some(ss as usize));
        assert!(decoded > 100 && rejected > 100, "{ss}: decoded {decoded}, rejected {rejected}");
    }
}

#[test]
fn hand_made_hostile_sectors_never_panic() {
    // Every field at its extremes in a protective MBR, a GPT header and one
    // entry, and in an MBR with an extended partition.
    let extremes = [0u64, 1, 2, 33, 34, 127, 128, 0xFFFF_FFFF, u64::MAX / 512, u64::MAX - 1, u64::MAX];
    let mut rng = Rng::new(7);
    for round in 0..4000u64 {
        let mut img = vec![0u8; 64 * 1024];
        img[446 + 4] = if round % 2 == 0 { 0xEE } else { 0x05 };
        img[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        img[446 + 12..446 + 16].copy_from_slice(&(rng.next() as u32 % 200).to_le_bytes());
        img[510..512].copy_from_slice(&[0x55, 0xAA]);
        img[512..520].copy_from_slice(b"EFI PART");
        img[520..524].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        for field in [12usize, 24, 32, 40, 48, 72, 80, 84] {
            let value = extremes[rng.below(extremes.len() as u64) as usize];
            let width = if matches!(field, 12 | 80 | 84) { 4 } else { 8 };
            img[512 + field..512 + field + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        for field in [1024 + 32, 1024 + 40] {
            let value = extremes[rng.below(extremes.len() as u64) as usize];
            img[field..field + 8].copy_from_slice(&value.to_le_bytes());
        }
        img[1024] = 1; // a used entry
                       // Valid CRCs over whatever array the header names, when it fits.
        let count = u32::from_le_bytes(img[592..596].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(img[596..600].try_into().unwrap()) as usize;
        if count.checked_mul(size).is_some_and(|len| 1024 + len <= img.len()) {
            let crc = crc32fast::hash(&img[1024..1024 + count * size]);
            img[600..604].copy_from_slice(&crc.to_le_bytes());
        }
        let header_size = (u32::from_le_bytes(img[524..528].try_into().unwrap()) as usize).min(512);
        let crc = crc32fast::hash(&img[512..512 + header_size]);
        img[528..532].copy_from_slice(&crc.to_le_bytes());
        for disk_size in [img.len() as u64, u64::MAX, rng.next()] {
            if let Ok(Some(t)) = probe(&img, disk_size) {
                assert_inside(&t, disk_size);
            }
        }
    }
}
