//! Agent state on the runtime: versioned JSON documents by scope and key,
//! written with compare-and-swap, listed by prefix and watched from a
//! version ([`AgentState`]; the HTTP API is [`http`]). The store keeps the
//! documents and each scope's change log ([`crate::store::state`]); this
//! module decides who may do what ([`rules`]), checks values against their
//! scope's schema, wakes the watchers of a scope when it writes, and counts
//! ([`metrics`]).

pub mod http;
pub mod metrics;
pub mod rules;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_client::{StateChangeEvent, StateDocument, StatePage, StateWritten};
use futures::Stream;
use serde_json::Value;
use tokio::sync::watch;

use crate::broker::{Broker, BrokerError, Principal};
use crate::store::{
    AuditEntry, Op, ScopeStats, StateChange, StateEntry, StateOutcome, StateWrite, Store,
    StoreError, now_ms,
};
use rules::{Access, Granted, Refusal};

/// Longest key, in bytes.
pub const MAX_KEY: usize = 512;
/// Most documents one list answers.
pub const MAX_PAGE: usize = 1000;
/// Changes a watch reads from the store at a time.
const WATCH_BATCH: usize = 256;
/// How often a watch looks at the store when nothing woke it: writes made
/// by another process sharing the store (an ArangoDB replica) show within
/// this.
const WATCH_POLL: Duration = Duration::from_secs(1);

/// Why a state call failed (each maps to one HTTP status: [`http`]).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Authentication, body limits, malformed requests.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The caller may not use the scope this way (403).
    #[error("{who} may not {access} state scope {scope}{hint}", access = .access.verb())]
    Forbidden {
        /// The caller.
        who: String,
        /// The scope.
        scope: String,
        /// What it tried.
        access: Access,
        /// What would allow it.
        hint: String,
    },
    /// No such scope (404).
    #[error("no state scope {0}: it is neither a declared State nor agents/<an agent>")]
    UnknownScope(String),
    /// No such key (404).
    #[error("no key {key} in state scope {scope}")]
    NotFound {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
    },
    /// `ifVersion` did not match (409); the key as it is.
    #[error("{scope}/{key}: ifVersion {wanted} does not match {}", .current.as_ref().map_or("a missing key".to_string(), |c| format!("version {}", c.version)))]
    Conflict {
        /// The scope.
        scope: String,
        /// The key.
        key: String,
        /// The version the caller expected.
        wanted: u64,
        /// The key now.
        current: Option<Box<StateDocument>>,
    },
    /// The value breaks the scope's schema (400).
    #[error("the value does not match the schema of state scope {scope} at {pointer}: {message}")]
    Schema {
        /// The scope.
        scope: String,
        /// JSON pointer into the value.
        pointer: String,
        /// What is wrong.
        message: String,
    },
    /// A watch from a version the log no longer holds (410).
    #[error(
        "state scope {scope} keeps changes after version {compacted} only (now at {head}): list the scope again and watch from its version"
    )]
    Compacted {
        /// The scope.
        scope: String,
        /// The log starts after this.
        compacted: u64,
        /// The scope's revision.
        head: u64,
    },
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// RFC 3339 (UTC, milliseconds) of a time in ms since the Unix epoch.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// A stored document as the API shows it.
pub fn document(entry: StateEntry) -> StateDocument {
    StateDocument {
        key: entry.key,
        value: entry.value,
        version: entry.version,
        updated_at: rfc3339(entry.updated_ms),
        updated_by: entry.updated_by,
    }
}

/// A stored change as a watch delivers it.
pub fn event(change: StateChange) -> StateChangeEvent {
    StateChangeEvent {
        version: change.version,
        key: change.key,
        deleted: change.value.is_none(),
        value: change.value,
        at: rfc3339(change.at_ms),
        by: change.by,
    }
}

/// Agent state, shared by the HTTP handlers.
pub struct AgentState {
    store: Arc<dyn Store>,
    broker: Arc<Broker>,
    /// Per scope, the last version this runtime wrote: watchers wait on it.
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Writes, conflicts, watchers, watch lag.
    pub metrics: metrics::StateMetrics,
    /// Set when the runtime stops: watches end, so their connections close.
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentState")
    }
}

fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(BrokerError::BadRequest(format!(
            "a state key is 1 to {MAX_KEY} bytes without control characters"
        ))
        .into());
    }
    Ok(())
}

impl AgentState {
    /// The state of the runtime whose broker is `broker`, kept in `store`;
    /// its watches end when `shutdown` turns true.
    pub fn new(
        store: Arc<dyn Store>,
        broker: Arc<Broker>,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<AgentState> {
        Arc::new(AgentState {
            store,
            broker,
            heads: Mutex::new(HashMap::new()),
            metrics: metrics::StateMetrics::default(),
            shutdown,
        })
    }

    fn grant(&self, who: &Principal, scope: &str, access: Access) -> Result<Granted, StateError> {
        let config = self.broker.config();
        rules::check(
            &config.states,
            |agent| config.agents.contains_key(agent),
            who,
            scope,
            access,
        )
        .map_err(|refusal| match refusal {
            Refusal::Unknown => StateError::UnknownScope(scope.to_string()),
            Refusal::Forbidden => StateError::Forbidden {
                who: who.name().to_string(),
                scope: scope.to_string(),
                access,
                hint: if scope.starts_with("agents/") {
                    " (an agent's scope is its own)".into()
                } else {
                    format!(
                        " (add it to the State's `{}`)",
                        if access == Access::Read {
                            "readers"
                        } else {
                            "writers"
                        }
                    )
                },
            },
        })
    }

    fn head(&self, scope: &str) -> watch::Receiver<u64> {
        let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads
            .entry(scope.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn wake(&self, scope: &str, version: u64) {
        let heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(head) = heads.get(scope) {
            head.send_replace(version);
        }
    }

    /// One key's document.
    pub async fn get(
        &self,
        who: &Principal,
        scope: &str,
        key: &str,
    ) -> Result<StateDocument, StateError> {
        self.grant(who, scope, Access::Read)?;
        check_key(key)?;
        self.store
            .state_get(scope, key)
            .await?
            .map(document)
            .ok_or_else(|| StateError::NotFound {
                scope: scope.to_string(),
                key: key.to_string(),
            })
    }

    /// Writes (`value`) or deletes (`None`) a key, with compare-and-swap
    /// when `if_version` is given; answers once the write is durable.
    pub async fn write(
        &self,
        who: &Principal,
        scope: &str,
        key: &str,
        value: Option<Value>,
        if_version: Option<u64>,
    ) -> Result<StateWritten, StateError> {
        let granted = self.grant(who, scope, Access::Write)?;
        check_key(key)?;
        if let (Some(value), Some(schema)) = (
            &value,
            granted.rules.as_ref().and_then(|r| r.schema.as_ref()),
        ) && let Some(error) = schema.iter_errors(value).next()
        {
            self.metrics.rejected(scope);
            let pointer = error.instance_path().to_string();
            return Err(StateError::Schema {
                scope: scope.to_string(),
                pointer: if pointer.is_empty() {
                    "/".into()
                } else {
                    pointer
                },
                message: error.to_string(),
            });
        }
        let write = StateWrite {
            scope: scope.to_string(),
            key: key.to_string(),
            value,
            if_version,
            by: who.name().to_string(),
            at_ms: now_ms(),
            history: granted.history,
        };
        match self.store.state_write(write).await? {
            StateOutcome::Written { version } => {
                self.metrics.written(scope);
                self.wake(scope, version);
                Ok(StateWritten {
                    key: key.to_string(),
                    version,
                })
            }
            StateOutcome::Conflict { current } => {
                self.metrics.conflicted(scope);
                Err(StateError::Conflict {
                    scope: scope.to_string(),
                    key: key.to_string(),
                    wanted: if_version.unwrap_or(0),
                    current: current.map(|c| Box::new(document(c))),
                })
            }
            StateOutcome::Missing => Err(StateError::NotFound {
                scope: scope.to_string(),
                key: key.to_string(),
            }),
        }
    }

    /// Writes `action` by `actor` to the audit log (a failure is logged:
    /// the change it records was made).
    pub async fn audit(&self, actor: &str, action: &str, detail: String) {
        let entry = Op::Audit(AuditEntry {
            at_ms: now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            detail,
        });
        if let Err(e) = self.store.write(vec![entry]).await {
            tracing::warn!(error = %e, action, "cannot write a state change to the audit log");
        }
    }

    /// A page of a scope's documents.
    pub async fn list(
        &self,
        who: &Principal,
        scope: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<StatePage, StateError> {
        self.grant(who, scope, Access::Read)?;
        let limit = limit.clamp(1, MAX_PAGE);
        // The revision first: a watch from it misses nothing the page missed.
        let version = self.store.state_changes(scope, 0, 0).await?.head;
        let items: Vec<StateDocument> = self
            .store
            .state_list(scope, prefix, after, limit)
            .await?
            .into_iter()
            .map(document)
            .collect();
        let next = (items.len() == limit)
            .then(|| items.last().map(|d| d.key.clone()))
            .flatten();
        Ok(StatePage {
            items,
            next,
            version,
        })
    }

    /// Every change of `scope` after `from` (the scope's revision now when
    /// `None`), in version order, as they happen. Checked before the
    /// stream starts: rights, and that the log still holds `from`.
    pub async fn watch(
        self: &Arc<Self>,
        who: &Principal,
        scope: &str,
        from: Option<u64>,
    ) -> Result<impl Stream<Item = Result<StateChange, StateError>> + Send + use<>, StateError>
    {
        self.grant(who, scope, Access::Read)?;
        let log = self.store.state_changes(scope, 0, 0).await?;
        let from = from.unwrap_or(log.head);
        if from < log.compacted {
            return Err(StateError::Compacted {
                scope: scope.to_string(),
                compacted: log.compacted,
                head: log.head,
            });
        }
        let watcher = Watcher {
            state: self.clone(),
            scope: scope.to_string(),
            cursor: from,
            head: self.head(scope),
            shutdown: self.shutdown.clone(),
            ready: VecDeque::new(),
            done: false,
        };
        self.metrics.watching(1);
        Ok(futures::stream::unfold(watcher, |mut w| async move {
            let next = w.next().await?;
            Some((next, w))
        }))
    }

    /// Every scope: the declared ones and those agents wrote, with their
    /// counters (zero for a scope never written).
    pub async fn scopes(&self) -> Result<Vec<ScopeStats>, StoreError> {
        let stored = self.store.state_scopes().await?;
        Ok(crate::store::state::with_declared(
            self.broker.config().states.keys(),
            stored,
        ))
    }
}

/// One watch's position.
struct Watcher {
    state: Arc<AgentState>,
    scope: String,
    cursor: u64,
    head: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    ready: VecDeque<StateChange>,
    done: bool,
}

impl Watcher {
    /// The next change, or the error that ends the watch; `None` after it.
    async fn next(&mut self) -> Option<Result<StateChange, StateError>> {
        loop {
            if self.done || *self.shutdown.borrow() {
                return None;
            }
            if let Some(change) = self.ready.pop_front() {
                self.cursor = change.version;
                self.state
                    .metrics
                    .delivered(now_ms().saturating_sub(change.at_ms));
                return Some(Ok(change));
            }
            let log = match self
                .state
                .store
                .state_changes(&self.scope, self.cursor, WATCH_BATCH)
                .await
            {
                Ok(log) => log,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            };
            if self.cursor < log.compacted {
                // The watcher fell behind the log's history.
                self.done = true;
                return Some(Err(StateError::Compacted {
                    scope: self.scope.clone(),
                    compacted: log.compacted,
                    head: log.head,
                }));
            }
            if log.changes.is_empty() {
                tokio::select! {
                    changed = self.head.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(WATCH_POLL).await;
                        }
                    }
                    () = tokio::time::sleep(WATCH_POLL) => {}
                    _ = self.shutdown.changed() => return None,
                }
                continue;
            }
            self.head.borrow_and_update();
            self.ready.extend(log.changes);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.state.metrics.watching(-1);
    }
}
