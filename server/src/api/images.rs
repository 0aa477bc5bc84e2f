//! `/v1/images`: list, show, change, delete, share; create and update
//! from a node (capture jobs) and import (an import job).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{ApiState, Bearer, Body, Problem};
use crate::catalog::images::{ImagePatch, ImageRecord, Share};
use crate::catalog::jobs::{CaptureRequest, ImportRequest, JobRecord};
use crate::catalog::{CatalogError, Name};
use crate::store::StoreError;

/// `POST /v1/images`: a new image from a node's disk or from a URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewImage {
    pub name: Name,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: String,
    /// The image this one derives from (the caller must be able to read it).
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub node: Option<Name>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromNode {
    pub node: Name,
}

pub async fn list(State(s): State<ApiState>, b: Bearer) -> Result<Json<Vec<ImageRecord>>, Problem> {
    s.as_project(b, |c, who| c.list_images(who)).await.map(Json)
}

pub async fn show(
    State(s): State<ApiState>,
    b: Bearer,
    Path(image): Path<String>,
) -> Result<Json<ImageRecord>, Problem> {
    s.as_project(b, move |c, who| c.show_image(who, &image)).await.map(Json)
}

pub async fn update(
    State(s): State<ApiState>,
    b: Bearer,
    Path(image): Path<String>,
    Body(patch): Body<ImagePatch>,
) -> Result<Json<ImageRecord>, Problem> {
    s.as_project(b, move |c, who| c.update_image(who, &image, &patch)).await.map(Json)
}

pub async fn delete(
    State(s): State<ApiState>,
    b: Bearer,
    Path(image): Path<String>,
) -> Result<Json<ImageRecord>, Problem> {
    let store = s.store.clone();
    s.as_project(b, move |c, who| {
        c.delete_image(who, &image, |id| {
            let Some(store) = &store else { return Ok(()) };
            match store.resolve(id) {
                Ok(img) => store.delete(&img).map_err(CatalogError::Store),
                // Already gone from the store: the catalog row was all that was left.
                Err(StoreError::NotFound(_)) => Ok(()),
                Err(e) => Err(CatalogError::Store(e)),
            }
        })
    })
    .await
    .map(Json)
}

pub async fn share(
    State(s): State<ApiState>,
    b: Bearer,
    Path(image): Path<String>,
    Body(share): Body<Share>,
) -> Result<Json<ImageRecord>, Problem> {
    s.as_project(b, move |c, who| c.share_image(who, &image, &share)).await.map(Json)
}

pub async fn unshare(
    State(s): State<ApiState>,
    b: Bearer,
    Path(image): Path<String>,
    Body(share): Body<Share>,
) -> Result<Json<ImageRecord>, Problem> {
    s.as_project(b, move |c, who| c.unshare_image(who, &image, &share)).await.map(Json)
}

pub async fn create(
    State(s): State<ApiState>,
    b: Bearer,
    Body(new): Body<NewImage>,
) -> Result<(StatusCode, Json<JobRecord>), Problem> {
    let job = s
        .as_project(b, move |c, who| match (new.node, new.url) {
            (Some(node), None) => c.create_capture(
                who,
                &CaptureRequest {
                    node,
                    name: Some(new.name),
                    version: new.version,
                    base: new.base,
                    description: new.description,
                    update: None,
                },
            ),
            (None, Some(url)) if new.base.is_none() => c.create_import(
                who,
                &ImportRequest { name: new.name, version: new.version, url, description: new.description },
            ),
            _ => Err(CatalogError::Invalid(
                "give either \"node\" (capture from a node, optionally with \"base\") or \"url\" (import)".into(),
            )),
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

pub async fn update_from_node(
    State(s): State<ApiState>,
    b: Bearer,
    Path(image): Path<String>,
    Body(from): Body<FromNode>,
) -> Result<(StatusCode, Json<JobRecord>), Problem> {
    let req = CaptureRequest {
        node: from.node,
        name: None,
        version: None,
        base: None,
        description: String::new(),
        update: Some(image),
    };
    let job = s.as_project(b, move |c, who| c.create_capture(who, &req)).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}
