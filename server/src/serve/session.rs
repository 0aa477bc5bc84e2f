//! Multicast sessions: one per image being loaded, each on its own group
//! and port, each driven by a thread that moves datagrams between its
//! socket and the sans-IO sender in `shoal_proto::mcast`.
//!
//! A session starts when the first node asks for an image and ends when
//! the sender reports itself idle (no requests for the idle time). Chunk
//! bytes are read from the store as blocks are sent, with the most recent
//! chunks cached.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use shoal_proto::manifest::Manifest;
use shoal_proto::mcast::{sender, Sender, SenderConfig, SessionId, Time, MAX_DATAGRAM};
use shoal_proto::{ChunkHash, ImageId};

use crate::metrics::{Counter, Registry};
use crate::store::Store;
use shoal_agent::net::{multicast_socket, wait_readable, Batcher, Datagrams};

/// Blocks sent this recently are in flight: a request for them does not
/// queue them again. Through real sockets, a receiver often asks for a
/// chunk whose blocks are still in its socket buffer or the sender's; with
/// the protocol's 2 ms default one receiver loading the 4 GiB benchmark
/// disk made the sender send 2.7 times the image (12.2 s), with 100 ms
/// exactly once (4.1 s). A lost block's repair waits at most this long.
const RESEND_GUARD: Duration = Duration::from_millis(100);

/// How sessions are placed and paced.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Groups are `base`, `base + 1`, …, one per concurrent image.
    pub group_base: Ipv4Addr,
    /// Ports likewise: `port`, `port + 1`, …
    pub port: u16,
    /// The address of the interface multicast goes out of.
    pub iface: Ipv4Addr,
    pub ttl: u32,
    /// Rate ceiling in bytes per second.
    pub max_rate: u64,
    pub idle: Duration,
}

/// Where a session is, as told to nodes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    pub session: u64,
    pub group: Ipv4Addr,
    pub port: u16,
    pub image: ImageId,
    /// The address blocks come from, when the server was told its
    /// multicast interface: receivers drop blocks from anyone else.
    pub source: Option<Ipv4Addr>,
}

struct Running {
    info: SessionInfo,
    slot: u32,
    live: Arc<Live>,
}

/// A running session's gauges, stored by its thread each turn.
#[derive(Default)]
struct Live {
    receivers: AtomicU64,
    /// Bytes per second.
    rate: AtomicU64,
}

/// The sessions' counters in `/metrics` (see [`Sessions::register_metrics`]).
#[derive(Clone)]
struct Counters {
    started: Counter,
    joined: Counter,
    lost: Counter,
    bytes: Counter,
    resent: Counter,
}

/// The sessions this server runs.
pub struct Sessions {
    store: Arc<Store>,
    config: SessionConfig,
    running: Mutex<HashMap<ImageId, Running>>,
    counters: OnceLock<Counters>,
}

impl Sessions {
    pub fn new(store: Arc<Store>, config: SessionConfig) -> Arc<Sessions> {
        Arc::new(Sessions { store, config, running: Mutex::new(HashMap::new()), counters: OnceLock::new() })
    }

    /// Counts sessions, receivers, bytes and resent blocks (the loss
    /// signal) in `r`, with gauges of each running session's receivers and
    /// send rate, labelled by image.
    pub fn register_metrics(self: &Arc<Self>, r: &Registry) {
        let _ = self.counters.set(Counters {
            started: r.counter("shoal_sessions_started_total", "Multicast sessions started"),
            joined: r.counter("shoal_session_receivers_joined_total", "Receivers that joined a session"),
            lost: r.counter("shoal_session_receivers_lost_total", "Receivers that went quiet and were forgotten"),
            bytes: r.counter("shoal_session_bytes_sent_total", "Bytes sent by multicast sessions"),
            resent: r.counter("shoal_session_resent_blocks_total", "Blocks sent again because receivers lost them"),
        });
        let gauge = |name: &str, help: &str, pick: fn(&Live) -> u64| {
            let me = Arc::downgrade(self);
            r.gauge(name, help, move || {
                let Some(me) = me.upgrade() else { return Vec::new() };
                let running = me.running.lock().unwrap_or_else(|p| p.into_inner());
                running.values().map(|s| (vec![("image", s.info.image.to_hex())], pick(&s.live) as f64)).collect()
            });
        };
        gauge("shoal_session_receivers", "Receivers of each running session", |l| l.receivers.load(Ordering::Relaxed));
        gauge("shoal_session_send_rate_bytes", "Each running session's send rate, bytes per second", |l| {
            l.rate.load(Ordering::Relaxed)
        });
        let me = Arc::downgrade(self);
        r.gauge("shoal_sessions", "Multicast sessions running", move || {
            vec![(Vec::new(), me.upgrade().map_or(0, |m| m.count()) as f64)]
        });
    }

    /// The session serving `m`, started if there is none.
    pub fn join(self: &Arc<Self>, m: &Manifest) -> io::Result<SessionInfo> {
        let mut running = self.running.lock().map_err(|_| io::Error::other("session table poisoned"))?;
        if let Some(r) = running.get(&m.id) {
            return Ok(r.info.clone());
        }
        let used: Vec<u32> = running.values().map(|r| r.slot).collect();
        let slot = (0..).find(|s| !used.contains(s)).expect("invariant: fewer sessions than u32::MAX");
        let group = Ipv4Addr::from(u32::from(self.config.group_base).wrapping_add(slot));
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| io::Error::other(e.to_string()))?;
        // Distinct groups and ports: hosts filter on both, and switches
        // that snoop IGMP separate groups.
        let port = u16::try_from(u32::from(self.config.port) + slot)
            .map_err(|_| io::Error::other("no multicast port left for another session"))?;
        let source = (!self.config.iface.is_unspecified()).then_some(self.config.iface);
        let info = SessionInfo { session: u64::from_le_bytes(id), group, port, image: m.id, source };
        let sizes: Vec<u32> = m.chunks().map(|(_, c)| c.csize).collect();
        let hashes: Vec<ChunkHash> = m.chunks().map(|(_, c)| c.hash).collect();
        let sock = multicast_socket(group, info.port, self.config.iface, self.config.ttl)?;
        sock.set_nonblocking(true)?;
        let mut sc = SenderConfig::new(self.config.max_rate);
        sc.idle_timeout = self.config.idle;
        sc.resend_guard = RESEND_GUARD;
        let start = Instant::now();
        let sender = Sender::new(sc, SessionId(info.session), sizes, Time::ZERO)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let live = Arc::new(Live::default());
        running.insert(m.id, Running { info: info.clone(), slot, live: Arc::clone(&live) });
        let counters = self.counters.get().cloned();
        if let Some(c) = &counters {
            c.started.inc();
        }
        let me = Arc::clone(self);
        let image = m.id;
        let dest = SocketAddr::from((group, info.port));
        std::thread::Builder::new().name(format!("session-{}", &image.to_hex()[..8])).spawn(move || {
            tracing::info!(%image, %group, port = dest.port(), "session started");
            let res = run(sender, &sock, dest, &hashes, &me.store, start, (&live, counters.as_ref()));
            match res {
                Ok(()) => tracing::info!(%image, "session ended: idle"),
                Err(e) => tracing::error!(%image, "session failed: {e}"),
            }
            if let Ok(mut r) = me.running.lock() {
                r.remove(&image);
            }
        })?;
        Ok(info)
    }

    pub fn count(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// A few recently read chunks: blocks of one chunk go out back to back.
struct ChunkCache {
    entries: VecDeque<(u32, Arc<Vec<u8>>)>,
}

impl ChunkCache {
    const SIZE: usize = 16;

    fn get(&mut self, index: u32, hashes: &[ChunkHash], store: &Store) -> io::Result<Arc<Vec<u8>>> {
        if let Some((_, b)) = self.entries.iter().find(|(i, _)| *i == index) {
            return Ok(Arc::clone(b));
        }
        let hash = hashes.get(index as usize).ok_or_else(|| io::Error::other("chunk index past the image"))?;
        let bytes = Arc::new(store.read_chunk(hash)?);
        if self.entries.len() == Self::SIZE {
            self.entries.pop_front();
        }
        self.entries.push_back((index, Arc::clone(&bytes)));
        Ok(bytes)
    }
}

/// Datagrams taken from the socket at most between two sending turns.
const MAX_DRAIN: usize = 1024;

/// Moves datagrams between the socket and the sender until it is idle.
fn run(
    mut sender: Sender,
    sock: &std::net::UdpSocket,
    dest: SocketAddr,
    hashes: &[ChunkHash],
    store: &Store,
    start: Instant,
    (live, counters): (&Live, Option<&Counters>),
) -> io::Result<()> {
    let now = || Time::from_duration(start.elapsed());
    let (mut bytes, mut resent) = (0u64, 0u64);
    let mut cache = ChunkCache { entries: VecDeque::new() };
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    let mut batch = Batcher::new(sock, dest)?;
    let mut incoming = Datagrams::new(sock)?;
    loop {
        // Send everything the pacer allows now.
        loop {
            buf.clear();
            let Some(t) = sender.poll_transmit(now(), &mut buf) else { break };
            buf.truncate(t.size);
            if let Some(p) = t.payload {
                let chunk = cache.get(p.chunk, hashes, store)?;
                let (a, b) = (p.offset as usize, (p.offset + p.len) as usize);
                let bytes =
                    chunk.get(a..b).ok_or_else(|| io::Error::other("stored chunk shorter than its manifest size"))?;
                buf.extend_from_slice(bytes);
            }
            batch.push(sock, &buf)?;
        }
        batch.flush(sock)?;
        live.receivers.store(sender.receivers() as u64, Ordering::Relaxed);
        live.rate.store(sender.rate(), Ordering::Relaxed);
        if let Some(c) = counters {
            let st = sender.stats();
            c.bytes.add(st.bytes_sent.saturating_sub(bytes));
            c.resent.add(st.resend_blocks.saturating_sub(resent));
            (bytes, resent) = (st.bytes_sent, st.resend_blocks);
        }
        while let Some(ev) = sender.poll() {
            match ev {
                sender::Event::Idle => {
                    let st = sender.stats();
                    tracing::info!(
                        blocks_sent = st.blocks_sent,
                        bytes_sent = st.bytes_sent,
                        payload_bytes_sent = st.payload_bytes_sent,
                        resend_blocks = st.resend_blocks,
                        chunk_requests = st.chunk_requests,
                        block_requests = st.block_requests,
                        throttled = st.throttled,
                        busy_heard = st.busy_heard,
                        busy_ignored = st.busy_ignored,
                        malformed = st.malformed,
                        rate = sender.rate(),
                        gso_sends = batch.sends,
                        failed_sends = batch.failed_sends,
                        "session idle"
                    );
                    return Ok(());
                }
                sender::Event::Joined { receiver, from } => {
                    counters.inspect(|c| c.joined.inc());
                    tracing::info!(?receiver, %from, "receiver joined")
                }
                sender::Event::Left { receiver } => tracing::info!(?receiver, "receiver left"),
                sender::Event::Lost { receiver } => {
                    counters.inspect(|c| c.lost.inc());
                    tracing::warn!(?receiver, "receiver lost")
                }
                sender::Event::Report(r) => tracing::info!(report = ?r, "receiver report"),
            }
        }
        // Wait for a request or the next deadline, then take every request
        // already queued: one a turn would let a backlog of requests (and
        // the receivers' view of the session) fall ever further behind.
        let wait = sender.poll_timeout().map_or(Duration::from_millis(100), |t| t.saturating_since(now()));
        if wait_readable(sock, wait.min(Duration::from_millis(100)))? {
            incoming.drain(sock, MAX_DRAIN, |from, bytes| sender.handle(now(), from, bytes))?;
        }
        if sender.poll_timeout().is_some_and(|t| t <= now()) {
            sender.handle_timeout(now());
        }
    }
}
