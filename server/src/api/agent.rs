//! `/v1/agent/{mac}/...`: what the agent on a node calls, with the
//! one-time agent token it was booted with. A token reaches only its own
//! node's endpoints and is spent by the report. A capture's good report
//! also records the image it uploaded in the catalog, under the job's
//! project.

use axum::extract::{Path, State};
use axum::Json;

use super::{ApiState, Bearer, Body, Problem};
use crate::catalog::agent::{AgentTask, Heartbeat, Report};
use crate::catalog::jobs::{JobNode, JobRecord};
use crate::catalog::{Catalog, JobKind};
use crate::store::Store;

pub async fn task(State(s): State<ApiState>, b: Bearer, Path(mac): Path<String>) -> Result<Json<AgentTask>, Problem> {
    s.as_agent(b, move |c, who| c.agent_task(who, &mac)).await.map(Json)
}

pub async fn heartbeat(
    State(s): State<ApiState>,
    b: Bearer,
    Path(mac): Path<String>,
    Body(hb): Body<Heartbeat>,
) -> Result<Json<JobNode>, Problem> {
    s.as_agent(b, move |c, who| c.agent_heartbeat(who, &mac, &hb)).await.map(Json)
}

pub async fn report(
    State(s): State<ApiState>,
    b: Bearer,
    Path(mac): Path<String>,
    Body(r): Body<Report>,
) -> Result<Json<JobRecord>, Problem> {
    let store = s.store.clone();
    s.as_agent(b, move |c, who| {
        let job = c.agent_report(who, &mac, &r)?;
        if let (true, JobKind::Capture, Some(store)) = (r.ok, job.kind, &store) {
            // The report is recorded: a failure here must not make the
            // agent send it again (its token is spent), so it is logged.
            if let Err(e) = claim_capture(c, store, &job) {
                tracing::warn!(job = %job.id, "recording the captured image in the catalog: {e}");
            }
        }
        Ok(job)
    })
    .await
    .map(Json)
}

/// Records the images in the store named as the capture job's image that
/// the catalog does not have yet, as the job's project's.
fn claim_capture(c: &Catalog, store: &Store, job: &JobRecord) -> Result<(), crate::catalog::CatalogError> {
    let Some(name) = job.params["name"].as_str() else { return Ok(()) };
    let (images, _) = store.list().map_err(crate::catalog::CatalogError::Store)?;
    for img in images.iter().filter(|i| i.manifest.name == name) {
        if c.register_manifest(&img.manifest, &job.project)? {
            tracing::info!(job = %job.id, image = %img.manifest.id, project = %job.project, "captured image recorded");
        }
    }
    Ok(())
}
