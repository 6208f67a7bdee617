//! The message broker: direct messages and topic pub/sub between agents,
//! at-least-once with ack timeouts, redelivery and dead letters, ordering
//! per topic, bounded inboxes, schema-checked payloads, per-agent rights.
//! [`http`] serves it to agents (and [`socket`], their WebSocket); this
//! module is the in-process core.

pub mod config;
mod error;
pub mod http;
pub mod inbox;
pub mod journal;
pub mod payload;
mod publish;
pub mod routes;
mod settle;
pub mod socket;
mod sweep;

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

pub use config::{BrokerConfig, Ordering, Principal};
use config::{Delivery, TopicConfig};
pub use error::BrokerError;
use inbox::{DeadLetter, Entry, Inbox};
pub use journal::Journal;

use super::metrics::BrokerCounters;
use crate::store::StoredMessage;

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
                let declared = config.agents.contains_key(&*inbox.name)
                    || config.internal_inboxes.contains(&*inbox.name);
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
            for name in &config.internal_inboxes {
                let inbox = inboxes.entry(name.clone()).or_insert_with(|| {
                    Arc::new(Inbox::new(
                        name,
                        cortex_compiler::runtime_config::defaults::INBOX_CAPACITY as usize,
                        operator_delivery(),
                    ))
                });
                inbox.declared.store(true, AtomicOrdering::Release);
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
}

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
