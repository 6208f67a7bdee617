//! The runtime's HTTP server: the broker API, the workflow API
//! ([`crate::workflow::http`]), agent state ([`crate::state::http`]),
//! `/v1/status` (operator
//! token), `/v1/identity` (the runtime proves it holds the operator token
//! before a client sends it), `/metrics` (Prometheus text) and `/healthz`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::broker::http::{ApiQuery, principal};
use super::broker::{Broker, BrokerError, Principal};
use super::health::HealthState;
use super::metrics::{family, label};
use super::status::{Board, RuntimeStatus};
use super::tokens;

/// What the status and metrics handlers read.
#[derive(Clone)]
pub struct Shared {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Replica states.
    pub board: Arc<Mutex<Board>>,
    /// Project, revision, URL, alerts (filled by the runtime).
    pub header: Arc<Mutex<RuntimeStatus>>,
    /// The workflow runtime.
    pub workflows: crate::workflow::Workflows,
    /// More metrics written on `/metrics` (`cortex serve`'s).
    pub extra_metrics: Option<MetricsHook>,
    /// Agent state.
    pub state: Arc<crate::state::AgentState>,
}

/// Writes more metric families (Prometheus text) on `/metrics`.
#[derive(Clone)]
pub struct MetricsHook(pub Arc<dyn Fn(&mut String) + Send + Sync>);

impl std::fmt::Debug for MetricsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsHook")
    }
}

impl Shared {
    /// The full status now.
    pub fn status(&self) -> RuntimeStatus {
        let mut status = self
            .header
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        for (name, agent) in &board.agents {
            let entry = status.agents.entry(name.clone()).or_default();
            entry.local = agent.local || entry.local;
            entry.replicas = agent.replicas.clone();
        }
        status.queues = self.broker.stats().into_iter().map(Into::into).collect();
        status
    }
}

async fn status(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    match principal(&shared.broker, &headers) {
        Ok(Principal::Operator) => {
            let mut status = shared.status();
            match shared.state.scopes().await {
                Ok(scopes) => status.states = scopes,
                Err(e) => tracing::warn!(error = %e, "cannot read the state scopes for the status"),
            }
            axum::Json(status).into_response()
        }
        Ok(Principal::Agent(a)) => BrokerError::Forbidden {
            who: a,
            action: "read",
            topic: "the runtime status".into(),
            field: "the operator token",
        }
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The Prometheus text of the runtime.
pub fn render_metrics(shared: &Shared) -> String {
    let mut out = String::new();
    shared.broker.counters.render(&mut out);
    let stats = shared.broker.stats();
    let gauge = |f: &dyn Fn(&super::broker::InboxStats) -> usize| -> Vec<(String, f64)> {
        stats
            .iter()
            .map(|s| (format!("{{inbox=\"{}\"}}", label(&s.inbox)), f(s) as f64))
            .collect()
    };
    family(
        &mut out,
        "cortex_queue_depth",
        "gauge",
        "Ready messages per inbox.",
        &gauge(&|s| s.depth),
    );
    family(
        &mut out,
        "cortex_queue_in_flight",
        "gauge",
        "Delivered, unacked messages per inbox.",
        &gauge(&|s| s.in_flight),
    );
    family(
        &mut out,
        "cortex_queue_dead_letters",
        "gauge",
        "Dead letters kept per inbox.",
        &gauge(&|s| s.dead_letters),
    );
    let status = shared.status();
    let mut health = Vec::new();
    let mut restarts = Vec::new();
    for (agent, a) in &status.agents {
        for r in &a.replicas {
            for state in HealthState::ALL {
                health.push((
                    format!(
                        "{{agent=\"{}\",replica=\"{}\",state=\"{state}\"}}",
                        label(agent),
                        r.replica
                    ),
                    if r.state == state { 1.0 } else { 0.0 },
                ));
            }
            restarts.push((
                format!("{{agent=\"{}\",replica=\"{}\"}}", label(agent), r.replica),
                r.restarts as f64,
            ));
        }
    }
    family(
        &mut out,
        "cortex_agent_health",
        "gauge",
        "1 for the state each agent replica is in.",
        &health,
    );
    family(
        &mut out,
        "cortex_agent_restarts_total",
        "counter",
        "Restarts of each agent replica.",
        &restarts,
    );
    let firing: Vec<(String, f64)> = status
        .alerts_firing
        .iter()
        .map(|r| (format!("{{rule=\"{}\"}}", label(r)), 1.0))
        .collect();
    family(
        &mut out,
        "cortex_alerts_firing",
        "gauge",
        "Alert rules firing.",
        &firing,
    );
    shared.workflows.metrics.render(&mut out);
    shared.state.metrics.render(&mut out);
    if let Some(hook) = &shared.extra_metrics {
        (hook.0)(&mut out);
    }
    family(
        &mut out,
        "cortex_applied_revision",
        "gauge",
        "The applied revision the runtime runs.",
        &[(String::new(), status.revision as f64)],
    );
    out
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&shared),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// The challenge of `GET /v1/identity`.
#[derive(serde::Deserialize)]
struct IdentityQuery {
    nonce: String,
}

/// Longest nonce the identity challenge takes.
const MAX_NONCE: usize = 256;

/// `GET /v1/identity?nonce=N` → `{"proof"}`: the HMAC of the nonce under the
/// operator token's hash ([`tokens::identity_proof`]). No token is needed:
/// the answer proves the runtime's identity without revealing anything.
async fn identity(
    State(shared): State<Shared>,
    ApiQuery(query): ApiQuery<IdentityQuery>,
) -> Result<Response, BrokerError> {
    if query.nonce.is_empty() || query.nonce.len() > MAX_NONCE {
        return Err(BrokerError::BadRequest(format!(
            "nonce must be 1 to {MAX_NONCE} characters"
        )));
    }
    let Some(operator) = shared.broker.config().operator else {
        return Err(BrokerError::UnknownAgent("the operator".into()));
    };
    Ok(axum::Json(serde_json::json!({
        "proof": tokens::identity_proof(&operator, &query.nonce)
    }))
    .into_response())
}

/// Every route of the runtime.
pub fn router(shared: Shared) -> Router {
    let runtime = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/identity", get(identity))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared.clone());
    // The agent socket serves state calls too: it finds the state here.
    super::broker::routes::routes(shared.broker.clone())
        .layer(axum::Extension(shared.state.clone()))
        .merge(crate::state::http::routes(shared.state.clone()))
        .merge(crate::workflow::http::routes(shared))
        .merge(runtime)
        .fallback(super::broker::http::no_route)
        .method_not_allowed_fallback(super::broker::http::no_method)
}
