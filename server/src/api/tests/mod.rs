//! Tests of the control API through its router (no sockets): the
//! permission matrix, every kind of bad input, the job and agent flows,
//! and the OpenAPI document against the routes.

mod errors;
mod flows;
mod openapi;
mod permissions;
mod runner;

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use super::ApiState;
use crate::catalog::boot::{BootDecision, BootDecisions};
use crate::catalog::{Catalog, Mac, Name};
use crate::metrics::Registry;

/// Id of the image every test starts with.
pub const IMG_ID: &str = "0123456789abcdef0123456789abcdef";

/// A catalog with projects `own` (owns image `img`, node `pc-own`),
/// `oth` (node `pc-oth`) and `third`, and a token for each; `adm` is an
/// admin token of project `oth`.
pub struct Bed {
    pub _dir: tempfile::TempDir,
    pub cat: Arc<Catalog>,
    pub app: Router,
    pub own: String,
    pub oth: String,
    pub adm: String,
}

pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Bed {
    pub fn new() -> Bed {
        let dir = tempfile::tempdir().expect("temp dir");
        let cat = Arc::new(Catalog::open_in(dir.path()).expect("catalog"));
        let mut tokens = Vec::new();
        for p in ["own", "oth", "third"] {
            let n = Name::parse(p).unwrap();
            cat.create_project(&n).unwrap();
            tokens.push(cat.create_token(&n, None, false).unwrap().expose().to_string());
        }
        let adm = cat.create_token(&Name::parse("oth").unwrap(), Some(&Name::parse("root").unwrap()), true).unwrap();
        cat.with_conn(|c| {
            c.execute(
                "INSERT INTO images (id, name, version, arch, stamp, created, description, author, owner, visibility)
                 VALUES (?1, 'img', '1', 'x86_64', '', 1000, '', 'me', (SELECT id FROM projects WHERE name = 'own'), 'private')",
                [IMG_ID],
            )?;
            Ok(())
        })
        .unwrap();
        let app = super::router(ApiState::new(Arc::clone(&cat), None, Arc::new(Registry::default())));
        let bed = Bed { _dir: dir, cat, app, own: tokens[0].clone(), oth: tokens[1].clone(), adm: adm.expose().into() };
        bed.node(&bed.own.clone(), "pc-own", "52:54:00:00:00:01");
        bed.node(&bed.oth.clone(), "pc-oth", "52:54:00:00:00:02");
        bed
    }

    pub fn node(&self, token: &str, name: &str, mac: &str) {
        let a = self.call(
            Method::POST,
            "/v1/nodes",
            Some(token),
            Some(serde_json::json!({"name": name, "mac": mac, "node_type": "pc3000",
                                    "power": {"driver": "ipmi", "address": "10.1.1.1"}})),
        );
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    }

    /// One request; answers status, content type and JSON body.
    pub fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(HttpBody::from(b.to_string())),
            None => req.body(HttpBody::empty()),
        }
        .expect("request");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let content_type =
                resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.expect("body");
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Answer { status, content_type, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
        })
    }

    /// Creates a job as `token`; panics unless it is accepted. Returns its id.
    pub fn job(&self, token: &str, body: Value) -> i64 {
        let a = self.call(Method::POST, "/v1/jobs", Some(token), Some(body));
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text);
        a.body["id"].as_i64().expect("job id")
    }

    /// What the PXE side would get for `mac`: the agent token if the node
    /// is in a job.
    pub fn agent_token(&self, mac: &str) -> String {
        match self.cat.decide(Mac::parse(mac).unwrap()).unwrap() {
            BootDecision::Agent { token, .. } => token.expose().to_string(),
            other => panic!("expected an agent boot, got {other:?}"),
        }
    }
}

/// Asserts `a` is a problem document with `status`.
pub fn assert_problem(a: &Answer, status: u16) {
    assert_eq!(a.status.as_u16(), status, "{}", a.text);
    assert_eq!(a.content_type, "application/problem+json", "{}", a.text);
    for f in ["type", "title", "detail"] {
        assert!(a.body[f].as_str().is_some_and(|s| !s.is_empty()), "no {f}: {}", a.text);
    }
    assert_eq!(a.body["status"], status);
}
