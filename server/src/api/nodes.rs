//! `/v1/nodes`: register, list, show, set the boot decision, and the
//! first-boot metadata and instances.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{ApiState, Bearer, Body, Problem};
use crate::catalog::metadata::{InstanceIssued, MetadataUpdate, NodeMetadata};
use crate::catalog::nodes::{NewNode, NodeRecord};
use crate::catalog::Boot;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBoot {
    pub boot: Boot,
}

pub async fn register(
    State(s): State<ApiState>,
    b: Bearer,
    Body(new): Body<NewNode>,
) -> Result<(StatusCode, Json<NodeRecord>), Problem> {
    let node = s.as_project(b, move |c, who| c.register_node(who, &new)).await?;
    Ok((StatusCode::CREATED, Json(node)))
}

pub async fn list(State(s): State<ApiState>, b: Bearer) -> Result<Json<Vec<NodeRecord>>, Problem> {
    s.as_project(b, |c, who| c.list_nodes(who)).await.map(Json)
}

pub async fn show(State(s): State<ApiState>, b: Bearer, Path(node): Path<String>) -> Result<Json<NodeRecord>, Problem> {
    s.as_project(b, move |c, who| c.show_node(who, &node)).await.map(Json)
}

pub async fn set_boot(
    State(s): State<ApiState>,
    b: Bearer,
    Path(node): Path<String>,
    Body(req): Body<SetBoot>,
) -> Result<Json<NodeRecord>, Problem> {
    s.as_project(b, move |c, who| c.set_boot(who, &node, req.boot)).await.map(Json)
}

pub async fn metadata(
    State(s): State<ApiState>,
    b: Bearer,
    Path(node): Path<String>,
) -> Result<Json<NodeMetadata>, Problem> {
    s.as_project(b, move |c, who| c.node_metadata(who, &node)).await.map(Json)
}

pub async fn set_metadata(
    State(s): State<ApiState>,
    b: Bearer,
    Path(node): Path<String>,
    Body(u): Body<MetadataUpdate>,
) -> Result<Json<NodeMetadata>, Problem> {
    s.as_project(b, move |c, who| c.set_node_metadata(who, &node, &u)).await.map(Json)
}

/// A new instance for a node reloaded outside Shoal's jobs; the answer
/// holds its initial password, shown this once.
pub async fn new_instance(
    State(s): State<ApiState>,
    b: Bearer,
    Path(node): Path<String>,
) -> Result<(StatusCode, Json<InstanceIssued>), Problem> {
    let i = s.as_project(b, move |c, who| c.new_instance(who, &node)).await?;
    Ok((StatusCode::CREATED, Json(i)))
}
