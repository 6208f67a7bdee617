//! `cortex serve`: the GitOps reconciler. One loop, in the runtime's shape
//! (wait in one `select!` for the first of: the interval, a wake-up, shutdown;
//! then act): fetch the source, compile the head, and when it compiles
//! sync it to the target ([`target`]: the embedded store the runtime runs
//! from, or a cluster); when it does not, keep the last good revision and
//! say why, with the diagnostics ([`status`]).
//! Errors back off exponentially (capped at the interval's 10×, at most
//! 5 min). Status goes to [`api`].
//!
//! The same plan finds drift (healed, or reported without self-heal);
//! `--sync manual` holds new commits until a sync is asked for; a sync may
//! pin a commit. Replicas sharing a state store elect a leader
//! ([`leader`]): only the leader reconciles and runs the runtime; a standby
//! serves the API read-only ([`standby`]), showing the status the leader
//! publishes in the store, and takes over when the leader's lease ends.

pub mod api;
pub mod auth;
pub mod compile;
pub mod leader;
pub mod metrics;
pub mod source;
pub mod standby;
pub mod state;
pub mod status;
pub mod target;
pub mod watcher;
pub mod workflows;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_compiler::Options;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use cortex_runtime::store::SqliteStore;
use cortex_runtime::tokens::{self, TokenHash};

use crate::up::{RuntimeStore, Up, UpOptions, up_with_store};
pub use source::{Head, Source};
pub use status::{
    HISTORY, LastError, ObjectView, ProblemView, ServeStatus, SharedHistory, SharedPin,
    SharedStatus, SharedTrigger, SyncRecord,
};
use status::{now, problems};
pub use target::ServeTarget;
use target::SyncPlan;

/// How `serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where the project comes from.
    pub source: Source,
    /// Where it is synced to.
    pub target: ServeTarget,
    /// The project's directory inside the repository.
    pub subdir: Option<PathBuf>,
    /// Environment overlay.
    pub env: Option<String>,
    /// How often the source is fetched.
    pub interval: Duration,
    /// Where the state store (and the remote's cache) live.
    pub state: PathBuf,
    /// Address of the runtime and the API.
    pub listen: SocketAddr,
    /// Start the agents that have a `local.command`.
    pub supervise: bool,
    /// The secret of `POST /api/v1/webhook` (GitHub's HMAC); without it
    /// the webhook is off.
    pub webhook_secret: Option<Vec<u8>>,
    /// Apply a new commit when it comes (else it waits, `out-of-sync`,
    /// until `POST /api/v1/sync`).
    pub auto_sync: bool,
    /// Put drift back at once (else it is reported, `out-of-sync`, until
    /// `POST /api/v1/sync`).
    pub self_heal: bool,
    /// More tokens than the operator's (`--tokens`).
    pub tokens_file: Option<PathBuf>,
    /// How long the leader's lease lasts without a renewal: a standby takes
    /// over within this time of the leader's death.
    pub lease: Duration,
}

/// The lease time when none is given (client-go's default).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// The API served on its own until the first revision runs.
struct Standalone {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The reconciler: its status, its wake-up, and the running project.
pub struct Serve {
    options: ServeOptions,
    status: SharedStatus,
    history: SharedHistory,
    trigger: SharedTrigger,
    pin: SharedPin,
    wake: Arc<Notify>,
    up: Option<Up>,
    tokens: Arc<auth::Tokens>,
    policies: Arc<Mutex<auth::Policies>>,
    /// The head's plan against the store, as last made.
    plan: Arc<Mutex<Option<crate::Plan>>>,
    metrics: Arc<metrics::ServeMetrics>,
    /// The cluster synced to (the Kubernetes target).
    cluster: Option<Arc<target::Cluster>>,
    /// The running runtime's shared state (the API's agents and topics).
    runtime: Arc<Mutex<Option<cortex_runtime::server::Shared>>>,
    /// When the current head was first seen (for fetch → applied).
    head_seen: Option<Instant>,
    /// Serve's own handle on the state store (the API reads the audit log).
    store: Option<Arc<SqliteStore>>,
    standalone: Option<Standalone>,
    /// What compiled last (its [`Serve::compile_key`]), and what it
    /// compiled to.
    compiled: Option<(String, Arc<compile::Compiled>)>,
    /// The local directory's watcher (a local source).
    watched: Option<watcher::Watched>,
    /// The compile key of what was synced last.
    synced_key: Option<String>,
    /// This replica's name in the lease.
    holder: String,
    /// The status last published in the store for the standbys.
    published: Option<standby::Published>,
}

/// Why `serve` could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The runtime could not start or stop cleanly.
    #[error(transparent)]
    Up(#[from] crate::up::UpError),
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] cortex_runtime::store::StoreError),
    /// The state directory could not be made.
    #[error("cannot create the state directory {path}: {message}")]
    StateDir {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
    /// The tokens file is unreadable or has a bad entry (its line named).
    #[error("{0}")]
    Tokens(String),
    /// The address is taken or not allowed.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        message: String,
    },
}

impl Serve {
    /// A reconciler for `options` (nothing runs until [`Serve::run`]).
    pub fn new(options: ServeOptions) -> Serve {
        let status = ServeStatus {
            repo: options.source.describe(),
            branch: options.source.branch().map(str::to_string),
            sync_state: "syncing".into(),
            target: options.target.name().into(),
            ..ServeStatus::default()
        };
        let cluster = match &options.target {
            ServeTarget::Embedded => None,
            ServeTarget::Kubernetes { connect, prune } => {
                Some(Arc::new(target::Cluster::new(connect.clone(), *prune)))
            }
        };
        Serve {
            cluster,
            options,
            status: Arc::new(Mutex::new(status)),
            history: Arc::default(),
            trigger: Arc::default(),
            pin: Arc::default(),
            wake: Arc::new(Notify::new()),
            up: None,
            tokens: Arc::default(),
            policies: Arc::default(),
            plan: Arc::default(),
            metrics: Arc::default(),
            runtime: Arc::default(),
            head_seen: None,
            store: None,
            standalone: None,
            compiled: None,
            holder: String::new(),
            published: None,
            watched: None,
            synced_key: None,
        }
    }

    /// Makes the state directory and the operator token, takes the
    /// address and serves the API on it until the first revision runs;
    /// returns the API's URL.
    pub async fn listen(&mut self) -> Result<String, ServeError> {
        let state = self.options.state.clone();
        std::fs::create_dir_all(&state).map_err(|e| ServeError::StateDir {
            path: state.display().to_string(),
            message: e.to_string(),
        })?;
        let store = Arc::new(SqliteStore::open(&self.state_path())?);
        let token = tokens::operator_token(&state, &*store).await;
        self.store = Some(store);
        let mut tokens = auth::Tokens::operator_only(TokenHash::of(&token?));
        if let Some(path) = &self.options.tokens_file {
            tokens = tokens.load(path).map_err(ServeError::Tokens)?;
        }
        self.tokens = Arc::new(tokens);
        self.serve_standalone().await?;
        let url = format!("http://{}", self.options.listen);
        self.holder = leader::holder_name(&url);
        if let Source::Local { dir } = &self.options.source {
            match watcher::watch(dir, &state, self.wake.clone(), self.trigger.clone()) {
                Ok(watched) => self.watched = Some(watched),
                Err(error) => tracing::warn!(
                    %error,
                    "cannot watch the directory: it is read again at each interval"
                ),
            }
        }
        Ok(url)
    }

    /// The status the loop keeps.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    fn set(&self, change: impl FnOnce(&mut ServeStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The state store's path.
    pub fn state_path(&self) -> PathBuf {
        self.options.state.join("state.db")
    }

    /// Serves the API alone on the address (until the runtime takes it).
    async fn serve_standalone(&mut self) -> Result<(), ServeError> {
        let addr = self.options.listen;
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServeError::Listen {
                    addr,
                    message: e.to_string(),
                })?;
        self.options.listen = listener.local_addr().map_err(|e| ServeError::Listen {
            addr,
            message: e.to_string(),
        })?;
        let app = api::standalone(self.api_context());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                })
                .await;
        });
        self.standalone = Some(Standalone { stop, task });
        Ok(())
    }

    /// Reconciles until `shutdown`, then stops the runtime ([`Serve::listen`]
    /// first).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), ServeError> {
        if self.standalone.is_none() && self.up.is_none() {
            self.listen().await?;
        }
        let keeper: Arc<dyn leader::LeaseKeeper> = match (&self.options.target, &self.store) {
            (ServeTarget::Kubernetes { connect, .. }, _) => {
                Arc::new(target::ClusterLease::new(connect.clone(), &self.served()))
            }
            (ServeTarget::Embedded, Some(store)) => Arc::new(leader::StoreLease(store.clone())),
            (ServeTarget::Embedded, None) => {
                return Err(ServeError::Store(cortex_runtime::store::StoreError::Closed));
            }
        };
        let (tell, mut leadership) = watch::channel(leader::Leadership::default());
        let (stop_election, election_stopped) = watch::channel(false);
        let elector = leader::Elector::new(keeper.clone(), self.holder.clone(), self.options.lease);
        let election = tokio::spawn(elector.run(tell, election_stopped));
        let mut next = Instant::now();
        let mut failures: u32 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.wake.notified() => {}
                _ = leadership.changed() => {}
                _ = shutdown.changed() => break,
            }
            let known = leadership.borrow_and_update().clone();
            self.set(|s| {
                s.leader = known.leader;
                s.leader_id = known.holder.clone();
                if known.leader {
                    s.standby = None;
                }
            });
            if !known.leader {
                self.stand_by(&known).await;
                failures = 0;
                next = Instant::now() + self.options.interval.min(self.options.lease / 5);
                continue;
            }
            let ok = self.reconcile().await;
            self.publish().await;
            failures = if ok { 0 } else { failures.saturating_add(1) };
            next = Instant::now() + self.delay(failures);
        }
        let _ = stop_election.send(true);
        let _ = election.await;
        self.stop_standalone().await;
        let led = self.up.is_some();
        if let Some(up) = self.up.take() {
            up.stop().await?;
        }
        if led || leadership.borrow().leader {
            leader::Elector::release(&*keeper, &self.holder).await;
        }
        if let Some(store) = self.store.take() {
            store.close();
        }
        Ok(())
    }

    /// The synced revision, when the embedded target's reconcile has
    /// nothing to do: the head is what was synced, nothing failed or waits
    /// since, and the store is still at the revision serve applied (any
    /// change of the applied config, a manual `cortex apply` included, moves
    /// the revision) — so there is nothing to compile or plan.
    async fn unchanged(&self, key: Option<&String>) -> Option<u64> {
        let (Some(up), Some(synced)) = (&self.up, &self.synced_key) else {
            return None;
        };
        if self.cluster.is_some() || key != Some(synced) {
            return None;
        }
        let revision = {
            let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            if s.sync_state != "synced" || s.last_error.is_some() {
                return None;
            }
            s.synced_revision?
        };
        match up.revision().await {
            Ok(now) if now == revision => Some(revision),
            _ => None,
        }
    }

    /// Whether the compiled head is kept once synced: with the Kubernetes
    /// target every interval plans it against the cluster; the embedded
    /// target plans only when the store moved (then it compiles again), so
    /// a large project's compile is not kept in memory.
    fn keep_compiled(&self) -> bool {
        self.cluster.is_some()
    }

    /// What a compile is cached under: a fetched commit; a watched local
    /// directory's commit and change count; nothing for a directory that
    /// cannot be watched (compiled at each reconcile).
    fn compile_key(&self, head: &Head) -> Option<String> {
        match (&self.options.source, &self.watched) {
            (Source::Remote { .. }, _) => head.commit.clone(),
            (Source::Local { .. }, Some(watched)) => Some(format!(
                "{}@{}",
                head.commit.as_deref().unwrap_or("work tree"),
                watched.generation.load(std::sync::atomic::Ordering::SeqCst)
            )),
            (Source::Local { .. }, None) => None,
        }
    }

    /// What is served, as replicas of this `serve` all name it.
    fn served(&self) -> String {
        format!(
            "{} {} {} {}",
            self.options.source.describe(),
            self.options.source.branch().unwrap_or(""),
            self.options
                .subdir
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            self.options.env.as_deref().unwrap_or("")
        )
    }

    async fn stop_standalone(&mut self) {
        if let Some(standalone) = self.standalone.take() {
            let _ = standalone.stop.send(true);
            let _ = standalone.task.await;
        }
    }

    /// The wait before the next reconcile: the interval, or after failures
    /// a backoff from 1 s doubling up to 10 intervals (at most 5 min).
    fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.options.interval;
        }
        let cap = (self.options.interval * 10).min(Duration::from_secs(300));
        Duration::from_secs(1)
            .saturating_mul(2u32.saturating_pow(failures - 1))
            .min(cap)
            .max(self.options.interval.min(cap))
    }

    /// One reconcile; `false` when it failed.
    async fn reconcile(&mut self) -> bool {
        let trigger = self
            .trigger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| "interval".to_string());
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let compiles = move || metrics.compiles.load(std::sync::atomic::Ordering::Relaxed);
        let compiles_before = compiles();
        let ok = self.reconcile_once(&trigger).await;
        self.metrics.reconciled(started.elapsed());
        let took = started.elapsed().as_millis() as u64;
        self.set(|s| {
            s.reconciles += 1;
            s.last_reconcile_ms = took;
        });
        if compiles() != compiles_before {
            // The compile's and the plan's garbage was freed on rayon's
            // workers, which keep it while they sit idle: given back now
            // (not counted in the reconcile's time).
            let _ =
                tokio::task::spawn_blocking(cortex_compiler::memory::release_on_every_thread).await;
        }
        ok
    }

    async fn reconcile_once(&mut self, trigger: &str) -> bool {
        let Some(head) = self.fetch_head(trigger).await else {
            return false;
        };
        let key = self.compile_key(&head);
        if let Some(revision) = self.unchanged(key.as_ref()).await {
            // A sync asked for is kept and audited even when it had
            // nothing to do.
            if trigger.starts_with("api") {
                let detail = format!("revision {revision}");
                self.record(head.commit.clone(), trigger, "unchanged", detail)
                    .await;
            }
            self.set(|s| s.ready = true);
            return true;
        }
        let Some(desired) = self.desired_of(&head, key.as_ref(), trigger).await else {
            return false;
        };
        let already = self.synced_before(&head, key.as_ref());
        // The plan of the head against the target (none before the
        // runtime runs): shown on `GET /api/v1/plan`, and what a sync applies.
        let planned = match self.plan_head(&head.project, &desired).await {
            Ok(planned) => planned,
            Err(e) => {
                self.record(head.commit.clone(), trigger, "failed", e.clone())
                    .await;
                self.fail(head.commit.clone(), e, Vec::new());
                return false;
            }
        };
        if let Some(planned) = &planned {
            *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(planned.display().clone());
            let (objects, notes) = (planned.objects(), planned.notes());
            self.set(|s| {
                s.objects = objects;
                s.notes = notes;
            });
        }
        // Without a sync asked for, manual sync holds a new commit and no
        // self-heal holds drift: reported, not applied.
        if !trigger.starts_with("api") && self.hold(planned.as_ref(), already) {
            return true;
        }
        let applied = match (&self.up, &self.cluster, &planned) {
            (Some(up), _, Some(SyncPlan::Embedded(planned))) => up
                .apply_planned(planned)
                .await
                .map(|r| (r.map(|(rev, changed)| (Some(rev), changed)), None))
                .map_err(|e| e.to_string()),
            (_, Some(cluster), Some(SyncPlan::Kubernetes(planned))) => cluster
                .apply(planned)
                .await
                .map(|r| (r.map(|changed| (None, changed)), None)),
            _ => self
                .start(&head.project, &desired)
                .await
                .map(|url| (None, Some(url)))
                .map_err(|e| e.to_string()),
        };
        match applied {
            Ok((change, url)) => {
                let revision = match (&change, &self.up) {
                    (Some((r, _)), _) if r.is_some() => *r,
                    (_, Some(up)) => Some(up.running.status().revision),
                    _ => None,
                };
                // The head applied before, applied again: the target had
                // moved behind serve's back (a manual apply, an edit in the
                // cluster) — drift, healed.
                let healed = already && change.is_some() && url.is_none();
                let started_fresh = url.is_some()
                    && self.up.as_ref().is_some_and(|up| {
                        matches!(up.applied, crate::up::Applied::Revision { .. })
                    });
                let outcome = match (&change, healed) {
                    (_, true) => "healed",
                    (Some(_), false) => "applied",
                    (None, _) if started_fresh => "applied",
                    (None, _) => "unchanged",
                };
                if healed {
                    self.metrics
                        .drift_healed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if outcome == "applied"
                    && let Some(seen) = self.head_seen.take()
                {
                    self.metrics.fetch_to_applied.observe(seen.elapsed());
                }
                // Every sync that changed the target, and every sync asked
                // for, is kept and audited.
                if outcome != "unchanged" || trigger.starts_with("api") {
                    let detail = match (revision, &change) {
                        (Some(revision), _) => format!("revision {revision}"),
                        (None, Some((_, changed))) => format!("{} objects changed", changed.len()),
                        (None, None) => "nothing changed".to_string(),
                    };
                    tracing::info!(outcome, detail = %detail, trigger, "sync");
                    self.record(head.commit.clone(), trigger, outcome, detail)
                        .await;
                }
                *self.policies.lock().unwrap_or_else(|p| p.into_inner()) =
                    auth::Policies::from_resolved(&desired.resolved);
                self.synced_key = key.clone();
                if !self.keep_compiled() {
                    self.compiled = None;
                }
                self.set(|s| {
                    s.synced_commit = head.commit.clone();
                    s.synced_revision = revision.or(s.synced_revision);
                    s.sync_state = "synced".into();
                    s.last_sync_at = Some(now());
                    s.last_error = None;
                    s.ready = true;
                    s.pending = Vec::new();
                    if healed {
                        s.drift = change.map(|(_, changed)| changed).unwrap_or_default();
                    }
                    for object in &mut s.objects {
                        object.status = "synced".into();
                    }
                    if url.is_some() {
                        s.runtime = url;
                    }
                });
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot apply");
                self.record(head.commit.clone(), trigger, "failed", e.clone())
                    .await;
                self.fail(head.commit.clone(), e, Vec::new());
                if self.up.is_none()
                    && self.standalone.is_none()
                    && let Err(e) = self.serve_standalone().await
                {
                    tracing::error!(error = %e, "the API cannot be served");
                }
                false
            }
        }
    }

    /// Whether a reconcile not asked for holds what it found — a new commit
    /// under manual sync, drift without self-heal — and reports it
    /// out-of-sync instead of applying it.
    fn hold(&self, planned: Option<&SyncPlan>, already: bool) -> bool {
        let held = match planned {
            // A replica taking over runs what the leader synced.
            None => (!self.options.auto_sync && !already).then(Vec::new),
            Some(planned) => {
                let changed = planned.changed();
                let wait = if already {
                    !self.options.self_heal
                } else {
                    !self.options.auto_sync
                };
                (!changed.is_empty() && wait).then_some(changed)
            }
        };
        if let Some(pending) = held {
            if already {
                self.metrics
                    .drift_detected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.set(|s| {
                if already {
                    s.drift = pending.clone();
                }
                s.pending = pending;
                s.sync_state = "out-of-sync".into();
                s.last_error = None;
                s.ready = true;
            });
            return true;
        }
        false
    }

    /// Fetches the branch (or the pinned commit) and shows its head; `None`
    /// when the fetch failed (recorded and reported).
    async fn fetch_head(&mut self, trigger: &str) -> Option<Head> {
        let source = self.options.source.clone();
        let subdir = self.options.subdir.clone();
        let fetched = tokio::task::spawn_blocking(move || source.fetch(subdir.as_deref()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let pinned = self.pin.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.set(|s| s.pinned = pinned.clone());
        let fetched = match (fetched, &pinned) {
            (Ok(branch_head), Some(commit)) => {
                // The branch's head is shown; the pinned commit is synced.
                self.set(|s| s.head_commit = branch_head.commit.clone());
                let source = self.options.source.clone();
                let (commit, subdir) = (commit.clone(), self.options.subdir.clone());
                tokio::task::spawn_blocking(move || source.pinned(&commit, subdir.as_deref()))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            }
            (fetched, _) => fetched,
        };
        let head = match fetched {
            Ok(head) => head,
            Err(message) => {
                tracing::warn!(error = %message, "cannot fetch the repository; trying again");
                self.record(None, trigger, "failed", message.clone()).await;
                self.fail(None, message, Vec::new());
                return None;
            }
        };
        let new_head = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .head_commit
            != head.commit;
        if new_head && pinned.is_none() {
            self.head_seen = Some(Instant::now());
        }
        self.set(|s| s.head_commit = head.commit.clone());
        Some(head)
    }

    /// The head compiled (what compiled last time is reused); `None` when
    /// it does not compile (recorded and reported; the last good revision
    /// stays).
    async fn desired_of(
        &mut self,
        head: &Head,
        key: Option<&String>,
        trigger: &str,
    ) -> Option<Arc<compile::Compiled>> {
        // What compiled last time is not compiled again (kept while it is
        // needed: see `Serve::keep_compiled`).
        let cached = self
            .compiled
            .as_ref()
            .filter(|(compiled, _)| key == Some(compiled))
            .map(|(_, desired)| desired.clone());
        match cached {
            Some(desired) => Some(desired),
            None => {
                let options = Options {
                    env: self.options.env.clone(),
                };
                let (project, at) = (head.project.clone(), head.at.clone());
                self.metrics
                    .compiles
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let compiled = compile::on_its_thread(project, at, options).await;
                match compiled {
                    Ok(Ok(desired)) => {
                        let desired = Arc::new(desired);
                        self.compiled = key.cloned().map(|k| (k, desired.clone()));
                        Some(desired)
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(commit = ?head.commit, error = %e, "the head does not compile; the last good revision stays");
                        self.metrics
                            .compile_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let found = problems(&e);
                        self.record(head.commit.clone(), trigger, "failed", e.to_string())
                            .await;
                        self.fail(head.commit.clone(), e.to_string(), found);
                        None
                    }
                    Err(e) => {
                        self.record(head.commit.clone(), trigger, "failed", e.clone())
                            .await;
                        self.fail(head.commit.clone(), e, Vec::new());
                        None
                    }
                }
            }
        }
    }

    /// Whether the head was synced before, so that a change found now is
    /// drift: the same compile key — or, for a replica that has not synced
    /// yet, the commit the leader published.
    fn synced_before(&self, head: &Head, key: Option<&String>) -> bool {
        {
            let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            let same = match &self.synced_key {
                Some(synced) => key == Some(synced),
                None => {
                    matches!(self.options.source, Source::Remote { .. })
                        && s.synced_commit.is_some()
                        && s.synced_commit == head.commit
                }
            };
            same && s.last_error.is_none()
        }
    }

    /// The head's plan against the target: the cluster's live objects, or
    /// the running project's store (none before the runtime runs).
    async fn plan_head(
        &self,
        project: &Path,
        desired: &crate::Desired,
    ) -> Result<Option<SyncPlan>, String> {
        if let Some(cluster) = &self.cluster {
            return cluster.plan(project, desired).await.map(Some);
        }
        match &self.up {
            None => Ok(None),
            Some(up) => up
                .plan(desired)
                .await
                .map(|p| Some(SyncPlan::Embedded(p)))
                .map_err(|e| e.to_string()),
        }
    }

    /// Starts the runtime on the first revision that compiles; returns its URL.
    async fn start(
        &mut self,
        project: &Path,
        desired: &crate::Desired,
    ) -> Result<String, crate::up::UpError> {
        // The runtime takes the address over (with the API on it), and
        // runs on serve's own store: one writer for both.
        let store = match &self.store {
            Some(store) => RuntimeStore::Shared {
                path: self.state_path(),
                store: store.clone(),
            },
            None => RuntimeStore::Open(self.state_path()),
        };
        self.stop_standalone().await;
        let up = up_with_store(
            project,
            desired,
            UpOptions {
                listen: self.options.listen,
                supervise: self.options.supervise,
                poll: Duration::from_millis(500),
                alert_period: Duration::from_secs(1),
                routes: Some(api::routes(self.api_context())),
                metrics: Some({
                    let metrics = self.metrics.clone();
                    cortex_runtime::server::MetricsHook(Arc::new(move |out: &mut String| {
                        metrics.render(out)
                    }))
                }),
            },
            store,
        )
        .await?;
        let url = up.running.url.clone();
        *self.runtime.lock().unwrap_or_else(|p| p.into_inner()) = Some(up.running.shared.clone());
        self.up = Some(up);
        Ok(url)
    }

    fn fail(&self, commit: Option<String>, message: String, diagnostics: Vec<ProblemView>) {
        self.set(|s| {
            s.sync_state = "error".into();
            s.last_error = Some(LastError {
                commit,
                message,
                diagnostics,
            });
            s.ready = true;
        });
    }

    fn api_context(&self) -> api::Context {
        api::Context {
            status: self.status.clone(),
            history: self.history.clone(),
            trigger: self.trigger.clone(),
            pin: self.pin.clone(),
            wake: self.wake.clone(),
            tokens: self.tokens.clone(),
            policies: self.policies.clone(),
            plan: self.plan.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            runtime: self.runtime.clone(),
            webhook_secret: self.options.webhook_secret.clone().map(Arc::from),
        }
    }

    /// Keeps a sync in the history and writes it to the store's audit log
    /// (who: the caller of `POST /api/v1/sync`, else `serve`).
    async fn record(&self, commit: Option<String>, trigger: &str, outcome: &str, detail: String) {
        self.metrics.sync(outcome);
        if let Some(store) = &self.store {
            let actor = trigger.strip_prefix("api:").unwrap_or("serve");
            let what = format!(
                "{} ({trigger}): {detail}",
                commit.as_deref().unwrap_or("the work tree")
            );
            write_audit(&**store, actor, &format!("sync-{outcome}"), what).await;
        }
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(SyncRecord {
            commit,
            at: now(),
            trigger: trigger.to_string(),
            outcome: outcome.to_string(),
            detail,
        });
    }

    /// Wakes the loop now (a webhook, a sync asked for).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// Writes an entry to the store's audit log; a failure is logged (what it
/// records has happened).
async fn write_audit(
    store: &dyn cortex_runtime::store::Store,
    actor: &str,
    action: &str,
    detail: String,
) {
    let entry = cortex_runtime::store::AuditEntry {
        at_ms: cortex_runtime::store::now_ms(),
        actor: actor.to_string(),
        action: action.to_string(),
        detail,
    };
    let op = cortex_runtime::store::Op::Audit(entry);
    if let Err(e) = store.write(vec![op]).await {
        tracing::warn!(error = %e, action, "not written to the audit log");
    }
}
