//! Linux swap areas: recognise one and keep only its header page.
//!
//! [`probe`] looks for the `SWAPSPACE2` (version 1) or old `SWAP-SPACE`
//! (version 0) signature at the end of the first page, for page sizes of
//! 4, 8, 16 and 64 KiB. Capture keeps that page only: it holds the
//! signature, the UUID and the label, so the deployed swap area works
//! without running mkswap again, and the rest is scratch.
//!
//! What it does not do: read the bad-page list, check `last_page` against
//! the partition, or recognise a swap area holding a hibernation image
//! (its signature is replaced, so the probe says no and capture keeps
//! every nonzero block).

use crate::ranges::RangeSet;
use crate::source::ReadAt;

const PAGE_SIZES: [u32; 4] = [4096, 8192, 16384, 65536];
const SIGNATURE_LEN: u64 = 10;
/// Version 1 header fields after the 1024 boot bytes: version, last_page,
/// nr_badpages (u32 each), then the UUID and the label (16 bytes each).
const HEADER_AT: u64 = 1024;
const HEADER_LEN: usize = 44;

/// A Linux swap area.
#[derive(Clone, Debug)]
pub struct SwapInfo {
    pub page_size: u32,
    /// The header page, `[0, page_size)`: all that capture needs.
    pub used: RangeSet,
    /// Empty for a version 0 area, which has no label.
    pub label: String,
    /// All zero for a version 0 area, which has no UUID.
    pub uuid: [u8; 16],
}

/// Recognises a swap area at the start of `src`, which is `len` bytes long.
pub fn probe(src: &dyn ReadAt, len: u64) -> Option<SwapInfo> {
    PAGE_SIZES.into_iter().find_map(|page_size| probe_page(src, len, page_size))
}

fn probe_page(src: &dyn ReadAt, len: u64, page_size: u32) -> Option<SwapInfo> {
    let page = u64::from(page_size);
    if len < page {
        return None;
    }
    let mut signature = [0u8; SIGNATURE_LEN as usize];
    src.read_exact_at(&mut signature, page - SIGNATURE_LEN).ok()?;
    let (label, uuid) = match &signature {
        b"SWAPSPACE2" => read_header(src)?,
        b"SWAP-SPACE" => (String::new(), [0; 16]),
        _ => return None,
    };
    let mut used = RangeSet::new();
    used.insert(0, page);
    Some(SwapInfo { page_size, used, label, uuid })
}

/// The label and UUID of a version 1 header, whose version field is 1 in
/// the byte order of the machine that wrote it.
fn read_header(src: &dyn ReadAt) -> Option<(String, [u8; 16])> {
    let mut header = [0u8; HEADER_LEN];
    src.read_exact_at(&mut header, HEADER_AT).ok()?;
    let (version, rest) = header.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != 1 && u32::from_be_bytes(*version) != 1 {
        return None;
    }
    let (_, rest) = rest.split_first_chunk::<8>()?;
    let (uuid, rest) = rest.split_first_chunk::<16>()?;
    let (label, _) = rest.split_first_chunk::<16>()?;
    let label = label.split(|&b| b == 0).next().unwrap_or_default();
    Some((String::from_utf8_lossy(label).into_owned(), *uuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::process::Command;

    /// Runs mkswap on a fresh file of `size` bytes and returns its contents.
    fn mkswap(size: u64, args: &[&str]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swap.img");
        File::create(&path).unwrap().set_len(size).unwrap();
        let search = format!("{}:/usr/sbin:/sbin", std::env::var("PATH").unwrap_or_default());
        let out = Command::new("mkswap")
            .args(args)
            .arg(&path)
            .env("PATH", search)
            .output()
            .expect("mkswap not runnable: install util-linux");
        assert!(out.status.success(), "mkswap: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(&path).unwrap()
    }

    const UUID: &str = "0f3d4c5e-6a7b-4c8d-9e0f-1a2b3c4d5e6f";
    const UUID_BYTES: [u8; 16] =
        [0x0f, 0x3d, 0x4c, 0x5e, 0x6a, 0x7b, 0x4c, 0x8d, 0x9e, 0x0f, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f];

    #[test]
    fn mkswap_area_keeps_only_its_header_page_with_label_and_uuid() {
        let img = mkswap(4 << 20, &["-L", "shoal-swap", "-U", UUID]);
        let info = probe(&img, img.len() as u64).expect("swap signature");
        assert_eq!(info.page_size, 4096);
        assert_eq!(info.label, "shoal-swap");
        assert_eq!(info.uuid, UUID_BYTES);
        assert_eq!(info.used.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(), vec![(0, 4096)]);
    }

    #[test]
    fn larger_page_sizes_are_recognised() {
        for page_size in [16384u32, 65536] {
            let img = mkswap(8 << 20, &["-p", &page_size.to_string(), "-U", UUID]);
            let info = probe(&img, img.len() as u64).expect("swap signature");
            assert_eq!(info.page_size, page_size);
            assert_eq!(info.uuid, UUID_BYTES);
            assert_eq!(info.used.total(), u64::from(page_size));
        }
    }

    #[test]
    fn old_swap_space_signature_has_no_label() {
        let mut img = vec![0u8; 8192];
        img[4086..4096].copy_from_slice(b"SWAP-SPACE");
        let info = probe(&img, img.len() as u64).expect("swap signature");
        assert_eq!((info.page_size, info.label.as_str(), info.uuid), (4096, "", [0; 16]));
    }

    #[test]
    fn zeros_short_buffers_and_bad_versions_are_not_swap() {
        let zeros = vec![0u8; 128 << 10];
        assert!(probe(&zeros, zeros.len() as u64).is_none());
        let mut img = mkswap(1 << 20, &[]);
        assert!(probe(&img[..2048].to_vec(), 2048).is_none());
        img[1024..1028].copy_from_slice(&7u32.to_le_bytes());
        assert!(probe(&img, img.len() as u64).is_none());
    }
}
