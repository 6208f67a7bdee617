//! cortex-client: what an agent uses to talk to the cortex broker.
//!
//! An agent started by cortex finds everything it needs in its environment
//! ([`Client::from_env`]): the broker's URL, its name and its token. It then
//! receives deliveries from its inbox (long-poll with [`Client::receive`], a
//! server-sent-event stream with [`Client::stream`], or the agent socket,
//! [`Client::session`], the cheapest), acks, nacks or replies to each,
//! publishes to the topics its spec declares, and keeps agent state
//! ([`Client::state`]: versioned documents with compare-and-swap and
//! watches).
//!
//! ```no_run
//! # async fn run() -> Result<(), cortex_client::ClientError> {
//! let client = cortex_client::Client::from_env()?;
//! loop {
//!     for delivery in client.receive(16, std::time::Duration::from_secs(20)).await? {
//!         client.publish("tickets.triaged", delivery.key.as_deref(), &delivery.payload).await?;
//!         client.ack(delivery.id).await?;
//!     }
//! }
//! # }
//! ```

mod executions;
mod session;
mod state;

use std::time::Duration;

pub use executions::{ExecutionList, ExecutionView, TaskView, TriggerView, WorkflowPause};
pub use session::Session;
pub use state::{
    Cas, StateChangeEvent, StateConflictBody, StateDocument, StatePage, StateScope, StateWatch,
    StateWritten, Updated,
};

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Environment variable holding the broker's base URL (`http://127.0.0.1:PORT`).
pub const ENV_BROKER_URL: &str = "CORTEX_BROKER_URL";
/// Environment variable holding the agent's name.
pub const ENV_AGENT_NAME: &str = "CORTEX_AGENT_NAME";
/// Environment variable holding the agent's bearer token.
pub const ENV_AGENT_TOKEN: &str = "CORTEX_AGENT_TOKEN";
/// Environment variable holding the path of the agent's `config` (JSON).
pub const ENV_AGENT_CONFIG: &str = "CORTEX_AGENT_CONFIG";
/// Environment variable holding the topics the agent may publish to (comma-separated).
pub const ENV_AGENT_PUBLISH: &str = "CORTEX_AGENT_PUBLISH";
/// Environment variable holding the topics the agent subscribes to (comma-separated).
pub const ENV_AGENT_SUBSCRIBE: &str = "CORTEX_AGENT_SUBSCRIBE";
/// Environment variable holding the replica's index (0-based).
pub const ENV_REPLICA: &str = "CORTEX_REPLICA";

/// A message handed to an agent. It stays in flight until it is acked,
/// nacked or replied to; past its topic's `ackTimeout` it is delivered again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The message id (what ack, nack and reply name).
    pub id: u64,
    /// The topic it was published to; `None` for a direct message.
    pub topic: Option<String>,
    /// Its ordering key, if the sender gave one.
    pub key: Option<String>,
    /// Who sent it (an agent's name, or `cortex` for the operator).
    pub sender: String,
    /// The payload.
    pub payload: Value,
    /// Which delivery attempt this is (1 for the first).
    pub attempt: u32,
    /// Whether the sender waits for a [`Client::reply`].
    pub request: bool,
    /// For a reply delivered to an inbox: the request it answers.
    pub in_reply_to: Option<u64>,
}

/// What the broker answers to a publish or a send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// One message id per receiving inbox.
    pub ids: Vec<u64>,
    /// The inboxes (agents) that received the message.
    pub delivered_to: Vec<String>,
}

/// The broker's error body: `{"error": {"code", "message", …}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable code: `unauthorized`, `forbidden`, `inbox_full`,
    /// `schema`, `not_found`, `timeout`, `bad_request`, `unavailable`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The full inbox, for `inbox_full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<String>,
    /// The JSON pointer of the failing value, for `schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An environment variable the agent needs is not set.
    #[error("{0} is not set: is this process started by cortex?")]
    MissingEnv(&'static str),
    /// The agent's config file could not be read.
    #[error("cannot read the agent config {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The broker could not be reached (retryable).
    #[error("cannot reach the broker at {url}: {source}")]
    Unreachable {
        /// The broker's URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The agent socket could not be opened or broke (retryable).
    #[error("agent socket {url}: {message}")]
    Socket {
        /// The socket's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A delivery the agent socket could not read (its payload is not JSON
    /// this library can parse); it was nacked with the reason, so it comes
    /// again and, past `maxAttempts`, goes to the dead letters with it.
    #[error("delivery {id} could not be read and was nacked: {message}")]
    Undecodable {
        /// The delivery's id.
        id: u64,
        /// Why it could not be read.
        message: String,
    },
    /// The broker refused the call.
    #[error("{status} {}: {}", .error.code, .error.message)]
    Api {
        /// HTTP status.
        status: u16,
        /// The broker's explanation.
        error: ApiError,
    },
}

impl ClientError {
    /// Whether trying again later can succeed (broker unreachable, inbox
    /// full, broker shutting down).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Socket { .. } => true,
            ClientError::Api { status, .. } => *status == 429 || *status == 503,
            _ => false,
        }
    }
}

/// The process's HTTP client for talking to cortex (and webhooks), shared:
/// one connection pool, and the system's root certificates read once (a
/// new client reads and parses all of them). reqwest is built without a
/// default TLS provider: this installs ring, as kube uses, once per
/// process, so every client must come from here.
pub fn http_client() -> reqwest::Client {
    static SHARED: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        })
        .clone()
}

/// A connection to the broker on behalf of one agent.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    agent: String,
    token: String,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    payload: &'a Value,
}

#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: ApiError,
}

impl Client {
    /// A client for `agent` with `token` against the broker at `base`
    /// (`http://127.0.0.1:7400`).
    pub fn new(base: &str, agent: &str, token: &str) -> Client {
        Client {
            http: http_client(),
            base: base.trim_end_matches('/').to_string(),
            agent: agent.to_string(),
            token: token.to_string(),
        }
    }

    /// The client of the agent this process runs as, from
    /// `CORTEX_BROKER_URL`, `CORTEX_AGENT_NAME` and `CORTEX_AGENT_TOKEN`.
    pub fn from_env() -> Result<Client, ClientError> {
        let var =
            |name: &'static str| std::env::var(name).map_err(|_| ClientError::MissingEnv(name));
        Ok(Client::new(
            &var(ENV_BROKER_URL)?,
            &var(ENV_AGENT_NAME)?,
            &var(ENV_AGENT_TOKEN)?,
        ))
    }

    /// The agent's name.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The broker's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The agent's `config` from its spec (the JSON file named by
    /// `CORTEX_AGENT_CONFIG`); `null` when the variable is not set.
    pub fn config() -> Result<Value, ClientError> {
        let Ok(path) = std::env::var(ENV_AGENT_CONFIG) else {
            return Ok(Value::Null);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ClientError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| ClientError::Config {
            path,
            message: e.to_string(),
        })
    }

    /// The topics this agent may publish to (from `CORTEX_AGENT_PUBLISH`).
    pub fn publish_topics() -> Vec<String> {
        std::env::var(ENV_AGENT_PUBLISH)
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Publishes `payload` to `topic` (one copy per subscribing agent).
    /// `key` orders messages of `per-key` topics.
    pub async fn publish(
        &self,
        topic: &str,
        key: Option<&str>,
        payload: &Value,
    ) -> Result<Published, ClientError> {
        let url = format!("{}/v1/topics/{topic}/messages", self.base);
        self.post(&url, &Outgoing { key, payload }).await
    }

    /// Sends `payload` straight to `agent`'s inbox.
    pub async fn send(
        &self,
        agent: &str,
        key: Option<&str>,
        payload: &Value,
    ) -> Result<Published, ClientError> {
        let url = format!("{}/v1/agents/{agent}/messages", self.base);
        self.post(&url, &Outgoing { key, payload }).await
    }

    /// Sends `payload` to `agent` as a request and waits up to `timeout` for
    /// its reply.
    pub async fn request(
        &self,
        agent: &str,
        payload: &Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let url = format!(
            "{}/v1/agents/{agent}/requests?timeoutMs={}",
            self.base,
            timeout.as_millis()
        );
        self.post(&url, &Outgoing { key: None, payload }).await
    }

    /// Up to `max` deliveries from the agent's inbox, waiting up to `wait`
    /// for the first one (long-poll). An empty list means none came.
    pub async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, ClientError> {
        let url = format!(
            "{}/v1/inbox?max={max}&waitMs={}",
            self.base,
            wait.as_millis()
        );
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(wait + Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::decode(response).await.map_err(|e| self.map(e))
    }

    /// The agent's deliveries as a stream (server-sent events), one item per
    /// delivery, for as long as the connection lasts.
    pub async fn stream(
        &self,
    ) -> Result<impl Stream<Item = Result<Delivery, ClientError>> + use<>, ClientError> {
        let url = format!("{}/v1/inbox/stream", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(Self::api_error(response).await);
        }
        let base = self.base.clone();
        let mut buffer = state::SseBuffer::default();
        Ok(response
            .bytes_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(|source| ClientError::Unreachable {
                    url: base.clone(),
                    source,
                })?;
                let mut out = Vec::new();
                for event in buffer.push(&chunk) {
                    let delivery: Delivery =
                        serde_json::from_str(&event.data).map_err(|e| ClientError::Api {
                            status: 200,
                            error: ApiError {
                                code: "bad_response".into(),
                                message: e.to_string(),
                                inbox: None,
                                pointer: None,
                            },
                        })?;
                    out.push(Ok(delivery));
                }
                Ok::<_, ClientError>(futures::stream::iter(out))
            })
            .flat_map(|batch| match batch {
                Ok(items) => items.left_stream(),
                Err(e) => futures::stream::iter(vec![Err(e)]).right_stream(),
            }))
    }

    /// Opens the agent's socket: deliveries pushed over one WebSocket, at
    /// most `prefetch` unsettled at a time, settled over the same socket
    /// (no HTTP request per message). Needs an `http://` broker URL.
    pub async fn session(&self, prefetch: usize) -> Result<Session, ClientError> {
        Session::open(&self.base, &self.token, prefetch).await
    }

    /// Acknowledges a delivery: it is done and will not come again.
    pub async fn ack(&self, id: u64) -> Result<(), ClientError> {
        let url = format!("{}/v1/messages/{id}/ack", self.base);
        self.post::<Value>(&url, &serde_json::json!({}))
            .await
            .map(drop)
    }

    /// Gives a delivery back: it is delivered again after `delay` (counting
    /// an attempt; past `maxAttempts` it goes to the dead letters).
    pub async fn nack(&self, id: u64, delay: Duration) -> Result<(), ClientError> {
        let url = format!("{}/v1/messages/{id}/nack", self.base);
        self.post::<Value>(
            &url,
            &serde_json::json!({ "delayMs": delay.as_millis() as u64 }),
        )
        .await
        .map(drop)
    }

    /// Answers a request: acks it and hands `payload` to the requester.
    pub async fn reply(&self, id: u64, payload: &Value) -> Result<(), ClientError> {
        let url = format!("{}/v1/messages/{id}/reply", self.base);
        self.post::<Value>(&url, &Outgoing { key: None, payload })
            .await
            .map(drop)
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Self::decode(response).await.map_err(|e| self.map(e))
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    fn map(&self, e: ClientError) -> ClientError {
        match e {
            ClientError::Unreachable { source, .. } => self.unreachable(source),
            other => other,
        }
    }

    async fn decode<T: for<'de> Deserialize<'de>>(
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        if !response.status().is_success() {
            return Err(Self::api_error(response).await);
        }
        response
            .json()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: String::new(),
                source,
            })
    }

    async fn api_error(response: reqwest::Response) -> ClientError {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        ClientError::Api {
            status,
            error: error_of(status, &text),
        }
    }
}

/// The broker's error from a response body (`{"error": …}`), or the body
/// itself when it is not one.
fn error_of(status: u16, text: &str) -> ApiError {
    serde_json::from_str::<ErrorBody>(text)
        .map(|b| b.error)
        .unwrap_or_else(|_| ApiError {
            code: "http".into(),
            message: if text.is_empty() {
                format!("HTTP {status}")
            } else {
                text.to_string()
            },
            inbox: None,
            pointer: None,
        })
}
