//! Projects, users and API tokens, and who a token makes its bearer
//! ([`Caller`]). Tokens are stored only as hashes.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::ids::{Secret, TokenHash};
use super::{not_found, now, Catalog, CatalogError, JobId, Mac, Name, ProjectId, Result};

/// Whoever a request's token names.
#[derive(Clone, Debug)]
pub enum Caller {
    Project(ProjectCaller),
    Agent(AgentCaller),
}

/// A project's API token.
#[derive(Clone, Debug)]
pub struct ProjectCaller {
    pub project: ProjectId,
    pub name: Name,
    /// Admin tokens also manage every project's nodes and jobs.
    pub admin: bool,
}

/// A node's one-time agent token, good for one job on that node.
#[derive(Clone, Debug)]
pub struct AgentCaller {
    pub node: Name,
    pub mac: Mac,
    pub job: JobId,
}

impl Caller {
    /// The project behind the token; agent tokens reach nothing else.
    pub fn project(&self) -> Result<&ProjectCaller> {
        match self {
            Caller::Project(p) => Ok(p),
            Caller::Agent(_) => Err(CatalogError::Forbidden("an agent token reaches only the agent endpoints".into())),
        }
    }

    pub fn agent(&self) -> Result<&AgentCaller> {
        match self {
            Caller::Agent(a) => Ok(a),
            Caller::Project(_) => Err(CatalogError::Forbidden("the agent endpoints take a node's agent token".into())),
        }
    }
}

/// A project as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Project {
    pub name: Name,
    pub default_image: Option<String>,
    pub created: i64,
}

pub(crate) fn project_id(tx: &Transaction<'_>, name: &Name) -> Result<ProjectId> {
    tx.query_row("SELECT id FROM projects WHERE name = ?1", [name.as_str()], |r| r.get(0))
        .optional()?
        .map(ProjectId)
        .ok_or_else(|| not_found("project", name))
}

impl Catalog {
    /// Makes a project (bootstrap; `shoal project create`).
    pub fn create_project(&self, name: &Name) -> Result<ProjectId> {
        self.write(|tx| insert_project(tx, name))
    }

    /// The project's id, made if it is missing.
    pub(crate) fn ensure_project(tx: &Transaction<'_>, name: &Name) -> Result<ProjectId> {
        match project_id(tx, name) {
            Err(CatalogError::NotFound { .. }) => insert_project(tx, name),
            r => r,
        }
    }

    /// Issues a token for `project` (bootstrap; `shoal token create`).
    /// The secret is returned once; the catalog keeps its hash. With a
    /// user name, the user is made if needed and the token is theirs.
    pub fn create_token(&self, project: &Name, user: Option<&Name>, admin: bool) -> Result<Secret> {
        let secret = Secret::generate().map_err(|e| CatalogError::Random(e.to_string()))?;
        self.write(|tx| {
            let pid = project_id(tx, project)?;
            let uid: Option<i64> = match user {
                None => None,
                Some(u) => {
                    let found: Option<(i64, i64)> = tx
                        .query_row("SELECT id, project FROM users WHERE name = ?1", [u.as_str()], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()?;
                    match found {
                        Some((id, p)) if p == pid.0 => Some(id),
                        Some(_) => {
                            return Err(CatalogError::Exists { what: "user (in another project)", name: u.to_string() })
                        }
                        None => {
                            tx.execute(
                                "INSERT INTO users (name, project, created) VALUES (?1, ?2, ?3)",
                                params![u.as_str(), pid.0, now()],
                            )?;
                            Some(tx.last_insert_rowid())
                        }
                    }
                }
            };
            tx.execute(
                "INSERT INTO tokens (hash, project, user, admin, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&secret.hash().0[..], pid.0, uid, admin, now()],
            )?;
            Ok(())
        })?;
        Ok(secret)
    }

    /// Who `token` belongs to: a project's API token or a node's agent
    /// token. No token, or an unknown one, is [`CatalogError::Unauthenticated`].
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller> {
        let Some(token) = token else { return Err(CatalogError::Unauthenticated) };
        let TokenHash(hash) = Secret::presented(token).hash();
        self.read(|tx| {
            let project = tx
                .query_row(
                    "SELECT p.id, p.name, t.admin FROM tokens t JOIN projects p ON p.id = t.project WHERE t.hash = ?1",
                    [&hash[..]],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?)),
                )
                .optional()?;
            if let Some((id, name, admin)) = project {
                return Ok(Caller::Project(ProjectCaller { project: ProjectId(id), name: Name::parse(&name)?, admin }));
            }
            let agent = tx
                .query_row(
                    "SELECT n.name, n.mac, jn.job FROM job_nodes jn JOIN nodes n ON n.name = jn.node
                     WHERE jn.agent_token = ?1",
                    [&hash[..]],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)),
                )
                .optional()?;
            match agent {
                Some((node, mac, job)) => Ok(Caller::Agent(AgentCaller {
                    node: Name::parse(&node)?,
                    mac: Mac::parse(&mac).ok_or_else(|| CatalogError::Invalid(format!("stored MAC {mac}")))?,
                    job: JobId(job),
                })),
                None => Err(CatalogError::Unauthenticated),
            }
        })
    }

    /// The caller's project, or every project for an admin.
    pub fn list_projects(&self, who: &ProjectCaller) -> Result<Vec<Project>> {
        self.read(|tx| {
            let mut st =
                tx.prepare("SELECT name, default_image, created FROM projects WHERE ?1 OR id = ?2 ORDER BY name")?;
            let rows = st
                .query_map(params![who.admin, who.project.0], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (name, default_image, created) = row?;
                out.push(Project { name: Name::parse(&name)?, default_image, created });
            }
            Ok(out)
        })
    }

    /// Sets the image `shoal node reload` loads when none is named. The
    /// project must be the caller's (or the caller an admin), and the
    /// image one the project may load.
    pub fn set_default_image(&self, who: &ProjectCaller, project: &Name, image: &str) -> Result<Project> {
        self.write(|tx| {
            let pid = project_id(tx, project)?;
            if pid != who.project && !who.admin {
                return Err(not_found("project", project));
            }
            let as_project = ProjectCaller { project: pid, name: project.clone(), admin: false };
            let img = super::images::readable(tx, &as_project, image)?;
            tx.execute("UPDATE projects SET default_image = ?1 WHERE id = ?2", params![img.id, pid.0])?;
            let created = tx.query_row("SELECT created FROM projects WHERE id = ?1", [pid.0], |r| r.get(0))?;
            Ok(Project { name: project.clone(), default_image: Some(img.id), created })
        })
    }
}

fn insert_project(tx: &Transaction<'_>, name: &Name) -> Result<ProjectId> {
    let n = tx.execute(
        "INSERT INTO projects (name, created) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        params![name.as_str(), now()],
    )?;
    if n == 0 {
        return Err(CatalogError::Exists { what: "project", name: name.to_string() });
    }
    Ok(ProjectId(tx.last_insert_rowid()))
}
