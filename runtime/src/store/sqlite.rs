//! The embedded store: one SQLite file (WAL journal, `synchronous=FULL`, so
//! a commit survives a power cut), written by one thread, one transaction
//! per write in the order they were made (the broker's journal batches:
//! [`crate::batch`]), read through a second connection. Other processes
//! (the CLI's `plan` and `apply`) open the same file safely.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::state::{Decision, keys_delta};
use super::{
    Applied, AuditEntry, BoxFuture, HealthRecord, Lease, Op, ScopeStats, StateChange, StateEntry,
    StateLog, StateOutcome, StateWrite, Store, StoreError, StoreResult, StoredExecution,
    StoredMessage, StoredTask,
};

/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT_MS: u64 = 10_000;
/// Health records kept per agent (older ones are dropped on write).
pub const HEALTH_HISTORY_PER_AGENT: usize = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS applied (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    inbox TEXT NOT NULL,
    topic TEXT,
    key TEXT,
    sender TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    published_ms INTEGER NOT NULL,
    request INTEGER NOT NULL,
    in_reply_to INTEGER,
    dead TEXT
);
CREATE TABLE IF NOT EXISTS health (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    replica INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_by_agent ON health (agent, seq);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workflow TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_workflow ON executions (workflow, seq);
CREATE TABLE IF NOT EXISTS execution_tasks (
    execution TEXT NOT NULL,
    task TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (execution, task)
);
CREATE TABLE IF NOT EXISTS state_scopes (
    scope TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    keys INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state_entries (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS state_changes (
    scope TEXT NOT NULL,
    version INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    at_ms INTEGER NOT NULL,
    by TEXT NOT NULL,
    PRIMARY KEY (scope, version)
);
";

/// Version of the file's layout, kept in `PRAGMA user_version`.
const LAYOUT_VERSION: i64 = 1;

enum Job {
    Write(Vec<Op>, oneshot::Sender<StoreResult<()>>),
    Apply(u64, Box<Applied>, oneshot::Sender<StoreResult<u64>>),
    Lease(LeaseAsk, oneshot::Sender<StoreResult<Lease>>),
    State(Box<StateJob>),
}

/// A [`Store::state_write`] call, for the writer.
struct StateJob {
    write: StateWrite,
    done: oneshot::Sender<StoreResult<StateOutcome>>,
}

/// State writes waiting together are committed in one transaction (one
/// fsync), each decided in turn: group commit, as etcd batches its raft
/// entries.
const STATE_BATCH: usize = 256;

/// A [`Store::take_lease`] call, for the writer.
struct LeaseAsk {
    name: String,
    holder: String,
    now_ms: u64,
    until_ms: u64,
}

/// The embedded SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
    reader: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn connect(path: &Path) -> StoreResult<Connection> {
    let open = |e: &dyn std::fmt::Display| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let conn = Connection::open(path).map_err(|e| open(&e))?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(|e| open(&e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| open(&e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| open(&e))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating it and its directory when missing) the store at `path`.
    /// A file that is there but is not a cortex store (an empty file
    /// included) is refused, never taken over. A missing directory is made
    /// owner-only (0700), and every file of the store (the database, its WAL
    /// and shared-memory files) is 0600 from its creation: they hold tokens.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let open_err = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_files::create_dir(dir).map_err(|e| open_err(e.to_string()))?;
        }
        if check_existing(path).map_err(&open_err)? {
            check_layout(path).map_err(&open_err)?;
        } else {
            create_store(path).map_err(&open_err)?;
        }
        crate::private_files::restrict(path);
        let writer = connect(path)?;
        let version: i64 = writer
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if version > LAYOUT_VERSION {
            return Err(open_err(format!(
                "written by a newer cortex (layout {version}, this one reads {LAYOUT_VERSION})"
            )));
        }
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| open_err(e.to_string()))?;
        writer
            .pragma_update(None, "user_version", LAYOUT_VERSION)
            .map_err(|e| open_err(e.to_string()))?;
        for companion in ["-wal", "-shm"] {
            crate::private_files::restrict(&with_suffix(path, companion));
        }
        let reader = connect(path)?;
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("cortex-store-writer".into())
            .spawn(move || run_writer(writer, rx))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after the jobs already sent, and waits for it. Later
    /// calls fail with [`StoreError::Closed`]. Dropping the store does the same.
    pub fn close(&self) {
        drop(self.jobs.lock().map(|mut j| j.take()));
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }

    fn send(&self, job: Job) -> StoreResult<()> {
        let guard = self.jobs.lock().map_err(|_| StoreError::Closed)?;
        guard
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'_, StoreResult<T>> {
        let reader = self.reader.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let conn = reader.lock().map_err(|_| StoreError::Closed)?;
                f(&conn).map_err(backend)
            })
            .await
            .map_err(backend)?
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// What an existing file that is not a cortex store is told.
const NOT_A_STORE: &str = "this file is not a cortex state store (move it away, or point targets.embedded.state elsewhere)";

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Whether a store file is already at `path`; an error when something is
/// there that cannot be one (an empty file, another kind of file).
fn check_existing(path: &Path) -> Result<bool, String> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.to_string()),
    };
    let mut magic = [0u8; 16];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == SQLITE_MAGIC => Ok(true),
        Ok(()) => Err(NOT_A_STORE.to_string()),
        Err(_) => Err(format!("the file is empty or truncated: {NOT_A_STORE}")),
    }
}

/// Whether the SQLite file at `path` is a cortex store (it carries a layout
/// version); read without changing anything in it, so another program's
/// database is refused untouched.
fn check_layout(path: &Path) -> Result<(), String> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(|e| e.to_string())?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version == 0 {
        // An SQLite file, but not one cortex made.
        return Err(NOT_A_STORE.to_string());
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`state.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates a new store at `path` atomically: the schema is written to a
/// temporary file (owner-only from its creation) that is then linked into
/// place, so a crash never leaves an empty or half-made file where the store
/// belongs. When another process made the store first, theirs is kept.
fn create_store(path: &Path) -> Result<(), String> {
    let fresh = with_suffix(path, &format!(".new-{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    let made = (|| -> Result<(), String> {
        crate::private_files::options()
            .write(true)
            .create_new(true)
            .open(&fresh)
            .map_err(|e| e.to_string())?;
        let conn = Connection::open(&fresh).map_err(|e| e.to_string())?;
        conn.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
        conn.pragma_update(None, "user_version", LAYOUT_VERSION)
            .map_err(|e| e.to_string())?;
        conn.close().map_err(|(_, e)| e.to_string())?;
        std::fs::File::open(&fresh)
            .and_then(|f| f.sync_all())
            .map_err(|e| e.to_string())?;
        match std::fs::hard_link(&fresh, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                check_existing(path).map(|_| ())
            }
            Err(e) => Err(e.to_string()),
        }
    })();
    let _ = std::fs::remove_file(&fresh);
    made
}

fn run_writer(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut pending: Option<Job> = None;
    loop {
        let job = match pending.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        match job {
            Job::Write(ops, done) => {
                let _ = done
                    .send(commit(&mut conn, &ops).map_err(|e| StoreError::Backend(e.to_string())));
            }
            Job::Apply(expected, next, done) => {
                let _ = done.send(apply(&mut conn, expected, &next));
            }
            Job::Lease(ask, done) => {
                let _ = done.send(take_lease(&mut conn, &ask));
            }
            Job::State(first) => {
                let mut batch = vec![*first];
                while batch.len() < STATE_BATCH {
                    match jobs.try_recv() {
                        Ok(Job::State(next)) => batch.push(*next),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let writes: Vec<&StateWrite> = batch.iter().map(|j| &j.write).collect();
                match commit_state(&mut conn, &writes) {
                    Ok(outcomes) => {
                        for (job, outcome) in batch.into_iter().zip(outcomes) {
                            let _ = job.done.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        for job in batch {
                            let _ = job.done.send(Err(backend(&e)));
                        }
                    }
                }
            }
        }
    }
}

fn entry_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<StateEntry> {
    let value: String = row.get(1)?;
    Ok(StateEntry {
        key: row.get(0)?,
        value: serde_json::from_str(&value).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        version: row.get::<_, i64>(2)? as u64,
        updated_ms: row.get::<_, i64>(3)? as u64,
        updated_by: row.get(4)?,
    })
}

fn scope_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ScopeStats> {
    Ok(ScopeStats {
        scope: row.get(0)?,
        version: row.get::<_, i64>(1)? as u64,
        keys: row.get::<_, i64>(2)? as u64,
        compacted: row.get::<_, i64>(3)? as u64,
    })
}

const ENTRY_COLUMNS: &str = "key, value, version, updated_ms, updated_by";

/// Decides and applies a batch of state writes in one transaction, in
/// order; answers each.
fn commit_state(
    conn: &mut Connection,
    writes: &[&StateWrite],
) -> rusqlite::Result<Vec<StateOutcome>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(writes.len());
    {
        let mut scope_row = tx.prepare_cached(
            "SELECT scope, version, keys, compacted FROM state_scopes WHERE scope = ?1",
        )?;
        let mut entry_row = tx.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM state_entries WHERE scope = ?1 AND key = ?2"
        ))?;
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO state_entries (scope, key, value, version, updated_ms, updated_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut delete =
            tx.prepare_cached("DELETE FROM state_entries WHERE scope = ?1 AND key = ?2")?;
        let mut change = tx.prepare_cached(
            "INSERT INTO state_changes (scope, version, key, value, at_ms, by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut compact =
            tx.prepare_cached("DELETE FROM state_changes WHERE scope = ?1 AND version <= ?2")?;
        let mut set_scope = tx.prepare_cached(
            "INSERT OR REPLACE INTO state_scopes (scope, version, keys, compacted) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for write in writes {
            let stats = scope_row
                .query_row(params![write.scope], scope_of)
                .optional()?
                .unwrap_or_else(|| ScopeStats {
                    scope: write.scope.clone(),
                    ..ScopeStats::default()
                });
            let current = entry_row
                .query_row(params![write.scope, write.key], entry_of)
                .optional()?;
            if let Decision::Refuse(outcome) = write.decide(current.as_ref()) {
                outcomes.push(outcome);
                continue;
            }
            let version = stats.version + 1;
            let next = stats.after(
                version,
                keys_delta(current.is_some(), write),
                write.compacted_at(version),
            );
            let value = write.value.as_ref().map(to_json).transpose()?;
            match &value {
                Some(text) => {
                    put.execute(params![
                        write.scope,
                        write.key,
                        text,
                        version as i64,
                        write.at_ms as i64,
                        write.by
                    ])?;
                }
                None => {
                    delete.execute(params![write.scope, write.key])?;
                }
            }
            change.execute(params![
                write.scope,
                version as i64,
                write.key,
                value,
                write.at_ms as i64,
                write.by
            ])?;
            if next.compacted > stats.compacted {
                compact.execute(params![write.scope, next.compacted as i64])?;
            }
            set_scope.execute(params![
                write.scope,
                next.version as i64,
                next.keys as i64,
                next.compacted as i64
            ])?;
            outcomes.push(StateOutcome::Written { version });
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Writes `ops` in one transaction.
fn commit(conn: &mut Connection, ops: &[Op]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut max_id = 0u64;
    let mut agents_with_health = std::collections::BTreeSet::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO messages (id, inbox, topic, key, sender, payload, attempts, published_ms, request, in_reply_to, dead) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut remove = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
        let mut attempted = tx.prepare_cached("UPDATE messages SET attempts = ?2 WHERE id = ?1")?;
        let mut dead =
            tx.prepare_cached("UPDATE messages SET dead = ?2, attempts = ?3 WHERE id = ?1")?;
        let mut health = tx.prepare_cached(
            "INSERT INTO health (agent, replica, at_ms, state, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut audit = tx.prepare_cached(
            "INSERT INTO audit (at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut set_meta =
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
        let mut unset_meta = tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?;
        let mut new_execution = tx.prepare_cached(
            "INSERT OR IGNORE INTO executions (id, workflow, body) VALUES (?1, ?2, ?3)",
        )?;
        let mut execution_state = tx.prepare_cached(
            "UPDATE executions SET body = json_set(body, '$.state', ?2, '$.finished_ms', ?3) WHERE id = ?1",
        )?;
        let mut task = tx.prepare_cached(
            "INSERT OR REPLACE INTO execution_tasks (execution, task, body) VALUES (?1, ?2, ?3)",
        )?;
        for op in ops {
            match op {
                Op::Enqueue(m) => {
                    max_id = max_id.max(m.id);
                    insert.execute(params![
                        m.id as i64,
                        m.inbox,
                        m.topic,
                        m.key,
                        m.sender,
                        m.payload,
                        m.attempts,
                        m.published_ms as i64,
                        m.request,
                        m.in_reply_to.map(|i| i as i64),
                        m.dead,
                    ])?;
                }
                Op::Remove(id) => {
                    remove.execute(params![*id as i64])?;
                }
                Op::Attempted { id, attempts } => {
                    attempted.execute(params![*id as i64, attempts])?;
                }
                Op::Dead {
                    id,
                    reason,
                    attempts,
                } => {
                    dead.execute(params![*id as i64, reason, attempts])?;
                }
                Op::Health(h) => {
                    agents_with_health.insert(h.agent.clone());
                    health.execute(params![
                        h.agent,
                        h.replica,
                        h.at_ms as i64,
                        h.state,
                        h.detail
                    ])?;
                }
                Op::Audit(a) => {
                    audit.execute(params![a.at_ms as i64, a.actor, a.action, a.detail])?;
                }
                Op::Meta { key, value } => match value {
                    Some(v) => {
                        set_meta.execute(params![key, v])?;
                    }
                    None => {
                        unset_meta.execute(params![key])?;
                    }
                },
                Op::Execution(e) => {
                    let header = StoredExecution {
                        tasks: Default::default(),
                        ..(**e).clone()
                    };
                    new_execution.execute(params![e.id, e.workflow, to_json(&header)?])?;
                }
                Op::ExecutionState {
                    id,
                    state,
                    finished_ms,
                } => {
                    execution_state.execute(params![id, state, finished_ms.map(|m| m as i64)])?;
                }
                Op::Task {
                    execution,
                    task: name,
                    record,
                } => {
                    task.execute(params![execution, name, to_json(record)?])?;
                }
            }
        }
    }
    if max_id > 0 {
        // Cached like the statements above: most commits run it.
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('last_message_id', ?1)
             ON CONFLICT(key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        )?
        .execute(params![max_id.to_string()])?;
    }
    for agent in agents_with_health {
        tx.execute(
            "DELETE FROM health WHERE agent = ?1 AND seq <= (SELECT seq FROM health WHERE agent = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            params![agent, HEALTH_HISTORY_PER_AGENT as i64],
        )?;
    }
    tx.commit()
}

fn current_revision(conn: &Connection) -> rusqlite::Result<u64> {
    Ok(conn
        .query_row("SELECT revision FROM applied WHERE id = 1", [], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .unwrap_or(0) as u64)
}

fn apply(conn: &mut Connection, expected: u64, next: &Applied) -> StoreResult<u64> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let found = current_revision(&tx).map_err(backend)?;
    if found != expected {
        return Err(StoreError::Stale { expected, found });
    }
    let revision = expected + 1;
    let mut stored = next.clone();
    stored.revision = revision;
    let body = serde_json::to_string(&stored).map_err(backend)?;
    tx.execute(
        "INSERT OR REPLACE INTO applied (id, revision, body) VALUES (1, ?1, ?2)",
        params![revision as i64, body],
    )
    .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(revision)
}

/// Reads and writes the lease in one immediate transaction: the write lock
/// is taken first, so two processes asking at once are served one after the
/// other.
fn take_lease(conn: &mut Connection, ask: &LeaseAsk) -> StoreResult<Lease> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let key = Lease::key(&ask.name);
    let current: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()
        .map_err(backend)?;
    // An unreadable lease (written by hand) is taken over like an expired one.
    let current = current.and_then(|v| serde_json::from_str::<Lease>(&v).ok());
    let next = Lease::next(current.clone(), &ask.holder, ask.now_ms, ask.until_ms);
    if current.as_ref() != Some(&next) {
        let value = serde_json::to_string(&next).map_err(backend)?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    Ok(next)
}

fn message_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: row.get::<_, i64>(0)? as u64,
        inbox: row.get(1)?,
        topic: row.get(2)?,
        key: row.get(3)?,
        sender: row.get(4)?,
        payload: row.get(5)?,
        attempts: row.get(6)?,
        published_ms: row.get::<_, i64>(7)? as u64,
        request: row.get(8)?,
        in_reply_to: row.get::<_, Option<i64>>(9)?.map(|i| i as u64),
        dead: row.get(10)?,
    })
}

impl Store for SqliteStore {
    fn applied(&self) -> BoxFuture<'_, StoreResult<Option<Applied>>> {
        let reader = self.reader.clone();
        Box::pin(async move {
            let body = tokio::task::spawn_blocking(move || {
                let conn = reader.lock().map_err(|_| StoreError::Closed)?;
                conn.query_row("SELECT body FROM applied WHERE id = 1", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .map_err(backend)
            })
            .await
            .map_err(backend)??;
            body.map(|b| serde_json::from_str(&b).map_err(backend))
                .transpose()
        })
    }

    fn revision(&self) -> BoxFuture<'_, StoreResult<u64>> {
        self.read(current_revision)
    }

    fn apply(&self, expected: u64, next: Applied) -> BoxFuture<'_, StoreResult<u64>> {
        let (done, wait) = oneshot::channel();
        let sent = self.send(Job::Apply(expected, Box::new(next), done));
        Box::pin(async move {
            sent?;
            wait.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, StoreResult<()>> {
        let (done, wait) = oneshot::channel();
        let sent = self.send(Job::Write(ops, done));
        Box::pin(async move {
            sent?;
            wait.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn messages(&self) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, inbox, topic, key, sender, payload, attempts, published_ms, request, in_reply_to, dead FROM messages ORDER BY id",
            )?;
            stmt.query_map([], message_of)?.collect()
        })
    }

    fn last_message_id(&self) -> BoxFuture<'_, StoreResult<u64>> {
        self.read(|conn| {
            let recorded: Option<String> = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'last_message_id'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let stored: i64 =
                conn.query_row("SELECT coalesce(max(id), 0) FROM messages", [], |r| {
                    r.get(0)
                })?;
            Ok(recorded
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                .max(stored as u64))
        })
    }

    fn health_history(
        &self,
        agent: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<HealthRecord>>> {
        let agent = agent.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT agent, replica, at_ms, state, detail FROM health WHERE agent = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            stmt.query_map(params![agent, limit as i64], |r| {
                Ok(HealthRecord {
                    agent: r.get(0)?,
                    replica: r.get(1)?,
                    at_ms: r.get::<_, i64>(2)? as u64,
                    state: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    fn audit_log(&self, limit: usize) -> BoxFuture<'_, StoreResult<Vec<AuditEntry>>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT at_ms, actor, action, detail FROM audit ORDER BY seq DESC LIMIT ?1",
            )?;
            stmt.query_map(params![limit as i64], |r| {
                Ok(AuditEntry {
                    at_ms: r.get::<_, i64>(0)? as u64,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    fn meta(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let key = key.to_string();
        self.read(move |conn| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'_, StoreResult<Lease>> {
        let ask = LeaseAsk {
            name: name.to_string(),
            holder: holder.to_string(),
            now_ms,
            until_ms,
        };
        let (done, wait) = oneshot::channel();
        let sent = self.send(Job::Lease(ask, done));
        Box::pin(async move {
            sent?;
            wait.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn state_write(&self, write: StateWrite) -> BoxFuture<'_, StoreResult<StateOutcome>> {
        let (done, wait) = oneshot::channel();
        let sent = self.send(Job::State(Box::new(StateJob { write, done })));
        Box::pin(async move {
            sent?;
            wait.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn state_get(&self, scope: &str, key: &str) -> BoxFuture<'_, StoreResult<Option<StateEntry>>> {
        let (scope, key) = (scope.to_string(), key.to_string());
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM state_entries WHERE scope = ?1 AND key = ?2"
            ))?
            .query_row(params![scope, key], entry_of)
            .optional()
        })
    }

    fn state_list(
        &self,
        scope: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StateEntry>>> {
        let (scope, prefix, after) = (scope.to_string(), prefix.to_string(), after.to_string());
        self.read(move |conn| {
            let mut rows = conn.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM state_entries WHERE scope = ?1 AND key > ?2 AND key >= ?3 AND substr(key, 1, length(?3)) = ?3 ORDER BY key LIMIT ?4"
            ))?;
            rows.query_map(params![scope, after, prefix, limit as i64], entry_of)?
                .collect()
        })
    }

    fn state_changes(
        &self,
        scope: &str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<StateLog>> {
        let scope = scope.to_string();
        self.read(move |conn| {
            // One read transaction: the head and the changes agree.
            let tx = conn.unchecked_transaction()?;
            let stats = tx
                .prepare_cached("SELECT scope, version, keys, compacted FROM state_scopes WHERE scope = ?1")?
                .query_row(params![scope], scope_of)
                .optional()?
                .unwrap_or_default();
            let changes = tx
                .prepare_cached(
                    "SELECT version, key, value, at_ms, by FROM state_changes WHERE scope = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
                )?
                .query_map(params![scope, i64::try_from(after).unwrap_or(i64::MAX), limit as i64], |row| {
                    let value: Option<String> = row.get(2)?;
                    Ok(StateChange {
                        version: row.get::<_, i64>(0)? as u64,
                        key: row.get(1)?,
                        value: value
                            .map(|v| serde_json::from_str(&v))
                            .transpose()
                            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e)))?,
                        at_ms: row.get::<_, i64>(3)? as u64,
                        by: row.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.finish()?;
            Ok(StateLog {
                changes,
                head: stats.version,
                compacted: stats.compacted,
            })
        })
    }

    fn state_scopes(&self) -> BoxFuture<'_, StoreResult<Vec<ScopeStats>>> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT scope, version, keys, compacted FROM state_scopes ORDER BY scope",
            )?
            .query_map([], scope_of)?
            .collect()
        })
    }

    fn meta_prefix(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<(String, String)>>> {
        let prefix = prefix.to_string();
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            )?;
            let rows = select.query_map(params![prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn executions(
        &self,
        workflow: Option<&str>,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredExecution>>> {
        let workflow = workflow.map(str::to_string);
        self.read(move |conn| {
            let bad = |e: serde_json::Error| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
            };
            let mut headers = conn.prepare_cached(
                "SELECT body FROM executions WHERE ?1 IS NULL OR workflow = ?1 ORDER BY seq",
            )?;
            let mut out: Vec<StoredExecution> = headers
                .query_map(params![workflow], |r| r.get::<_, String>(0))?
                .map(|body| serde_json::from_str(&body?).map_err(bad))
                .collect::<rusqlite::Result<_>>()?;
            let mut tasks = conn.prepare_cached(
                "SELECT t.execution, t.task, t.body FROM execution_tasks t JOIN executions e ON e.id = t.execution WHERE ?1 IS NULL OR e.workflow = ?1",
            )?;
            let rows = tasks.query_map(params![workflow], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            let mut by_execution: std::collections::HashMap<String, Vec<(String, StoredTask)>> =
                std::collections::HashMap::new();
            for row in rows {
                let (execution, task, body) = row?;
                by_execution
                    .entry(execution)
                    .or_default()
                    .push((task, serde_json::from_str(&body).map_err(bad)?));
            }
            for execution in &mut out {
                execution.tasks = by_execution.remove(&execution.id).unwrap_or_default().into_iter().collect();
            }
            Ok(out)
        })
    }
}
