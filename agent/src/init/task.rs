//! What the agent does once it is on the network: a [`Task`], taken from
//! a [`TaskSource`].
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

use crate::deploy::FreePolicy;
use crate::load::{load, LoadConfig, LoadError, LoadReport};

/// One job for the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Load image `image` (id or name) onto `target`, or into one of its
    /// partitions.
    Load { image: String, target: PathBuf, partition: Option<u32> },
}

/// How a task ended.
#[derive(Debug)]
pub enum Outcome {
    Loaded(LoadReport),
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
}

/// Where tasks come from and where their outcomes go.
pub trait TaskSource {
    /// The next task, or `None` when there is nothing (more) to do.
    fn next_task(&mut self) -> Option<Task>;
    /// The outcome of the last task given.
    fn report(&mut self, task: &Task, outcome: &Outcome);
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
            Outcome::Failed(e) => tracing::error!("{task:?} failed: {}", chain(e)),
        }
    }
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
}

/// How long a task's target disk may take to appear.
const TARGET_WAIT: Duration = Duration::from_secs(20);

pub fn run(task: &Task, ctx: &Context<'_>) -> Outcome {
    match run_inner(task, ctx) {
        Ok(r) => Outcome::Loaded(r),
        Err(e) => Outcome::Failed(e),
    }
}

fn run_inner(task: &Task, ctx: &Context<'_>) -> Result<LoadReport, TaskError> {
    let Task::Load { image, target, partition } = task;
    let key = server_key()?;
    if !super::system::wait_for_path(target, TARGET_WAIT) {
        return Err(TaskError::NoTarget(target.clone(), TARGET_WAIT));
    }
    let cfg = LoadConfig {
        server: ctx.server.to_string(),
        image: image.clone(),
        dest: target.clone(),
        partition: *partition,
        key: Some(key),
        verify_only: false,
        free: FreePolicy::Leave,
        fallback_after: Duration::from_secs(5),
        iface: ctx.addr,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(load(&cfg)?)
}
