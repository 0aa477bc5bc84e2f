//! `/v1/jobs`: create (reload, capture, wipe), list, show, cancel.
//! Creating a job records it and answers `202 Accepted`; the job runner
//! (`crate::jobs`) executes it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{ApiState, Bearer, Body, Problem};
use crate::catalog::jobs::{JobRecord, NewJob};
use crate::catalog::metadata::ReloadAccepted;
use crate::catalog::JobId;

fn job_id(s: &str) -> Result<JobId, Problem> {
    s.parse().map_err(|_| Problem::bad_request(format!("job id {s:?} is not a number")))
}

pub async fn create(
    State(s): State<ApiState>,
    b: Bearer,
    Body(mut req): Body<NewJob>,
) -> Result<(StatusCode, Json<ReloadAccepted>), Problem> {
    if let NewJob::Reload(r) = &mut req {
        r.first_boot = r.first_boot.or(Some(s.first_boot_wait));
    }
    // A reload also makes each node's next instance, whose initial
    // password the answer shows this once (`instances`).
    let job = s
        .as_project(b, move |c, who| {
            let job = c.create_job(who, &req)?;
            let instances = c.prepare_reload(who, &job)?;
            Ok(ReloadAccepted { job, instances })
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

pub async fn list(State(s): State<ApiState>, b: Bearer) -> Result<Json<Vec<JobRecord>>, Problem> {
    s.as_project(b, |c, who| c.list_jobs(who)).await.map(Json)
}

pub async fn show(State(s): State<ApiState>, b: Bearer, Path(job): Path<String>) -> Result<Json<JobRecord>, Problem> {
    let id = job_id(&job)?;
    s.as_project(b, move |c, who| c.show_job(who, id)).await.map(Json)
}

pub async fn cancel(State(s): State<ApiState>, b: Bearer, Path(job): Path<String>) -> Result<Json<JobRecord>, Problem> {
    let id = job_id(&job)?;
    s.as_project(b, move |c, who| c.cancel_job(who, id)).await.map(Json)
}
