//! The broker's write-ahead path to the store: changes are queued in the
//! order the broker makes them (under the inbox locks) and written by one
//! task in batches ([`crate::batch`]: one store write for everything that
//! queued while the previous write was being made durable — the runtime's
//! one group commit). A caller that must not acknowledge before durability
//! awaits its [`Durable`].
//!
//! A change the broker may only show once it is durable comes with an
//! [`Outcome`]: the writer calls it, in submission order, with whether the
//! store took the write, before it wakes the caller. So a message becomes
//! deliverable, and a settlement takes effect, only after the store has it,
//! in the order the broker made them; a write the store refused is undone
//! in memory and leaves no trace.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Op, Store, StoreError, StoreResult};

/// Most operations one store write takes.
const MAX_BATCH_OPS: usize = 32_768;

/// What the broker does once a write's fate is known: `true` when it is
/// durable, `false` when the store refused it.
pub type Outcome = Box<dyn FnOnce(bool) + Send>;

/// Who waits for a job's write to be durable.
type Waiter = oneshot::Sender<StoreResult<()>>;

struct Job {
    ops: Vec<Op>,
    waiter: Option<Waiter>,
    outcome: Option<Outcome>,
}

/// The queue in front of the store; `None` inside when the broker keeps
/// nothing (the in-process benchmark).
#[derive(Clone, Debug)]
pub struct Journal {
    jobs: Option<mpsc::UnboundedSender<Job>>,
}

/// Resolves when the changes it was made for are durable.
#[derive(Debug)]
pub struct Durable(Option<oneshot::Receiver<StoreResult<()>>>);

impl Durable {
    /// Nothing to wait for (nothing was written, or nothing is kept).
    pub fn done() -> Durable {
        Durable(None)
    }

    /// Waits until durable.
    pub async fn wait(self) -> StoreResult<()> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.map_err(|_| StoreError::Closed)?,
        }
    }
}

impl Journal {
    /// A journal that keeps nothing.
    pub fn none() -> Journal {
        Journal { jobs: None }
    }

    /// A journal writing to `store`, with its writer task spawned on the
    /// current tokio runtime. The task ends when every `Journal` clone is
    /// dropped, after writing what was queued.
    pub fn to(store: Arc<dyn Store>) -> Journal {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Journal { jobs: Some(tx) }
    }

    /// Whether changes are kept.
    pub fn is_durable(&self) -> bool {
        self.jobs.is_some()
    }

    /// Queues `ops`; the returned [`Durable`] resolves once they are written.
    pub fn submit(&self, ops: Vec<Op>) -> Durable {
        self.submit_job(ops, None)
    }

    /// Queues `ops` and has the writer call `outcome` with their fate before
    /// the returned [`Durable`] resolves. With no store (the in-process
    /// benchmark) or nothing to write, `outcome(true)` runs at once, on the
    /// calling thread: a caller holding locks that `outcome` takes must not
    /// call this then.
    pub fn submit_then(
        &self,
        ops: Vec<Op>,
        outcome: impl FnOnce(bool) + Send + 'static,
    ) -> Durable {
        if self.jobs.is_none() || ops.is_empty() {
            outcome(true);
            return Durable(None);
        }
        self.submit_job(ops, Some(Box::new(outcome)))
    }

    fn submit_job(&self, ops: Vec<Op>, outcome: Option<Outcome>) -> Durable {
        let Some(jobs) = &self.jobs else {
            return Durable(None);
        };
        if ops.is_empty() {
            return Durable(None);
        }
        let (done, wait) = oneshot::channel();
        let job = Job {
            ops,
            waiter: Some(done),
            outcome,
        };
        if let Err(mpsc::error::SendError(job)) = jobs.send(job) {
            // The writer is gone: nothing of this is durable.
            if let Some(outcome) = job.outcome {
                run_later(outcome, false);
            }
            let (done, wait) = oneshot::channel();
            let _ = done.send(Err(StoreError::Closed));
            return Durable(Some(wait));
        }
        Durable(Some(wait))
    }

    /// Queues `ops` without waiting for them (attempt counts, health): the
    /// broker's own bookkeeping, which no caller was promised. A refused
    /// write of these is logged; at worst a restart finds an attempt count
    /// lower, or a dead letter deliverable again (at least once holds).
    pub fn record(&self, ops: Vec<Op>) {
        if let (Some(jobs), false) = (&self.jobs, ops.is_empty()) {
            let _ = jobs.send(Job {
                ops,
                waiter: None,
                outcome: None,
            });
        }
    }
}

/// Calls `outcome` away from the calling thread (which may hold the locks
/// it takes): when the writer is gone.
fn run_later(outcome: Outcome, durable: bool) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move { outcome(durable) });
        }
        Err(_) => {
            std::thread::spawn(move || outcome(durable));
        }
    }
}

impl crate::batch::Weight for Job {
    fn weight(&self) -> usize {
        self.ops.len()
    }
}

async fn run(store: Arc<dyn Store>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(batch) = crate::batch::next(&mut jobs, MAX_BATCH_OPS).await {
        let mut ops = Vec::with_capacity(batch.iter().map(|j| j.ops.len()).sum());
        let mut after: Vec<(Option<Waiter>, Option<Outcome>)> = Vec::with_capacity(batch.len());
        for job in batch {
            ops.extend(job.ops);
            after.push((job.waiter, job.outcome));
        }
        let result = store.write(ops).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "the state store refused a write; what it held is undone");
        }
        // Outcomes first, in submission order: a caller woken next sees the
        // broker as the store left it.
        for (waiter, outcome) in after {
            if let Some(outcome) = outcome {
                outcome(result.is_ok());
            }
            if let Some(waiter) = waiter {
                let _ = waiter.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Backend(e.to_string())),
                });
            }
        }
    }
}
