//! The capture pipeline: read planned windows, compress and hash them on
//! every core, hand chunks to a sink.
//!
//! One reader thread walks the windows in order, reading the planned
//! ranges (coalescing nearby ones into large reads) and splitting
//! zero-detect ranges into data and zero blocks. Worker threads, one per
//! core, compress and hash. Memory is bounded: at most `QUEUE_DEPTH`
//! windows wait between the reader and the workers and each worker holds
//! one, so the pipeline holds at most `(QUEUE_DEPTH + workers) * 2 *
//! WINDOW_SIZE` bytes of buffers (48 MiB on two cores).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::chunk::{ChunkEncoder, EncodedChunk, Extent};
use shoal_proto::manifest::{ByteRange, ChunkRef, Segment};
use shoal_proto::WINDOW_SIZE;

use crate::plan::{Plan, SegmentPlan};
use crate::ranges::RangeSet;
use crate::source::ReadAt;

/// Windows queued between the reader and the workers.
pub const QUEUE_DEPTH: usize = 4;
/// Zero-run detection granularity, relative to the segment start.
pub const ZERO_BLOCK: u64 = 4096;
/// Ranges closer than this are read with one call, gap included.
const COALESCE_GAP: u64 = 256 << 10;

/// Where chunks go. Implementations must be safe to call from every worker.
pub trait ChunkSink: Sync {
    /// Stores a chunk; returns whether it was new (not already stored).
    fn put(&self, chunk: &EncodedChunk) -> io::Result<bool>;
}

/// Counters a progress display polls while a capture or deploy runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub total: AtomicU64,
    pub done: AtomicU64,
}

impl Progress {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// the source could not be read; the offset is the first bad byte found
    #[error("read error at byte {offset} (sector {sector}) of the source")]
    Read { offset: u64, sector: u64, source: io::Error },
    /// the chunk store refused a chunk
    #[error("storing a chunk")]
    Store(#[source] io::Error),
    /// compression failed
    #[error(transparent)]
    Chunk(#[from] shoal_proto::chunk::ChunkError),
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CaptureStats {
    /// Bytes read from the source.
    pub read_bytes: u64,
    /// Bytes the chunks restore.
    pub raw_bytes: u64,
    /// Encoded bytes of all chunks (before deduplication).
    pub chunk_bytes: u64,
    /// Encoded bytes of chunks that were new to the store.
    pub new_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

/// Serialises a duration as seconds.
pub(crate) fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

struct Job {
    seg: usize,
    window: u64,
    extents: Vec<Extent>,
    data: Vec<u8>,
}

struct Done {
    seg: usize,
    chunk: ChunkRef,
    new: bool,
}

/// Runs a capture. Returns the manifest segments, in plan order.
pub fn capture(
    src: &dyn ReadAt,
    plan: &Plan,
    sink: &dyn ChunkSink,
    level: i32,
    workers: usize,
    progress: &Progress,
) -> Result<(Vec<Segment>, CaptureStats), CaptureError> {
    let start = Instant::now();
    let workers = workers.max(1);
    progress.total.store(plan.segments.iter().map(SegmentPlan::read_bytes).sum(), Ordering::Relaxed);
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(QUEUE_DEPTH);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Result<Done, CaptureError>>();
    let mut zero_sets: Vec<RangeSet> = plan.segments.iter().map(|s| s.zero.clone()).collect();

    let read_result = std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let (job_rx, stop) = (&job_rx, &stop);
            scope.spawn(move || {
                let mut enc = match ChunkEncoder::new(level) {
                    Ok(e) => e,
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        let _ = done_tx.send(Err(e.into()));
                        return;
                    }
                };
                loop {
                    // The lock is held only to take the next job.
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let res = encode(&mut enc, sink, job);
                    if res.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if done_tx.send(res).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let res = read_windows(src, plan, &job_tx, &mut zero_sets, &stop, progress);
        drop(job_tx);
        res
    });

    let mut stats = CaptureStats { read_bytes: read_result?, ..Default::default() };
    let mut per_seg: Vec<Vec<ChunkRef>> = vec![Vec::new(); plan.segments.len()];
    for done in done_rx {
        let done = done?;
        stats.chunks += 1;
        stats.raw_bytes += u64::from(done.chunk.rsize);
        stats.chunk_bytes += u64::from(done.chunk.csize);
        if done.new {
            stats.new_chunks += 1;
            stats.new_bytes += u64::from(done.chunk.csize);
        }
        per_seg[done.seg].push(done.chunk);
    }
    let segments = plan
        .segments
        .iter()
        .zip(per_seg)
        .zip(zero_sets)
        .map(|((sp, mut chunks), zero)| {
            chunks.sort_by_key(|c| c.window);
            Segment {
                partition: sp.partition,
                size: sp.size,
                fs: sp.fs,
                chunks,
                zero: zero.iter().map(|r| ByteRange { start: r.start, len: r.len() }).collect(),
            }
        })
        .collect();
    stats.elapsed = start.elapsed();
    Ok((segments, stats))
}

fn encode(enc: &mut ChunkEncoder, sink: &dyn ChunkSink, job: Job) -> Result<Done, CaptureError> {
    let c = enc.encode(&job.extents, &job.data)?;
    let new = sink.put(&c).map_err(CaptureError::Store)?;
    let csize = u32::try_from(c.bytes.len()).expect("invariant: a chunk is at most MAX_CHUNK_BYTES");
    Ok(Done {
        seg: job.seg,
        new,
        chunk: ChunkRef {
            window: job.window,
            hash: c.hash,
            raw_hash: c.raw_hash,
            csize,
            rsize: c.raw_len,
            extents: c.extents,
        },
    })
}

/// Reads every window that has planned bytes and queues it. Returns the
/// bytes read.
fn read_windows(
    src: &dyn ReadAt,
    plan: &Plan,
    tx: &mpsc::SyncSender<Job>,
    zero_sets: &mut [RangeSet],
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<u64, CaptureError> {
    let mut read = 0u64;
    let mut buf = vec![0u8; WINDOW_SIZE as usize];
    for (si, seg) in plan.segments.iter().enumerate() {
        let mut needed = seg.data.clone();
        needed.insert_shifted(&seg.detect, 0);
        let windows: Vec<u64> = {
            let mut w: Vec<u64> = Vec::new();
            for r in needed.iter() {
                let (a, b) = (r.start / WINDOW_SIZE, (r.end - 1) / WINDOW_SIZE);
                let from = w.last().map_or(a, |&l| a.max(l + 1));
                w.extend(from..=b);
            }
            w
        };
        for window in windows {
            if stop.load(Ordering::Relaxed) {
                return Ok(read);
            }
            let ws = window * WINDOW_SIZE;
            let we = (ws + WINDOW_SIZE).min(seg.size);
            // Read the needed bytes, coalescing close ranges.
            let mut span: Option<(u64, u64)> = None;
            let mut spans = Vec::new();
            for r in needed.clip(ws, we) {
                span = match span {
                    Some((s, e)) if r.start - e < COALESCE_GAP => Some((s, r.end)),
                    Some(prev) => {
                        spans.push(prev);
                        Some((r.start, r.end))
                    }
                    None => Some((r.start, r.end)),
                };
            }
            spans.extend(span);
            for (s, e) in spans {
                let dst = &mut buf[(s - ws) as usize..(e - ws) as usize];
                read_at(src, dst, seg.offset + s)?;
            }
            // Assemble extents: data as is, detect minus its zero blocks.
            let mut keep = RangeSet::new();
            for r in seg.data.clip(ws, we) {
                keep.insert(r.start - ws, r.end - ws);
            }
            let mut bytes = 0;
            for r in seg.detect.clip(ws, we) {
                bytes += r.len();
                let mut at = r.start;
                while at < r.end {
                    let next = ((at / ZERO_BLOCK + 1) * ZERO_BLOCK).min(r.end);
                    let block = &buf[(at - ws) as usize..(next - ws) as usize];
                    if block.iter().all(|&b| b == 0) {
                        zero_sets[si].insert(at, next);
                    } else {
                        keep.insert(at - ws, next - ws);
                    }
                    at = next;
                }
            }
            bytes += seg.data.clip(ws, we).map(|r| r.len()).sum::<u64>();
            read += bytes;
            progress.add(bytes);
            if keep.is_empty() {
                continue;
            }
            let mut extents = Vec::with_capacity(keep.len());
            let mut data = Vec::with_capacity(keep.total() as usize);
            for r in keep.iter() {
                // Offsets within a window fit u32: WINDOW_SIZE is 4 MiB.
                extents.push(Extent { offset: r.start as u32, len: r.len() as u32 });
                data.extend_from_slice(&buf[r.start as usize..r.end as usize]);
            }
            if tx.send(Job { seg: si, window, extents, data }).is_err() {
                // Workers stopped on an error; it is reported from their side.
                return Ok(read);
            }
        }
    }
    Ok(read)
}

/// Reads `buf` at `offset`; on failure, narrows the failure to its first
/// bad sector so the error names it.
fn read_at(src: &dyn ReadAt, buf: &mut [u8], offset: u64) -> Result<(), CaptureError> {
    match src.read_exact_at(buf, offset) {
        Ok(()) => Ok(()),
        Err(first) => {
            const SECTOR: usize = 512;
            for (i, sector) in buf.chunks_mut(SECTOR).enumerate() {
                let at = offset + (i * SECTOR) as u64;
                if let Err(e) = src.read_exact_at(sector, at) {
                    return Err(CaptureError::Read { offset: at, sector: at / SECTOR as u64, source: e });
                }
            }
            // The whole read failed but each sector read: report the first error.
            Err(CaptureError::Read { offset, sector: offset / SECTOR as u64, source: first })
        }
    }
}
