//! `/v1/status`, `/v1/projects` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiState, Bearer, Body, Problem};
use crate::catalog::projects::Project;
use crate::catalog::{Catalog, Name};
use crate::metrics::Registry;

/// The server at a glance (`shoal status`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// The caller's project.
    pub project: Name,
    /// Images the caller may read.
    pub images: usize,
    /// Every node of the server, by state.
    pub nodes: BTreeMap<String, u64>,
    /// Every job of the server, by state.
    pub jobs: BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultImage {
    pub image: String,
}

/// Registers `shoal_jobs{state}` and `shoal_nodes{state}`, read from the
/// catalog at each scrape.
pub fn register_gauges(catalog: &Arc<Catalog>, metrics: &Registry) {
    let c = Arc::clone(catalog);
    metrics.gauge("shoal_jobs", "Jobs in the catalog, by state", move || match c.job_counts() {
        Ok(v) => v.into_iter().map(|(s, n)| (vec![("state", s.to_string())], n as f64)).collect(),
        Err(e) => {
            tracing::warn!("metrics: counting jobs: {e}");
            Vec::new()
        }
    });
    let c = Arc::clone(catalog);
    metrics.gauge("shoal_nodes", "Registered nodes, by state", move || match c.node_counts() {
        Ok(v) => v.into_iter().map(|(s, n)| (vec![("state", s.to_string())], n as f64)).collect(),
        Err(e) => {
            tracing::warn!("metrics: counting nodes: {e}");
            Vec::new()
        }
    });
}

pub async fn metrics(State(s): State<ApiState>) -> Result<impl IntoResponse, Problem> {
    let m = Arc::clone(&s.metrics);
    let text = tokio::task::spawn_blocking(move || m.render())
        .await
        .map_err(|e| Problem::internal(format!("metrics task: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

pub async fn status(State(s): State<ApiState>, b: Bearer) -> Result<Json<Status>, Problem> {
    s.as_project(b, |c, who| {
        Ok(Status {
            project: who.name.clone(),
            images: c.list_images(who)?.len(),
            nodes: c.node_counts()?.into_iter().map(|(s, n)| (s.to_string(), n)).collect(),
            jobs: c.job_counts()?.into_iter().map(|(s, n)| (s.to_string(), n)).collect(),
        })
    })
    .await
    .map(Json)
}

pub async fn projects(State(s): State<ApiState>, b: Bearer) -> Result<Json<Vec<Project>>, Problem> {
    s.as_project(b, |c, who| c.list_projects(who)).await.map(Json)
}

pub async fn default_image(
    State(s): State<ApiState>,
    b: Bearer,
    Path(project): Path<String>,
    Body(req): Body<DefaultImage>,
) -> Result<Json<Project>, Problem> {
    s.as_project(b, move |c, who| c.set_default_image(who, &Name::parse(&project)?, &req.image)).await.map(Json)
}
