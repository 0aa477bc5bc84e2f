//! Comparing a target with an image: does the disk hold what the image
//! restores? Used by `shoal image verify --target` and, on nodes, to skip
//! windows a disk already holds.

use std::io;

use shoal_proto::chunk;
use shoal_proto::manifest::{ChunkRef, Manifest};
use shoal_proto::WINDOW_SIZE;

use crate::capture::Progress;
use crate::deploy::ChunkSource;
use crate::place::Target;
use crate::ranges::RangeSet;
use crate::source::ReadAt;

/// A window or range of the target that differs from the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mismatch {
    /// Byte offset on the target.
    pub offset: u64,
    pub len: u64,
    pub what: &'static str,
}

/// Whether the target already holds chunk `c` (mapped by `t`): reads its
/// extents and compares the raw hash. Only whole chunks are checked; a
/// chunk the target only partly covers reports false.
pub fn holds(dest: &dyn ReadAt, t: &Target, c: &ChunkRef, buf: &mut Vec<u8>) -> io::Result<bool> {
    let base = c.window * WINDOW_SIZE;
    buf.clear();
    buf.resize(c.rsize as usize, 0);
    let mut at = 0usize;
    for e in &c.extents {
        let s = base + u64::from(e.offset);
        let Some((off, len)) = t.map(s, s + u64::from(e.len)) else { return Ok(false) };
        if len != u64::from(e.len) {
            return Ok(false);
        }
        dest.read_exact_at(&mut buf[at..at + e.len as usize], off)?;
        at += e.len as usize;
    }
    Ok(chunk::raw_hash(&c.extents, buf) == c.raw_hash)
}

/// Checks every chunk and every must-zero range of the image against the
/// target. Returns what differs (empty when the target matches).
///
/// `ignore` holds target byte ranges that deploy rewrites on purpose (the
/// protective MBR and primary GPT header of a disk whose GPT was grown): a
/// window touching them is compared byte by byte against its chunk from
/// `chunks`, skipping those bytes.
pub fn compare(
    m: &Manifest,
    targets: &[Target],
    dest: &dyn ReadAt,
    ignore: &RangeSet,
    chunks: &dyn ChunkSource,
    progress: &Progress,
) -> io::Result<Vec<Mismatch>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let total: u64 = targets.iter().map(|t| m.segments[t.segment].raw_bytes()).sum();
    progress.total.store(total, std::sync::atomic::Ordering::Relaxed);
    for t in targets {
        let seg = &m.segments[t.segment];
        for c in &seg.chunks {
            let (ws, we) = (c.window * WINDOW_SIZE, (c.window + 1) * WINDOW_SIZE);
            if !t.overlaps(ws, we) {
                continue;
            }
            if t.src_start <= ws && we.min(seg.size) <= t.src_end {
                let touched = ignore.clip(t.dest_offset(ws), t.dest_offset(we.min(seg.size))).next().is_some();
                let same =
                    if touched { same_except(dest, t, c, ignore, chunks)? } else { holds(dest, t, c, &mut buf)? };
                if !same {
                    out.push(Mismatch { offset: t.dest_offset(ws), len: WINDOW_SIZE, what: "window content" });
                }
            }
            progress.add(u64::from(c.rsize));
        }
        let zeros = vec![0u8; 1 << 20];
        for z in &seg.zero {
            let Some((off, len)) = t.map(z.start, z.start + z.len) else { continue };
            let mut at = 0;
            while at < len {
                let n = (len - at).min(zeros.len() as u64) as usize;
                buf.resize(n, 0);
                dest.read_exact_at(&mut buf[..n], off + at)?;
                if buf[..n] != zeros[..n] {
                    out.push(Mismatch { offset: off, len, what: "range that must be zero" });
                    break;
                }
                at += n as u64;
            }
        }
    }
    Ok(out)
}

/// Compares chunk `c` with the target byte by byte, skipping `ignore`.
fn same_except(
    dest: &dyn ReadAt,
    t: &Target,
    c: &ChunkRef,
    ignore: &RangeSet,
    chunks: &dyn ChunkSource,
) -> io::Result<bool> {
    let bytes = chunks.fetch(c)?;
    let bad = |e: chunk::ChunkError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let v = chunk::verify(bytes, &c.hash, &c.raw_hash, &c.extents).map_err(bad)?;
    let mut z = zstd::bulk::Decompressor::new()?;
    let raw = v.decompress(&mut z, Vec::new()).map_err(bad)?;
    let base = c.window * WINDOW_SIZE;
    for (e, want) in raw.extents() {
        let s = base + u64::from(e.offset);
        let Some((off, len)) = t.map(s, s + u64::from(e.len)) else { return Ok(false) };
        if len != u64::from(e.len) {
            return Ok(false);
        }
        let mut have = vec![0u8; want.len()];
        dest.read_exact_at(&mut have, off)?;
        for r in ignore.clip(off, off + len) {
            have[(r.start - off) as usize..(r.end - off) as usize].fill(0);
        }
        let mut want = want.to_vec();
        for r in ignore.clip(off, off + len) {
            want[(r.start - off) as usize..(r.end - off) as usize].fill(0);
        }
        if have != want {
            return Ok(false);
        }
    }
    Ok(true)
}
