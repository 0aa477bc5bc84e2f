//! Jobs: reload, capture, wipe and import requests, their per-node
//! progress and history, and cancellation (the agent's side is in
//! [`super::agent`]).
//!
//! Creating a job records it, marks its nodes' next boot as `agent` and
//! their state `booting`, all in one transaction, or nothing at all. The
//! job runner (`crate::jobs`) then power-cycles the nodes and times them
//! out through [`super::execution`]; the agents move them on through
//! [`super::agent`] (see [`super::boot`] for how an agent gets its
//! one-time token).

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::images::{owned, readable, ImageRecord};
use super::nodes::{active_job, held, NodeRecord};
use super::{
    not_found, now, Catalog, CatalogError, JobId, JobKind, JobNodeState, JobState, Name, ProjectCaller, Result,
};

/// A job request, by kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NewJob {
    Reload(ReloadRequest),
    Capture(CaptureRequest),
    Wipe(WipeRequest),
}

/// Load `image` (or the project's default image) onto `nodes`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadRequest {
    pub nodes: Vec<Name>,
    #[serde(default)]
    pub image: Option<String>,
    /// Wait for each node's first boot from its disk to check in (with
    /// the metadata service) before it is done. Default: the server's
    /// `--first-boot-wait` setting.
    #[serde(default)]
    pub first_boot: Option<bool>,
}

/// Make an image from `node`'s disk: a new image `name` (optionally
/// derived from `base`), or, with `update`, a new version of an image the
/// project owns.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    pub node: Name,
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub update: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WipeRequest {
    pub nodes: Vec<Name>,
}

/// Bring in an image file (raw, qcow2) from a URL.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub name: Name,
    #[serde(default)]
    pub version: Option<String>,
    pub url: String,
    #[serde(default)]
    pub description: String,
}

/// One node's part in a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobNode {
    pub node: Name,
    pub state: JobNodeState,
    /// Percent, as the agent last reported it.
    pub progress: u8,
    pub heartbeat: Option<i64>,
}

/// One history row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobEvent {
    pub at: i64,
    pub node: Option<Name>,
    pub state: String,
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub log: String,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: JobKind,
    pub state: JobState,
    pub project: Name,
    pub image: Option<String>,
    pub params: serde_json::Value,
    pub created: i64,
    pub updated: i64,
    pub nodes: Vec<JobNode>,
    pub history: Vec<JobEvent>,
}

pub(crate) fn event(
    tx: &Transaction<'_>,
    job: JobId,
    node: Option<&Name>,
    state: &str,
    msg: &str,
    log: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO job_events (job, node, at, state, message, log) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![job.0, node.map(|n| n.as_str()), now(), state, msg, log],
    )?;
    Ok(())
}

pub(crate) fn load(tx: &Transaction<'_>, id: JobId) -> Result<JobRecord> {
    let row = tx
        .query_row(
            "SELECT j.kind, j.state, p.name, j.image, j.params, j.created, j.updated
             FROM jobs j JOIN projects p ON p.id = j.project WHERE j.id = ?1",
            [id.0],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get::<_, String>(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()?;
    let Some((kind, state, project, image, params, created, updated)) = row else {
        return Err(not_found("job", id));
    };
    let mut st = tx.prepare("SELECT node, state, progress, heartbeat FROM job_nodes WHERE job = ?1 ORDER BY node")?;
    let nodes = st
        .query_map([id.0], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .map(|r| {
            let (node, state, progress, heartbeat) = r?;
            Ok(JobNode { node: Name::parse(&node)?, state, progress, heartbeat })
        })
        .collect::<Result<_>>()?;
    let mut st = tx.prepare("SELECT at, node, state, message, log FROM job_events WHERE job = ?1 ORDER BY id")?;
    let history = st
        .query_map([id.0], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .map(|r| {
            let (at, node, state, message, log) = r?;
            Ok(JobEvent { at, node: node.map(|n| Name::parse(&n)).transpose()?, state, message, log })
        })
        .collect::<Result<_>>()?;
    Ok(JobRecord {
        id,
        kind,
        state,
        project: Name::parse(&project)?,
        image,
        params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
        created,
        updated,
        nodes,
        history,
    })
}

fn visible(tx: &Transaction<'_>, who: &ProjectCaller, id: JobId) -> Result<JobRecord> {
    let job = load(tx, id)?;
    if job.project != who.name && !who.admin {
        return Err(not_found("job", id));
    }
    Ok(job)
}

/// The nodes of a request, each held by `who` and in no unfinished job.
fn free_nodes(tx: &Transaction<'_>, who: &ProjectCaller, names: &[Name]) -> Result<Vec<NodeRecord>> {
    if names.is_empty() {
        return Err(CatalogError::Invalid("name at least one node".into()));
    }
    let unique: BTreeSet<&Name> = names.iter().collect();
    let mut out = Vec::new();
    for n in unique {
        let node = held(tx, who, n.as_str())?;
        if let Some(job) = node.job {
            return Err(CatalogError::Busy { node: node.name, job });
        }
        out.push(node);
    }
    Ok(out)
}

fn check_loadable(img: &ImageRecord, nodes: &[NodeRecord]) -> Result<()> {
    if let Some(at) = img.valid_until {
        if now() > at {
            return Err(CatalogError::Expired { image: img.name.clone(), at });
        }
    }
    for n in nodes {
        if !img.node_types.is_empty() && !img.node_types.contains(&n.node_type) {
            return Err(CatalogError::WrongNodeType {
                image: img.name.clone(),
                types: img.node_types.iter().map(Name::as_str).collect::<Vec<_>>().join(", "),
                node: n.name.clone(),
                node_type: n.node_type.clone(),
            });
        }
    }
    Ok(())
}

fn insert(
    tx: &Transaction<'_>,
    who: &ProjectCaller,
    kind: JobKind,
    image: Option<&str>,
    params: serde_json::Value,
    nodes: &[NodeRecord],
    first_boot: bool,
) -> Result<JobRecord> {
    let t = now();
    tx.execute(
        "INSERT INTO jobs (kind, state, project, image, params, created, updated, first_boot)
         VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?5, ?6)",
        params![kind, who.project.0, image, params.to_string(), t, first_boot],
    )?;
    let job = JobId(tx.last_insert_rowid());
    event(tx, job, None, "pending", &format!("{kind} job created by project {}", who.name), "")?;
    for n in nodes {
        tx.execute(
            "INSERT INTO job_nodes (job, node, state, since) VALUES (?1, ?2, 'queued', ?3)",
            params![job.0, n.name.as_str(), t],
        )?;
        tx.execute("UPDATE nodes SET boot = 'agent', state = 'booting' WHERE name = ?1", [n.name.as_str()])?;
        event(tx, job, Some(&n.name), "queued", "next boot: agent", "")?;
    }
    load(tx, job)
}

/// Ends the job once none of its nodes is still at work.
pub(crate) fn settle(tx: &Transaction<'_>, job: JobId) -> Result<()> {
    let (active, failed, total): (i64, i64, i64) = tx.query_row(
        &format!(
            "SELECT sum(state IN {}), sum(state = 'failed'), count(*) FROM job_nodes WHERE job = ?1",
            super::model::ACTIVE_NODE_STATES
        ),
        [job.0],
        |r| Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get::<_, Option<i64>>(1)?.unwrap_or(0), r.get(2)?)),
    )?;
    if total == 0 || active > 0 {
        return Ok(());
    }
    let state = if failed > 0 { JobState::Failed } else { JobState::Succeeded };
    let n = tx.execute(
        "UPDATE jobs SET state = ?1, updated = ?2 WHERE id = ?3 AND state IN ('pending', 'running')",
        params![state, now(), job.0],
    )?;
    if n == 1 {
        event(tx, job, None, state.as_str(), &format!("{failed} of {total} nodes failed"), "")?;
    }
    Ok(())
}

impl Catalog {
    pub fn create_job(&self, who: &ProjectCaller, req: &NewJob) -> Result<JobRecord> {
        match req {
            NewJob::Reload(r) => self.write(|tx| {
                let nodes = free_nodes(tx, who, &r.nodes)?;
                let what = match &r.image {
                    Some(i) => i.clone(),
                    None => tx
                        .query_row("SELECT default_image FROM projects WHERE id = ?1", [who.project.0], |r| {
                            r.get::<_, Option<String>>(0)
                        })?
                        .ok_or_else(|| CatalogError::NoDefaultImage(who.name.clone()))?,
                };
                let img = readable(tx, who, &what)?;
                check_loadable(&img, &nodes)?;
                let params = serde_json::json!({"image": img.id, "name": img.name, "version": img.version});
                insert(tx, who, JobKind::Reload, Some(&img.id), params, &nodes, r.first_boot.unwrap_or(false))
            }),
            NewJob::Wipe(w) => self.write(|tx| {
                let nodes = free_nodes(tx, who, &w.nodes)?;
                insert(tx, who, JobKind::Wipe, None, serde_json::json!({}), &nodes, false)
            }),
            NewJob::Capture(c) => self.create_capture(who, c),
        }
    }

    /// A capture job: a new image from a node (derived from `base` if
    /// given, which the project must be able to read) or, with `update`,
    /// a new version of an image the project owns.
    pub fn create_capture(&self, who: &ProjectCaller, c: &CaptureRequest) -> Result<JobRecord> {
        self.write(|tx| {
            let nodes = free_nodes(tx, who, std::slice::from_ref(&c.node))?;
            let (image, name) = match (&c.update, &c.name) {
                (Some(u), _) => {
                    let img = owned(tx, who, u)?;
                    (Some(img.id), img.name)
                }
                (None, Some(name)) => {
                    let other: Option<String> = tx
                        .query_row(
                            "SELECT p.name FROM images i JOIN projects p ON p.id = i.owner
                             WHERE i.name = ?1 AND i.owner != ?2 LIMIT 1",
                            params![name.as_str(), who.project.0],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(owner) = other {
                        return Err(CatalogError::Exists {
                            what: "image",
                            name: format!("{name} (owned by project {owner}; pick another name)"),
                        });
                    }
                    let base = c.base.as_deref().map(|b| readable(tx, who, b)).transpose()?;
                    (base.map(|b| b.id), name.to_string())
                }
                (None, None) => {
                    return Err(CatalogError::Invalid("give the new image's \"name\", or \"update\"".into()))
                }
            };
            let mut params = serde_json::to_value(c).map_err(|e| CatalogError::Invalid(e.to_string()))?;
            params["name"] = name.into();
            insert(tx, who, JobKind::Capture, image.as_deref(), params, &nodes, false)
        })
    }

    /// An import job (no nodes; the server fetches the file).
    pub fn create_import(&self, who: &ProjectCaller, i: &ImportRequest) -> Result<JobRecord> {
        if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
            return Err(CatalogError::Invalid(format!("url {:?}: only http and https are supported", i.url)));
        }
        let params = serde_json::to_value(i).map_err(|e| CatalogError::Invalid(e.to_string()))?;
        self.write(|tx| insert(tx, who, JobKind::Import, None, params, &[], false))
    }

    pub fn show_job(&self, who: &ProjectCaller, id: JobId) -> Result<JobRecord> {
        self.read(|tx| visible(tx, who, id))
    }

    /// The caller's project's jobs (all for an admin), newest first,
    /// without their history.
    pub fn list_jobs(&self, who: &ProjectCaller) -> Result<Vec<JobRecord>> {
        self.read(|tx| {
            let mut st = tx.prepare("SELECT id FROM jobs WHERE ?1 OR project = ?2 ORDER BY id DESC LIMIT 500")?;
            let ids: Vec<i64> =
                st.query_map(params![who.admin, who.project.0], |r| r.get(0))?.collect::<Result<_, _>>()?;
            ids.into_iter().map(|id| load(tx, JobId(id)).map(|j| JobRecord { history: Vec::new(), ..j })).collect()
        })
    }

    /// Cancels an unfinished job: its nodes' next boot goes back to local
    /// and their agent tokens stop working.
    pub fn cancel_job(&self, who: &ProjectCaller, id: JobId) -> Result<JobRecord> {
        self.write(|tx| {
            let job = visible(tx, who, id)?;
            if !job.state.is_active() {
                return Err(CatalogError::Finished { job: id, state: job.state });
            }
            for n in job.nodes.iter().filter(|n| n.state.is_active()) {
                // A node whose agent had started may hold half an image;
                // one that reported holds the whole image.
                let state = match n.state {
                    JobNodeState::Running => "failed",
                    JobNodeState::Rebooting => "ready",
                    _ => "free",
                };
                tx.execute(
                    "UPDATE nodes SET boot = 'local', state = ?1 WHERE name = ?2",
                    params![state, n.node.as_str()],
                )?;
                tx.execute(
                    "UPDATE job_nodes SET state = 'cancelled', agent_token = NULL WHERE job = ?1 AND node = ?2",
                    params![id.0, n.node.as_str()],
                )?;
                event(tx, id, Some(&n.node), "cancelled", "", "")?;
            }
            tx.execute("UPDATE jobs SET state = 'cancelled', updated = ?1 WHERE id = ?2", params![now(), id.0])?;
            event(tx, id, None, "cancelled", &format!("cancelled by project {}", who.name), "")?;
            load(tx, id)
        })
    }

    /// How many jobs are in each state (for `/metrics` and the status).
    pub fn job_counts(&self) -> Result<Vec<(JobState, u64)>> {
        self.read(|tx| {
            JobState::ALL
                .iter()
                .map(|s| {
                    Ok((
                        *s,
                        tx.query_row("SELECT count(*) FROM jobs WHERE state = ?1", [s], |r| r.get::<_, i64>(0))? as u64,
                    ))
                })
                .collect()
        })
    }
}

/// The unfinished job of `node` and its kind, for the boot decision.
pub(crate) fn node_job(tx: &Transaction<'_>, node: &Name) -> Result<Option<(JobId, JobKind)>> {
    let Some(job) = active_job(tx, node)? else { return Ok(None) };
    let kind = tx.query_row("SELECT kind FROM jobs WHERE id = ?1", [job.0], |r| r.get(0))?;
    Ok(Some((job, kind)))
}
