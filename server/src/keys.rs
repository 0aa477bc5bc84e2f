//! The server's manifest-signing key and the keys it trusts.
//!
//! `keys/signing.key` holds the 32-byte ed25519 seed (mode 0600), made on
//! first use. `keys/trusted/*.pub` hold other servers' public keys, one
//! hex line each; manifests they signed are accepted too.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::SigningKey;
use shoal_proto::KeyId;

use crate::store::StoreError;

pub struct Keys {
    signing: SigningKey,
    trusted: Vec<KeyId>,
}

impl Keys {
    pub fn load_or_create(dir: &Path) -> Result<Keys, StoreError> {
        let err = |p: &Path| {
            let p = p.to_owned();
            move |source| StoreError::Io { path: p, source }
        };
        let path = dir.join("signing.key");
        let seed: [u8; 32] = match fs::read(&path) {
            Ok(bytes) => bytes.try_into().map_err(|_| StoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "signing key is not 32 bytes"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed)
                    .map_err(|e| StoreError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
                let mut f =
                    OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(err(&path))?;
                f.write_all(&seed).and_then(|_| f.sync_all()).map_err(err(&path))?;
                seed
            }
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let signing = SigningKey::from_bytes(&seed);
        let mut trusted = vec![KeyId(signing.verifying_key().to_bytes())];
        let tdir = dir.join("trusted");
        if let Ok(entries) = fs::read_dir(&tdir) {
            for e in entries.flatten() {
                let text = fs::read_to_string(e.path()).map_err(err(&e.path()))?;
                let key = text.trim().parse::<KeyId>().map_err(|_| StoreError::Io {
                    path: e.path(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a hex ed25519 public key"),
                })?;
                trusted.push(key);
            }
        }
        Ok(Keys { signing, trusted })
    }

    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    pub fn public(&self) -> KeyId {
        KeyId(self.signing.verifying_key().to_bytes())
    }

    pub fn trusted(&self) -> Vec<KeyId> {
        self.trusted.clone()
    }
}
