//! Images in the catalog: their metadata (the bytes are the store's),
//! who may see and change them, and sharing.
//!
//! An image is named in requests by its id (32 hex digits), `NAME` (the
//! newest image of that name the caller can see) or `NAME:VERSION`.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
use shoal_proto::manifest::Manifest;

use super::projects::project_id;
use super::{not_found, Catalog, CatalogError, Name, ProjectCaller, Result, Visibility};

/// The identity fields operators keep in an installed image's
/// `/etc/image-id`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub file: String,
    pub stamp: String,
    pub date: String,
    pub recipe: String,
}

/// The OS on one partition of an image (partition 0: the whole image).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Osid {
    pub partition: u32,
    pub os: String,
}

/// An image as the catalog knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The store's `ImageId`, in hex.
    pub id: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub stamp: String,
    pub created: i64,
    pub base: Option<String>,
    pub description: String,
    pub author: String,
    pub owner: Name,
    pub visibility: Visibility,
    /// Projects it is shared with, read-only.
    pub shared_with: Vec<Name>,
    /// Node types it runs on; empty means any.
    pub node_types: Vec<Name>,
    pub valid_until: Option<i64>,
    pub identity: Identity,
    pub osids: Vec<Osid>,
}

/// A change of who may read an image: one project, or everyone.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    #[serde(default)]
    pub project: Option<Name>,
    #[serde(default)]
    pub public: bool,
}

/// A change to an image's metadata; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePatch {
    pub description: Option<String>,
    pub node_types: Option<Vec<Name>>,
    /// Unix time after which the image may not be loaded; 0 clears it.
    pub valid_until: Option<i64>,
    pub file: Option<String>,
    pub date: Option<String>,
    pub recipe: Option<String>,
}

/// SQL condition: project ?1 may read image row `i`.
const READABLE: &str = "(i.owner = ?1 OR i.visibility = 'public'
    OR EXISTS (SELECT 1 FROM image_shares s WHERE s.image = i.id AND s.project = ?1))";

/// The image `what` names among those `who` may read.
pub(crate) fn readable(tx: &Transaction<'_>, who: &ProjectCaller, what: &str) -> Result<ImageRecord> {
    let id = find(tx, what, Some(who))?.ok_or_else(|| not_found("image", what))?;
    load(tx, &id)
}

/// The image `what` names, which `who` must own: one it cannot see is
/// not found, one it sees but does not own is forbidden.
pub(crate) fn owned(tx: &Transaction<'_>, who: &ProjectCaller, what: &str) -> Result<ImageRecord> {
    let img = readable(tx, who, what)?;
    if img.owner != who.name {
        return Err(CatalogError::Forbidden(format!(
            "image {what} belongs to project {}; only its owner may change or delete it",
            img.owner
        )));
    }
    Ok(img)
}

fn find(tx: &Transaction<'_>, what: &str, who: Option<&ProjectCaller>) -> Result<Option<String>> {
    let cond = if who.is_some() { READABLE } else { "(?1 IS NULL OR 1)" };
    let pid = who.map(|w| w.project.0);
    if what.len() == 32 && what.chars().all(|c| c.is_ascii_hexdigit()) {
        let sql = format!("SELECT id FROM images i WHERE id = ?2 AND {cond}");
        let id = tx.query_row(&sql, params![pid, what.to_ascii_lowercase()], |r| r.get(0)).optional()?;
        if id.is_some() {
            return Ok(id);
        }
    }
    let (name, version) = match what.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (what, None),
    };
    let sql = format!(
        "SELECT id FROM images i WHERE name = ?2 AND (?3 IS NULL OR version = ?3) AND {cond}
         ORDER BY created DESC, id LIMIT 1"
    );
    Ok(tx.query_row(&sql, params![pid, name, version], |r| r.get(0)).optional()?)
}

fn names(tx: &Transaction<'_>, sql: &str, id: &str) -> Result<Vec<Name>> {
    let mut st = tx.prepare(sql)?;
    let rows = st.query_map([id], |r| r.get::<_, String>(0))?;
    rows.map(|r| Ok(Name::parse(&r?)?)).collect()
}

pub(crate) fn load(tx: &Transaction<'_>, id: &str) -> Result<ImageRecord> {
    type Row = (String, String, String, String, i64, Option<String>, String, String, String, Visibility, Option<i64>);
    let row: Option<(Row, (String, String, String))> = tx
        .query_row(
            "SELECT i.name, i.version, i.arch, i.stamp, i.created, i.base, i.description, i.author,
                    p.name, i.visibility, i.valid_until, i.ident_file, i.ident_date, i.ident_recipe
             FROM images i JOIN projects p ON p.id = i.owner WHERE i.id = ?1",
            [id],
            |r| {
                Ok((
                    (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                    ),
                    (r.get(11)?, r.get(12)?, r.get(13)?),
                ))
            },
        )
        .optional()?;
    let Some((row, (file, date, recipe))) = row else { return Err(not_found("image", id)) };
    let (name, version, arch, stamp, created, base, description, author, owner, visibility, valid_until) = row;
    let mut st = tx.prepare("SELECT partition, os FROM osids WHERE image = ?1 ORDER BY partition")?;
    let osids = st.query_map([id], |r| Ok(Osid { partition: r.get(0)?, os: r.get(1)? }))?.collect::<Result<_, _>>()?;
    Ok(ImageRecord {
        id: id.to_string(),
        identity: Identity {
            name: name.clone(),
            version: version.clone(),
            arch: arch.clone(),
            file,
            stamp: stamp.clone(),
            date,
            recipe,
        },
        name,
        version,
        arch,
        stamp,
        created,
        base,
        description,
        author,
        owner: Name::parse(&owner)?,
        visibility,
        shared_with: names(
            tx,
            "SELECT p.name FROM image_shares s JOIN projects p ON p.id = s.project WHERE s.image = ?1 ORDER BY p.name",
            id,
        )?,
        node_types: names(tx, "SELECT node_type FROM image_node_types WHERE image = ?1 ORDER BY node_type", id)?,
        valid_until,
        osids,
    })
}

/// Sets the stored visibility from the public flag and the share list.
fn settle_visibility(tx: &Transaction<'_>, id: &str, public: Option<bool>) -> Result<()> {
    let was_public: bool =
        tx.query_row("SELECT visibility = 'public' FROM images WHERE id = ?1", [id], |r| r.get(0))?;
    let shares: i64 = tx.query_row("SELECT count(*) FROM image_shares WHERE image = ?1", [id], |r| r.get(0))?;
    let v = match (public.unwrap_or(was_public), shares) {
        (true, _) => Visibility::Public,
        (false, 0) => Visibility::Private,
        (false, _) => Visibility::Shared,
    };
    tx.execute("UPDATE images SET visibility = ?1 WHERE id = ?2", params![v, id])?;
    Ok(())
}

impl Catalog {
    /// Records a stored image under `project` (made if missing). Returns
    /// false if the catalog already had it.
    pub fn register_manifest(&self, m: &Manifest, project: &Name) -> Result<bool> {
        self.write(|tx| {
            let pid = Catalog::ensure_project(tx, project)?;
            let date = time::OffsetDateTime::from_unix_timestamp(m.created as i64)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default();
            let n = tx.execute(
                "INSERT INTO images (id, name, version, arch, stamp, created, base, description, author, owner,
                                     visibility, valid_until, ident_file, ident_date)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'private', ?11, ?12, ?13)
                 ON CONFLICT (id) DO NOTHING",
                params![
                    m.id.to_hex(),
                    m.name,
                    m.version,
                    m.arch,
                    m.stamp,
                    m.created as i64,
                    m.base.map(|b| b.to_hex()),
                    m.description,
                    m.author,
                    pid.0,
                    m.expires.map(|e| e as i64),
                    format!("{}.manifest", m.id.to_hex()),
                    date,
                ],
            )?;
            if n == 1 {
                for p in m.table.iter().flat_map(|t| &t.partitions) {
                    if let Some(os) = &p.os {
                        tx.execute(
                            "INSERT INTO osids (image, partition, os) VALUES (?1, ?2, ?3)",
                            params![m.id.to_hex(), p.number, os],
                        )?;
                    }
                }
            }
            Ok(n == 1)
        })
    }

    /// Records every image of `store` the catalog lacks, under
    /// [`super::DEFAULT_PROJECT`]. Returns how many were added.
    pub fn register_store(&self, store: &crate::store::Store) -> Result<usize> {
        let (images, bad) = store.list().map_err(CatalogError::Store)?;
        for e in bad {
            tracing::warn!("not recorded in the catalog: {}", crate::image::chain(&e));
        }
        let default = Name::parse(super::DEFAULT_PROJECT)?;
        let mut added = 0;
        for img in images {
            added += usize::from(self.register_manifest(&img.manifest, &default)?);
        }
        Ok(added)
    }

    /// Drops an image's record (the offline `shoal image delete`).
    pub fn forget_image(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            forget(tx, id)?;
            Ok(())
        })
    }

    /// Every image `who` may read, newest first.
    pub fn list_images(&self, who: &ProjectCaller) -> Result<Vec<ImageRecord>> {
        self.read(|tx| {
            let sql = format!("SELECT id FROM images i WHERE {READABLE} ORDER BY created DESC, name");
            let mut st = tx.prepare(&sql)?;
            let ids: Vec<String> = st.query_map([who.project.0], |r| r.get(0))?.collect::<Result<_, _>>()?;
            ids.iter().map(|id| load(tx, id)).collect()
        })
    }

    pub fn show_image(&self, who: &ProjectCaller, what: &str) -> Result<ImageRecord> {
        self.read(|tx| readable(tx, who, what))
    }

    /// Deletes an image: its catalog rows, then (through `remove`) its
    /// manifest in the store, in one transaction: if the store refuses,
    /// the catalog keeps the image. Refused while a job uses it.
    pub fn delete_image(
        &self,
        who: &ProjectCaller,
        what: &str,
        remove: impl FnOnce(&str) -> Result<()>,
    ) -> Result<ImageRecord> {
        self.write(|tx| {
            let img = owned(tx, who, what)?;
            let busy: Option<i64> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE image = ?1 AND state IN ('pending', 'running') LIMIT 1",
                    [&img.id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(job) = busy {
                return Err(CatalogError::InUse { image: what.into(), job: super::JobId(job) });
            }
            forget(tx, &img.id)?;
            remove(&img.id)?;
            Ok(img)
        })
    }

    /// Shares an image read-only with a project, or makes it public.
    pub fn share_image(&self, who: &ProjectCaller, what: &str, share: &Share) -> Result<ImageRecord> {
        self.change_sharing(who, what, share, true)
    }

    /// Undoes [`Catalog::share_image`].
    pub fn unshare_image(&self, who: &ProjectCaller, what: &str, share: &Share) -> Result<ImageRecord> {
        self.change_sharing(who, what, share, false)
    }

    fn change_sharing(&self, who: &ProjectCaller, what: &str, share: &Share, add: bool) -> Result<ImageRecord> {
        if share.project.is_none() && !share.public {
            return Err(CatalogError::Invalid("say which project (\"project\") or \"public\": true".into()));
        }
        self.write(|tx| {
            let img = owned(tx, who, what)?;
            if let Some(p) = &share.project {
                let pid = project_id(tx, p)?;
                if add {
                    tx.execute(
                        "INSERT INTO image_shares (image, project) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        params![img.id, pid.0],
                    )?;
                } else {
                    tx.execute("DELETE FROM image_shares WHERE image = ?1 AND project = ?2", params![img.id, pid.0])?;
                }
            }
            settle_visibility(tx, &img.id, share.public.then_some(add))?;
            load(tx, &img.id)
        })
    }

    /// Changes an image's metadata (owner only).
    pub fn update_image(&self, who: &ProjectCaller, what: &str, patch: &ImagePatch) -> Result<ImageRecord> {
        self.write(|tx| {
            let img = owned(tx, who, what)?;
            let set = |col: &str, v: &Option<String>| -> Result<()> {
                if let Some(v) = v {
                    tx.execute(&format!("UPDATE images SET {col} = ?1 WHERE id = ?2"), params![v, img.id])?;
                }
                Ok(())
            };
            set("description", &patch.description)?;
            set("ident_file", &patch.file)?;
            set("ident_date", &patch.date)?;
            set("ident_recipe", &patch.recipe)?;
            if let Some(v) = patch.valid_until {
                tx.execute("UPDATE images SET valid_until = ?1 WHERE id = ?2", params![(v != 0).then_some(v), img.id])?;
            }
            if let Some(types) = &patch.node_types {
                tx.execute("DELETE FROM image_node_types WHERE image = ?1", [&img.id])?;
                for t in types {
                    tx.execute(
                        "INSERT INTO image_node_types (image, node_type) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                        params![img.id, t.as_str()],
                    )?;
                }
            }
            load(tx, &img.id)
        })
    }
}

fn forget(tx: &Transaction<'_>, id: &str) -> Result<()> {
    tx.execute("UPDATE projects SET default_image = NULL WHERE default_image = ?1", [id])?;
    tx.execute("UPDATE nodes SET current_image = NULL WHERE current_image = ?1", [id])?;
    tx.execute("DELETE FROM images WHERE id = ?1", [id])?;
    Ok(())
}
