//! The agent socket: `GET /v1/inbox/socket?prefetch=N` (bearer token)
//! upgrades to a WebSocket that carries an agent's deliveries out, and its
//! settlements and messages in, with no HTTP request per message.
//!
//! Frames are JSON text. The agent sends:
//! - `{"ack": [ids]}`, `{"nack": [ids], "delayMs": n, "reason"?: text}`,
//!   `{"reply": id, "payload": ...}`: settlements, not answered unless they
//!   fail;
//! - `{"send": agent, "key"?, "payload", "ref": n}` and
//!   `{"publish": topic, "key"?, "payload", "ref": n}`: a direct message and
//!   a publish, with the same checks as over HTTP, answered once durable
//!   with `{"ref": n, "published": {"ids", "deliveredTo"}}`. Messages are
//!   queued in the order their frames arrive.
//!
//! - `{"state": "get" | "put" | "delete", "scope", "key", "value"?,
//!   "ifVersion"?, "ref": n}`: agent state ([`crate::state`]), with the same
//!   rights and checks as over HTTP, answered with `{"ref": n, "state": …}`
//!   (the document for a get — `null` when the key is missing —, `{key,
//!   version}` for a put or delete) once durable, or with the HTTP API's
//!   status and error (`"current"` added to a 409). State calls are
//!   answered as each finishes: wait for an answer before the next call
//!   when their order matters.
//!
//! One frame may carry both: `{"send": …, "ack": [ids]}` settles those
//! deliveries with no frame of its own (the message is queued first). Acks
//! are applied when their frame is read and made durable while the next
//! frames are read; the journal keeps them in order. Replies are applied
//! each in a task of its own, so replies to many requests share a store
//! write.
//!
//! The broker sends `{"deliveries": [...]}` (the long-poll's delivery
//! objects), the answers above, and `{"status": 404, "error": {...}}` (the
//! HTTP API's status and error body; with `"ref"` when it answers a send
//! or publish). At most `prefetch` deliveries (default 64) are unsettled on
//! the socket at once: the broker sends more as the agent settles them.
//! Deliveries unsettled when the socket closes come again after their
//! topic's `ackTimeout`, as over the other receive paths.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cortex_client::ApiError;
use futures::future::Either;
use futures::stream::{FuturesOrdered, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};

use super::http::{ApiQuery, MAX_BATCH, MAX_MESSAGE_BODY, agent_of, principal, wire};
use super::inbox::Inbox;
use super::{Accepted, Broker, BrokerError, Principal, Published, Recipient, Settled};
use crate::state::{AgentState, StateError};

/// Unsettled deliveries a socket holds when the agent does not say.
pub const DEFAULT_PREFETCH: usize = 64;

/// The socket's read buffer: tungstenite zeroes all of it on every read
/// (128 KiB by default); settlement frames are small.
const READ_BUFFER: usize = 4 * 1024;

/// The socket's query: `prefetch`, the most unsettled deliveries at once.
#[derive(Deserialize)]
pub(super) struct SocketQuery {
    prefetch: Option<usize>,
}

/// Longest frame an agent may send: a message body's limit over HTTP
/// ([`MAX_MESSAGE_BODY`]) plus room for the acks that ride along.
const MAX_FRAME: usize = MAX_MESSAGE_BODY + 64 * 1024;

/// The upgrade handler: authenticates before the upgrade, so a bad token
/// is a plain `401`.
pub(super) async fn upgrade(
    State(broker): State<Arc<Broker>>,
    state: Option<Extension<Arc<AgentState>>>,
    ApiQuery(query): ApiQuery<SocketQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, BrokerError> {
    let state = state.map(|Extension(s)| s);
    let agent = agent_of(principal(&broker, &headers)?)?;
    let ws = ws.map_err(|e| BrokerError::BadRequest(e.body_text()))?;
    let inbox = broker.known_inbox(&agent)?;
    let prefetch = query
        .prefetch
        .unwrap_or(DEFAULT_PREFETCH)
        .clamp(1, MAX_BATCH);
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| serve(broker, state, agent, inbox, prefetch, socket))
        .into_response())
}

/// A frame from the agent: a settlement, or a message to send or publish.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Incoming<'a> {
    #[serde(default)]
    ack: Vec<u64>,
    #[serde(default)]
    nack: Vec<u64>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    reply: Option<u64>,
    #[serde(default, borrow)]
    send: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    publish: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default, rename = "ref")]
    reference: u64,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    state: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    scope: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    value: Option<&'a RawValue>,
    #[serde(default)]
    if_version: Option<u64>,
}

impl Incoming<'_> {
    /// How many deliveries this frame settles by ack or nack (a reply is
    /// settled in a task of its own).
    fn acks_and_nacks(&self) -> usize {
        self.ack.len() + self.nack.len()
    }

    fn payload(&self) -> &str {
        self.payload.map_or("null", |p| p.get())
    }
}

/// Deliveries handed out on one socket and not yet settled.
#[derive(Default)]
struct Window {
    unsettled: AtomicUsize,
    settled: Notify,
}

impl Window {
    fn settle(&self, n: usize) {
        let _ = self
            .unsettled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
        self.settled.notify_one();
    }
}

/// A frame answering a send or publish (`reference`), or reporting a
/// failed settlement (no reference).
fn answer_frame(reference: Option<u64>, result: Result<&Published, &BrokerError>) -> String {
    #[derive(Serialize)]
    struct Answer<'a> {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        published: Option<&'a Published>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ApiError>,
    }
    let answer = match result {
        Ok(published) => Answer {
            reference,
            published: Some(published),
            status: None,
            error: None,
        },
        Err(error) => Answer {
            reference,
            published: None,
            status: Some(error.status().0.as_u16()),
            error: Some(error.api_error()),
        },
    };
    serde_json::to_string(&answer).unwrap_or_default()
}

fn error_frame(error: &BrokerError) -> String {
    answer_frame(None, Err(error))
}

/// What the reader hands the writer: a frame to send as it is, or the
/// answer to a send or publish, to send once the message is durable.
enum Outgoing {
    Frame(String),
    Answer(u64, Accepted),
    /// Acks: an error frame if one was not in flight or the store failed.
    Settled(Settled),
}

/// Sends deliveries while the window has room, and the answers and errors
/// the reader task hands over; the reader applies the agent's frames. Ends
/// when either side closes (answers still owed are sent first), or when
/// the agent is removed (`inbox` then refuses to deliver).
async fn serve(
    broker: Arc<Broker>,
    state: Option<Arc<AgentState>>,
    agent: String,
    inbox: Arc<Inbox>,
    prefetch: usize,
    socket: WebSocket,
) {
    let (mut sink, frames) = socket.split();
    let window = Arc::new(Window::default());
    let (out, mut outgoing) = mpsc::unbounded_channel::<Outgoing>();
    let reader = tokio::spawn(read(
        broker.clone(),
        state,
        agent.clone(),
        frames,
        window.clone(),
        out,
    ));
    // What is owed once durable (answers, failed acks), in the order it was
    // queued, which is the order the journal makes it durable.
    let mut answers = FuturesOrdered::new();
    let mut reader_done = false;
    tracing::debug!(agent = %agent, prefetch, "agent socket open");
    loop {
        if reader_done && answers.is_empty() {
            break; // the agent closed its side, answers sent
        }
        let room = prefetch.saturating_sub(window.unsettled.load(Ordering::Acquire));
        let frame = tokio::select! {
            next = outgoing.recv(), if !reader_done => match next {
                Some(Outgoing::Frame(frame)) => frame,
                Some(Outgoing::Answer(reference, accepted)) => {
                    answers.push_back(Either::Left(async move {
                        Some(answer_frame(Some(reference), accepted.durable().await.as_ref()))
                    }));
                    continue;
                }
                Some(Outgoing::Settled(settled)) => {
                    answers.push_back(Either::Right(async move {
                        settled.durable().await.err().map(|e| error_frame(&e))
                    }));
                    continue;
                }
                None => {
                    reader_done = true;
                    continue;
                }
            },
            Some(owed) = answers.next(), if !answers.is_empty() => match owed {
                Some(frame) => frame,
                None => continue, // acks made durable: nothing to say
            },
            _ = window.settled.notified(), if room == 0 && !reader_done => continue,
            taken = broker.take_when_ready(&inbox, room, None), if room > 0 && !reader_done => match taken {
                Ok(taken) => {
                    window.unsettled.fetch_add(taken.len(), Ordering::AcqRel);
                    format!("{{\"deliveries\":{}}}", wire(&taken))
                }
                Err(e) => {
                    // The agent was removed: say why, close.
                    let _ = sink.send(Message::Text(error_frame(&e).into())).await;
                    break;
                }
            },
        };
        if sink.send(Message::Text(frame.into())).await.is_err() {
            break;
        }
    }
    reader.abort();
    tracing::debug!(agent = %agent, "agent socket closed");
}

/// Applies the agent's frames in order, each frame's acks first (applied
/// here and handed to the writer to report a failure once durable, so they
/// are settled before the frame's message is answered); then its message,
/// queued here in order and answered by the writer once durable; then its
/// nacks and reply. A failed
/// settlement goes back as an error frame. Ends when the agent closes the
/// socket.
async fn read(
    broker: Arc<Broker>,
    state: Option<Arc<AgentState>>,
    agent: String,
    mut frames: SplitStream<WebSocket>,
    window: Arc<Window>,
    out: mpsc::UnboundedSender<Outgoing>,
) {
    let who = Principal::Agent(agent.clone());
    while let Some(Ok(frame)) = frames.next().await {
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue, // pings are answered by the socket itself
        };
        let frame = match serde_json::from_str::<Incoming>(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                let error = BrokerError::BadPayload(format!(
                    "expected {{\"ack\": [ids]}}, {{\"nack\": [ids], \"delayMs\"}}, {{\"reply\": id, \"payload\"}}, {{\"send\": agent, \"payload\", \"ref\"}} or {{\"publish\": topic, \"payload\", \"ref\"}}: {e}"
                ));
                if out.send(Outgoing::Frame(error_frame(&error))).is_err() {
                    break;
                }
                continue;
            }
        };
        let key = frame.key.as_deref();
        if let Some(op) = &frame.state {
            // Refused whole when it also carries a message or settlements.
            let answer = if frame.send.is_some()
                || frame.publish.is_some()
                || frame.reply.is_some()
                || frame.acks_and_nacks() > 0
            {
                answer_frame(
                    Some(frame.reference),
                    Err(&BrokerError::BadPayload(
                        "a `state` frame carries nothing else".to_string(),
                    )),
                )
            } else {
                match state_call(state.as_ref(), &who, op, &frame) {
                    Ok(call) => {
                        let (out, reference) = (out.clone(), frame.reference);
                        tokio::spawn(async move {
                            let _ = out.send(Outgoing::Frame(state_frame(reference, call.await)));
                        });
                        continue;
                    }
                    Err(e) => state_frame(frame.reference, Err(e)),
                }
            };
            if out.send(Outgoing::Frame(answer)).is_err() {
                break;
            }
            continue;
        }
        let recipient = match (&frame.send, &frame.publish) {
            (Some(_), Some(_)) => {
                // Refused whole, settlements too: nothing is half-applied.
                let error = BrokerError::BadPayload(
                    "a frame has `send` or `publish`, not both".to_string(),
                );
                let refusal = answer_frame(Some(frame.reference), Err(&error));
                if out.send(Outgoing::Frame(refusal)).is_err() {
                    break;
                }
                continue;
            }
            (Some(agent), None) => Some(Recipient::Agent(agent)),
            (None, Some(topic)) => Some(Recipient::Topic(topic)),
            (None, None) => None,
        };
        if !frame.ack.is_empty() {
            // Applied now, before the frame's message is accepted, so they
            // are settled before its answer can come back; the writer waits
            // for durability and reports a failure, so this task reads on
            // while the store commits.
            let _ = out.send(match broker.ack_now(&agent, &frame.ack) {
                Ok(settled) => Outgoing::Settled(settled),
                Err(e) => Outgoing::Frame(error_frame(&e)),
            });
        }
        if let Some(to) = recipient {
            let reference = frame.reference;
            let _ = out.send(match broker.accept(&who, to, key, frame.payload()) {
                Ok(accepted) => Outgoing::Answer(reference, accepted),
                Err(e) => Outgoing::Frame(answer_frame(Some(reference), Err(&e))),
            });
        }
        if let Some(id) = frame.reply {
            // Applied in its own task: replies to many requests are made
            // durable together (the journal's group commit) instead of one
            // store write after another; a failure comes back as an error
            // frame.
            let (broker, agent, out, window) =
                (broker.clone(), agent.clone(), out.clone(), window.clone());
            let payload = frame.payload().to_string();
            tokio::spawn(async move {
                let result = broker.reply(&agent, id, &payload).await;
                window.settle(1);
                if let Err(e) = result {
                    let _ = out.send(Outgoing::Frame(error_frame(&e)));
                }
            });
        }
        let others = frame.acks_and_nacks();
        if others > 0 {
            let result = settle_others(&broker, &agent, &frame).await;
            window.settle(others);
            if let Err(e) = result
                && out.send(Outgoing::Frame(error_frame(&e))).is_err()
            {
                break;
            }
        }
    }
}

/// A state call of a frame, ready to run (the frame's fields copied out).
fn state_call(
    state: Option<&Arc<AgentState>>,
    who: &Principal,
    op: &str,
    frame: &Incoming<'_>,
) -> Result<
    impl std::future::Future<Output = Result<serde_json::Value, StateError>> + Send + 'static,
    StateError,
> {
    let state = state
        .cloned()
        .ok_or_else(|| BrokerError::BadRequest("agent state is not served here".into()))?;
    let (Some(scope), Some(key)) = (&frame.scope, &frame.key) else {
        return Err(
            BrokerError::BadRequest("a `state` frame needs `scope` and `key`".into()).into(),
        );
    };
    let value = match (op, frame.value) {
        ("put", Some(raw)) => Some(
            serde_json::from_str::<serde_json::Value>(raw.get())
                .map_err(|e| BrokerError::BadPayload(e.to_string()))?,
        ),
        ("put", None) => {
            return Err(BrokerError::BadRequest("a `put` needs a `value`".into()).into());
        }
        ("get" | "delete", _) => None,
        (other, _) => {
            return Err(BrokerError::BadRequest(format!(
                "`state` is get, put or delete, not {other:?}"
            ))
            .into());
        }
    };
    let (who, scope, key, op) = (
        who.clone(),
        scope.to_string(),
        key.to_string(),
        op.to_string(),
    );
    let if_version = frame.if_version;
    Ok(async move {
        let answer = match op.as_str() {
            "get" => match state.get(&who, &scope, &key).await {
                Ok(doc) => serde_json::to_value(doc),
                Err(StateError::NotFound { .. }) => Ok(serde_json::Value::Null),
                Err(e) => return Err(e),
            },
            _ => serde_json::to_value(state.write(&who, &scope, &key, value, if_version).await?),
        };
        Ok(answer.unwrap_or_default())
    })
}

/// The frame answering a state call.
fn state_frame(reference: u64, result: Result<serde_json::Value, StateError>) -> String {
    let frame = match result {
        Ok(answer) => serde_json::json!({ "ref": reference, "state": answer }),
        Err(e) => {
            // The HTTP API's error body, with the reference and the status.
            let mut frame =
                serde_json::to_value(crate::state::http::ErrorBody::of(&e)).unwrap_or_default();
            frame["ref"] = reference.into();
            frame["status"] = e.status().0.as_u16().into();
            frame
        }
    };
    frame.to_string()
}

/// Applies one frame's nacks (its acks go through the writer, its reply
/// in a task of its own); the first failure is returned after the rest
/// have been applied.
async fn settle_others(broker: &Broker, agent: &str, s: &Incoming<'_>) -> Result<(), BrokerError> {
    let mut first_error = None;
    for &id in &s.nack {
        if let Err(e) = broker
            .nack(
                agent,
                id,
                Duration::from_millis(s.delay_ms),
                s.reason.as_deref(),
            )
            .await
        {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
