//! The store's writer: each write is one stream transaction, in the order
//! writes were made; health records past the kept history trimmed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::store::sqlite::HEALTH_HISTORY_PER_AGENT;
use crate::store::{Op, StoreError, StoredExecution, StoredMessage};

/// The task that commits write batches, several at a time.
pub(super) struct Writer {
    pub(super) client: Arc<Client>,
    /// The `last_message_id` this writer knows is stored.
    pub(super) last_id: Option<u64>,
    /// Orders health and audit records: microseconds since the epoch, made
    /// strictly increasing.
    pub(super) seq: AtomicU64,
}

impl Writer {
    pub(super) async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<WriteJob>) {
        // One stream transaction per write, in the order they were made
        // (the broker's journal batches: `crate::batch`).
        while let Some(job) = jobs.recv().await {
            let ops: Vec<&Op> = job.ops.iter().collect();
            let result = self.commit(&ops).await;
            if result.is_ok() {
                self.trim_health(&ops).await;
            }
            let _ = job.done.send(result.map_err(StoreError::Backend));
        }
    }

    pub(super) fn next_seq(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut current = self.seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(current + 1);
            match self
                .seq
                .compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// Commits `ops` in one stream transaction, in order.
    pub(super) async fn commit(&mut self, ops: &[&Op]) -> Result<(), String> {
        let client = self.client.clone();
        let trx = client
            .begin(&WRITE_COLLECTIONS)
            .await
            .map_err(|f| format!("ArangoDB: beginning a transaction: {}", f.describe()))?;
        match self.write_all(&trx, ops).await {
            Ok(new_last) => {
                client
                    .commit(&trx)
                    .await
                    .map_err(|f| format!("ArangoDB: committing: {}", f.describe()))?;
                if new_last.is_some() {
                    self.last_id = new_last;
                }
                Ok(())
            }
            Err(f) => {
                // Nothing of the batch stays.
                client.abort(&trx).await;
                Err(format!("ArangoDB: writing: {}", f.describe()))
            }
        }
    }

    /// Sends every op, consecutive ops sent the same way as one request;
    /// returns the new `last_message_id` when it grew.
    pub(super) async fn write_all(
        &mut self,
        trx: &str,
        ops: &[&Op],
    ) -> Result<Option<u64>, Failure> {
        let client = self.client.clone();
        if self.last_id.is_none() {
            let stored = client.document("state", "last_message_id").await?;
            self.last_id = Some(
                stored
                    .and_then(|d| d.get("id").and_then(Value::as_u64))
                    .unwrap_or(0),
            );
        }
        let known = self.last_id.unwrap_or(0);
        let max_id = ops
            .iter()
            .filter_map(|op| match op {
                Op::Enqueue(m) => Some(m.id),
                _ => None,
            })
            .fold(known, u64::max);
        for group in ops.chunk_by(|a, b| route(a) == route(b)) {
            let (method, path, missing_ok) = route(group[0]);
            let body = group.iter().map(|op| self.document_of(op)).collect();
            client
                .documents(trx, method, path, Value::Array(body), missing_ok)
                .await?;
        }
        if max_id > known {
            client
                .documents(
                    trx,
                    Method::POST,
                    "/_api/document/state?overwriteMode=replace",
                    json!([{ "_key": "last_message_id", "id": max_id }]),
                    false,
                )
                .await?;
            return Ok(Some(max_id));
        }
        Ok(None)
    }

    /// What `op` sends: a document, a patch, or a key to remove.
    pub(super) fn document_of(&self, op: &Op) -> Value {
        match op {
            Op::Enqueue(m) => message_document(m),
            Op::Remove(id) => Value::String(id.to_string()),
            Op::Attempted { id, attempts } => {
                json!({ "_key": id.to_string(), "attempts": attempts })
            }
            Op::Dead {
                id,
                reason,
                attempts,
            } => json!({ "_key": id.to_string(), "dead": reason, "attempts": attempts }),
            Op::Health(h) => {
                let mut doc = json!(h);
                doc["seq"] = self.next_seq().into();
                doc
            }
            Op::Audit(a) => {
                let mut doc = json!(a);
                doc["seq"] = self.next_seq().into();
                doc
            }
            Op::Meta {
                key,
                value: Some(v),
            } => json!({ "_key": meta_key(key), "key": key, "value": v }),
            Op::Meta { key, value: None } => Value::String(meta_key(key)),
            Op::Execution(e) => {
                let mut doc = json!(StoredExecution {
                    tasks: Default::default(),
                    ..(**e).clone()
                });
                if let Value::Object(fields) = &mut doc {
                    fields.remove("tasks");
                }
                doc["_key"] = Value::String(meta_key(&e.id));
                doc["seq"] = self.next_seq().into();
                doc
            }
            Op::ExecutionState {
                id,
                state,
                finished_ms,
            } => json!({ "_key": meta_key(id), "state": state, "finished_ms": finished_ms }),
            Op::Task {
                execution,
                task,
                record,
            } => {
                let mut doc = json!(record);
                doc["_key"] = Value::String(meta_key(&format!("{execution}\u{1}{task}")));
                doc["execution"] = Value::String(execution.clone());
                doc["task"] = Value::String(task.clone());
                doc
            }
        }
    }

    /// Keeps the newest records per agent; a failure here loses nothing
    /// (the records stay until the next trim), so it is only logged.
    pub(super) async fn trim_health(&self, ops: &[&Op]) {
        let agents: std::collections::BTreeSet<&str> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Health(h) => Some(h.agent.as_str()),
                _ => None,
            })
            .collect();
        for agent in agents {
            let beyond = self
                .client
                .query(
                    queries::HEALTH_BEYOND,
                    json!({ "agent": agent, "keep": HEALTH_HISTORY_PER_AGENT, "count": 1_000_000 }),
                )
                .await;
            let removed = match beyond {
                Ok(keys) if keys.is_empty() => Ok(Value::Null),
                Ok(keys) => {
                    self.client
                        .call(
                            Method::DELETE,
                            "/_api/document/health",
                            Some(&Value::Array(keys)),
                            &[],
                        )
                        .await
                }
                Err(f) => Err(f),
            };
            if let Err(f) = removed {
                tracing::warn!(agent, error = %f.describe(), "trimming health history in ArangoDB");
            }
        }
    }
}

/// How an op is sent: method and path of its multi-document request, and
/// whether "document not found" is fine (removing or updating a message
/// that is already gone, as SQL's DELETE and UPDATE allow).
pub(super) fn route(op: &Op) -> (Method, &'static str, bool) {
    match op {
        Op::Enqueue(_) => (
            Method::POST,
            "/_api/document/messages?overwriteMode=replace",
            false,
        ),
        Op::Remove(_) => (Method::DELETE, "/_api/document/messages", true),
        Op::Attempted { .. } | Op::Dead { .. } => (Method::PATCH, "/_api/document/messages", true),
        Op::Health(_) => (Method::POST, "/_api/document/health", false),
        Op::Audit(_) => (Method::POST, "/_api/document/audit", false),
        Op::Meta { value: Some(_), .. } => (
            Method::POST,
            "/_api/document/meta?overwriteMode=replace",
            false,
        ),
        Op::Meta { value: None, .. } => (Method::DELETE, "/_api/document/meta", true),
        // A trigger seen twice creates one execution.
        Op::Execution(_) => (
            Method::POST,
            "/_api/document/executions?overwriteMode=ignore",
            false,
        ),
        Op::ExecutionState { .. } => (Method::PATCH, "/_api/document/executions", false),
        Op::Task { .. } => (
            Method::POST,
            "/_api/document/execution_tasks?overwriteMode=replace",
            false,
        ),
    }
}

pub(super) fn message_document(m: &StoredMessage) -> Value {
    let mut doc = json!(m);
    doc["_key"] = Value::String(m.id.to_string());
    doc
}
