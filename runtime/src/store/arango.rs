//! The ArangoDB store, for several reconciler replicas sharing one state: a
//! thin client of ArangoDB's HTTP API on the project's own reqwest and
//! rustls (arangors would bring a second TLS stack, OpenSSL; see the README).
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
//!
//! An apply is a compare-and-swap on the `applied` document's `_rev`
//! (`If-Match`; a `412` means someone else applied first). A [`Store::write`]
//! batch is one stream transaction; batches waiting while one commits are
//! committed together (group commit), like the embedded store.
//!
//! The AQL this store sends is in [`queries`]; nothing else is queried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{
    Applied, AuditEntry, BoxFuture, HealthRecord, Op, Store, StoreError, StoreResult, StoredMessage,
};
use crate::store::sqlite::HEALTH_HISTORY_PER_AGENT;

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
}

/// The collections the store uses.
const COLLECTIONS: [&str; 5] = ["state", "messages", "health", "audit", "meta"];
/// The collections a write batch changes.
const WRITE_COLLECTIONS: [&str; 5] = ["messages", "health", "audit", "meta", "state"];
/// Documents per cursor batch.
const CURSOR_BATCH: usize = 1000;
/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// ArangoDB's error numbers the store tells apart.
const ERROR_DOCUMENT_NOT_FOUND: i64 = 1202;
const ERROR_DUPLICATE_NAME: i64 = 1207;
const ERROR_DATABASE_NOT_FOUND: i64 = 1228;

/// Where the ArangoDB store lives.
#[derive(Clone, PartialEq, Eq)]
pub struct ArangoConfig {
    /// The server, e.g. `http://127.0.0.1:8529` (no trailing slash).
    pub endpoint: String,
    /// The database (created when missing, if the user may).
    pub database: String,
    /// User for basic authentication.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for ArangoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArangoConfig")
            .field("endpoint", &self.endpoint)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl ArangoConfig {
    /// Reads `http[s]://[user[:password]@]host:port[/database]`. The user
    /// defaults to `root`, the password to empty, the database to `cortex`.
    pub fn parse(url: &str) -> Result<ArangoConfig, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "`{url}`: an ArangoDB URL starts with http:// or https://"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("`{url}` names no host"))?;
        let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| format!("`{url}`: bad percent-encoding in the user"))
        };
        let username = match parsed.username() {
            "" => "root".to_string(),
            user => decode(user)?,
        };
        let password = decode(parsed.password().unwrap_or(""))?;
        let database = parsed.path().trim_matches('/');
        if database.contains('/') {
            return Err(format!("`{url}`: the path names the database, one segment"));
        }
        Ok(ArangoConfig {
            endpoint: format!("{}://{host}{port}", parsed.scheme()),
            database: if database.is_empty() {
                "cortex".to_string()
            } else {
                database.to_string()
            },
            username,
            password,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An ArangoDB error response.
#[derive(Debug, Deserialize)]
struct ArangoError {
    #[serde(rename = "errorNum", default)]
    number: i64,
    #[serde(rename = "errorMessage", default)]
    message: String,
}

/// A failed request: the HTTP status and what ArangoDB said.
#[derive(Debug)]
struct Failure {
    status: Option<StatusCode>,
    number: i64,
    message: String,
}

impl Failure {
    fn into_store_error(self, what: &str) -> StoreError {
        StoreError::Backend(format!("ArangoDB {what}: {}", self.describe()))
    }

    fn describe(&self) -> String {
        match self.status {
            Some(status) => format!("{status} {} (error {})", self.message, self.number),
            None => self.message.clone(),
        }
    }
}

/// The HTTP side: one database on one server.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    config: ArangoConfig,
}

impl Client {
    fn url(&self, database: &str, path: &str) -> String {
        format!("{}/_db/{database}{path}", self.config.endpoint)
    }

    /// Sends one request to the store's database; `Ok` with the parsed body
    /// on 2xx, `Err` with ArangoDB's error otherwise.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, Failure> {
        self.call_in(&self.config.database, method, path, body, headers)
            .await
    }

    async fn call_in(
        &self,
        database: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, Failure> {
        let mut request = self
            .http
            .request(method, self.url(database, path))
            .basic_auth(&self.config.username, Some(&self.config.password))
            .timeout(REQUEST_TIMEOUT);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| Failure {
            status: None,
            number: 0,
            message: format!("cannot reach {}: {e}", self.config.endpoint),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Failure {
            status: Some(status),
            number: 0,
            message: format!("reading the response: {e}"),
        })?;
        if status.is_success() {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let error: ArangoError = serde_json::from_str(&text).unwrap_or(ArangoError {
            number: 0,
            message: text.chars().take(200).collect(),
        });
        Err(Failure {
            status: Some(status),
            number: error.number,
            message: error.message,
        })
    }

    /// Runs `query` and collects every result, batch by batch.
    async fn query(&self, query: &str, bind: Value) -> Result<Vec<Value>, Failure> {
        let first = self
            .call(
                Method::POST,
                "/_api/cursor",
                Some(&json!({ "query": query, "bindVars": bind, "batchSize": CURSOR_BATCH })),
                &[],
            )
            .await?;
        let mut page = first;
        let mut out = Vec::new();
        loop {
            if let Some(Value::Array(items)) = page.get_mut("result").map(Value::take) {
                out.extend(items);
            }
            let more = page.get("hasMore").and_then(Value::as_bool) == Some(true);
            let id = page.get("id").and_then(Value::as_str).map(str::to_string);
            match (more, id) {
                (true, Some(id)) => {
                    page = self
                        .call(Method::PUT, &format!("/_api/cursor/{id}"), None, &[])
                        .await?;
                }
                _ => return Ok(out),
            }
        }
    }

    /// Creates the database (when missing), the collections and indexes.
    async fn prepare(&self) -> Result<(), Failure> {
        match self.create_collections().await {
            Err(f) if f.number == ERROR_DATABASE_NOT_FOUND => {
                let body = json!({ "name": self.config.database });
                let created = self
                    .call_in("_system", Method::POST, "/_api/database", Some(&body), &[])
                    .await;
                existing_is_fine(created)?;
                self.create_collections().await
            }
            other => other,
        }
    }

    async fn create_collections(&self) -> Result<(), Failure> {
        for name in COLLECTIONS {
            let body = json!({ "name": name, "waitForSync": true });
            let created = self
                .call(Method::POST, "/_api/collection", Some(&body), &[])
                .await;
            existing_is_fine(created)?;
        }
        for (collection, fields) in [
            ("messages", vec!["id"]),
            ("health", vec!["agent", "seq"]),
            ("audit", vec!["seq"]),
        ] {
            // Creating an index that exists returns it: idempotent.
            self.call(
                Method::POST,
                &format!("/_api/index?collection={collection}"),
                Some(&json!({ "type": "persistent", "fields": fields })),
                &[],
            )
            .await?;
        }
        Ok(())
    }

    async fn document(&self, collection: &str, key: &str) -> Result<Option<Value>, Failure> {
        match self
            .call(
                Method::GET,
                &format!("/_api/document/{collection}/{key}"),
                None,
                &[],
            )
            .await
        {
            Ok(doc) => Ok(Some(doc)),
            Err(f) if f.number == ERROR_DOCUMENT_NOT_FOUND => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// One multi-document request inside transaction `trx`; per-document
    /// errors fail it unless they are "not found" and `missing_ok`.
    async fn documents(
        &self,
        trx: &str,
        method: Method,
        path: &str,
        body: Value,
        missing_ok: bool,
    ) -> Result<(), Failure> {
        let answer = self
            .call(method, path, Some(&body), &[("x-arango-trx-id", trx)])
            .await?;
        for item in answer.as_array().into_iter().flatten() {
            if item.get("error").and_then(Value::as_bool) == Some(true) {
                let number = item.get("errorNum").and_then(Value::as_i64).unwrap_or(0);
                if missing_ok && number == ERROR_DOCUMENT_NOT_FOUND {
                    continue;
                }
                return Err(Failure {
                    status: None,
                    number,
                    message: item
                        .get("errorMessage")
                        .and_then(Value::as_str)
                        .unwrap_or("document error")
                        .to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A create call's result, where "it exists already" is success.
fn existing_is_fine(created: Result<Value, Failure>) -> Result<(), Failure> {
    match created {
        Err(f) if f.number != ERROR_DUPLICATE_NAME => Err(f),
        _ => Ok(()),
    }
}

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

/// The task that commits write batches, several at a time.
struct Writer {
    client: Arc<Client>,
    /// The `last_message_id` this writer knows is stored.
    last_id: Option<u64>,
    /// Orders health and audit records: microseconds since the epoch, made
    /// strictly increasing.
    seq: AtomicU64,
}

impl Writer {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<WriteJob>) {
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

    fn next_seq(&self) -> u64 {
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
    async fn commit(&mut self, ops: &[&Op]) -> Result<(), String> {
        let client = self.client.clone();
        let begun = client
            .call(
                Method::POST,
                "/_api/transaction/begin",
                Some(&json!({
                    "collections": { "write": WRITE_COLLECTIONS },
                    "waitForSync": true,
                })),
                &[],
            )
            .await
            .map_err(|f| format!("ArangoDB: beginning a transaction: {}", f.describe()))?;
        let trx = begun
            .pointer("/result/id")
            .and_then(Value::as_str)
            .ok_or("ArangoDB: a transaction began without an id")?
            .to_string();
        let written = self.write_all(&trx, ops).await;
        match written {
            Ok(new_last) => {
                client
                    .call(Method::PUT, &format!("/_api/transaction/{trx}"), None, &[])
                    .await
                    .map_err(|f| format!("ArangoDB: committing: {}", f.describe()))?;
                if new_last.is_some() {
                    self.last_id = new_last;
                }
                Ok(())
            }
            Err(f) => {
                // Nothing of the batch stays: abort (best effort; an
                // unfinished transaction also times out on the server).
                let _ = client
                    .call(
                        Method::DELETE,
                        &format!("/_api/transaction/{trx}"),
                        None,
                        &[],
                    )
                    .await;
                Err(format!("ArangoDB: writing: {}", f.describe()))
            }
        }
    }

    /// Sends every op, consecutive ops sent the same way as one request;
    /// returns the new `last_message_id` when it grew.
    async fn write_all(&mut self, trx: &str, ops: &[&Op]) -> Result<Option<u64>, Failure> {
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
    fn document_of(&self, op: &Op) -> Value {
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
        }
    }

    /// Keeps the newest records per agent; a failure here loses nothing
    /// (the records stay until the next trim), so it is only logged.
    async fn trim_health(&self, ops: &[&Op]) {
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
fn route(op: &Op) -> (Method, &'static str, bool) {
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
    }
}

fn message_document(m: &StoredMessage) -> Value {
    let mut doc = json!(m);
    doc["_key"] = Value::String(m.id.to_string());
    doc
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
            let doc = json!({ "_key": "applied", "revision": revision, "applied": stored });
            let written = match current
                .as_ref()
                .and_then(|d| d.get("_rev"))
                .and_then(Value::as_str)
            {
                // Replace only the revision read above.
                Some(rev) => {
                    client
                        .call(
                            Method::PUT,
                            "/_api/document/state/applied",
                            Some(&doc),
                            &[("If-Match", rev)],
                        )
                        .await
                }
                // The first apply: an insert fails if another came first.
                None => {
                    client
                        .call(Method::POST, "/_api/document/state", Some(&doc), &[])
                        .await
                }
            };
            match written {
                Ok(_) => Ok(revision),
                Err(f)
                    if f.status == Some(StatusCode::PRECONDITION_FAILED)
                        || f.status == Some(StatusCode::CONFLICT) =>
                {
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
    fn a_url_names_server_user_and_database() {
        let config = ArangoConfig::parse("https://ops:p%40ss@db.example:8529/team").unwrap();
        assert_eq!(config.endpoint, "https://db.example:8529");
        assert_eq!(config.username, "ops");
        assert_eq!(config.password, "p@ss");
        assert_eq!(config.database, "team");
        let defaults = ArangoConfig::parse("http://127.0.0.1:8529").unwrap();
        assert_eq!(defaults.username, "root");
        assert_eq!(defaults.password, "");
        assert_eq!(defaults.database, "cortex");
        assert!(!format!("{config:?}").contains("p@ss"));
    }

    #[test]
    fn a_bad_url_is_refused_with_the_reason() {
        assert!(
            ArangoConfig::parse("ftp://x")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            ArangoConfig::parse("http://h:1/a/b")
                .unwrap_err()
                .contains("one segment")
        );
        assert!(
            ArangoConfig::parse("not a url")
                .unwrap_err()
                .contains("not a URL")
        );
    }

    #[test]
    fn meta_names_become_document_keys() {
        assert_eq!(meta_key("runtime.url"), "runtime.url");
        assert_eq!(meta_key("a/b"), "%612f62");
        assert_ne!(meta_key("a/b"), meta_key("%612f62"));
    }
}
