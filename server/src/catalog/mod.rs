//! The control plane's catalog: projects, users and API tokens, images
//! (the metadata; bytes stay in [`crate::store`]), OSIDs, node types,
//! nodes, and jobs with per-node progress history, in one SQLite file
//! (`catalog.db` in the data directory, WAL mode).
//!
//! Every public operation is one transaction: a request that fails leaves
//! nothing half-written. Operations that act for someone take the
//! authenticated [`ProjectCaller`] or [`AgentCaller`] and check
//! permissions themselves, so the HTTP layer only parses and maps
//! [`CatalogError`] to status codes.
//!
//! **Permissions** (as ProtoGENI has them): an image is private, shared
//! read-only with named projects, or public. Only its owner project may
//! update, share or delete it; a project that can read it may load it and
//! derive its own images from it. An image a project cannot read is, to
//! that project, not there (404). Nodes and jobs belong to a project and
//! are seen only by it; an admin token also manages every project's nodes
//! and jobs, but image rights follow its project like anyone's. An agent
//! token reaches only the agent operations, for its own node.
//!
//! Running jobs (power cycling, timing agents out) is the job runner's
//! (`crate::jobs`); it reads and records every step through
//! [`execution`], so the catalog alone says where each job is.

pub mod agent;
pub mod boot;
pub mod execution;
pub mod ids;
pub mod images;
pub mod jobs;
pub mod metadata;
pub mod model;
pub mod nodes;
pub mod projects;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, TransactionBehavior};

pub use ids::{JobId, Name, NameError, ProjectId, Secret};
pub use model::{Boot, JobKind, JobNodeState, JobState, NodeState, PowerDriver, Visibility};
pub use projects::{AgentCaller, Caller, ProjectCaller};
pub use shoal_agent::init::cmdline::Mac;

/// The catalog's file in the data directory.
pub const FILE: &str = "catalog.db";

/// The project that images captured or imported on the server's own
/// command line belong to.
pub const DEFAULT_PROJECT: &str = "default";

/// Why a catalog operation failed. The HTTP layer maps each to a status
/// code in one place (`api::problem`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// the database failed
    #[error("catalog database")]
    Sqlite(#[from] rusqlite::Error),
    /// the file was written by a newer shoal
    #[error("the catalog is at schema version {found}; this shoal knows only up to {known}")]
    TooNew { found: u32, known: u32 },
    #[error(transparent)]
    Name(#[from] NameError),
    /// a request field is malformed
    #[error("{0}")]
    Invalid(String),
    /// no such thing, or the caller may not see it
    #[error("no {what} named {name}")]
    NotFound { what: &'static str, name: String },
    #[error("{what} {name} already exists")]
    Exists { what: &'static str, name: String },
    /// a node is already in an unfinished job
    #[error("node {node} is busy with job {job}; cancel it or wait for it to finish")]
    Busy { node: Name, job: JobId },
    /// an image is being loaded or captured by an unfinished job
    #[error("image {image} is in use by job {job}")]
    InUse { image: String, job: JobId },
    #[error("image {image} runs only on node types {types}, and node {node} is a {node_type}")]
    WrongNodeType { image: String, types: String, node: Name, node_type: Name },
    #[error("image {image} expired at unix time {at}")]
    Expired { image: String, at: i64 },
    #[error("job {job} has already finished ({state})")]
    Finished { job: JobId, state: JobState },
    #[error("no image was named and project {0} has no default image")]
    NoDefaultImage(Name),
    /// no token, or one the catalog does not know
    #[error("no valid token: send Authorization: Bearer TOKEN")]
    Unauthenticated,
    /// the token is good but may not do this
    #[error("{0}")]
    Forbidden(String),
    #[error("the random number generator failed: {0}")]
    Random(String),
    /// the store refused to remove an image's manifest
    #[error("removing the image from the store")]
    Store(#[source] crate::store::StoreError),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

pub(crate) fn not_found(what: &'static str, name: impl ToString) -> CatalogError {
    CatalogError::NotFound { what, name: name.to_string() }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The catalog on one SQLite connection. Operations are short; a mutex
/// serialises them within the process, WAL and a busy timeout let the
/// CLI's bootstrap commands share the file with a running server.
pub struct Catalog {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and applies any
    /// missing migrations.
    pub fn open(path: &Path) -> Result<Catalog> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
        schema::migrate(&mut conn)?;
        Ok(Catalog { conn: Mutex::new(conn), path: path.to_owned() })
    }

    /// The catalog of the data directory `dir`.
    pub fn open_in(dir: &Path) -> Result<Catalog> {
        Catalog::open(&dir.join(FILE))
    }

    /// The catalog of `dir` if there is one (the server makes it), so the
    /// offline commands can keep it in step with the store.
    pub fn open_existing(dir: &Path) -> Result<Option<Catalog>> {
        let p = dir.join(FILE);
        if p.exists() {
            Catalog::open(&p).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<u32> {
        self.with_conn(|c| schema::version(c))
    }

    pub(crate) fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A panic while holding the lock leaves SQLite consistent (an
        // unfinished transaction rolls back on drop), so a poisoned lock
        // is safe to take over.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Runs `f` in one write transaction, committed only if it succeeds.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Deferred)?;
            f(&tx)
        })
    }
}

/// Records a newly stored image in `dir`'s catalog under
/// [`DEFAULT_PROJECT`], if there is a catalog (the offline capture and
/// import).
pub fn record_in(dir: &Path, m: &shoal_proto::manifest::Manifest) -> Result<()> {
    if let Some(cat) = Catalog::open_existing(dir)? {
        cat.register_manifest(m, &Name::parse(DEFAULT_PROJECT)?)?;
    }
    Ok(())
}

/// Drops a deleted image from `dir`'s catalog, if there is one (the
/// offline `shoal image delete`).
pub fn forget_in(dir: &Path, id: &shoal_proto::ImageId) -> Result<()> {
    if let Some(cat) = Catalog::open_existing(dir)? {
        cat.forget_image(&id.to_hex())?;
    }
    Ok(())
}
