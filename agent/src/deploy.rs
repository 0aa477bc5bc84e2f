//! The deploy pipeline: fetch chunks, verify them against the manifest,
//! decompress on every core, write their extents.
//!
//! Worker threads (one per core) fetch, verify and decompress; one writer
//! thread writes, so decompression overlaps with the writes. Memory is
//! bounded: `QUEUE_DEPTH` decompressed windows wait for the writer and each
//! worker holds one compressed and one raw window, at most `(QUEUE_DEPTH +
//! 2 * workers) * WINDOW_SIZE` bytes of buffers (32 MiB on two cores).
//!
//! Only a [`RawWindow`] can be written, and only chunk verification makes
//! one: nothing unverified reaches the target.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_proto::chunk::{self, RawWindow};
use shoal_proto::manifest::{ChunkRef, Manifest};
use shoal_proto::WINDOW_SIZE;

use crate::capture::Progress;
use crate::device::Device;
use crate::place::Target;
use crate::ranges::RangeSet;

/// Decompressed windows queued for the writer.
pub const QUEUE_DEPTH: usize = 4;

/// Where chunk bytes come from: a local store, a server over HTTP, or a
/// multicast session. The bytes are untrusted.
pub trait ChunkSource: Sync {
    fn fetch(&self, chunk: &ChunkRef) -> io::Result<Vec<u8>>;

    /// Check, before anything is written, that `fetch` will succeed (a
    /// local store also checks the chunk's hash).
    fn check(&self, _chunk: &ChunkRef) -> io::Result<()> {
        Ok(())
    }
}

/// What to do with bytes the image does not restore (free space of a known
/// filesystem).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FreePolicy {
    /// Leave whatever the target held: fastest.
    Leave,
    /// Write zeros (BLKZEROOUT on a disk, holes in a file).
    Zero,
    /// Discard (TRIM) on a disk, holes in a file.
    Discard,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// a chunk failed verification; nothing of it was written
    #[error(transparent)]
    Chunk(#[from] chunk::ChunkError),
    /// a chunk could not be fetched
    #[error("fetching chunk {hash}")]
    Fetch { hash: shoal_proto::ChunkHash, source: io::Error },
    /// a chunk is missing or damaged; nothing was written
    #[error("chunk {hash} (window {window}) is missing or damaged; nothing was written")]
    Check { hash: shoal_proto::ChunkHash, window: u64, source: io::Error },
    /// writing the target failed
    #[error("writing the target")]
    Write(#[source] io::Error),
    /// a zstd context could not be made
    #[error("zstd")]
    Zstd(#[source] io::Error),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DeployStats {
    /// Bytes of chunk data written.
    pub written_bytes: u64,
    /// Bytes zeroed because the source held zeros there.
    pub zeroed_bytes: u64,
    /// Free-space bytes handled by the `--free` policy.
    pub free_bytes: u64,
    pub chunks: u64,
    pub fetched_bytes: u64,
    #[serde(serialize_with = "crate::capture::secs")]
    pub elapsed: Duration,
}

/// Checks, on every core, that every chunk the targets need is available
/// (and, for sources that can say so cheaply, intact) before anything is
/// written.
pub fn precheck(
    manifest: &Manifest,
    targets: &[Target],
    src: &dyn ChunkSource,
    workers: usize,
) -> Result<(), DeployError> {
    let all: Vec<&ChunkRef> = targets.iter().flat_map(|t| manifest.segments[t.segment].chunks.iter()).collect();
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let Some(c) = all.get(next.fetch_add(1, Ordering::Relaxed)) else { return };
                if let Err(source) = src.check(c) {
                    next.store(all.len(), Ordering::Relaxed);
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(DeployError::Check { hash: c.hash, window: c.window, source });
                    }
                    return;
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// Writes the image's segments onto `dest` as `targets` place them, then
/// applies the free-space policy and syncs.
pub fn deploy(
    manifest: &Manifest,
    targets: &[Target],
    src: &dyn ChunkSource,
    dest: &Device,
    free: FreePolicy,
    workers: usize,
    progress: &Progress,
) -> Result<DeployStats, DeployError> {
    let start = Instant::now();
    let mut stats = DeployStats::default();
    let jobs: Vec<(&Target, &ChunkRef)> = targets
        .iter()
        .flat_map(|t| manifest.segments[t.segment].chunks.iter().map(move |c| (t, c)))
        .filter(|(t, c)| t.overlaps(c.window * WINDOW_SIZE, (c.window + 1) * WINDOW_SIZE))
        .collect();
    progress.total.store(jobs.iter().map(|(_, c)| u64::from(c.rsize)).sum(), Ordering::Relaxed);

    let (zeroed, freed) = prepare(manifest, targets, dest, free)?;
    stats.zeroed_bytes = zeroed;
    stats.free_bytes = freed;

    let workers = workers.max(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<(&Target, u64, RawWindow, u64)>(QUEUE_DEPTH);
    let (err_tx, err_rx) = mpsc::channel::<DeployError>();
    let write_result = std::thread::scope(|scope| {
        for _ in 0..workers {
            let (tx, err_tx) = (tx.clone(), err_tx.clone());
            let (jobs, next, stop) = (&jobs, &next, &stop);
            scope.spawn(move || {
                let mut z = match zstd::bulk::Decompressor::new() {
                    Ok(z) => z,
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        let _ = err_tx.send(DeployError::Zstd(e));
                        return;
                    }
                };
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(t, c)) = jobs.get(i) else { return };
                    let res =
                        src.fetch(c).map_err(|source| DeployError::Fetch { hash: c.hash, source }).and_then(|bytes| {
                            let n = bytes.len() as u64;
                            let v = chunk::verify(bytes, &c.hash, &c.raw_hash, &c.extents)?;
                            Ok((v.decompress(&mut z, Vec::new())?, n))
                        });
                    match res {
                        Ok((raw, n)) => {
                            if tx.send((t, c.window, raw, n)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            let _ = err_tx.send(e);
                            return;
                        }
                    }
                }
            });
        }
        drop(tx);
        drop(err_tx);
        // The writer: this thread.
        let mut written = (0u64, 0u64, 0u64);
        for (t, window, raw, n) in rx {
            match write_window(dest, t, window, &raw) {
                Ok(w) => written.0 += w,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(DeployError::Write(e));
                }
            }
            progress.add(raw.extents().map(|(e, _)| u64::from(e.len)).sum());
            written.1 += 1;
            written.2 += n;
        }
        Ok(written)
    });
    if let Ok(e) = err_rx.try_recv() {
        return Err(e);
    }
    let (w, n, f) = write_result?;
    stats.written_bytes = w;
    stats.chunks = n;
    stats.fetched_bytes = f;
    dest.sync().map_err(DeployError::Write)?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Before any chunk is written: zeros the ranges the source held as zeros
/// (always) and applies the free-space policy to what the image does not
/// restore. These ranges never overlap chunk extents. Returns the bytes
/// zeroed and the free bytes handled.
pub fn prepare(
    manifest: &Manifest,
    targets: &[Target],
    dest: &Device,
    free: FreePolicy,
) -> Result<(u64, u64), DeployError> {
    let (mut zeroed, mut freed) = (0u64, 0u64);
    for t in targets {
        let seg = &manifest.segments[t.segment];
        let mut covered = RangeSet::new();
        for z in &seg.zero {
            covered.insert(z.start, z.start + z.len);
            if let Some((off, len)) = t.map(z.start, z.start + z.len) {
                dest.zero_range(off, len).map_err(DeployError::Write)?;
                zeroed += len;
            }
        }
        if free == FreePolicy::Leave {
            continue;
        }
        for c in &seg.chunks {
            let base = c.window * WINDOW_SIZE;
            for e in &c.extents {
                covered.insert(base + u64::from(e.offset), base + e.end());
            }
        }
        for gap in covered.gaps(t.src_start, t.src_end) {
            if let Some((off, len)) = t.map(gap.start, gap.end) {
                match free {
                    FreePolicy::Zero => dest.zero_range(off, len),
                    _ => dest.discard_range(off, len),
                }
                .map_err(DeployError::Write)?;
                freed += len;
            }
        }
    }

    Ok((zeroed, freed))
}

/// Writes a verified window's extents where `t` places them; returns the
/// bytes written (extents outside the target are skipped).
pub fn write_window(dest: &Device, t: &Target, window: u64, raw: &RawWindow) -> io::Result<u64> {
    let base = window * WINDOW_SIZE;
    let mut written = 0;
    for (e, bytes) in raw.extents() {
        let s = base + u64::from(e.offset);
        if let Some((off, len)) = t.map(s, s + u64::from(e.len)) {
            // `off` is where max(s, src_start) landed.
            let from = (off - t.dest_start + t.src_start - s) as usize;
            dest.write_all_at(&bytes[from..from + len as usize], off)?;
            written += len;
        }
    }
    Ok(written)
}

/// After the chunks are written and synced: on a whole-disk image written
/// to a larger disk, moves the GPT to the disk's end; then asks the kernel
/// to reread the table. Returns whether the GPT was grown and a warning if
/// the kernel would not reread (the new table is on disk either way).
pub fn finish(m: &Manifest, dest: &Device, partition: Option<u32>) -> Result<(bool, Option<String>), DeployError> {
    use shoal_proto::manifest::{ImageKind, TableKind};
    let whole = m.kind == ImageKind::WholeDisk && partition.is_none();
    let mut grown = false;
    if whole && dest.size() > m.source_size && m.table.as_ref().is_some_and(|t| t.kind == TableKind::Gpt) {
        let table_err = |e: crate::table::TableError| DeployError::Write(io::Error::other(e.to_string()));
        if let Some(t) = crate::table::probe(dest, dest.size()).map_err(table_err)? {
            let writes = crate::table::grow_gpt(dest, &t, dest.size()).map_err(table_err)?;
            for (off, bytes) in &writes {
                dest.write_all_at(bytes, *off).map_err(DeployError::Write)?;
            }
            dest.sync().map_err(DeployError::Write)?;
            grown = !writes.is_empty();
        }
    }
    let warning = if whole {
        dest.reread_partitions().err().map(|e| format!("the kernel did not reread the partition table: {e}"))
    } else {
        None
    };
    Ok((grown, warning))
}
