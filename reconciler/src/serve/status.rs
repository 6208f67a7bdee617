//! What `serve` says about itself: the status (`GET /api/v1/status`), the
//! syncs kept for the history, and the problems of a commit that does not
//! compile — the shapes the loop fills and the API serializes.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::desired::DesiredError;

/// One problem of a commit that does not compile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProblemView {
    /// Diagnostic code (`CX0201`).
    pub code: String,
    /// The file, relative to the project.
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<u32>,
    /// 1-based column.
    pub column: Option<u32>,
    /// What is wrong.
    pub message: String,
}

/// The last failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// The commit it is about.
    pub commit: Option<String>,
    /// What went wrong.
    pub message: String,
    /// The compiler's errors, when the commit does not compile.
    pub diagnostics: Vec<ProblemView>,
}

/// What `GET /api/v1/status` answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServeStatus {
    /// The repository.
    pub repo: String,
    /// The branch followed.
    pub branch: Option<String>,
    /// The commit pinned by a sync (the branch's head is not followed
    /// until a sync without a commit).
    pub pinned: Option<String>,
    /// The source's head at the last fetch.
    pub head_commit: Option<String>,
    /// The commit applied and running.
    pub synced_commit: Option<String>,
    /// The applied revision of the store.
    pub synced_revision: Option<u64>,
    /// `synced`, `out-of-sync`, `syncing` or `error`.
    pub sync_state: String,
    /// When the last sync ended (RFC 3339).
    pub last_sync_at: Option<String>,
    /// The last failure, until a sync succeeds.
    pub last_error: Option<LastError>,
    /// Objects found changed behind `serve`'s back at the last drift (put
    /// back with self-heal, else waiting for a sync).
    pub drift: Vec<String>,
    /// Objects a sync would change now (`out-of-sync`: a new commit
    /// waiting under manual sync, or drift without self-heal).
    pub pending: Vec<String>,
    /// Drifts healed since `serve` started (read from the metrics when the
    /// status is asked for).
    pub drift_healed: u64,
    /// Reconciles since `serve` started (no-op ones included).
    pub reconciles: u64,
    /// How long the last reconcile took (fetch, compile, plan, apply), ms.
    pub last_reconcile_ms: u64,
    /// This replica holds the lease: it reconciles and runs the runtime.
    /// A standby (`false`) shows what the leader published.
    pub leader: bool,
    /// The replica that leads (host/pid and its address), when known.
    pub leader_id: Option<String>,
    /// What a standby waits for (none while this replica leads).
    pub standby: Option<String>,
    /// The runtime's URL, once it runs (the embedded target).
    pub runtime: Option<String>,
    /// `embedded` or `kubernetes`.
    pub target: String,
    /// The head's objects, and whether each is in sync, as last planned.
    pub objects: Vec<ObjectView>,
    /// What the last plan leaves out (objects kept without `--prune`,
    /// fields another manager holds).
    pub notes: Vec<String>,
    /// Whether the first sync has finished or failed (`/readyz`).
    #[serde(skip)]
    pub ready: bool,
}

/// One object of the head, as `GET /api/v1/status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectView {
    /// `Kind/name`, or `group/Kind/namespace/name` in a cluster.
    pub identity: String,
    /// `synced` or `out-of-sync`.
    pub status: String,
    /// What the last plan would do to it: `create`, `update`, `delete`,
    /// `unchanged`.
    pub action: String,
}

/// One sync, as `GET /api/v1/history` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncRecord {
    /// The commit.
    pub commit: Option<String>,
    /// When it ended (RFC 3339).
    pub at: String,
    /// What started it: `interval`, `api` (`POST /api/v1/sync`), `webhook`.
    pub trigger: String,
    /// `applied` (a new revision), `unchanged`, `healed` (drift put back),
    /// `failed`.
    pub outcome: String,
    /// The revision applied, or why it failed.
    pub detail: String,
}

/// Syncs kept for `GET /api/v1/history` (the newest).
pub const HISTORY: usize = 200;

/// Shared between the loop and the API.
pub type SharedStatus = Arc<Mutex<ServeStatus>>;

/// The newest syncs, shared between the loop and the API.
pub type SharedHistory = Arc<Mutex<std::collections::VecDeque<SyncRecord>>>;

/// What woke the loop (`api:NAME`, `webhook`), set by the API before it
/// wakes it.
pub type SharedTrigger = Arc<Mutex<Option<String>>>;

/// The commit a sync pinned (`POST /api/v1/sync {"commit"}`), until a sync
/// without one.
pub type SharedPin = Arc<Mutex<Option<String>>>;

/// The problems of a failed compile, as the API shows them.
pub(super) fn problems(error: &DesiredError) -> Vec<ProblemView> {
    match error {
        DesiredError::Compile { diagnostics, .. } => diagnostics
            .iter()
            .filter(|d| d.severity == cortex_compiler::diagnostic::Severity::Error)
            .map(|d| ProblemView {
                code: d.code.to_string(),
                file: d.span.as_ref().map(|s| s.file.to_string()),
                line: d.span.as_ref().map(|s| s.line),
                column: d.span.as_ref().map(|s| s.col),
                message: d.message.clone(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn now() -> String {
    cortex_runtime::workflow::view::rfc3339(cortex_runtime::store::now_ms())
}
