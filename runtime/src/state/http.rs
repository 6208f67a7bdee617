//! Agent state's HTTP API (JSON; an agent's token, or the operator's):
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/state/{scope}/{key}` | `{key, value, version, updatedAt, updatedBy}`; 404 when missing |
//! | `PUT /v1/state/{scope}/{key}` `{value, ifVersion?}` | write; `ifVersion: 0` creates only; 200 `{key, version}`, 409 `{error, current}` |
//! | `DELETE /v1/state/{scope}/{key}?ifVersion=` | delete; 200 `{key, version}`, 404 when missing, 409 `{error, current}` |
//! | `GET /v1/state/{scope}?prefix=&after=&limit=` | a page in key order: `{items, next, version}` |
//! | `GET /v1/state/{scope}/watch?fromVersion=` | server-sent events: `change` (id = version) per change after `fromVersion`, in order; `Last-Event-ID` resumes |
//!
//! A scope is `agents/<name>` (the agent's own) or a declared `State`'s
//! name; a key is the rest of the path (it may hold `/`; `watch` alone is
//! the watch). Errors have the broker API's shape, `{"error": {"code",
//! "message", "pointer"?}}`: 400 (`schema` with the value's pointer,
//! `bad_request`), 401, 403 (`forbidden`), 404 (`not_found`: no such key;
//! `unknown_scope`), 409
//! (`conflict`, with `current`: the document as it is, or null), 410
//! (`compacted`, with `compacted` and `head`: the watch's version is older
//! than the scope's kept history), 413, 503.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use cortex_client::{ApiError, StateDocument};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AgentState, StateError, event};
use crate::broker::http::{ApiPath, ApiQuery, MAX_MESSAGE_BODY, principal, read_body};
use crate::broker::{BrokerError, Principal};

impl StateError {
    /// The HTTP status and code of this error.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            StateError::Broker(e) => e.status(),
            StateError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            StateError::UnknownScope(_) => (StatusCode::NOT_FOUND, "unknown_scope"),
            StateError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            StateError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            StateError::Schema { .. } => (StatusCode::BAD_REQUEST, "schema"),
            StateError::Compacted { .. } => (StatusCode::GONE, "compacted"),
            StateError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }

    /// This error as the API describes it.
    pub fn api_error(&self) -> ApiError {
        if let StateError::Broker(e) = self {
            return e.api_error();
        }
        ApiError {
            code: self.status().1.to_string(),
            message: self.to_string(),
            inbox: None,
            pointer: match self {
                StateError::Schema { pointer, .. } => Some(pointer.clone()),
                _ => None,
            },
        }
    }
}

/// An error body with what a 409 and a 410 add (the agent socket's state
/// answers carry the same).
#[derive(Serialize)]
pub(crate) struct ErrorBody {
    error: ApiError,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<Option<Box<StateDocument>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compacted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<u64>,
}

impl ErrorBody {
    /// The body of `error`.
    pub(crate) fn of(error: &StateError) -> ErrorBody {
        let mut body = ErrorBody {
            error: error.api_error(),
            current: None,
            compacted: None,
            head: None,
        };
        match error {
            StateError::Conflict { current, .. } => body.current = Some(current.clone()),
            StateError::Compacted {
                compacted, head, ..
            } => {
                body.compacted = Some(*compacted);
                body.head = Some(*head);
            }
            _ => {}
        }
        body
    }
}

impl IntoResponse for StateError {
    fn into_response(self) -> Response {
        if let StateError::Broker(e) = self {
            return e.into_response();
        }
        (self.status().0, axum::Json(ErrorBody::of(&self))).into_response()
    }
}

/// What a path under `/v1/state/` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// The scope itself (list).
    Scope,
    /// Its watch.
    Watch,
    /// One key.
    Key(String),
}

/// Splits a path under `/v1/state/` into the scope and what it names.
pub fn parse(path: &str) -> Result<(String, Target), StateError> {
    let path = path.trim_start_matches('/');
    let (scope, rest) = match path.split_once('/') {
        Some(("agents", rest)) => match rest.split_once('/') {
            Some((agent, rest)) => (format!("agents/{agent}"), rest),
            None => (format!("agents/{rest}"), ""),
        },
        Some((scope, rest)) => (scope.to_string(), rest),
        None => (path.to_string(), ""),
    };
    if scope.is_empty() || scope == "agents/" {
        return Err(BrokerError::BadRequest(
            "a state path is /v1/state/SCOPE[/KEY], the scope a State's name or agents/NAME".into(),
        )
        .into());
    }
    let target = match rest {
        "" => Target::Scope,
        "watch" => Target::Watch,
        key => Target::Key(key.to_string()),
    };
    Ok((scope, target))
}

/// The query parameters any state route takes.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StateQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
    from_version: Option<u64>,
    if_version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PutBody {
    value: Value,
    if_version: Option<u64>,
}

/// What a call under `/v1/state/` does, by its method and path: `get`,
/// `list` (a page or the watch) or `write` (put, delete) — the verbs a
/// role names (`cortex serve`'s API decides by them).
pub fn verb(method: &Method, target: &Target) -> &'static str {
    match (method, target) {
        (&Method::PUT | &Method::DELETE, _) => "write",
        (_, Target::Key(_)) => "get",
        _ => "list",
    }
}

async fn route(
    State(state): State<Arc<AgentState>>,
    method: Method,
    ApiPath(path): ApiPath<String>,
    ApiQuery(query): ApiQuery<StateQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, StateError> {
    let who = principal(&state.broker, &headers)?;
    // Agents' own writes are their business; the operator's are audited.
    let audit_as = (who == Principal::Operator).then_some("operator");
    let request = StateRequest {
        method,
        path: &path,
        query,
        headers: &headers,
        body,
    };
    call(&state, &who, audit_as, request).await
}

/// One HTTP call under `/v1/state/`, as it came.
pub struct StateRequest<'a> {
    /// Its method.
    pub method: Method,
    /// The path after `/v1/state/`.
    pub path: &'a str,
    /// Its query.
    pub query: StateQuery,
    /// Its headers (`Last-Event-ID` resumes a watch).
    pub headers: &'a HeaderMap,
    /// Its body (a put's).
    pub body: Body,
}

/// Serves one call under `/v1/state/` as `who`; a write that succeeds is
/// written to the audit log as by `audit_as`, when given.
pub async fn call(
    state: &Arc<AgentState>,
    who: &Principal,
    audit_as: Option<&str>,
    request: StateRequest<'_>,
) -> Result<Response, StateError> {
    let StateRequest {
        method,
        path,
        query,
        headers,
        body,
    } = request;
    let (scope, target) = parse(path)?;
    let write = |key: &str, value: Option<Value>, if_version: Option<u64>| {
        let (scope, key) = (scope.clone(), key.to_string());
        async move {
            let deleting = value.is_none();
            let written = state.write(who, &scope, &key, value, if_version).await?;
            if let Some(actor) = audit_as {
                let action = if deleting {
                    "state-delete"
                } else {
                    "state-put"
                };
                let detail = format!("{scope}/{key} version {}", written.version);
                state.audit(actor, action, detail).await;
            }
            Ok::<_, StateError>(json(written))
        }
    };
    match (method, target) {
        (Method::GET, Target::Key(key)) => Ok(json(state.get(who, &scope, &key).await?)),
        (Method::PUT, Target::Key(key)) => {
            let body = read_body(body, MAX_MESSAGE_BODY).await?;
            let put: PutBody = serde_json::from_slice(&body).map_err(|e| {
                BrokerError::BadRequest(format!("expected {{\"value\", \"ifVersion\"?}}: {e}"))
            })?;
            write(&key, Some(put.value), put.if_version.or(query.if_version)).await
        }
        (Method::DELETE, Target::Key(key)) => write(&key, None, query.if_version).await,
        (Method::GET, Target::Scope) => Ok(json(
            &state
                .list(
                    who,
                    &scope,
                    query.prefix.as_deref().unwrap_or(""),
                    query.after.as_deref().unwrap_or(""),
                    query.limit.unwrap_or(100),
                )
                .await?,
        )),
        (Method::GET, Target::Watch) => {
            let resume = headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let from = resume.or(query.from_version);
            let changes = state.watch(who, &scope, from).await?;
            let events = changes.map(|item| {
                let event = match item {
                    Ok(change) => Event::default()
                        .event("change")
                        .id(change.version.to_string())
                        .json_data(event(change)),
                    Err(e) => Event::default().event("error").json_data(ErrorBody::of(&e)),
                };
                Ok::<_, Infallible>(event.unwrap_or_default())
            });
            Ok(Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response())
        }
        (method, target) => Err(BrokerError::NoRoute {
            status: 405,
            message: format!(
                "{method} is not taken by a state {}",
                match target {
                    Target::Scope => "scope (GET lists it)",
                    Target::Watch => "watch (GET)",
                    Target::Key(_) => "key (GET, PUT, DELETE)",
                }
            ),
        }
        .into()),
    }
}

/// A 200 with `body` as JSON.
fn json(body: impl Serialize) -> Response {
    axum::Json(body).into_response()
}

/// The state routes (state: the runtime's agent state).
pub fn routes(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/v1/state/{*path}", any(route))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_scope_and_a_key() {
        let key = |s: &str| Target::Key(s.to_string());
        assert_eq!(parse("desk").unwrap(), ("desk".into(), Target::Scope));
        assert_eq!(parse("desk/watch").unwrap(), ("desk".into(), Target::Watch));
        assert_eq!(parse("desk/a/b").unwrap(), ("desk".into(), key("a/b")));
        assert_eq!(
            parse("agents/triage").unwrap(),
            ("agents/triage".into(), Target::Scope)
        );
        assert_eq!(
            parse("agents/triage/count").unwrap(),
            ("agents/triage".into(), key("count"))
        );
        assert_eq!(
            parse("agents/triage/watch").unwrap(),
            ("agents/triage".into(), Target::Watch)
        );
        assert!(parse("").is_err());
        assert!(parse("agents/").is_err());
    }
}
