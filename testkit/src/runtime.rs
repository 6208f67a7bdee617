//! A runtime started in-process on a fixture project, with its agents'
//! tokens, for tests that act as agents over real HTTP.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cortex_client::Client;
use cortex_compiler::Options;
use cortex_reconciler::target::embedded;
use cortex_reconciler::{At, PlanOptions, desired_at};
use cortex_runtime::agents::Paths;
use cortex_runtime::store::{SqliteStore, Store};
use cortex_runtime::{Runtime, RuntimeOptions, start};

/// A running runtime and what tests need around it.
pub struct TestRuntime {
    /// The running runtime.
    pub runtime: Runtime,
    /// Its state store.
    pub store: Arc<SqliteStore>,
    /// Each agent's bearer token.
    pub tokens: BTreeMap<String, String>,
    /// The state directory (removed when dropped).
    pub state: tempfile::TempDir,
}

/// Compiles `project`, applies it to a fresh store and starts the runtime
/// on a free port (agents started only with `supervise`).
pub async fn start_project(project: &Path, supervise: bool) -> TestRuntime {
    start_project_with_secrets(project, supervise, None).await
}

/// [`start_project`] with `secrets` (YAML) in the state directory's secrets file.
pub async fn start_project_with_secrets(
    project: &Path,
    supervise: bool,
    secrets: Option<&str>,
) -> TestRuntime {
    let state = tempfile::tempdir().expect("tempdir");
    if let Some(secrets) = secrets {
        std::fs::write(state.path().join("secrets.yaml"), secrets).expect("write secrets");
    }
    let store = Arc::new(SqliteStore::open(&state.path().join("state.db")).expect("open store"));
    apply_project(project, &store).await;
    let runtime = start(
        store.clone() as Arc<dyn Store>,
        options(project, state.path(), supervise),
        "test store",
    )
    .await
    .expect("start the runtime");
    let tokens = store
        .applied()
        .await
        .expect("read")
        .expect("applied")
        .tokens;
    TestRuntime {
        runtime,
        store,
        tokens,
        state,
    }
}

/// How tests run the runtime: `project`, state in `state`, a free port,
/// fast polling.
pub fn options(project: &Path, state: &Path, supervise: bool) -> RuntimeOptions {
    RuntimeOptions {
        paths: Paths {
            project: project.to_path_buf(),
            state: state.to_path_buf(),
        },
        listen: "127.0.0.1:0".parse().expect("addr"),
        supervise,
        poll: Duration::from_millis(100),
        alert_period: Duration::from_millis(100),
        connections: Default::default(),
        extra_routes: None,
        extra_metrics: None,
    }
}

/// Compiles `project` and applies it to `store` (a new revision when it changed).
pub async fn apply_project(project: &Path, store: &SqliteStore) -> u64 {
    let desired = desired_at(project, &At::WorkTree, &Options::default()).expect("compiles");
    let applied = store.applied().await.expect("read");
    let planned = embedded::plan_against(
        applied.as_ref(),
        store.path(),
        &desired,
        &PlanOptions::default(),
    );
    embedded::apply(store, &planned.saved, "test", Duration::ZERO)
        .await
        .expect("apply")
        .revision
}

impl TestRuntime {
    /// The client of `agent`, with its own token.
    pub fn client(&self, agent: &str) -> Client {
        Client::new(&self.runtime.url, agent, &self.tokens[agent])
    }

    /// A client with the operator's token.
    pub fn operator(&self) -> Client {
        Client::new(&self.runtime.url, "cortex", &self.runtime.operator_token)
    }
}
