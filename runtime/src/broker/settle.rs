//! Settling deliveries: ack, nack, reply; what becomes of a delivery
//! given back (retry, or dead letter forwarded to its topic).

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::inbox::{self, DeadLetter, Entry, Inbox};
use super::*;
use crate::store::{Op, now_ms};

impl Broker {
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
    pub(super) fn retry_or_bury(&self, inbox: &Arc<Inbox>, entry: Entry, why: &str) {
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
