//! `cortex serve`'s API, on the runtime's listener (and on its own before
//! the first revision runs): `GET /api/v1/status`, `POST /api/v1/sync`
//! (reconcile now) with the operator token, and `GET /readyz` (ready once
//! the first sync finished or failed). Errors have the runtime API's shape,
//! `{"error": {"code", "message"}}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cortex_runtime::tokens::TokenHash;
use tokio::sync::Notify;

use super::SharedStatus;

#[derive(Clone)]
struct Api {
    status: SharedStatus,
    wake: Arc<Notify>,
    operator: TokenHash,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Whether the caller holds the operator token.
fn is_operator(api: &Api, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| TokenHash::of(t.trim()) == api.operator)
}

/// The 401 of a call without the operator token.
fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid token: send `Authorization: Bearer <operator token>` (in the state directory's operator.token file)",
    )
}

async fn get_status(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !is_operator(&api, &headers) {
        return unauthorized();
    }
    let now = api.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    axum::Json(now).into_response()
}

async fn sync(State(api): State<Api>, headers: HeaderMap) -> Response {
    if !is_operator(&api, &headers) {
        return unauthorized();
    }
    api.wake.notify_one();
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "sync": "started" })),
    )
        .into_response()
}

async fn readyz(State(api): State<Api>) -> Response {
    let ready = api.status.lock().unwrap_or_else(|p| p.into_inner()).ready;
    if ready {
        (StatusCode::OK, "ready").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the first sync has not finished yet",
        )
    }
}

/// The API's routes, to merge with the runtime's.
pub fn routes(status: SharedStatus, wake: Arc<Notify>, operator: TokenHash) -> Router {
    Router::new()
        .route("/api/v1/status", get(get_status))
        .route("/api/v1/sync", post(sync))
        .route("/readyz", get(readyz))
        .with_state(Api {
            status,
            wake,
            operator,
        })
}

/// The API alone, served until the first revision runs (with `/healthz`,
/// which the runtime serves afterwards).
pub fn standalone(status: SharedStatus, wake: Arc<Notify>, operator: TokenHash) -> Router {
    routes(status, wake, operator).route("/healthz", get(|| async { "ok" }))
}
