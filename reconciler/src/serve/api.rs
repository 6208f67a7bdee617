//! `cortex serve`'s API, on the runtime's listener (and on its own before
//! the first revision runs, on a standby, and with the Kubernetes target).
//! With a token allowed by [`super::auth`]: `GET /api/v1/status` (resource
//! `status`, verb `get`), `/history` (the newest syncs; `history`, `get`),
//! `/plan` (`plan`, `get`), `/agents` (`agents`, `list`), `/topics`
//! (`topics`, `list`), `/audit` (`audit`, `get`), `POST /api/v1/sync`
//! (reconcile now, or pin a commit; `sync`, `sync`), and the runtime's
//! workflow endpoints ([`super::workflows`]) — 401 without a valid token,
//! 403 without a rule. A standby refuses syncs, webhooks and workflow
//! changes with 503 naming the leader. Without a token: `GET /readyz`
//! (ready once the first sync finished or failed, or a leader is known)
//! and `POST /api/v1/webhook`, which takes GitHub's `X-Hub-Signature-256`
//! (an HMAC-SHA256 of the body under the webhook secret, checked in
//! constant time) instead: a wrong or missing signature is 401 and fetches
//! nothing. Errors have the runtime API's shape, `{"error": {"code",
//! "message"}}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cortex_runtime::tokens;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use super::auth::{Caller, Policies, Tokens};
use super::{SharedHistory, SharedPin, SharedStatus, SharedTrigger};

/// What the API reads and wakes.
#[derive(Clone)]
pub struct Context {
    /// The loop's status.
    pub status: SharedStatus,
    /// The newest syncs.
    pub history: SharedHistory,
    /// What woke the loop.
    pub trigger: SharedTrigger,
    /// The commit a sync pinned.
    pub pin: SharedPin,
    /// Wakes the loop.
    pub wake: Arc<Notify>,
    /// The tokens accepted (the operator's among them).
    pub tokens: Arc<Tokens>,
    /// The synced project's roles and bindings.
    pub policies: Arc<std::sync::Mutex<Policies>>,
    /// The webhook's secret (none: the webhook is off).
    pub webhook_secret: Option<Arc<[u8]>>,
    /// The head's plan against the store, as last made.
    pub plan: Arc<std::sync::Mutex<Option<crate::Plan>>>,
    /// The state store (its audit log).
    pub store: Option<Arc<cortex_runtime::store::SqliteStore>>,
    /// Serve's metrics (on `/metrics` while the API is served alone).
    pub metrics: Arc<super::metrics::ServeMetrics>,
    /// The running runtime's shared state, once a revision runs.
    pub runtime: Arc<std::sync::Mutex<Option<cortex_runtime::server::Shared>>>,
}

impl Context {
    fn wake(&self, why: String) {
        *self.trigger.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.wake.notify_one();
    }
}

pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Who is calling (`None`: no token, or one `serve` does not know).
fn caller(api: &Context, headers: &HeaderMap) -> Option<Caller> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| api.tokens.caller(t.trim()))
        .cloned()
}

/// The caller when it may `verb` `resource`; else the 401 or 403.
pub(super) fn authorize(
    api: &Context,
    headers: &HeaderMap,
    resource: &str,
    verb: &str,
) -> Result<Caller, Box<Response>> {
    let Some(caller) = caller(api, headers) else {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid token: send `Authorization: Bearer <token>` (the operator's, in the state directory's operator.token file, or one of --tokens)",
        )));
    };
    let allowed = api
        .policies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .allows(&caller, resource, verb);
    if allowed {
        Ok(caller)
    } else {
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!(
                "{} may not {verb} {resource}: no role of the project's AccessPolicy bindings allows it",
                caller.name
            ),
        )))
    }
}

async fn get_status(State(api): State<Context>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&api, &headers, "status", "get") {
        return *refused;
    }
    let mut now = api.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    now.drift_healed = api
        .metrics
        .drift_healed
        .load(std::sync::atomic::Ordering::Relaxed);
    axum::Json(now).into_response()
}

async fn get_history(State(api): State<Context>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&api, &headers, "history", "get") {
        return *refused;
    }
    let syncs: Vec<super::SyncRecord> = api
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .rev()
        .cloned()
        .collect();
    axum::Json(serde_json::json!({ "syncs": syncs })).into_response()
}

#[derive(serde::Deserialize)]
struct PlanQuery {
    format: Option<String>,
}

async fn get_plan(
    State(api): State<Context>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<PlanQuery>,
) -> Response {
    if let Err(refused) = authorize(&api, &headers, "plan", "get") {
        return *refused;
    }
    let Some(plan) = api.plan.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no plan yet: the first revision is not running",
        );
    };
    use crate::plan::render::{json, markdown, text};
    let (body, kind) = match query.format.as_deref().unwrap_or("json") {
        "json" => (json::render_json(&plan), "application/json"),
        "markdown" => (
            markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT),
            "text/markdown; charset=utf-8",
        ),
        "text" => (text::render_text(&plan, false), "text/plain; charset=utf-8"),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("format {other:?}: json, markdown or text"),
            );
        }
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Nothing, when this replica leads; else the 503 saying who does (a
/// standby answers reads only).
pub(super) fn leading(api: &Context) -> Result<(), Box<Response>> {
    let status = api.status.lock().unwrap_or_else(|p| p.into_inner());
    if status.leader {
        return Ok(());
    }
    let leader = status
        .leader_id
        .clone()
        .unwrap_or_else(|| "no replica yet".into());
    Err(Box::new(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "standby",
        &format!("this replica is a standby and answers reads only; the leader is {leader}"),
    )))
}

/// Writes `action` by `actor` to the store's audit log, with the synced
/// commit (a failure to write is logged: the call it records was made).
pub(super) async fn audit(api: &Context, actor: &str, action: &str, detail: String) {
    let Some(store) = &api.store else { return };
    let commit = api
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .synced_commit
        .clone()
        .unwrap_or_else(|| "no commit".into());
    super::write_audit(&**store, actor, action, format!("{detail} (at {commit})")).await;
}

/// The running runtime, or the 404 before any revision runs.
pub(super) fn running(api: &Context) -> Result<cortex_runtime::server::Shared, Box<Response>> {
    api.runtime
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no revision runs yet",
            ))
        })
}

async fn get_agents(State(api): State<Context>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&api, &headers, "agents", "list") {
        return *refused;
    }
    match running(&api) {
        Ok(shared) => {
            let status = shared.status();
            axum::Json(serde_json::json!({ "revision": status.revision, "agents": status.agents }))
                .into_response()
        }
        Err(refused) => *refused,
    }
}

async fn get_topics(State(api): State<Context>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&api, &headers, "topics", "list") {
        return *refused;
    }
    let shared = match running(&api) {
        Ok(shared) => shared,
        Err(refused) => return *refused,
    };
    let config = shared.broker.config();
    let mut topics: Vec<serde_json::Value> = config
        .topics
        .values()
        .map(|t| {
            serde_json::json!({
                "name": &*t.name,
                "ordering": format!("{:?}", t.ordering).to_lowercase(),
                "subscribers": t.subscribers,
                "deadLetter": t.dead_letter,
            })
        })
        .collect();
    topics.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let queues = shared.status().queues;
    axum::Json(serde_json::json!({ "topics": topics, "queues": queues })).into_response()
}

async fn get_audit(State(api): State<Context>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&api, &headers, "audit", "get") {
        return *refused;
    }
    use cortex_runtime::store::Store;
    let Some(store) = &api.store else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no state store",
        );
    };
    match store.audit_log(500).await {
        Ok(entries) => {
            let entries: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "at": cortex_runtime::workflow::view::rfc3339(e.at_ms),
                        "actor": e.actor,
                        "action": e.action,
                        "detail": e.detail,
                    })
                })
                .collect();
            axum::Json(serde_json::json!({ "entries": entries })).into_response()
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    commit: Option<String>,
}

async fn sync(State(api): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    let caller = match authorize(&api, &headers, "sync", "sync") {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    if let Err(refused) = leading(&api) {
        return *refused;
    }
    let pin = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<SyncBody>(&body) {
            Ok(b) => b.commit.filter(|c| !c.trim().is_empty()),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("expected {{\"commit\"?}}: {e}"),
                );
            }
        }
    };
    // A commit pins it; a sync without one follows the branch again.
    *api.pin.lock().unwrap_or_else(|p| p.into_inner()) = pin;
    api.wake(format!("api:{}", caller.name));
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "sync": "started" })),
    )
        .into_response()
}

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body`
/// under `secret`, compared in constant time.
pub fn signature_is_valid(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(mac) = signature
        .and_then(|s| s.strip_prefix("sha256="))
        .and_then(tokens::unhex)
    else {
        return false;
    };
    let Ok(mut expected) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    expected.update(body);
    expected.verify_slice(&mac).is_ok()
}

async fn webhook(State(api): State<Context>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &api.webhook_secret else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the webhook is off: start cortex serve with --webhook-secret-env VAR",
        );
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_is_valid(secret, &body, signature) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong X-Hub-Signature-256: nothing was fetched",
        );
    }
    if let Err(refused) = leading(&api) {
        return *refused;
    }
    api.wake("webhook".to_string());
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "sync": "started" })),
    )
        .into_response()
}

async fn readyz(State(api): State<Context>) -> Response {
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
pub fn routes(context: Context) -> Router {
    Router::new()
        .route("/api/v1/status", get(get_status))
        .route("/api/v1/history", get(get_history))
        .route("/api/v1/plan", get(get_plan))
        .route("/api/v1/audit", get(get_audit))
        .route("/api/v1/agents", get(get_agents))
        .route("/api/v1/topics", get(get_topics))
        .route("/api/v1/sync", post(sync))
        .route("/api/v1/webhook", post(webhook))
        .route("/readyz", get(readyz))
        .merge(super::workflows::routes())
        .merge(super::state::routes())
        .with_state(context)
}

/// The API alone, served until the first revision runs (with `/healthz`,
/// which the runtime serves afterwards).
pub fn standalone(context: Context) -> Router {
    let metrics = context.metrics.clone();
    routes(context)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut out = String::new();
                    metrics.render(&mut out);
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        out,
                    )
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example: secret "It's a Secret to Everybody",
    /// body "Hello, World!".
    #[test]
    fn githubs_example_signature_is_valid_and_anything_else_is_not() {
        let secret = b"It's a Secret to Everybody";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_is_valid(secret, b"Hello, World!", Some(good)));
        assert!(!signature_is_valid(secret, b"Hello, World?", Some(good)));
        assert!(!signature_is_valid(
            b"another",
            b"Hello, World!",
            Some(good)
        ));
        assert!(!signature_is_valid(secret, b"Hello, World!", None));
        assert!(!signature_is_valid(
            secret,
            b"Hello, World!",
            Some("sha256=zz")
        ));
        assert!(!signature_is_valid(
            secret,
            b"Hello, World!",
            Some(&good[7..])
        ));
    }
}
