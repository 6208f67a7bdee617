//! A desired state: a project compiled and rendered as it is in the work
//! tree or at a git revision; and the plan between two of them.

use std::path::Path;

use cortex_compiler::bundle::Project;
use cortex_compiler::bundle::{Bundle, SharedRuntime};
use cortex_compiler::load::Sharing;
use cortex_compiler::render::{Shared, render, render_shared, render_taking};
use cortex_compiler::{
    Diagnostics, Options, Resolved, Source, SourceMap, WorkTree, compile_sharing,
};

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
    /// Project facts (name, namespace, environment, chart).
    pub project: Project,
    /// The rendered objects (Kubernetes and runtime), keyed for plans.
    pub objects: Vec<PlanObject>,
}

/// Why a desired state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// The revision or directory could not be opened.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The project directory could not be read.
    #[error("{message}")]
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
    compile_at(dir, at, options, Sharing::Alone)?.render()
}

/// A project read and compiled without errors, not rendered yet.
struct Compiled {
    source: Box<dyn Source + Send>,
    revision: Revision,
    resolved: Resolved,
    files: SourceMap,
}

fn compile_at(
    dir: &Path,
    at: &At,
    options: &Options,
    sharing: Sharing,
) -> Result<Compiled, DesiredError> {
    let (source, revision): (Box<dyn Source + Send>, Revision) = match at {
        At::WorkTree => {
            let source = WorkTree::open(dir).map_err(|e| DesiredError::Unreadable {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
            let revision = Revision {
                name: "work tree".to_string(),
                commit: None,
            };
            (Box::new(source), revision)
        }
        At::Revision(rev) => {
            let source = GitTree::open(dir, rev)?;
            let revision = Revision {
                name: rev.clone(),
                commit: Some(source.commit_id()),
            };
            (Box::new(source), revision)
        }
    };
    let compilation = compile_sharing(source.as_ref(), options, sharing);
    match compilation.validated().is_some() {
        true => Ok(Compiled {
            resolved: compilation
                .resolved
                .ok_or_else(|| DesiredError::Unreadable {
                    path: dir.display().to_string(),
                    message: format!("{}: the compiler returned no project", dir.display()),
                })?,
            files: compilation.files,
            source,
            revision,
        }),
        false => Err(DesiredError::Compile {
            revision,
            diagnostics: compilation.diagnostics,
            files: compilation.files,
        }),
    }
}

impl Compiled {
    /// Renders the project on its own.
    fn render(self) -> Result<Desired, DesiredError> {
        let rendered = render(&self.resolved, self.source.as_ref());
        self.finish(rendered)
    }

    /// The desired state of a render of this project, or why there is none.
    fn finish<B: Into<Shared>, R: plan::RuntimeObjects>(
        self,
        rendered: Result<Bundle<B, R>, Diagnostics>,
    ) -> Result<Desired, DesiredError> {
        match rendered {
            Ok(bundle) => {
                let (project, objects) = plan::into_objects(bundle);
                Ok(Desired {
                    revision: self.revision,
                    resolved: self.resolved,
                    project,
                    objects,
                })
            }
            Err(diagnostics) => Err(DesiredError::Compile {
                revision: self.revision,
                diagnostics,
                files: self.files,
            }),
        }
    }
}

/// Compiles and renders both sides of a diff. The new side compiles on a
/// thread of its own while the old side compiles and renders, taking the
/// old side's parse of every file whose text is the same
/// ([`cortex_compiler::load::shared`]); it is rendered last, taking the old
/// side's objects for every agent whose inputs did not change
/// ([`cortex_compiler::render::memo`]).
pub fn desired_pair(
    dir: &Path,
    from: &At,
    to: &At,
    options: &Options,
) -> (Result<Desired, DesiredError>, Result<Desired, DesiredError>) {
    cortex_compiler::schema::Schemas::warm_up();
    std::thread::scope(|scope| {
        // Most files are the same in both revisions: the new side takes
        // the old side's parse of each of those.
        let (offer, take) = Sharing::pair();
        let new = scope.spawn(|| compile_at(dir, to, options, take));
        let old = compile_at(dir, from, options, offer);
        let old_rendered = old
            .as_ref()
            .ok()
            .map(|c| render_shared(&c.resolved, c.source.as_ref()));
        let new = new.join().unwrap_or_else(|_| {
            Err(DesiredError::Unreadable {
                path: dir.display().to_string(),
                message: format!(
                    "{}: compiling the new side failed unexpectedly",
                    dir.display()
                ),
            })
        });
        let memo = match &old_rendered {
            Some(Ok((_, memo))) => Some(memo),
            _ => None,
        };
        let new_rendered = new
            .as_ref()
            .ok()
            .map(|c| render_taking(&c.resolved, c.source.as_ref(), memo));
        let old_rendered = old_rendered.map(|r| r.map(|(bundle, _)| bundle));
        (
            old.and_then(|c| finish(c, old_rendered)),
            new.and_then(|c| finish(c, new_rendered)),
        )
    })
}

/// A compiled side's desired state from its render (made whenever the side
/// compiled).
fn finish(
    compiled: Compiled,
    rendered: Option<Result<Bundle<Shared, SharedRuntime>, Diagnostics>>,
) -> Result<Desired, DesiredError> {
    match rendered {
        Some(rendered) => compiled.finish(rendered),
        None => compiled.render(),
    }
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
            &to.project.name,
            to.project.environment.as_deref(),
            &to.project.namespace,
        ),
        &options,
    )
}
