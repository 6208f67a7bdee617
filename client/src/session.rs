//! The agent socket: one WebSocket carrying the agent's deliveries in and
//! its acks, nacks, replies, messages and agent-state calls out, without an
//! HTTP request per message.
//! The cheapest way to receive; see [`Client::session`](crate::Client::session).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{ApiError, Cas, ClientError, Delivery, Published, StateDocument, StateWritten};

/// The socket's read buffer. tungstenite zeroes its whole read buffer on
/// every read (128 KiB by default, most of the cost of a small frame);
/// frames are small, and a larger one still arrives whole.
const READ_BUFFER: usize = 4 * 1024;

/// An open agent socket. Read deliveries with [`Session::next`]; settle
/// each with [`Session::ack`], [`Session::nack`] or [`Session::reply`];
/// send and publish with [`Session::send`] and [`Session::publish`].
/// Settlements are not answered unless they fail: a failure arrives as an
/// `Err` from a later [`Session::next`].
#[derive(Debug)]
pub struct Session {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Deliveries read off the socket and not yet taken, with when.
    ready: VecDeque<(Instant, Delivery)>,
    failures: VecDeque<ClientError>,
    /// Acks waiting to ride on the next frame ([`Session::defer_ack`]).
    deferred: Vec<u64>,
    /// Deliveries that could not be read, to nack with the reason.
    unreadable: Vec<(u64, String)>,
    last_ref: u64,
    url: String,
}

/// A frame to the broker: a settlement, a message, or both (the fields
/// its socket reads; unset ones are left out).
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Outgoing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Value>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ack: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nack: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    if_version: Option<u64>,
}

/// A delivery as it arrives: its payload still JSON text, so that one this
/// library cannot parse (nested too deep, say) is nacked, not fatal to the
/// socket.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDelivery {
    id: u64,
    topic: Option<String>,
    key: Option<String>,
    sender: String,
    payload: Box<serde_json::value::RawValue>,
    attempt: u32,
    request: bool,
    in_reply_to: Option<u64>,
}

impl WireDelivery {
    /// The delivery, or its id and why its payload cannot be read.
    fn decode(self) -> Result<Delivery, (u64, String)> {
        let payload = serde_json::from_str(self.payload.get())
            .map_err(|e| (self.id, format!("payload is not readable JSON: {e}")))?;
        Ok(Delivery {
            id: self.id,
            topic: self.topic,
            key: self.key,
            sender: self.sender,
            payload,
            attempt: self.attempt,
            request: self.request,
            in_reply_to: self.in_reply_to,
        })
    }
}

/// A frame from the broker.
#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    deliveries: Vec<WireDelivery>,
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    status: u16,
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
    #[serde(default)]
    published: Option<Published>,
    /// The answer to a state call.
    #[serde(default)]
    state: Option<Value>,
    /// The key as it is, with a 409.
    #[serde(default)]
    current: Option<StateDocument>,
}

impl Session {
    /// Opens the socket of the agent `token` belongs to, on the broker at
    /// `base` (`http://…`), with at most `prefetch` unsettled deliveries.
    pub(crate) async fn open(
        base: &str,
        token: &str,
        prefetch: usize,
    ) -> Result<Self, ClientError> {
        let Some(rest) = base.strip_prefix("http://") else {
            return Err(ClientError::Socket {
                url: base.to_string(),
                message: "the agent socket needs an http:// broker URL (no TLS on the socket yet): use Client::stream or Client::receive".into(),
            });
        };
        let url = format!("ws://{rest}/v1/inbox/socket?prefetch={prefetch}");
        let socket_error = |message: String| ClientError::Socket {
            url: url.clone(),
            message,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| socket_error(e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| socket_error(e.to_string()))?;
        request.headers_mut().insert("authorization", bearer);
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        // `true`: no Nagle, small frames go out at once.
        let (socket, _) =
            match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
                Ok(open) => open,
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    let status = response.status().as_u16();
                    let body = response.body().as_deref().unwrap_or_default();
                    return Err(ClientError::Api {
                        status,
                        error: crate::error_of(status, &String::from_utf8_lossy(body)),
                    });
                }
                Err(e) => return Err(socket_error(e.to_string())),
            };
        Ok(Session {
            socket,
            ready: VecDeque::new(),
            failures: VecDeque::new(),
            deferred: Vec::new(),
            unreadable: Vec::new(),
            last_ref: 0,
            url,
        })
    }

    /// The next delivery; `None` once the broker has closed the socket.
    /// A settlement the broker refused comes back here as an `Err`.
    /// Cancel-safe: dropping the future (a timeout) loses no delivery.
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        Some(self.next_timed().await?.map(|(delivery, _)| delivery))
    }

    /// [`Session::next`], with when the delivery was read off the socket:
    /// deliveries arriving while a [`Session::send`] waits for its answer
    /// are read then, and kept. For measuring how long a delivery took to
    /// arrive apart from how long the agent took to look at it.
    pub async fn next_timed(&mut self) -> Option<Result<(Delivery, Instant), ClientError>> {
        loop {
            if let Some((id, message)) = self.unreadable.pop() {
                let nacked = self
                    .frame(Outgoing {
                        nack: vec![id],
                        reason: Some(&message),
                        ..Outgoing::default()
                    })
                    .await;
                return Some(Err(match nacked {
                    Ok(()) => ClientError::Undecodable { id, message },
                    Err(e) => e,
                }));
            }
            if let Some(failure) = self.failures.pop_front() {
                return Some(Err(failure));
            }
            if let Some((arrived, delivery)) = self.ready.pop_front() {
                return Some(Ok((delivery, arrived)));
            }
            match self.read().await? {
                Ok(incoming) => self.take(incoming),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Sends `payload` straight to `agent`'s inbox over the socket; returns
    /// once it is durable. Deliveries arriving meanwhile wait for
    /// [`Session::next`].
    pub async fn send(
        &mut self,
        agent: &str,
        key: Option<&str>,
        payload: &Value,
    ) -> Result<Published, ClientError> {
        self.message(Outgoing {
            send: Some(agent),
            key,
            payload: Some(payload),
            ..Outgoing::default()
        })
        .await
    }

    /// Publishes `payload` to `topic` over the socket (one copy per
    /// subscriber); returns once the copies are durable.
    pub async fn publish(
        &mut self,
        topic: &str,
        key: Option<&str>,
        payload: &Value,
    ) -> Result<Published, ClientError> {
        self.message(Outgoing {
            publish: Some(topic),
            key,
            payload: Some(payload),
            ..Outgoing::default()
        })
        .await
    }

    /// A `send` or `publish` frame, and its answer.
    async fn message(&mut self, frame: Outgoing<'_>) -> Result<Published, ClientError> {
        let answer = self.call(frame).await?;
        match (answer.error, answer.published) {
            (Some(error), _) => Err(ClientError::Api {
                status: answer.status,
                error,
            }),
            (None, Some(published)) => Ok(published),
            (None, None) => Err(self.unexpected("an answer with neither `published` nor `error`")),
        }
    }

    /// One key's document from agent state, over the socket (as
    /// [`crate::StateScope::get`]); `None` when it does not exist.
    pub async fn state_get(
        &mut self,
        scope: &str,
        key: &str,
    ) -> Result<Option<StateDocument>, ClientError> {
        let answer = self.state_call("get", scope, key, None, None).await?;
        if let Some(error) = answer.error {
            return Err(ClientError::Api {
                status: answer.status,
                error,
            });
        }
        match answer.state {
            None | Some(Value::Null) => Ok(None),
            Some(doc) => serde_json::from_value(doc)
                .map(Some)
                .map_err(|e| self.unexpected(&e.to_string())),
        }
    }

    /// Writes a key of agent state over the socket, with compare-and-swap
    /// when `if_version` is given (`Some(0)`: create only); answers once
    /// durable.
    pub async fn state_put(
        &mut self,
        scope: &str,
        key: &str,
        value: &Value,
        if_version: Option<u64>,
    ) -> Result<Cas, ClientError> {
        self.state_cas("put", scope, key, Some(value), if_version)
            .await
    }

    /// Deletes a key of agent state over the socket (compare-and-swap with
    /// `if_version`).
    pub async fn state_delete(
        &mut self,
        scope: &str,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<Cas, ClientError> {
        self.state_cas("delete", scope, key, None, if_version).await
    }

    async fn state_cas(
        &mut self,
        op: &str,
        scope: &str,
        key: &str,
        value: Option<&Value>,
        if_version: Option<u64>,
    ) -> Result<Cas, ClientError> {
        let answer = self.state_call(op, scope, key, value, if_version).await?;
        match answer.error {
            Some(_) if answer.status == 409 => Ok(Cas::Conflict(answer.current)),
            Some(error) => Err(ClientError::Api {
                status: answer.status,
                error,
            }),
            None => answer
                .state
                .and_then(|w| serde_json::from_value::<StateWritten>(w).ok())
                .map(|w| Cas::Written(w.version))
                .ok_or_else(|| self.unexpected("a state answer without a version")),
        }
    }

    async fn state_call(
        &mut self,
        op: &str,
        scope: &str,
        key: &str,
        value: Option<&Value>,
        if_version: Option<u64>,
    ) -> Result<Incoming, ClientError> {
        self.call(Outgoing {
            state: Some(op),
            scope: Some(scope),
            key: Some(key),
            value,
            if_version,
            ..Outgoing::default()
        })
        .await
    }

    /// Sends `frame` with a new `ref` and reads until its answer.
    async fn call(&mut self, mut frame: Outgoing<'_>) -> Result<Incoming, ClientError> {
        self.last_ref += 1;
        let reference = self.last_ref;
        frame.reference = Some(reference);
        self.frame(frame).await?;
        self.answer(reference).await
    }

    fn unexpected(&self, message: &str) -> ClientError {
        ClientError::Socket {
            url: self.url.clone(),
            message: format!("unexpected answer from the broker: {message}"),
        }
    }

    /// Reads frames until the answer to `reference` comes, keeping
    /// deliveries and failures for [`Session::next`].
    async fn answer(&mut self, reference: u64) -> Result<Incoming, ClientError> {
        loop {
            let incoming = match self.read().await {
                Some(result) => result?,
                None => {
                    return Err(ClientError::Socket {
                        url: self.url.clone(),
                        message: "the broker closed the socket before answering".into(),
                    });
                }
            };
            if incoming.reference == Some(reference) {
                return Ok(incoming);
            }
            self.take(incoming);
        }
    }

    /// Keeps what a frame that is not an awaited answer carries: its
    /// deliveries, or its failure (an answer to an abandoned call is
    /// dropped: nobody waits for it).
    fn take(&mut self, incoming: Incoming) {
        let arrived = Instant::now();
        for wire in incoming.deliveries {
            match wire.decode() {
                Ok(delivery) => self.ready.push_back((arrived, delivery)),
                Err(unreadable) => self.unreadable.push(unreadable),
            }
        }
        if let (None, Some(error)) = (incoming.reference, incoming.error) {
            self.failures.push_back(ClientError::Api {
                status: incoming.status,
                error,
            });
        }
    }

    /// The next frame from the broker; `None` once it has closed.
    async fn read(&mut self) -> Option<Result<Incoming, ClientError>> {
        loop {
            let text = match self.socket.next().await? {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(self.error(e))),
            };
            return Some(
                serde_json::from_str::<Incoming>(text.as_str()).map_err(|e| ClientError::Socket {
                    url: self.url.clone(),
                    message: format!("unexpected frame from the broker: {e}"),
                }),
            );
        }
    }

    /// Acknowledges a delivery.
    pub async fn ack(&mut self, id: u64) -> Result<(), ClientError> {
        self.ack_many(&[id]).await
    }

    /// Acknowledges several deliveries in one frame.
    pub async fn ack_many(&mut self, ids: &[u64]) -> Result<(), ClientError> {
        self.frame(Outgoing {
            ack: ids.to_vec(),
            ..Outgoing::default()
        })
        .await
    }

    /// Acknowledges a delivery with the next frame this session sends (a
    /// send, publish, ack, nack or reply, or [`Session::flush`]) instead of
    /// a frame of its own: an agent that answers each delivery with a
    /// message of its own settles it at no cost. Until then the delivery
    /// counts against the prefetch window, and if the session ends first it
    /// comes again after its `ackTimeout`.
    pub fn defer_ack(&mut self, id: u64) {
        self.deferred.push(id);
    }

    /// How many acks wait for the next frame.
    pub fn deferred_acks(&self) -> usize {
        self.deferred.len()
    }

    /// Sends the deferred acks now, if there are any.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        self.ack_many(&[]).await
    }

    /// Gives a delivery back, to come again after `delay`.
    pub async fn nack(&mut self, id: u64, delay: Duration) -> Result<(), ClientError> {
        self.frame(Outgoing {
            nack: vec![id],
            delay_ms: Some(delay.as_millis() as u64),
            ..Outgoing::default()
        })
        .await
    }

    /// Answers a request (and so settles it).
    pub async fn reply(&mut self, id: u64, payload: &Value) -> Result<(), ClientError> {
        self.frame(Outgoing {
            reply: Some(id),
            payload: Some(payload),
            ..Outgoing::default()
        })
        .await
    }

    /// Sends the deferred acks and closes the socket; unsettled deliveries
    /// come again after their `ackTimeout`.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.flush().await?;
        self.socket.close(None).await.map_err(|e| self.error(e))
    }

    /// Sends `frame`, with the deferred acks added to its `ack`.
    async fn frame(&mut self, mut frame: Outgoing<'_>) -> Result<(), ClientError> {
        frame.ack.append(&mut self.deferred);
        let text = serde_json::to_string(&frame).map_err(|e| ClientError::Socket {
            url: self.url.clone(),
            message: format!("cannot write a frame: {e}"),
        })?;
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: tokio_tungstenite::tungstenite::Error) -> ClientError {
        ClientError::Socket {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }
}
