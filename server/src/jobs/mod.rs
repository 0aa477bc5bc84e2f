//! The job runner: drives every unfinished job's nodes from the
//! catalog's rows. Each tick it reads the unfinished nodes
//! (`Catalog::unfinished_steps`), asks [`plan::next`] what each needs,
//! records the step in the catalog first and only then acts (a power
//! command through [`crate::power`], on a blocking thread, bounded by the
//! power time-out). Agents move nodes on through the agent endpoints;
//! the runner only starts them, times them out and gives up on them.
//!
//! **Architecture Invariant:** the runner holds no state that matters.
//! All of it is in the catalog (power cycles spent, when each step
//! began); what it keeps in memory is which power commands are in flight
//! and when it started, so a restarted server resumes every job where the
//! catalog says it is. [`webhook`] follows the catalog's job history the
//! same way.
//!
//! Not here: import jobs (no nodes; nothing fetches the URL yet) stay
//! pending.

pub mod plan;
pub mod webhook;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::execution::NodeStep;
use crate::catalog::{Catalog, JobId, Name};
use crate::metrics::{Counter, Registry};
use crate::power::{self, PowerSettings};
use plan::{Next, Timeouts};

/// How the runner runs (flags of `shoal server`).
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub timeouts: Timeouts,
    pub power: PowerSettings,
    /// How often the catalog is read.
    pub tick: Duration,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig { timeouts: Timeouts::default(), power: PowerSettings::default(), tick: Duration::from_secs(1) }
    }
}

/// The runner over one catalog.
pub struct Runner {
    catalog: Arc<Catalog>,
    config: RunnerConfig,
    /// Nodes with a power command under way.
    busy: Mutex<HashSet<(JobId, Name)>>,
    /// When the runner started (unix seconds): the time-outs' floor.
    started: i64,
    commands: Counter,
    failures: Counter,
    failed_nodes: Counter,
}

impl Runner {
    pub fn new(catalog: Arc<Catalog>, config: RunnerConfig, metrics: &Registry) -> Arc<Runner> {
        Arc::new(Runner {
            catalog,
            config,
            busy: Mutex::new(HashSet::new()),
            started: unix_now(),
            commands: metrics.counter("shoal_power_commands_total", "Power commands the job runner issued"),
            failures: metrics.counter("shoal_power_failures_total", "Power commands that failed"),
            failed_nodes: metrics.counter("shoal_job_nodes_timed_out_total", "Nodes the job runner gave up on"),
        })
    }

    /// Runs until `stop` completes.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tracing::info!(timeouts = ?self.config.timeouts, "job runner started");
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let cat = Arc::clone(&self.catalog);
            let steps = match tokio::task::spawn_blocking(move || cat.unfinished_steps()).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!("job runner: reading the catalog: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::warn!("job runner: catalog task: {e}");
                    continue;
                }
            };
            let now = unix_now();
            for step in steps {
                let next = plan::next(now, self.started, &step, &self.config.timeouts);
                if next != Next::Wait {
                    self.start(step, next);
                }
            }
        }
    }

    /// Starts one step on its own task, unless the node already has one.
    fn start(self: &Arc<Self>, step: NodeStep, next: Next) {
        let key = (step.job, step.node.clone());
        if !self.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let runner = Arc::clone(&me);
            let limit = me.config.power.timeout + Duration::from_secs(5);
            let work = tokio::task::spawn_blocking(move || runner.step(&step, next));
            match tokio::time::timeout(limit, work).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(job = %key.0, node = %key.1, "job runner: step: {e}"),
                Err(_) => tracing::warn!(job = %key.0, node = %key.1, "job runner: a power command overran {limit:?}"),
            }
            me.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        });
    }

    /// One step, blocking: recorded, then done.
    fn step(&self, s: &NodeStep, next: Next) {
        let result = match next {
            Next::Wait => Ok(()),
            Next::Fail(why) => match self.catalog.fail_node(s, &why) {
                Ok(true) => {
                    self.failed_nodes.inc();
                    tracing::warn!(job = %s.job, node = %s.node, "node failed: {why}");
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
            Next::PowerCycle(why) => match self.catalog.record_power_cycle(s, &why) {
                Ok(true) => {
                    tracing::info!(job = %s.job, node = %s.node, attempt = s.attempts + 1, "power cycle: {why}");
                    self.power(s, |p| p.restart())
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
            Next::Reboot => match self.catalog.record_reboot(s) {
                Ok(true) => {
                    tracing::info!(job = %s.job, node = %s.node, "power cycle into the disk");
                    self.power(s, |p| p.set(power::Action::Cycle))
                }
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::warn!(job = %s.job, node = %s.node, "job runner: recording a step: {e}");
        }
    }

    fn power(
        &self,
        s: &NodeStep,
        f: impl FnOnce(&dyn power::Power) -> Result<(), power::PowerError>,
    ) -> Result<(), crate::catalog::CatalogError> {
        let driver = power::for_node(&s.node, s.mac, &s.power, &self.config.power);
        self.commands.inc();
        if let Err(e) = f(driver.as_ref()) {
            self.failures.inc();
            let msg = error_chain(&e);
            tracing::warn!(job = %s.job, node = %s.node, driver = %s.power.driver, "power: {msg}");
            self.catalog.record_power_error(s, &msg)?;
        }
        Ok(())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s += &format!(": {c}");
        src = c.source();
    }
    s
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
