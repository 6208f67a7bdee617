//! The runtime's workflow endpoints under `/api/v1`, each call decided by
//! the project's roles on the resource `workflows/NAME` (where the runtime's
//! own `/v1/…` routes take only the operator token):
//!
//! | method and path | verb |
//! | --- | --- |
//! | `GET /api/v1/workflows/{name}/executions` | `list` |
//! | `POST /api/v1/workflows/{name}/executions` `{payload?}` | `run` |
//! | `POST /api/v1/workflows/{name}/pause` · `/resume` | `pause` |
//! | `GET /api/v1/executions` (`?workflow=`) | `list` (only the workflows the caller may list) |
//! | `GET /api/v1/executions/{id}` | `get` |
//! | `POST /api/v1/executions/{id}/cancel` | `cancel` |
//! | `POST /api/v1/executions/{id}/retry` | `run` |
//!
//! Every call that changes something is written to the audit log with the
//! caller's name, the execution or workflow, the synced commit and the
//! outcome. A standby answers the reads only from the leader's store (it
//! runs no runtime: 503 with who leads).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cortex_client::ExecutionList;
use cortex_runtime::workflow::error::WorkflowError;
use cortex_runtime::workflow::scheduler::Start;

use super::api::{Context, audit, authorize, error, leading, running};

/// The resource a workflow's calls are decided on.
fn resource(workflow: &str) -> String {
    format!("workflows/{workflow}")
}

/// Writes a mutating call to the audit log; answers `answer`.
async fn audited(
    api: &Context,
    caller: &str,
    action: &str,
    what: &str,
    answer: Result<Response, WorkflowError>,
) -> Response {
    let outcome = match &answer {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    audit(api, caller, action, format!("{what}: {outcome}")).await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

async fn start(
    State(api): State<Context>,
    Path(workflow): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authorize(&api, &headers, &resource(&workflow), "run") {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let shared = match leading(&api).and_then(|()| running(&api)) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    let payload = match cortex_runtime::workflow::http::start_payload(&body) {
        Ok(payload) => payload,
        Err(e) => return e.into_response(),
    };
    let answer = shared
        .workflows
        .start_execution(&workflow, Start::Manual, payload)
        .await
        .map(|e| (StatusCode::CREATED, axum::Json(e)).into_response());
    audited(
        &api,
        &caller.name,
        "workflow-run",
        &resource(&workflow),
        answer,
    )
    .await
}

async fn pause(
    State(api): State<Context>,
    Path((workflow, verb)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let paused = match verb.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no action {other:?} on a workflow: executions, pause or resume"),
            );
        }
    };
    let caller = match authorize(&api, &headers, &resource(&workflow), "pause") {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let shared = match leading(&api).and_then(|()| running(&api)) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    let answer = shared
        .workflows
        .pause(&workflow, paused)
        .await
        .map(|p| axum::Json(p).into_response());
    audited(
        &api,
        &caller.name,
        &format!("workflow-{verb}"),
        &resource(&workflow),
        answer,
    )
    .await
}

async fn list_of(
    State(api): State<Context>,
    Path(workflow): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&api, &headers, &resource(&workflow), "list") {
        return *refused;
    }
    let shared = match running(&api) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    match shared.workflows.list(Some(&workflow)).await {
        Ok(executions) => axum::Json(ExecutionList { executions }).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    workflow: Option<String>,
}

async fn list(
    State(api): State<Context>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(workflow) = query.workflow {
        return list_of(State(api), Path(workflow), headers).await;
    }
    let caller = match authorize(&api, &headers, "workflows", "list") {
        Ok(caller) => Some(caller),
        // A caller who may list only some workflows sees those.
        Err(refused) if refused.status() == StatusCode::FORBIDDEN => None,
        Err(refused) => return *refused,
    };
    let shared = match running(&api) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    let executions = match shared.workflows.list(None).await {
        Ok(executions) => executions,
        Err(e) => return e.into_response(),
    };
    let executions = match caller {
        Some(_) => executions,
        None => {
            // Each workflow's right decided once.
            let mut allowed = std::collections::BTreeMap::new();
            executions
                .into_iter()
                .filter(|e| {
                    *allowed.entry(e.workflow.clone()).or_insert_with(|| {
                        authorize(&api, &headers, &resource(&e.workflow), "list").is_ok()
                    })
                })
                .collect()
        }
    };
    axum::Json(ExecutionList { executions }).into_response()
}

async fn get_one(
    State(api): State<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    // Known callers only, before anything is looked up.
    if let Err(refused) = authorize(&api, &headers, "executions", "get")
        && refused.status() == StatusCode::UNAUTHORIZED
    {
        return *refused;
    }
    let shared = match running(&api) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    let execution = match shared.workflows.get(&id).await {
        Ok(execution) => execution,
        Err(e) => return e.into_response(),
    };
    match authorize(&api, &headers, &resource(&execution.workflow), "get") {
        Ok(_) => axum::Json(execution).into_response(),
        Err(refused) => *refused,
    }
}

async fn act(
    State(api): State<Context>,
    Path((id, verb)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let needs = match verb.as_str() {
        "cancel" => "cancel",
        "retry" => "run",
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no action {other:?} on an execution: cancel or retry"),
            );
        }
    };
    if let Err(refused) = authorize(&api, &headers, "executions", needs)
        && refused.status() == StatusCode::UNAUTHORIZED
    {
        return *refused;
    }
    let shared = match leading(&api).and_then(|()| running(&api)) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    let execution = match shared.workflows.get(&id).await {
        Ok(execution) => execution,
        Err(e) => return e.into_response(),
    };
    let caller = match authorize(&api, &headers, &resource(&execution.workflow), needs) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let answer = match verb.as_str() {
        "cancel" => shared.workflows.cancel(&id).await,
        _ => shared.workflows.retry(&id).await,
    }
    .map(|e| axum::Json(e).into_response());
    audited(
        &api,
        &caller.name,
        &format!("execution-{verb}"),
        &format!("{} {id}", resource(&execution.workflow)),
        answer,
    )
    .await
}

/// The workflow routes under `/api/v1`.
pub fn routes() -> Router<Context> {
    Router::new()
        .route(
            "/api/v1/workflows/{name}/executions",
            get(list_of).post(start),
        )
        .route("/api/v1/workflows/{name}/{verb}", post(pause))
        .route("/api/v1/executions", get(list))
        .route("/api/v1/executions/{id}", get(get_one))
        .route("/api/v1/executions/{id}/{verb}", post(act))
}
