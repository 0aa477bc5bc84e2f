//! Tasks from the server: the [`TaskSource`] for a node booted for a job.
//! The node's one-time token (from the kernel command line) fetches the
//! task from `GET /v1/agent/{mac}/task`; while it runs, a thread posts
//! heartbeats with its progress to `.../heartbeat`; the outcome goes to
//! `.../report` with the tail of the agent's log, which spends the token.
//!
//! An unreachable server is retried with backoff (and said so on the
//! console) for [`TASK_PATIENCE`]; a refusal (the token is unknown or
//! spent, the node is in no job) is final: the node reboots into whatever
//! its boot decision now is.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::cmdline::{AgentToken, Mac};
use super::task::{chain, describe_upload, Outcome, Task, TaskSource};
use crate::capture::Progress;
use crate::scrub::ScrubConfig;
use crate::wipe::WipeMode;

/// How long the agent keeps trying to reach the server for its task.
pub const TASK_PATIENCE: Duration = Duration::from_secs(600);
/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a running task says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Tries for the final report, which must not be lost to one bad moment.
const REPORT_TRIES: u32 = 6;

/// The task as the server's `GET /v1/agent/{mac}/task` gives it.
#[derive(Debug, Deserialize)]
struct ServerTask {
    job: i64,
    kind: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    params: serde_json::Value,
}

/// Why the server's task could not become a [`Task`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerTaskError {
    /// the server answered with an error status (the token is not good for this node)
    #[error("the server refused: {0}")]
    Refused(String),
    /// the server could not be reached within the patience
    #[error("the server was unreachable for {0:?}: {1}")]
    Unreachable(Duration, String),
    /// the answer is not a task this agent runs
    #[error("the server's task: {0}")]
    Task(String),
}

/// The one task the server has for this node, and where its outcome goes.
pub struct ServerTasks {
    base: String,
    mac: Mac,
    token: AgentToken,
    /// The node's disk, from `shoal.target=`.
    disk: PathBuf,
    progress: Arc<Progress>,
    asked: bool,
    beat: Option<Heartbeats>,
    /// The job the task belongs to, for the log.
    job: Option<i64>,
    /// Set when asking failed: why, for the console.
    pub failure: Option<ServerTaskError>,
}

impl ServerTasks {
    pub fn new(base: &str, mac: Mac, token: AgentToken, disk: PathBuf, progress: Arc<Progress>) -> ServerTasks {
        ServerTasks {
            base: base.trim_end_matches('/').to_string(),
            mac,
            token,
            disk,
            progress,
            asked: false,
            beat: None,
            job: None,
            failure: None,
        }
    }

    fn url(&self, what: &str) -> String {
        format!("{}/v1/agent/{}/{what}", self.base, self.mac)
    }

    fn fetch(&self) -> Result<ServerTask, ServerTaskError> {
        let start = Instant::now();
        let mut pause = Duration::from_secs(1);
        loop {
            let res = ureq::get(&self.url("task"))
                .header("Authorization", &format!("Bearer {}", self.token.expose()))
                .config()
                .http_status_as_error(false)
                .build()
                .call();
            match res {
                Ok(resp) if resp.status().is_success() => {
                    let body = resp
                        .into_body()
                        .with_config()
                        .limit(1 << 20)
                        .read_to_vec()
                        .map_err(|e| ServerTaskError::Task(e.to_string()))?;
                    return serde_json::from_slice(&body).map_err(|e| ServerTaskError::Task(e.to_string()));
                }
                Ok(resp) if resp.status().is_server_error() => {
                    let why = format!("HTTP {}", resp.status());
                    self.wait(start, &mut pause, why)?;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.into_body().with_config().limit(4096).read_to_string().unwrap_or_default();
                    return Err(ServerTaskError::Refused(format!("HTTP {status}: {}", problem_detail(&body))));
                }
                Err(e) => self.wait(start, &mut pause, e.to_string())?,
            }
        }
    }

    /// Sleeps before the next try, or gives up once patience is out.
    fn wait(&self, start: Instant, pause: &mut Duration, why: String) -> Result<(), ServerTaskError> {
        if start.elapsed() + *pause > TASK_PATIENCE {
            return Err(ServerTaskError::Unreachable(TASK_PATIENCE, why));
        }
        tracing::warn!("server {} unreachable ({why}): retrying in {} s", self.base, pause.as_secs());
        std::thread::sleep(*pause);
        *pause = (*pause * 2).min(MAX_BACKOFF);
        Ok(())
    }

    fn task(&self, t: &ServerTask) -> Result<Task, ServerTaskError> {
        let param = |k: &str| t.params.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let partition = t.params.get("partition").and_then(|v| v.as_u64()).map(|n| n as u32);
        let target = self.disk.clone();
        match t.kind.as_str() {
            "reload" => {
                let image = t.image.clone().ok_or_else(|| ServerTaskError::Task("a reload without an image".into()))?;
                Ok(Task::Load { image, target, partition })
            }
            "capture" => {
                let name = param("name").ok_or_else(|| ServerTaskError::Task("a capture without a name".into()))?;
                let scrub = match t.params.get("scrub").and_then(|v| v.as_bool()) {
                    Some(false) => None,
                    _ => Some(ScrubConfig::default()),
                };
                Ok(Task::Capture { target, partition, name, version: param("version"), scrub })
            }
            "wipe" => {
                let mode = match param("mode").as_deref() {
                    None | Some("zero") => WipeMode::Zero,
                    Some("discard") => WipeMode::Discard,
                    Some(m) => return Err(ServerTaskError::Task(format!("wipe mode {m:?} is not zero or discard"))),
                };
                Ok(Task::Wipe { target, mode })
            }
            k => Err(ServerTaskError::Task(format!("{k:?} is not a task this agent runs"))),
        }
    }

    /// Posts the report, retrying a few times.
    fn post_report(&self, ok: bool, message: &str) {
        let body = serde_json::json!({ "ok": ok, "message": message, "log": super::console::tail() });
        let mut pause = Duration::from_secs(1);
        for attempt in 1..=REPORT_TRIES {
            let res = ureq::post(&self.url("report"))
                .header("Authorization", &format!("Bearer {}", self.token.expose()))
                .header("Content-Type", "application/json")
                .send(body.to_string());
            match res {
                Ok(_) => {
                    tracing::info!("reported to the server: {}", if ok { "done" } else { "failed" });
                    return;
                }
                Err(ureq::Error::StatusCode(code)) if code < 500 => {
                    tracing::error!("the server refused the report: HTTP {code}");
                    return;
                }
                Err(e) if attempt < REPORT_TRIES => {
                    tracing::warn!("reporting to the server ({e}): retrying in {} s", pause.as_secs());
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Err(e) => tracing::error!("could not report to the server: {e}"),
            }
        }
    }
}

/// The server's `detail` from a problem document, else the body.
fn problem_detail(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(200).collect())
}

impl TaskSource for ServerTasks {
    fn next_task(&mut self) -> Option<Task> {
        if std::mem::replace(&mut self.asked, true) {
            return None;
        }
        tracing::info!("asking {} for this node's task", self.base);
        let task = self.fetch().and_then(|t| {
            self.job = Some(t.job);
            self.task(&t)
        });
        match task {
            Ok(task) => {
                tracing::info!("job {}: {task:?}", self.job.unwrap_or_default());
                self.beat =
                    Some(Heartbeats::start(self.url("heartbeat"), self.token.clone(), Arc::clone(&self.progress)));
                Some(task)
            }
            Err(e) => {
                if let (Some(_), ServerTaskError::Task(_)) = (self.job, &e) {
                    // The server gave a task this agent cannot run: say so.
                    self.post_report(false, &chain(&e));
                }
                self.failure = Some(e);
                None
            }
        }
    }

    fn report(&mut self, task: &Task, outcome: &Outcome) {
        if let Some(b) = self.beat.take() {
            b.stop();
        }
        super::task::CmdlineTasks::new(None).report(task, outcome);
        let (ok, message) = match outcome {
            Outcome::Loaded(r) => (
                true,
                format!(
                    "loaded {} chunks ({} already present, {} by multicast, {} over HTTP), {} bytes written in {:.1} s",
                    r.chunks,
                    r.chunks_present,
                    r.chunks_multicast,
                    r.chunks_http,
                    r.bytes_written,
                    r.elapsed.as_secs_f64()
                ),
            ),
            Outcome::Captured(r) => (true, describe_upload(r).lines().next().unwrap_or_default().to_string()),
            Outcome::Wiped(r) => {
                (true, format!("wiped {} bytes ({:?}) in {:.1} s", r.bytes, r.mode, r.elapsed.as_secs_f64()))
            }
            Outcome::Failed(e) => (false, chain(e)),
        };
        self.post_report(ok, &message);
    }

    fn failure(&self) -> Option<String> {
        self.failure.as_ref().map(|e| chain(e))
    }
}

/// A thread posting progress every [`HEARTBEAT_EVERY`] until stopped.
struct Heartbeats {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Heartbeats {
    fn start(url: String, token: AgentToken, progress: Arc<Progress>) -> Heartbeats {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut last = None;
            while !flag.load(Ordering::Relaxed) {
                let (total, done) = (progress.total.load(Ordering::Relaxed), progress.done.load(Ordering::Relaxed));
                let pct = (done.min(total) * 100).checked_div(total).unwrap_or(0) as u8;
                let body = serde_json::json!({ "progress": pct.min(99), "message": "" });
                let req = ureq::post(&url)
                    .header("Authorization", &format!("Bearer {}", token.expose()))
                    .header("Content-Type", "application/json");
                match req.send(body.to_string()) {
                    Ok(_) => {
                        if last != Some(pct) {
                            tracing::debug!("heartbeat: {pct}%");
                            last = Some(pct);
                        }
                    }
                    Err(e) => tracing::warn!("heartbeat: {e}"),
                }
                let until = Instant::now() + HEARTBEAT_EVERY;
                while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Heartbeats { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
