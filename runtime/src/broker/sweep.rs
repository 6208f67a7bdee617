//! The sweeper: redelivery after ack timeouts, retention, and the queue
//! figures the status shows.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use tokio::time::Instant;

use super::inbox::{Entry, Inbox};
use super::*;
use crate::store::{Op, now_ms};

impl Broker {
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

/// Longest the sweeper sleeps (new deliveries' deadlines are at least this far).
const SWEEP_PERIOD: Duration = Duration::from_millis(250);
/// Shortest the sweeper sleeps.
const SWEEP_MIN: Duration = Duration::from_millis(5);
/// How often retention is enforced.
const RETENTION_PERIOD: Duration = Duration::from_secs(5);
