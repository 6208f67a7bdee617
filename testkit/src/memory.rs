//! A state store held in memory: every call answers at once, without a
//! thread or a file, so tests on tokio's paused clock stay deterministic
//! (a store that waits on real I/O lets the paused clock jump to the next
//! timer). It passes the store conformance suite; nothing survives the
//! process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cortex_runtime::store::state::{Decision, keys_delta};
use cortex_runtime::store::{
    Applied, AuditEntry, BoxFuture, HealthRecord, Lease, Op, ScopeStats, StateEntry, StateLog,
    StateOutcome, StateWrite, Store, StoreError, StoreResult, StoredExecution, StoredMessage,
};

/// Health records kept per agent (the embedded store's bound).
const HEALTH_PER_AGENT: usize = 1000;

#[derive(Default)]
struct State {
    applied: Option<Applied>,
    messages: BTreeMap<u64, StoredMessage>,
    last_message_id: u64,
    health: Vec<HealthRecord>,
    audit: Vec<AuditEntry>,
    meta: BTreeMap<String, String>,
    /// Executions in creation order.
    executions: Vec<StoredExecution>,
    /// Agent state by scope.
    scopes: BTreeMap<String, Scope>,
}

/// One scope of agent state.
#[derive(Default)]
struct Scope {
    stats: ScopeStats,
    entries: BTreeMap<String, StateEntry>,
    log: std::collections::VecDeque<cortex_runtime::store::StateChange>,
}

impl Scope {
    fn write(&mut self, write: &StateWrite) -> StateOutcome {
        let current = self.entries.get(&write.key);
        if let Decision::Refuse(outcome) = write.decide(current) {
            return outcome;
        }
        let version = self.stats.version + 1;
        self.stats = self.stats.after(
            version,
            keys_delta(current.is_some(), write),
            write.compacted_at(version),
        );
        match write.entry(version) {
            Some(entry) => self.entries.insert(write.key.clone(), entry),
            None => self.entries.remove(&write.key),
        };
        self.log.push_back(write.change(version));
        while self
            .log
            .front()
            .is_some_and(|c| c.version <= self.stats.compacted)
        {
            self.log.pop_front();
        }
        StateOutcome::Written { version }
    }
}

/// A store in memory; clones share it (as two openings of one store do).
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

fn apply_op(state: &mut State, op: Op) {
    match op {
        Op::Enqueue(m) => {
            state.last_message_id = state.last_message_id.max(m.id);
            state.messages.insert(m.id, m);
        }
        Op::Remove(id) => {
            state.messages.remove(&id);
        }
        Op::Attempted { id, attempts } => {
            if let Some(m) = state.messages.get_mut(&id) {
                m.attempts = attempts;
            }
        }
        Op::Dead {
            id,
            reason,
            attempts,
        } => {
            if let Some(m) = state.messages.get_mut(&id) {
                m.dead = Some(reason);
                m.attempts = attempts;
            }
        }
        Op::Health(record) => {
            let agent = record.agent.clone();
            state.health.push(record);
            let kept = state.health.iter().filter(|h| h.agent == agent).count();
            if kept > HEALTH_PER_AGENT {
                let mut drop = kept - HEALTH_PER_AGENT;
                state.health.retain(|h| {
                    if drop > 0 && h.agent == agent {
                        drop -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        Op::Audit(entry) => state.audit.push(entry),
        Op::Meta { key, value } => match value {
            Some(v) => {
                state.meta.insert(key, v);
            }
            None => {
                state.meta.remove(&key);
            }
        },
        Op::Execution(e) => {
            if !state.executions.iter().any(|x| x.id == e.id) {
                let mut e = *e;
                e.tasks.clear();
                state.executions.push(e);
            }
        }
        Op::ExecutionState {
            id,
            state: new,
            finished_ms,
        } => {
            if let Some(e) = state.executions.iter_mut().find(|x| x.id == id) {
                e.state = new;
                e.finished_ms = finished_ms;
            }
        }
        Op::Task {
            execution,
            task,
            record,
        } => {
            if let Some(e) = state.executions.iter_mut().find(|x| x.id == execution) {
                e.tasks.insert(task, record);
            }
        }
    }
}

impl Store for MemoryStore {
    fn applied(&self) -> BoxFuture<'_, StoreResult<Option<Applied>>> {
        ready(Ok(self.with(|s| s.applied.clone())))
    }

    fn revision(&self) -> BoxFuture<'_, StoreResult<u64>> {
        ready(Ok(
            self.with(|s| s.applied.as_ref().map_or(0, |a| a.revision))
        ))
    }

    fn apply(&self, expected: u64, next: Applied) -> BoxFuture<'_, StoreResult<u64>> {
        ready(self.with(|s| {
            let found = s.applied.as_ref().map_or(0, |a| a.revision);
            if found != expected {
                return Err(StoreError::Stale { expected, found });
            }
            let mut next = next;
            next.revision = expected + 1;
            s.applied = Some(next);
            Ok(expected + 1)
        }))
    }

    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, StoreResult<()>> {
        self.with(|s| {
            for op in ops {
                apply_op(s, op);
            }
        });
        ready(Ok(()))
    }

    fn messages(&self) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        ready(Ok(self.with(|s| s.messages.values().cloned().collect())))
    }

    fn last_message_id(&self) -> BoxFuture<'_, StoreResult<u64>> {
        ready(Ok(self.with(|s| s.last_message_id)))
    }

    fn health_history(
        &self,
        agent: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<HealthRecord>>> {
        let agent = agent.to_string();
        ready(Ok(self.with(|s| {
            s.health
                .iter()
                .rev()
                .filter(|h| h.agent == agent)
                .take(limit)
                .cloned()
                .collect()
        })))
    }

    fn audit_log(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<AuditEntry>>> {
        ready(Ok(self.with(|s| {
            s.audit.iter().rev().take(limit).cloned().collect()
        })))
    }

    fn meta(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        ready(Ok(self.with(|s| s.meta.get(key).cloned())))
    }

    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'_, StoreResult<Lease>> {
        let key = Lease::key(name);
        ready(Ok(self.with(|s| {
            let current = s
                .meta
                .get(&key)
                .and_then(|v| serde_json::from_str::<Lease>(v).ok());
            let next = Lease::next(current, holder, now_ms, until_ms);
            if let Ok(value) = serde_json::to_string(&next) {
                s.meta.insert(key, value);
            }
            next
        })))
    }

    fn meta_prefix(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<(String, String)>>> {
        let prefix = prefix.to_string();
        ready(Ok(self.with(|s| {
            s.meta
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })))
    }

    fn executions(
        &self,
        workflow: Option<&str>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredExecution>>> {
        let workflow = workflow.map(str::to_string);
        ready(Ok(self.with(|s| {
            s.executions
                .iter()
                .filter(|e| workflow.as_ref().is_none_or(|w| &e.workflow == w))
                .cloned()
                .collect()
        })))
    }

    fn state_write(&self, write: StateWrite) -> BoxFuture<'_, StoreResult<StateOutcome>> {
        ready(Ok(self.with(|s| {
            let scope = s.scopes.entry(write.scope.clone()).or_default();
            scope.stats.scope = write.scope.clone();
            scope.write(&write)
        })))
    }

    fn state_get(&self, scope: &str, key: &str) -> BoxFuture<'_, StoreResult<Option<StateEntry>>> {
        ready(Ok(self.with(|s| {
            s.scopes
                .get(scope)
                .and_then(|sc| sc.entries.get(key).cloned())
        })))
    }

    fn state_list(
        &self,
        scope: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StateEntry>>> {
        ready(Ok(self.with(|s| {
            s.scopes
                .get(scope)
                .map(|sc| {
                    sc.entries
                        .values()
                        .filter(|e| e.key.as_str() > after && e.key.starts_with(prefix))
                        .take(limit)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        })))
    }

    fn state_changes(
        &self,
        scope: &str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<StateLog>> {
        ready(Ok(self.with(|s| {
            let Some(sc) = s.scopes.get(scope) else {
                return StateLog::default();
            };
            StateLog {
                changes: sc
                    .log
                    .iter()
                    .filter(|c| c.version > after)
                    .take(limit)
                    .cloned()
                    .collect(),
                head: sc.stats.version,
                compacted: sc.stats.compacted,
            }
        })))
    }

    fn state_scopes(&self) -> BoxFuture<'_, StoreResult<Vec<ScopeStats>>> {
        ready(Ok(self.with(|s| {
            s.scopes.values().map(|sc| sc.stats.clone()).collect()
        })))
    }
}
