//! An in-process stand-in for an ArangoDB server, over real HTTP, for the
//! store's tests on machines where ArangoDB cannot run.
//!
//! It speaks the part of ArangoDB's HTTP API the store uses, with the same
//! status codes, error numbers and body shapes: basic authentication,
//! databases and collections (409 / 1207 when they exist), persistent
//! indexes, single and multi-document reads and writes (`overwriteMode`,
//! per-document errors in array answers, `If-Match` → 412), stream
//! transactions (writes buffered until commit, dropped on abort, a commit
//! refused with 409/1200 when another transaction changed one of their
//! documents first) and AQL
//! cursors paged by `batchSize` with bind-parameter checks. It has no AQL
//! engine: it runs the store's own queries (`store::arango::queries`) and
//! answers any other query with an error. What it cannot show (AQL
//! semantics, durability, cluster behaviour) the suite against a real
//! server (`CORTEX_TEST_ARANGO_URL`) covers.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cortex_runtime::store::arango::queries;
use serde_json::{Value, json};

type Docs = BTreeMap<String, Value>;

#[derive(Default)]
struct Database {
    collections: BTreeMap<String, Docs>,
}

struct Transaction {
    database: String,
    write: BTreeSet<String>,
    /// Changes made in the transaction: `None` is a removal.
    overlay: BTreeMap<(String, String), Option<Value>>,
    /// The committed `_rev` of each document it changed, when it first
    /// changed it: a commit after another transaction changed one of them
    /// fails with a write-write conflict (1200), as ArangoDB's does.
    base: BTreeMap<(String, String), Option<Value>>,
}

#[derive(Default)]
struct Server {
    databases: BTreeMap<String, Database>,
    transactions: HashMap<String, Transaction>,
    cursors: HashMap<String, VecDeque<Value>>,
    next_id: u64,
    /// Document writes left before the next one fails with a 503.
    fail_after: Option<usize>,
    committed: usize,
    aborted: usize,
}

/// A running stand-in.
pub struct FakeArango {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    server: Arc<Mutex<Server>>,
    task: tokio::task::JoinHandle<()>,
}

/// The user and password the stand-in accepts.
/// The user the stand-in accepts.
pub const USER: &str = "root";
/// The password the stand-in accepts.
pub const PASSWORD: &str = "stand-in";

impl FakeArango {
    /// Starts a server with only the `_system` database.
    pub async fn start() -> FakeArango {
        let mut server = Server::default();
        server
            .databases
            .insert("_system".into(), Database::default());
        let server = Arc::new(Mutex::new(server));
        let shared = server.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = shared.clone();
                async move { handle(&shared, method, uri, headers, body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeArango {
            endpoint,
            server,
            task,
        }
    }

    /// The URL the store connects with, for `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "{}/{database}",
            self.endpoint
                .replacen("http://", &format!("http://{USER}:{PASSWORD}@"), 1)
        )
    }

    /// The next `n` document writes succeed, the one after fails with 503.
    pub fn fail_document_writes_after(&self, n: usize) {
        self.server.lock().unwrap().fail_after = Some(n);
    }

    /// Transactions committed and aborted so far.
    pub fn transactions(&self) -> (usize, usize) {
        let s = self.server.lock().unwrap();
        (s.committed, s.aborted)
    }

    /// The committed documents of a collection.
    pub fn documents(&self, database: &str, collection: &str) -> Vec<Value> {
        let s = self.server.lock().unwrap();
        s.databases
            .get(database)
            .and_then(|d| d.collections.get(collection))
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for FakeArango {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, number: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": true,
            "code": status.as_u16(),
            "errorNum": number,
            "errorMessage": message,
        })),
    )
        .into_response()
}

fn ok(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn handle(
    shared: &Mutex<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            11,
            "not authorized to execute this request",
        );
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return error(StatusCode::BAD_REQUEST, 600, "VPackError: invalid JSON"),
        }
    };
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let ["_db", database, "_api", rest @ ..] = segments.as_slice() else {
        return error(StatusCode::NOT_FOUND, 404, "unknown path");
    };
    let mut server = shared.lock().unwrap();
    if !server.databases.contains_key(*database) {
        return error(StatusCode::NOT_FOUND, 1228, "database not found");
    }
    let trx = headers
        .get("x-arango-trx-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match (method, rest) {
        (Method::POST, ["database"]) if *database == "_system" => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            if server.databases.contains_key(&name) {
                return error(StatusCode::CONFLICT, 1207, "duplicate database name");
            }
            server.databases.insert(name, Database::default());
            ok(
                StatusCode::CREATED,
                json!({ "error": false, "result": true }),
            )
        }
        (Method::DELETE, ["database", name]) if *database == "_system" => {
            match server.databases.remove(*name) {
                Some(_) => ok(StatusCode::OK, json!({ "error": false, "result": true })),
                None => error(StatusCode::NOT_FOUND, 1228, "database not found"),
            }
        }
        (Method::POST, ["collection"]) => {
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let db = server.databases.get_mut(*database).unwrap();
            if db.collections.contains_key(&name) {
                return error(StatusCode::CONFLICT, 1207, "duplicate name");
            }
            db.collections.insert(name.clone(), Docs::new());
            ok(StatusCode::OK, json!({ "error": false, "name": name }))
        }
        (Method::POST, ["index"]) => {
            let collection = query_param(&uri, "collection").unwrap_or_default();
            if !server.databases[*database]
                .collections
                .contains_key(collection)
            {
                return error(StatusCode::NOT_FOUND, 1203, "collection or view not found");
            }
            ok(
                StatusCode::CREATED,
                json!({ "error": false, "id": format!("{collection}/1"), "fields": body["fields"] }),
            )
        }
        (Method::POST, ["transaction", "begin"]) => {
            let write: BTreeSet<String> = body["collections"]["write"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let collections = &server.databases[*database].collections;
            if let Some(missing) = write.iter().find(|c| !collections.contains_key(*c)) {
                return error(
                    StatusCode::NOT_FOUND,
                    1203,
                    &format!("collection or view not found: {missing}"),
                );
            }
            server.next_id += 1;
            let id = server.next_id.to_string();
            server.transactions.insert(
                id.clone(),
                Transaction {
                    database: database.to_string(),
                    write,
                    overlay: BTreeMap::new(),
                    base: BTreeMap::new(),
                },
            );
            ok(
                StatusCode::CREATED,
                json!({ "error": false, "result": { "id": id, "status": "running" } }),
            )
        }
        (Method::PUT, ["transaction", id]) => {
            let Some(t) = server.transactions.remove(*id) else {
                return error(StatusCode::NOT_FOUND, 1655, "transaction not found");
            };
            let db = server.databases.get_mut(&t.database).unwrap();
            let moved = t.base.iter().any(|((collection, key), rev)| {
                let now = db.collections[collection]
                    .get(key)
                    .map(|d| d["_rev"].clone());
                &now != rev
            });
            if moved {
                server.aborted += 1;
                return error(
                    StatusCode::CONFLICT,
                    1200,
                    "write-write conflict: a document of the transaction changed since it was written",
                );
            }
            for ((collection, key), doc) in t.overlay {
                let docs = db.collections.get_mut(&collection).unwrap();
                match doc {
                    Some(doc) => docs.insert(key, doc),
                    None => docs.remove(&key),
                };
            }
            server.committed += 1;
            ok(
                StatusCode::OK,
                json!({ "error": false, "result": { "id": id, "status": "committed" } }),
            )
        }
        (Method::DELETE, ["transaction", id]) => {
            if server.transactions.remove(*id).is_none() {
                return error(StatusCode::NOT_FOUND, 1655, "transaction not found");
            }
            server.aborted += 1;
            ok(
                StatusCode::OK,
                json!({ "error": false, "result": { "id": id, "status": "aborted" } }),
            )
        }
        (Method::POST, ["cursor"]) => server.start_cursor(database, &body),
        (Method::PUT, ["cursor", id]) => server.next_page(id),
        (method, ["document", collection, rest @ ..]) => {
            if !server.databases[*database]
                .collections
                .contains_key(*collection)
            {
                return error(StatusCode::NOT_FOUND, 1203, "collection or view not found");
            }
            if let Some(t) = &trx {
                match server.transactions.get(t) {
                    None => return error(StatusCode::NOT_FOUND, 1655, "transaction not found"),
                    Some(t) if method != Method::GET && !t.write.contains(*collection) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            1004,
                            "collection not registered for write in the transaction",
                        );
                    }
                    Some(_) => {}
                }
            }
            if method != Method::GET {
                match server.fail_after {
                    Some(0) => {
                        server.fail_after = None;
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            503,
                            "service unavailable (failure injected by the test)",
                        );
                    }
                    Some(n) => server.fail_after = Some(n - 1),
                    None => {}
                }
            }
            let mut view = View {
                server: &mut server,
                database,
                collection,
                trx: trx.as_deref(),
            };
            view.document_request(method, rest, &uri, &headers, body)
        }
        _ => error(
            StatusCode::NOT_IMPLEMENTED,
            9,
            "not implemented by the stand-in",
        ),
    }
}

/// One collection as a request sees it: inside a transaction, its own
/// uncommitted changes over the committed documents.
struct View<'a> {
    server: &'a mut Server,
    database: &'a str,
    collection: &'a str,
    trx: Option<&'a str>,
}

impl View<'_> {
    fn get(&self, key: &str) -> Option<Value> {
        if let Some(t) = self.trx.and_then(|t| self.server.transactions.get(t))
            && let Some(change) = t
                .overlay
                .get(&(self.collection.to_string(), key.to_string()))
        {
            return change.clone();
        }
        self.server.databases[self.database].collections[self.collection]
            .get(key)
            .cloned()
    }

    fn set(&mut self, key: &str, doc: Option<Value>) {
        let committed = self.server.databases[self.database].collections[self.collection]
            .get(key)
            .map(|d| d["_rev"].clone());
        match self.trx.and_then(|t| self.server.transactions.get_mut(t)) {
            Some(t) => {
                t.base
                    .entry((self.collection.to_string(), key.to_string()))
                    .or_insert(committed);
                t.overlay
                    .insert((self.collection.to_string(), key.to_string()), doc);
            }
            None => {
                let docs = self
                    .server
                    .databases
                    .get_mut(self.database)
                    .unwrap()
                    .collections
                    .get_mut(self.collection)
                    .unwrap();
                match doc {
                    Some(doc) => docs.insert(key.to_string(), doc),
                    None => docs.remove(key),
                };
            }
        }
    }

    fn new_rev(&mut self) -> String {
        self.server.next_id += 1;
        format!("_r{}", self.server.next_id)
    }

    fn stamp(&mut self, mut doc: Value, key: &str) -> Value {
        let rev = self.new_rev();
        doc["_key"] = key.into();
        doc["_id"] = format!("{}/{key}", self.collection).into();
        doc["_rev"] = rev.into();
        doc
    }

    fn header(&self, doc: &Value) -> Value {
        json!({ "_id": doc["_id"], "_key": doc["_key"], "_rev": doc["_rev"] })
    }

    /// Inserts `doc`; an existing key is an error, replaced (`replace`) or
    /// kept as it is (`ignore`), as `overwriteMode` says.
    fn insert(&mut self, doc: Value, mode: Option<&str>) -> Result<Value, (i64, &'static str)> {
        let key = match doc.get("_key").and_then(Value::as_str) {
            Some(k) => k.to_string(),
            None => {
                self.server.next_id += 1;
                self.server.next_id.to_string()
            }
        };
        if let Some(existing) = self.get(&key) {
            match mode {
                Some("replace") => {}
                Some("ignore") => return Ok(self.header(&existing)),
                _ => return Err((1210, "unique constraint violated - in index primary")),
            }
        }
        let doc = self.stamp(doc, &key);
        let header = self.header(&doc);
        self.set(&key, Some(doc));
        Ok(header)
    }

    fn remove(&mut self, key: &str) -> Result<Value, (i64, &'static str)> {
        let doc = self.get(key).ok_or((1202, "document not found"))?;
        let header = self.header(&doc);
        self.set(key, None);
        Ok(header)
    }

    fn patch(&mut self, changes: &Value) -> Result<Value, (i64, &'static str)> {
        let key = changes["_key"]
            .as_str()
            .ok_or((1221, "illegal document key"))?;
        let mut doc = self.get(key).ok_or((1202, "document not found"))?;
        for (field, value) in changes.as_object().into_iter().flatten() {
            if !field.starts_with('_') {
                doc[field] = value.clone();
            }
        }
        let doc = self.stamp(doc, key);
        let header = self.header(&doc);
        self.set(key, Some(doc));
        Ok(header)
    }

    fn document_request(
        &mut self,
        method: Method,
        rest: &[&str],
        uri: &Uri,
        headers: &HeaderMap,
        body: Value,
    ) -> Response {
        let mode = query_param(uri, "overwriteMode");
        let written = StatusCode::CREATED;
        match (method, rest) {
            (Method::GET, [key]) => match self.get(key) {
                Some(doc) => ok(StatusCode::OK, doc),
                None => error(StatusCode::NOT_FOUND, 1202, "document not found"),
            },
            (Method::PUT, [key]) => {
                let Some(current) = self.get(key) else {
                    return error(StatusCode::NOT_FOUND, 1202, "document not found");
                };
                if let Some(wanted) = headers.get("if-match").and_then(|v| v.to_str().ok())
                    && current["_rev"].as_str() != Some(wanted)
                {
                    return ok(
                        StatusCode::PRECONDITION_FAILED,
                        json!({
                            "error": true, "code": 412, "errorNum": 1200,
                            "errorMessage": "conflict, _rev values do not match",
                            "_id": current["_id"], "_key": current["_key"], "_rev": current["_rev"],
                        }),
                    );
                }
                let doc = self.stamp(body, key);
                let header = self.header(&doc);
                self.set(key, Some(doc));
                ok(written, header)
            }
            (Method::POST, []) => match body {
                Value::Array(docs) => {
                    let answers = docs
                        .into_iter()
                        .map(|d| item(self.insert(d, mode)))
                        .collect();
                    ok(written, Value::Array(answers))
                }
                doc => match self.insert(doc, mode) {
                    Ok(header) => ok(written, header),
                    Err((number, message)) => error(StatusCode::CONFLICT, number, message),
                },
            },
            (Method::PATCH, []) => {
                let Value::Array(changes) = body else {
                    return error(StatusCode::BAD_REQUEST, 600, "expecting an array");
                };
                let answers = changes.iter().map(|c| item(self.patch(c))).collect();
                ok(written, Value::Array(answers))
            }
            (Method::DELETE, []) => {
                let Value::Array(keys) = body else {
                    return error(StatusCode::BAD_REQUEST, 600, "expecting an array");
                };
                let answers = keys
                    .iter()
                    .map(|k| {
                        let key = k.as_str().or_else(|| k["_key"].as_str()).unwrap_or("");
                        item(self.remove(key))
                    })
                    .collect();
                ok(StatusCode::OK, Value::Array(answers))
            }
            _ => error(
                StatusCode::NOT_IMPLEMENTED,
                9,
                "not implemented by the stand-in",
            ),
        }
    }
}

fn item(result: Result<Value, (i64, &'static str)>) -> Value {
    match result {
        Ok(header) => header,
        Err((number, message)) => {
            json!({ "error": true, "errorNum": number, "errorMessage": message })
        }
    }
}

/// The `@name` bind parameters a query declares.
fn declared_parameters(query: &str) -> BTreeSet<String> {
    query
        .split('@')
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

impl Server {
    fn sorted(
        &self,
        database: &str,
        collection: &str,
        field: &str,
        descending: bool,
    ) -> Vec<Value> {
        let mut docs: Vec<Value> = self.databases[database]
            .collections
            .get(collection)
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        docs.sort_by_key(|d| d[field].as_u64().unwrap_or(0));
        if descending {
            docs.reverse();
        }
        docs
    }

    fn start_cursor(&mut self, database: &str, body: &Value) -> Response {
        let query = body["query"].as_str().unwrap_or_default();
        let bind = body["bindVars"].as_object().cloned().unwrap_or_default();
        let declared = declared_parameters(query);
        if let Some(missing) = declared.iter().find(|p| !bind.contains_key(*p)) {
            return error(
                StatusCode::BAD_REQUEST,
                1551,
                &format!("no value specified for declared bind parameter '{missing}'"),
            );
        }
        if let Some(unused) = bind.keys().find(|p| !declared.contains(*p)) {
            return error(
                StatusCode::BAD_REQUEST,
                1552,
                &format!("bind parameter '{unused}' was not declared in the query"),
            );
        }
        let number = |name: &str| bind.get(name).and_then(Value::as_u64).unwrap_or(0) as usize;
        let agent = bind.get("agent").cloned().unwrap_or(Value::Null);
        let results: Vec<Value> = if query == queries::MESSAGES {
            self.sorted(database, "messages", "id", false)
        } else if query == queries::MAX_MESSAGE_ID {
            let max = self
                .sorted(database, "messages", "id", true)
                .first()
                .map(|d| d["id"].clone());
            vec![max.unwrap_or(Value::Null)]
        } else if query == queries::HEALTH {
            self.sorted(database, "health", "seq", true)
                .into_iter()
                .filter(|h| h["agent"] == agent)
                .take(number("limit"))
                .collect()
        } else if query == queries::HEALTH_BEYOND {
            self.sorted(database, "health", "seq", true)
                .into_iter()
                .filter(|h| h["agent"] == agent)
                .skip(number("keep"))
                .take(number("count"))
                .map(|h| h["_key"].clone())
                .collect()
        } else if query == queries::META_PREFIX {
            let prefix = bind
                .get("prefix")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut named: Vec<Value> = self
                .sorted(database, "meta", "key", false)
                .into_iter()
                .filter(|m| m["key"].as_str().is_some_and(|k| k.starts_with(prefix)))
                .collect();
            named.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
            named
                .into_iter()
                .map(|m| json!([m["key"], m["value"]]))
                .collect()
        } else if query == queries::EXECUTIONS {
            let workflow = bind.get("workflow").cloned().unwrap_or(Value::Null);
            self.sorted(database, "executions", "seq", false)
                .into_iter()
                .filter(|e| workflow.is_null() || e["workflow"] == workflow)
                .collect()
        } else if query == queries::EXECUTION_TASKS {
            let ids = bind
                .get("ids")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            self.sorted(database, "execution_tasks", "seq", false)
                .into_iter()
                .filter(|t| ids.contains(&t["execution"]))
                .collect()
        } else if query == queries::STATE_LIST {
            let text = |name: &str| {
                bind.get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let (scope, prefix, after) = (text("scope"), text("prefix"), text("after"));
            let mut entries: Vec<Value> = self
                .sorted(database, "state_entries", "version", false)
                .into_iter()
                .filter(|e| {
                    e["scope"] == scope.as_str()
                        && e["key"]
                            .as_str()
                            .is_some_and(|k| k > after.as_str() && k.starts_with(&prefix))
                })
                .collect();
            entries.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
            entries.truncate(number("limit"));
            entries
        } else if query == queries::STATE_CHANGES {
            let scope = bind.get("scope").cloned().unwrap_or(Value::Null);
            let after = number("after") as u64;
            self.sorted(database, "state_changes", "version", false)
                .into_iter()
                .filter(|c| c["scope"] == scope && c["version"].as_u64().unwrap_or(0) > after)
                .take(number("limit"))
                .collect()
        } else if query == queries::STATE_SCOPES {
            let mut scopes = self.sorted(database, "state_scopes", "version", false);
            scopes.sort_by(|a, b| a["scope"].as_str().cmp(&b["scope"].as_str()));
            scopes
        } else if query == queries::AUDIT {
            self.sorted(database, "audit", "seq", true)
                .into_iter()
                .take(number("limit"))
                .collect()
        } else {
            return error(
                StatusCode::BAD_REQUEST,
                1501,
                "the stand-in runs only the store's own queries",
            );
        };
        let batch = body["batchSize"].as_u64().unwrap_or(1000).max(1) as usize;
        let mut rest: VecDeque<Value> = results.into();
        let first: Vec<Value> = rest.drain(..batch.min(rest.len())).collect();
        let mut answer =
            json!({ "error": false, "code": 201, "result": first, "hasMore": !rest.is_empty() });
        if !rest.is_empty() {
            self.next_id += 1;
            let id = self.next_id.to_string();
            answer["id"] = id.clone().into();
            // Later pages use the same batch size: remember it as the first entry.
            rest.push_front(json!(batch));
            self.cursors.insert(id, rest);
        }
        ok(StatusCode::CREATED, answer)
    }

    fn next_page(&mut self, id: &str) -> Response {
        let Some(mut rest) = self.cursors.remove(id) else {
            return error(StatusCode::NOT_FOUND, 1600, "cursor not found");
        };
        let batch = rest.pop_front().and_then(|b| b.as_u64()).unwrap_or(1000) as usize;
        let page: Vec<Value> = rest.drain(..batch.min(rest.len())).collect();
        let more = !rest.is_empty();
        let mut answer = json!({ "error": false, "code": 200, "result": page, "hasMore": more });
        if more {
            answer["id"] = id.into();
            rest.push_front(json!(batch));
            self.cursors.insert(id.to_string(), rest);
        }
        ok(StatusCode::OK, answer)
    }
}
