//! Capturing to a Shoal server: the capture pipeline of [`crate::capture`]
//! with a [`ChunkSink`] that uploads over HTTP only the chunks the server
//! lacks, then the manifest, which the server checks, signs and stores.
//!
//! The server's routes (`POST /v1/chunks/missing`, `PUT /v1/chunks/{hash}`,
//! `POST /v1/captures`) are unauthenticated until the control plane adds
//! agent tokens. Before the capture, the source's ext filesystems are
//! scrubbed unless the config says not to ([`crate::scrub`]): that writes
//! to the source.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::chunk::EncodedChunk;
use shoal_proto::manifest::Manifest;
use shoal_proto::{ChunkHash, ImageId};

use crate::capture::{capture, CaptureError, CaptureStats, ChunkSink, Progress};
use crate::device::Device;
use crate::plan::{plan, PlanError};
use crate::scrub::{self, FsReport, ScrubConfig, ScrubError};

/// How long one HTTP exchange may take, a chunk upload included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

/// What to capture, and how to describe the image.
#[derive(Clone, Debug)]
pub struct UploadConfig {
    /// The server's base URL, e.g. `http://10.0.0.1:4870`.
    pub server: String,
    pub source: PathBuf,
    /// Partitions to capture; empty for the whole disk.
    pub partitions: Vec<u32>,
    pub name: String,
    pub version: String,
    pub description: String,
    pub author: String,
    /// `None`: capture the source untouched.
    pub scrub: Option<ScrubConfig>,
    pub level: i32,
    pub workers: usize,
}

/// What a capture to a server did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadReport {
    /// The id the server gave the image.
    pub image: ImageId,
    pub name: String,
    pub version: String,
    pub stats: CaptureStats,
    /// Chunks (and their bytes) the server lacked and was sent.
    pub uploaded_chunks: u64,
    pub uploaded_bytes: u64,
    /// Per filesystem; empty when scrubbing was off or found nothing to scrub.
    pub scrubbed: Vec<FsReport>,
    pub scrub: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// the server could not be reached or refused a request
    #[error("{0}")]
    Http(String),
    #[error("scrubbing the source before capture")]
    Scrub(#[from] ScrubError),
    #[error("planning the capture")]
    Plan(#[from] PlanError),
    #[error("capturing")]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A server's upload routes.
pub struct Server {
    agent: ureq::Agent,
    base: String,
}

impl Server {
    pub fn new(base: &str) -> Server {
        let config =
            ureq::Agent::config_builder().timeout_global(Some(HTTP_TIMEOUT)).http_status_as_error(false).build();
        Server { agent: ureq::Agent::new_with_config(config), base: base.trim_end_matches('/').to_string() }
    }

    /// Sends a request and returns the body of a 2xx answer; anything else
    /// is an error carrying the server's message.
    fn exchange(&self, what: &str, req: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> io::Result<Vec<u8>> {
        let resp = req.map_err(|e| io::Error::other(format!("{what}: {e}")))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| io::Error::other(format!("{what}: {e}")))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(io::Error::other(format!("{what}: {status}: {msg}")));
        }
        Ok(body)
    }

    /// The hashes of `hashes` the server does not have.
    pub fn missing(&self, hashes: &[ChunkHash]) -> io::Result<Vec<ChunkHash>> {
        let body = serde_json::to_vec(hashes).map_err(io::Error::other)?;
        let url = format!("{}/v1/chunks/missing", self.base);
        let answer = self.exchange(
            "POST /v1/chunks/missing",
            self.agent.post(&url).header("content-type", "application/json").send(&body[..]),
        )?;
        serde_json::from_slice(&answer).map_err(|e| io::Error::other(format!("POST /v1/chunks/missing: {e}")))
    }

    pub fn put_chunk(&self, hash: &ChunkHash, bytes: &[u8]) -> io::Result<()> {
        let url = format!("{}/v1/chunks/{hash}", self.base);
        self.exchange(
            "PUT /v1/chunks",
            self.agent.put(&url).header("content-type", "application/octet-stream").send(bytes),
        )?;
        Ok(())
    }

    /// Hands the server the manifest; returns the id it gave the image.
    pub fn post_image(&self, m: &Manifest) -> io::Result<ImageId> {
        let url = format!("{}/v1/captures", self.base);
        let answer = self.exchange(
            "POST /v1/captures",
            self.agent.post(&url).header("content-type", "application/octet-stream").send(&m.encode()[..]),
        )?;
        let v: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| io::Error::other(format!("POST /v1/captures: {e}")))?;
        v["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("POST /v1/captures: the answer has no image id"))
    }
}

/// A [`ChunkSink`] that asks the server whether it has each chunk and
/// uploads it if not. Chunks seen before in this capture are not asked
/// about again.
pub struct HttpSink<'a> {
    server: &'a Server,
    seen: Mutex<HashSet<ChunkHash>>,
    pub uploaded_chunks: AtomicU64,
    pub uploaded_bytes: AtomicU64,
}

impl<'a> HttpSink<'a> {
    pub fn new(server: &'a Server) -> HttpSink<'a> {
        HttpSink {
            server,
            seen: Mutex::new(HashSet::new()),
            uploaded_chunks: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
        }
    }
}

impl ChunkSink for HttpSink<'_> {
    fn put(&self, chunk: &EncodedChunk) -> io::Result<bool> {
        if !self.seen.lock().map_err(|_| io::Error::other("chunk set lock poisoned"))?.insert(chunk.hash) {
            return Ok(false);
        }
        if self.server.missing(&[chunk.hash])?.is_empty() {
            return Ok(false);
        }
        self.server.put_chunk(&chunk.hash, &chunk.bytes)?;
        self.uploaded_chunks.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        Ok(true)
    }
}

/// Scrubs (unless told not to), captures and uploads. Blocks until the
/// server has stored the image.
pub fn capture_to_server(cfg: &UploadConfig, progress: &Progress) -> Result<UploadReport, UploadError> {
    let scrubbed = match &cfg.scrub {
        Some(s) => scrub::scrub_source(&cfg.source, &cfg.partitions, s, &scrub::default_scratch())?,
        None => Vec::new(),
    };
    let dev = Device::open(&cfg.source)?;
    dev.advise_sequential();
    let plan = plan(&dev, &cfg.partitions)?;
    let server = Server::new(&cfg.server);
    let sink = HttpSink::new(&server);
    let (segments, stats) = capture(&dev, &plan, &sink, cfg.level, cfg.workers, progress)?;
    let m = Manifest {
        // The server gives the image its id and date.
        id: ImageId([0; 16]),
        name: cfg.name.clone(),
        version: cfg.version.clone(),
        arch: std::env::consts::ARCH.to_string(),
        stamp: String::new(),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        description: cfg.description.clone(),
        author: cfg.author.clone(),
        base: None,
        kind: plan.kind,
        source_size: plan.source_size,
        sector_size: plan.sector_size,
        window_size: shoal_proto::WINDOW_SIZE,
        table: plan.table.clone(),
        segments,
        expires: None,
    };
    let image = server.post_image(&m).map_err(|e| UploadError::Http(e.to_string()))?;
    Ok(UploadReport {
        image,
        name: m.name,
        version: m.version,
        stats,
        uploaded_chunks: sink.uploaded_chunks.load(Ordering::Relaxed),
        uploaded_bytes: sink.uploaded_bytes.load(Ordering::Relaxed),
        scrubbed,
        scrub: cfg.scrub.is_some(),
        warnings: plan.warnings,
    })
}
