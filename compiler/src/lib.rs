//! cortex-compiler: the pure half of cortex.
//!
//! `load` → `resolve` → `template` → `validate`, each stage a module with
//! one job, all diagnostics collected as data. No network, no async: files
//! come only through a [`Source`].
//!
//! ```no_run
//! use cortex_compiler::{compile, Options, WorkTree};
//! let source = WorkTree::open("examples/support-desk").unwrap();
//! let result = compile(&source, &Options::default());
//! assert!(!result.diagnostics.has_errors());
//! ```

pub mod bundle;
pub mod diagnostic;
pub mod document;
pub mod explain;
pub mod graph;
pub mod hash;
pub mod load;
pub mod memory;
pub mod node;
pub mod pretty_json;
pub mod render;
pub mod resolve;
pub mod runtime_config;
pub mod runtime_shared;
pub mod runtime_text;
pub mod schema;
mod scratch;
pub mod source;
pub mod span;
pub mod template;
pub mod validate;
mod yaml;
pub mod yaml_out;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use document::{Document, Kind};
pub use resolve::{Resolved, ResolvedSpec};
pub use source::{MemorySource, Source, SourceError, WorkTree};
pub use span::{SourceMap, Span};
/// Deepest nesting of collections a spec file may have.
pub use yaml::MAX_DEPTH as MAX_YAML_DEPTH;
/// YAML text to nodes with their places (file, line, column), for other
/// YAML files whose errors must name a line (`cortex serve --tokens`).
pub use yaml::parse as parse_yaml;
/// YAML text to JSON values (with the compiler's YAML 1.2 rules), for
/// other YAML files cortex reads (the embedded target's secrets file).
pub use yaml::parse_json as parse_yaml_json;

/// What to compile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The environment overlay to apply (`--env`).
    pub env: Option<String>,
}

/// The result of a compile: the resolved project (when `cortex.yaml` could
/// be read) and every diagnostic, sorted.
#[derive(Debug)]
pub struct Compilation {
    /// Resolved, templated specs; present even when diagnostics hold errors,
    /// so tools can show as much as possible.
    pub resolved: Option<Resolved>,
    /// Every problem found.
    pub diagnostics: Diagnostics,
    /// The text of every file read, for rendering diagnostics.
    pub files: SourceMap,
}

impl Compilation {
    /// The validated project, when there is no error.
    pub fn validated(&self) -> Option<&Resolved> {
        (!self.diagnostics.has_errors())
            .then_some(self.resolved.as_ref())
            .flatten()
    }
}

/// Runs the front end on a project: load, resolve, template, validate.
pub fn compile(source: &dyn Source, options: &Options) -> Compilation {
    compile_sharing(source, options, load::Sharing::Alone)
}

/// [`compile`], sharing parsed files with a compile of another revision of
/// the same project as `sharing` says (`cortex diff`: [`load::shared`]).
pub fn compile_sharing(
    source: &dyn Source,
    options: &Options,
    sharing: load::Sharing,
) -> Compilation {
    schema::Schemas::warm_up();
    let mut diags = Diagnostics::new();
    let Some(docs) = load::load_sharing(source, &mut diags, sharing) else {
        diags.finish();
        return Compilation {
            resolved: None,
            diagnostics: diags,
            files: SourceMap::new(),
        };
    };
    let mut resolved = resolve::resolve(docs, options.env.as_deref(), &mut diags);
    template::render_templates(&mut resolved, &mut diags);
    let mut checks = Diagnostics::new();
    validate::validate(&resolved, &mut checks);
    // The paths `spec.manifests` names are checked here as `build` checks
    // them (outside the root, glob syntax, no match); the files themselves
    // are read by a render ([`check`] renders a project that ships them).
    render::manifests::matched_files(&resolved, source, &mut checks);
    for d in checks.into_vec() {
        if !d
            .span
            .as_ref()
            .is_some_and(|s| resolved.template_failures.contains(s))
        {
            diags.push(d);
        }
    }
    diags.finish();
    let files = resolved.files.clone();
    Compilation {
        resolved: Some(resolved),
        diagnostics: diags,
        files,
    }
}

/// What `cortex validate` reports: [`compile`], then, when the project
/// compiles but the compile cannot foresee what a render finds (it has
/// templates of its own or ships manifests), the render's diagnostics
/// ([`render::check_by_rendering`]), so `validate` refuses what `build`
/// would.
pub fn check(source: &dyn Source, options: &Options) -> Compilation {
    let mut compilation = compile(source, options);
    if let Some(resolved) = compilation.validated()
        && let Some(found) = render::check_by_rendering(resolved, source)
    {
        compilation.diagnostics.extend(found);
        compilation.diagnostics.finish();
    }
    compilation
}

/// Finds a spec by `kind/name` (kind case-insensitive, e.g. `agent/triage`).
pub fn find_spec<'r>(resolved: &'r Resolved, reference: &str) -> Result<&'r ResolvedSpec, String> {
    let (kind_text, name) = reference
        .split_once('/')
        .ok_or_else(|| format!("`{reference}` is not KIND/NAME (e.g. agent/triage)"))?;
    let kind = Kind::parse_ref(kind_text).ok_or_else(|| {
        let kinds: Vec<String> = Kind::ALL
            .iter()
            .map(|k| k.as_str().to_lowercase())
            .collect();
        let hint =
            diagnostic::did_you_mean(&kind_text.to_lowercase(), kinds.iter().map(String::as_str));
        format!(
            "unknown kind `{kind_text}`{}",
            hint.map(|h| format!("; {h}")).unwrap_or_default()
        )
    })?;
    resolved
        .specs
        .iter()
        .find(|s| s.kind == kind && s.name == name)
        .ok_or_else(|| {
            let names = resolved
                .specs
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| s.name.as_str());
            let hint = diagnostic::did_you_mean(name, names);
            format!(
                "no {kind} named `{name}`{}",
                hint.map(|h| format!("; {h}")).unwrap_or_default()
            )
        })
}
