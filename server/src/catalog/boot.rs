//! Boot decisions: what a node that network-boots should do, for the PXE
//! side (DHCP/iPXE) to ask without knowing about the catalog.
//!
//! **API Boundary:** [`BootDecisions`] is the one thing `pxe` and the
//! iPXE script renderer need from the control plane. Asking for a node in
//! a job issues the node a fresh one-time agent token (its hash replaces
//! any earlier one), which goes on the agent's kernel command line; the
//! agent then reaches the agent endpoints with it, for its own node only.

use rusqlite::{params, OptionalExtension};

use super::images::ImageRecord;
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

impl BootDecisions for Catalog {
    fn decide(&self, mac: Mac) -> Result<BootDecision> {
        let token = Secret::generate().map_err(|e| CatalogError::Random(e.to_string()))?;
        self.write(|tx| {
            let row: Option<(String, Boot, i64, String, String)> = tx
                .query_row(
                    "SELECT n.name, n.boot, n.project, p.name, n.node_type FROM nodes n
                     JOIN projects p ON p.id = n.project WHERE n.mac = ?1",
                    [mac.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((node, boot, pid, pname, node_type)) = row else { return Ok(BootDecision::Unknown) };
            let node = Name::parse(&node)?;
            match boot {
                Boot::Local => Ok(BootDecision::Local),
                Boot::Menu => {
                    let who = ProjectCaller { project: ProjectId(pid), name: Name::parse(&pname)?, admin: false };
                    let node_type = Name::parse(&node_type)?;
                    let mut st = tx.prepare(
                        "SELECT id FROM images i WHERE (i.owner = ?1 OR i.visibility = 'public'
                         OR EXISTS (SELECT 1 FROM image_shares s WHERE s.image = i.id AND s.project = ?1))
                         ORDER BY name, created DESC",
                    )?;
                    let ids: Vec<String> = st.query_map([who.project.0], |r| r.get(0))?.collect::<Result<_, _>>()?;
                    let mut images = Vec::new();
                    for id in ids {
                        let img = super::images::load(tx, &id)?;
                        let fits = img.node_types.is_empty() || img.node_types.contains(&node_type);
                        let valid = img.valid_until.is_none_or(|t| t >= super::now());
                        if fits && valid {
                            images.push(img);
                        }
                    }
                    Ok(BootDecision::Menu { node, images })
                }
                Boot::Agent => {
                    let Some((job, kind)) = super::jobs::node_job(tx, &node)? else {
                        // A stale decision with no job behind it: boot the disk.
                        tx.execute("UPDATE nodes SET boot = 'local' WHERE name = ?1", [node.as_str()])?;
                        return Ok(BootDecision::Local);
                    };
                    tx.execute(
                        "UPDATE job_nodes SET agent_token = ?1, state = CASE WHEN state = 'queued' THEN 'booting' ELSE state END
                         WHERE job = ?2 AND node = ?3",
                        params![&token.hash().0[..], job.0, node.as_str()],
                    )?;
                    super::jobs::event(tx, job, Some(&node), "booting", "agent token issued", "")?;
                    Ok(BootDecision::Agent { node, job, kind, token })
                }
            }
        })
    }
}
