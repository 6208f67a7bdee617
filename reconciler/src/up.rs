//! The step that runs a project on this machine: hold the store's runtime
//! lock (one runtime per store), open the store, take the address (a busy
//! port changes nothing), apply the project when it differs from what the
//! store holds, start the runtime. `cortex up` calls it; `cortex serve`
//! calls it with the store it already holds open ([`RuntimeStore::Shared`])
//! and applies later revisions to the running project ([`Up::apply`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cortex_runtime::agents::Paths;
use cortex_runtime::engine::{self, Runtime, RuntimeError, RuntimeOptions};
use cortex_runtime::store::{SqliteStore, Store, StoreError};

use crate::target::embedded::{self, ApplyLock, EmbeddedError, LockError};
use crate::target::holder_identity;
use crate::{Desired, PlanOptions};

/// How to run.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Address of the broker (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Start the agents that have a `local.command`.
    pub supervise: bool,
    /// How often the runtime looks for a new applied revision.
    pub poll: Duration,
    /// How often alert rules are evaluated.
    pub alert_period: Duration,
    /// More routes on the runtime's listener (`cortex serve`'s API).
    pub routes: Option<axum::Router>,
    /// More metrics on the runtime's `/metrics` (`cortex serve`'s).
    pub metrics: Option<cortex_runtime::server::MetricsHook>,
}

/// Why the project could not be run.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Another runtime holds the store.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The apply failed.
    #[error(transparent)]
    Apply(#[from] EmbeddedError),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What the step did to the store before starting the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new revision was stored.
    Revision {
        /// Its number.
        revision: u64,
        /// Objects created, updated and deleted.
        created: usize,
        /// See `created`.
        updated: usize,
        /// See `created`.
        deleted: usize,
    },
    /// Nothing changed: the stored revision is resumed.
    Resumed {
        /// Its number.
        revision: u64,
    },
}

/// A plan of the running project's store.
pub struct Planned {
    /// The plan (applyable and as shown).
    pub plan: embedded::EmbeddedPlan,
    /// The identities of the objects it changes.
    pub changed: Vec<String>,
    /// The store holds nothing yet.
    pub fresh: bool,
}

/// A project running on this machine.
pub struct Up {
    /// The runtime (its URL, status, operator token).
    pub running: Runtime,
    /// What was applied before it started.
    pub applied: Applied,
    /// The state store.
    pub state: PathBuf,
    /// The directory beside the store (logs, secrets, agent configs).
    pub state_dir: PathBuf,
    store: Arc<SqliteStore>,
    /// Whether stopping closes the store (it opened it).
    owns_store: bool,
    _lock: ApplyLock,
}

/// The state store a runtime runs on.
pub enum RuntimeStore {
    /// The store at this path, opened for the runtime and closed when it
    /// stops (`cortex up`).
    Open(PathBuf),
    /// A store the caller holds open at `path` and keeps open after the
    /// runtime stops (`cortex serve`: its lease, audit log and published
    /// status live there, and one writer serves them all).
    Shared {
        /// Where it is.
        path: PathBuf,
        /// The open store.
        store: Arc<SqliteStore>,
    },
}

impl Up {
    /// Applies `desired` to the running project's store when it differs
    /// from what the store holds (the runtime picks the new revision up);
    /// returns the new revision and the objects that changed (their
    /// identities), or `None` when there was nothing to do.
    pub async fn apply(&self, desired: &Desired) -> Result<Option<(u64, Vec<String>)>, UpError> {
        let planned = self.plan(desired).await?;
        self.apply_planned(&planned).await
    }

    /// Applies what [`Up::plan`] planned, when it changes anything.
    pub async fn apply_planned(
        &self,
        planned: &Planned,
    ) -> Result<Option<(u64, Vec<String>)>, UpError> {
        if !planned.plan.saved.summary.has_changes() && !planned.fresh {
            return Ok(None);
        }
        let done = embedded::apply(
            &*self.store,
            &planned.plan.saved,
            &holder_identity(),
            Duration::ZERO,
        )
        .await?;
        Ok(Some((done.revision, planned.changed.clone())))
    }

    /// The plan of `desired` against the store.
    pub async fn plan(&self, desired: &Desired) -> Result<Planned, UpError> {
        let current = self.store.applied().await?;
        let plan = embedded::plan_against(
            current.as_ref(),
            &self.state,
            desired,
            &PlanOptions::default(),
        );
        let changed = plan
            .display
            .changes
            .iter()
            .filter(|c| c.action != crate::Action::Unchanged)
            .map(|c| c.identity.clone())
            .collect();
        Ok(Planned {
            plan,
            changed,
            fresh: current.is_none(),
        })
    }

    /// The revision the store holds now (one that moved since serve
    /// applied is drift).
    pub async fn revision(&self) -> Result<u64, UpError> {
        Ok(self.store.revision().await?)
    }

    /// Stops the agents, then the broker, then closes the store if the
    /// runtime opened it.
    pub async fn stop(self) -> Result<(), UpError> {
        let stopped = self.running.stop().await;
        if self.owns_store {
            self.store.close();
        }
        stopped.map_err(UpError::from)
    }
}

/// Runs the project in `dir` (compiled as `desired`) on this machine, with
/// the state store the project names.
pub async fn up(dir: &Path, desired: &Desired, options: UpOptions) -> Result<Up, UpError> {
    let state = embedded::state_path(dir, desired);
    up_with_store(dir, desired, options, RuntimeStore::Open(state)).await
}

/// [`up`] on the state store `store` names (`cortex serve` keeps its own).
pub async fn up_with_store(
    dir: &Path,
    desired: &Desired,
    options: UpOptions,
    store: RuntimeStore,
) -> Result<Up, UpError> {
    let state = match &store {
        RuntimeStore::Open(path) | RuntimeStore::Shared { path, .. } => path.clone(),
    };
    // One runtime per store: a second would deliver the same messages.
    let lock = ApplyLock::acquire_runtime(&state, &holder_identity())?;
    let (store, owns_store) = match store {
        RuntimeStore::Open(path) => (Arc::new(SqliteStore::open(&path)?), true),
        RuntimeStore::Shared { store, .. } => (store, false),
    };
    match start(dir, desired, options, &state, &store).await {
        Ok((running, applied)) => {
            let project_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            Ok(Up {
                running,
                applied,
                state_dir: state.parent().map_or(project_dir, Path::to_path_buf),
                state,
                store,
                owns_store,
                _lock: lock,
            })
        }
        Err(e) => {
            if owns_store {
                store.close();
            }
            Err(e)
        }
    }
}

async fn start(
    dir: &Path,
    desired: &Desired,
    options: UpOptions,
    state: &Path,
    store: &Arc<SqliteStore>,
) -> Result<(Runtime, Applied), UpError> {
    // The address first: a busy port is refused before the store changes.
    let listener = engine::bind(options.listen).await?;
    let current = store.applied().await?;
    let planned = embedded::plan_against(current.as_ref(), state, desired, &PlanOptions::default());
    let s = &planned.saved.summary;
    let applied = if s.has_changes() || current.is_none() {
        let done =
            embedded::apply(&**store, &planned.saved, &holder_identity(), Duration::ZERO).await?;
        Applied::Revision {
            revision: done.revision,
            created: s.create,
            updated: s.update,
            deleted: s.delete,
        }
    } else {
        Applied::Resumed {
            revision: current.as_ref().map_or(0, |a| a.revision),
        }
    };
    let project = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let runtime_options = RuntimeOptions {
        paths: Paths {
            state: state.parent().map_or(project.clone(), Path::to_path_buf),
            project,
        },
        listen: options.listen,
        supervise: options.supervise,
        poll: options.poll,
        alert_period: options.alert_period,
        connections: Default::default(),
        extra_routes: options.routes.clone(),
        extra_metrics: options.metrics.clone(),
    };
    let store_dyn: Arc<dyn Store> = store.clone();
    let running = engine::start_on(
        store_dyn,
        runtime_options,
        listener,
        &state.display().to_string(),
    )
    .await?;
    Ok((running, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{At, desired_at};

    fn options() -> UpOptions {
        UpOptions {
            listen: "127.0.0.1:0".parse().expect("an address"),
            supervise: false,
            poll: Duration::from_millis(50),
            alert_period: Duration::from_secs(1),
            routes: None,
            metrics: None,
        }
    }

    #[tokio::test]
    async fn a_shared_store_carries_the_runtime_and_stays_open_after_it_stops() {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/support-desk");
        let desired = desired_at(
            &project,
            &At::WorkTree,
            &cortex_compiler::Options::default(),
        )
        .expect("the example compiles");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        let store = Arc::new(SqliteStore::open(&path).expect("the store opens"));
        let up = up_with_store(
            &project,
            &desired,
            options(),
            RuntimeStore::Shared {
                path: path.clone(),
                store: store.clone(),
            },
        )
        .await
        .expect("the runtime starts");
        assert!(
            matches!(up.applied, Applied::Revision { .. }),
            "a first apply"
        );
        assert!(
            store.applied().await.expect("readable").is_some(),
            "the runtime's revision is in the caller's store"
        );
        up.stop().await.expect("the runtime stops");
        let audit = || {
            vec![cortex_runtime::store::Op::Audit(
                cortex_runtime::store::AuditEntry {
                    at_ms: cortex_runtime::store::now_ms(),
                    actor: "test".into(),
                    action: "after-stop".into(),
                    detail: String::new(),
                },
            )]
        };
        store
            .write(audit())
            .await
            .expect("the caller's store takes writes after the runtime stopped");
        store.close();
        assert!(matches!(
            store.write(audit()).await,
            Err(StoreError::Closed)
        ));
    }
}
