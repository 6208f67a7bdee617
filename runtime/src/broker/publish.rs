//! Taking messages in: publish to a topic, send to an agent, request and
//! wait for the reply; and handing deliveries out (receive).

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::config::TopicConfig;
use super::inbox::{Entry, Inbox};
use super::*;
use crate::store::{Op, now_ms};

impl Broker {
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
    pub(super) fn known_inbox(&self, agent: &str) -> Result<Arc<Inbox>, BrokerError> {
        match self.inbox(agent) {
            Some(inbox) if inbox.declared.load(AtomicOrdering::Acquire) => Ok(inbox),
            _ => Err(BrokerError::UnknownAgent(agent.to_string())),
        }
    }

    /// Sends a request to `agent` (with `key`, if given: a workflow task's
    /// idempotency key) and waits up to `timeout` for its reply. A reply
    /// that comes later goes to the sender's inbox (when the sender is an
    /// agent).
    pub async fn request(
        &self,
        who: &Principal,
        agent: &str,
        key: Option<&str>,
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
                    key,
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

    pub(super) fn lock_replies(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Arc<str>>>> {
        self.replies.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn enqueue(
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
}
