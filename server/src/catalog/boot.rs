//! Boot decisions: what a node that network-boots should do, for the PXE
//! side (DHCP/iPXE) to ask without knowing about the catalog.
//!
//! **API Boundary:** [`BootDecisions`] is the one thing `pxe` and the
//! iPXE script renderer need from the control plane. Looking a node up
//! ([`Catalog::boot_node`], asked on every DHCP packet) changes nothing;
//! rendering an agent boot for a node in a job issues the node a fresh
//! one-time agent token ([`Catalog::issue_agent_token`]; its hash replaces
//! any earlier one), which goes on the agent's kernel command line; the
//! agent then reaches the agent endpoints with it, for its own node only.

use std::net::Ipv4Addr;

use rusqlite::{params, OptionalExtension, Transaction};

use super::images::ImageRecord;
use super::jobs::{NewJob, ReloadRequest};
use super::{Boot, Catalog, CatalogError, JobId, JobKind, Mac, Name, ProjectCaller, ProjectId, Result, Secret};

/// What a node's network boot should do.
#[derive(Debug)]
pub enum BootDecision {
    /// Not a registered node: the PXE side decides (proxy mode ignores it).
    Unknown,
    /// Boot the local disk.
    Local,
    /// Show the image menu: these are the images the node may load.
    Menu { node: Name, images: Vec<ImageRecord> },
    /// Boot the agent for a job, with this one-time token.
    Agent { node: Name, job: JobId, kind: JobKind, token: Secret },
}

/// Asked by the PXE side for each booting node.
pub trait BootDecisions: Send + Sync {
    fn decide(&self, mac: Mac) -> Result<BootDecision>;
}

/// A registered node as network boot sees it.
#[derive(Debug)]
pub struct BootNode {
    pub name: Name,
    pub mac: Mac,
    pub ip: Option<Ipv4Addr>,
    /// The agent's disk.
    pub disk: String,
    pub boot: BootView,
}

/// A node's boot decision, read without side effects.
#[derive(Debug)]
pub enum BootView {
    Local,
    /// The images its menu offers: those its project may read, that run
    /// on its node type and have not expired.
    Menu(Vec<ImageRecord>),
    /// The node is in an unfinished job: the agent runs it.
    Job {
        job: JobId,
        kind: JobKind,
    },
}

struct Row {
    name: Name,
    boot: Boot,
    project: ProjectCaller,
    node_type: Name,
    ip: Option<String>,
    disk: String,
}

type RowColumns = (String, Boot, i64, String, String, Option<String>, String);

fn row(tx: &Transaction<'_>, mac: Mac) -> Result<Option<Row>> {
    let r: Option<RowColumns> = tx
        .query_row(
            "SELECT n.name, n.boot, n.project, p.name, n.node_type, n.ip, n.disk FROM nodes n
             JOIN projects p ON p.id = n.project WHERE n.mac = ?1",
            [mac.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .optional()?;
    let Some((name, boot, pid, pname, node_type, ip, disk)) = r else { return Ok(None) };
    Ok(Some(Row {
        name: Name::parse(&name)?,
        boot,
        project: ProjectCaller { project: ProjectId(pid), name: Name::parse(&pname)?, admin: false },
        node_type: Name::parse(&node_type)?,
        ip,
        disk,
    }))
}

/// The images `row`'s menu offers.
fn menu_images(tx: &Transaction<'_>, row: &Row) -> Result<Vec<ImageRecord>> {
    let mut st = tx.prepare(
        "SELECT id FROM images i WHERE (i.owner = ?1 OR i.visibility = 'public'
         OR EXISTS (SELECT 1 FROM image_shares s WHERE s.image = i.id AND s.project = ?1))
         ORDER BY name, created DESC",
    )?;
    let ids: Vec<String> = st.query_map([row.project.project.0], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let mut images = Vec::new();
    for id in ids {
        let img = super::images::load(tx, &id)?;
        let fits = img.node_types.is_empty() || img.node_types.contains(&row.node_type);
        let valid = img.valid_until.is_none_or(|t| t >= super::now());
        if fits && valid {
            images.push(img);
        }
    }
    Ok(images)
}

fn view(tx: &Transaction<'_>, row: &Row) -> Result<BootView> {
    Ok(match row.boot {
        Boot::Local => BootView::Local,
        Boot::Menu => BootView::Menu(menu_images(tx, row)?),
        // A stale decision with no job behind it boots the disk.
        Boot::Agent => match super::jobs::node_job(tx, &row.name)? {
            Some((job, kind)) => BootView::Job { job, kind },
            None => BootView::Local,
        },
    })
}

/// Records a fresh token for `node`'s part in `job`; the older one, if
/// any, stops working.
fn issue(tx: &Transaction<'_>, node: &Name, job: JobId) -> Result<Secret> {
    let token = Secret::generate().map_err(|e| CatalogError::Random(e.to_string()))?;
    tx.execute(
        "UPDATE job_nodes SET agent_token = ?1, state = CASE WHEN state = 'queued' THEN 'booting' ELSE state END
         WHERE job = ?2 AND node = ?3",
        params![&token.hash().0[..], job.0, node.as_str()],
    )?;
    super::jobs::event(tx, job, Some(node), "booting", "agent token issued", "")?;
    Ok(token)
}

impl Catalog {
    /// The registered node with this MAC and its decision; changes nothing.
    pub fn boot_node(&self, mac: Mac) -> Result<Option<BootNode>> {
        self.read(|tx| {
            let Some(r) = row(tx, mac)? else { return Ok(None) };
            let boot = view(tx, &r)?;
            Ok(Some(BootNode {
                ip: r.ip.as_deref().and_then(|s| s.parse().ok()),
                name: r.name,
                mac,
                disk: r.disk,
                boot,
            }))
        })
    }

    /// A one-time agent token for the node with this MAC, for the job it
    /// is in; `None` when it is in none.
    pub fn issue_agent_token(&self, mac: Mac) -> Result<Option<(JobId, Secret)>> {
        self.write(|tx| {
            let Some(r) = row(tx, mac)? else { return Ok(None) };
            match view(tx, &r)? {
                BootView::Job { job, .. } => Ok(Some((job, issue(tx, &r.name, job)?))),
                _ => Ok(None),
            }
        })
    }

    /// A choice of `image` from the node's menu: a reload job of that
    /// node, made for its project (the same checks as an API request),
    /// and the agent token for it. Only images the menu offers.
    pub fn menu_reload(&self, mac: Mac, image: &str) -> Result<(JobId, Secret)> {
        let (who, node) = self.read(|tx| {
            let r = row(tx, mac)?.ok_or_else(|| super::not_found("node with MAC", mac.to_string()))?;
            if r.boot != Boot::Menu {
                return Err(CatalogError::Invalid(format!("node {} is not at its menu", r.name)));
            }
            let offered = |i: &ImageRecord| i.id == image || format!("{}:{}", i.name, i.version) == image;
            if !menu_images(tx, &r)?.iter().any(offered) {
                return Err(CatalogError::Forbidden(format!("node {}'s menu does not offer {image}", r.name)));
            }
            Ok((r.project, r.name))
        })?;
        let job = self.create_job(
            &who,
            &NewJob::Reload(ReloadRequest { nodes: vec![node.clone()], image: Some(image.into()), first_boot: None }),
        )?;
        let token = self.write(|tx| issue(tx, &node, job.id))?;
        Ok((job.id, token))
    }
}

impl Catalog {
    /// Whether `ip` is some node's fixed address.
    pub fn ip_reserved(&self, ip: Ipv4Addr) -> Result<bool> {
        self.read(|tx| {
            Ok(tx.query_row("SELECT 1 FROM nodes WHERE ip = ?1", [ip.to_string()], |_| Ok(())).optional()?.is_some())
        })
    }
}

impl BootDecisions for Catalog {
    fn decide(&self, mac: Mac) -> Result<BootDecision> {
        let Some(node) = self.boot_node(mac)? else { return Ok(BootDecision::Unknown) };
        Ok(match node.boot {
            BootView::Local => BootDecision::Local,
            BootView::Menu(images) => BootDecision::Menu { node: node.name, images },
            BootView::Job { kind, .. } => match self.issue_agent_token(mac)? {
                Some((job, token)) => BootDecision::Agent { node: node.name, job, kind, token },
                None => BootDecision::Local,
            },
        })
    }
}
