//! What the agent does once it is on the network: a [`Task`] (load an
//! image, capture the disk to the server, wipe the disk), taken from a
//! [`TaskSource`].
//!
//! **The seam for the control plane.** Today the only source is the
//! kernel command line ([`CmdlineTasks`]: one task, from `shoal.task=`).
//! The server's task, heartbeat and report API will be a second
//! `TaskSource` that asks the server (with the node id and one-time token
//! from the command line) and reports each [`Outcome`] back; nothing else
//! in the agent changes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_proto::initramfs as layout;
use shoal_proto::KeyId;

use crate::capture::Progress;
use crate::deploy::FreePolicy;
use crate::load::{load, LoadConfig, LoadError, LoadReport};
use crate::scrub::ScrubConfig;
use crate::upload::{capture_to_server, UploadConfig, UploadError, UploadReport};
use crate::wipe::{wipe, WipeError, WipeMode, WipeReport};

/// One job for the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Load image `image` (id or name) onto `target`, or into one of its
    /// partitions (creating the image's partition table on a blank disk).
    Load { image: String, target: PathBuf, partition: Option<u32> },
    /// Capture `target` (or one of its partitions) to the server as image
    /// `name` (version `version`, else 1), scrubbing it first unless
    /// `scrub` is `None`.
    Capture {
        target: PathBuf,
        partition: Option<u32>,
        name: String,
        version: Option<String>,
        scrub: Option<ScrubConfig>,
    },
    /// Discard or zero the whole of `target`.
    Wipe { target: PathBuf, mode: WipeMode },
}

impl Task {
    /// The disk the task works on.
    pub fn target(&self) -> &PathBuf {
        match self {
            Task::Load { target, .. } | Task::Capture { target, .. } | Task::Wipe { target, .. } => target,
        }
    }
}

/// How a task ended.
#[derive(Debug)]
pub enum Outcome {
    Loaded(LoadReport),
    Captured(UploadReport),
    Wiped(WipeReport),
    Failed(TaskError),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// the initramfs has no usable server key, so no manifest can be trusted
    #[error("the server key {path}: {why}")]
    Key { path: &'static str, why: String },
    /// the target disk did not appear
    #[error("{0} did not appear within {1:?}")]
    NoTarget(PathBuf, Duration),
    #[error("loading the image")]
    Load(#[from] LoadError),
    #[error("capturing the disk")]
    Capture(#[from] UploadError),
    #[error(transparent)]
    Wipe(#[from] WipeError),
}

/// Where tasks come from and where their outcomes go.
pub trait TaskSource {
    /// The next task, or `None` when there is nothing (more) to do.
    fn next_task(&mut self) -> Option<Task>;
    /// The outcome of the last task given.
    fn report(&mut self, task: &Task, outcome: &Outcome);
    /// Why no task could be had, once [`TaskSource::next_task`] gave `None`
    /// because of a failure rather than because all was done.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// The task named on the kernel command line, given once. Reports go to
/// the console only.
pub struct CmdlineTasks(Option<Task>);

impl CmdlineTasks {
    pub fn new(task: Option<Task>) -> CmdlineTasks {
        CmdlineTasks(task)
    }
}

impl TaskSource for CmdlineTasks {
    fn next_task(&mut self) -> Option<Task> {
        self.0.take()
    }

    fn report(&mut self, task: &Task, outcome: &Outcome) {
        match outcome {
            Outcome::Loaded(r) => tracing::info!(
                "{task:?} done: {} chunks ({} already present, {} by multicast, {} over HTTP), {} bytes written in {:.2} s",
                r.chunks,
                r.chunks_present,
                r.chunks_multicast,
                r.chunks_http,
                r.bytes_written,
                r.elapsed.as_secs_f64()
            ),
            Outcome::Captured(r) => {
                for line in describe_upload(r).lines() {
                    tracing::info!("{line}");
                }
            }
            Outcome::Wiped(r) => tracing::info!(
                "{task:?} done: {} bytes ({:?}) in {:.2} s",
                r.bytes,
                r.mode,
                r.elapsed.as_secs_f64()
            ),
            Outcome::Failed(e) => tracing::error!("{task:?} failed: {}", chain(e)),
        }
    }
}

/// A capture's report for people: the image, the upload, what was scrubbed.
pub fn describe_upload(r: &UploadReport) -> String {
    let mut out = format!(
        "captured as {}:{} ({}): {} chunks, {} uploaded ({} bytes), {} bytes read in {:.2} s\n",
        r.name,
        r.version,
        r.image,
        r.stats.chunks,
        r.uploaded_chunks,
        r.uploaded_bytes,
        r.stats.read_bytes,
        r.stats.elapsed.as_secs_f64()
    );
    if !r.scrub {
        out += "not scrubbed (--no-scrub): the source was captured as it is\n";
    }
    for fs in &r.scrubbed {
        let what = fs.partition.map_or("the source".to_string(), |n| format!("partition {n}"));
        let lines = fs.lines();
        if lines.is_empty() {
            out += &format!("scrubbed {what}: nothing to remove\n");
        }
        for l in lines {
            out += &format!("scrubbed {what}: {l}\n");
        }
    }
    out
}

/// An error and its sources, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg += &format!(": {c}");
        cur = c.source();
    }
    msg
}

/// The key baked into the initramfs.
fn server_key() -> Result<KeyId, TaskError> {
    let path = layout::SERVER_KEY;
    let text = std::fs::read_to_string(path).map_err(|e| TaskError::Key { path, why: e.to_string() })?;
    text.trim().parse().map_err(|_| TaskError::Key { path, why: "not a hex ed25519 public key".into() })
}

/// What a task needs from the boot so far.
pub struct Context<'a> {
    pub server: &'a str,
    /// The address DHCP gave, for the multicast group membership.
    pub addr: Ipv4Addr,
    /// The key manifests must be signed with; `None`: the initramfs's.
    pub key: Option<KeyId>,
    /// Where the task counts its progress (for heartbeats).
    pub progress: &'a Progress,
}

/// How long a task's target disk may take to appear.
const TARGET_WAIT: Duration = Duration::from_secs(20);

pub fn run(task: &Task, ctx: &Context<'_>) -> Outcome {
    let target = task.target();
    if !super::system::wait_for_path(target, TARGET_WAIT) {
        return Outcome::Failed(TaskError::NoTarget(target.clone(), TARGET_WAIT));
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let res = match task {
        Task::Load { image, target, partition } => run_load(image, target, *partition, ctx).map(Outcome::Loaded),
        Task::Capture { target, partition, name, version, scrub } => {
            let cfg = UploadConfig {
                server: ctx.server.to_string(),
                source: target.clone(),
                partitions: partition.iter().copied().collect(),
                name: name.clone(),
                version: version.clone().unwrap_or_else(|| "1".into()),
                description: String::new(),
                author: "shoal-agent".into(),
                scrub: scrub.clone(),
                level: shoal_proto::chunk::DEFAULT_LEVEL,
                workers,
            };
            capture_to_server(&cfg, ctx.progress).map(Outcome::Captured).map_err(TaskError::from)
        }
        Task::Wipe { target, mode } => wipe(target, *mode, ctx.progress).map(Outcome::Wiped).map_err(TaskError::from),
    };
    res.unwrap_or_else(Outcome::Failed)
}

fn run_load(
    image: &str,
    target: &std::path::Path,
    partition: Option<u32>,
    ctx: &Context<'_>,
) -> Result<LoadReport, TaskError> {
    let key = match ctx.key {
        Some(k) => k,
        None => server_key()?,
    };
    let cfg = LoadConfig {
        server: ctx.server.to_string(),
        image: image.to_string(),
        dest: target.to_path_buf(),
        partition,
        key: Some(key),
        verify_only: false,
        free: FreePolicy::Leave,
        fallback_after: Duration::from_secs(5),
        iface: ctx.addr,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        progress: Some(ctx.progress),
    };
    Ok(load(&cfg)?)
}
