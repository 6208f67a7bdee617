//! The ArangoDB store, for several reconciler replicas sharing one state: a
//! thin client of ArangoDB's HTTP API on the project's own reqwest and
//! rustls (arangors would bring a second TLS stack, OpenSSL; see docs/architecture.md).
//!
//! Layout, in one database (`cortex` unless the URL names another), every
//! collection created with `waitForSync` so an acknowledged write is on disk:
//!
//! | collection | documents |
//! |---|---|
//! | `state` | `applied` (the applied config and its revision), `last_message_id` |
//! | `messages` | one per stored message, keyed by its id |
//! | `health` | health records, ordered by a `seq` the writer assigns |
//! | `audit` | audit entries, ordered by `seq` |
//! | `meta` | named values |
//! | `executions` | workflow executions, keyed by id, ordered by `seq` |
//! | `execution_tasks` | one per task of an execution that has moved |
//! | `state_scopes`, `state_entries`, `state_changes` | agent state ([`state`]) |
//!
//! An apply is a compare-and-swap on the `applied` document's `_rev`
//! (`If-Match`; a `412` means someone else applied first). A [`Store::write`]
//! is one stream transaction, in the order writes were made (the broker's
//! journal batches: [`crate::batch`]).
//!
//! The AQL this store sends is in [`queries`]; nothing else is queried.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{
    Applied, AuditEntry, BoxFuture, HealthRecord, Lease, Op, ScopeStats, StateEntry, StateLog,
    StateOutcome, StateWrite, Store, StoreError, StoreResult, StoredExecution, StoredMessage,
    StoredTask,
};

mod client;
mod config;
mod state;
mod writer;

use client::{Client, Failure};
pub use config::ArangoConfig;
use writer::Writer;

/// The AQL queries this store runs (reads only; every write goes through
/// the document API inside a stream transaction).
pub mod queries {
    /// Every message, in id order.
    pub const MESSAGES: &str = "FOR m IN messages SORT m.id RETURN m";
    /// The highest message id stored.
    pub const MAX_MESSAGE_ID: &str = "RETURN MAX(FOR m IN messages RETURN m.id)";
    /// The newest `@limit` health records of `@agent`.
    pub const HEALTH: &str =
        "FOR h IN health FILTER h.agent == @agent SORT h.seq DESC LIMIT @limit RETURN h";
    /// The keys of `@agent`'s health records past the newest `@keep`.
    pub const HEALTH_BEYOND: &str = "FOR h IN health FILTER h.agent == @agent SORT h.seq DESC LIMIT @keep, @count RETURN h._key";
    /// The newest `@limit` audit entries.
    pub const AUDIT: &str = "FOR a IN audit SORT a.seq DESC LIMIT @limit RETURN a";
    /// The named values whose name starts with `@prefix`, by name.
    pub const META_PREFIX: &str =
        "FOR m IN meta FILTER STARTS_WITH(m.key, @prefix) SORT m.key RETURN [m.key, m.value]";
    /// The executions of `@workflow` (every one's when null), oldest first.
    pub const EXECUTIONS: &str = "FOR e IN executions FILTER @workflow == null OR e.workflow == @workflow SORT e.seq RETURN e";
    /// The task records of the executions `@ids`.
    pub const EXECUTION_TASKS: &str =
        "FOR t IN execution_tasks FILTER t.execution IN @ids RETURN t";
    /// A page of `@scope`'s state entries: keys starting with `@prefix`,
    /// after `@after`, at most `@limit`, in key order.
    pub const STATE_LIST: &str = "FOR e IN state_entries FILTER e.scope == @scope AND e.key > @after AND STARTS_WITH(e.key, @prefix) SORT e.key LIMIT @limit RETURN e";
    /// `@scope`'s changes after version `@after`, at most `@limit`, in order.
    pub const STATE_CHANGES: &str = "FOR c IN state_changes FILTER c.scope == @scope AND c.version > @after SORT c.version LIMIT @limit RETURN c";
    /// Every state scope's counters, by name.
    pub const STATE_SCOPES: &str = "FOR s IN state_scopes SORT s.scope RETURN s";
}

/// The collections the store uses.
const COLLECTIONS: [&str; 10] = [
    "state",
    "messages",
    "health",
    "audit",
    "meta",
    "executions",
    "execution_tasks",
    "state_scopes",
    "state_entries",
    "state_changes",
];
/// The collections a write batch changes.
const WRITE_COLLECTIONS: [&str; 7] = [
    "messages",
    "health",
    "audit",
    "meta",
    "state",
    "executions",
    "execution_tasks",
];
/// Documents per cursor batch.
const CURSOR_BATCH: usize = 1000;
/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// ArangoDB's error numbers the store tells apart.
const ERROR_DOCUMENT_NOT_FOUND: i64 = 1202;
const ERROR_DUPLICATE_NAME: i64 = 1207;
const ERROR_DATABASE_NOT_FOUND: i64 = 1228;

/// A document key for a named value: the name itself when ArangoDB allows
/// it as a key, else its hex form (prefixed so the two never collide).
fn meta_key(name: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-:.@()+,=;$!*'".contains(c);
    if !name.is_empty() && name.len() <= 200 && name.chars().all(allowed) {
        name.to_string()
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("%{hex}")
    }
}
struct WriteJob {
    ops: Vec<Op>,
    done: oneshot::Sender<StoreResult<()>>,
}

/// The ArangoDB store.
#[derive(Debug)]
pub struct ArangoStore {
    client: Arc<Client>,
    jobs: std::sync::Mutex<Option<mpsc::UnboundedSender<WriteJob>>>,
}

impl ArangoStore {
    /// Connects, creating the database, collections and indexes when
    /// missing (so the first replica sets a new server up).
    pub async fn connect(config: ArangoConfig) -> StoreResult<ArangoStore> {
        let client = Arc::new(Client {
            http: cortex_client::http_client(),
            config,
        });
        client.prepare().await.map_err(|f| StoreError::Open {
            path: format!("{}/_db/{}", client.config.endpoint, client.config.database),
            message: f.describe(),
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            client: client.clone(),
            last_id: None,
            seq: AtomicU64::new(0),
        };
        tokio::spawn(writer.run(rx));
        Ok(ArangoStore {
            client,
            jobs: std::sync::Mutex::new(Some(tx)),
        })
    }

    /// The server and database.
    pub fn config(&self) -> &ArangoConfig {
        &self.client.config
    }

    /// Stops taking writes; the ones already sent still commit. Dropping
    /// the store does the same.
    pub fn close(&self) {
        drop(self.jobs.lock().map(|mut j| j.take()));
    }

    /// Drops the whole database (for tests that made a throwaway one).
    pub async fn drop_database(config: &ArangoConfig) -> StoreResult<()> {
        let client = Client {
            http: cortex_client::http_client(),
            config: config.clone(),
        };
        client
            .call_in(
                "_system",
                Method::DELETE,
                &format!("/_api/database/{}", config.database),
                None,
                &[],
            )
            .await
            .map(|_| ())
            .map_err(|f| f.into_store_error("dropping the database"))
    }
}

fn decode<T: serde::de::DeserializeOwned>(values: Vec<Value>, what: &str) -> StoreResult<Vec<T>> {
    values
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                StoreError::Backend(format!("ArangoDB: a stored {what} is damaged: {e}"))
            })
        })
        .collect()
}

impl Store for ArangoStore {
    fn applied(&self) -> BoxFuture<'_, StoreResult<Option<Applied>>> {
        Box::pin(async move {
            let doc = self
                .client
                .document("state", "applied")
                .await
                .map_err(|f| f.into_store_error("reading the applied config"))?;
            doc.and_then(|mut d| d.get_mut("applied").map(Value::take))
                .map(|a| {
                    serde_json::from_value(a).map_err(|e| {
                        StoreError::Backend(format!(
                            "ArangoDB: the stored applied config is damaged: {e}"
                        ))
                    })
                })
                .transpose()
        })
    }

    fn revision(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let doc = self
                .client
                .document("state", "applied")
                .await
                .map_err(|f| f.into_store_error("reading the revision"))?;
            Ok(doc
                .and_then(|d| d.get("revision").and_then(Value::as_u64))
                .unwrap_or(0))
        })
    }

    fn apply(&self, expected: u64, next: Applied) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let client = &self.client;
            let current = client
                .document("state", "applied")
                .await
                .map_err(|f| f.into_store_error("reading the revision"))?;
            let found = current
                .as_ref()
                .and_then(|d| d.get("revision").and_then(Value::as_u64))
                .unwrap_or(0);
            if found != expected {
                return Err(StoreError::Stale { expected, found });
            }
            let revision = expected + 1;
            let mut stored = next;
            stored.revision = revision;
            let doc = json!({ "revision": revision, "applied": stored });
            // Replaces only the revision read above; the first apply is an
            // insert, which fails if another came first.
            let written = client
                .swap("state", "applied", doc, current.as_ref(), None)
                .await;
            match written {
                Ok(_) => Ok(revision),
                Err(f) if f.lost_race() => {
                    let found = self.revision().await?;
                    Err(StoreError::Stale { expected, found })
                }
                Err(f) => Err(f.into_store_error("storing the applied config")),
            }
        })
    }

    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, StoreResult<()>> {
        let (done, wait) = oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .ok()
            .and_then(|j| j.as_ref().map(|tx| tx.send(WriteJob { ops, done }).is_ok()))
            == Some(true);
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            wait.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn messages(&self) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        Box::pin(async move {
            let rows = self
                .client
                .query(queries::MESSAGES, json!({}))
                .await
                .map_err(|f| f.into_store_error("reading messages"))?;
            decode(rows, "message")
        })
    }

    fn last_message_id(&self) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(async move {
            let recorded = self
                .client
                .document("state", "last_message_id")
                .await
                .map_err(|f| f.into_store_error("reading the last message id"))?
                .and_then(|d| d.get("id").and_then(Value::as_u64))
                .unwrap_or(0);
            let stored = self
                .client
                .query(queries::MAX_MESSAGE_ID, json!({}))
                .await
                .map_err(|f| f.into_store_error("reading the last message id"))?
                .first()
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Ok(recorded.max(stored))
        })
    }

    fn health_history(
        &self,
        agent: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<HealthRecord>>> {
        let bind = json!({ "agent": agent, "limit": limit });
        Box::pin(async move {
            let rows = self
                .client
                .query(queries::HEALTH, bind)
                .await
                .map_err(|f| f.into_store_error("reading health history"))?;
            decode(rows, "health record")
        })
    }

    fn audit_log(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<AuditEntry>>> {
        Box::pin(async move {
            let rows = self
                .client
                .query(queries::AUDIT, json!({ "limit": limit }))
                .await
                .map_err(|f| f.into_store_error("reading the audit log"))?;
            decode(rows, "audit entry")
        })
    }

    fn meta(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let key = meta_key(key);
        Box::pin(async move {
            let doc = self
                .client
                .document("meta", &key)
                .await
                .map_err(|f| f.into_store_error("reading a named value"))?;
            Ok(doc.and_then(|d| d.get("value").and_then(Value::as_str).map(str::to_string)))
        })
    }

    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'_, StoreResult<Lease>> {
        let name = Lease::key(name);
        let holder = holder.to_string();
        Box::pin(async move {
            let key = meta_key(&name);
            let client = &self.client;
            let current = client
                .document("meta", &key)
                .await
                .map_err(|f| f.into_store_error("reading a lease"))?;
            let lease = current
                .as_ref()
                .and_then(|d| d.get("value").and_then(Value::as_str))
                .and_then(|v| serde_json::from_str::<Lease>(v).ok());
            let next = Lease::next(lease.clone(), &holder, now_ms, until_ms);
            if lease.as_ref() == Some(&next) {
                return Ok(next);
            }
            let value =
                serde_json::to_string(&next).map_err(|e| StoreError::Backend(e.to_string()))?;
            let doc = json!({ "key": name, "value": value });
            // A compare-and-swap on the document read above: of two
            // replicas asking at once, one writes and the other is told who.
            let written = client.swap("meta", &key, doc, current.as_ref(), None).await;
            match written {
                Ok(_) => Ok(next),
                Err(f) if f.lost_race() => {
                    let now = client
                        .document("meta", &key)
                        .await
                        .map_err(|f| f.into_store_error("reading a lease"))?;
                    now.as_ref()
                        .and_then(|d| d.get("value").and_then(Value::as_str))
                        .and_then(|v| serde_json::from_str::<Lease>(v).ok())
                        .ok_or_else(|| {
                            StoreError::Backend(
                                "the lease changed while it was taken; it is unreadable now".into(),
                            )
                        })
                }
                Err(f) => Err(f.into_store_error("writing a lease")),
            }
        })
    }

    fn state_write(&self, write: StateWrite) -> BoxFuture<'_, StoreResult<StateOutcome>> {
        Box::pin(async move { state::write(&self.client, &write).await })
    }

    fn state_get(&self, scope: &str, key: &str) -> BoxFuture<'_, StoreResult<Option<StateEntry>>> {
        let (scope, key) = (scope.to_string(), key.to_string());
        Box::pin(async move { state::get(&self.client, &scope, &key).await })
    }

    fn state_list(
        &self,
        scope: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StateEntry>>> {
        let (scope, prefix, after) = (scope.to_string(), prefix.to_string(), after.to_string());
        Box::pin(async move { state::list(&self.client, &scope, &prefix, &after, limit).await })
    }

    fn state_changes(
        &self,
        scope: &str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<StateLog>> {
        let scope = scope.to_string();
        Box::pin(async move { state::changes(&self.client, &scope, after, limit).await })
    }

    fn state_scopes(&self) -> BoxFuture<'_, StoreResult<Vec<ScopeStats>>> {
        Box::pin(async move { state::scopes(&self.client).await })
    }

    fn meta_prefix(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<(String, String)>>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let rows = self
                .client
                .query(queries::META_PREFIX, json!({ "prefix": prefix }))
                .await
                .map_err(|f| f.into_store_error("reading named values"))?;
            decode(rows, "named value")
        })
    }

    fn executions(
        &self,
        workflow: Option<&str>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredExecution>>> {
        let workflow = workflow.map(str::to_string);
        Box::pin(async move {
            let rows = self
                .client
                .query(queries::EXECUTIONS, json!({ "workflow": workflow }))
                .await
                .map_err(|f| f.into_store_error("reading executions"))?;
            let mut executions: Vec<StoredExecution> = decode(rows, "execution")?;
            let ids: Vec<&str> = executions.iter().map(|e| e.id.as_str()).collect();
            let rows = self
                .client
                .query(queries::EXECUTION_TASKS, json!({ "ids": ids }))
                .await
                .map_err(|f| f.into_store_error("reading execution tasks"))?;
            #[derive(serde::Deserialize)]
            struct Row {
                execution: String,
                task: String,
                #[serde(flatten)]
                record: StoredTask,
            }
            let mut by_execution: std::collections::HashMap<String, BTreeMap<String, StoredTask>> =
                std::collections::HashMap::new();
            for row in decode::<Row>(rows, "execution task")? {
                by_execution
                    .entry(row.execution)
                    .or_default()
                    .insert(row.task, row.record);
            }
            for execution in &mut executions {
                execution.tasks = by_execution.remove(&execution.id).unwrap_or_default();
            }
            Ok(executions)
        })
    }
}

impl Drop for ArangoStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_names_become_document_keys() {
        assert_eq!(meta_key("runtime.url"), "runtime.url");
        assert_eq!(meta_key("a/b"), "%612f62");
        assert_ne!(meta_key("a/b"), meta_key("%612f62"));
    }
}
