//! The content-addressed chunk store and image catalog on a local directory.
//!
//! ```text
//! DATA/chunks/ab/abcd…     one file per chunk, named by its BLAKE3
//! DATA/images/ID.manifest  signed manifests
//! DATA/keys/               the server's signing key, extra trusted keys
//! DATA/tmp/                in-flight captures
//! DATA/lock                captures hold it shared, gc exclusive
//! ```
//!
//! A chunk is stored once however many images use it. A capture writes its
//! new chunks under `tmp/`, and [`Txn::commit`] makes them durable
//! (`syncfs`), moves them into `chunks/`, makes that durable, and only then
//! writes the manifest (temporary file, fsync, rename, fsync of the
//! directory). A crash at any point leaves either no manifest or a complete
//! image; leftovers in `tmp/` and unreferenced chunks are removed by
//! [`Store::gc`].

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use shoal_agent::capture::ChunkSink;
use shoal_agent::deploy::ChunkSource;
use shoal_proto::chunk::EncodedChunk;
use shoal_proto::manifest::{ChunkRef, Manifest, SignedManifest, VerifiedManifest};
use shoal_proto::{ChunkHash, ImageId, KeyId};

use crate::keys::Keys;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    /// no image has that id or name
    #[error("no image named {0}")]
    NotFound(String),
    /// more than one image matches an id prefix
    #[error("{0} matches more than one image id; give more digits")]
    Ambiguous(String),
    /// a stored manifest failed to decode or verify
    #[error("image {id}")]
    Manifest { id: String, source: shoal_proto::manifest::SignatureError },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

pub struct Store {
    root: PathBuf,
    keys: Keys,
}

/// A stored image: its verified manifest and where it lives.
pub struct StoredImage {
    pub manifest: Manifest,
    pub signer: KeyId,
    pub path: PathBuf,
}

/// What garbage collection found or removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct GcStats {
    pub images: usize,
    pub chunks_kept: u64,
    pub chunks_removed: u64,
    pub bytes_removed: u64,
    pub tmp_removed: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for d in ["chunks", "images", "keys", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_at(&p))?;
        }
        let keys = Keys::load_or_create(&root.join("keys"))?;
        Ok(Store { root: root.to_owned(), keys })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn chunk_path(&self, h: &ChunkHash) -> PathBuf {
        let hex = h.to_hex();
        self.root.join("chunks").join(&hex[..2]).join(hex)
    }

    fn manifest_path(&self, id: &ImageId) -> PathBuf {
        self.root.join("images").join(format!("{id}.manifest"))
    }

    fn lock(&self, exclusive: bool) -> Result<nix::fcntl::Flock<File>, StoreError> {
        let p = self.root.join("lock");
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(&p).map_err(io_at(&p))?;
        let arg = if exclusive { nix::fcntl::FlockArg::LockExclusive } else { nix::fcntl::FlockArg::LockShared };
        nix::fcntl::Flock::lock(f, arg).map_err(|(_, e)| StoreError::Io { path: p, source: e.into() })
    }

    /// Starts a capture: new chunks go to a private directory until commit.
    pub fn begin(&self) -> Result<Txn<'_>, StoreError> {
        let lock = self.lock(false)?;
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd)
            .map_err(|e| StoreError::Io { path: self.root.clone(), source: std::io::Error::other(e.to_string()) })?;
        let dir = self.root.join("tmp").join(format!("capture-{}", hex::encode(rnd)));
        fs::create_dir(&dir).map_err(io_at(&dir))?;
        Ok(Txn { store: self, dir, new: Mutex::new(HashSet::new()), _lock: lock, committed: false })
    }

    /// A directory for scratch files (imports) that gc cleans if we crash.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.join("tmp").join(name)
    }

    pub fn has_chunk(&self, h: &ChunkHash) -> bool {
        self.chunk_path(h).exists()
    }

    pub fn read_chunk(&self, h: &ChunkHash) -> io::Result<Vec<u8>> {
        let p = self.chunk_path(h);
        let mut f = File::open(&p).map_err(|e| annotate(e, &p))?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(|e| annotate(e, &p))?;
        Ok(v)
    }

    /// The stored length of a chunk, if the store has it.
    pub fn chunk_len(&self, h: &ChunkHash) -> Option<u64> {
        fs::metadata(self.chunk_path(h)).ok().map(|m| m.len())
    }

    /// Stores one uploaded chunk. The caller has checked that `bytes`
    /// hash to `hash`. Written under `tmp/`, synced, renamed into
    /// `chunks/`, and the directory synced, under the shared lock (as a
    /// capture), so a chunk is either absent or complete. Returns whether
    /// it was new.
    ///
    /// The chunk is unreferenced until a manifest names it: a `gc` that
    /// runs between the upload and the manifest removes it, and the
    /// manifest is then refused as incomplete.
    pub fn put_chunk(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<bool, StoreError> {
        let _lock = self.lock(false)?;
        let to = self.chunk_path(hash);
        if to.exists() {
            return Ok(false);
        }
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd)
            .map_err(|e| StoreError::Io { path: self.root.clone(), source: std::io::Error::other(e.to_string()) })?;
        let tmp = self.root.join("tmp").join(format!("upload-{}-{}", hash.to_hex(), hex::encode(rnd)));
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o444).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io { path: tmp, source: e });
        }
        let parent = to.parent().expect("invariant: chunk paths have a parent");
        fs::create_dir_all(parent).map_err(io_at(parent))?;
        fs::rename(&tmp, &to).map_err(io_at(&to))?;
        sync_dir(parent)?;
        Ok(true)
    }

    /// Every image whose manifest verifies, newest first. Manifests that do
    /// not verify are returned separately so they can be reported.
    pub fn list(&self) -> Result<(Vec<StoredImage>, Vec<StoreError>), StoreError> {
        let dir = self.root.join("images");
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let path = entry.map_err(io_at(&dir))?.path();
            if path.extension().is_none_or(|e| e != "manifest") {
                continue;
            }
            match self.load_path(&path) {
                Ok(img) => good.push(img),
                Err(e) => bad.push(e),
            }
        }
        good.sort_by(|a, b| (b.manifest.created, &b.manifest.name).cmp(&(a.manifest.created, &a.manifest.name)));
        Ok((good, bad))
    }

    fn load_path(&self, path: &Path) -> Result<StoredImage, StoreError> {
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = fs::read(path).map_err(io_at(path))?;
        let signed = SignedManifest::from_bytes(&bytes)
            .map_err(|e| StoreError::Manifest { id: id.clone(), source: e.into() })?;
        let VerifiedManifest { manifest, signer } =
            signed.verify(&self.keys.trusted()).map_err(|source| StoreError::Manifest { id, source })?;
        Ok(StoredImage { manifest, signer, path: path.to_owned() })
    }

    /// Finds an image by id, unique id prefix (6+ digits), `name` (the
    /// newest of that name) or `name:version`.
    pub fn resolve(&self, what: &str) -> Result<StoredImage, StoreError> {
        if let Ok(id) = what.parse::<ImageId>() {
            let p = self.manifest_path(&id);
            if p.exists() {
                return self.load_path(&p);
            }
        }
        // Load every manifest that verifies: resolving a name must never pick
        // a tampered one, and its error is reported only if nothing matches.
        let dir = self.root.join("images");
        let mut by_id = Vec::new();
        let mut by_name = Vec::new();
        let mut failures = Vec::new();
        let is_hex = what.len() >= 6 && what.chars().all(|c| c.is_ascii_hexdigit());
        let (name, version) = match what.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (what, None),
        };
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let path = entry.map_err(io_at(&dir))?.path();
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if is_hex && stem.starts_with(&what.to_ascii_lowercase()) {
                by_id.push(path.clone());
            }
            match self.load_path(&path) {
                Ok(img) if img.manifest.name == name && version.is_none_or(|v| v == img.manifest.version) => {
                    by_name.push(img)
                }
                Ok(_) => {}
                Err(e) => failures.push((stem, e)),
            }
        }
        match by_id.len() {
            1 => return self.load_path(&by_id[0]),
            0 => {}
            _ => return Err(StoreError::Ambiguous(what.into())),
        }
        by_name.sort_by_key(|i| std::cmp::Reverse(i.manifest.created));
        if let Some(img) = by_name.into_iter().next() {
            return Ok(img);
        }
        Err(StoreError::NotFound(what.into()))
    }

    /// Removes an image's manifest; its chunks go at the next gc.
    pub fn delete(&self, img: &StoredImage) -> Result<(), StoreError> {
        fs::remove_file(&img.path).map_err(io_at(&img.path))?;
        sync_dir(&self.root.join("images"))
    }

    /// Removes chunks no manifest references and leftovers of crashed
    /// captures. Waits for running captures to finish. Manifests that do not
    /// verify still protect their chunks (they may be another server's).
    pub fn gc(&self, dry_run: bool) -> Result<GcStats, StoreError> {
        let _lock = self.lock(true)?;
        let mut stats = GcStats::default();
        let mut live: HashSet<ChunkHash> = HashSet::new();
        let dir = self.root.join("images");
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let path = entry.map_err(io_at(&dir))?.path();
            let bytes = fs::read(&path).map_err(io_at(&path))?;
            let m = SignedManifest::from_bytes(&bytes).ok().and_then(|s| s.decode_unverified().ok());
            match m {
                Some(m) => {
                    stats.images += 1;
                    live.extend(m.chunks().map(|(_, c)| c.hash));
                }
                None => {
                    // Undecodable: we cannot tell what it references, so
                    // collect nothing rather than risk a live chunk.
                    return Err(StoreError::Manifest {
                        id: path.display().to_string(),
                        source: shoal_proto::manifest::SignatureError::BadSignature,
                    });
                }
            }
        }
        let chunks = self.root.join("chunks");
        for sub in fs::read_dir(&chunks).map_err(io_at(&chunks))? {
            let sub = sub.map_err(io_at(&chunks))?.path();
            for f in fs::read_dir(&sub).map_err(io_at(&sub))? {
                let f = f.map_err(io_at(&sub))?;
                let keep =
                    f.file_name().to_str().and_then(|n| n.parse::<ChunkHash>().ok()).is_some_and(|h| live.contains(&h));
                if keep {
                    stats.chunks_kept += 1;
                    continue;
                }
                stats.chunks_removed += 1;
                stats.bytes_removed += f.metadata().map(|m| m.len()).unwrap_or(0);
                if !dry_run {
                    fs::remove_file(f.path()).map_err(io_at(&f.path()))?;
                }
            }
        }
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_at(&tmp))? {
            let p = entry.map_err(io_at(&tmp))?.path();
            stats.tmp_removed += 1;
            if !dry_run {
                let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                r.map_err(io_at(&p))?;
            }
        }
        Ok(stats)
    }
}

/// An in-progress capture. Dropping it without [`Txn::commit`] discards its
/// new chunks.
pub struct Txn<'a> {
    store: &'a Store,
    dir: PathBuf,
    new: Mutex<HashSet<ChunkHash>>,
    _lock: nix::fcntl::Flock<File>,
    committed: bool,
}

impl ChunkSink for Txn<'_> {
    fn put(&self, chunk: &EncodedChunk) -> io::Result<bool> {
        if self.store.has_chunk(&chunk.hash) {
            return Ok(false);
        }
        {
            let mut new = self.new.lock().map_err(|_| io::Error::other("chunk set lock poisoned"))?;
            if !new.insert(chunk.hash) {
                return Ok(false);
            }
        }
        let p = self.dir.join(chunk.hash.to_hex());
        let mut f =
            OpenOptions::new().write(true).create_new(true).mode(0o444).open(&p).map_err(|e| annotate(e, &p))?;
        f.write_all(&chunk.bytes).map_err(|e| annotate(e, &p))?;
        Ok(true)
    }
}

impl Txn<'_> {
    /// Makes the new chunks and then the manifest durable and visible.
    pub fn commit(mut self, signed: &SignedManifest, id: &ImageId) -> Result<PathBuf, StoreError> {
        let root = &self.store.root;
        syncfs(&self.dir)?;
        let new = std::mem::take(&mut *self.new.lock().map_err(|_| StoreError::Io {
            path: self.dir.clone(),
            source: io::Error::other("chunk set lock poisoned"),
        })?);
        let mut dirs = HashSet::new();
        for h in &new {
            let to = self.store.chunk_path(h);
            let parent = to.parent().expect("invariant: chunk paths have a parent").to_owned();
            if dirs.insert(parent.clone()) {
                fs::create_dir_all(&parent).map_err(io_at(&parent))?;
            }
            let from = self.dir.join(h.to_hex());
            fs::rename(&from, &to).map_err(io_at(&to))?;
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        sync_dir(&root.join("chunks"))?;
        let final_path = self.store.manifest_path(id);
        let tmp = self.dir.join("manifest");
        {
            let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
            f.write_all(&signed.to_bytes()).map_err(io_at(&tmp))?;
            f.sync_all().map_err(io_at(&tmp))?;
        }
        fs::rename(&tmp, &final_path).map_err(io_at(&final_path))?;
        sync_dir(&root.join("images"))?;
        self.committed = true;
        let _ = fs::remove_dir_all(&self.dir);
        Ok(final_path)
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl ChunkSource for Store {
    fn fetch(&self, c: &ChunkRef) -> io::Result<Vec<u8>> {
        self.read_chunk(&c.hash)
    }

    /// Reads the chunk and checks its length and BLAKE3: a damaged store
    /// is found before a deploy writes anything.
    fn check(&self, c: &ChunkRef) -> io::Result<()> {
        let p = self.chunk_path(&c.hash);
        let bytes = self.read_chunk(&c.hash)?;
        if bytes.len() as u64 != u64::from(c.csize) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {} bytes, the manifest says {}", p.display(), bytes.len(), c.csize),
            ));
        }
        if ChunkHash::of(&bytes) != c.hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: content does not match its hash", p.display()),
            ));
        }
        Ok(())
    }
}

fn annotate(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

fn sync_dir(p: &Path) -> Result<(), StoreError> {
    File::open(p).and_then(|f| f.sync_all()).map_err(io_at(p))
}

fn syncfs(p: &Path) -> Result<(), StoreError> {
    let f = File::open(p).map_err(io_at(p))?;
    nix::unistd::syncfs(f.as_fd()).map_err(|e| StoreError::Io { path: p.to_owned(), source: e.into() })
}
