//! The embedded target: the desired runtime config is kept in the state
//! store. `plan` diffs the bundle's runtime objects (agents, topics,
//! workflows, access policies, alert rules) against the applied ones;
//! `apply` stores them as a new revision, atomically, under a file lock,
//! refusing a saved plan made against another revision.

pub mod lock;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Desired;
use crate::plan::{self, Plan, PlanObject, PlanOptions, Realm, Revision, Side};
use cortex_runtime::store::{Applied, AuditEntry, Op, Store, StoreError, now_ms};
use cortex_runtime::tokens::new_token;
pub use lock::{ApplyLock, LockError};

/// Where the state store is when the project does not say
/// (`targets.embedded.state`), relative to the project directory.
pub const DEFAULT_STATE: &str = ".cortex/state.db";

/// `kind` of a saved embedded plan.
pub const PLAN_KIND: &str = "cortex-embedded-plan";

/// Why an embedded plan or apply failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The store failed or was stale.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lock is held.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The saved plan was made against another store revision.
    #[error(
        "stale plan: the state store is at revision {found}, the plan was made at revision {planned}; run cortex plan again"
    )]
    Stale {
        /// The revision the plan was made against.
        planned: u64,
        /// The store's revision now.
        found: u64,
    },
    /// The saved plan is for another store.
    #[error("the plan was made for the state store {planned}, not {found}")]
    OtherStore {
        /// The plan's store.
        planned: String,
        /// This store.
        found: String,
    },
}

/// A plan saved by `cortex plan --target embedded -o`, applied exactly by
/// `cortex apply PLAN.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedEmbeddedPlan {
    /// Layout version (1).
    pub format_version: u32,
    /// Always [`PLAN_KIND`].
    pub kind: String,
    /// Project name.
    pub project: String,
    /// Environment.
    pub environment: Option<String>,
    /// The state store (absolute path).
    pub state: PathBuf,
    /// The store revision the plan was made against.
    pub base_revision: u64,
    /// The commit the config was built from.
    pub commit: Option<String>,
    /// The runtime config to store.
    pub config: Value,
    /// What changes.
    pub summary: plan::Summary,
}

/// A plan: what to save and what to show.
#[derive(Debug)]
pub struct EmbeddedPlan {
    /// The applyable part.
    pub saved: SavedEmbeddedPlan,
    /// The plan as shown (same model as `cortex diff`).
    pub display: Plan,
}

/// The state store path of a compiled project in `dir`.
pub fn state_path(dir: &Path, desired: &Desired) -> PathBuf {
    let configured = desired
        .resolved
        .project
        .node
        .str_at(&["spec", "targets", "embedded", "state"])
        .unwrap_or(DEFAULT_STATE);
    let path = dir.join(configured);
    std::path::absolute(&path).unwrap_or(path)
}

/// The runtime objects of a desired state as the embedded target keeps
/// them: runtime.json's entries, with each agent's `env` and `ports` added
/// (a local process needs them; in a cluster they live in the Deployment,
/// so runtime.json leaves them out).
pub fn embedded_objects(desired: &Desired) -> Vec<PlanObject> {
    desired
        .objects
        .iter()
        .filter(|o| o.id.target == Realm::Runtime)
        .map(|o| {
            let mut o = o.clone();
            if o.id.kind == "Agent" {
                let spec = desired
                    .resolved
                    .specs
                    .iter()
                    .find(|s| s.kind == cortex_compiler::Kind::Agent && s.name == o.id.name)
                    .and_then(|s| s.spec());
                for field in ["env", "ports"] {
                    let value = spec
                        .and_then(|s| s.get(field))
                        .map(|n| n.to_json())
                        .unwrap_or_else(|| Value::Array(Vec::new()));
                    if let Value::Object(body) = std::sync::Arc::make_mut(&mut o.body) {
                        body.insert(field.to_string(), value);
                    }
                }
            }
            o
        })
        .collect()
}

/// The runtime config the embedded target stores: runtime.json put back
/// together from [`embedded_objects`].
pub fn runtime_config(desired: &Desired, objects: &[PlanObject]) -> Value {
    let mut out = Map::new();
    out.insert(
        "format_version".into(),
        cortex_compiler::render::runtime::FORMAT_VERSION.into(),
    );
    out.insert("project".into(), desired.project.name.clone().into());
    out.insert("namespace".into(), desired.project.namespace.clone().into());
    out.insert(
        "environment".into(),
        desired.project.environment.clone().into(),
    );
    for (section, kind) in plan::RUNTIME_SECTIONS {
        let entries: Map<String, Value> = objects
            .iter()
            .filter(|o| o.id.kind == kind)
            .map(|o| (o.id.name.clone(), Value::clone(&o.body)))
            .collect();
        out.insert(section.into(), Value::Object(entries));
    }
    Value::Object(out)
}

/// What the store at `state` holds, read without creating it (`None` when
/// there is no store file yet or nothing was applied).
pub async fn read_applied(state: &Path) -> Result<Option<Applied>, StoreError> {
    if !state.exists() {
        return Ok(None);
    }
    let store = cortex_runtime::store::SqliteStore::open(state)?;
    let applied = store.applied().await;
    store.close();
    applied
}

/// Plans `desired` against `applied`, the config the store at `state` holds.
pub fn plan_against(
    applied: Option<&Applied>,
    state: &Path,
    desired: &Desired,
    options: &PlanOptions,
) -> EmbeddedPlan {
    let live: Vec<PlanObject> = applied
        .map(|a| plan::runtime_objects(a.config.clone()))
        .unwrap_or_default();
    let wanted = embedded_objects(desired);
    let base_revision = applied.map_or(0, |a| a.revision);
    let from = Revision {
        name: format!("state revision {base_revision}"),
        commit: applied.and_then(|a| a.commit.clone()),
    };
    let mut display = plan::diff(
        Side {
            objects: &live,
            resolved: None,
        },
        Side {
            objects: &wanted,
            resolved: Some(&desired.resolved),
        },
        (from, desired.revision.clone()),
        (
            &desired.project.name,
            desired.project.environment.as_deref(),
            &desired.project.namespace,
        ),
        options,
    );
    display.title = "cortex plan";
    EmbeddedPlan {
        saved: SavedEmbeddedPlan {
            format_version: 1,
            kind: PLAN_KIND.to_string(),
            project: desired.project.name.clone(),
            environment: desired.project.environment.clone(),
            state: state.to_path_buf(),
            base_revision,
            commit: desired.revision.commit.clone(),
            config: runtime_config(desired, &wanted),
            summary: display.summary,
        },
        display,
    }
}

/// Tokens for the agents of `config`: kept for agents that had one,
/// generated for new ones; removed agents lose theirs.
pub fn tokens_for(config: &Value, previous: Option<&Applied>) -> BTreeMap<String, String> {
    config
        .get("agents")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(agent, _)| {
            let token = previous
                .and_then(|p| p.tokens.get(agent).cloned())
                .unwrap_or_else(new_token);
            (agent.clone(), token)
        })
        .collect()
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedApply {
    /// The new revision (the old one when there was nothing to do).
    pub revision: u64,
    /// Whether anything was stored.
    pub changed: bool,
}

/// Applies a saved plan: under the lock, refuses it when the store moved
/// on since the plan, else stores its config as the next revision.
pub async fn apply(
    store: &dyn Store,
    saved: &SavedEmbeddedPlan,
    holder: &str,
    lock_wait: Duration,
) -> Result<EmbeddedApply, EmbeddedError> {
    let _lock = {
        let state = saved.state.clone();
        let holder = holder.to_string();
        tokio::task::spawn_blocking(move || ApplyLock::acquire(&state, &holder, lock_wait))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??
    };
    let current = store.applied().await?;
    let found = current.as_ref().map_or(0, |a| a.revision);
    if found != saved.base_revision {
        return Err(EmbeddedError::Stale {
            planned: saved.base_revision,
            found,
        });
    }
    if !saved.summary.has_changes() && current.is_some() {
        return Ok(EmbeddedApply {
            revision: found,
            changed: false,
        });
    }
    let next = Applied {
        revision: 0,
        commit: saved.commit.clone(),
        tokens: tokens_for(&saved.config, current.as_ref()),
        config: saved.config.clone(),
        applied_at_ms: now_ms(),
    };
    let revision = store.apply(found, next).await.map_err(|e| match e {
        StoreError::Stale { expected, found } => EmbeddedError::Stale {
            planned: expected,
            found,
        },
        other => other.into(),
    })?;
    let s = &saved.summary;
    store
        .write(vec![Op::Audit(AuditEntry {
            at_ms: now_ms(),
            actor: holder.to_string(),
            action: "apply".into(),
            detail: format!(
                "revision {revision}{}: {} to create, {} to update, {} to delete",
                saved
                    .commit
                    .as_deref()
                    .map(|c| format!(" (commit {})", &c[..c.len().min(12)]))
                    .unwrap_or_default(),
                s.create,
                s.update,
                s.delete
            ),
        })])
        .await?;
    Ok(EmbeddedApply {
        revision,
        changed: true,
    })
}
