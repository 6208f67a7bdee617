//! Where the runtime keeps its state: the applied runtime config and its
//! revision, messages waiting for delivery, health history, the audit log,
//! small named values, workflow executions and agent state ([`state`]). One trait ([`Store`]), two implementations: the
//! embedded SQLite file ([`sqlite::SqliteStore`], the default) and ArangoDB
//! for several replicas sharing state ([`arango::ArangoStore`], a thin
//! client of its HTTP API). `cortex-testkit`'s `conformance` module is the suite both must pass.
//!
//! Every call that returns `Ok` has made its change durable: the runtime
//! acknowledges nothing before the store has.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod arango;
pub mod sqlite;
pub mod state;

pub use arango::{ArangoConfig, ArangoStore};
pub use sqlite::SqliteStore;
pub use state::{ScopeStats, StateChange, StateEntry, StateLog, StateOutcome, StateWrite};

/// A boxed future, so that [`Store`] can be used as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The runtime config applied to a store, with the revision it got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// Starts at 1 and grows by one with every apply.
    pub revision: u64,
    /// The git commit the config was built from, when known.
    pub commit: Option<String>,
    /// `runtime.json` as the compiler rendered it.
    pub config: Value,
    /// Each agent's bearer token (generated on apply; an agent keeps its
    /// token across applies).
    pub tokens: BTreeMap<String, String>,
    /// When it was applied (milliseconds since the Unix epoch).
    pub applied_at_ms: u64,
}

/// A message waiting in an inbox (the unit the store keeps; a topic message
/// is stored once per subscribing agent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Unique, growing id.
    pub id: u64,
    /// The agent whose inbox holds it.
    pub inbox: String,
    /// The topic it was published to (`None` for direct messages).
    pub topic: Option<String>,
    /// Ordering key.
    pub key: Option<String>,
    /// Who sent it.
    pub sender: String,
    /// The payload as JSON text.
    pub payload: String,
    /// Deliveries attempted so far.
    pub attempts: u32,
    /// When it was published (ms since the epoch).
    pub published_ms: u64,
    /// Whether the sender waits for a reply.
    pub request: bool,
    /// The request this message answers.
    pub in_reply_to: Option<u64>,
    /// Why it was dead-lettered; `None` while it is deliverable.
    pub dead: Option<String>,
}

/// One health observation of one agent replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// The agent.
    pub agent: String,
    /// The replica index.
    pub replica: u32,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// `starting`, `healthy`, `degraded`, `unhealthy`, `restarting`, `exited`.
    pub state: String,
    /// What the check or the process said.
    pub detail: String,
}

/// One entry of the audit log: who did what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Who (`user@host`, an agent, `runtime`).
    pub actor: String,
    /// What (`apply`, `restart`, `dead-letter`…).
    pub action: String,
    /// Details.
    pub detail: String,
}

/// A workflow execution as the store keeps it: the header the runtime
/// writes when it creates the execution (and updates as it ends), and one
/// record per task that has moved (a task with none is still pending).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredExecution {
    /// Unique id (`<workflow>-<n>`, or derived from the trigger message's
    /// id, so a redelivered message finds its execution).
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The applied revision whose definition it runs.
    pub revision: u64,
    /// The trigger's name.
    pub trigger: String,
    /// The trigger's payload.
    pub payload: Value,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// The workflow definition it runs (the runtime config's entry).
    pub definition: Value,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// The tasks that have moved, by name.
    #[serde(default)]
    pub tasks: BTreeMap<String, StoredTask>,
}

/// One task of a stored execution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredTask {
    /// `pending`, `running`, `succeeded`, `failed`, `skipped` or `cancelled`.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// Its output, once it succeeded.
    pub output: Option<Value>,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// When its last attempt started (ms since the epoch).
    pub started_ms: Option<u64>,
    /// When it finished.
    pub finished_ms: Option<u64>,
    /// Attempts made before an operator's retry gave it a new retry budget.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earlier_attempts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One change of a [`Store::write`] batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A new message in an inbox.
    Enqueue(StoredMessage),
    /// A message is done (acked, replied to, or expired by retention).
    Remove(u64),
    /// A message was delivered again: its attempt count.
    Attempted {
        /// The message.
        id: u64,
        /// Attempts so far.
        attempts: u32,
    },
    /// A message was dead-lettered.
    Dead {
        /// The message.
        id: u64,
        /// Why (`ack timeout after 5 attempts`…).
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A health observation.
    Health(HealthRecord),
    /// An audit entry.
    Audit(AuditEntry),
    /// Sets a named value (`runtime.url`…).
    Meta {
        /// Name.
        key: String,
        /// Value; `None` removes it.
        value: Option<String>,
    },
    /// A new execution (its `tasks` are not written: each has its own
    /// [`Op::Task`]). Ignored when one with the same id exists, so a
    /// trigger seen twice creates one execution.
    Execution(Box<StoredExecution>),
    /// An execution moved to `state` (ended at `finished_ms`).
    ExecutionState {
        /// The execution.
        id: String,
        /// Its new state.
        state: String,
        /// When it ended, if it did.
        finished_ms: Option<u64>,
    },
    /// A task of an execution moved.
    Task {
        /// The execution.
        execution: String,
        /// The task.
        task: String,
        /// Where it is now.
        record: StoredTask,
    },
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened (path, permissions, another format).
    #[error("cannot open the state store {path}: {message}")]
    Open {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
    /// A read or write failed (disk full, I/O error, server error).
    #[error("state store error: {0}")]
    Backend(String),
    /// An apply was based on another revision than the store holds.
    #[error(
        "the state store is at revision {found}, not {expected}: someone applied since; plan again"
    )]
    Stale {
        /// The revision the apply expected.
        expected: u64,
        /// The revision the store holds.
        found: u64,
    },
    /// The store was closed.
    #[error("the state store is closed")]
    Closed,
}

impl StoreError {
    /// Whether trying again can succeed (I/O and server errors can; a stale
    /// apply or a closed store cannot).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where the runtime keeps state. Every `Ok` is durable.
pub trait Store: Send + Sync + 'static {
    /// The applied config, or `None` before the first apply.
    fn applied(&self) -> BoxFuture<'_, StoreResult<Option<Applied>>>;
    /// Just the applied revision (0 before the first apply): cheap, for
    /// noticing an apply made by another process.
    fn revision(&self) -> BoxFuture<'_, StoreResult<u64>>;
    /// Stores `next` as revision `expected + 1`, atomically, if the store is
    /// still at `expected` ([`StoreError::Stale`] otherwise).
    fn apply(&self, expected: u64, next: Applied) -> BoxFuture<'_, StoreResult<u64>>;
    /// Applies a batch of changes atomically, in one transaction, after
    /// every write made before it; returns once durable. (Batching many
    /// changes into one write is the caller's: [`crate::batch`].)
    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, StoreResult<()>>;
    /// Every stored message, deliverable and dead, in id order.
    fn messages(&self) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>>;
    /// The highest message id ever stored (0 when none), so ids never repeat.
    fn last_message_id(&self) -> BoxFuture<'_, StoreResult<u64>>;
    /// The newest `limit` health records of `agent`, newest first.
    fn health_history(
        &self,
        agent: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<HealthRecord>>>;
    /// The newest `limit` audit entries, newest first.
    fn audit_log(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<AuditEntry>>>;
    /// A named value set by [`Op::Meta`].
    fn meta(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<String>>>;
    /// Every named value whose name starts with `prefix`, by name.
    fn meta_prefix(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<(String, String)>>>;
    /// The executions of `workflow` (every workflow's with `None`), with
    /// their tasks, oldest first.
    fn executions(
        &self,
        workflow: Option<&str>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredExecution>>>;
    /// Takes or renews the lease `name` for `holder` until `until_ms`,
    /// atomically, when it is free, expired at `now_ms`, or `holder`'s
    /// already; answers the lease as the store holds it afterwards (someone
    /// else's when it was not free). `until_ms` at or before `now_ms`
    /// gives the holder's lease up. Leader election between replicas.
    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'_, StoreResult<Lease>>;
    /// Writes or deletes one key of agent state with compare-and-swap
    /// ([`StateWrite::decide`]), atomically with the scope's revision and
    /// change log; `Ok` is durable. A conflict is an answer, not an error.
    fn state_write(&self, write: StateWrite) -> BoxFuture<'_, StoreResult<StateOutcome>>;
    /// One key's document.
    fn state_get(&self, scope: &str, key: &str) -> BoxFuture<'_, StoreResult<Option<StateEntry>>>;
    /// Up to `limit` documents of `scope` whose key starts with `prefix`
    /// and sorts after `after`, in key order (a page).
    fn state_list(
        &self,
        scope: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StateEntry>>>;
    /// Up to `limit` changes of `scope` after version `after`, in version
    /// order, with the scope's head and compaction point.
    fn state_changes(
        &self,
        scope: &str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<StateLog>>;
    /// Every scope ever written, by name.
    fn state_scopes(&self) -> BoxFuture<'_, StoreResult<Vec<ScopeStats>>>;
}

/// A named lock held until a time ([`Store::take_lease`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Who holds it.
    pub holder: String,
    /// Until when (ms since the Unix epoch); held while later than now.
    pub expires_ms: u64,
}

impl Lease {
    /// The lease after `holder` asked for it until `until_ms` at `now_ms`,
    /// given the lease `current` (none: never taken): the rule every store
    /// applies inside its own atomic step.
    pub fn next(current: Option<Lease>, holder: &str, now_ms: u64, until_ms: u64) -> Lease {
        match current {
            Some(lease) if lease.holder != holder && lease.expires_ms > now_ms => lease,
            _ => Lease {
                holder: holder.to_string(),
                expires_ms: until_ms,
            },
        }
    }

    /// The store's name of the lease `name` (kept among the named values).
    pub fn key(name: &str) -> String {
        format!("lease/{name}")
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
