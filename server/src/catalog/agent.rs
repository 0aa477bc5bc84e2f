//! The agent's side of a job: its task, heartbeats and final report,
//! each allowed only with the one-time agent token issued to that node
//! (see [`super::boot`]) and only for the node with that MAC.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::jobs::{event, load, settle, JobNode, JobRecord};
use super::{not_found, now, AgentCaller, Catalog, CatalogError, JobId, JobKind, JobNodeState, Mac, Name, Result};

/// The largest log an agent may report, in bytes.
pub const MAX_LOG: usize = 1 << 20;

/// What the agent on a node is to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentTask {
    pub job: JobId,
    pub kind: JobKind,
    pub node: Name,
    /// For reloads: the image to load; for updates: the image to replace.
    pub image: Option<String>,
    pub params: serde_json::Value,
}

/// An agent's sign of life.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(default)]
    pub progress: u8,
    #[serde(default)]
    pub message: String,
}

/// How the agent's task ended.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub ok: bool,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub log: String,
}

impl Catalog {
    /// The agent's task: what its job wants of its node. The agent token
    /// must be the one issued to the node with this MAC.
    pub fn agent_task(&self, agent: &AgentCaller, mac: &str) -> Result<AgentTask> {
        self.write(|tx| {
            own_node(agent, mac)?;
            let job = load(tx, agent.job)?;
            tx.execute(
                "UPDATE job_nodes SET state = 'running', heartbeat = ?1, since = ?1
                 WHERE job = ?2 AND node = ?3 AND state IN ('queued', 'booting')",
                params![now(), job.id.0, agent.node.as_str()],
            )?;
            tx.execute("UPDATE nodes SET state = 'reloading' WHERE name = ?1", [agent.node.as_str()])?;
            tx.execute(
                "UPDATE jobs SET state = 'running', updated = ?1 WHERE id = ?2 AND state = 'pending'",
                params![now(), job.id.0],
            )?;
            event(tx, job.id, Some(&agent.node), "running", "the agent took its task", "")?;
            Ok(AgentTask {
                job: job.id,
                kind: job.kind,
                node: agent.node.clone(),
                image: job.image,
                params: job.params,
            })
        })
    }

    pub fn agent_heartbeat(&self, agent: &AgentCaller, mac: &str, hb: &Heartbeat) -> Result<JobNode> {
        if hb.progress > 100 {
            return Err(CatalogError::Invalid(format!("progress {} is over 100", hb.progress)));
        }
        self.write(|tx| {
            own_node(agent, mac)?;
            tx.execute(
                "UPDATE job_nodes SET progress = ?1, heartbeat = ?2 WHERE job = ?3 AND node = ?4",
                params![hb.progress, now(), agent.job.0, agent.node.as_str()],
            )?;
            if !hb.message.is_empty() {
                event(tx, agent.job, Some(&agent.node), "progress", &format!("{}%: {}", hb.progress, hb.message), "")?;
            }
            let job = load(tx, agent.job)?;
            job.nodes.into_iter().find(|n| n.node == agent.node).ok_or_else(|| not_found("node in job", &agent.node))
        })
    }

    /// The agent's final word. The token is spent: the node's next boot
    /// goes back to local, and the job ends when its last node reports.
    pub fn agent_report(&self, agent: &AgentCaller, mac: &str, report: &Report) -> Result<JobRecord> {
        if report.log.len() > MAX_LOG {
            return Err(CatalogError::Invalid(format!(
                "the log is {} bytes; the limit is {MAX_LOG}",
                report.log.len()
            )));
        }
        self.write(|tx| {
            own_node(agent, mac)?;
            let job = load(tx, agent.job)?;
            let first_boot: bool =
                tx.query_row("SELECT first_boot FROM jobs WHERE id = ?1", [job.id.0], |r| r.get(0))?;
            // A reload that waits for the first boot from disk is not done
            // until the node checks in (`first_boot_checkin`).
            let wait = report.ok && first_boot && job.kind == JobKind::Reload;
            let (node_state, jn_state) = match (report.ok, wait) {
                (true, true) => ("reloading", JobNodeState::Rebooting),
                (true, false) => ("ready", JobNodeState::Done),
                (false, _) => ("failed", JobNodeState::Failed),
            };
            tx.execute(
                "UPDATE job_nodes SET state = ?1, agent_token = NULL, progress = CASE WHEN ?2 THEN 100 ELSE progress END,
                 heartbeat = ?3, since = ?3 WHERE job = ?4 AND node = ?5",
                params![jn_state, report.ok, now(), job.id.0, agent.node.as_str()],
            )?;
            tx.execute("UPDATE nodes SET state = ?1, boot = 'local' WHERE name = ?2", params![node_state, agent.node.as_str()])?;
            match (job.kind, report.ok) {
                (JobKind::Reload, true) => {
                    tx.execute("UPDATE nodes SET current_image = ?1 WHERE name = ?2", params![job.image, agent.node.as_str()])?;
                    super::metadata::reload_succeeded(tx, job.id, &agent.node)?;
                }
                (JobKind::Wipe, true) => {
                    tx.execute("UPDATE nodes SET current_image = NULL, state = 'free' WHERE name = ?1", [agent.node.as_str()])?;
                }
                _ => {}
            }
            let msg = if wait { format!("{}; waiting for the first boot", report.message) } else { report.message.clone() };
            event(tx, job.id, Some(&agent.node), jn_state.as_str(), msg.trim_start_matches("; "), &report.log)?;
            settle(tx, job.id)?;
            load(tx, job.id)
        })
    }
}

fn own_node(agent: &AgentCaller, mac: &str) -> Result<()> {
    let mac: Mac = super::nodes::parse_mac(mac)?;
    if mac != agent.mac {
        return Err(CatalogError::Forbidden(format!("this agent token is for node {} ({})", agent.node, agent.mac)));
    }
    Ok(())
}
