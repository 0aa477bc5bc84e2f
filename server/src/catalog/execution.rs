//! The job runner's side of jobs (see `crate::jobs`): what is unfinished,
//! and the steps the runner records as it drives each node: a power
//! cycle to boot the agent, a reboot after the report, a failure, and
//! the first-boot check-in the metadata service reports.
//!
//! Everything the runner needs to carry on lives here, in the catalog,
//! so a restarted server resumes each job from its rows. Each step is
//! recorded only if the node is still where the runner saw it (a
//! compare-and-set on its state and attempt count), so an agent's call
//! that lands in between wins and the runner's stale step is dropped.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::jobs::{event, settle};
use super::nodes::{parse_mac, Power};
use super::{not_found, now, Catalog, JobId, JobKind, JobNodeState, Mac, Name, Result};

/// One unfinished node of an unfinished job, as the runner sees it.
#[derive(Clone, Debug)]
pub struct NodeStep {
    pub job: JobId,
    pub kind: JobKind,
    pub node: Name,
    pub mac: Mac,
    pub power: Power,
    pub state: JobNodeState,
    /// Power cycles spent so far to boot the agent.
    pub attempts: u32,
    /// When the node's current step began (the last power cycle, the
    /// task taken, the report), unix seconds.
    pub since: Option<i64>,
    /// The agent's last sign of life.
    pub heartbeat: Option<i64>,
    /// Whether the runner power-cycled the node after its report.
    pub rebooted: bool,
    /// Whether the last power cycle's command failed.
    pub power_failed: bool,
}

/// One history row with its job, in the order rows were written (for the
/// webhook).
#[derive(Clone, Debug, Serialize)]
pub struct JobEventRow {
    /// The row's id: increasing, so a follower asks for ids after the last.
    pub id: i64,
    pub job: JobId,
    pub at: i64,
    pub node: Option<Name>,
    pub state: String,
    pub message: String,
}

impl Catalog {
    /// Every node still at work in an unfinished job, by job then node.
    pub fn unfinished_steps(&self) -> Result<Vec<NodeStep>> {
        self.read(|tx| {
            let sql = format!(
                "SELECT jn.job, j.kind, jn.node, n.mac, n.power_driver, n.power_address, jn.state, jn.attempts,
                        jn.since, jn.heartbeat, jn.rebooted, jn.power_failed
                 FROM job_nodes jn JOIN jobs j ON j.id = jn.job JOIN nodes n ON n.name = jn.node
                 WHERE jn.state IN {} AND j.state IN ('pending', 'running') ORDER BY jn.job, jn.node",
                super::model::ACTIVE_NODE_STATES
            );
            let mut st = tx.prepare(&sql)?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    Power { driver: r.get(4)?, address: r.get(5)? },
                    r.get(6)?,
                    r.get::<_, u32>(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ))
            })?;
            rows.map(|r| {
                let (job, kind, node, mac, power, state, attempts, since, heartbeat, rebooted, power_failed) = r?;
                Ok(NodeStep {
                    job: JobId(job),
                    kind,
                    node: Name::parse(&node)?,
                    mac: parse_mac(&mac)?,
                    power,
                    state,
                    attempts,
                    since,
                    heartbeat,
                    rebooted,
                    power_failed,
                })
            })
            .collect()
        })
    }

    /// Records the power cycle that boots `step`'s node into the agent
    /// (attempt `step.attempts + 1`), before it is made, so a restart
    /// never forgets one. False if the node has moved on meanwhile.
    pub fn record_power_cycle(&self, step: &NodeStep, why: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE job_nodes SET attempts = attempts + 1, since = ?1, power_failed = 0
                 WHERE job = ?2 AND node = ?3 AND state IN ('queued', 'booting') AND attempts = ?4",
                params![now(), step.job.0, step.node.as_str(), step.attempts],
            )?;
            if n == 1 {
                let msg = format!("power cycle {} ({why})", step.attempts + 1);
                event(tx, step.job, Some(&step.node), "power", &msg, "")?;
                tx.execute(
                    "UPDATE jobs SET state = 'running', updated = ?1 WHERE id = ?2 AND state = 'pending'",
                    params![now(), step.job.0],
                )?;
            }
            Ok(n == 1)
        })
    }

    /// Records the power cycle after a report, for a node that did not
    /// come back from its disk by itself. False if it has moved on.
    pub fn record_reboot(&self, step: &NodeStep) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE job_nodes SET rebooted = 1 WHERE job = ?1 AND node = ?2 AND state = 'rebooting' AND rebooted = 0",
                params![step.job.0, step.node.as_str()],
            )?;
            if n == 1 {
                event(tx, step.job, Some(&step.node), "power", "no first boot yet: power cycle into the disk", "")?;
            }
            Ok(n == 1)
        })
    }

    /// Notes a power command that failed, for the attempt after
    /// `step`'s (the runner retries it sooner than a silent agent, or
    /// gives up by its own rules).
    pub fn record_power_error(&self, step: &NodeStep, error: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE job_nodes SET power_failed = 1 WHERE job = ?1 AND node = ?2 AND attempts = ?3",
                params![step.job.0, step.node.as_str(), step.attempts + 1],
            )?;
            event(tx, step.job, Some(&step.node), "power-error", error, "")
        })
    }

    /// Fails `step`'s node for `reason`, if it is still in the state the
    /// runner saw: its next boot goes back to local, its agent token stops
    /// working, and the job ends if it was the last node at work. The
    /// node's history (and any log its agent sent) stays in the job.
    pub fn fail_node(&self, step: &NodeStep, reason: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE job_nodes SET state = 'failed', agent_token = NULL, since = ?1
                 WHERE job = ?2 AND node = ?3 AND state = ?4 AND attempts = ?5",
                params![now(), step.job.0, step.node.as_str(), step.state, step.attempts],
            )?;
            if n == 1 {
                tx.execute("UPDATE nodes SET state = 'failed', boot = 'local' WHERE name = ?1", [step.node.as_str()])?;
                event(tx, step.job, Some(&step.node), "failed", reason, "")?;
                settle(tx, step.job)?;
            }
            Ok(n == 1)
        })
    }

    /// The metadata service's word that `node` booted its disk as
    /// instance `instance_id`. A reload waiting for this (state
    /// `rebooting`) is then done for that node and the node is ready; at
    /// any other time the check-in changes nothing. Unknown nodes are an
    /// error.
    pub fn first_boot_checkin(&self, node: &Name, instance_id: &str) -> Result<()> {
        self.write(|tx| {
            let known = tx.query_row("SELECT 1 FROM nodes WHERE name = ?1", [node.as_str()], |_| Ok(())).optional()?;
            if known.is_none() {
                return Err(not_found("node", node));
            }
            let job: Option<i64> = tx
                .query_row(
                    "SELECT job FROM job_nodes WHERE node = ?1 AND state = 'rebooting' LIMIT 1",
                    [node.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(job) = job.map(JobId) else { return Ok(()) };
            tx.execute(
                "UPDATE job_nodes SET state = 'done', checkin = ?1, instance_id = ?2, since = ?1
                 WHERE job = ?3 AND node = ?4",
                params![now(), instance_id, job.0, node.as_str()],
            )?;
            tx.execute("UPDATE nodes SET state = 'ready' WHERE name = ?1", [node.as_str()])?;
            event(tx, job, Some(node), "done", &format!("first boot checked in as instance {instance_id}"), "")?;
            settle(tx, job)
        })
    }

    /// History rows written after row `after`, oldest first, at most
    /// `limit`.
    pub fn job_events_after(&self, after: i64, limit: u32) -> Result<Vec<JobEventRow>> {
        self.read(|tx| {
            let mut st = tx.prepare(
                "SELECT id, job, at, node, state, message FROM job_events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Option<String>>(3)?, r.get(4)?, r.get(5)?))
            })?;
            rows.map(|r| {
                let (id, job, at, node, state, message) = r?;
                let node = node.map(|n| Name::parse(&n)).transpose()?;
                Ok(JobEventRow { id, job: JobId(job), at, node, state, message })
            })
            .collect()
        })
    }

    /// The newest history row's id (0 when there is none).
    pub fn last_job_event(&self) -> Result<i64> {
        self.read(|tx| Ok(tx.query_row("SELECT coalesce(max(id), 0) FROM job_events", [], |r| r.get(0))?))
    }
}
