//! The HTTP client of ArangoDB's API the store uses: calls with its error
//! numbers told apart, AQL cursors, collections and documents.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::store::StoreError;

/// An ArangoDB error response.
#[derive(Debug, Deserialize)]
pub(super) struct ArangoError {
    #[serde(rename = "errorNum", default)]
    pub(super) number: i64,
    #[serde(rename = "errorMessage", default)]
    pub(super) message: String,
}

/// A failed request: the HTTP status and what ArangoDB said.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: Option<StatusCode>,
    pub(super) number: i64,
    pub(super) message: String,
}

impl Failure {
    /// Whether another writer came first ([`Client::swap`]'s 412, a 409
    /// write-write conflict or a unique-key violation on an insert).
    pub(super) fn lost_race(&self) -> bool {
        self.status == Some(StatusCode::PRECONDITION_FAILED)
            || self.status == Some(StatusCode::CONFLICT)
    }

    pub(super) fn into_store_error(self, what: &str) -> StoreError {
        StoreError::Backend(format!("ArangoDB {what}: {}", self.describe()))
    }

    pub(super) fn describe(&self) -> String {
        match self.status {
            Some(status) => format!("{status} {} (error {})", self.message, self.number),
            None => self.message.clone(),
        }
    }
}

/// The HTTP side: one database on one server.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) config: ArangoConfig,
}

impl Client {
    pub(super) fn url(&self, database: &str, path: &str) -> String {
        format!("{}/_db/{database}{path}", self.config.endpoint)
    }

    /// Sends one request to the store's database; `Ok` with the parsed body
    /// on 2xx, `Err` with ArangoDB's error otherwise.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, Failure> {
        self.call_in(&self.config.database, method, path, body, headers)
            .await
    }

    pub(super) async fn call_in(
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

    /// Writes `doc` as `collection/key` only if the document is still the
    /// one read (`read`: its `_rev` sent as `If-Match`), or, when none was
    /// read, only if none exists (an insert); inside `trx` when given. A
    /// writer that came first makes it fail with 412 (or 409 on the insert):
    /// [`Failure::lost_race`].
    pub(super) async fn swap(
        &self,
        collection: &str,
        key: &str,
        mut doc: Value,
        read: Option<&Value>,
        trx: Option<&str>,
    ) -> Result<Value, Failure> {
        doc["_key"] = key.into();
        let mut headers: Vec<(&str, &str)> =
            trx.map(|t| ("x-arango-trx-id", t)).into_iter().collect();
        match read.and_then(|d| d.get("_rev")).and_then(Value::as_str) {
            Some(rev) => {
                headers.push(("If-Match", rev));
                self.call(
                    Method::PUT,
                    &format!("/_api/document/{collection}/{key}"),
                    Some(&doc),
                    &headers,
                )
                .await
            }
            None => {
                self.call(
                    Method::POST,
                    &format!("/_api/document/{collection}"),
                    Some(&doc),
                    &headers,
                )
                .await
            }
        }
    }

    /// Begins a stream transaction that writes `collections`, each commit
    /// on disk before it is answered; answers its id.
    pub(super) async fn begin(&self, collections: &[&str]) -> Result<String, Failure> {
        let begun = self
            .call(
                Method::POST,
                "/_api/transaction/begin",
                Some(&json!({ "collections": { "write": collections }, "waitForSync": true })),
                &[],
            )
            .await?;
        begun
            .pointer("/result/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Failure {
                status: None,
                number: 0,
                message: "a transaction began without an id".into(),
            })
    }

    /// Commits the stream transaction `trx`.
    pub(super) async fn commit(&self, trx: &str) -> Result<(), Failure> {
        self.call(Method::PUT, &format!("/_api/transaction/{trx}"), None, &[])
            .await
            .map(drop)
    }

    /// Aborts the stream transaction `trx`, so nothing of it stays (best
    /// effort: an unfinished transaction also times out on the server).
    pub(super) async fn abort(&self, trx: &str) {
        let _ = self
            .call(
                Method::DELETE,
                &format!("/_api/transaction/{trx}"),
                None,
                &[],
            )
            .await;
    }

    /// Runs `query` and collects every result, batch by batch.
    pub(super) async fn query(&self, query: &str, bind: Value) -> Result<Vec<Value>, Failure> {
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
    pub(super) async fn prepare(&self) -> Result<(), Failure> {
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

    pub(super) async fn create_collections(&self) -> Result<(), Failure> {
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
            ("state_entries", vec!["scope", "key"]),
            ("state_changes", vec!["scope", "version"]),
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

    pub(super) async fn document(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Value>, Failure> {
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
    pub(super) async fn documents(
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
pub(super) fn existing_is_fine(created: Result<Value, Failure>) -> Result<(), Failure> {
    match created {
        Err(f) if f.number != ERROR_DUPLICATE_NAME => Err(f),
        _ => Ok(()),
    }
}
