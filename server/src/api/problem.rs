//! Errors as RFC 9457 problem documents (`application/problem+json`):
//! the one place catalog errors become status codes.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogError;
use crate::image::chain;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:shoal:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:shoal:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl From<CatalogError> for Problem {
    fn from(e: CatalogError) -> Problem {
        use CatalogError as E;
        let (status, kind) = match &e {
            E::Name(_) | E::Invalid(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            E::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
            E::Exists { .. } => (StatusCode::CONFLICT, "exists"),
            E::Busy { .. } => (StatusCode::CONFLICT, "node-busy"),
            E::InUse { .. } => (StatusCode::CONFLICT, "image-in-use"),
            E::WrongNodeType { .. } => (StatusCode::CONFLICT, "wrong-node-type"),
            E::Expired { .. } => (StatusCode::CONFLICT, "image-expired"),
            E::Finished { .. } => (StatusCode::CONFLICT, "job-finished"),
            E::NoDefaultImage(_) => (StatusCode::CONFLICT, "no-default-image"),
            E::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            E::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            E::Sqlite(_) | E::TooNew { .. } | E::Random(_) | E::Store(_) => {
                tracing::error!("{}", chain(&e));
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Problem::new(status, kind, chain(&e))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
