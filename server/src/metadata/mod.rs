//! The metadata service: what a freshly reloaded node asks at first boot,
//! in the two forms stock cloud images understand (EC2, [`ec2`], and
//! NoCloud, [`nocloud`]) plus Shoal's one-time initial password.
//!
//! Routes: `GET /latest/...` and `/2009-04-04/...` (`meta-data/...`,
//! `user-data`), `PUT /latest/api/token` (IMDSv2), `GET
//! /nocloud/{node}/{meta-data,user-data,vendor-data,network-config}`, and
//! `GET /shoal/v1/initial-password` (the SHA-512-crypt hash, once). They
//! are served on the main HTTP port and, with `--metadata-listen`, on
//! their own listener (e.g. 169.254.169.254:80).
//!
//! **Architecture Invariant:** a request is answered about the node whose
//! registered address (`nodes.ip`) is the request's TCP source address,
//! and about no other: no header (X-Forwarded-For, Host, the NoCloud
//! prefix) names the node, and an IMDSv2 token counts only for the node
//! and instance it was issued to. Token PUTs that carry X-Forwarded-For
//! are refused, as on EC2, so a proxy on the node cannot fetch tokens.
//!
//! Handlers are thin: identify, ask the catalog ([`crate::catalog::metadata`]),
//! render with the pure functions of [`ec2`] and [`nocloud`]. Every answer
//! about a node's current instance records its first-boot check-in.

pub mod ec2;
pub mod nocloud;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;

use crate::catalog::metadata::{NodeView, PasswordFetch};
use crate::catalog::{Catalog, CatalogError};

/// The IMDSv2 token header.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The IMDSv2 TTL header a token PUT must carry.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";

/// What the handlers share.
#[derive(Clone)]
pub struct MetadataState {
    pub catalog: Arc<Catalog>,
    /// What `placement/availability-zone` answers.
    pub zone: String,
}

/// Why a metadata request was refused. Bodies are plain text, as EC2's are.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// no registered node has the request's source address, or it has no
    /// current instance
    #[error("no node with address {0} is known to the metadata service")]
    UnknownNode(IpAddr),
    #[error("not found")]
    NotFound,
    #[error("this node requires an IMDSv2 token: PUT /latest/api/token first")]
    TokenRequired,
    #[error("the metadata token is invalid or expired")]
    BadToken,
    #[error("token requests through a proxy (X-Forwarded-For) are refused")]
    Forwarded,
    #[error("{TTL_HEADER} must be 1 to 21600 seconds")]
    BadTtl,
    #[error("the initial password was handed out already (unix time {0})")]
    PasswordServed(i64),
    #[error("metadata catalog")]
    Catalog(#[from] CatalogError),
}

impl IntoResponse for MetadataError {
    fn into_response(self) -> Response {
        use MetadataError as E;
        let status = match &self {
            E::UnknownNode(_) | E::NotFound => StatusCode::NOT_FOUND,
            E::TokenRequired | E::BadToken => StatusCode::UNAUTHORIZED,
            E::Forwarded => StatusCode::FORBIDDEN,
            E::BadTtl => StatusCode::BAD_REQUEST,
            E::PasswordServed(_) => StatusCode::GONE,
            E::Catalog(CatalogError::Invalid(_)) => StatusCode::BAD_REQUEST,
            E::Catalog(CatalogError::NotFound { .. }) => StatusCode::NOT_FOUND,
            E::Catalog(_) => {
                tracing::error!("{}", crate::image::chain(&self));
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, format!("{self}\n")).into_response()
    }
}

type Answer = Result<String, MetadataError>;

/// The metadata routes, to serve alone or `.merge()` beside the others.
/// They need the connection's address: serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(state: MetadataState) -> Router {
    let mut r = Router::new();
    for v in ec2::VERSIONS {
        r = r
            .route(&format!("/{v}"), get(version))
            .route(&format!("/{v}/"), get(version))
            .route(&format!("/{v}/meta-data"), get(meta_root))
            .route(&format!("/{v}/meta-data/"), get(meta_root))
            .route(&format!("/{v}/meta-data/{{*path}}"), get(meta))
            .route(&format!("/{v}/user-data"), get(user_data));
    }
    r.route("/latest/api/token", put(token))
        .route("/nocloud/{node}/{file}", get(nocloud_file))
        .route("/shoal/v1/initial-password", get(initial_password))
        .with_state(state)
}

/// The source address as IPv4 (v4-mapped v6 included).
fn source(addr: SocketAddr) -> Result<Ipv4Addr, MetadataError> {
    match addr.ip().to_canonical() {
        IpAddr::V4(a) => Ok(a),
        other => Err(MetadataError::UnknownNode(other)),
    }
}

async fn blocking<T: Send + 'static>(
    s: &MetadataState,
    f: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, MetadataError> {
    let cat = Arc::clone(&s.catalog);
    match tokio::task::spawn_blocking(move || f(&cat)).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(MetadataError::Catalog(CatalogError::Invalid(format!("metadata task: {e}")))),
    }
}

/// The node at the source address, after its token (if it sent one, or
/// must) checks out; records the first-boot check-in.
async fn identify(s: &MetadataState, addr: SocketAddr, headers: &HeaderMap) -> Result<NodeView, MetadataError> {
    let ip = source(addr)?;
    let token = match headers.get(TOKEN_HEADER) {
        Some(t) => Some(t.to_str().map_err(|_| MetadataError::BadToken)?.to_string()),
        None => None,
    };
    let (v, valid) = blocking(s, move |c| {
        let Some(v) = c.metadata_view(ip)? else { return Ok((None, false)) };
        let valid = match &token {
            Some(t) => c.metadata_token_valid(ip, t)?,
            None => !v.meta.imdsv2_required,
        };
        if valid {
            // The node booted its disk as this instance: a reload waiting
            // for its first boot is done.
            c.record_metadata_fetch(&v.node, &v.instance_id)?;
            c.first_boot_checkin(&v.node, &v.instance_id)?;
        }
        Ok((Some(v), valid))
    })
    .await?;
    let v = v.ok_or(MetadataError::UnknownNode(IpAddr::V4(ip)))?;
    match (valid, headers.contains_key(TOKEN_HEADER)) {
        (true, _) => Ok(v),
        (false, true) => Err(MetadataError::BadToken),
        (false, false) => Err(MetadataError::TokenRequired),
    }
}

async fn version(State(s): State<MetadataState>, ConnectInfo(a): ConnectInfo<SocketAddr>, h: HeaderMap) -> Answer {
    Ok(ec2::version_listing(&identify(&s, a, &h).await?))
}

async fn meta_root(State(s): State<MetadataState>, ConnectInfo(a): ConnectInfo<SocketAddr>, h: HeaderMap) -> Answer {
    let v = identify(&s, a, &h).await?;
    ec2::meta_data("", &v, &s.zone).ok_or(MetadataError::NotFound)
}

async fn meta(
    State(s): State<MetadataState>,
    ConnectInfo(a): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path(path): Path<String>,
) -> Answer {
    let v = identify(&s, a, &h).await?;
    ec2::meta_data(&path, &v, &s.zone).ok_or(MetadataError::NotFound)
}

async fn user_data(State(s): State<MetadataState>, ConnectInfo(a): ConnectInfo<SocketAddr>, h: HeaderMap) -> Answer {
    identify(&s, a, &h).await?.meta.user_data.ok_or(MetadataError::NotFound)
}

async fn token(
    State(s): State<MetadataState>,
    ConnectInfo(a): ConnectInfo<SocketAddr>,
    h: HeaderMap,
) -> Result<Response, MetadataError> {
    if h.contains_key("x-forwarded-for") {
        return Err(MetadataError::Forwarded);
    }
    let ttl: u32 = h
        .get(TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .filter(|t| (1..=crate::catalog::metadata::MAX_TOKEN_TTL).contains(t))
        .ok_or(MetadataError::BadTtl)?;
    let ip = source(a)?;
    let secret = blocking(&s, move |c| match c.metadata_view(ip)? {
        Some(_) => c.issue_metadata_token(ip, ttl).map(Some),
        None => Ok(None),
    })
    .await?
    .ok_or(MetadataError::UnknownNode(IpAddr::V4(ip)))?;
    Ok(([(TTL_HEADER, ttl.to_string())], secret.expose().to_string()).into_response())
}

async fn nocloud_file(
    State(s): State<MetadataState>,
    ConnectInfo(a): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path((node, file)): Path<(String, String)>,
) -> Answer {
    let v = identify(&s, a, &h).await?;
    // The prefix must name the asking node; it never chooses the node.
    if v.node.as_str() != node {
        return Err(MetadataError::NotFound);
    }
    match file.as_str() {
        "meta-data" => Ok(nocloud::meta_data(&v)),
        "user-data" => Ok(nocloud::user_data(&v)),
        "network-config" => Ok(nocloud::network_config()),
        "vendor-data" => {
            let ip = v.ip;
            let hash = match blocking(&s, move |c| c.take_initial_password(ip)).await? {
                PasswordFetch::Hash(h) => Some(h),
                PasswordFetch::Served(_) | PasswordFetch::None => None,
            };
            Ok(nocloud::vendor_data(&v, hash.as_deref()))
        }
        _ => Err(MetadataError::NotFound),
    }
}

async fn initial_password(
    State(s): State<MetadataState>,
    ConnectInfo(a): ConnectInfo<SocketAddr>,
    h: HeaderMap,
) -> Answer {
    let ip = identify(&s, a, &h).await?.ip;
    match blocking(&s, move |c| c.take_initial_password(ip)).await? {
        PasswordFetch::Hash(h) => Ok(h),
        PasswordFetch::Served(at) => Err(MetadataError::PasswordServed(at)),
        PasswordFetch::None => Err(MetadataError::NotFound),
    }
}
