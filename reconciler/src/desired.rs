//! A desired state: a project compiled and rendered as it is in the work
//! tree or at a git revision; and the plan between two of them.

use std::path::Path;

use cortex_compiler::bundle::Bundle;
use cortex_compiler::render::render;
use cortex_compiler::{Diagnostics, Options, Resolved, Source, SourceMap, WorkTree, compile};

use crate::plan::{self, PlanObject, PlanOptions, Revision, Side};
use crate::source::git::{GitError, GitTree};

/// Where to read a project from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum At {
    /// The files on disk.
    WorkTree,
    /// A git revision (branch, tag, `HEAD~2`, `origin/main`, commit id).
    Revision(String),
}

/// A compiled and rendered project.
#[derive(Debug)]
pub struct Desired {
    /// Which revision.
    pub revision: Revision,
    /// The resolved specs (the source of provenance).
    pub resolved: Resolved,
    /// What the renderer produced.
    pub bundle: Bundle,
    /// The bundle's objects, keyed for plans.
    pub objects: Vec<PlanObject>,
}

/// Why a desired state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// The revision or directory could not be opened.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The project directory could not be read.
    #[error("cannot read {path}: {message}")]
    Unreadable {
        /// The directory.
        path: String,
        /// Why.
        message: String,
    },
    /// The project does not compile at this revision.
    #[error("{revision} does not compile: {}", summary(.diagnostics))]
    Compile {
        /// Which revision.
        revision: Revision,
        /// Every problem found.
        diagnostics: Diagnostics,
        /// The files read, for rendering the diagnostics.
        files: SourceMap,
    },
}

fn summary(diagnostics: &Diagnostics) -> String {
    let n = diagnostics.error_count();
    format!("{n} error{}", if n == 1 { "" } else { "s" })
}

/// Compiles and renders the project in `dir` as it is at `at`.
pub fn desired_at(dir: &Path, at: &At, options: &Options) -> Result<Desired, DesiredError> {
    match at {
        At::WorkTree => {
            let source = WorkTree::open(dir).map_err(|e| DesiredError::Unreadable {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
            let revision = Revision {
                name: "work tree".to_string(),
                commit: None,
            };
            desired_from(&source, revision, options)
        }
        At::Revision(rev) => {
            let source = GitTree::open(dir, rev)?;
            let revision = Revision {
                name: rev.clone(),
                commit: Some(source.commit_id()),
            };
            desired_from(&source, revision, options)
        }
    }
}

/// Compiles and renders a project read from `source`.
pub fn desired_from(
    source: &dyn Source,
    revision: Revision,
    options: &Options,
) -> Result<Desired, DesiredError> {
    let compilation = compile(source, options);
    let failed =
        |diagnostics: Diagnostics, files: SourceMap, revision: Revision| DesiredError::Compile {
            revision,
            diagnostics,
            files,
        };
    if compilation.validated().is_none() {
        return Err(failed(compilation.diagnostics, compilation.files, revision));
    }
    let Some(resolved) = compilation.resolved else {
        return Err(failed(compilation.diagnostics, compilation.files, revision));
    };
    match render(&resolved, source) {
        Ok(bundle) => Ok(Desired {
            objects: plan::objects_of(&bundle),
            revision,
            resolved,
            bundle,
        }),
        Err(diagnostics) => Err(failed(diagnostics, compilation.files, revision)),
    }
}

/// Compiles both sides at once (each on its own thread).
pub fn desired_pair(
    dir: &Path,
    from: &At,
    to: &At,
    options: &Options,
) -> (Result<Desired, DesiredError>, Result<Desired, DesiredError>) {
    std::thread::scope(|scope| {
        let old = scope.spawn(|| desired_at(dir, from, options));
        let new = desired_at(dir, to, options);
        let old = old.join().unwrap_or_else(|_| {
            Err(DesiredError::Unreadable {
                path: dir.display().to_string(),
                message: "compiling the old side failed unexpectedly".to_string(),
            })
        });
        (old, new)
    })
}

/// The plan that takes `from` to `to`.
pub fn plan_between(from: &Desired, to: &Desired, options: &PlanOptions) -> plan::Plan {
    let mut options = options.clone();
    options.masker.learn(&from.resolved);
    options.masker.learn(&to.resolved);
    plan::diff(
        Side {
            objects: &from.objects,
            resolved: Some(&from.resolved),
        },
        Side {
            objects: &to.objects,
            resolved: Some(&to.resolved),
        },
        (from.revision.clone(), to.revision.clone()),
        (
            &to.bundle.project.name,
            to.bundle.project.environment.as_deref(),
            &to.bundle.project.namespace,
        ),
        &options,
    )
}
