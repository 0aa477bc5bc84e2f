//! First-boot metadata: what a node's owner sets for it, its instances,
//! and what the metadata service ([`crate::metadata`]) may tell a node.
//!
//! **Instances.** Every reload starts a new instance of the node, with a
//! fresh instance-id (`i-` and 17 hex digits), so first-boot tools
//! (cloud-init, `shoal-agent firstboot`) run again. A reload job makes a
//! *pending* instance per node when it is created ([`Catalog::prepare_reload`]),
//! which becomes *current* when the reload succeeds ([`reload_succeeded`],
//! called from the agent's report); a node reloaded outside Shoal's jobs
//! gets one from [`Catalog::new_instance`]. Only the current instance is
//! served.
//!
//! **The initial password** is made with each instance: shown to the
//! owner once (in the answer that made the instance), kept only as a
//! SHA-512-crypt hash, handed to the node once ([`Catalog::take_initial_password`]
//! clears the hash as it returns it), never shown again.
//!
//! **Who is asking.** The service names a node only by the source address
//! of its request, matched against `nodes.ip`; an IMDSv2 token is bound to
//! that node and instance, so no header or token lets a node read another's
//! data.

use std::net::Ipv4Addr;

use rusqlite::{params, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::ids::Secret;
use super::jobs::JobRecord;
use super::nodes::held;
use super::{not_found, now, Catalog, CatalogError, JobId, JobKind, Name, ProjectCaller, Result};

/// The largest user-data, in bytes (EC2's limit).
pub const MAX_USER_DATA: usize = 16 * 1024;
/// The most SSH keys a node may have.
pub const MAX_KEYS: usize = 32;
/// The longest SSH public key line, in bytes.
pub const MAX_KEY_LEN: usize = 8 * 1024;
/// The longest an IMDSv2 token lives, in seconds (as on EC2).
pub const MAX_TOKEN_TTL: u32 = 21_600;

/// Key types `authorized_keys` takes.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// What the owner sets for a node's first boot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeMetadata {
    pub ssh_keys: Vec<String>,
    /// Text (a script starting `#!`, or `#cloud-config`), or none.
    pub user_data: Option<String>,
    /// A disk to mount at /mnt, e.g. `/dev/vdb`.
    pub ephemeral_disk: Option<String>,
    /// Refuse metadata requests without an IMDSv2 token.
    pub imdsv2_required: bool,
}

/// A change to a node's metadata: fields left out stay as they are; a
/// `null` user-data or ephemeral disk removes it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataUpdate {
    #[serde(default)]
    pub ssh_keys: Option<Vec<String>>,
    #[serde(default, with = "double_option")]
    pub user_data: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub ephemeral_disk: Option<Option<String>>,
    #[serde(default)]
    pub imdsv2_required: Option<bool>,
}

/// `Some(None)` for an explicit `null`, `None` for a missing field.
mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// A new instance, as its owner sees it: the only time the password is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceIssued {
    pub node: Name,
    pub instance_id: String,
    /// Pending until the reload job succeeds; current at once otherwise.
    pub state: String,
    pub initial_password: String,
}

/// A reload job with the initial passwords of its nodes' next instances.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReloadAccepted {
    #[serde(flatten)]
    pub job: JobRecord,
    pub instances: Vec<InstanceIssued>,
}

/// All the metadata service tells one node, found by its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub node: Name,
    pub ip: Ipv4Addr,
    pub instance_id: String,
    /// The image the instance was loaded with, if known.
    pub image: Option<String>,
    pub meta: NodeMetadata,
}

/// What became of a node's request for its initial password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordFetch {
    /// The SHA-512-crypt hash, now forgotten by the catalog.
    Hash(String),
    /// Handed out already, at this time.
    Served(i64),
    /// This instance has no password (made before passwords were issued).
    None,
}

fn check_key(k: &str) -> Result<()> {
    let bad =
        |why: &str| Err(CatalogError::Invalid(format!("ssh key {:?}: {why}", k.chars().take(40).collect::<String>())));
    if k.len() > MAX_KEY_LEN {
        return bad("too long");
    }
    if k.chars().any(|c| c.is_control()) {
        return bad("control characters (one key per entry, no newlines)");
    }
    let mut words = k.split(' ');
    let (Some(kind), Some(body)) = (words.next(), words.next()) else { return bad("expected TYPE BASE64 [COMMENT]") };
    if !KEY_TYPES.contains(&kind) {
        return bad("unknown key type");
    }
    if body.len() < 16 || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
        return bad("the key is not base64");
    }
    Ok(())
}

fn check_user_data(u: &str) -> Result<()> {
    if u.len() > MAX_USER_DATA {
        return Err(CatalogError::Invalid(format!("user-data is {} bytes; the limit is {MAX_USER_DATA}", u.len())));
    }
    if u.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(CatalogError::Invalid("user-data must be text: it holds control or NUL characters".into()));
    }
    Ok(())
}

fn check_disk(d: &str) -> Result<()> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/_-".contains(&b);
    match d.strip_prefix("/dev/") {
        Some(rest) if !rest.is_empty() && d.len() <= 64 && rest.bytes().all(plain) => Ok(()),
        _ => {
            Err(CatalogError::Invalid(format!("invalid ephemeral disk {d:?}: expected a /dev/ path such as /dev/vdb")))
        }
    }
}

fn random(n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| CatalogError::Random(e.to_string()))?;
    Ok(b)
}

/// Letters and digits that cannot be mistaken for one another on a console.
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// 16 characters of [`PASSWORD_ALPHABET`] (about 93 bits).
fn new_password() -> Result<String> {
    let mut out = String::new();
    while out.len() < 16 {
        for b in random(32)? {
            // Rejection sampling keeps every character equally likely.
            let limit = 256 - 256 % PASSWORD_ALPHABET.len();
            if (b as usize) < limit && out.len() < 16 {
                out.push(PASSWORD_ALPHABET[b as usize % PASSWORD_ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// The password's SHA-512-crypt hash (`$6$...`), as /etc/shadow holds it.
pub fn crypt_sha512(password: &str, salt: &[u8]) -> Result<String> {
    use sha_crypt::{CustomizedPasswordHasher, Params, ShaCrypt};
    ShaCrypt::SHA512
        .hash_password_customized(password.as_bytes(), salt, None, None, Params::RECOMMENDED)
        .map(|h| h.to_string())
        .map_err(|e| CatalogError::Invalid(format!("hashing the password: {e}")))
}

fn instance_id() -> Result<String> {
    let b = random(9)?;
    Ok(format!("i-{}", &hex::encode(b)[..17]))
}

/// Makes an instance of `node` in `state` with a fresh password; returns
/// the password in the clear (the catalog keeps only its hash).
fn insert_instance(tx: &Transaction<'_>, node: &Name, job: Option<JobId>, state: &str) -> Result<InstanceIssued> {
    let id = instance_id()?;
    let password = new_password()?;
    let hash = crypt_sha512(&password, &random(12)?)?;
    let image: Option<String> = match job {
        Some(j) => tx.query_row("SELECT image FROM jobs WHERE id = ?1", [j.0], |r| r.get(0)).optional()?.flatten(),
        None => tx.query_row("SELECT current_image FROM nodes WHERE name = ?1", [node.as_str()], |r| r.get(0))?,
    };
    if state == "current" {
        retire(tx, node)?;
    }
    let started = (state == "current").then(now);
    tx.execute(
        "INSERT INTO node_instances (node, instance_id, job, image, state, created, started, password_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![node.as_str(), id, job.map(|j| j.0), image, state, now(), started, hash],
    )?;
    Ok(InstanceIssued { node: node.clone(), instance_id: id, state: state.into(), initial_password: password })
}

/// The node's current instance becomes past, and its tokens die with it.
fn retire(tx: &Transaction<'_>, node: &Name) -> Result<()> {
    tx.execute(
        "UPDATE node_instances SET state = 'past', password_hash = NULL WHERE node = ?1 AND state = 'current'",
        [node.as_str()],
    )?;
    tx.execute("DELETE FROM metadata_tokens WHERE node = ?1", [node.as_str()])?;
    Ok(())
}

/// The hook for a reload that succeeded on `node`: its pending instance
/// for `job` becomes current (one with no password if the job made none).
pub(crate) fn reload_succeeded(tx: &Transaction<'_>, job: JobId, node: &Name) -> Result<()> {
    let pending: Option<i64> = tx
        .query_row(
            "SELECT id FROM node_instances WHERE job = ?1 AND node = ?2 AND state = 'pending'",
            params![job.0, node.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    retire(tx, node)?;
    match pending {
        Some(id) => {
            tx.execute("UPDATE node_instances SET state = 'current', started = ?1 WHERE id = ?2", params![now(), id])?;
        }
        None => {
            let issued = insert_instance(tx, node, Some(job), "current")?;
            tx.execute("UPDATE node_instances SET password_hash = NULL WHERE instance_id = ?1", [&issued.instance_id])?;
        }
    }
    Ok(())
}

fn load_meta(tx: &Transaction<'_>, node: &str) -> Result<NodeMetadata> {
    let row: Option<(String, Option<String>, Option<String>, bool)> = tx
        .query_row(
            "SELECT ssh_keys, user_data, ephemeral_disk, imdsv2_required FROM node_metadata WHERE node = ?1",
            [node],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((keys, user_data, ephemeral_disk, imdsv2_required)) = row else { return Ok(NodeMetadata::default()) };
    let ssh_keys = serde_json::from_str(&keys).map_err(|e| CatalogError::Invalid(format!("stored ssh keys: {e}")))?;
    Ok(NodeMetadata { ssh_keys, user_data, ephemeral_disk, imdsv2_required })
}

/// The node at `ip` and its current instance, if it has one.
fn view(tx: &Transaction<'_>, ip: Ipv4Addr) -> Result<Option<NodeView>> {
    let row: Option<(String, String, Option<String>)> = tx
        .query_row(
            "SELECT n.name, i.instance_id, i.image FROM nodes n
             JOIN node_instances i ON i.node = n.name AND i.state = 'current' WHERE n.ip = ?1",
            [ip.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((node, instance_id, image)) = row else { return Ok(None) };
    let meta = load_meta(tx, &node)?;
    Ok(Some(NodeView { node: Name::parse(&node)?, ip, instance_id, image, meta }))
}

impl Catalog {
    pub fn node_metadata(&self, who: &ProjectCaller, node: &str) -> Result<NodeMetadata> {
        self.read(|tx| {
            held(tx, who, node)?;
            load_meta(tx, node)
        })
    }

    /// Changes what the node is told at its next first boot.
    pub fn set_node_metadata(&self, who: &ProjectCaller, node: &str, u: &MetadataUpdate) -> Result<NodeMetadata> {
        if let Some(keys) = &u.ssh_keys {
            if keys.len() > MAX_KEYS {
                return Err(CatalogError::Invalid(format!("{} ssh keys; the limit is {MAX_KEYS}", keys.len())));
            }
            keys.iter().try_for_each(|k| check_key(k))?;
        }
        if let Some(Some(ud)) = &u.user_data {
            check_user_data(ud)?;
        }
        if let Some(Some(d)) = &u.ephemeral_disk {
            check_disk(d)?;
        }
        self.write(|tx| {
            held(tx, who, node)?;
            let mut m = load_meta(tx, node)?;
            if let Some(k) = &u.ssh_keys {
                m.ssh_keys = k.clone();
            }
            if let Some(ud) = &u.user_data {
                m.user_data = ud.clone();
            }
            if let Some(d) = &u.ephemeral_disk {
                m.ephemeral_disk = d.clone();
            }
            if let Some(r) = u.imdsv2_required {
                m.imdsv2_required = r;
            }
            let keys = serde_json::to_string(&m.ssh_keys).map_err(|e| CatalogError::Invalid(e.to_string()))?;
            tx.execute(
                "INSERT INTO node_metadata (node, ssh_keys, user_data, ephemeral_disk, imdsv2_required)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (node) DO UPDATE SET ssh_keys = ?2, user_data = ?3, ephemeral_disk = ?4, imdsv2_required = ?5",
                params![node, keys, m.user_data, m.ephemeral_disk, m.imdsv2_required],
            )?;
            Ok(m)
        })
    }

    /// A new current instance of a node reloaded outside Shoal's jobs
    /// (e.g. `shoal image deploy` to its disk): new instance-id, new
    /// initial password, shown here once.
    pub fn new_instance(&self, who: &ProjectCaller, node: &str) -> Result<InstanceIssued> {
        self.write(|tx| {
            let n = held(tx, who, node)?;
            if let Some(job) = n.job {
                return Err(CatalogError::Busy { node: n.name, job });
            }
            insert_instance(tx, &n.name, None, "current")
        })
    }

    /// A pending instance, with its initial password, for each node of
    /// the reload job `job`, to show the owner with the job.
    pub fn prepare_reload(&self, who: &ProjectCaller, job: &JobRecord) -> Result<Vec<InstanceIssued>> {
        if job.kind != JobKind::Reload {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            job.nodes
                .iter()
                .map(|n| {
                    held(tx, who, n.node.as_str())?;
                    insert_instance(tx, &n.node, Some(job.id), "pending")
                })
                .collect()
        })
    }

    /// What the metadata service may tell the node at `ip`.
    pub fn metadata_view(&self, ip: Ipv4Addr) -> Result<Option<NodeView>> {
        self.read(|tx| view(tx, ip))
    }

    /// An IMDSv2 token for the node at `ip`, bound to its current instance.
    pub fn issue_metadata_token(&self, ip: Ipv4Addr, ttl: u32) -> Result<Secret> {
        if ttl == 0 || ttl > MAX_TOKEN_TTL {
            return Err(CatalogError::Invalid(format!("token TTL {ttl}: expected 1 to {MAX_TOKEN_TTL} seconds")));
        }
        let token = Secret::generate().map_err(|e| CatalogError::Random(e.to_string()))?;
        self.write(|tx| {
            let v = view(tx, ip)?.ok_or_else(|| not_found("node with address", ip))?;
            tx.execute("DELETE FROM metadata_tokens WHERE expires < ?1", [now()])?;
            tx.execute(
                "INSERT INTO metadata_tokens (hash, node, instance_id, expires) VALUES (?1, ?2, ?3, ?4)",
                params![&token.hash().0[..], v.node.as_str(), v.instance_id, now() + i64::from(ttl)],
            )?;
            Ok(token)
        })
    }

    /// Whether `token` is a live IMDSv2 token of the node at `ip`'s
    /// current instance. Another node's token, an expired one or one from
    /// an earlier instance is not.
    pub fn metadata_token_valid(&self, ip: Ipv4Addr, token: &str) -> Result<bool> {
        let hash = Secret::presented(token).hash();
        self.read(|tx| {
            let Some(v) = view(tx, ip)? else { return Ok(false) };
            let found: Option<i64> = tx
                .query_row(
                    "SELECT expires FROM metadata_tokens WHERE hash = ?1 AND node = ?2 AND instance_id = ?3",
                    params![&hash.0[..], v.node.as_str(), v.instance_id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(found.is_some_and(|e| e >= now()))
        })
    }

    /// Records the node's first fetch of its metadata for `instance_id`.
    /// True the first time. (The job runner's wait is
    /// [`Catalog::first_boot_checkin`], which the service calls too.)
    pub fn record_metadata_fetch(&self, node: &Name, instance_id: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE node_instances SET first_boot_checkin = ?1
                 WHERE node = ?2 AND instance_id = ?3 AND first_boot_checkin IS NULL",
                params![now(), node.as_str(), instance_id],
            )?;
            Ok(n == 1)
        })
    }

    /// When the node checked in for `instance_id`, if it has.
    pub fn first_boot_checked_in(&self, node: &Name, instance_id: &str) -> Result<Option<i64>> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT first_boot_checkin FROM node_instances WHERE node = ?1 AND instance_id = ?2",
                    params![node.as_str(), instance_id],
                    |r| r.get(0),
                )
                .optional()?
                .flatten())
        })
    }

    /// The initial password's hash for the node at `ip`, once: the
    /// catalog forgets it as it hands it out.
    pub fn take_initial_password(&self, ip: Ipv4Addr) -> Result<PasswordFetch> {
        self.write(|tx| {
            let v = view(tx, ip)?.ok_or_else(|| not_found("node with address", ip))?;
            let (hash, served): (Option<String>, Option<i64>) = tx.query_row(
                "SELECT password_hash, password_served FROM node_instances WHERE instance_id = ?1",
                [&v.instance_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            match (hash, served) {
                (_, Some(at)) => Ok(PasswordFetch::Served(at)),
                (Some(h), None) => {
                    tx.execute(
                        "UPDATE node_instances SET password_hash = NULL, password_served = ?1 WHERE instance_id = ?2",
                        params![now(), v.instance_id],
                    )?;
                    Ok(PasswordFetch::Hash(h))
                }
                (None, None) => Ok(PasswordFetch::None),
            }
        })
    }
}

#[cfg(test)]
#[path = "metadata_tests.rs"]
mod tests;
