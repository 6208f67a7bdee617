//! The agent socket: `GET /v1/inbox/socket?prefetch=N` (bearer token)
//! upgrades to a WebSocket that carries an agent's deliveries out and its
//! settlements back, with no HTTP request per message.
//!
//! Frames are JSON text. The broker sends `{"deliveries": [...]}` (the
//! long-poll's delivery objects) and, when a settlement fails,
//! `{"status": 404, "error": {...}}` (the HTTP API's error body and status).
//! The agent sends `{"ack": [ids]}`, `{"nack": [ids], "delayMs": n}` or
//! `{"reply": id, "payload": ...}`; a settlement is not answered unless it
//! fails. At most `prefetch` deliveries (default 64) are unsettled on the
//! socket at once: the broker sends more as the agent settles them.
//! Deliveries unsettled when the socket closes come again after their
//! topic's `ackTimeout`, as over the other receive paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};

use super::http::{MAX_BATCH, agent_of, principal, wire};
use super::{Broker, BrokerError};

/// Unsettled deliveries a socket holds when the agent does not say.
pub const DEFAULT_PREFETCH: usize = 64;

/// How long one wait for deliveries lasts before it is renewed.
const IDLE: Duration = Duration::from_secs(15);

/// The socket's query: `prefetch`, the most unsettled deliveries at once.
#[derive(Deserialize)]
pub(super) struct SocketQuery {
    prefetch: Option<usize>,
}

/// The upgrade handler: authenticates before the upgrade, so a bad token
/// is a plain `401`.
pub(super) async fn upgrade(
    State(broker): State<Arc<Broker>>,
    Query(query): Query<SocketQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, BrokerError> {
    let agent = agent_of(principal(&broker, &headers)?)?;
    broker.known_inbox(&agent)?;
    let prefetch = query
        .prefetch
        .unwrap_or(DEFAULT_PREFETCH)
        .clamp(1, MAX_BATCH);
    Ok(ws
        .on_upgrade(move |socket| serve(broker, agent, prefetch, socket))
        .into_response())
}

/// A settlement frame from the agent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settlement<'a> {
    #[serde(default)]
    ack: Vec<u64>,
    #[serde(default)]
    nack: Vec<u64>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    reply: Option<u64>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

impl Settlement<'_> {
    fn count(&self) -> usize {
        self.ack.len() + self.nack.len() + usize::from(self.reply.is_some())
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

fn error_frame(error: &BrokerError) -> String {
    serde_json::json!({
        "status": error.status().0.as_u16(),
        "error": error.api_error(),
    })
    .to_string()
}

/// Sends deliveries while the window has room; a reader task applies the
/// agent's settlements. Ends when either side closes.
async fn serve(broker: Arc<Broker>, agent: String, prefetch: usize, socket: WebSocket) {
    let (mut sink, frames) = socket.split();
    let window = Arc::new(Window::default());
    let (errors, mut failed) = mpsc::unbounded_channel::<String>();
    let reader = tokio::spawn(read(
        broker.clone(),
        agent.clone(),
        frames,
        window.clone(),
        errors,
    ));
    tracing::debug!(agent = %agent, prefetch, "agent socket open");
    loop {
        let room = prefetch.saturating_sub(window.unsettled.load(Ordering::Acquire));
        let frame = tokio::select! {
            error = failed.recv() => match error {
                Some(frame) => frame,
                None => break, // the agent closed its side
            },
            _ = window.settled.notified(), if room == 0 => continue,
            taken = broker.receive(&agent, room, IDLE), if room > 0 => match taken {
                Ok(taken) if taken.is_empty() => continue,
                Ok(taken) => {
                    window.unsettled.fetch_add(taken.len(), Ordering::AcqRel);
                    format!("{{\"deliveries\":{}}}", wire(&taken))
                }
                Err(e) => error_frame(&e),
            },
        };
        if sink.send(Message::Text(frame.into())).await.is_err() {
            break;
        }
    }
    reader.abort();
    tracing::debug!(agent = %agent, "agent socket closed");
}

/// Applies settlement frames in order; a failure goes back as an error
/// frame. Ends when the agent closes the socket.
async fn read(
    broker: Arc<Broker>,
    agent: String,
    mut frames: SplitStream<WebSocket>,
    window: Arc<Window>,
    errors: mpsc::UnboundedSender<String>,
) {
    while let Some(Ok(frame)) = frames.next().await {
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue, // pings are answered by the socket itself
        };
        let result = match serde_json::from_str::<Settlement>(text.as_str()) {
            Ok(settlement) => {
                let result = apply(&broker, &agent, &settlement).await;
                window.settle(settlement.count());
                result
            }
            Err(e) => Err(BrokerError::BadPayload(format!(
                "expected {{\"ack\": [ids]}}, {{\"nack\": [ids], \"delayMs\"}} or {{\"reply\": id, \"payload\"}}: {e}"
            ))),
        };
        if let Err(e) = result
            && errors.send(error_frame(&e)).is_err()
        {
            break;
        }
    }
}

/// Applies one settlement; the first failure is returned after the rest
/// of the frame has been applied.
async fn apply(broker: &Broker, agent: &str, s: &Settlement<'_>) -> Result<(), BrokerError> {
    let mut first_error = None;
    if !s.ack.is_empty()
        && let Err(e) = broker.ack_many(agent, &s.ack).await
    {
        first_error.get_or_insert(e);
    }
    for &id in &s.nack {
        if let Err(e) = broker
            .nack(agent, id, Duration::from_millis(s.delay_ms))
            .await
        {
            first_error.get_or_insert(e);
        }
    }
    if let Some(id) = s.reply {
        let payload = s.payload.map_or("null", |p| p.get());
        if let Err(e) = broker.reply(agent, id, payload).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
