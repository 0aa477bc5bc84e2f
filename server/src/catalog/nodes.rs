//! Nodes: registration, listing and the boot decision an operator may set.
//! A node belongs to the project that registered it (an admin may
//! register it into any project); other projects do not see it.

use std::net::Ipv4Addr;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::model::ACTIVE_NODE_STATES;
use super::projects::project_id;
use super::{
    not_found, now, Boot, Catalog, CatalogError, JobId, Mac, Name, NodeState, PowerDriver, ProjectCaller, Result,
};

/// How a node's power is switched.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Power {
    pub driver: PowerDriver,
    /// BMC address, QMP socket, or empty for `manual`.
    #[serde(default)]
    pub address: String,
}

/// A registration request.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    pub name: Name,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub node_type: Name,
    pub power: Power,
    /// The project to register it into (admins only; default: the caller's).
    #[serde(default)]
    pub project: Option<Name>,
    /// Its fixed IPv4 address, if it has one.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The disk its agent loads, captures and wipes (default `/dev/sda`).
    #[serde(default)]
    pub disk: Option<String>,
}

/// The agent's disk when registration names none.
pub const DEFAULT_DISK: &str = "/dev/sda";

/// A node as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: Name,
    pub mac: String,
    pub node_type: Name,
    pub power: Power,
    pub project: Name,
    pub boot: Boot,
    /// The image the node last loaded (id), if known.
    pub current_image: Option<String>,
    pub state: NodeState,
    /// The unfinished job the node is in, if any.
    pub job: Option<JobId>,
    pub ip: Option<Ipv4Addr>,
    pub disk: String,
}

/// A disk path goes onto the agent's kernel command line: only plain
/// `/dev/` paths are taken.
fn check_disk(disk: &str) -> Result<()> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/_-.".contains(&b);
    match disk.strip_prefix("/dev/") {
        Some(rest) if !rest.is_empty() && disk.len() <= 64 && rest.bytes().all(plain) && !rest.contains("..") => Ok(()),
        _ => Err(CatalogError::Invalid(format!("invalid disk {disk:?}: expected a /dev/ path such as /dev/sda"))),
    }
}

pub(crate) fn parse_mac(s: &str) -> Result<Mac> {
    Mac::parse(s).ok_or_else(|| CatalogError::Invalid(format!("invalid MAC address {s:?}: expected aa:bb:cc:dd:ee:ff")))
}

/// The unfinished job `node` is in.
pub(crate) fn active_job(tx: &Transaction<'_>, node: &Name) -> Result<Option<JobId>> {
    let sql = format!("SELECT job FROM job_nodes WHERE node = ?1 AND state IN {ACTIVE_NODE_STATES} LIMIT 1");
    Ok(tx.query_row(&sql, [node.as_str()], |r| r.get(0)).optional()?.map(JobId))
}

pub(crate) fn load(tx: &Transaction<'_>, name: &str) -> Result<NodeRecord> {
    let row = tx
        .query_row(
            "SELECT n.name, n.mac, n.node_type, n.power_driver, n.power_address, p.name, n.boot,
                    n.current_image, n.state, n.ip, n.disk
             FROM nodes n JOIN projects p ON p.id = n.project WHERE n.name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    Power { driver: r.get(3)?, address: r.get(4)? },
                    r.get::<_, String>(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, String>(10)?,
                ))
            },
        )
        .optional()?;
    let Some((name, mac, node_type, power, project, boot, current_image, state, ip, disk)) = row else {
        return Err(not_found("node", name));
    };
    let name = Name::parse(&name)?;
    let job = active_job(tx, &name)?;
    Ok(NodeRecord {
        name,
        mac,
        node_type: Name::parse(&node_type)?,
        power,
        project: Name::parse(&project)?,
        boot,
        current_image,
        state,
        job,
        ip: ip.and_then(|s| s.parse().ok()),
        disk,
    })
}

/// The node `name`, which must belong to `who`'s project (or `who` be an
/// admin); others' nodes are not found.
pub(crate) fn held(tx: &Transaction<'_>, who: &ProjectCaller, name: &str) -> Result<NodeRecord> {
    let n = load(tx, name)?;
    if n.project != who.name && !who.admin {
        return Err(not_found("node", name));
    }
    Ok(n)
}

impl Catalog {
    pub fn register_node(&self, who: &ProjectCaller, new: &NewNode) -> Result<NodeRecord> {
        let mac = parse_mac(&new.mac)?;
        self.write(|tx| {
            let project = match &new.project {
                Some(p) if *p != who.name && !who.admin => {
                    return Err(CatalogError::Forbidden(format!(
                        "only an admin token may register a node into another project ({p})"
                    )))
                }
                Some(p) => project_id(tx, p)?,
                None => who.project,
            };
            let exists =
                |sql: &str, v: &str| -> Result<bool> { Ok(tx.query_row(sql, [v], |_| Ok(())).optional()?.is_some()) };
            if exists("SELECT 1 FROM nodes WHERE name = ?1", new.name.as_str())? {
                return Err(CatalogError::Exists { what: "node", name: new.name.to_string() });
            }
            if exists("SELECT 1 FROM nodes WHERE mac = ?1", &mac.to_string())? {
                return Err(CatalogError::Exists { what: "node with MAC", name: mac.to_string() });
            }
            if let Some(ip) = new.ip {
                if exists("SELECT 1 FROM nodes WHERE ip = ?1", &ip.to_string())? {
                    return Err(CatalogError::Exists { what: "node with address", name: ip.to_string() });
                }
            }
            let disk = new.disk.as_deref().unwrap_or(DEFAULT_DISK);
            check_disk(disk)?;
            tx.execute("INSERT INTO node_types (name) VALUES (?1) ON CONFLICT DO NOTHING", [new.node_type.as_str()])?;
            tx.execute(
                "INSERT INTO nodes (name, mac, node_type, power_driver, power_address, project, created, ip, disk)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    new.name.as_str(),
                    mac.to_string(),
                    new.node_type.as_str(),
                    new.power.driver,
                    new.power.address,
                    project.0,
                    now(),
                    new.ip.map(|a| a.to_string()),
                    disk
                ],
            )?;
            load(tx, new.name.as_str())
        })
    }

    /// The caller's project's nodes (every node for an admin), by name.
    pub fn list_nodes(&self, who: &ProjectCaller) -> Result<Vec<NodeRecord>> {
        self.read(|tx| {
            let mut st = tx.prepare("SELECT name FROM nodes WHERE ?1 OR project = ?2 ORDER BY name")?;
            let names: Vec<String> =
                st.query_map(params![who.admin, who.project.0], |r| r.get(0))?.collect::<Result<_, _>>()?;
            names.iter().map(|n| load(tx, n)).collect()
        })
    }

    pub fn show_node(&self, who: &ProjectCaller, name: &str) -> Result<NodeRecord> {
        self.read(|tx| held(tx, who, name))
    }

    /// Sets what the node's next boot does: `local` or `menu`. `agent`
    /// is the jobs' to set, and a node in a job keeps its decision.
    pub fn set_boot(&self, who: &ProjectCaller, name: &str, boot: Boot) -> Result<NodeRecord> {
        if boot == Boot::Agent {
            return Err(CatalogError::Invalid(
                "boot \"agent\" is set by jobs: create a reload, capture or wipe job".into(),
            ));
        }
        self.write(|tx| {
            let n = held(tx, who, name)?;
            if let Some(job) = n.job {
                return Err(CatalogError::Busy { node: n.name, job });
            }
            tx.execute("UPDATE nodes SET boot = ?1 WHERE name = ?2", params![boot, name])?;
            load(tx, name)
        })
    }

    /// How many nodes are in each state (for `/metrics` and the status).
    pub fn node_counts(&self) -> Result<Vec<(NodeState, u64)>> {
        self.read(|tx| {
            NodeState::ALL
                .iter()
                .map(|s| {
                    Ok((
                        *s,
                        tx.query_row("SELECT count(*) FROM nodes WHERE state = ?1", [s], |r| r.get::<_, i64>(0))?
                            as u64,
                    ))
                })
                .collect()
        })
    }
}
