//! `/v1/agent/{mac}/...`: what the agent on a node calls, with the
//! one-time agent token it was booted with. A token reaches only its own
//! node's endpoints and is spent by the report.

use axum::extract::{Path, State};
use axum::Json;

use super::{ApiState, Bearer, Body, Problem};
use crate::catalog::agent::{AgentTask, Heartbeat, Report};
use crate::catalog::jobs::{JobNode, JobRecord};

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
    s.as_agent(b, move |c, who| c.agent_report(who, &mac, &r)).await.map(Json)
}
