//! The workflow runtime's HTTP API (JSON; the operator token):
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /v1/workflows/{name}/executions` `{payload?}` | start by hand (201, the execution) |
//! | `GET /v1/executions?workflow=` | `{"executions": [...]}`, oldest first |
//! | `GET /v1/executions/{id}` | one execution |
//! | `POST /v1/executions/{id}/cancel` | cancel; answers once it stopped |
//! | `POST /v1/executions/{id}/retry` | run a failed or cancelled one again |
//! | `POST /v1/workflows/{name}/pause` · `/resume` | `{"workflow", "paused", "queued"}` |
//!
//! Errors have the broker API's shape: `{"error": {"code", "message"}}`.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cortex_client::ExecutionList;
use serde::Deserialize;
use serde_json::Value;

use crate::broker::Principal;
use crate::broker::http::{ApiPath, ApiQuery, MAX_MESSAGE_BODY, principal, read_body};
use crate::server::Shared;
use crate::workflow::error::WorkflowError;
use crate::workflow::scheduler::Start;

/// Only the operator may drive workflows (roles come with `cortex serve`).
fn operator(
    shared: &Shared,
    headers: &HeaderMap,
    action: &'static str,
) -> Result<(), WorkflowError> {
    match principal(&shared.broker, headers)? {
        Principal::Operator => Ok(()),
        Principal::Agent(_) => Err(WorkflowError::Forbidden(action)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    payload: Value,
}

/// The payload of a start by hand: `{"payload"?}`, an empty body is null.
pub fn start_payload(body: &[u8]) -> Result<Value, WorkflowError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice::<StartBody>(body)
        .map(|b| b.payload)
        .map_err(|e| WorkflowError::BadRequest(format!("expected {{\"payload\"?}}: {e}")))
}

async fn start(
    State(shared): State<Shared>,
    ApiPath(workflow): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WorkflowError> {
    operator(&shared, &headers, "start executions")?;
    let body = read_body(body, MAX_MESSAGE_BODY).await?;
    let payload = start_payload(&body)?;
    let execution = shared
        .workflows
        .start_execution(&workflow, Start::Manual, payload)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(execution)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    workflow: Option<String>,
}

async fn list(
    State(shared): State<Shared>,
    ApiQuery(query): ApiQuery<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, WorkflowError> {
    operator(&shared, &headers, "read executions")?;
    let executions = shared.workflows.list(query.workflow.as_deref()).await?;
    Ok(axum::Json(ExecutionList { executions }).into_response())
}

async fn get_one(
    State(shared): State<Shared>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, WorkflowError> {
    operator(&shared, &headers, "read executions")?;
    Ok(axum::Json(shared.workflows.get(&id).await?).into_response())
}

async fn act(
    State(shared): State<Shared>,
    ApiPath((id, verb)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WorkflowError> {
    operator(&shared, &headers, "cancel or retry executions")?;
    let execution = match verb.as_str() {
        "cancel" => shared.workflows.cancel(&id).await?,
        "retry" => shared.workflows.retry(&id).await?,
        other => {
            return Err(WorkflowError::BadRequest(format!(
                "no action {other:?} on an execution: cancel or retry"
            )));
        }
    };
    Ok(axum::Json(execution).into_response())
}

async fn pause(
    State(shared): State<Shared>,
    ApiPath((workflow, verb)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WorkflowError> {
    operator(&shared, &headers, "pause or resume workflows")?;
    let paused = match verb.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(WorkflowError::BadRequest(format!(
                "no action {other:?} on a workflow: pause or resume"
            )));
        }
    };
    Ok(axum::Json(shared.workflows.pause(&workflow, paused).await?).into_response())
}

/// The workflow routes (state: the runtime's shared handles).
pub fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/v1/workflows/{name}/executions", post(start))
        .route("/v1/workflows/{name}/{verb}", post(pause))
        .route("/v1/executions", get(list))
        .route("/v1/executions/{id}", get(get_one))
        .route("/v1/executions/{id}/{verb}", post(act))
        .with_state(shared)
}
