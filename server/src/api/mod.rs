//! The control API under `/v1` (and `/metrics`): images, nodes, jobs,
//! the agent endpoints, status, and the OpenAPI document.
//!
//! **One table, two views.** [`routes`] lists every route once: method,
//! path, handler, who may call it, what it answers and a summary. The
//! axum router ([`router`]) and the OpenAPI document
//! (`GET /v1/openapi.json`, [`openapi::document`]) are both built from it,
//! and a test walks both, so they cannot drift apart.
//!
//! Handlers are thin: they parse the request (path, JSON body, bearer
//! token), call one [`Catalog`] operation on a blocking thread, and answer
//! its value as JSON or its error as a problem document ([`problem`]).
//! Jobs are recorded here and executed by the job runner (`crate::jobs`);
//! `POST`s that create jobs answer `202 Accepted` with the job.

pub mod agent;
pub mod images;
pub mod jobs;
pub mod nodes;
pub mod openapi;
pub mod problem;
pub mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::catalog::{AgentCaller, Catalog, CatalogError, ProjectCaller};
use crate::metrics::Registry;
use crate::store::Store;
pub use problem::Problem;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub catalog: Arc<Catalog>,
    /// Where image bytes live (deleting an image removes its manifest).
    pub store: Option<Arc<Store>>,
    pub metrics: Arc<Registry>,
    /// Whether a reload that does not say waits for the first-boot
    /// check-in (`shoal server --first-boot-wait`).
    pub first_boot_wait: bool,
}

impl ApiState {
    /// The state for a catalog and store, with the catalog's gauges
    /// (`shoal_jobs`, `shoal_nodes`) registered in `metrics`.
    pub fn new(catalog: Arc<Catalog>, store: Option<Arc<Store>>, metrics: Arc<Registry>) -> ApiState {
        status::register_gauges(&catalog, &metrics);
        ApiState { catalog, store, metrics, first_boot_wait: false }
    }

    /// Runs catalog work on a blocking thread.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, Problem> {
        let cat = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || f(&cat))
            .await
            .map_err(|e| Problem::internal(format!("catalog task: {e}")))?
            .map_err(Problem::from)
    }

    /// Authenticates a project token, then runs `f` for that project.
    pub(crate) async fn as_project<T: Send + 'static>(
        &self,
        bearer: Bearer,
        f: impl FnOnce(&Catalog, &ProjectCaller) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, Problem> {
        self.run(move |c| {
            let caller = c.authenticate(bearer.0.as_deref())?;
            f(c, caller.project()?)
        })
        .await
    }

    /// Authenticates an agent token, then runs `f` for that node.
    pub(crate) async fn as_agent<T: Send + 'static>(
        &self,
        bearer: Bearer,
        f: impl FnOnce(&Catalog, &AgentCaller) -> Result<T, CatalogError> + Send + 'static,
    ) -> Result<T, Problem> {
        self.run(move |c| {
            let caller = c.authenticate(bearer.0.as_deref())?;
            f(c, caller.agent()?)
        })
        .await
    }
}

/// Opens the catalog beside `store` (making it on first start), records
/// any stored image it lacks under the default project, and makes the
/// API's state with a fresh metrics registry.
pub fn control_state(store: Arc<Store>) -> Result<ApiState, CatalogError> {
    let catalog = Catalog::open_in(store.root())?;
    let added = catalog.register_store(&store)?;
    if added > 0 {
        tracing::info!(added, project = crate::catalog::DEFAULT_PROJECT, "stored images recorded in the catalog");
    }
    Ok(ApiState::new(Arc::new(catalog), Some(store), Arc::new(Registry::default())))
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    None,
    /// A project's API token.
    Project,
    /// A node's one-time agent token, for that node only.
    Agent,
}

/// One route: the single source of both the router and the document.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub auth: Auth,
    /// The status of a successful answer.
    pub ok: u16,
    pub summary: &'static str,
    /// What the JSON request body holds, if the route takes one.
    pub body: Option<&'static str>,
    pub make: fn() -> MethodRouter<ApiState>,
}

macro_rules! route {
    ($m:ident $path:literal => $h:path, $auth:ident, $ok:literal, $summary:literal $(, body: $body:literal)?) => {
        Route {
            method: Method::$m,
            path: $path,
            auth: Auth::$auth,
            ok: $ok,
            summary: $summary,
            body: None $(.or(Some($body)))?,
            make: || axum::routing::on(MethodFilter::$m, $h),
        }
    };
}

/// Every route of the control API.
pub fn routes() -> Vec<Route> {
    vec![
        route!(GET "/v1/openapi.json" => openapi::serve, None, 200, "This API's OpenAPI 3 document"),
        route!(GET "/metrics" => status::metrics, None, 200, "Prometheus metrics: jobs and nodes by state, and counters"),
        route!(GET "/v1/status" => status::status, Project, 200, "Summary: nodes and jobs by state, images visible"),
        route!(GET "/v1/projects" => status::projects, Project, 200, "The caller's project (every project for an admin)"),
        route!(PUT "/v1/projects/{project}/default-image" => status::default_image, Project, 200,
            "Set the image reloads use when none is named", body: "{\"image\": IMAGE}"),
        route!(GET "/v1/images" => images::list, Project, 200, "Images the caller's project may read, newest first"),
        route!(POST "/v1/images" => images::create, Project, 202,
            "Create an image: a capture job from a node, or an import job from a URL",
            body: "{\"name\", \"version\"?, \"description\"?, \"base\"?, and \"node\" or \"url\"}"),
        route!(GET "/v1/images/{image}" => images::show, Project, 200, "One image"),
        route!(PATCH "/v1/images/{image}" => images::update, Project, 200, "Change an image's metadata (owner only)",
            body: "{\"description\"?, \"node_types\"?, \"valid_until\"?, \"file\"?, \"date\"?, \"recipe\"?}"),
        route!(DELETE "/v1/images/{image}" => images::delete, Project, 200, "Delete an image (owner only)"),
        route!(POST "/v1/images/{image}/share" => images::share, Project, 200,
            "Share an image read-only with a project, or make it public (owner only)",
            body: "{\"project\": NAME} or {\"public\": true}"),
        route!(POST "/v1/images/{image}/unshare" => images::unshare, Project, 200,
            "Stop sharing an image with a project, or make it not public (owner only)",
            body: "{\"project\": NAME} or {\"public\": true}"),
        route!(POST "/v1/images/{image}/update" => images::update_from_node, Project, 202,
            "Capture a new version of an image from a node (owner only): a capture job", body: "{\"node\": NAME}"),
        route!(GET "/v1/nodes" => nodes::list, Project, 200, "The project's nodes (every node for an admin)"),
        route!(POST "/v1/nodes" => nodes::register, Project, 201, "Register a node",
            body: "{\"name\", \"mac\", \"node_type\", \"power\": {\"driver\", \"address\"}, \"project\"?, \"ip\"?, \"disk\"?}"),
        route!(GET "/v1/nodes/{node}" => nodes::show, Project, 200, "One node"),
        route!(PUT "/v1/nodes/{node}/boot" => nodes::set_boot, Project, 200,
            "Set a node's boot decision: local or menu", body: "{\"boot\": \"local\" | \"menu\"}"),
        route!(GET "/v1/nodes/{node}/metadata" => nodes::metadata, Project, 200,
            "A node's first-boot metadata: SSH keys, user-data, ephemeral disk, IMDSv2 requirement"),
        route!(PATCH "/v1/nodes/{node}/metadata" => nodes::set_metadata, Project, 200,
            "Change a node's first-boot metadata (fields left out stay; null removes)",
            body: "{\"ssh_keys\"?: [KEY], \"user_data\"?: TEXT|null, \"ephemeral_disk\"?: PATH|null, \"imdsv2_required\"?: bool}"),
        route!(POST "/v1/nodes/{node}/instance" => nodes::new_instance, Project, 201,
            "Start a new instance of a node reloaded outside Shoal's jobs: new instance-id and initial password (shown once)"),
        route!(GET "/v1/jobs" => jobs::list, Project, 200, "The project's jobs, newest first"),
        route!(POST "/v1/jobs" => jobs::create, Project, 202, "Create a reload, capture or wipe job",
            body: "{\"kind\": \"reload\", \"nodes\", \"image\"?, \"first_boot\"?} | {\"kind\": \"wipe\", \"nodes\"} | {\"kind\": \"capture\", \"node\", \"name\" or \"update\", ...}"),
        route!(GET "/v1/jobs/{job}" => jobs::show, Project, 200, "A job with per-node progress and history"),
        route!(POST "/v1/jobs/{job}/cancel" => jobs::cancel, Project, 200, "Cancel an unfinished job"),
        route!(GET "/v1/agent/{mac}/task" => agent::task, Agent, 200, "The agent's task for its node"),
        route!(POST "/v1/agent/{mac}/heartbeat" => agent::heartbeat, Agent, 200, "The agent's progress",
            body: "{\"progress\": 0-100, \"message\"?}"),
        route!(POST "/v1/agent/{mac}/report" => agent::report, Agent, 200, "How the agent's task ended, with its log",
            body: "{\"ok\": bool, \"message\"?, \"log\"?}"),
    ]
}

/// The control API's routes, to `.merge()` beside the image-serving ones.
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new();
    for route in routes() {
        r = r.route(route.path, (route.make)());
    }
    r.with_state(state)
}

/// The bearer token of a request, if any. Whether it is any good is the
/// catalog's to say.
pub struct Bearer(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Bearer, Problem> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_string());
        Ok(Bearer(token))
    }
}

/// A JSON request body whose rejection is a problem document.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Body<T>, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            // Malformed JSON and JSON that does not fit (a bad name, a
            // missing field) are both the client's bad request.
            Err(e) if e.status() == axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Err(Problem::new(e.status(), "unsupported-media-type", e.body_text()))
            }
            Err(e) => Err(Problem::bad_request(e.body_text())),
        }
    }
}
