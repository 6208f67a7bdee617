//! Watching a local directory (`cortex serve --repo DIR`, for development):
//! notify's recommended watcher (inotify here) through a debouncer, so a
//! burst of saves is one change. Each change bumps a generation (the compile
//! of the directory is cached per generation) and wakes the loop. Changes
//! under `.git`, `.cortex*` directories and the state directory are not the
//! project's and are ignored (the store writes there all the time). Where
//! no watcher can be made, the directory is compiled again at each interval
//! instead, and the log says so.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::Notify;

/// How long the watcher waits for a burst of changes to end.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A watched directory: changes counted and the loop woken.
pub struct Watched {
    /// Bumped at each change of the project's files.
    pub generation: Arc<AtomicU64>,
    _debouncer: Debouncer<notify_debouncer_full::notify::RecommendedWatcher, RecommendedCache>,
}

/// Whether an event changes a file (not a read: the compile opens every
/// file it reads, and would wake itself).
fn is_a_change(kind: &EventKind) -> bool {
    use notify_debouncer_full::notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Any
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Whether a change of `path` is one of the project's (not git's, cortex's
/// own state, or the state directory's).
fn is_project_change(path: &Path, state: &Path) -> bool {
    if path.starts_with(state) {
        return false;
    }
    !path.components().any(|c| match c {
        Component::Normal(name) => {
            let name = name.to_string_lossy();
            name == ".git" || name.starts_with(".cortex")
        }
        _ => false,
    })
}

/// Watches `dir` (recursively), ignoring `state`; each change of the
/// project's files bumps the generation, sets `trigger` and wakes `wake`.
pub fn watch(
    dir: &Path,
    state: &Path,
    wake: Arc<Notify>,
    trigger: super::SharedTrigger,
) -> Result<Watched, String> {
    let generation = Arc::new(AtomicU64::new(0));
    let counted = generation.clone();
    let dir: PathBuf = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let state: PathBuf = std::path::absolute(state).unwrap_or_else(|_| state.to_path_buf());
    let ignored = state.clone();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let ours = events
                .iter()
                .filter(|e| is_a_change(&e.kind))
                .flat_map(|e| e.paths.iter())
                .any(|p| is_project_change(p, &ignored));
            if ours {
                counted.fetch_add(1, Ordering::SeqCst);
                *trigger.lock().unwrap_or_else(|p| p.into_inner()) = Some("watch".into());
                wake.notify_one();
            }
        }
        Err(errors) => {
            for error in errors {
                tracing::warn!(%error, "watching the directory");
            }
        }
    };
    let mut debouncer = new_debouncer(DEBOUNCE, None, handler).map_err(|e| e.to_string())?;
    debouncer
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(Watched {
        generation,
        _debouncer: debouncer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_file_is_no_change() {
        use notify_debouncer_full::notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind,
        };
        assert!(!is_a_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Read
        ))));
        assert!(!is_a_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_a_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Content
        ))));
        assert!(is_a_change(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn gits_cortexs_and_the_state_directorys_changes_are_not_the_projects() {
        let state = Path::new("/p/.serve-state");
        assert!(is_project_change(Path::new("/p/agents/a.yaml"), state));
        assert!(!is_project_change(Path::new("/p/.git/index"), state));
        assert!(!is_project_change(
            Path::new("/p/.cortex/state.db-wal"),
            state
        ));
        assert!(!is_project_change(
            Path::new("/p/.cortex-serve/state.db"),
            state
        ));
        assert!(!is_project_change(
            Path::new("/p/.serve-state/repo/x"),
            state
        ));
    }
}
