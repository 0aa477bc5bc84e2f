//! The dynamic pool's leases on disk: read whole at start, replaced
//! atomically on every change (write a temporary file, fsync it, rename it
//! over the old one, fsync the directory), so a crash leaves either the old
//! file or the new one, never a torn one.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Larger than any lease file a pool can produce (65536 leases of 18 bytes).
const MAX_LEN: u64 = 2 << 20;

/// The file's bytes, or `None` if there is no file yet.
pub fn load(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LEN {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "lease file too large"));
    }
    Ok(Some(bytes))
}

/// Replaces the file with `bytes`, atomically and durably.
pub fn store(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_replaces_and_load_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        assert_eq!(load(&path).unwrap(), None);
        store(&path, b"one").unwrap();
        store(&path, b"two").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!temp_path(&path).exists());
    }
}
