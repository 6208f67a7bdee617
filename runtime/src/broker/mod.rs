//! The message broker: direct messages and topic pub/sub between agents,
//! at-least-once with ack timeouts, redelivery and dead letters, ordering
//! per topic, bounded inboxes, schema-checked payloads, per-agent rights.
//! [`http`] serves it to agents (and [`socket`], their WebSocket); this
//! module is the in-process core.

pub mod config;
pub mod http;
pub mod inbox;
pub mod journal;
pub mod payload;
pub mod routes;
pub mod socket;

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use config::{BrokerConfig, Ordering, Principal};
use config::{Delivery, TopicConfig};
use inbox::{DeadLetter, Entry, Inbox};
pub use journal::Journal;

use super::metrics::BrokerCounters;
use crate::store::{Op, StoreError, StoredMessage, now_ms};

/// Why the broker refused a call. Each maps to one HTTP status in [`http`].
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

/// What a publish or send produced.
pub use cortex_client::Published;

/// A message the broker has taken in (queued, deliverable) whose store
/// write may still be pending: [`Accepted::durable`] waits for it. Lets a
/// caller take several messages in order and wait for them together.
#[derive(Debug)]
pub struct Accepted {
    published: Published,
    durable: journal::Durable,
}

impl Accepted {
    /// Waits until the message is durable; then it may be acknowledged.
    pub async fn durable(self) -> Result<Published, BrokerError> {
        self.durable.wait().await?;
        Ok(self.published)
    }
}

/// Acks the broker has applied whose store write may still be pending
/// ([`Broker::ack_now`]).
#[derive(Debug)]
pub struct Settled {
    durable: journal::Durable,
    missing: Option<BrokerError>,
}

impl Settled {
    /// Waits until the acks are durable; then reports the first id that
    /// was not in flight, if any.
    pub async fn durable(self) -> Result<(), BrokerError> {
        self.durable.wait().await?;
        self.missing.map_or(Ok(()), Err)
    }
}

/// Where a message goes: every subscriber of a topic, or one agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipient<'a> {
    /// Published to a topic.
    Topic(&'a str),
    /// Sent straight to an agent's inbox.
    Agent(&'a str),
}

/// A message handed out by [`Broker::receive`].
pub type Taken = Entry;

/// Queue figures of one inbox.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxStats {
    /// The agent.
    pub inbox: String,
    /// Ready messages.
    pub depth: usize,
    /// Delivered, not acked.
    pub in_flight: usize,
    /// Dead letters kept.
    pub dead_letters: usize,
    /// Capacity.
    pub capacity: usize,
}

/// A message to enqueue.
#[derive(Debug, Default)]
struct Message<'a> {
    topic: Option<Arc<TopicConfig>>,
    key: Option<&'a str>,
    sender: &'a str,
    payload: &'a str,
    in_reply_to: Option<u64>,
    /// Set for requests: where the reply goes.
    waiter: Option<oneshot::Sender<Arc<str>>>,
}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    me: std::sync::Weak<Broker>,
    config: RwLock<Arc<BrokerConfig>>,
    inboxes: RwLock<HashMap<String, Arc<Inbox>>>,
    journal: Journal,
    next_id: AtomicU64,
    replies: Mutex<HashMap<u64, oneshot::Sender<Arc<str>>>>,
    /// Counters for `/metrics`.
    pub counters: BrokerCounters,
}

fn operator_delivery() -> Delivery {
    use cortex_compiler::runtime_config::defaults;
    Delivery {
        max_attempts: defaults::MAX_ATTEMPTS,
        ack_timeout: Duration::from_millis(defaults::ACK_TIMEOUT_MS),
    }
}

impl Broker {
    /// A broker routing by `config`, keeping state through `journal`, with
    /// ids continuing after `last_id`.
    pub fn new(config: BrokerConfig, journal: Journal, last_id: u64) -> Arc<Broker> {
        let broker = Arc::new_cyclic(|me| Broker {
            me: me.clone(),
            config: RwLock::new(Arc::new(BrokerConfig::default())),
            inboxes: RwLock::new(HashMap::new()),
            journal,
            next_id: AtomicU64::new(last_id),
            replies: Mutex::new(HashMap::new()),
            counters: BrokerCounters::default(),
        });
        broker.configure(config);
        broker
    }

    /// Routes by a new config: new agents get inboxes, capacities and
    /// delivery settings change; inboxes of removed agents are kept with
    /// their messages (nothing is dropped by an apply).
    pub fn configure(&self, config: BrokerConfig) {
        {
            let mut inboxes = self.inboxes.write().unwrap_or_else(|p| p.into_inner());
            for inbox in inboxes.values() {
                let declared = config.agents.contains_key(&*inbox.name);
                if !declared && inbox.declared.swap(false, AtomicOrdering::AcqRel) {
                    // Its waiting receivers learn now that the agent is gone.
                    inbox.notify.notify_waiters();
                }
            }
            for (name, agent) in &config.agents {
                match inboxes.get(name) {
                    Some(inbox) => {
                        inbox.declared.store(true, AtomicOrdering::Release);
                        let mut state = inbox.lock();
                        state.capacity = agent.inbox_capacity;
                        state.direct = agent.delivery;
                    }
                    None => {
                        let inbox = Inbox::new(name, agent.inbox_capacity, agent.delivery);
                        inbox.declared.store(true, AtomicOrdering::Release);
                        inboxes.insert(name.clone(), Arc::new(inbox));
                    }
                }
            }
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// The config in force.
    pub fn config(&self) -> Arc<BrokerConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts stored messages back (after a restart): deliverable ones ready
    /// in id order, dead ones among the dead letters.
    pub fn restore(&self, messages: Vec<StoredMessage>) {
        let config = self.config();
        let now = Instant::now();
        for m in messages {
            let inbox = self.inbox_or_create(&m.inbox);
            let topic = m.topic.as_ref().and_then(|t| config.topics.get(t).cloned());
            let entry = Entry {
                id: m.id,
                topic: topic.or_else(|| m.topic.as_ref().map(|t| Arc::new(orphan_topic(t)))),
                key: m.key.as_deref().map(Arc::from),
                sender: Arc::from(m.sender.as_str()),
                payload: Arc::from(m.payload.as_str()),
                attempts: m.attempts,
                published_ms: m.published_ms,
                published_at: now,
                request: m.request,
                in_reply_to: m.in_reply_to,
                not_before: None,
                pending: false,
            };
            let mut state = inbox.lock();
            match m.dead {
                Some(reason) => state.dead.push_back(DeadLetter { entry, reason }),
                None => state.requeue(entry),
            }
        }
    }

    fn inbox(&self, name: &str) -> Option<Arc<Inbox>> {
        self.inboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn inbox_or_create(&self, name: &str) -> Arc<Inbox> {
        if let Some(inbox) = self.inbox(name) {
            return inbox;
        }
        let mut inboxes = self.inboxes.write().unwrap_or_else(|p| p.into_inner());
        inboxes
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Inbox::new(
                    name,
                    cortex_compiler::runtime_config::defaults::INBOX_CAPACITY as usize,
                    operator_delivery(),
                ))
            })
            .clone()
    }

    /// Who a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        self.config()
            .tokens
            .get(&crate::tokens::TokenHash::of(token))
            .cloned()
    }

    /// Publishes `payload` (JSON text) to `topic`: one copy per subscriber,
    /// all or none (a full inbox refuses the whole publish). Returns once
    /// the copies are durable.
    pub async fn publish(
        &self,
        who: &Principal,
        topic: &str,
        key: Option<&str>,
        payload: &str,
    ) -> Result<Published, BrokerError> {
        self.publish_now(who, topic, key, payload)?.durable().await
    }

    /// Publishes or sends without waiting for durability: queued, in call
    /// order, when this returns ([`Broker::publish_now`], [`Broker::send_now`]).
    pub fn accept(
        &self,
        who: &Principal,
        to: Recipient<'_>,
        key: Option<&str>,
        payload: &str,
    ) -> Result<Accepted, BrokerError> {
        match to {
            Recipient::Topic(topic) => self.publish_now(who, topic, key, payload),
            Recipient::Agent(agent) => self.send_now(who, agent, key, payload),
        }
    }

    /// [`Broker::publish`] without the wait: the copies are queued, in call
    /// order, when this returns.
    pub fn publish_now(
        &self,
        who: &Principal,
        topic: &str,
        key: Option<&str>,
        payload: &str,
    ) -> Result<Accepted, BrokerError> {
        let config = self.config();
        let topic_config = config
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
        if let Principal::Agent(agent) = who {
            let allowed = config
                .agents
                .get(agent)
                .is_some_and(|a| a.publish.iter().any(|t| t == topic));
            if !allowed {
                return Err(BrokerError::Forbidden {
                    who: agent.clone(),
                    action: "publish to",
                    topic: topic.to_string(),
                    field: "publish",
                });
            }
        }
        payload::check_depth(payload)?;
        self.check_schema(&topic_config, payload)?;
        let inboxes: Vec<Arc<Inbox>> = topic_config
            .subscribers
            .iter()
            .map(|s| self.inbox_or_create(s))
            .collect();
        self.enqueue_now(
            &inboxes,
            Message {
                topic: Some(topic_config),
                key,
                sender: who.name(),
                payload,
                ..Message::default()
            },
        )
    }

    fn check_schema(&self, topic: &TopicConfig, payload: &str) -> Result<(), BrokerError> {
        let Some(schema) = &topic.schema else {
            return Ok(());
        };
        let value: Value =
            serde_json::from_str(payload).map_err(|e| BrokerError::BadPayload(e.to_string()))?;
        if let Some(error) = schema.iter_errors(&value).next() {
            self.counters
                .rejected_schema
                .fetch_add(1, AtomicOrdering::Relaxed);
            return Err(BrokerError::Schema {
                topic: topic.name.to_string(),
                pointer: {
                    let p = error.instance_path().to_string();
                    if p.is_empty() { "/".to_string() } else { p }
                },
                message: error.to_string(),
            });
        }
        Ok(())
    }

    /// Sends `payload` straight to `agent`'s inbox.
    pub async fn send(
        &self,
        who: &Principal,
        agent: &str,
        key: Option<&str>,
        payload: &str,
    ) -> Result<Published, BrokerError> {
        self.send_now(who, agent, key, payload)?.durable().await
    }

    /// [`Broker::send`] without the wait: the message is queued, in call
    /// order, when this returns.
    pub fn send_now(
        &self,
        who: &Principal,
        agent: &str,
        key: Option<&str>,
        payload: &str,
    ) -> Result<Accepted, BrokerError> {
        let inbox = self.known_inbox(agent)?;
        payload::check_depth(payload)?;
        self.enqueue_now(
            &[inbox],
            Message {
                key,
                sender: who.name(),
                payload,
                ..Message::default()
            },
        )
    }

    /// The inbox of an agent the config in force declares (a receiver may
    /// hold on to it: [`Broker::take_when_ready`]).
    fn known_inbox(&self, agent: &str) -> Result<Arc<Inbox>, BrokerError> {
        match self.inbox(agent) {
            Some(inbox) if inbox.declared.load(AtomicOrdering::Acquire) => Ok(inbox),
            _ => Err(BrokerError::UnknownAgent(agent.to_string())),
        }
    }

    /// Sends a request to `agent` and waits up to `timeout` for its reply.
    /// A reply that comes later goes to the sender's inbox (when the sender
    /// is an agent).
    pub async fn request(
        &self,
        who: &Principal,
        agent: &str,
        payload: &str,
        timeout: Duration,
    ) -> Result<Arc<str>, BrokerError> {
        let inbox = self.known_inbox(agent)?;
        payload::check_depth(payload)?;
        let (tx, rx) = oneshot::channel();
        let published = self
            .enqueue(
                &[inbox],
                Message {
                    sender: who.name(),
                    payload,
                    waiter: Some(tx),
                    ..Message::default()
                },
            )
            .await?;
        let actual = published.ids.first().copied().unwrap_or_default();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                self.lock_replies().remove(&actual);
                Err(BrokerError::Timeout {
                    agent: agent.to_string(),
                    ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    fn lock_replies(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Arc<str>>>> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn enqueue(
        &self,
        inboxes: &[Arc<Inbox>],
        message: Message<'_>,
    ) -> Result<Published, BrokerError> {
        self.enqueue_now(inboxes, message)?.durable().await
    }

    /// Queues `message` in every inbox, all or none; its store write is
    /// submitted but not waited for.
    fn enqueue_now(
        &self,
        inboxes: &[Arc<Inbox>],
        message: Message<'_>,
    ) -> Result<Accepted, BrokerError> {
        let Message {
            topic,
            key,
            sender,
            payload,
            in_reply_to,
            mut waiter,
        } = message;
        let request = waiter.is_some();
        let payload: Arc<str> = Arc::from(payload);
        let sender: Arc<str> = Arc::from(sender);
        let key: Option<Arc<str>> = key.map(Arc::from);
        let published_ms = now_ms();
        let published_at = Instant::now();
        let pending = self.journal.is_durable();
        let durable = {
            // Inboxes are sorted by name: locking in that order cannot deadlock.
            let mut guards: Vec<_> = inboxes.iter().map(|i| i.lock()).collect();
            for (inbox, state) in inboxes.iter().zip(&guards) {
                if state.held() >= state.capacity {
                    self.counters
                        .rejected_full
                        .fetch_add(1, AtomicOrdering::Relaxed);
                    return Err(BrokerError::InboxFull {
                        inbox: inbox.name.to_string(),
                        capacity: state.capacity,
                    });
                }
            }
            let mut ops = Vec::new();
            let mut ids = Vec::with_capacity(inboxes.len());
            for (inbox, state) in inboxes.iter().zip(guards.iter_mut()) {
                let id = self.next_id.fetch_add(1, AtomicOrdering::SeqCst) + 1;
                let entry = Entry {
                    id,
                    topic: topic.clone(),
                    key: key.clone(),
                    sender: sender.clone(),
                    payload: payload.clone(),
                    attempts: 0,
                    published_ms,
                    published_at,
                    request,
                    in_reply_to,
                    not_before: None,
                    pending,
                };
                if pending {
                    ops.push(Op::Enqueue(entry.stored(&inbox.name, None)));
                }
                if let Some(tx) = waiter.take() {
                    // Registered before the request can be delivered and answered.
                    self.lock_replies().insert(id, tx);
                }
                state.ready.push_back(entry);
                ids.push(id);
            }
            // Queued under the locks: journaled in id order per inbox. The
            // messages are delivered once durable, or taken out if refused.
            if pending {
                let outcome = self.enqueued_outcome(inboxes, &ids);
                (self.journal.submit_then(ops, outcome), ids)
            } else {
                (journal::Durable::done(), ids)
            }
        };
        if !pending {
            // Nothing is kept (the in-process benchmark): deliverable at once.
            for inbox in inboxes {
                inbox.notify.notify_waiters();
            }
        }
        self.counters
            .published
            .fetch_add(inboxes.len() as u64, AtomicOrdering::Relaxed);
        Ok(Accepted {
            published: Published {
                ids: durable.1,
                delivered_to: inboxes.iter().map(|i| i.name.to_string()).collect(),
            },
            durable: durable.0,
        })
    }

    /// What becomes of messages `ids` (one per inbox of `inboxes`) once
    /// their store write's fate is known: deliverable and their receivers
    /// woken, or taken out again (and a request's reply slot dropped).
    fn enqueued_outcome(
        &self,
        inboxes: &[Arc<Inbox>],
        ids: &[u64],
    ) -> impl FnOnce(bool) + Send + 'static {
        let held: Vec<Arc<Inbox>> = inboxes.to_vec();
        let ids = ids.to_vec();
        let me = self.me.clone();
        move |durable: bool| {
            for (inbox, id) in held.iter().zip(&ids) {
                let mut state = inbox.lock();
                if durable {
                    state.commit(*id);
                } else {
                    state.discard(*id);
                }
            }
            if durable {
                for inbox in &held {
                    inbox.notify.notify_waiters();
                }
            } else if let Some(broker) = me.upgrade() {
                let mut replies = broker.lock_replies();
                for id in &ids {
                    replies.remove(id);
                }
            }
        }
    }

    /// Up to `max` deliveries for `agent`, waiting up to `wait` for the first.
    pub async fn receive(
        &self,
        agent: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Taken>, BrokerError> {
        let inbox = self.known_inbox(agent)?;
        self.take_when_ready(&inbox, max, Some(Instant::now() + wait))
            .await
    }

    /// Up to `max` deliveries from `inbox`, waiting for the first until
    /// `deadline` (empty after it), or for as long as it takes without one.
    /// Fails once the agent is no longer declared. No timer is set while
    /// nothing in the inbox waits for a time and there is no deadline.
    pub(crate) async fn take_when_ready(
        &self,
        inbox: &Inbox,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<Taken>, BrokerError> {
        loop {
            let notified = inbox.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Checked after `enable`: a removal from now on wakes this wait.
            if !inbox.declared.load(AtomicOrdering::Acquire) {
                return Err(BrokerError::UnknownAgent(inbox.name.to_string()));
            }
            let now = Instant::now();
            let (taken, later) = inbox.lock().take(max.max(1), now);
            if !taken.is_empty() {
                self.count_deliveries(&taken);
                return Ok(taken);
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Vec::new());
            }
            let until = match (later, deadline) {
                (Some(l), Some(d)) => Some(l.min(d)),
                (later, deadline) => later.or(deadline),
            };
            match until {
                Some(until) => tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(until) => {}
                },
                None => notified.await,
            }
        }
    }

    /// Takes what is deliverable now without waiting (the in-process bench).
    pub fn try_receive(&self, agent: &str, max: usize) -> Result<Vec<Taken>, BrokerError> {
        let inbox = self.known_inbox(agent)?;
        let (taken, _) = inbox.lock().take(max.max(1), Instant::now());
        self.count_deliveries(&taken);
        Ok(taken)
    }

    fn count_deliveries(&self, taken: &[Taken]) {
        let again = taken.iter().filter(|t| t.attempts > 1).count() as u64;
        self.counters
            .delivered
            .fetch_add(taken.len() as u64, AtomicOrdering::Relaxed);
        if again > 0 {
            self.counters
                .redelivered
                .fetch_add(again, AtomicOrdering::Relaxed);
        }
    }

    /// Starts settling delivery `id` of `agent`'s inbox ([`inbox::InboxState::begin_settle`]):
    /// the inbox and a copy of the delivery.
    fn begin_settle(&self, agent: &str, id: u64) -> Result<(Arc<Inbox>, Entry), BrokerError> {
        let not_in_flight = || BrokerError::NotInFlight {
            id,
            inbox: agent.to_string(),
        };
        let inbox = self.inbox(agent).ok_or_else(not_in_flight)?;
        let entry = inbox
            .lock()
            .begin_settle(id)
            .cloned()
            .ok_or_else(not_in_flight)?;
        Ok((inbox, entry))
    }

    /// Acks a delivery; returns once the ack is durable.
    pub async fn ack(&self, agent: &str, id: u64) -> Result<(), BrokerError> {
        self.ack_many(agent, &[id]).await
    }

    /// Acks many deliveries at once (one journal entry; the in-process bench
    /// and the agent socket). Every id still in flight is acked; the first
    /// that is not is reported after the others are durable.
    pub async fn ack_many(&self, agent: &str, ids: &[u64]) -> Result<(), BrokerError> {
        self.ack_now(agent, ids)?.durable().await
    }

    /// [`Broker::ack_many`] without waiting: the deliveries are settling
    /// (kept in flight, not redelivered) and their journal entry submitted;
    /// they leave flight once it is durable, and go back in flight as they
    /// were if the store refuses it. [`Settled::durable`] waits for that.
    pub fn ack_now(&self, agent: &str, ids: &[u64]) -> Result<Settled, BrokerError> {
        let inbox = self.known_inbox(agent)?;
        let mut missing = None;
        let mut settling = Vec::with_capacity(ids.len());
        {
            let mut state = inbox.lock();
            for &id in ids {
                match state.begin_settle(id) {
                    Some(_) => settling.push(id),
                    None => {
                        missing.get_or_insert(id);
                    }
                }
            }
        }
        let ops = if self.journal.is_durable() {
            settling.iter().map(|&id| Op::Remove(id)).collect()
        } else {
            Vec::new()
        };
        let me = self.me.clone();
        let held = inbox.clone();
        let durable = self.journal.submit_then(ops, move |durable| {
            if let Some(broker) = me.upgrade() {
                broker.end_settles(&held, &settling, durable);
            }
        });
        Ok(Settled {
            durable,
            missing: missing.map(|id| BrokerError::NotInFlight {
                id,
                inbox: agent.to_string(),
            }),
        })
    }

    /// Ends settlements whose fate is known: durable ones leave flight
    /// (acked), refused ones go back in flight as they were.
    fn end_settles(&self, inbox: &Inbox, ids: &[u64], durable: bool) {
        let mut acked = 0u64;
        let unblocks = {
            let mut state = inbox.lock();
            for &id in ids {
                if !durable {
                    state.abort_settle(id);
                } else if let Some(entry) = state.settle(id) {
                    acked += 1;
                    self.counters.latency.observe(entry.published_at.elapsed());
                }
            }
            durable && state.has_ready()
        };
        self.counters
            .acked
            .fetch_add(acked, AtomicOrdering::Relaxed);
        if unblocks {
            inbox.notify.notify_waiters();
        }
    }

    /// Gives a delivery back, deliverable again after `delay` (or dead if
    /// it has had its attempts, with the agent's `reason` in the dead
    /// letter's); takes effect once the store has it.
    pub async fn nack(
        &self,
        agent: &str,
        id: u64,
        delay: Duration,
        reason: Option<&str>,
    ) -> Result<(), BrokerError> {
        let why = match reason.map(str::trim).filter(|r| !r.is_empty()) {
            Some(reason) => format!(
                "nacked ({})",
                reason.chars().take(MAX_NACK_REASON).collect::<String>()
            ),
            None => "nacked".to_string(),
        };
        let (inbox, entry) = self.begin_settle(agent, id)?;
        let fate = Fate::of(&inbox.lock(), &entry, &why);
        let ops = if self.journal.is_durable() {
            fate.ops(&inbox.name, &entry)
        } else {
            Vec::new()
        };
        let me = self.me.clone();
        let held = inbox.clone();
        let durable = self.journal.submit_then(ops, move |durable| {
            let Some(broker) = me.upgrade() else {
                return;
            };
            if !durable {
                held.lock().abort_settle(id);
                return;
            }
            let settled = held.lock().settle(id);
            if let Some(entry) = settled {
                broker.place(&held, entry, fate, Some(delay));
            }
        });
        durable.wait().await?;
        Ok(())
    }

    /// Answers a request: the reply goes to the waiting requester, or to the
    /// sender's inbox when it no longer waits; the request is acked. The
    /// request stays in flight until the ack is durable, and is in flight
    /// again as before when the store refuses it.
    pub async fn reply(&self, agent: &str, id: u64, payload: &str) -> Result<(), BrokerError> {
        serde_json::from_str::<serde::de::IgnoredAny>(payload)
            .map_err(|e| BrokerError::BadPayload(e.to_string()))?;
        payload::check_depth(payload)?;
        let (inbox, entry) = self.begin_settle(agent, id)?;
        let waiter = self.lock_replies().remove(&id).filter(|tx| !tx.is_closed());
        let sender_is_agent = self.config().agents.contains_key(&*entry.sender);
        if waiter.is_none()
            && sender_is_agent
            && let Err(e) = self.enqueue_reply(&entry, agent, id, payload).await
        {
            inbox.lock().abort_settle(id);
            return Err(e);
        }
        let me = self.me.clone();
        let held = inbox.clone();
        let durable = self
            .journal
            .submit_then(vec![Op::Remove(id)], move |durable| {
                if let Some(broker) = me.upgrade() {
                    broker.end_settles(&held, &[id], durable);
                }
            });
        if let Err(e) = durable.wait().await {
            if let Some(tx) = waiter {
                // A later reply to the same request may still reach the requester.
                self.lock_replies().insert(id, tx);
            }
            return Err(e.into());
        }
        if let Some(tx) = waiter
            && tx.send(Arc::from(payload)).is_err()
            && sender_is_agent
        {
            // The requester stopped waiting meanwhile: the reply goes to its inbox.
            self.enqueue_reply(&entry, agent, id, payload).await?;
        }
        Ok(())
    }

    /// Puts a reply to request `id` of `entry.sender` in its inbox, durably.
    async fn enqueue_reply(
        &self,
        entry: &Entry,
        agent: &str,
        id: u64,
        payload: &str,
    ) -> Result<Published, BrokerError> {
        let to = self.inbox_or_create(&entry.sender);
        self.enqueue(
            &[to],
            Message {
                sender: agent,
                payload,
                in_reply_to: Some(id),
                ..Message::default()
            },
        )
        .await
    }

    /// Puts a delivery taken out of flight by its ack timeout back for
    /// another attempt, or dead-letters it when it has had `maxAttempts`.
    /// The broker's own bookkeeping: written behind ([`Journal::record`]).
    fn retry_or_bury(&self, inbox: &Arc<Inbox>, entry: Entry, why: &str) {
        let fate = Fate::of(&inbox.lock(), &entry, why);
        self.journal.record(fate.ops(&inbox.name, &entry));
        self.place(inbox, entry, fate, None);
    }

    /// Carries out a delivery's [`Fate`] in memory: ready again (after
    /// `delay`), or among the dead letters (forwarded to the dead-letter
    /// topic); wakes the inbox's receivers.
    fn place(&self, inbox: &Arc<Inbox>, entry: Entry, fate: Fate, delay: Option<Duration>) {
        let forward = {
            let mut state = inbox.lock();
            match fate {
                Fate::Retry => {
                    let mut entry = entry;
                    entry.not_before = delay.filter(|d| !d.is_zero()).map(|d| Instant::now() + d);
                    state.requeue(entry);
                    None
                }
                Fate::Bury(reason) => {
                    tracing::warn!(message_id = entry.id, agent = %inbox.name, reason = %reason, "dead letter");
                    self.counters
                        .dead_lettered
                        .fetch_add(1, AtomicOrdering::Relaxed);
                    let forward = dead_letter_envelope(&inbox.name, &entry, &reason);
                    state.dead.push_back(DeadLetter { entry, reason });
                    forward
                }
            }
        };
        if let Some((topic, key, envelope)) = forward {
            self.forward_dead_letter(topic, key, envelope);
        }
        inbox.notify.notify_waiters();
    }

    fn forward_dead_letter(&self, topic: String, key: Option<Arc<str>>, envelope: String) {
        let config = self.config();
        let Some(topic_config) = config.topics.get(&topic).cloned() else {
            return;
        };
        // Forwarded outside the caller's inbox lock: the dead-letter topic's
        // subscribers may include this inbox.
        let inboxes: Vec<Arc<Inbox>> = topic_config
            .subscribers
            .iter()
            .map(|s| self.inbox_or_create(s))
            .collect();
        if let Some(this) = self.me.upgrade() {
            tokio::spawn(async move {
                if let Err(e) = this
                    .enqueue(
                        &inboxes,
                        Message {
                            topic: Some(topic_config),
                            key: key.as_deref(),
                            sender: "cortex",
                            payload: &envelope,
                            ..Message::default()
                        },
                    )
                    .await
                {
                    tracing::warn!(topic = %topic, error = %e, "dead letter kept in its inbox; forwarding to the dead-letter topic failed");
                }
            });
        }
    }

    /// Redelivers what passed its ack timeout (or dead-letters it) and drops
    /// what passed its topic's retention; returns the next ack deadline.
    pub fn sweep(&self, now: Instant, wall_ms: u64, retention: bool) -> Option<Instant> {
        let inboxes: Vec<Arc<Inbox>> = self
            .inboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut next: Option<Instant> = None;
        for inbox in inboxes {
            let expired = inbox.lock().expired(now);
            let any = !expired.is_empty();
            for entry in expired {
                self.retry_or_bury(&inbox, entry, "ack timeout");
            }
            if retention {
                self.drop_expired(&inbox, wall_ms);
            }
            let state = inbox.lock();
            if let Some(d) = state.next_deadline() {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            drop(state);
            if any {
                inbox.notify.notify_waiters();
            }
        }
        next
    }

    fn drop_expired(&self, inbox: &Inbox, wall_ms: u64) {
        let mut state = inbox.lock();
        let old = |e: &Entry| {
            e.topic
                .as_ref()
                .is_some_and(|t| e.published_ms + t.retention.as_millis() as u64 <= wall_ms)
        };
        let mut removed = Vec::new();
        state.ready.retain(|e| {
            let keep = !old(e);
            if !keep {
                removed.push(e.id);
            }
            keep
        });
        state.dead.retain(|d| {
            let keep = !old(&d.entry);
            if !keep {
                removed.push(d.entry.id);
            }
            keep
        });
        if !removed.is_empty() {
            self.counters
                .expired
                .fetch_add(removed.len() as u64, AtomicOrdering::Relaxed);
            self.journal
                .record(removed.into_iter().map(Op::Remove).collect());
        }
    }

    /// Queue figures of every inbox.
    pub fn stats(&self) -> Vec<InboxStats> {
        let mut stats: Vec<InboxStats> = self
            .inboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|inbox| {
                let state = inbox.lock();
                InboxStats {
                    inbox: inbox.name.to_string(),
                    depth: state.ready.len(),
                    in_flight: state.inflight.len(),
                    dead_letters: state.dead.len(),
                    capacity: state.capacity,
                }
            })
            .collect();
        stats.sort_by(|a, b| a.inbox.cmp(&b.inbox));
        stats
    }

    /// The dead letters of `agent`'s inbox: (message id, reason, attempts).
    pub fn dead_letters(&self, agent: &str) -> Vec<(u64, String, u32)> {
        self.inbox(agent)
            .map(|inbox| {
                inbox
                    .lock()
                    .dead
                    .iter()
                    .map(|d| (d.entry.id, d.reason.clone(), d.entry.attempts))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs the redelivery/retention loop until `shutdown` turns true.
    pub async fn run_sweeper(self: Arc<Broker>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut last_retention = Instant::now();
        loop {
            let now = Instant::now();
            let retention = now.duration_since(last_retention) >= RETENTION_PERIOD;
            if retention {
                last_retention = now;
            }
            let next = self.sweep(now, now_ms(), retention);
            let until = next.map_or(now + SWEEP_PERIOD, |n| {
                n.clamp(now + SWEEP_MIN, now + SWEEP_PERIOD)
            });
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// What becomes of a delivery given back (nacked, or past its ack timeout).
#[derive(Debug)]
enum Fate {
    /// Deliverable again.
    Retry,
    /// Dead-lettered, for this reason.
    Bury(String),
}

impl Fate {
    /// The fate of `entry` in the inbox `state`: dead once it has had its
    /// topic's (or the agent's) `maxAttempts`.
    fn of(state: &inbox::InboxState, entry: &Entry, why: &str) -> Fate {
        if entry.attempts >= state.delivery_of(entry).max_attempts {
            Fate::Bury(format!("{why} after {} attempts", entry.attempts))
        } else {
            Fate::Retry
        }
    }

    /// What the store keeps of it.
    fn ops(&self, inbox: &str, entry: &Entry) -> Vec<Op> {
        match self {
            Fate::Retry => vec![Op::Attempted {
                id: entry.id,
                attempts: entry.attempts,
            }],
            Fate::Bury(reason) => vec![
                Op::Dead {
                    id: entry.id,
                    reason: reason.clone(),
                    attempts: entry.attempts,
                },
                Op::Audit(crate::store::AuditEntry {
                    at_ms: now_ms(),
                    actor: "runtime".into(),
                    action: "dead-letter".into(),
                    detail: format!("message {} in {inbox}: {reason}", entry.id),
                }),
            ],
        }
    }
}

/// The dead-letter topic, key and envelope of a dead letter whose topic
/// names one.
fn dead_letter_envelope(
    inbox: &str,
    entry: &Entry,
    reason: &str,
) -> Option<(String, Option<Arc<str>>, String)> {
    let topic = entry.topic.as_ref()?;
    let dead_topic = topic.dead_letter.clone()?;
    let envelope = serde_json::json!({
        "reason": reason,
        "attempts": entry.attempts,
        "id": entry.id,
        "inbox": inbox,
        "topic": &*topic.name,
        "key": entry.key.as_deref(),
        "sender": &*entry.sender,
        "payload": serde_json::from_str::<Value>(&entry.payload).unwrap_or(Value::Null),
    });
    Some((dead_topic, entry.key.clone(), envelope.to_string()))
}

/// Characters of a nack's reason kept in a dead letter's reason.
const MAX_NACK_REASON: usize = 500;

/// Longest the sweeper sleeps (new deliveries' deadlines are at least this far).
const SWEEP_PERIOD: Duration = Duration::from_millis(250);
/// Shortest the sweeper sleeps.
const SWEEP_MIN: Duration = Duration::from_millis(5);
/// How often retention is enforced.
const RETENTION_PERIOD: Duration = Duration::from_secs(5);

fn orphan_topic(name: &str) -> TopicConfig {
    use cortex_compiler::runtime_config::defaults;
    TopicConfig {
        name: Arc::from(name),
        ordering: Ordering::None,
        delivery: operator_delivery(),
        dead_letter: None,
        retention: Duration::from_millis(defaults::RETENTION_MS),
        schema: None,
        subscribers: Vec::new(),
    }
}
