//! The broker's write-ahead path to the store: changes are queued in the
//! order the broker makes them (under the inbox locks) and written by one
//! task in batches — one store write for everything that queued while the
//! previous write was being made durable (group commit). A caller that must
//! not acknowledge before durability awaits its [`Durable`].

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Op, Store, StoreError, StoreResult};

/// Most operations one store write takes.
const MAX_BATCH_OPS: usize = 32_768;

type Job = (Vec<Op>, Option<oneshot::Sender<StoreResult<()>>>);

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
        let Some(jobs) = &self.jobs else {
            return Durable(None);
        };
        if ops.is_empty() {
            return Durable(None);
        }
        let (done, wait) = oneshot::channel();
        if jobs.send((ops, Some(done))).is_err() {
            let (done, wait) = oneshot::channel();
            let _ = done.send(Err(StoreError::Closed));
            return Durable(Some(wait));
        }
        Durable(Some(wait))
    }

    /// Queues `ops` without waiting for them (attempt counts, health).
    pub fn record(&self, ops: Vec<Op>) {
        if let (Some(jobs), false) = (&self.jobs, ops.is_empty()) {
            let _ = jobs.send((ops, None));
        }
    }
}

async fn run(store: Arc<dyn Store>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some((mut ops, first)) = jobs.recv().await {
        let mut waiters: Vec<oneshot::Sender<StoreResult<()>>> = first.into_iter().collect();
        while ops.len() < MAX_BATCH_OPS {
            match jobs.try_recv() {
                Ok((more, waiter)) => {
                    ops.extend(more);
                    waiters.extend(waiter);
                }
                Err(_) => break,
            }
        }
        let result = store.write(ops).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "the state store refused a write");
        }
        for waiter in waiters {
            let _ = waiter.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Backend(e.to_string())),
            });
        }
    }
}
