//! The broker's HTTP routes: the request/response API ([`super::http`])
//! and the agent socket ([`super::socket`]) on one router.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use super::Broker;
use super::http::{publish, receive, request, send, settle, stream};

/// The broker's routes (state: the broker).
pub fn routes(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/v1/topics/{topic}/messages", post(publish))
        .route("/v1/agents/{agent}/messages", post(send))
        .route("/v1/agents/{agent}/requests", post(request))
        .route("/v1/inbox", get(receive))
        .route("/v1/inbox/stream", get(stream))
        .route("/v1/inbox/socket", get(super::socket::upgrade))
        .route("/v1/messages/{id}/{verb}", post(settle))
        .with_state(broker)
}
