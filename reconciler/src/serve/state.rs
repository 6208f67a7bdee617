//! Agent state under `/api/v1/state`, each call decided by the project's
//! roles on the resource `state/SCOPE` (`state/desk-stats`,
//! `state/agents/triage`; `state/*` for every scope), where the runtime's
//! own `/v1/state` takes agents' tokens and the operator's:
//!
//! | method and path | verb |
//! | --- | --- |
//! | `GET /api/v1/state/{scope}/{key}` | `get` |
//! | `GET /api/v1/state/{scope}?prefix=&after=&limit=` · `/watch?fromVersion=` | `list` |
//! | `PUT /api/v1/state/{scope}/{key}` `{value, ifVersion?}` · `DELETE …?ifVersion=` | `write` |
//!
//! The answers are the runtime's (docs/state.md). A write is made as the
//! operator (the scope's schema still holds) and written to the audit log
//! with the caller's name. Only the leader answers: a standby runs no
//! runtime (503 naming the leader).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use cortex_runtime::broker::Principal;
use cortex_runtime::state::http::{StateQuery, StateRequest, call, parse, verb};

use super::api::{Context, authorize, leading, running};

async fn route(
    State(api): State<Context>,
    method: Method,
    Path(path): Path<String>,
    Query(query): Query<StateQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (scope, target) = match parse(&path) {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    let verb = verb(&method, &target);
    let caller = match authorize(&api, &headers, &format!("state/{scope}"), verb) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let shared = match leading(&api).and_then(|()| running(&api)) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    let audit_as = (verb == "write").then_some(caller.name.as_str());
    let request = StateRequest {
        method,
        path: &path,
        query,
        headers: &headers,
        body,
    };
    call(&shared.state, &Principal::Operator, audit_as, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The state routes (state: the API's context).
pub fn routes() -> Router<Context> {
    Router::new().route("/api/v1/state/{*path}", any(route))
}
