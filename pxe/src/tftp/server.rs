//! The tokio driver: a listening socket that turns requests into transfer
//! tasks, each moving bytes between its own socket and a [`Transfer`].
//!
//! The listener decodes each datagram and answers it or drops it:
//!
//! | datagram                       | answer (from the listening port)      |
//! |--------------------------------|---------------------------------------|
//! | RRQ, under the limits          | a transfer task on a new socket (TID) |
//! | RRQ, transfer limit reached    | ERROR 0 "server busy"                 |
//! | RRQ repeated while it runs     | nothing (the transfer answers it)     |
//! | WRQ                            | ERROR 2 "access violation"            |
//! | RRQ/WRQ that does not decode   | ERROR 4 with the reason               |
//! | over the client's request rate | nothing                               |
//! | DATA, ACK, ERROR, OACK, junk   | nothing                               |
//!
//! Each case is counted in [`Counters`] and logged through `tracing`
//! (refusals at `debug`, escapes at `warn`); the listener never stops for a
//! bad datagram. A transfer task opens the file through [`Root`] (an error
//! there goes out as ERROR 1 or 2 from the transfer's socket), then runs
//! the loop the [`Transfer`] documents. It holds no protocol logic.
//!
//! File opens and reads are ordinary blocking calls on the task's thread:
//! one window of a local file at a time. A root on a slow network
//! filesystem would stall a runtime worker for as long as a read takes.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::task::{Id, JoinSet};
use tracing::{debug, info, warn};

use super::counters::Counters;
use super::limit::{RateLimit, RateLimiter};
use super::net::{self, Listener, Received};
use super::options::{ConfigError, TransferConfig};
use super::packet::{ErrorCode, Mode, Options, Packet, PacketError};
use super::root::{OpenError, Root, RootError};
use super::transfer::{Event, Failure, Refusal, Transfer};

/// The largest UDP payload; the listener reads whole datagrams.
const LISTEN_BUFFER: usize = 65536;
/// What a transfer reads: an ACK or an ERROR with its longest message.
const TRANSFER_BUFFER: usize = 1024;

/// How the server listens and what it allows.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where requests arrive; `0.0.0.0:69` by default.
    pub listen: SocketAddr,
    /// The directory files are served from.
    pub root: PathBuf,
    /// Transfers running at once at most; more requests get ERROR 0.
    pub max_transfers: usize,
    /// Requests per client address.
    pub rate: RateLimit,
    pub transfer: TransferConfig,
}

impl ServerConfig {
    /// Defaults, serving `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            root: root.into(),
            max_transfers: 128,
            rate: RateLimit::default(),
            transfer: TransferConfig::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// the listening socket could not be set up
    #[error("binding tftp to {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

struct Shared {
    root: Root,
    transfer: TransferConfig,
    counters: Arc<Counters>,
}

/// A bound, not yet running, TFTP server.
pub struct Server {
    listener: Listener,
    shared: Arc<Shared>,
    max_transfers: usize,
    rate: RateLimit,
}

/// The listener's bookkeeping of running transfers.
struct Running {
    tasks: JoinSet<()>,
    peers: HashMap<Id, SocketAddr>,
    active: HashSet<SocketAddr>,
    limiter: RateLimiter,
}

impl Server {
    /// Checks the configuration, opens the root and binds the listening
    /// socket. Must be called inside a tokio runtime.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.transfer.validate()?;
        if config.max_transfers == 0 || config.rate.max_clients == 0 {
            return Err(ConfigError::Invalid("max_transfers or rate.max_clients is zero").into());
        }
        let root = Root::new(&config.root)?;
        let addr = config.listen;
        let listener = Listener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        info!(addr = %listener.local_addr(), root = %root.path().display(), "tftp listening");
        let shared = Arc::new(Shared { root, transfer: config.transfer, counters: Arc::default() });
        Ok(Server { listener, shared, max_transfers: config.max_transfers, rate: config.rate })
    }

    /// The address bound, with the port the kernel picked if it was 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// Serves until `shutdown` completes; then running transfers are
    /// aborted and their sockets closed before this returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut running = Running {
            tasks: JoinSet::new(),
            peers: HashMap::new(),
            active: HashSet::new(),
            limiter: RateLimiter::new(self.rate),
        };
        let mut buf = vec![0; LISTEN_BUFFER];
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(done) = running.tasks.join_next_with_id() => {
                    let id = done.as_ref().map_or_else(|e| e.id(), |(id, ())| *id);
                    if let Some(peer) = running.peers.remove(&id) {
                        running.active.remove(&peer);
                    }
                }
                r = self.listener.recv(&mut buf) => match r {
                    Ok(rx) if rx.truncated => {
                        Counters::bump(&self.shared.counters.malformed);
                        debug!(peer = %rx.from, len = rx.len, "tftp: oversized datagram dropped");
                    }
                    Ok(rx) => self.dispatch(&mut running, rx, &buf[..rx.len]).await,
                    Err(e) => {
                        Counters::bump(&self.shared.counters.io_errors);
                        warn!(error = %e, "tftp: receive failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
        running.tasks.shutdown().await;
    }

    async fn dispatch(&self, running: &mut Running, rx: Received, bytes: &[u8]) {
        let c = &self.shared.counters;
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                Counters::bump(&c.malformed);
                debug!(peer = %rx.from, error = %e, "tftp: malformed datagram");
                // Only what claims to be a request is worth an answer.
                if matches!(bytes, [0, 1 | 2, ..])
                    && running.limiter.allow(Instant::now(), net::canonical(rx.from).ip())
                {
                    self.refuse(rx.from, ErrorCode::IllegalOperation, &request_error(&e)).await;
                }
                return;
            }
        };
        let (req, write) = match packet {
            Packet::Rrq(req) => (req, false),
            Packet::Wrq(req) => (req, true),
            other => {
                Counters::bump(&c.stray);
                debug!(peer = %rx.from, opcode = ?other.opcode(), "tftp: stray packet on the listening port");
                return;
            }
        };
        if !running.limiter.allow(Instant::now(), net::canonical(rx.from).ip()) {
            Counters::bump(&c.rate_limited);
            debug!(peer = %rx.from, "tftp: request over the client's rate, dropped");
            return;
        }
        if write {
            Counters::bump(&c.write_requests);
            info!(peer = %rx.from, file = req.filename, "tftp: write request refused");
            return self.refuse(rx.from, ErrorCode::AccessViolation, "access violation").await;
        }
        Counters::bump(&c.requests);
        let peer = net::canonical(rx.from);
        if running.active.contains(&peer) {
            Counters::bump(&c.duplicate_requests);
            debug!(%peer, file = req.filename, "tftp: repeated request for a running transfer");
            return;
        }
        if running.tasks.len() >= self.max_transfers {
            Counters::bump(&c.busy);
            info!(%peer, file = req.filename, "tftp: transfer limit reached, refused");
            return self.refuse(rx.from, ErrorCode::NotDefined, "server busy").await;
        }
        let job =
            Job { peer, local: rx.local, filename: req.filename.to_owned(), mode: req.mode, options: req.options };
        let handle = running.tasks.spawn(serve(self.shared.clone(), job));
        running.peers.insert(handle.id(), peer);
        running.active.insert(peer);
    }

    async fn refuse(&self, dest: SocketAddr, code: ErrorCode, message: &str) {
        let bytes = Packet::Error { code, message: message.as_bytes() }.to_vec();
        if let Err(e) = self.listener.send_to(&bytes, dest).await {
            Counters::bump(&self.shared.counters.io_errors);
            debug!(peer = %dest, error = %e, "tftp: sending an error failed");
        }
    }
}

/// The message of an ERROR 4 for a request that did not decode.
fn request_error(e: &PacketError) -> String {
    format!("illegal tftp operation: {e}")
}

/// What a transfer task needs from its request.
struct Job {
    peer: SocketAddr,
    local: SocketAddr,
    filename: String,
    mode: Mode,
    options: Options,
}

/// One transfer task: a socket, the file, and the machine between them.
async fn serve(shared: Arc<Shared>, job: Job) {
    let c = &shared.counters;
    let socket = match net::transfer_socket(job.local, job.peer) {
        Ok(s) => s,
        Err(e) => {
            Counters::bump(&c.io_errors);
            warn!(peer = %job.peer, error = %e, "tftp: no socket for a transfer");
            return;
        }
    };
    let (file, size) = match shared.root.open(&job.filename) {
        Ok(opened) => opened,
        Err(e) => {
            match e {
                OpenError::NotFound => Counters::bump(&c.not_found),
                OpenError::Escapes => Counters::bump(&c.escapes),
                OpenError::Os(_) => Counters::bump(&c.io_errors),
                _ => Counters::bump(&c.denied),
            }
            if e == OpenError::Escapes {
                warn!(peer = %job.peer, file = job.filename, "tftp: request outside the root refused");
            } else {
                info!(peer = %job.peer, file = job.filename, error = %e, "tftp: request refused");
            }
            let (code, message) = e.to_tftp();
            let bytes = Packet::Error { code, message: message.as_bytes() }.to_vec();
            let _ = socket.send_to(&bytes, job.peer).await;
            return;
        }
    };
    Counters::bump(&c.transfers_started);
    let mut t = Transfer::new(job.peer, job.mode, &job.options, file, Some(size), &shared.transfer);
    info!(peer = %job.peer, file = job.filename, size, blksize = t.blksize(), windowsize = t.windowsize(), "tftp: sending");
    let started = Instant::now();
    let ok = drive(&mut t, &socket, c, &job.filename).await;
    let stats = t.stats();
    Counters::add(&c.bytes_sent, stats.bytes_sent);
    Counters::add(&c.bytes_acked, stats.bytes_acked);
    Counters::add(&c.blocks_resent, stats.data_resent);
    if ok {
        Counters::bump(&c.transfers_ok);
        let ms = started.elapsed().as_millis();
        info!(peer = %job.peer, file = job.filename, bytes = stats.bytes_acked, ms, "tftp: sent");
    } else {
        Counters::bump(&c.transfers_failed);
    }
}

/// The loop of [`Transfer`]'s call order; true if the transfer completed.
async fn drive<R: Read>(t: &mut Transfer<R>, socket: &UdpSocket, c: &Counters, file: &str) -> bool {
    let mut out = vec![0; t.max_datagram()];
    let mut inbuf = vec![0; TRANSFER_BUFFER];
    let mut complete = false;
    loop {
        let now = Instant::now();
        while let Some(tx) = t.poll_transmit(now, &mut out) {
            if let Err(e) = socket.send_to(&out[..tx.size], tx.dest).await {
                Counters::bump(&c.io_errors);
                debug!(peer = %tx.dest, error = %e, "tftp: send failed");
            }
        }
        while let Some(event) = t.poll() {
            complete |= record(&event, t.peer(), file, c);
        }
        if t.is_finished() {
            return complete;
        }
        let Some(deadline) = t.poll_timeout() else {
            // A live transfer with nothing to send always has a deadline.
            warn!(peer = %t.peer(), file, "tftp: transfer stalled without a deadline");
            return false;
        };
        tokio::select! {
            r = socket.recv_from(&mut inbuf) => match r {
                Ok((n, from)) => t.handle(Instant::now(), net::canonical(from), &inbuf[..n]),
                Err(e) => debug!(peer = %t.peer(), error = %e, "tftp: receive failed"),
            },
            () = tokio::time::sleep_until(deadline.into()) => t.handle_timeout(Instant::now()),
        }
    }
}

/// Counts and logs one event; true for completion.
fn record(event: &Event, peer: SocketAddr, file: &str, c: &Counters) -> bool {
    match event {
        Event::Complete => return true,
        Event::Failed(f) => {
            match f {
                Failure::TimedOut(_) => Counters::bump(&c.timeouts),
                Failure::Peer { .. } => Counters::bump(&c.peer_errors),
                Failure::Unexpected(_) => Counters::bump(&c.protocol_errors),
                _ => Counters::bump(&c.io_errors),
            }
            info!(%peer, file, error = %f, "tftp: transfer failed");
        }
        Event::Refused { from, reason: Refusal::WrongTid } => {
            Counters::bump(&c.wrong_tid);
            debug!(%peer, %from, "tftp: datagram from an unknown transfer id");
        }
        Event::Refused { from, reason } => {
            Counters::bump(&c.malformed);
            debug!(%peer, %from, ?reason, "tftp: datagram refused");
        }
    }
    false
}
