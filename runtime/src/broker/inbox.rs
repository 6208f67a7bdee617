//! One agent's inbox: messages ready for delivery (in id order), messages in
//! flight (delivered, not yet acked) with their deadlines, dead letters, and
//! the ordering locks (keys and topics with a message in flight).
//!
//! A change becomes visible only once the store has it: a new message is
//! held *pending* (counted against the capacity, never delivered) until its
//! store write is durable, then made deliverable, or taken out again if the
//! store refused it; a delivery being settled stays in flight, *settling*
//! (not redelivered, not settled twice), until the settlement is durable,
//! then leaves, or goes back in flight as it was if the store refused it.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::{Delivery, Ordering, TopicConfig};
use crate::store::StoredMessage;

/// Ready messages one receive looks at, at most (past this, messages wait
/// for the next receive: ordering locks can make a long queue unreceivable
/// only from its front).
const SCAN_LIMIT: usize = 50_000;

/// A message held by an inbox.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Message id.
    pub id: u64,
    /// The topic's config (`None` for direct messages).
    pub topic: Option<Arc<TopicConfig>>,
    /// Ordering key.
    pub key: Option<Arc<str>>,
    /// Sender's name.
    pub sender: Arc<str>,
    /// Payload (JSON text).
    pub payload: Arc<str>,
    /// Deliveries so far.
    pub attempts: u32,
    /// Publish time, ms since the epoch.
    pub published_ms: u64,
    /// Publish time on the runtime's clock (for latency).
    pub published_at: Instant,
    /// Whether the sender waits for a reply.
    pub request: bool,
    /// The request this answers.
    pub in_reply_to: Option<u64>,
    /// Not deliverable before this (nack with delay).
    pub not_before: Option<Instant>,
    /// Its store write is not durable yet: held, not deliverable.
    pub pending: bool,
}

impl Entry {
    fn ordering(&self) -> Ordering {
        match &self.topic {
            Some(t) => t.ordering,
            None if self.key.is_some() => Ordering::PerKey,
            None => Ordering::None,
        }
    }

    fn topic_name(&self) -> Option<Arc<str>> {
        self.topic.as_ref().map(|t| t.name.clone())
    }

    /// The stored form, in inbox `inbox`.
    pub fn stored(&self, inbox: &str, dead: Option<String>) -> StoredMessage {
        StoredMessage {
            id: self.id,
            inbox: inbox.to_string(),
            topic: self.topic.as_ref().map(|t| t.name.to_string()),
            key: self.key.as_deref().map(str::to_string),
            sender: self.sender.to_string(),
            payload: self.payload.to_string(),
            attempts: self.attempts,
            published_ms: self.published_ms,
            request: self.request,
            in_reply_to: self.in_reply_to,
            dead,
        }
    }
}

/// A dead letter kept in its inbox.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The message.
    pub entry: Entry,
    /// Why it died.
    pub reason: String,
}

/// A delivery in flight.
#[derive(Debug)]
pub struct InFlight {
    /// The message.
    pub entry: Entry,
    /// When it is delivered again unless settled.
    pub deadline: Instant,
    /// A settlement of it is being made durable.
    pub settling: bool,
}

/// The lock-protected part of an inbox.
#[derive(Debug)]
pub struct InboxState {
    /// Ready + in flight may not exceed this.
    pub capacity: usize,
    /// Delivery settings of direct messages.
    pub direct: Delivery,
    /// Ready messages, in id order.
    pub ready: VecDeque<Entry>,
    /// In flight: id → the delivery.
    pub inflight: HashMap<u64, InFlight>,
    deadlines: BTreeSet<(Instant, u64)>,
    /// Dead letters, oldest first.
    pub dead: VecDeque<DeadLetter>,
    busy_keys: HashSet<(Option<Arc<str>>, Arc<str>)>,
    busy_topics: HashSet<Arc<str>>,
}

/// One agent's inbox.
#[derive(Debug)]
pub struct Inbox {
    /// The agent's name.
    pub name: Arc<str>,
    state: Mutex<InboxState>,
    /// Woken when something may have become deliverable.
    pub notify: Notify,
    /// Whether the config in force declares this agent (an inbox of a
    /// removed agent is kept with its messages but takes no new ones).
    pub declared: AtomicBool,
}

impl Inbox {
    /// An empty inbox.
    pub fn new(name: &str, capacity: usize, direct: Delivery) -> Inbox {
        Inbox {
            declared: AtomicBool::new(false),
            name: Arc::from(name),
            state: Mutex::new(InboxState {
                capacity,
                direct,
                ready: VecDeque::new(),
                inflight: HashMap::new(),
                deadlines: BTreeSet::new(),
                dead: VecDeque::new(),
                busy_keys: HashSet::new(),
                busy_topics: HashSet::new(),
            }),
            notify: Notify::new(),
        }
    }

    /// Locks the inbox (a poisoned lock is taken over: the state is kept
    /// consistent by every method before it can panic).
    pub fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl InboxState {
    /// Whether messages wait here: only then can a settlement (which frees
    /// an ordering lock) make one deliverable, and receivers need waking.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Messages held (ready + in flight).
    pub fn held(&self) -> usize {
        self.ready.len() + self.inflight.len()
    }

    /// Delivery settings of a message.
    pub fn delivery_of(&self, entry: &Entry) -> Delivery {
        entry.topic.as_ref().map_or(self.direct, |t| t.delivery)
    }

    /// Puts a message back among the ready ones at its id's place.
    pub fn requeue(&mut self, entry: Entry) {
        let at = self.ready.partition_point(|e| e.id < entry.id);
        self.ready.insert(at, entry);
    }

    /// Takes up to `max` deliverable messages (honouring ordering and
    /// `not_before`), moving them in flight; returns them and the earliest
    /// `not_before` that kept one back.
    pub fn take(&mut self, max: usize, now: Instant) -> (Vec<Entry>, Option<Instant>) {
        let mut picked = Vec::new();
        let mut later: Option<Instant> = None;
        let mut held_keys: HashSet<(Option<Arc<str>>, Arc<str>)> = HashSet::new();
        let mut held_topics: HashSet<Arc<str>> = HashSet::new();
        for (index, entry) in self.ready.iter().enumerate().take(SCAN_LIMIT) {
            if picked.len() >= max {
                break;
            }
            let ordering = entry.ordering();
            let key = match (ordering, &entry.key) {
                (Ordering::PerKey, Some(k)) => Some((entry.topic_name(), k.clone())),
                _ => None,
            };
            let topic = match ordering {
                Ordering::Total => entry.topic_name(),
                _ => None,
            };
            let locked = key
                .as_ref()
                .is_some_and(|k| self.busy_keys.contains(k) || held_keys.contains(k))
                || topic
                    .as_ref()
                    .is_some_and(|t| self.busy_topics.contains(t) || held_topics.contains(t));
            let waiting = entry.not_before.is_some_and(|t| t > now);
            if locked || waiting || entry.pending {
                if waiting {
                    later = Some(later.map_or(entry.not_before.unwrap_or(now), |l| {
                        l.min(entry.not_before.unwrap_or(now))
                    }));
                }
                // Later messages of the same key/topic must wait behind it.
                held_keys.extend(key);
                held_topics.extend(topic);
                continue;
            }
            if let Some(k) = key {
                held_keys.insert(k);
            }
            if let Some(t) = topic {
                held_topics.insert(t);
            }
            picked.push(index);
        }
        let mut taken = Vec::with_capacity(picked.len());
        for index in picked.into_iter().rev() {
            if let Some(mut entry) = self.ready.remove(index) {
                entry.attempts += 1;
                entry.not_before = None;
                let deadline = now + self.delivery_of(&entry).ack_timeout;
                self.lock_order(&entry);
                self.deadlines.insert((deadline, entry.id));
                self.inflight.insert(
                    entry.id,
                    InFlight {
                        entry: entry.clone(),
                        deadline,
                        settling: false,
                    },
                );
                taken.push(entry);
            }
        }
        taken.reverse();
        (taken, later)
    }

    fn lock_order(&mut self, entry: &Entry) {
        match (entry.ordering(), &entry.key) {
            (Ordering::PerKey, Some(k)) => {
                self.busy_keys.insert((entry.topic_name(), k.clone()));
            }
            (Ordering::Total, _) => {
                if let Some(t) = entry.topic_name() {
                    self.busy_topics.insert(t);
                }
            }
            _ => {}
        }
    }

    fn unlock_order(&mut self, entry: &Entry) {
        match (entry.ordering(), &entry.key) {
            (Ordering::PerKey, Some(k)) => {
                self.busy_keys.remove(&(entry.topic_name(), k.clone()));
            }
            (Ordering::Total, _) => {
                if let Some(t) = entry.topic_name() {
                    self.busy_topics.remove(&t);
                }
            }
            _ => {}
        }
    }

    /// Removes a message from flight (a settlement made durable, a timeout).
    pub fn settle(&mut self, id: u64) -> Option<Entry> {
        let InFlight {
            entry, deadline, ..
        } = self.inflight.remove(&id)?;
        self.deadlines.remove(&(deadline, id));
        self.unlock_order(&entry);
        Some(entry)
    }

    /// Starts settling a delivery: it stays in flight (holding its ordering
    /// lock and its place in the capacity) but is not redelivered at its
    /// deadline nor settled again. `None` when it is not in flight, or
    /// already settling.
    pub fn begin_settle(&mut self, id: u64) -> Option<&Entry> {
        let flight = self.inflight.get_mut(&id).filter(|f| !f.settling)?;
        flight.settling = true;
        self.deadlines.remove(&(flight.deadline, id));
        Some(&flight.entry)
    }

    /// Puts a delivery whose settlement the store refused back in flight as
    /// it was (redelivered at its deadline, or at the next sweep when that
    /// has passed).
    pub fn abort_settle(&mut self, id: u64) {
        if let Some(flight) = self.inflight.get_mut(&id).filter(|f| f.settling) {
            flight.settling = false;
            self.deadlines.insert((flight.deadline, id));
        }
    }

    /// Makes a pending message deliverable (its store write is durable).
    pub fn commit(&mut self, id: u64) {
        if let Some(entry) = self.position(id).and_then(|at| self.ready.get_mut(at)) {
            entry.pending = false;
        }
    }

    /// Takes out a pending message whose store write was refused.
    pub fn discard(&mut self, id: u64) {
        if let Some(at) = self.position(id).filter(|&at| self.ready[at].pending) {
            self.ready.remove(at);
        }
    }

    /// Where message `id` is among the ready ones (they are in id order).
    fn position(&self, id: u64) -> Option<usize> {
        let at = self.ready.partition_point(|e| e.id < id);
        (self.ready.get(at)?.id == id).then_some(at)
    }

    /// Messages in flight past their deadline, removed from flight.
    pub fn expired(&mut self, now: Instant) -> Vec<Entry> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(entry) = self.settle(id) {
                out.push(entry);
            } else {
                self.deadlines.pop_first();
            }
        }
        out
    }

    /// The earliest ack deadline in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }
}
