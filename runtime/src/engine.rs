//! The runtime as a whole: start it on an applied store (broker restored
//! from the store, HTTP server, redelivery sweeper, one supervisor per
//! local agent replica, alert evaluation, reload on a new applied
//! revision), and stop it cleanly (agents stopped, journal flushed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::agents::{self, Paths};
use super::alerts::{self, AgentHealth, AlertEngine, AlertRule};
use super::broker::config::ConfigError;
use super::broker::{Broker, BrokerConfig, Journal};
use super::connections::{self, ConnectionLimits};
use super::health::HealthState;
use super::leftovers;
use super::secrets::Secrets;
use super::server::{Shared, router};
use super::status::{AgentStatus, Board, RuntimeStatus};
use super::supervisor::{Report, Reporter, run_replica};
use super::tokens::{self, TokenHash};
use crate::store::{Applied, AuditEntry, HealthRecord, Op, Store, StoreError, now_ms};
use crate::workflow::{SchedulerOptions, WorkflowError, Workflows};
use cortex_compiler::runtime_config::RuntimeConfig;

/// Where the runtime listens when not told: the broker's well-known local port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// Meta key of the running runtime's URL.
pub const RUNTIME_URL: &str = "runtime.url";

/// How the runtime runs.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Project and state directories.
    pub paths: Paths,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Start the agents that have `local.command`.
    pub supervise: bool,
    /// How often to look for a new applied revision.
    pub poll: Duration,
    /// How often alert rules are evaluated.
    pub alert_period: Duration,
    /// Timeouts of the HTTP connections.
    pub connections: ConnectionLimits,
    /// More routes on the runtime's listener (`cortex serve`'s API).
    pub extra_routes: Option<axum::Router>,
    /// More metrics on its `/metrics` (`cortex serve`'s).
    pub extra_metrics: Option<super::server::MetricsHook>,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Nothing was applied yet.
    #[error(
        "the state store {0} holds no applied config yet: run `cortex up` or `cortex apply --target embedded` first"
    )]
    NotApplied(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The applied config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address is taken or not allowed.
    #[error(
        "cannot listen on {addr}: {message} (is another cortex up running? pass --listen 127.0.0.1:0 for any free port)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
    /// The secrets file is unreadable.
    #[error("{0}")]
    Secrets(String),
}

/// A running runtime.
pub struct Runtime {
    /// The broker's base URL.
    pub url: String,
    /// The operator's token (status, publishing from the CLI and tests).
    pub operator_token: String,
    /// Status and metrics.
    pub shared: Shared,
    shutdown: watch::Sender<bool>,
    control: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    journal: Journal,
}

struct AgentGroup {
    fingerprint: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

struct Control {
    store: Arc<dyn Store>,
    options: RuntimeOptions,
    shared: Shared,
    operator: TokenHash,
    secrets: Secrets,
    http: reqwest::Client,
    reporter: Reporter,
    groups: BTreeMap<String, AgentGroup>,
    alerts: AlertEngine,
    labels: BTreeMap<String, BTreeMap<String, String>>,
    revision: u64,
}

/// Takes the runtime's address: done before anything is applied, so a busy
/// port is refused before the store changes.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, RuntimeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| RuntimeError::Listen {
            addr,
            message: e.to_string(),
        })
}

/// Starts the runtime on what `store` holds, listening on `options.listen`.
pub async fn start(
    store: Arc<dyn Store>,
    options: RuntimeOptions,
    store_name: &str,
) -> Result<Runtime, RuntimeError> {
    let listener = bind(options.listen).await?;
    start_on(store, options, listener, store_name).await
}

/// Starts the runtime on what `store` holds, serving on `listener` (taken
/// with [`bind`]).
pub async fn start_on(
    store: Arc<dyn Store>,
    options: RuntimeOptions,
    listener: tokio::net::TcpListener,
    store_name: &str,
) -> Result<Runtime, RuntimeError> {
    let applied = store
        .applied()
        .await?
        .ok_or_else(|| RuntimeError::NotApplied(store_name.to_string()))?;
    let operator_token = tokens::operator_token(&options.paths.state, &*store).await?;
    let operator = TokenHash::of(&operator_token);
    let runtime_config = RuntimeConfig::from_value(&applied.config).map_err(ConfigError::from)?;
    let config = BrokerConfig::new(&applied, &runtime_config, operator)?;
    let journal = Journal::to(store.clone());
    let broker = Broker::new(config, journal.clone(), store.last_message_id().await?);
    broker.restore(store.messages().await?);
    let addr = listener.local_addr().map_err(|e| RuntimeError::Listen {
        addr: options.listen,
        message: e.to_string(),
    })?;
    let url = format!("http://{addr}");
    let secrets = Secrets::load(&options.paths.state).map_err(RuntimeError::Secrets)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut background = Vec::new();
    let (workflows, scheduler) = Workflows::start(
        SchedulerOptions {
            store: store.clone(),
            journal: journal.clone(),
            broker: broker.clone(),
            project: options.paths.project.clone(),
        },
        Arc::new(runtime_config.clone()),
        applied.revision,
        shutdown_rx.clone(),
    )
    .await
    .map_err(|e| match e {
        WorkflowError::Store(e) => RuntimeError::Store(e),
        other => RuntimeError::Store(StoreError::Backend(other.to_string())),
    })?;
    background.push(scheduler);
    let shared = Shared {
        broker: broker.clone(),
        board: Arc::new(Mutex::new(Board::default())),
        header: Arc::new(Mutex::new(RuntimeStatus::default())),
        workflows,
        extra_metrics: options.extra_metrics.clone(),
        state: crate::state::AgentState::new(store.clone(), broker.clone(), shutdown_rx.clone()),
    };
    let mut app = router(shared.clone());
    if let Some(extra) = options.extra_routes.clone() {
        app = extra.merge(app);
    }
    background.push(tokio::spawn(connections::serve(
        listener,
        app,
        options.connections,
        shutdown_rx.clone(),
    )));
    background.push(tokio::spawn(
        broker.clone().run_sweeper(shutdown_rx.clone()),
    ));
    let reporter = reporter(shared.board.clone(), journal.clone());
    let mut control = Control {
        store: store.clone(),
        options,
        shared: shared.clone(),
        operator,
        secrets,
        http: cortex_client::http_client(),
        reporter,
        groups: BTreeMap::new(),
        alerts: AlertEngine::default(),
        labels: BTreeMap::new(),
        revision: 0,
    };
    {
        let mut header = shared.header.lock().unwrap_or_else(|p| p.into_inner());
        header.url = url.clone();
    }
    // Before any agent starts: what a previous run left must not go on
    // consuming beside the new processes.
    let leftover = leftovers::stop(&*store).await?;
    if !leftover.is_empty() {
        tracing::warn!(
            processes = %leftover.join(", "),
            "stopped agent processes a previous run left running"
        );
    }
    control.load(&applied, &runtime_config, &url);
    store
        .write(vec![
            Op::Meta {
                key: RUNTIME_URL.into(),
                value: Some(url.clone()),
            },
            Op::Audit(AuditEntry {
                at_ms: now_ms(),
                actor: "runtime".into(),
                action: "start".into(),
                detail: format!("revision {} on {url}", applied.revision),
            }),
        ])
        .await?;
    tracing::info!(revision = applied.revision, url = %url, "runtime started");
    let control_task = tokio::spawn(control.run(url.clone(), shutdown_rx));
    Ok(Runtime {
        url,
        operator_token,
        shared,
        shutdown,
        control: control_task,
        background,
        journal,
    })
}

fn reporter(board: Arc<Mutex<Board>>, journal: Journal) -> Reporter {
    Arc::new(move |report: Report| {
        let at_ms = now_ms();
        board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&report, at_ms);
        let level_warn = matches!(
            report.state,
            HealthState::Unhealthy | HealthState::Restarting | HealthState::Degraded
        );
        if level_warn {
            tracing::warn!(agent = %report.agent, replica = report.replica, state = %report.state, restarts = report.restarts, detail = %report.detail, "agent health");
        } else {
            tracing::info!(agent = %report.agent, replica = report.replica, state = %report.state, pid = report.pid, detail = %report.detail, "agent health");
        }
        let mut ops = vec![Op::Health(HealthRecord {
            agent: report.agent.clone(),
            replica: report.replica,
            at_ms,
            state: report.state.as_str().into(),
            detail: report.detail.clone(),
        })];
        match report.state {
            HealthState::Starting if report.pid.is_some() => {
                ops.push(leftovers::record(&report.agent, report.replica, report.pid));
            }
            HealthState::Restarting | HealthState::Stopped | HealthState::Failed => {
                ops.push(leftovers::record(&report.agent, report.replica, None));
            }
            _ => {}
        }
        journal.record(ops);
    })
}

impl Control {
    /// Takes an applied config: broker routes, alert rules, agents.
    fn load(&mut self, applied: &Applied, config: &RuntimeConfig, url: &str) {
        self.revision = applied.revision;
        self.labels = agents::labels(config);
        self.alerts.set_rules(AlertRule::from_runtime(config));
        let entries = &config.agents;
        let mut statuses: BTreeMap<String, AgentStatus> = BTreeMap::new();
        // Stop agents that left or changed.
        let fingerprints: BTreeMap<&String, String> = entries
            .iter()
            .map(|(name, entry)| {
                (
                    name,
                    format!(
                        "{}{}",
                        serde_json::to_string(entry).unwrap_or_default(),
                        applied.tokens.get(name).map_or("", String::as_str)
                    ),
                )
            })
            .collect();
        let stale: Vec<String> = self
            .groups
            .iter()
            .filter(|(name, g)| fingerprints.get(name) != Some(&g.fingerprint))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(group) = self.groups.remove(&name) {
                let _ = group.stop.send(true);
                // Their tasks end on their own; the board entry goes with the agent.
                drop(group.tasks);
            }
            self.shared
                .board
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .agents
                .remove(&name);
        }
        for (name, entry) in entries {
            let local = agents::local_command(entry).is_some();
            let mut status = AgentStatus {
                local,
                ..AgentStatus::default()
            };
            if self.options.supervise && local && !self.groups.contains_key(name) {
                let token = applied.tokens.get(name).cloned().unwrap_or_default();
                let prepared = agents::prepare(
                    name,
                    entry,
                    &token,
                    url,
                    &self.options.paths,
                    &self.secrets,
                    &self.http,
                );
                status.problems = prepared.problems.clone();
                // Problems are part of the status (`cortex up`'s banner,
                // `cortex status`, `/v1/status`); logged at debug only, so a
                // first screen says each once.
                for p in &prepared.problems {
                    tracing::debug!(agent = %name, problem = %p, "agent");
                }
                let (stop, stop_rx) = watch::channel(false);
                let tasks = prepared
                    .replicas
                    .into_iter()
                    .map(|r| {
                        tokio::spawn(run_replica(
                            r.spec,
                            r.launcher,
                            r.probe,
                            self.reporter.clone(),
                            stop_rx.clone(),
                        ))
                    })
                    .collect();
                self.groups.insert(
                    name.clone(),
                    AgentGroup {
                        fingerprint: fingerprints.get(name).cloned().unwrap_or_default(),
                        stop,
                        tasks,
                    },
                );
            } else if let Some(previous) = self
                .shared
                .header
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .agents
                .get(name)
            {
                status.problems = previous.problems.clone();
            }
            statuses.insert(name.clone(), status);
        }
        let mut header = self.shared.header.lock().unwrap_or_else(|p| p.into_inner());
        header.project = config.project.clone();
        header.revision = applied.revision;
        header.agents = statuses;
    }

    async fn reload(&mut self, url: &str) {
        let applied = match self.store.applied().await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the applied config");
                return;
            }
        };
        let read = RuntimeConfig::from_value(&applied.config)
            .map_err(ConfigError::from)
            .and_then(|config| {
                BrokerConfig::new(&applied, &config, self.operator).map(|broker| (config, broker))
            });
        let config = match read {
            Ok((config, broker)) => {
                self.shared.broker.configure(broker);
                config
            }
            Err(e) => {
                tracing::error!(error = %e, revision = applied.revision, "the new revision is not usable; keeping the running one");
                self.revision = applied.revision;
                return;
            }
        };
        tracing::info!(revision = applied.revision, "applying a new revision");
        self.load(&applied, &config, url);
        self.shared
            .workflows
            .reload(Arc::new(config), applied.revision)
            .await;
    }

    fn evaluate_alerts(&mut self) {
        let status = self.shared.status();
        let healths: Vec<AgentHealth> = status
            .agents
            .iter()
            .filter_map(|(name, a)| {
                Some(AgentHealth {
                    agent: name.clone(),
                    labels: self.labels.get(name).cloned().unwrap_or_default(),
                    state: a.worst()?,
                })
            })
            .collect();
        let notifications = self.alerts.evaluate(Instant::now(), now_ms(), &healths);
        self.shared
            .header
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .alerts_firing = self.alerts.firing().map(str::to_string).collect();
        for n in notifications {
            tracing::warn!(rule = %n.rule, status = n.status, "alert");
            let store = self.store.clone();
            let http = self.http.clone();
            let secrets = self.secrets.clone();
            tokio::spawn(async move {
                let mut outcome = Vec::new();
                for hook in &n.webhooks {
                    let key = match &hook.secret_ref {
                        Some(name) => match secrets.get_single(name) {
                            Ok(k) => Some(k),
                            Err(e) => {
                                outcome.push(format!("{}: not sent: {e}", hook.url));
                                continue;
                            }
                        },
                        None => None,
                    };
                    match alerts::send(&http, &hook.url, key.as_deref().map(str::as_bytes), &n.body)
                        .await
                    {
                        Ok(()) => outcome.push(format!("{}: sent", hook.url)),
                        Err(e) => outcome.push(format!("{}: failed: {e}", hook.url)),
                    }
                }
                for o in &outcome {
                    tracing::info!(rule = %n.rule, status = n.status, outcome = %o, "alert webhook");
                }
                let _ = store
                    .write(vec![Op::Audit(AuditEntry {
                        at_ms: now_ms(),
                        actor: "runtime".into(),
                        action: format!("alert-{}", n.status),
                        detail: format!("{}: {}", n.rule, outcome.join("; ")),
                    })])
                    .await;
            });
        }
    }

    /// The control loop: new revisions and alerts until shutdown, then
    /// every agent stopped.
    async fn run(mut self, url: String, mut shutdown: watch::Receiver<bool>) {
        let mut next_poll = Instant::now() + self.options.poll;
        let mut next_alerts = Instant::now() + self.options.alert_period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_poll.min(next_alerts)) => {}
                _ = shutdown.changed() => break,
            }
            let now = Instant::now();
            if now >= next_poll {
                next_poll = now + self.options.poll;
                match self.store.revision().await {
                    Ok(r) if r != self.revision => self.reload(&url).await,
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot read the applied revision"),
                }
            }
            if now >= next_alerts {
                next_alerts = now + self.options.alert_period;
                self.evaluate_alerts();
            }
        }
        for (_, group) in std::mem::take(&mut self.groups) {
            let _ = group.stop.send(true);
            for task in group.tasks {
                let _ = task.await;
            }
        }
    }
}

impl Runtime {
    /// Stops the agents (SIGTERM, then SIGKILL after the grace period), the
    /// server and the sweeper; returns once everything the runtime
    /// acknowledged is in the store.
    pub async fn stop(self) -> Result<(), StoreError> {
        let _ = self.shutdown.send(true);
        let _ = self.control.await;
        for task in self.background {
            let _ = task.await;
        }
        // The journal writes in order: once this is durable, so is everything before it.
        self.journal
            .submit(vec![
                Op::Meta {
                    key: RUNTIME_URL.into(),
                    value: None,
                },
                Op::Audit(AuditEntry {
                    at_ms: now_ms(),
                    actor: "runtime".into(),
                    action: "stop".into(),
                    detail: "stopped cleanly".into(),
                }),
            ])
            .wait()
            .await
    }

    /// The status now.
    pub fn status(&self) -> RuntimeStatus {
        self.shared.status()
    }
}
