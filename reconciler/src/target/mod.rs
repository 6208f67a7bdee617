//! Where plans are applied. [`Target`] is the seam every command that
//! plans or applies goes through: plan a desired state against what the
//! target holds, apply a saved plan exactly, break a stuck lock. Two
//! implementations: [`EmbeddedTarget`] (the local state store `cortex up`
//! runs) and [`KubernetesTarget`] (a cluster, by server-side apply).
//!
//! A saved plan names its target (`kind`), so applying a plan file needs
//! no flag: [`SavedTargetPlan::load`] reads either kind.

pub mod embedded;
pub mod kubernetes;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use cortex_runtime::store::Store;

use crate::Desired;
use crate::plan::{Plan, PlanOptions, Summary};
use embedded::{EmbeddedError, SavedEmbeddedPlan};
use kubernetes::{ApplySettings, Cluster, ConnectOptions, KubeError, PlanSettings, SavedPlan};

/// A boxed future, so that [`Target`] can be used as `dyn Target`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a target could not plan, apply or unlock.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The embedded store refused or failed.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The cluster refused or failed.
    #[error(transparent)]
    Kubernetes(#[from] KubeError),
    /// A saved plan that cannot be read, or is for another target.
    #[error("{0}")]
    Plan(String),
}

/// A plan a target made: what to show, and what to save and apply.
#[derive(Debug)]
pub struct TargetPlan {
    /// The plan as shown (the model `cortex diff` renders).
    pub display: Plan,
    /// The applyable part, saved by `cortex plan -o`.
    pub saved: SavedTargetPlan,
    /// What the plan leaves out or will fail on, one sentence each
    /// (objects kept that left the project, field conflicts).
    pub notes: Vec<String>,
}

/// A saved plan of either target.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum SavedTargetPlan {
    /// For the embedded state store.
    Embedded(SavedEmbeddedPlan),
    /// For a Kubernetes cluster.
    Kubernetes(Box<SavedPlan>),
}

impl SavedTargetPlan {
    /// Reads a plan file written by `cortex plan -o`, of either target.
    pub fn load(path: &Path) -> Result<SavedTargetPlan, TargetError> {
        let not_a_plan = |why: String| {
            TargetError::Plan(format!(
                "{}: not a plan saved by `cortex plan -o`: {why}",
                path.display()
            ))
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| TargetError::Plan(format!("cannot read {}: {e}", path.display())))?;
        let kind = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string));
        if kind.as_deref() == Some(embedded::PLAN_KIND) {
            serde_json::from_str(&text)
                .map(SavedTargetPlan::Embedded)
                .map_err(|e| not_a_plan(e.to_string()))
        } else {
            serde_json::from_str(&text)
                .map(|p| SavedTargetPlan::Kubernetes(Box::new(p)))
                .map_err(|e| not_a_plan(e.to_string()))
        }
    }

    /// What the plan changes.
    pub fn summary(&self) -> &Summary {
        match self {
            SavedTargetPlan::Embedded(p) => &p.summary,
            SavedTargetPlan::Kubernetes(p) => &p.summary,
        }
    }

    /// Whether applying it writes anything: changes, or (embedded) a first
    /// revision for a store that holds none yet.
    pub fn needs_apply(&self) -> bool {
        match self {
            SavedTargetPlan::Embedded(p) => p.summary.has_changes() || p.base_revision == 0,
            SavedTargetPlan::Kubernetes(p) => p.summary.has_changes(),
        }
    }

    /// The plan as the JSON `cortex plan -o` writes.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
    }
}

/// How to apply.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// How long to wait for someone else's lock.
    pub lock_timeout: Duration,
    /// Wait for rollouts, this long at most (Kubernetes only).
    pub wait: Option<Duration>,
    /// Take over fields other managers own (Kubernetes only).
    pub force_conflicts: bool,
    /// Show progress while waiting (on a terminal).
    pub progress: bool,
    /// Notified to stop (Ctrl-C): no further writes, the lock released.
    pub interrupt: Option<Arc<tokio::sync::Notify>>,
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Whether anything was written.
    pub changed: bool,
    /// The store's new revision (embedded).
    pub revision: Option<u64>,
    /// The namespace it created (Kubernetes).
    pub namespace_created: Option<String>,
    /// Objects created.
    pub created: usize,
    /// Objects updated.
    pub updated: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// The runtime that picks the change up, when one is running (embedded).
    pub runtime_url: Option<String>,
}

/// Where plans are applied.
pub trait Target: Send + Sync {
    /// What a confirmation names (`the state store PATH`, `namespace N on SERVER`).
    fn describe(&self, plan: &SavedTargetPlan) -> String;

    /// Plans `desired` (compiled from the project in `dir`) against what
    /// the target holds.
    fn plan<'a>(
        &'a self,
        dir: &'a Path,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<TargetPlan, TargetError>>;

    /// Applies a saved plan exactly (refused when the target moved on).
    fn apply<'a>(
        &'a self,
        plan: &'a SavedTargetPlan,
        options: &'a ApplyOptions,
    ) -> BoxFuture<'a, Result<ApplyOutcome, TargetError>>;

    /// Breaks the project's apply lock; says what it did.
    fn unlock<'a>(&'a self, desired: &'a Desired) -> BoxFuture<'a, Result<String, TargetError>>;
}

/// Who is applying: `user@host`, and the CI job when there is one.
pub fn holder_identity() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = host_name();
    let job = [
        ("GITHUB_RUN_ID", "GitHub Actions run"),
        ("CI_JOB_ID", "GitLab CI job"),
        ("BUILD_ID", "build"),
    ]
    .iter()
    .find_map(|(var, what)| std::env::var(var).ok().map(|v| format!(" ({what} {v})")));
    format!("{user}@{host}{}", job.unwrap_or_default())
}

/// This machine's name (the kernel's, else `$HOSTNAME`, else
/// `unknown-host`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn wrong_target(wanted: &str) -> TargetError {
    TargetError::Plan(format!("the plan is not for {wanted}"))
}

/// What unlocking the embedded target says: there is nothing to break.
pub const EMBEDDED_UNLOCK: &str = "The embedded target's lock is an OS file lock, released when the apply holding it exits: there is nothing to unlock. (cortex unlock --target kubernetes breaks a cluster's Lease.)";

/// The embedded state store (`targets.embedded.state`, default
/// `.cortex/state.db`): holds the whole runtime config, revision by revision.
#[derive(Debug, Default)]
pub struct EmbeddedTarget;

impl Target for EmbeddedTarget {
    fn describe(&self, plan: &SavedTargetPlan) -> String {
        match plan {
            SavedTargetPlan::Embedded(p) => format!("the state store {}", p.state.display()),
            SavedTargetPlan::Kubernetes(_) => "a cluster".into(),
        }
    }

    fn plan<'a>(
        &'a self,
        dir: &'a Path,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<TargetPlan, TargetError>> {
        Box::pin(async move {
            let state = embedded::state_path(dir, desired);
            let applied = embedded::read_applied(&state)
                .await
                .map_err(EmbeddedError::from)?;
            let planned =
                embedded::plan_against(applied.as_ref(), &state, desired, &PlanOptions::default());
            Ok(TargetPlan {
                display: planned.display,
                saved: SavedTargetPlan::Embedded(planned.saved),
                notes: Vec::new(),
            })
        })
    }

    fn apply<'a>(
        &'a self,
        plan: &'a SavedTargetPlan,
        options: &'a ApplyOptions,
    ) -> BoxFuture<'a, Result<ApplyOutcome, TargetError>> {
        Box::pin(async move {
            let SavedTargetPlan::Embedded(plan) = plan else {
                return Err(wrong_target("the embedded state store"));
            };
            let store = cortex_runtime::store::SqliteStore::open(&plan.state)
                .map_err(EmbeddedError::from)?;
            let done =
                embedded::apply(&store, plan, &holder_identity(), options.lock_timeout).await;
            let runtime_url = match &done {
                Ok(_) => store
                    .meta(cortex_runtime::engine::RUNTIME_URL)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            store.close();
            let done = done?;
            let s = &plan.summary;
            Ok(ApplyOutcome {
                changed: done.changed,
                revision: Some(done.revision),
                namespace_created: None,
                created: s.create,
                updated: s.update,
                deleted: s.delete,
                runtime_url,
            })
        })
    }

    fn unlock<'a>(&'a self, _desired: &'a Desired) -> BoxFuture<'a, Result<String, TargetError>> {
        Box::pin(async { Ok(EMBEDDED_UNLOCK.to_string()) })
    }
}

/// A Kubernetes cluster. Connects on first use (with the project's
/// `targets.kubernetes.context` when planning a project) and keeps the
/// connection for the apply that follows.
pub struct KubernetesTarget {
    connect: ConnectOptions,
    settings: PlanSettings,
    cluster: tokio::sync::OnceCell<Cluster>,
}

impl KubernetesTarget {
    /// A cluster reached with `connect` (no context: the project's, then
    /// the kubeconfig's current one), planned with `settings`.
    pub fn new(connect: ConnectOptions, settings: PlanSettings) -> KubernetesTarget {
        KubernetesTarget {
            connect,
            settings,
            cluster: tokio::sync::OnceCell::new(),
        }
    }

    async fn cluster(&self, desired: Option<&Desired>) -> Result<&Cluster, KubeError> {
        self.cluster
            .get_or_try_init(|| async {
                let project_context = desired.and_then(|d| {
                    d.resolved
                        .project
                        .node
                        .str_at(&["spec", "targets", "kubernetes", "context"])
                        .map(str::to_string)
                });
                Cluster::connect(&ConnectOptions {
                    kubeconfig: self.connect.kubeconfig.clone(),
                    context: self.connect.context.clone().or(project_context),
                })
                .await
            })
            .await
    }

    /// The API server, once connected.
    pub fn server(&self) -> Option<&str> {
        self.cluster.get().map(|c| c.server.as_str())
    }
}

fn kubernetes_notes(saved: &SavedPlan) -> Vec<String> {
    let mut notes = Vec::new();
    if !saved.orphans.is_empty() {
        notes.push(format!(
            "{} object{} carry the ownership label but left the project (kept; --prune deletes them): {}",
            saved.orphans.len(),
            if saved.orphans.len() == 1 { "" } else { "s" },
            saved.orphans.join(", ")
        ));
    }
    for c in &saved.conflicts {
        for f in &c.fields {
            notes.push(format!(
                "conflict: {} {} is managed by {:?}; apply needs --force-conflicts to take it over",
                c.object, f.field, f.manager
            ));
        }
    }
    notes
}

impl Target for KubernetesTarget {
    fn describe(&self, plan: &SavedTargetPlan) -> String {
        let server = self.server().unwrap_or("the cluster");
        match plan {
            SavedTargetPlan::Kubernetes(p) => format!("namespace {} on {server}", p.namespace),
            SavedTargetPlan::Embedded(_) => "the embedded state store".into(),
        }
    }

    fn plan<'a>(
        &'a self,
        _dir: &'a Path,
        desired: &'a Desired,
    ) -> BoxFuture<'a, Result<TargetPlan, TargetError>> {
        Box::pin(async move {
            let cluster = self.cluster(Some(desired)).await?;
            let planned = kubernetes::plan(cluster, desired, &self.settings).await?;
            Ok(TargetPlan {
                notes: kubernetes_notes(&planned.saved),
                display: planned.display,
                saved: SavedTargetPlan::Kubernetes(Box::new(planned.saved)),
            })
        })
    }

    fn apply<'a>(
        &'a self,
        plan: &'a SavedTargetPlan,
        options: &'a ApplyOptions,
    ) -> BoxFuture<'a, Result<ApplyOutcome, TargetError>> {
        Box::pin(async move {
            let SavedTargetPlan::Kubernetes(plan) = plan else {
                return Err(wrong_target("a Kubernetes cluster"));
            };
            let cluster = self.cluster(None).await?;
            let settings = ApplySettings {
                force_conflicts: options.force_conflicts,
                lock_timeout: options.lock_timeout,
                wait: options.wait,
                progress: options.progress,
                interrupt: options.interrupt.clone(),
                ..ApplySettings::default()
            };
            let report = kubernetes::apply(cluster, plan, &settings).await?;
            Ok(ApplyOutcome {
                changed: report.created + report.updated + report.deleted > 0
                    || report.namespace_created,
                revision: None,
                namespace_created: report.namespace_created.then(|| plan.namespace.clone()),
                created: report.created,
                updated: report.updated,
                deleted: report.deleted,
                runtime_url: None,
            })
        })
    }

    fn unlock<'a>(&'a self, desired: &'a Desired) -> BoxFuture<'a, Result<String, TargetError>> {
        Box::pin(async move {
            let cluster = self.cluster(Some(desired)).await?;
            let (name, namespace) = (&desired.project.name, &desired.project.namespace);
            Ok(
                match kubernetes::lock::unlock(cluster, namespace, name).await? {
                    Some(holder) => {
                        format!("Broke the lock of {name} in {namespace} (held by {holder}).")
                    }
                    None => format!("{name} in {namespace} was not locked."),
                },
            )
        })
    }
}
