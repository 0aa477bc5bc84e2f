//! The catalog's schema and its migrations.
//!
//! `MIGRATIONS[i]` takes a database from version `i` to `i + 1`; the
//! version lives in `schema_version`. [`migrate`] runs at every open and
//! applies what is missing, each step in its own transaction with the
//! version bump, so a crash leaves the database at some whole version. A
//! database newer than this binary is refused rather than misread.
//!
//! Only ever append a migration; never edit one that has shipped.

use rusqlite::{Connection, OptionalExtension};

use super::CatalogError;

/// Version 1: projects, users, tokens, images and what hangs off them.
const V1: &str = "
CREATE TABLE projects (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    default_image TEXT,
    created       INTEGER NOT NULL
);
CREATE TABLE users (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    project INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created INTEGER NOT NULL
);
CREATE TABLE tokens (
    id      INTEGER PRIMARY KEY,
    hash    BLOB NOT NULL UNIQUE,
    project INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user    INTEGER REFERENCES users(id) ON DELETE CASCADE,
    admin   INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL
);
CREATE TABLE images (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    arch         TEXT NOT NULL,
    stamp        TEXT NOT NULL,
    created      INTEGER NOT NULL,
    base         TEXT,
    description  TEXT NOT NULL,
    author       TEXT NOT NULL,
    owner        INTEGER NOT NULL REFERENCES projects(id),
    visibility   TEXT NOT NULL CHECK (visibility IN ('private', 'shared', 'public')),
    valid_until  INTEGER,
    ident_file   TEXT NOT NULL DEFAULT '',
    ident_date   TEXT NOT NULL DEFAULT '',
    ident_recipe TEXT NOT NULL DEFAULT ''
);
CREATE INDEX images_by_name ON images(name, version);
CREATE TABLE image_shares (
    image   TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    project INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    PRIMARY KEY (image, project)
);
CREATE TABLE osids (
    image     TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    partition INTEGER NOT NULL,
    os        TEXT NOT NULL,
    PRIMARY KEY (image, partition)
);
";

/// Version 2: node types, nodes, jobs and their history.
const V2: &str = "
CREATE TABLE node_types (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE image_node_types (
    image     TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    node_type TEXT NOT NULL,
    PRIMARY KEY (image, node_type)
);
CREATE TABLE nodes (
    name          TEXT PRIMARY KEY,
    mac           TEXT NOT NULL UNIQUE,
    node_type     TEXT NOT NULL REFERENCES node_types(name),
    power_driver  TEXT NOT NULL,
    power_address TEXT NOT NULL DEFAULT '',
    project       INTEGER NOT NULL REFERENCES projects(id),
    boot          TEXT NOT NULL DEFAULT 'local',
    current_image TEXT,
    state         TEXT NOT NULL DEFAULT 'free',
    created       INTEGER NOT NULL
);
CREATE TABLE jobs (
    id      INTEGER PRIMARY KEY,
    kind    TEXT NOT NULL,
    state   TEXT NOT NULL,
    project INTEGER NOT NULL REFERENCES projects(id),
    image   TEXT,
    params  TEXT NOT NULL DEFAULT '{}',
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE job_nodes (
    job         INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    node        TEXT NOT NULL REFERENCES nodes(name),
    state       TEXT NOT NULL,
    progress    INTEGER NOT NULL DEFAULT 0,
    agent_token BLOB UNIQUE,
    heartbeat   INTEGER,
    PRIMARY KEY (job, node)
);
CREATE INDEX job_nodes_by_node ON job_nodes(node);
CREATE TABLE job_events (
    id      INTEGER PRIMARY KEY,
    job     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    node    TEXT,
    at      INTEGER NOT NULL,
    state   TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    log     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX job_events_by_job ON job_events(job);
";

/// A node's fixed address (what DHCP hands it in full mode, and how the
/// metadata service knows it) and the disk its agent works on.
const V3: &str = "
ALTER TABLE nodes ADD COLUMN ip TEXT;
CREATE UNIQUE INDEX nodes_by_ip ON nodes(ip);
ALTER TABLE nodes ADD COLUMN disk TEXT NOT NULL DEFAULT '/dev/sda';
";

/// First-boot metadata: what a node's owner sets for it (SSH keys,
/// user-data, an ephemeral disk, whether IMDSv2 tokens are required),
/// its instances (a new instance-id per reload, the one-time initial
/// password's hash, the first-boot check-in), and the IMDSv2 tokens.
const V4: &str = "
CREATE TABLE node_metadata (
    node            TEXT PRIMARY KEY REFERENCES nodes(name) ON DELETE CASCADE,
    ssh_keys        TEXT NOT NULL DEFAULT '[]',
    user_data       TEXT,
    ephemeral_disk  TEXT,
    imdsv2_required INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE node_instances (
    id                 INTEGER PRIMARY KEY,
    node               TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
    instance_id        TEXT NOT NULL UNIQUE,
    job                INTEGER,
    image              TEXT,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'current', 'past')),
    created            INTEGER NOT NULL,
    started            INTEGER,
    first_boot_checkin INTEGER,
    password_hash      TEXT,
    password_served    INTEGER
);
CREATE UNIQUE INDEX node_instances_one_current ON node_instances(node) WHERE state = 'current';
CREATE INDEX node_instances_by_job ON node_instances(job, node);
CREATE TABLE metadata_tokens (
    hash        BLOB PRIMARY KEY,
    node        TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    expires     INTEGER NOT NULL
);
";

/// What the job runner needs to drive a job from the catalog alone (so a
/// restarted server resumes where it was): per node, the power cycles
/// spent booting the agent, when its current step began, whether the last
/// power command failed, whether it was power-cycled after its report,
/// and the first-boot check-in (time and instance id) a job may wait for;
/// per job, whether it waits for it.
const V5: &str = "
ALTER TABLE job_nodes ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_nodes ADD COLUMN since INTEGER;
ALTER TABLE job_nodes ADD COLUMN rebooted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_nodes ADD COLUMN power_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_nodes ADD COLUMN checkin INTEGER;
ALTER TABLE job_nodes ADD COLUMN instance_id TEXT;
ALTER TABLE jobs ADD COLUMN first_boot INTEGER NOT NULL DEFAULT 0;
";

/// Every migration, in order.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

/// The version this binary reads and writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// The database's version (0 for an empty file).
pub fn version(conn: &Connection) -> Result<u32, CatalogError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let v: Option<u32> = conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0)).optional()?;
    Ok(v.unwrap_or(0))
}

/// Brings the database up to `target` (normally [`LATEST`]).
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<(), CatalogError> {
    let mut v = version(conn)?;
    if v > LATEST {
        return Err(CatalogError::TooNew { found: v, known: LATEST });
    }
    while v < target {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[v as usize])?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [v + 1])?;
        tx.commit()?;
        v += 1;
        tracing::debug!(version = v, "catalog schema migrated");
    }
    Ok(())
}

pub fn migrate(conn: &mut Connection) -> Result<(), CatalogError> {
    migrate_to(conn, LATEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn raw(path: &std::path::Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        c
    }

    #[test]
    fn an_empty_file_migrates_to_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.db");
        std::fs::File::create(&p).unwrap();
        let cat = Catalog::open(&p).unwrap();
        assert_eq!(cat.schema_version().unwrap(), LATEST);
        let mode: String = cat.with_conn(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn every_earlier_version_migrates_and_keeps_its_rows() {
        for from in 0..LATEST {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("catalog.db");
            {
                let mut c = raw(&p);
                migrate_to(&mut c, from).unwrap();
                assert_eq!(version(&c).unwrap(), from);
                if from >= 1 {
                    c.execute("INSERT INTO projects (name, created) VALUES ('old', 1)", []).unwrap();
                }
            }
            let cat = Catalog::open(&p).unwrap();
            assert_eq!(cat.schema_version().unwrap(), LATEST, "from version {from}");
            let n: i64 = cat
                .with_conn(|c| Ok(c.query_row("SELECT count(*) FROM projects WHERE name = 'old'", [], |r| r.get(0))?))
                .unwrap();
            assert_eq!(n, i64::from(from >= 1), "from version {from}");
            // Opening again is a no-op.
            drop(cat);
            assert_eq!(Catalog::open(&p).unwrap().schema_version().unwrap(), LATEST);
        }
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.db");
        {
            let mut c = raw(&p);
            migrate(&mut c).unwrap();
            c.execute("UPDATE schema_version SET version = ?1", [LATEST + 1]).unwrap();
        }
        assert!(matches!(Catalog::open(&p), Err(CatalogError::TooNew { .. })));
    }
}
