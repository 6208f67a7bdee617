//! The broker's HTTP API (JSON; bearer tokens):
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /v1/topics/{topic}/messages` `{key?, payload}` | publish (202 `{ids, deliveredTo}`) |
//! | `POST /v1/agents/{agent}/messages` `{key?, payload}` | direct message (202) |
//! | `POST /v1/agents/{agent}/requests?timeoutMs=` `{key?, payload}` | request; 200 with the reply |
//! | `GET /v1/inbox?max=&waitMs=` | long-poll the caller's inbox |
//! | `GET /v1/inbox/stream` | the caller's deliveries as server-sent events |
//! | `GET /v1/inbox/socket?prefetch=` | a WebSocket: deliveries out, settlements in ([`super::socket`]) |
//! | `POST /v1/messages/{id}/ack` · `/nack` `{delayMs}` · `/reply` `{payload}` | settle a delivery |
//!
//! Errors are `{"error": {"code", "message", "inbox"?, "pointer"?}}` with
//! 400 (schema, bad payload, payload nested too deep, malformed query or
//! path), 401 (token), 403 (undeclared topic), 404 (also an unknown route),
//! 405, 413 (body too long), 429 (inbox full), 503 (store), 504 (request
//! timeout): every error of the API, none in plain text.
//!
//! The token is checked before a body is read, and bodies are capped per
//! route: [`MAX_MESSAGE_BODY`] for messages (publish, send, request,
//! reply), [`MAX_SETTLE_BODY`] for ack and nack.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cortex_client::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Broker, BrokerError, Principal, Recipient, Taken};

/// Longest body of a publish, send, request or reply (the envelope and its
/// payload): 1 MiB, the common default of message brokers (NATS's
/// `max_payload`, Kafka's `message.max.bytes` are about 1 MB). A topic's
/// schema can bound payloads further (`maxLength`, `maxItems`…).
pub const MAX_MESSAGE_BODY: usize = 1024 * 1024;
/// Longest body of an ack or nack (`{"delayMs": n}`).
pub const MAX_SETTLE_BODY: usize = 4 * 1024;
/// Longest a long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most deliveries one receive returns.
pub const MAX_BATCH: usize = 1000;

impl BrokerError {
    /// The HTTP status and body of this error.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            BrokerError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            BrokerError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            BrokerError::UnknownTopic(_) | BrokerError::UnknownAgent(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            BrokerError::NotInFlight { .. } => (StatusCode::NOT_FOUND, "not_in_flight"),
            BrokerError::InboxFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "inbox_full"),
            BrokerError::Schema { .. } => (StatusCode::BAD_REQUEST, "schema"),
            BrokerError::BadPayload(_) | BrokerError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            BrokerError::TooDeep { .. } => (StatusCode::BAD_REQUEST, "too_deep"),
            BrokerError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            BrokerError::NoRoute { status: 405, .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            BrokerError::NoRoute { .. } => (StatusCode::NOT_FOUND, "not_found"),
            BrokerError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            BrokerError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ApiError,
}

impl BrokerError {
    /// This error as the API describes it to clients.
    pub fn api_error(&self) -> ApiError {
        let (inbox, pointer) = match self {
            BrokerError::InboxFull { inbox, .. } => (Some(inbox.clone()), None),
            BrokerError::Schema { pointer, .. } => (None, Some(pointer.clone())),
            _ => (None, None),
        };
        ApiError {
            code: self.status().1.to_string(),
            message: self.to_string(),
            inbox,
            pointer,
        }
    }
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        let status = self.status().0;
        let body = ErrorBody {
            error: self.api_error(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The caller, from `Authorization: Bearer <token>`.
pub fn principal(broker: &Broker, headers: &HeaderMap) -> Result<Principal, BrokerError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| broker.authenticate(token.trim()))
        .ok_or(BrokerError::Unauthorized)
}

/// A query string, its rejection in the API's JSON error format.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = BrokerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BrokerError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| BrokerError::BadRequest(e.body_text()))
    }
}

/// Path parameters, their rejection in the API's JSON error format.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = BrokerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BrokerError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e| BrokerError::BadRequest(e.body_text()))
    }
}

/// Reads a request body of at most `limit` bytes (413 past it). Handlers
/// call it after the token is checked, so an unauthenticated body is never
/// read.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BrokerError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            BrokerError::TooLarge { limit }
        } else {
            BrokerError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })
}

/// The answer to a route that does not exist.
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> BrokerError {
    BrokerError::NoRoute {
        status: 404,
        message: format!("no route {method} {}", uri.path()),
    }
}

/// The answer to a method a route does not take.
pub async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> BrokerError {
    BrokerError::NoRoute {
        status: 405,
        message: format!("{} does not take {method}", uri.path()),
    }
}

pub(super) fn agent_of(principal: Principal) -> Result<String, BrokerError> {
    match principal {
        Principal::Agent(a) => Ok(a),
        Principal::Operator => Err(BrokerError::Forbidden {
            who: "the operator".into(),
            action: "receive from",
            topic: "an inbox".into(),
            field: "an agent's token",
        }),
    }
}

#[derive(Deserialize)]
struct Outgoing<'a> {
    #[serde(default)]
    key: Option<String>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

fn outgoing(body: &Bytes) -> Result<Outgoing<'_>, BrokerError> {
    serde_json::from_slice(body)
        .map_err(|e| BrokerError::BadPayload(format!("expected {{\"key\"?, \"payload\"}}: {e}")))
}

/// A delivery on the wire (the payload passed through as it was published).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireDelivery<'a> {
    id: u64,
    topic: Option<&'a str>,
    key: Option<&'a str>,
    sender: &'a str,
    payload: &'a RawValue,
    attempt: u32,
    request: bool,
    in_reply_to: Option<u64>,
}

pub(super) fn wire(taken: &[Taken]) -> String {
    let mut out = String::from("[");
    for (i, t) in taken.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&wire_one(t));
    }
    out.push(']');
    out
}

fn wire_one(t: &Taken) -> String {
    let fallback;
    let payload: &RawValue = match serde_json::from_str::<&RawValue>(&t.payload) {
        Ok(raw) => raw,
        Err(_) => {
            fallback = RawValue::from_string("null".into()).unwrap_or_default();
            &fallback
        }
    };
    serde_json::to_string(&WireDelivery {
        id: t.id,
        topic: t.topic.as_ref().map(|c| &*c.name),
        key: t.key.as_deref(),
        sender: &t.sender,
        payload,
        attempt: t.attempts,
        request: t.request,
        in_reply_to: t.in_reply_to,
    })
    .unwrap_or_default()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) async fn publish(
    State(broker): State<Arc<Broker>>,
    ApiPath(topic): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BrokerError> {
    accept(&broker, &headers, body, Recipient::Topic(&topic)).await
}

pub(super) async fn send(
    State(broker): State<Arc<Broker>>,
    ApiPath(agent): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BrokerError> {
    accept(&broker, &headers, body, Recipient::Agent(&agent)).await
}

/// A publish or send: 202 with the ids once durable.
async fn accept(
    broker: &Broker,
    headers: &HeaderMap,
    body: Body,
    to: Recipient<'_>,
) -> Result<Response, BrokerError> {
    let who = principal(broker, headers)?;
    let body = read_body(body, MAX_MESSAGE_BODY).await?;
    let message = outgoing(&body)?;
    let published = broker
        .accept(&who, to, message.key.as_deref(), message.payload.get())?
        .durable()
        .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(published)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RequestQuery {
    timeout_ms: Option<u64>,
}

pub(super) async fn request(
    State(broker): State<Arc<Broker>>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(query): ApiQuery<RequestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BrokerError> {
    let who = principal(&broker, &headers)?;
    let body = read_body(body, MAX_MESSAGE_BODY).await?;
    let message = outgoing(&body)?;
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(30_000)).min(MAX_WAIT);
    let reply = broker
        .request(
            &who,
            &agent,
            message.key.as_deref(),
            message.payload.get(),
            timeout,
        )
        .await?;
    Ok(json(StatusCode::OK, reply.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReceiveQuery {
    max: Option<usize>,
    wait_ms: Option<u64>,
}

pub(super) async fn receive(
    State(broker): State<Arc<Broker>>,
    ApiQuery(query): ApiQuery<ReceiveQuery>,
    headers: HeaderMap,
) -> Result<Response, BrokerError> {
    let agent = agent_of(principal(&broker, &headers)?)?;
    let max = query.max.unwrap_or(1).clamp(1, MAX_BATCH);
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let taken = broker.receive(&agent, max, wait).await?;
    Ok(json(StatusCode::OK, wire(&taken)))
}

pub(super) async fn stream(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, BrokerError> {
    let agent = agent_of(principal(&broker, &headers)?)?;
    let inbox = broker.known_inbox(&agent)?;
    // Ends when the agent is removed (its inbox then refuses to deliver).
    let events = futures::stream::unfold((broker, inbox), |(broker, inbox)| async move {
        let taken = broker.take_when_ready(&inbox, 64, None).await.ok()?;
        let events: Vec<Result<Event, Infallible>> = taken
            .iter()
            .map(|t| Ok(Event::default().event("delivery").data(wire_one(t))))
            .collect();
        Some((futures::stream::iter(events), (broker, inbox)))
    });
    use futures::StreamExt;
    Ok(Sse::new(events.flatten())
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NackBody {
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn settle(
    State(broker): State<Arc<Broker>>,
    ApiPath((id, verb)): ApiPath<(u64, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BrokerError> {
    let agent = agent_of(principal(&broker, &headers)?)?;
    let limit = if verb == "reply" {
        MAX_MESSAGE_BODY
    } else {
        MAX_SETTLE_BODY
    };
    let body = read_body(body, limit).await?;
    match verb.as_str() {
        "ack" => broker.ack(&agent, id).await?,
        "nack" => {
            let nack: NackBody = if body.is_empty() {
                NackBody::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    BrokerError::BadPayload(format!("expected {{\"delayMs\"}}: {e}"))
                })?
            };
            broker
                .nack(
                    &agent,
                    id,
                    Duration::from_millis(nack.delay_ms),
                    nack.reason.as_deref(),
                )
                .await?
        }
        "reply" => {
            let message = outgoing(&body)?;
            broker.reply(&agent, id, message.payload.get()).await?
        }
        other => {
            return Err(BrokerError::BadPayload(format!(
                "unknown action {other}: use ack, nack or reply"
            )));
        }
    }
    Ok(json(StatusCode::OK, "{}".into()))
}
