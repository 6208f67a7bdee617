//! Agent state: versioned JSON documents by scope and key on the runtime,
//! written with compare-and-swap, read, listed and watched
//! ([`Client::state`](crate::Client::state)).
//!
//! A scope is `agents/<name>` (each agent owns its own) or a `State` the
//! project declares, with the agents that may read and write it. A key's
//! `version` is the scope's revision at its last write: it only grows, and
//! a watch from a version delivers every change after it, in order.
//!
//! ```no_run
//! # async fn run(client: cortex_client::Client) -> Result<(), cortex_client::ClientError> {
//! let mine = client.state(&format!("agents/{}", client.agent()));
//! // Counts with compare-and-swap, retrying when another replica wrote first.
//! let counted = mine
//!     .update("handled", |old| serde_json::json!(old.and_then(|v| v.as_u64()).unwrap_or(0) + 1))
//!     .await?;
//! println!("handled {} (version {})", counted.value, counted.version);
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ApiError, Client, ClientError};

/// One key's document as the runtime answers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDocument {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// Its version: the scope's revision at its last write.
    pub version: u64,
    /// When it was written (RFC 3339, UTC).
    pub updated_at: String,
    /// Who wrote it (an agent, or `cortex` for the operator).
    pub updated_by: String,
}

/// What a write answers: the key's new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateWritten {
    /// The key.
    pub key: String,
    /// Its new version (for a delete: the scope's revision of the delete).
    pub version: u64,
}

/// A page of a scope's keys (`GET /v1/state/{scope}?prefix=&after=&limit=`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatePage {
    /// The documents, in key order.
    pub items: Vec<StateDocument>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
    /// The scope's revision before the page was read: a watch from it
    /// misses nothing that changed since (and may repeat some of the page).
    pub version: u64,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChangeEvent {
    /// The scope's revision this change made.
    pub version: u64,
    /// The key.
    pub key: String,
    /// The new value; `None` when the key was deleted.
    pub value: Option<Value>,
    /// Whether the key was deleted.
    pub deleted: bool,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who.
    pub by: String,
}

/// The body of a 409: the key as it is (`None`: it does not exist).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateConflictBody {
    /// The error.
    pub error: ApiError,
    /// The current document.
    pub current: Option<StateDocument>,
}

/// What [`StateScope::update`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Updated {
    /// The value written.
    pub value: Value,
    /// Its version.
    pub version: u64,
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq)]
pub enum Cas {
    /// Written: the new version.
    Written(u64),
    /// `ifVersion` did not match: nothing was written; the key as it is.
    Conflict(Option<StateDocument>),
}

/// Tries [`StateScope::update`] makes before giving up.
const UPDATE_TRIES: u32 = 32;

/// One scope of agent state, on behalf of the client's agent.
#[derive(Clone, Debug)]
pub struct StateScope {
    client: Client,
    scope: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PutBody<'a> {
    value: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    if_version: Option<u64>,
}

/// Percent-encodes a key for the URL path (its `/` kept: keys may be paths).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// The state scope `scope` (`agents/<name>`, or a declared `State`).
    pub fn state(&self, scope: &str) -> StateScope {
        StateScope {
            client: self.clone(),
            scope: scope.to_string(),
        }
    }
}

impl StateScope {
    /// The scope's name.
    pub fn name(&self) -> &str {
        &self.scope
    }

    fn url(&self, key: &str) -> String {
        format!(
            "{}/v1/state/{}/{}",
            self.client.base,
            self.scope,
            encode_key(key)
        )
    }

    /// One key's document; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<StateDocument>, ClientError> {
        let response = self
            .client
            .http
            .get(self.url(key))
            .bearer_auth(&self.client.token)
            .send()
            .await
            .map_err(|e| self.client.unreachable(e))?;
        if response.status().as_u16() == 404 {
            let error = Client::api_error(response).await;
            return match &error {
                ClientError::Api { error: e, .. } if e.code == "not_found" => Ok(None),
                _ => Err(error),
            };
        }
        Client::decode(response)
            .await
            .map(Some)
            .map_err(|e| self.client.map(e))
    }

    /// Writes `value` if the key's version is `if_version` (`0`: only if it
    /// does not exist).
    pub async fn put_if(
        &self,
        key: &str,
        value: &Value,
        if_version: u64,
    ) -> Result<Cas, ClientError> {
        self.put_body(key, value, Some(if_version)).await
    }

    /// Writes `value` whatever the key holds; answers the new version.
    pub async fn put(&self, key: &str, value: &Value) -> Result<u64, ClientError> {
        match self.put_body(key, value, None).await? {
            Cas::Written(version) => Ok(version),
            // A write without ifVersion is never a conflict; a runtime
            // that says otherwise is answered with an error, not a panic.
            Cas::Conflict(_) => Err(bad_response("409 to a write without ifVersion".to_string())),
        }
    }

    async fn put_body(
        &self,
        key: &str,
        value: &Value,
        if_version: Option<u64>,
    ) -> Result<Cas, ClientError> {
        let request = self
            .client
            .http
            .put(self.url(key))
            .bearer_auth(&self.client.token)
            .json(&PutBody { value, if_version });
        self.cas(request).await
    }

    /// Deletes the key if its version is `if_version`.
    pub async fn delete_if(&self, key: &str, if_version: u64) -> Result<Cas, ClientError> {
        let request = self
            .client
            .http
            .delete(self.url(key))
            .query(&[("ifVersion", if_version)])
            .bearer_auth(&self.client.token);
        self.cas(request).await
    }

    async fn cas(&self, request: reqwest::RequestBuilder) -> Result<Cas, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.client.unreachable(e))?;
        if response.status().as_u16() == 409 {
            let text = response.text().await.unwrap_or_default();
            return match serde_json::from_str::<StateConflictBody>(&text) {
                Ok(body) => Ok(Cas::Conflict(body.current)),
                Err(_) => Err(ClientError::Api {
                    status: 409,
                    error: crate::error_of(409, &text),
                }),
            };
        }
        let written: StateWritten = Client::decode(response)
            .await
            .map_err(|e| self.client.map(e))?;
        Ok(Cas::Written(written.version))
    }

    /// Reads the key, computes its next value with `f` (`None`: it does not
    /// exist) and writes it with compare-and-swap; when another writer came
    /// first, computes again from the value it wrote, after a short backoff
    /// (5 ms doubling to 500 ms, with jitter). Answers what it wrote.
    pub async fn update(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&Value>) -> Value,
    ) -> Result<Updated, ClientError> {
        let mut current = self.get(key).await?;
        let mut pause = Duration::from_millis(5);
        for _ in 0..UPDATE_TRIES {
            let next = f(current.as_ref().map(|d| &d.value));
            let if_version = current.as_ref().map_or(0, |d| d.version);
            match self.put_if(key, &next, if_version).await? {
                Cas::Written(version) => {
                    return Ok(Updated {
                        value: next,
                        version,
                    });
                }
                Cas::Conflict(now) => {
                    current = now;
                    tokio::time::sleep(jitter(pause)).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
        Err(ClientError::Api {
            status: 409,
            error: ApiError {
                code: "conflict".into(),
                message: format!(
                    "{}/{key}: {UPDATE_TRIES} tries lost to other writers",
                    self.scope
                ),
                inbox: None,
                pointer: None,
            },
        })
    }

    /// A page of at most `limit` documents whose key starts with `prefix`,
    /// after the key `after` (`""`: from the start).
    pub async fn list(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<StatePage, ClientError> {
        let url = format!("{}/v1/state/{}", self.client.base, self.scope);
        let response = self
            .client
            .http
            .get(url)
            .query(&[
                ("prefix", prefix),
                ("after", after),
                ("limit", &limit.to_string()),
            ])
            .bearer_auth(&self.client.token)
            .send()
            .await
            .map_err(|e| self.client.unreachable(e))?;
        Client::decode(response)
            .await
            .map_err(|e| self.client.map(e))
    }

    /// Every change of the scope after `from_version`, in version order, as
    /// they happen. The watch resumes by itself when the connection breaks
    /// (the runtime restarted): from the last version it delivered, so
    /// nothing is missed or repeated. A version older than the scope's kept
    /// history is an error (`410`, code `compacted`): list again and watch
    /// from the page's `version`.
    pub fn watch(&self, from_version: u64) -> StateWatch {
        StateWatch {
            scope: self.clone(),
            last: from_version,
            events: None,
            buffered: std::collections::VecDeque::new(),
        }
    }
}

/// `pause` with up to half of it added at random (spreads writers that
/// collided).
fn jitter(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    pause + pause.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

type Chunks = futures::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>;

/// A watch of one scope ([`StateScope::watch`]): read it with
/// [`StateWatch::next`].
pub struct StateWatch {
    scope: StateScope,
    last: u64,
    events: Option<(Chunks, SseBuffer)>,
    buffered: std::collections::VecDeque<StateChangeEvent>,
}

impl StateWatch {
    /// The last version delivered (or the one the watch started from).
    pub fn version(&self) -> u64 {
        self.last
    }

    /// The next change. A broken connection (or a store error the runtime
    /// reports on it) is opened again from the last version delivered, for
    /// as long as the runtime is unreachable for at most a minute; a
    /// version the scope no longer keeps (410 `compacted`) and refusals end
    /// the watch.
    pub async fn next(&mut self) -> Result<StateChangeEvent, ClientError> {
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            if let Some(change) = self.buffered.pop_front() {
                self.last = change.version;
                return Ok(change);
            }
            let Some((chunks, buffer)) = &mut self.events else {
                match self.open().await {
                    Ok(opened) => {
                        self.events = Some(opened);
                        down_since = None;
                    }
                    Err(e) if e.is_retryable() => {
                        let since = *down_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() > Duration::from_secs(60) {
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(e),
                }
                continue;
            };
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    for event in buffer.push(&chunk) {
                        match event.event.as_str() {
                            "change" => {
                                let change: StateChangeEvent = serde_json::from_str(&event.data)
                                    .map_err(|e| bad_response(e.to_string()))?;
                                // Never deliver a version twice (a resumed watch).
                                if change.version > self.last {
                                    self.buffered.push_back(change);
                                }
                            }
                            "error" => {
                                let body: crate::ErrorBody = serde_json::from_str(&event.data)
                                    .map_err(|e| bad_response(e.to_string()))?;
                                self.events = None;
                                if body.error.code == "compacted" {
                                    return Err(ClientError::Api {
                                        status: 410,
                                        error: body.error,
                                    });
                                }
                                // The runtime could not read its store: resume
                                // from the last version after a pause.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                break;
                            }
                            _ => {}
                        }
                    }
                }
                // The connection ended or broke: open it again from `last`.
                Some(Err(_)) | None => self.events = None,
            }
        }
    }

    async fn open(&self) -> Result<(Chunks, SseBuffer), ClientError> {
        let client = &self.scope.client;
        let url = format!("{}/v1/state/{}/watch", client.base, self.scope.scope);
        let response = client
            .http
            .get(url)
            .query(&[("fromVersion", self.last)])
            .bearer_auth(&client.token)
            .send()
            .await
            .map_err(|e| client.unreachable(e))?;
        if !response.status().is_success() {
            return Err(Client::api_error(response).await);
        }
        Ok((response.bytes_stream().boxed(), SseBuffer::default()))
    }
}

fn bad_response(message: String) -> ClientError {
    ClientError::Api {
        status: 200,
        error: ApiError {
            code: "bad_response".into(),
            message,
            inbox: None,
            pointer: None,
        },
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SseEvent {
    /// `event:` (`message` when absent).
    pub(crate) event: String,
    /// `data:` lines, joined.
    pub(crate) data: String,
}

/// Server-sent events cut out of a byte stream as it arrives.
#[derive(Debug, Default)]
pub(crate) struct SseBuffer {
    text: String,
}

impl SseBuffer {
    /// Takes a chunk; answers the events it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.text.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(end) = self.text.find("\n\n") {
            let block: String = self.text.drain(..end + 2).collect();
            let mut event = SseEvent {
                event: "message".into(),
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event.event = name.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    event.data.push_str(data.strip_prefix(' ').unwrap_or(data));
                }
            }
            if !event.data.is_empty() {
                out.push(event);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_the_path() {
        assert_eq!(encode_key("tickets/1"), "tickets/1");
        assert_eq!(encode_key("a b?#%"), "a%20b%3F%23%25");
    }

    #[test]
    fn events_are_cut_where_they_end() {
        let mut buffer = SseBuffer::default();
        assert!(buffer.push(b"event: change\ndata: {\"a\"").is_empty());
        let events = buffer.push(b":1}\n\n: keep-alive\n\ndata: x\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "change".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "x".into()
                },
            ]
        );
    }
}
