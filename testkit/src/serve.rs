//! `cortex serve` driven as its users drive it: the binary started as a
//! process (its API's address read from its banner), its API called with a
//! token, and GitHub's webhook signature made for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::Value;

/// `serve`'s API, with a token.
pub struct ServeApi {
    /// `http://ADDR`.
    pub url: String,
    /// The bearer token sent.
    pub token: String,
    /// How often [`ServeApi::until`] asks (a latency measurement asks often).
    pub poll: Duration,
}

impl ServeApi {
    /// The API at `url`, called with `token`, polled every 20 ms.
    pub fn new(url: &str, token: &str) -> ServeApi {
        ServeApi {
            url: url.to_string(),
            token: token.trim().to_string(),
            poll: Duration::from_millis(20),
        }
    }

    /// The API at `url` with the operator token of the state directory
    /// `state` (written before `serve` prints its banner).
    pub fn operator(url: &str, state: &Path) -> ServeApi {
        let token = std::fs::read_to_string(cortex_runtime::tokens::operator_token_path(state))
            .unwrap_or_default();
        ServeApi::new(url, &token)
    }

    /// `GET path` as JSON (`null` while nothing answers: the runtime takes
    /// the address over from the API served alone).
    pub async fn get(&self, path: &str) -> Value {
        let sent = cortex_client::http_client()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await;
        match sent {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Value {
        self.get("/api/v1/status").await
    }

    /// Polls the status until `ok` (two minutes at most: the deadline only
    /// stops a hung run); the status, or what was waited for and the last
    /// status.
    pub async fn try_until(
        &self,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status().await;
            if ok(&status) {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!("{what}: {status:#}"));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// [`ServeApi::try_until`], panicking when it times out (for tests).
    pub async fn until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.try_until(what, ok)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `/metrics`, as Prometheus reads it.
    pub async fn metrics(&self) -> String {
        let sent = cortex_client::http_client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await;
        match sent {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of the unlabelled metric `name`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Starts `cortex` (the binary `cortex`) as `cortex serve --repo REPO
/// --listen 127.0.0.1:0 --state STATE` with `more` arguments and `env`;
/// the process and its API's URL, read from its banner. The rest of its
/// stderr is drained so it never blocks on it.
pub fn spawn(
    cortex: &Path,
    repo: &str,
    state: &Path,
    more: &[&str],
    env: &[(&str, &str)],
) -> std::io::Result<(Child, String)> {
    let mut child = Command::new(cortex)
        .args([
            "serve",
            "--repo",
            repo,
            "--listen",
            "127.0.0.1:0",
            "--state",
        ])
        .arg(state)
        .args(more)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .env_remove("CORTEX_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(
        child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("cortex serve has no stderr"))?,
    );
    let mut banner = String::new();
    stderr.read_line(&mut banner)?;
    let url = banner
        .split("API on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    match url {
        Some(url) => Ok((child, url)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::io::Error::other(format!(
                "cortex serve printed no API address: {banner:?}"
            )))
        }
    }
}

/// GitHub's `X-Hub-Signature-256` of `body` under `secret`.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    format!(
        "sha256={}",
        cortex_runtime::tokens::hex(&mac.finalize().into_bytes())
    )
}

/// Options of a `serve` run in the caller's process: the bare remote at
/// `remote` (branch `main`, its cache under `state`), state in `state`,
/// the embedded target, fetched every `interval`, auto sync with self-heal,
/// no agents started, no webhook, the operator token only, the default
/// lease.
pub fn remote_options(
    remote: &Path,
    state: &Path,
    interval: Duration,
) -> cortex_reconciler::serve::ServeOptions {
    use cortex_reconciler::serve::{DEFAULT_LEASE, ServeOptions, ServeTarget, Source};
    ServeOptions {
        target: ServeTarget::Embedded,
        source: Source::Remote {
            url: remote.display().to_string(),
            branch: "main".into(),
            cache: state.join("repo"),
            token_env: "CORTEX_GIT_TOKEN".into(),
        },
        subdir: None,
        env: None,
        interval,
        state: state.to_path_buf(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        supervise: false,
        webhook_secret: None,
        auto_sync: true,
        self_heal: true,
        tokens_file: None,
        lease: DEFAULT_LEASE,
    }
}

/// The small project `serve` is tested and measured on: `cortex.yaml` of
/// project `name` in `namespace`, including `specs.yaml`.
pub fn small_project(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: cortex.codevald.io/v1
kind: Project
metadata: {{ name: {name} }}
spec:
  include: [\"specs.yaml\"]
  namespace: {namespace}
"
    )
}

/// The small project's `specs.yaml`: topic `jobs` kept for `retention`,
/// and agent `worker` subscribed to it.
pub fn small_specs(retention: &str) -> String {
    format!(
        "apiVersion: cortex.codevald.io/v1
kind: Topic
metadata: {{ name: jobs }}
spec: {{ ordering: none, retention: {retention} }}
---
apiVersion: cortex.codevald.io/v1
kind: Agent
metadata: {{ name: worker }}
spec:
  image: example/agent:1
  subscribe: [jobs]
"
    )
}
