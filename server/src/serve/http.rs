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

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use shoal_proto::ChunkHash;

use super::session::Sessions;
use crate::image::chain;
use crate::store::{Store, StoreError};

#[derive(Clone)]
pub struct App {
    pub store: Arc<Store>,
    pub sessions: Arc<Sessions>,
}

pub fn router(app: App) -> Router {
    Router::new()
        .route("/v1/key", get(key))
        .route("/v1/images/{image}/manifest", get(manifest))
        .route("/v1/images/{image}/session", post(session))
        .route("/v1/chunks/{hash}", get(chunk))
        .with_state(app)
}

/// Errors as HTTP answers: the one place they are mapped.
enum ApiError {
    NotFound(String),
    BadRequest(String),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, msg) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Internal(m) => {
                tracing::error!("{m}");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        (code, Json(json!({ "error": msg }))).into_response()
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
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
