//! The HTTP API nodes use to load images: thin handlers that parse, call
//! the store or the sessions, and map errors to status codes in one place.
//!
//! - `GET  /v1/key`: the server's manifest-signing public key (hex)
//! - `GET  /v1/images` is the control API's (`crate::api`), with the rest
//!   of the catalog's routes
//! - `GET  /v1/images/{image}/manifest`: the signed manifest (bytes)
//! - `POST /v1/images/{image}/session`: the image's multicast session,
//!   started if there is none (JSON)
//! - `GET  /v1/chunks/{hash}`: one chunk (bytes), for nodes that hear no
//!   multicast
//!
//! Network boot (see [`super::boot`]):
//!
//! - `GET /boot/{mac}.ipxe` and `GET /boot/ipxe?mac={mac}`: the node's
//!   iPXE script (text/plain)
//! - `GET /boot/{mac}/load/{image}`: the agent script for a menu choice
//! - `GET /boot/agent/kernel`, `GET /boot/agent/initrd`: the agent
//! - `GET /boot/ipxe.efi`: iPXE for UEFI HTTP boot
//!
//! Agents capture through the routes in [`super::upload`]: `POST
//! /v1/chunks/missing`, `PUT /v1/chunks/{hash}` and `POST /v1/captures` (the control API owns `/v1/images`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use shoal_proto::ChunkHash;

use super::boot::{BootError, BootService};
use super::netboot::BootFiles;
use super::session::Sessions;
use super::upload;
use crate::image::chain;
use crate::store::{Store, StoreError};
use shoal_pxe::dhcp::Mac;

#[derive(Clone)]
pub struct App {
    pub store: Arc<Store>,
    pub sessions: Arc<Sessions>,
    /// `None` when network boot is not configured.
    pub boot: Option<Arc<BootService>>,
    pub files: Arc<BootFiles>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/v1/key", get(key))
        .route("/v1/captures", post(upload::post_image).layer(upload::manifest_limit()))
        .route("/v1/images/{image}/manifest", get(manifest))
        .route("/v1/images/{image}/session", post(session))
        .route("/v1/chunks/missing", post(upload::missing).layer(upload::missing_limit()))
        .route("/v1/chunks/{hash}", get(chunk).put(upload::put_chunk).layer(upload::chunk_limit()))
        .route("/boot/ipxe", get(boot_query))
        .route("/boot/ipxe.efi", get(|State(app): State<App>| send_file(app.files.efi.clone())))
        .route("/boot/agent/kernel", get(|State(app): State<App>| send_file(app.files.kernel.clone())))
        .route("/boot/agent/initrd", get(|State(app): State<App>| send_file(app.files.initrd.clone())))
        .route("/boot/{script}", get(boot_script))
        .route("/boot/{mac}/load/{image}", get(boot_load))
        .with_state(app)
}

/// Errors as HTTP answers: the one place they are mapped.
pub(super) enum ApiError {
    NotFound(String),
    BadRequest(String),
    Forbidden(String),
    Unavailable(String),
    /// the request is well formed but does not fit the store's state
    Conflict(String),
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) | StoreError::Ambiguous(_) => ApiError::NotFound(e.to_string()),
            e => ApiError::Internal(chain(&e)),
        }
    }
}

impl From<BootError> for ApiError {
    fn from(e: BootError) -> Self {
        match e {
            BootError::UnknownMac(_) => ApiError::NotFound(e.to_string()),
            BootError::NotAllowed { .. } => ApiError::Forbidden(e.to_string()),
            BootError::NoAgent(_) => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(chain(&e)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, msg) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Internal(m) => {
                tracing::error!("{m}");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        (code, Json(json!({ "error": msg }))).into_response()
    }
}

/// Runs blocking store work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(e.to_string()))?
}

async fn key(State(app): State<App>) -> String {
    app.store.keys().public().to_hex()
}

async fn manifest(State(app): State<App>, Path(image): Path<String>) -> Result<Response, ApiError> {
    blocking(move || {
        let img = app.store.resolve(&image)?;
        let bytes = std::fs::read(&img.path).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Bytes::from(bytes)).into_response())
    })
    .await
}

async fn session(State(app): State<App>, Path(image): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    blocking(move || {
        let img = app.store.resolve(&image)?;
        let info =
            app.sessions.join(&img.manifest).map_err(|e| ApiError::Internal(format!("starting a session: {e}")))?;
        Ok(Json(serde_json::to_value(info).map_err(|e| ApiError::Internal(e.to_string()))?))
    })
    .await
}

async fn chunk(State(app): State<App>, Path(hash): Path<String>) -> Result<Response, ApiError> {
    let hash: ChunkHash =
        hash.parse().map_err(|e: shoal_proto::id::ParseIdError| ApiError::BadRequest(e.to_string()))?;
    blocking(move || {
        if !app.store.has_chunk(&hash) {
            return Err(ApiError::NotFound(format!("no chunk {hash}")));
        }
        let bytes = app.store.read_chunk(&hash).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Bytes::from(bytes)).into_response())
    })
    .await
}

fn boot_service(app: &App) -> Result<&BootService, ApiError> {
    app.boot.as_deref().ok_or_else(|| ApiError::NotFound("network boot is not configured".into()))
}

fn parse_mac(s: &str) -> Result<Mac, ApiError> {
    s.parse().map_err(|e: shoal_pxe::dhcp::ParseMacError| ApiError::BadRequest(e.to_string()))
}

fn ipxe_text(script: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], script).into_response()
}

#[derive(serde::Deserialize)]
struct MacQuery {
    mac: String,
}

async fn boot_query(State(app): State<App>, Query(q): Query<MacQuery>) -> Result<Response, ApiError> {
    Ok(ipxe_text(boot_service(&app)?.script(parse_mac(&q.mac)?)?))
}

async fn boot_script(State(app): State<App>, Path(script): Path<String>) -> Result<Response, ApiError> {
    let mac = script.strip_suffix(".ipxe").ok_or_else(|| ApiError::NotFound(format!("no /boot/{script}")))?;
    Ok(ipxe_text(boot_service(&app)?.script(parse_mac(mac)?)?))
}

async fn boot_load(State(app): State<App>, Path((mac, image)): Path<(String, String)>) -> Result<Response, ApiError> {
    Ok(ipxe_text(boot_service(&app)?.load_script(parse_mac(&mac)?, &image)?))
}

/// Streams a boot file, or 404 when it is not configured.
async fn send_file(path: Option<std::path::PathBuf>) -> Result<Response, ApiError> {
    let path = path.ok_or_else(|| ApiError::NotFound("not configured on this server".into()))?;
    let open = async {
        let file = tokio::fs::File::open(&path).await?;
        let len = file.metadata().await?.len();
        Ok::<_, std::io::Error>((file, len))
    };
    let (file, len) = open.await.map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
    let headers =
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, len.to_string())];
    Ok((headers, body).into_response())
}
