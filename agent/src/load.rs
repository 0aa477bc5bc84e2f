//! Loading an image from a Shoal server: the signed manifest over HTTP,
//! the chunks from the image's multicast session (or over HTTP by hash when
//! no multicast arrives), each verified before it is written.
//!
//! The driver moves datagrams between one UDP socket and the sans-IO
//! receiver in `shoal_proto::mcast`; worker threads decompress and write
//! verified chunks while it keeps receiving. Memory is bounded by the
//! receiver's held-chunk limit plus one chunk per worker.
//!
//! Windows the target already holds (a restarted load, or a node reloaded
//! with the image it has) are found by their raw-content hashes before the
//! session is joined and are not fetched again.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_proto::chunk::{self, VerifiedChunk};
use shoal_proto::manifest::{ChunkRef, Manifest, SignedManifest};
use shoal_proto::mcast::{receiver, wire, Receiver, ReceiverConfig, ReceiverId, SessionId, Time, MAX_DATAGRAM};
use shoal_proto::{ImageId, KeyId};

use crate::capture::Progress;
use crate::deploy::{self, FreePolicy};
use crate::device::Device;
use crate::place::{place, Target};

/// What to load, from where, onto what.
#[derive(Clone, Debug)]
pub struct LoadConfig<'a> {
    /// The server's base URL, e.g. `http://10.0.0.1:4870`.
    pub server: String,
    pub image: String,
    pub dest: PathBuf,
    pub partition: Option<u32>,
    /// The key manifests must be signed with; `None` trusts the key the
    /// server reports (for use outside the initramfs, which bakes it in).
    pub key: Option<KeyId>,
    /// Check hashes, write nothing.
    pub verify_only: bool,
    pub free: FreePolicy,
    /// No multicast data for this long: fetch the rest over HTTP.
    pub fallback_after: Duration,
    /// Address of the interface to join the group on (unspecified: by route).
    pub iface: Ipv4Addr,
    pub workers: usize,
    /// Counts chunks in place (held already, or written), out of all.
    pub progress: Option<&'a Progress>,
}

/// What happened, for the operator and the server.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadReport {
    pub image: Option<ImageId>,
    pub chunks: u64,
    pub chunks_present: u64,
    pub chunks_multicast: u64,
    pub chunks_http: u64,
    pub chunks_failed_verification: u64,
    pub bytes_written: u64,
    pub bytes_received: u64,
    pub duplicate_blocks: u64,
    /// Blocks of chunks this node did not need (any more): what others
    /// asked for.
    pub unneeded_blocks: u64,
    /// Blocks of needed chunks dropped because the chunks in memory were
    /// at their bound: the writers fell behind the stream.
    pub no_room_blocks: u64,
    pub requests_sent: u64,
    pub malformed_packets: u64,
    /// Blocks and statuses from hosts other than the session's sender.
    pub foreign_packets: u64,
    pub fell_back_to_http: bool,
    #[serde(serialize_with = "crate::capture::secs")]
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// the server could not be reached or answered with an error
    #[error("{0}")]
    Http(String),
    /// the manifest is malformed or its signature does not check out
    #[error("manifest")]
    Manifest(#[from] shoal_proto::manifest::SignatureError),
    #[error("placing the image on the target")]
    Place(#[from] crate::place::PlaceError),
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
    #[error(transparent)]
    Io(#[from] io::Error),
    /// the session's parameters are unusable
    #[error("session: {0}")]
    Session(String),
}

fn http_get(url: &str, limit: u64) -> Result<Vec<u8>, LoadError> {
    let resp = ureq::get(url).call().map_err(|e| LoadError::Http(format!("GET {url}: {e}")))?;
    resp.into_body().with_config().limit(limit).read_to_vec().map_err(|e| LoadError::Http(format!("GET {url}: {e}")))
}

#[derive(serde::Deserialize)]
struct SessionInfo {
    session: u64,
    group: Ipv4Addr,
    port: u16,
    #[serde(default)]
    source: Option<Ipv4Addr>,
}

/// One chunk of the flattened manifest list, with where it lands.
struct Job<'a> {
    target: &'a Target,
    chunk: &'a ChunkRef,
}

/// Loads the image. Blocks until done.
pub fn load(cfg: &LoadConfig<'_>) -> Result<LoadReport, LoadError> {
    let start = Instant::now();
    let base = cfg.server.trim_end_matches('/');
    let key = match cfg.key {
        Some(k) => k,
        None => {
            let text = http_get(&format!("{base}/v1/key"), 1024)?;
            let text = String::from_utf8_lossy(&text);
            tracing::warn!("trusting the server's key {} (no --key given)", text.trim());
            text.trim().parse().map_err(|_| LoadError::Http(format!("{base}/v1/key: not a key")))?
        }
    };
    let bytes = http_get(&format!("{base}/v1/images/{}/manifest", cfg.image), 1 << 30)?;
    let signed = SignedManifest::from_bytes(&bytes).map_err(shoal_proto::manifest::SignatureError::from)?;
    let m = signed.verify(&[key])?.manifest;
    // Loading into /dev/null measures everything but the disk: nothing is
    // held already, and there is nothing to prepare, sync or reread.
    let null = Device::is_null(&cfg.dest);
    let image_size = || {
        crate::place::image_size(&m, cfg.partition)
            .ok_or_else(|| LoadError::Session("a multi-partition image needs a partitioned disk".into()))
    };
    let dest = if null {
        Device::null(&cfg.dest, image_size()?)?
    } else if cfg.verify_only {
        Device::open(&cfg.dest)?
    } else if !cfg.dest.exists() {
        // A file target made to measure, as `shoal image deploy` does.
        Device::create(&cfg.dest, image_size()?)?
    } else {
        Device::open_rw(&cfg.dest)?
    };
    let new_table =
        if cfg.verify_only || null { None } else { crate::blank::table_to_create(&m, &dest, cfg.partition)? };
    let targets = place(&m, &dest, cfg.partition)?;
    let mut report = LoadReport { image: Some(m.id), ..Default::default() };

    // The flattened chunk list (segment by segment, as `Manifest::chunks`
    // gives it) is what the session numbers.
    let mut jobs: Vec<Option<Job<'_>>> = Vec::with_capacity(m.chunk_count());
    for (si, seg) in m.segments.iter().enumerate() {
        for c in &seg.chunks {
            let (ws, we) = (c.window * shoal_proto::WINDOW_SIZE, (c.window + 1) * shoal_proto::WINDOW_SIZE);
            let target = targets.iter().find(|t| t.segment == si && t.overlaps(ws, we));
            jobs.push(target.map(|target| Job { target, chunk: c }));
        }
    }
    // What the target already holds is not fetched again. Windows that
    // fall entirely in a sparse file's holes are not read: a new target
    // file starts at once instead of hashing gigabytes of zeros (a chunk
    // that is all zeros is then fetched, which costs nothing but its bytes).
    let mut need = Vec::new();
    let mut buf = Vec::new();
    let data = if null { crate::ranges::RangeSet::new() } else { dest.data_ranges(0, dest.size())? };
    let has_data = |j: &Job<'_>| {
        let base = j.chunk.window * shoal_proto::WINDOW_SIZE;
        j.chunk.extents.iter().any(|e| {
            let s = base + u64::from(e.offset);
            j.target.map(s, s + u64::from(e.len)).is_some_and(|(off, len)| data.clip(off, off + len).next().is_some())
        })
    };
    for (i, j) in jobs.iter().enumerate() {
        let Some(j) = j else { continue };
        report.chunks += 1;
        if has_data(j) && crate::check::holds(&dest, j.target, j.chunk, &mut buf)? {
            report.chunks_present += 1;
        } else {
            need.push(i as u32);
        }
    }
    if let Some(p) = cfg.progress {
        p.total.store(report.chunks, Ordering::Relaxed);
        p.done.store(report.chunks_present, Ordering::Relaxed);
    }
    tracing::info!(
        chunks = report.chunks,
        present = report.chunks_present,
        "image {} ({}:{})",
        m.id,
        m.name,
        m.version
    );
    let writes_disk = !cfg.verify_only && !null;
    if let Some(writes) = &new_table {
        tracing::info!("creating the image's partition table on the blank disk");
        for (off, bytes) in writes {
            dest.write_all_at(bytes, *off)?;
        }
        dest.sync()?;
        if let Err(e) = dest.reread_partitions() {
            tracing::warn!("the kernel did not reread the new partition table: {e}");
        }
    }
    if writes_disk {
        deploy::prepare(&m, &targets, &dest, cfg.free)?;
    }
    if !need.is_empty() {
        receive(cfg, base, &m, &jobs, &need, &dest, &mut report)?;
    }
    if writes_disk {
        dest.sync()?;
        let (_, warning) = deploy::finish(&m, &dest, cfg.partition)?;
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Datagrams taken from the socket at most before the timers get a look.
const MAX_DRAIN: usize = 4096;

/// A verified chunk on its way to a writer.
struct Work {
    index: u32,
    window: u64,
    target: Target,
    chunk: VerifiedChunk,
}

fn join_session(base: &str, image: &ImageId) -> Result<SessionInfo, LoadError> {
    let body = ureq::post(&format!("{base}/v1/images/{image}/session"))
        .send_empty()
        .map_err(|e| LoadError::Http(format!("joining the session: {e}")))?
        .into_body()
        .read_to_vec()
        .map_err(|e| LoadError::Http(format!("joining the session: {e}")))?;
    let info: SessionInfo = serde_json::from_slice(&body).map_err(|e| LoadError::Session(e.to_string()))?;
    if !info.group.is_multicast() {
        return Err(LoadError::Session(format!("{} is not a multicast group", info.group)));
    }
    Ok(info)
}

fn new_receiver(
    info: &SessionInfo,
    sizes: &[u32],
    need: impl IntoIterator<Item = u32>,
    now: Time,
) -> Result<Receiver, LoadError> {
    let mut rnd = [0u8; 16];
    getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    let (a, b) = rnd.split_at(8);
    let id = u64::from_le_bytes(a.try_into().expect("invariant: split at 8 of 16"));
    let seed = u64::from_le_bytes(b.try_into().expect("invariant: split at 8 of 16"));
    // 32 MiB of chunks in assembly keeps the agent inside a small node's RAM.
    let rcfg = ReceiverConfig { max_held_bytes: 32 << 20, ..ReceiverConfig::default() };
    Receiver::new(rcfg, SessionId(info.session), ReceiverId(id), sizes.to_vec(), need, seed, now)
        .map_err(|e| LoadError::Session(e.to_string()))
}

fn receive(
    cfg: &LoadConfig<'_>,
    base: &str,
    m: &Manifest,
    jobs: &[Option<Job<'_>>],
    need: &[u32],
    dest: &Device,
    report: &mut LoadReport,
) -> Result<(), LoadError> {
    let sizes: Vec<u32> = m.chunks().map(|(_, c)| c.csize).collect();
    let clock = Instant::now();
    let now = || Time::from_duration(clock.elapsed());
    let mut info = join_session(base, &m.id)?;
    let mut pinned = sender_ip(&info, base);
    let mut sock = crate::net::multicast_socket(info.group, info.port, cfg.iface, 1)?;
    let mut incoming = crate::net::Datagrams::new(&sock)?;
    let mut rx = new_receiver(&info, &sizes, need.iter().copied(), now())?;
    let mut retired = receiver::ReceiverStats::default();

    let workers = cfg.workers.max(1);
    // Unbounded, so that handing a chunk to the writers never stalls the
    // socket loop (a stalled loop overflows the socket buffer and loses
    // blocks): the receiver's held-chunk bound already limits what is
    // queued, and the HTTP path below keeps its own bound.
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let work_rx = std::sync::Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u32, Result<u64, LoadError>)>();
    let mut remaining: BTreeSet<u32> = need.iter().copied().collect();
    let mut in_flight: BTreeSet<u32> = BTreeSet::new();
    std::thread::scope(|s| -> Result<(), LoadError> {
        for _ in 0..workers {
            let (work_rx, done_tx) = (&work_rx, done_tx.clone());
            s.spawn(move || {
                let Ok(mut z) = zstd::bulk::Decompressor::new() else { return };
                loop {
                    let w = match work_rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(w) = w else { return };
                    // --verify-only stops at the chunk hash, checked before a
                    // chunk gets here: it measures the protocol, not zstd.
                    let res = if cfg.verify_only {
                        Ok(0)
                    } else {
                        w.chunk.decompress(&mut z, Vec::new()).map_err(|e| LoadError::Deploy(e.into())).and_then(
                            |raw| deploy::write_window(dest, &w.target, w.window, &raw).map_err(LoadError::Io),
                        )
                    };
                    if done_tx.send((w.index, res)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let result = (|| -> Result<(), LoadError> {
            let mut out = Vec::with_capacity(MAX_DATAGRAM);
            let mut http = false;
            let mut rejoined = false;
            let mut heard = (0u64, Instant::now());
            let mut first_data = true;
            let send = |rx: &mut Receiver, sock: &UdpSocket, out: &mut Vec<u8>, to: SocketAddr| loop {
                out.clear();
                let Some(t) = rx.poll_transmit(now(), out) else { break };
                out.truncate(t.size);
                if let Err(e) = sock.send_to(out, to) {
                    tracing::debug!("send: {e}");
                }
            };
            while !remaining.is_empty() {
                while let Ok((index, res)) = done_rx.try_recv() {
                    report.bytes_written += res?;
                    if let Some(p) = cfg.progress {
                        p.add(1);
                    }
                    remaining.remove(&index);
                    in_flight.remove(&index);
                    if !http {
                        rx.chunk_done(now(), index);
                    }
                }
                if remaining.is_empty() {
                    break;
                }
                if http {
                    let next = remaining.iter().find(|i| !in_flight.contains(i));
                    let Some(&index) = next.filter(|_| in_flight.len() < 2 * workers) else {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    };
                    let j = jobs
                        .get(index as usize)
                        .and_then(Option::as_ref)
                        .ok_or_else(|| LoadError::Session("chunk without a target".into()))?;
                    let limit = chunk::MAX_CHUNK_BYTES as u64;
                    let bytes = http_get(&format!("{base}/v1/chunks/{}", j.chunk.hash), limit)?;
                    report.bytes_received += bytes.len() as u64;
                    let v = chunk::verify(bytes, &j.chunk.hash, &j.chunk.raw_hash, &j.chunk.extents)
                        .map_err(|e| LoadError::Deploy(e.into()))?;
                    report.chunks_http += 1;
                    in_flight.insert(index);
                    let w = Work { index, window: j.chunk.window, target: j.target.clone(), chunk: v };
                    work_tx.send(w).map_err(|_| LoadError::Session("writers stopped".into()))?;
                    continue;
                }
                let to = SocketAddr::V4(SocketAddrV4::new(info.group, info.port));
                send(&mut rx, &sock, &mut out, to);
                while let Some(ev) = rx.poll() {
                    match ev {
                        receiver::Event::Chunk { index, bytes } => {
                            let Some(j) = jobs.get(index as usize).and_then(Option::as_ref) else {
                                rx.chunk_failed(now(), index);
                                continue;
                            };
                            match chunk::verify(bytes, &j.chunk.hash, &j.chunk.raw_hash, &j.chunk.extents) {
                                Ok(v) => {
                                    report.chunks_multicast += 1;
                                    in_flight.insert(index);
                                    let w = Work { index, window: j.chunk.window, target: j.target.clone(), chunk: v };
                                    work_tx.send(w).map_err(|_| LoadError::Session("writers stopped".into()))?;
                                }
                                Err(e) => {
                                    report.chunks_failed_verification += 1;
                                    tracing::warn!("chunk {index} from multicast failed verification: {e}");
                                    rx.chunk_failed(now(), index);
                                }
                            }
                        }
                        receiver::Event::SenderSilent { .. } => tracing::warn!("the session went silent"),
                        receiver::Event::SenderHeard => tracing::info!("the session is back"),
                        receiver::Event::Done => {}
                    }
                }
                // Progress is bytes arriving; none for a while means the
                // session is gone (server restarted) or multicast is blocked.
                let got = rx.stats().bytes_received;
                if got > 0 && first_data {
                    // A boot-time milestone: the node's console shows it.
                    first_data = false;
                    tracing::info!("first multicast data from the session");
                }
                if got != heard.0 {
                    heard = (got, Instant::now());
                } else if heard.1.elapsed() > cfg.fallback_after {
                    if !rejoined {
                        // A restarted server runs a new session: join it.
                        rejoined = true;
                        heard.1 = Instant::now();
                        let fresh = join_session(base, &m.id)?;
                        if fresh.session != info.session {
                            tracing::warn!("the session changed (server restarted?): rejoining");
                            accumulate(&mut retired, rx.stats());
                            info = fresh;
                            pinned = sender_ip(&info, base);
                            sock = crate::net::multicast_socket(info.group, info.port, cfg.iface, 1)?;
                            incoming = crate::net::Datagrams::new(&sock)?;
                            let left: Vec<u32> = remaining.iter().copied().filter(|i| !in_flight.contains(i)).collect();
                            rx = new_receiver(&info, &sizes, left, now())?;
                            continue;
                        }
                    } else {
                        tracing::warn!("no multicast data for {:?}: fetching the rest over HTTP", cfg.fallback_after);
                        report.fell_back_to_http = true;
                        http = true;
                        continue;
                    }
                }
                // Take every datagram already queued before looking at the
                // timers: after a stall (descheduled, a slow write) a timer
                // run first would ask again for blocks sitting in the buffer.
                let wait = rx.poll_timeout().map_or(Duration::from_millis(50), |t| t.saturating_since(now()));
                if crate::net::wait_readable(&sock, wait.min(Duration::from_millis(50)))? {
                    incoming.drain(&sock, MAX_DRAIN, |from, bytes| {
                        // Blocks and statuses only come from the sender: anyone
                        // else on the segment is counted and ignored.
                        if pinned.is_some_and(|ip| from.ip() != ip) && wire::from_sender(bytes) {
                            report.foreign_packets += 1;
                            if report.foreign_packets.is_power_of_two() {
                                tracing::warn!(%from, count = report.foreign_packets, "blocks from a host that is not the sender");
                            }
                        } else {
                            rx.handle(now(), from, bytes);
                        }
                    })?;
                }
                if rx.poll_timeout().is_some_and(|t| t <= now()) {
                    rx.handle_timeout(now());
                }
            }
            if !http {
                // The final report and the leave, so the sender stops serving us.
                let to = SocketAddr::V4(SocketAddrV4::new(info.group, info.port));
                send(&mut rx, &sock, &mut out, to);
            }
            Ok(())
        })();
        drop(work_tx);
        result
    })?;
    accumulate(&mut retired, rx.stats());
    report.duplicate_blocks = retired.duplicate_blocks;
    report.unneeded_blocks = retired.unneeded_blocks;
    report.no_room_blocks = retired.no_room_blocks;
    report.requests_sent = retired.requests_sent;
    report.malformed_packets = retired.malformed;
    report.bytes_received += retired.bytes_received;
    Ok(())
}

/// The address the session's blocks must come from: the one the server
/// names, or else the server's own address in its URL.
fn sender_ip(info: &SessionInfo, base: &str) -> Option<std::net::IpAddr> {
    if let Some(ip) = info.source {
        return Some(ip.into());
    }
    let host = base.split("://").nth(1)?.split(['/', ':']).next()?;
    host.parse::<Ipv4Addr>().ok().map(Into::into)
}

fn accumulate(total: &mut receiver::ReceiverStats, s: &receiver::ReceiverStats) {
    total.duplicate_blocks += s.duplicate_blocks;
    total.unneeded_blocks += s.unneeded_blocks;
    total.no_room_blocks += s.no_room_blocks;
    total.requests_sent += s.requests_sent;
    total.malformed += s.malformed;
    total.bytes_received += s.bytes_received;
}
