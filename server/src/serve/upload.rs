//! The HTTP API agents capture through: they upload only the chunks the
//! store lacks, then the manifest, which the server checks, signs and
//! stores as a new image.
//!
//! - `POST /v1/chunks/missing`: body a JSON list of chunk hashes (hex);
//!   answer the ones the store lacks, in the order given
//! - `PUT  /v1/chunks/{hash}`: body the chunk's bytes (at most
//!   `MAX_CHUNK_BYTES`); refused unless their BLAKE3 is `{hash}`
//! - `POST /v1/captures`: body an unsigned manifest in its canonical
//!   encoding; every chunk it names must be stored with its size. The
//!   server gives the image a new id and the current time, signs it and
//!   answers `{"id", "name", "version"}`
//!
//! **Unauthenticated.** Anyone who reaches the server can add chunks and
//! images (never replace or delete them): run it on the provisioning
//! network only. The control plane adds agent tokens to these routes.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::Json;
use serde_json::json;
use shoal_proto::chunk::MAX_CHUNK_BYTES;
use shoal_proto::manifest::{Manifest, SignedManifest};
use shoal_proto::{ChunkHash, ImageId, WINDOW_SIZE};

use super::http::{blocking, ApiError, App};

/// Hashes one `missing` request may ask about (about 4.6 MB of JSON).
pub const MAX_MISSING_QUERY: usize = 65_536;

/// The body limits of the upload routes (axum's default is 2 MB).
pub(super) fn missing_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_MISSING_QUERY * 72 + 1024)
}

pub(super) fn chunk_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_CHUNK_BYTES)
}

pub(super) fn manifest_limit() -> DefaultBodyLimit {
    // A manifest of a few TiB of data; the decoder bounds it again.
    DefaultBodyLimit::max(256 << 20)
}

pub(super) async fn missing(State(app): State<App>, body: Bytes) -> Result<Json<Vec<ChunkHash>>, ApiError> {
    let hashes: Vec<ChunkHash> =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("not a list of chunk hashes: {e}")))?;
    if hashes.len() > MAX_MISSING_QUERY {
        return Err(ApiError::BadRequest(format!("at most {MAX_MISSING_QUERY} hashes per request")));
    }
    blocking(move || Ok(Json(hashes.into_iter().filter(|h| !app.store.has_chunk(h)).collect()))).await
}

pub(super) async fn put_chunk(
    State(app): State<App>,
    Path(hash): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hash: ChunkHash =
        hash.parse().map_err(|e: shoal_proto::id::ParseIdError| ApiError::BadRequest(e.to_string()))?;
    blocking(move || {
        let actual = ChunkHash::of(&body);
        if actual != hash {
            return Err(ApiError::BadRequest(format!("the body's BLAKE3 is {actual}, not {hash}")));
        }
        let new = app.store.put_chunk(&hash, &body)?;
        Ok(Json(json!({ "hash": hash, "new": new })))
    })
    .await
}

pub(super) async fn post_image(State(app): State<App>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(move || {
        let mut m = Manifest::decode(&body).map_err(|e| ApiError::BadRequest(format!("manifest: {e}")))?;
        if m.name.is_empty() {
            return Err(ApiError::BadRequest("the image needs a name".into()));
        }
        if m.window_size != WINDOW_SIZE {
            return Err(ApiError::BadRequest(format!(
                "window size {} (this server uses {WINDOW_SIZE})",
                m.window_size
            )));
        }
        let mut absent = Vec::new();
        for (_, c) in m.chunks() {
            if app.store.chunk_len(&c.hash) != Some(u64::from(c.csize)) {
                absent.push(c.hash);
            }
        }
        if !absent.is_empty() {
            let first: Vec<String> = absent.iter().take(4).map(ToString::to_string).collect();
            return Err(ApiError::Conflict(format!(
                "{} chunks are not stored (or not at the size the manifest says), e.g. {}",
                absent.len(),
                first.join(", ")
            )));
        }
        if let Some(base) = m.base {
            app.store.resolve(&base.to_string())?;
        }
        // The id and the time are the server's: an upload never replaces
        // an image, and its date is when it became visible.
        let mut idb = [0u8; 16];
        getrandom::fill(&mut idb).map_err(|e| ApiError::Internal(format!("random image id: {e}")))?;
        m.id = ImageId(idb);
        m.created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let signed = SignedManifest::sign(&m, app.store.keys().signing());
        let txn = app.store.begin()?;
        txn.commit(&signed, &m.id)?;
        tracing::info!(id = %m.id, name = %m.name, version = %m.version, chunks = m.chunk_count(), "image uploaded");
        Ok(Json(json!({ "id": m.id, "name": m.name, "version": m.version })))
    })
    .await
}
