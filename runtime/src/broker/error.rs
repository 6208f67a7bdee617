//! Why the broker refuses a call; each reason maps to one HTTP status.

use crate::store::StoreError;

/// Why the broker refused a call. Each maps to one HTTP status in [`super::http`].
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No token, or a token nobody has (401).
    #[error(
        "missing or invalid token: send `Authorization: Bearer <token>` with the token cortex gave the agent"
    )]
    Unauthorized,
    /// The caller may not do this (403).
    #[error("{who} may not {action} {topic}: its spec does not declare it (add it to `{field}`)")]
    Forbidden {
        /// The caller.
        who: String,
        /// `publish to` or `receive from`.
        action: &'static str,
        /// The topic.
        topic: String,
        /// The spec field that would allow it.
        field: &'static str,
    },
    /// No such topic (404).
    #[error("no topic named {0}")]
    UnknownTopic(String),
    /// No such agent (404).
    #[error("no agent named {0}")]
    UnknownAgent(String),
    /// An inbox is full (429); nothing was enqueued anywhere.
    #[error(
        "inbox {inbox} is full ({capacity} messages): retry later, or raise messaging.inbox.capacity"
    )]
    InboxFull {
        /// The full inbox (agent name).
        inbox: String,
        /// Its capacity.
        capacity: usize,
    },
    /// The payload fails the topic's schema (400).
    #[error("payload does not match the schema of {topic} at {pointer}: {message}")]
    Schema {
        /// The topic.
        topic: String,
        /// JSON pointer into the payload.
        pointer: String,
        /// What is wrong.
        message: String,
    },
    /// The payload is not JSON (400).
    #[error("payload is not JSON: {0}")]
    BadPayload(String),
    /// The payload nests deeper than the broker delivers (400).
    #[error(
        "payload nests deeper than {limit} levels of arrays and objects: agents' JSON parsers could not read it"
    )]
    TooDeep {
        /// The deepest nesting accepted.
        limit: usize,
    },
    /// A malformed request: query, path, headers or body shape (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request body is longer than the route takes (413); nothing of it
    /// was read past the limit.
    #[error("the request body is longer than {limit} bytes, the most this route takes")]
    TooLarge {
        /// The route's limit in bytes.
        limit: usize,
    },
    /// No such route (404) or method (405).
    #[error("{message}")]
    NoRoute {
        /// 404 or 405.
        status: u16,
        /// What was asked.
        message: String,
    },
    /// Ack/nack/reply of a message that is not in flight for this agent (404).
    #[error(
        "message {id} is not in flight in {inbox}'s inbox (already acked, or redelivered after its ack timeout)"
    )]
    NotInFlight {
        /// The message.
        id: u64,
        /// The inbox.
        inbox: String,
    },
    /// A request got no reply in time (504).
    #[error("{agent} did not reply within {ms} ms")]
    Timeout {
        /// The agent asked.
        agent: String,
        /// How long the caller waited.
        ms: u64,
    },
    /// The store could not make the change durable (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}
