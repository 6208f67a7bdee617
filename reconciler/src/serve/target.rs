//! Where `serve` syncs to: the embedded store the runtime inside runs from,
//! or a Kubernetes cluster (server-side apply, as `cortex apply --target
//! kubernetes` does, taking over fields another manager changed — what a
//! GitOps controller that heals drift must do, as Flux does). Both plan the
//! same way and answer the same [`SyncPlan`]; only the embedded one starts
//! a runtime.

use std::path::Path;
use std::time::Duration;

use cortex_runtime::store::Lease;
use sha2::Digest;

use crate::plan::Plan;
use crate::target::BoxFuture;
use crate::target::kubernetes::{ConnectOptions, PlanSettings};
use crate::target::{ApplyOptions, KubernetesTarget, Target, TargetPlan};
use crate::{Action, Desired};

/// Which target `serve` syncs.
#[derive(Clone, Debug, Default)]
pub enum ServeTarget {
    /// The embedded state store; `serve` runs the runtime.
    #[default]
    Embedded,
    /// A Kubernetes cluster.
    Kubernetes {
        /// The kubeconfig and context.
        connect: ConnectOptions,
        /// Delete objects cortex owns that left the project (else they are
        /// kept and listed in the status' notes).
        prune: bool,
    },
}

impl ServeTarget {
    /// `embedded` or `kubernetes`.
    pub fn name(&self) -> &'static str {
        match self {
            ServeTarget::Embedded => "embedded",
            ServeTarget::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// A plan of the head against the target.
pub enum SyncPlan {
    /// Against the running project's store.
    Embedded(crate::up::Planned),
    /// Against the cluster.
    Kubernetes(TargetPlan),
}

impl SyncPlan {
    /// The plan as shown.
    pub fn display(&self) -> &Plan {
        match self {
            SyncPlan::Embedded(p) => &p.plan.display,
            SyncPlan::Kubernetes(p) => &p.display,
        }
    }

    /// The identities of the objects a sync would change.
    pub fn changed(&self) -> Vec<String> {
        match self {
            SyncPlan::Embedded(p) => p.changed.clone(),
            SyncPlan::Kubernetes(p) => changed(&p.display),
        }
    }

    /// What the plan leaves out (objects kept without `--prune`, fields
    /// another manager holds).
    pub fn notes(&self) -> Vec<String> {
        match self {
            SyncPlan::Embedded(_) => Vec::new(),
            SyncPlan::Kubernetes(p) => p.notes.clone(),
        }
    }

    /// Every object of the plan, and whether it is in sync.
    pub fn objects(&self) -> Vec<super::ObjectView> {
        self.display()
            .changes
            .iter()
            .map(|c| super::ObjectView {
                identity: c.identity.clone(),
                status: if c.action == Action::Unchanged {
                    "synced"
                } else {
                    "out-of-sync"
                }
                .into(),
                action: format!("{:?}", c.action).to_lowercase(),
            })
            .collect()
    }
}

/// The identities of the objects `plan` changes.
fn changed(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
        .map(|c| c.identity.clone())
        .collect()
}

/// A cluster `serve` syncs to.
pub struct Cluster {
    target: KubernetesTarget,
}

impl Cluster {
    /// The cluster reached with `connect`; owned objects that left the
    /// project are deleted when `prune`.
    pub fn new(connect: ConnectOptions, prune: bool) -> Cluster {
        Cluster {
            target: KubernetesTarget::new(
                connect,
                PlanSettings {
                    prune,
                    force_conflicts: true,
                    ..PlanSettings::default()
                },
            ),
        }
    }

    /// Plans `desired` (compiled from `dir`) against the cluster.
    pub async fn plan(&self, dir: &Path, desired: &Desired) -> Result<SyncPlan, String> {
        self.target
            .plan(dir, desired)
            .await
            .map(SyncPlan::Kubernetes)
            .map_err(|e| e.to_string())
    }

    /// Applies what [`Cluster::plan`] planned; the objects it changed, or
    /// `None` when nothing needed writing.
    pub async fn apply(&self, plan: &TargetPlan) -> Result<Option<Vec<String>>, String> {
        if !plan.saved.needs_apply() {
            return Ok(None);
        }
        let options = ApplyOptions {
            lock_timeout: Duration::from_secs(30),
            force_conflicts: true,
            ..ApplyOptions::default()
        };
        let outcome = self
            .target
            .apply(&plan.saved, &options)
            .await
            .map_err(|e| e.to_string())?;
        Ok(outcome.changed.then(|| changed(&plan.display)))
    }

    /// The API server, once connected.
    pub fn server(&self) -> Option<&str> {
        self.target.server()
    }
}

/// The leader's lease in the cluster (the Kubernetes target): a Lease named
/// after what is served (`cortex-serve-` and a hash of the repository,
/// branch, path and environment, so replicas of one `serve` share it and
/// other `serve`s do not), in the kubeconfig context's namespace (a pod's
/// own namespace in the cluster). Connects on first use, and again after a
/// failure.
pub struct ClusterLease {
    connect: ConnectOptions,
    name: String,
    cluster: tokio::sync::OnceCell<crate::target::kubernetes::Cluster>,
}

impl ClusterLease {
    /// The lease of the `serve` described by `served` (repository, branch,
    /// path, environment), in the cluster of `connect`.
    pub fn new(connect: ConnectOptions, served: &str) -> ClusterLease {
        let hash = sha2::Sha256::digest(served.as_bytes());
        let short: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
        ClusterLease {
            connect,
            name: format!("cortex-serve-{short}"),
            cluster: tokio::sync::OnceCell::new(),
        }
    }
}

impl super::leader::LeaseKeeper for ClusterLease {
    fn take<'a>(
        &'a self,
        holder: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, String>> {
        Box::pin(async move {
            let cluster = self
                .cluster
                .get_or_try_init(|| crate::target::kubernetes::Cluster::connect(&self.connect))
                .await
                .map_err(|e| e.to_string())?;
            let namespace = cluster.client().default_namespace().to_string();
            crate::target::kubernetes::election::take_lease(
                cluster, &namespace, &self.name, holder, now_ms, until_ms,
            )
            .await
            .map_err(|e| e.to_string())
        })
    }
}
