//! Stage 5: render a validated project into Kubernetes objects (from the
//! templates of `templates/` — built in, see [`builtin`] — or a project's
//! own `templates/<name>`, rendered with minijinja) and the runtime
//! configuration. Every object is checked against its Kubernetes type (an
//! object of a built-in template once per shape: [`shape`]).

/// A JSON object of `key => value` pairs, each value moved in by
/// `Value::from`. (`json!` copies every value it is given by serializing
/// it, which for an agent's context and objects is most of their cost.)
macro_rules! object {
    ($($key:expr => $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = serde_json::Map::new();
        $( map.insert(String::from($key), serde_json::Value::from($value)); )*
        serde_json::Value::Object(map)
    }};
}

pub mod agent;
pub mod builtin;
pub mod check;
pub mod manifests;
pub mod memo;
pub mod runtime;
pub mod shape;
mod unknown_fields;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use rayon::prelude::*;
use serde_json::{Value, json};

use crate::bundle::{Body, Bundle, Object, Output, Project, Runtime, SharedRuntime};
use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use crate::document::Kind;
use crate::resolve::{Resolved, ResolvedSpec};
use crate::source::{Source, SourceError};
use crate::validate::pools;

/// The value at `path` (keys, or list positions written as numbers) in
/// `value`: `Value::pointer` without its two strings per key.
pub(crate) fn json_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |at, key| match at {
        Value::Object(map) => map.get(*key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

pub use memo::Memo;

/// The object templates cortex ships, by file name.
pub const DEFAULT_TEMPLATES: &[(&str, &str)] = &[
    (
        "deployment.yaml.j2",
        include_str!("../../../templates/deployment.yaml.j2"),
    ),
    (
        "serviceaccount.yaml.j2",
        include_str!("../../../templates/serviceaccount.yaml.j2"),
    ),
    (
        "configmap.yaml.j2",
        include_str!("../../../templates/configmap.yaml.j2"),
    ),
    (
        "service.yaml.j2",
        include_str!("../../../templates/service.yaml.j2"),
    ),
    (
        "hpa.yaml.j2",
        include_str!("../../../templates/hpa.yaml.j2"),
    ),
    (
        "pdb.yaml.j2",
        include_str!("../../../templates/pdb.yaml.j2"),
    ),
    (
        "runtime-configmap.yaml.j2",
        include_str!("../../../templates/runtime-configmap.yaml.j2"),
    ),
];

/// The project facts of a resolved project.
pub fn project_facts(resolved: &Resolved) -> Project {
    let spec = resolved.project.node.get("spec");
    let chart = |k: &str| {
        spec.and_then(|s| s.path(&["chart", k]))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    Project {
        name: resolved.project_name.clone(),
        namespace: resolved.namespace.clone(),
        environment: resolved.environment.as_ref().map(|e| e.name.clone()),
        chart_name: chart("name").unwrap_or_else(|| resolved.project_name.clone()),
        chart_version: chart("version").unwrap_or_else(|| "0.1.0".to_string()),
        chart_description: chart("description")
            .unwrap_or_else(|| format!("{} — rendered by cortex", resolved.project_name)),
        broker_url: spec
            .and_then(|s| s.str_at(&["targets", "kubernetes", "brokerUrl"]))
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "http://cortex-runtime.{}.svc:{}",
                    resolved.namespace,
                    agent::BROKER_PORT
                )
            }),
    }
}

/// What the runtime ConfigMap's template first sees as `runtime_json`.
const RUNTIME_JSON_PLACEHOLDER: &str = "@@cortex:runtime.json@@";

/// Replaces the one string equal to `placeholder` in `value` with `text`;
/// false (and `value` unchanged) unless there is exactly one.
fn put_in_place(value: &mut Value, placeholder: &str, text: &str) -> bool {
    fn count(value: &Value, placeholder: &str) -> usize {
        match value {
            Value::String(s) => usize::from(s == placeholder),
            Value::Array(items) => items.iter().map(|v| count(v, placeholder)).sum(),
            Value::Object(map) => map.values().map(|v| count(v, placeholder)).sum(),
            _ => 0,
        }
    }
    fn replace(value: &mut Value, placeholder: &str, text: &str) {
        match value {
            Value::String(s) if s == placeholder => *s = text.to_string(),
            Value::Array(items) => items.iter_mut().for_each(|v| replace(v, placeholder, text)),
            Value::Object(map) => map.values_mut().for_each(|v| replace(v, placeholder, text)),
            _ => {}
        }
    }
    if count(value, placeholder) != 1 {
        return false;
    }
    replace(value, placeholder, text);
    true
}

/// Renders a validated project. `source` provides the project's own
/// template overrides (`templates/<name>`).
pub fn render(resolved: &Resolved, source: &dyn Source) -> Result<Bundle, Diagnostics> {
    render_inner(resolved, source, Engine::BuiltIn, Memos::Neither).map(|(bundle, _)| bundle)
}

/// The diagnostics of a render of a validated project, when the compile
/// cannot foresee what rendering finds (`cortex validate`): the project
/// has templates of its own (`templates/<name>`: one may fail, or render
/// an object its Kubernetes type refuses), or ships manifests (one may
/// redefine an object the specs render). `None` when it has neither: its
/// objects come from cortex's built-in templates, and only `build` renders
/// them.
pub fn check_by_rendering(resolved: &Resolved, source: &dyn Source) -> Option<Diagnostics> {
    let own_templates = DEFAULT_TEMPLATES.iter().any(|(name, _)| {
        !matches!(
            source.read(&format!("templates/{name}")),
            Err(SourceError::NotFound(_))
        )
    });
    let ships_manifests =
        !manifests::matched_files(resolved, source, &mut Diagnostics::new()).is_empty();
    if !own_templates && !ships_manifests {
        return None;
    }
    Some(render(resolved, source).err().unwrap_or_default())
}

/// Renders a validated project for its output files: each object is
/// reduced to its YAML and hash as soon as it is checked, so the objects'
/// trees are never all in memory at once (`cortex build`).
pub fn render_output(resolved: &Resolved, source: &dyn Source) -> Result<Output, Diagnostics> {
    render_inner(resolved, source, Engine::BuiltIn, Memos::Neither).map(|(bundle, _)| bundle)
}

/// An object's body shared between renders: an agent that is the same in
/// two revisions has the same objects, not copies.
pub type Shared = Arc<Value>;

/// Renders a validated project to compare it with another revision of it
/// (`cortex diff`'s first revision), keeping a memo of each agent's inputs
/// and objects for [`render_taking`] ([`memo`]).
pub fn render_shared<'r>(
    resolved: &'r Resolved,
    source: &dyn Source,
) -> Result<(Bundle<Shared, SharedRuntime>, Memo<'r, Shared>), Diagnostics> {
    let (bundle, memo) = render_inner(resolved, source, Engine::BuiltIn, Memos::Keep)?;
    // A render asked to keep a memo always returns one.
    Ok((
        bundle,
        memo.unwrap_or_else(|| Memo::new(Arc::default(), project_facts(resolved))),
    ))
}

/// Renders a validated project after [`render_shared`] rendered another
/// revision of it (`cortex diff`'s second revision): each agent whose
/// spec, pool and project facts are the same as in `previous` (with the
/// same templates) gets that render's objects instead of being rendered
/// again ([`memo`]). Keeps no memo: nothing renders after it.
pub fn render_taking(
    resolved: &Resolved,
    source: &dyn Source,
    previous: Option<&Memo<'_, Shared>>,
) -> Result<Bundle<Shared, SharedRuntime>, Diagnostics> {
    let memos = match previous {
        Some(previous) => Memos::Take { previous },
        None => Memos::Neither,
    };
    render_inner(resolved, source, Engine::BuiltIn, memos).map(|(bundle, _)| bundle)
}

/// How the shipped templates a project does not override are rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// By their built-in form (what cortex does).
    BuiltIn,
    /// By minijinja from their text (what the tests compare it with).
    #[cfg_attr(not(test), allow(dead_code))]
    Text,
}

/// A render's bundle, and its memo when it was asked to keep one.
type Rendered<'r, B, R> = (Bundle<B, R>, Option<Memo<'r, B>>);

/// What a render does with memos ([`memo`]).
enum Memos<'m, 'p, B> {
    /// It neither takes from one nor keeps one (a build, a plan).
    Neither,
    /// It keeps its own, for a render after it.
    Keep,
    /// It takes what it can from `previous`.
    Take { previous: &'m Memo<'p, B> },
}

fn render_inner<'r, B: Body + Clone + Sync, R: Runtime>(
    resolved: &'r Resolved,
    source: &dyn Source,
    engine: Engine,
    memos: Memos<'_, '_, B>,
) -> Result<Rendered<'r, B, R>, Diagnostics> {
    let mut diags = Diagnostics::new();
    let project = project_facts(resolved);
    let templates = match Templates::load(source, engine) {
        Ok(templates) => templates,
        Err(d) => return Err(Diagnostics::from(*d)),
    };
    let (keep, previous) = match memos {
        Memos::Neither => (false, None),
        Memos::Keep => (true, None),
        Memos::Take { previous } => (false, Some(previous)),
    };
    let previous = previous.filter(|m| m.same_setting(&templates.sources, &project));
    let pools_by_name = pools_by_name(resolved);
    // Agents render independently: spread them over the cores, each worker
    // with its own copy of the templates; results keep spec order.
    let agents: Vec<&crate::resolve::ResolvedSpec> = resolved
        .specs
        .iter()
        .filter(|s| s.kind == Kind::Agent)
        .collect();
    // The runtime configuration and the pools' usage do not depend on the
    // objects: they are made (the configuration split into shards, each
    // shard's ConfigMap rendered, checked and emitted on its own) while the
    // agents render. The agents are rendered in runs of at most
    // `AGENTS_PER_RUN`: a core that finishes the runtime's side takes runs
    // the other has not begun, so neither is left alone with a long one.
    let (rendered, (runtime, shard_objects, usage)) = rayon::join(
        || {
            agents
                .par_iter()
                .with_min_len(AGENTS_PER_RUN / 2)
                .with_max_len(AGENTS_PER_RUN)
                .map_init(
                    || templates.clone(),
                    |templates, spec| {
                        let pool = agent::pool_of(spec, &pools_by_name);
                        if let Some(objects) = previous.and_then(|m| m.objects(spec, pool)) {
                            return (objects, Diagnostics::new(), pool);
                        }
                        let ctx = agent::context(spec, pool, &project);
                        let (mut objects, mut diags) = (Vec::new(), Diagnostics::new());
                        let prepared = Prepared::new(&ctx);
                        for template in agent_templates(&ctx) {
                            templates.render(
                                template,
                                &prepared,
                                (Some(&spec.id()), &spec.file),
                                &mut objects,
                                &mut diags,
                            );
                        }
                        let objects = objects.into_iter().map(B::from_object).collect();
                        (objects, diags, pool)
                    },
                )
                .collect::<Vec<(Vec<Object<B>>, Diagnostics, Option<&ResolvedSpec>)>>()
        },
        || {
            // Entries whose spec did not change since `previous` are
            // taken from it, not built ([`memo`]).
            let taken = match previous {
                Some(memo) if R::TAKES => memo.taken_entries(&resolved.specs),
                _ => Vec::new(),
            };
            let names: std::collections::HashSet<(&str, &str)> = taken
                .iter()
                .map(|(section, name, _)| (*section, name.as_str()))
                .collect();
            let is_taken = |spec: &ResolvedSpec| {
                crate::runtime_text::section_of(spec.kind)
                    .is_some_and(|section| names.contains(&(section, spec.name.as_str())))
            };
            let config = runtime::typed_runtime_config_except(resolved, &is_taken);
            let runtime = R::from_config_taking(config, taken);
            let shards = runtime.shards(runtime::SHARD_BYTES);
            let shard_count = shards.len();
            let shard_objects: Vec<(Vec<Object<B>>, Diagnostics)> = shards
                .par_iter()
                .enumerate()
                .map_init(
                    || templates.clone(),
                    |templates, (index, shard_json)| {
                        let at = RuntimeShard {
                            index,
                            count: shard_count,
                            json: shard_json,
                        };
                        let (objects, diags) = at.render(templates, &project, resolved);
                        (objects.into_iter().map(B::from_object).collect(), diags)
                    },
                )
                .collect();
            (runtime, shard_objects, pools::usage(&resolved.specs))
        },
    );
    // Room for the agents' objects and one ConfigMap per shard: the vector
    // is not grown (each step a copy of every object) while the main
    // thread alone fills it.
    let rendered_count: usize = rendered.iter().map(|(objects, ..)| objects.len()).sum();
    let shard_count: usize = shard_objects.iter().map(|(objects, _)| objects.len()).sum();
    let mut objects: Vec<Object<B>> = Vec::with_capacity(rendered_count + shard_count);
    let mut kept = keep.then(|| Memo::new(templates.sources.clone(), project.clone()));
    for (spec, (rendered_objects, rendered_diags, pool)) in agents.iter().zip(rendered) {
        if let Some(memo) = kept.as_mut()
            && rendered_diags.is_empty()
        {
            memo.keep(spec, pool, rendered_objects.clone());
        }
        objects.extend(rendered_objects);
        diags.extend(rendered_diags);
    }
    let identities = || objects.iter().map(|o| o.head().identity()).collect();
    let shipped = manifests::manifests(resolved, source, &project, identities, &mut diags);
    objects.extend(shipped.into_iter().map(B::from_object));
    for (shard_objects, shard_diags) in shard_objects {
        objects.extend(shard_objects);
        diags.extend(shard_diags);
    }
    if diags.has_errors() {
        diags.finish();
        return Err(diags);
    }
    let bundle = Bundle::new(project, objects, runtime, usage);
    if let Some(memo) = kept.as_mut() {
        memo.keep_entries(&resolved.specs, bundle.runtime.shared_entries());
    }
    Ok((bundle, kept))
}

/// The most agents one task of a render takes: small enough that the
/// cores finish together, large enough that a task's setup (its copy of
/// the templates) is a small part of it.
const AGENTS_PER_RUN: usize = 32;

/// One shard of the runtime configuration, to become a ConfigMap.
struct RuntimeShard<'a> {
    /// Its place among the shards, from 0.
    index: usize,
    /// How many shards there are.
    count: usize,
    /// Its compact JSON.
    json: &'a str,
}

impl RuntimeShard<'_> {
    /// The shard's ConfigMap, rendered by the runtime template and checked.
    fn render(
        &self,
        templates: &mut Templates,
        project: &Project,
        resolved: &Resolved,
    ) -> (Vec<Object>, Diagnostics) {
        let mut diags = Diagnostics::new();
        let name = match self.index {
            0 => format!("{}-runtime", project.name),
            n => format!("{}-runtime-{n}", project.name),
        };
        let mut labels = agent::project_labels(project);
        labels["cortex.codevald.io/runtime-shard"] =
            json!(format!("{}-of-{}", self.index + 1, self.count));
        let ctx = |runtime_json: &str| {
            json!({
                "project": project.to_json(),
                "name": name,
                "labels": labels,
                "runtime_json": runtime_json,
            })
        };
        let render = |templates: &mut Templates,
                      runtime_json: &str,
                      into: &mut Vec<Object>,
                      diags: &mut Diagnostics| {
            let at = (None, &resolved.project.file);
            templates.render(
                RUNTIME_TEMPLATE,
                &Prepared::new(&ctx(runtime_json)),
                at,
                into,
                diags,
            );
        };
        let mut rendered = Vec::new();
        let built_in = templates.builtin.contains(RUNTIME_TEMPLATE);
        // A project's own template first sees a short placeholder for the
        // shard's JSON, which is put in place after parsing: a 768 KiB string
        // is not escaped by the template and scanned by the YAML parser. A
        // template that does not place `runtime_json` as a whole value is
        // rendered again with it.
        let first = if built_in {
            self.json
        } else {
            RUNTIME_JSON_PLACEHOLDER
        };
        render(templates, first, &mut rendered, &mut diags);
        let placed = built_in
            || rendered.len() == 1
                && rendered
                    .iter_mut()
                    .all(|o| put_in_place(&mut o.body, RUNTIME_JSON_PLACEHOLDER, self.json));
        if !placed && !diags.has_errors() {
            rendered.clear();
            render(templates, self.json, &mut rendered, &mut diags);
        }
        (rendered, diags)
    }
}

/// The project's resource pools by name (an agent's context reads its pool).
fn pools_by_name(resolved: &Resolved) -> BTreeMap<&str, &crate::resolve::ResolvedSpec> {
    resolved
        .specs
        .iter()
        .filter(|s| s.kind == Kind::ResourcePool)
        .map(|s| (s.name.as_str(), s))
        .collect()
}

/// The template of the runtime configuration's ConfigMaps.
const RUNTIME_TEMPLATE: &str = "runtime-configmap.yaml.j2";

/// The object templates in use: the shipped ones a project does not
/// override are built in ([`builtin`]); the rest render with minijinja.
#[derive(Clone)]
struct Templates {
    env: Environment<'static>,
    /// Templates rendered by their built-in form.
    builtin: BTreeSet<&'static str>,
    /// Every template's name and text (a render's objects depend on them).
    sources: Arc<Vec<(String, String)>>,
    /// The shapes of the built-in forms' objects that passed the check.
    shapes: shape::CheckedShapes,
}

impl Templates {
    /// Reads the project's overrides and parses every template in use.
    fn load(source: &dyn Source, engine: Engine) -> Result<Templates, Box<Diagnostic>> {
        let mut env = Environment::new();
        let mut builtin = BTreeSet::new();
        let mut sources = Vec::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, default) in DEFAULT_TEMPLATES {
            let path = format!("templates/{name}");
            let at = crate::span::Span::file_only(std::sync::Arc::from(path.as_str()));
            let fail = |code, message: String| Box::new(Diagnostic::error(code, message).at(&at));
            let text = match source.read(&path) {
                Ok(bytes) => String::from_utf8(bytes)
                    .map_err(|_| fail(codes::NOT_UTF8, format!("{path} is not UTF-8 text")))?,
                Err(SourceError::NotFound(_)) => default.to_string(),
                Err(e) => return Err(fail(codes::FILE_UNREADABLE, e.to_string())),
            };
            sources.push((name.to_string(), text.clone()));
            if engine == Engine::BuiltIn && text == *default && builtin::has(name) {
                builtin.insert(*name);
                continue;
            }
            env.add_template_owned(name.to_string(), text)
                .map_err(|e| {
                    let mut d = fail(
                        codes::RENDER_TEMPLATE,
                        format!("template `{name}` does not parse"),
                    );
                    d.label = Some(e.to_string());
                    d
                })?;
        }
        Ok(Templates {
            env,
            builtin,
            sources: Arc::new(sources),
            shapes: shape::CheckedShapes::default(),
        })
    }

    /// Renders `template` for `spec` (none: the project), checks the object
    /// and adds it to `objects`; a problem becomes a diagnostic.
    fn render(
        &mut self,
        template: &str,
        ctx: &Prepared,
        (spec, file): (Option<&str>, &std::sync::Arc<str>),
        objects: &mut Vec<Object>,
        diags: &mut Diagnostics,
    ) {
        let who = spec.map_or_else(|| "the project".to_string(), str::to_string);
        let at = crate::span::Span::file_only(file.clone());
        let built_in = self.builtin.contains(template);
        let body = if built_in {
            builtin::render(template, ctx.ctx)
        } else {
            self.render_text(template, ctx, &who, &at, diags)
        };
        let Some(body) = body else { return };
        let (Some(_), Some(kind), Some(name)) = (
            body.get("apiVersion").and_then(Value::as_str),
            body.get("kind").and_then(Value::as_str),
            json_at(&body, &["metadata", "name"]).and_then(Value::as_str),
        ) else {
            diags.push(
                Diagnostic::error(codes::RENDER_NOT_AN_OBJECT, format!("template `{template}` rendered an object without apiVersion, kind or metadata.name for {who}"))
                    .at(&at),
            );
            return;
        };
        let what = || format!("{kind} `{name}` rendered by `{template}` for {who}");
        // A built-in form's object is read into its type once per shape
        // ([`shape`]); a project's own template's, every time.
        let checked = if built_in {
            self.shapes
                .check_object(&body, &what, "template", &at, diags)
        } else {
            check::check_object(&body, &what, "template", &at, diags)
        };
        if !checked {
            return;
        }
        push_object(template, spec, body, objects);
    }

    /// The one object a minijinja template renders, read back from its
    /// YAML; none when it renders nothing or fails (a diagnostic then).
    fn render_text(
        &mut self,
        template: &str,
        ctx: &Prepared,
        who: &str,
        at: &crate::span::Span,
        diags: &mut Diagnostics,
    ) -> Option<Value> {
        self.env.set_fuel(Some(ctx.fuel()));
        let text = match self
            .env
            .get_template(template)
            .and_then(|t| t.render(ctx.value()))
        {
            Ok(text) => text,
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        codes::RENDER_TEMPLATE,
                        format!("template `{template}` failed for {who}"),
                    )
                    .at(at)
                    .label(format!("{e:#}"))
                    .help("check the template (a project's own templates/ overrides cortex's)"),
                );
                return None;
            }
        };
        let name: std::sync::Arc<str> = std::sync::Arc::from(format!("templates/{template}"));
        let docs = match crate::yaml::parse_json(&name, &text) {
            Ok(docs) => docs,
            Err(d) => {
                diags.push(
                    Diagnostic::error(
                        codes::RENDER_NOT_AN_OBJECT,
                        format!("template `{template}` rendered invalid YAML for {who}"),
                    )
                    .at(at)
                    .label(d.message),
                );
                return None;
            }
        };
        let count = docs.len();
        match <[Value; 1]>::try_from(docs) {
            Ok([one]) => Some(one),
            Err(_) if count == 0 => None, // the template chose to render nothing
            Err(_) => {
                diags.push(
                    Diagnostic::error(
                        codes::RENDER_NOT_AN_OBJECT,
                        format!("template `{template}` rendered {count} documents for {who}"),
                    )
                    .at(at)
                    .help("render one object per template"),
                );
                None
            }
        }
    }
}

/// The templates rendered for one agent, given its context.
fn agent_templates(ctx: &Value) -> Vec<&'static str> {
    let mut wanted = vec![
        "serviceaccount.yaml.j2",
        "configmap.yaml.j2",
        "deployment.yaml.j2",
    ];
    if ctx["service_ports"]
        .as_array()
        .is_some_and(|p| !p.is_empty())
    {
        wanted.push("service.yaml.j2");
    }
    if !ctx["autoscaling"].is_null() {
        wanted.push("hpa.yaml.j2");
    }
    if ctx["pdb"] == json!(true) {
        wanted.push("pdb.yaml.j2");
    }
    wanted
}

/// A template context, with what minijinja needs made once on first use
/// (built-in templates need none of it).
struct Prepared<'c> {
    ctx: &'c Value,
    /// The context as templates see it.
    value: std::sync::OnceLock<minijinja::Value>,
    /// The context as JSON: its length sets the fuel.
    json: std::sync::OnceLock<String>,
}

impl<'c> Prepared<'c> {
    fn new(ctx: &'c Value) -> Prepared<'c> {
        Prepared {
            ctx,
            value: std::sync::OnceLock::new(),
            json: std::sync::OnceLock::new(),
        }
    }

    fn json(&self) -> &str {
        self.json
            .get_or_init(|| serde_json::to_string(self.ctx).unwrap_or_default())
    }

    /// Fuel is also charged per byte handled (`tojson` costs a quarter of a
    /// unit per byte), so the budget grows with the data the template is
    /// given: one unit per byte of context lets a template serialize all of
    /// it four times over, plus a million steps of its own.
    fn fuel(&self) -> u64 {
        TEMPLATE_FUEL + self.json().len() as u64
    }

    fn value(&self) -> &minijinja::Value {
        self.value
            .get_or_init(|| minijinja::Value::from(minijinja::value::Serde(self.ctx)))
    }
}

/// Fuel (minijinja's step budget) an object template may use beyond what
/// its data costs: generous for any real template, finite for a runaway one.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

fn push_object(template: &str, spec: Option<&str>, body: Value, objects: &mut Vec<Object>) {
    let field = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind, name) = (
        field("/apiVersion"),
        field("/kind"),
        field("/metadata/name"),
    );
    objects.push(Object::new(
        api_version,
        kind,
        name,
        template.to_string(),
        spec.map(str::to_string),
        body,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projects() -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = Vec::new();
        for parent in [
            "examples",
            "fixtures/valid",
            "fixtures/build",
            "fixtures/plan",
            "fixtures/runtime",
        ] {
            let mut found: Vec<_> = std::fs::read_dir(root.join(parent))
                .expect(parent)
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("cortex.yaml").is_file())
                .collect();
            found.sort();
            dirs.extend(found);
        }
        dirs
    }

    /// The built-in forms of the shipped templates make exactly the objects
    /// minijinja renders from the templates' text, for every agent of every
    /// example and fixture project that validates.
    #[test]
    fn built_in_templates_render_what_the_templates_render() {
        let mut compared = 0;
        let mut kinds = BTreeSet::new();
        for dir in projects() {
            let source = crate::WorkTree::open(&dir).expect("a project");
            let result = crate::compile(&source, &crate::Options::default());
            let Some(resolved) = result.validated() else {
                continue;
            };
            let built_in: Bundle = render_inner(resolved, &source, Engine::BuiltIn, Memos::Neither)
                .map(|(bundle, _)| bundle)
                .unwrap_or_else(|d| panic!("{}: {d:?}", dir.display()));
            let text: Bundle = render_inner(resolved, &source, Engine::Text, Memos::Neither)
                .map(|(bundle, _)| bundle)
                .unwrap_or_else(|d| panic!("{}: {d:?}", dir.display()));
            assert_eq!(
                built_in.objects.len(),
                text.objects.len(),
                "{}",
                dir.display()
            );
            for (a, b) in built_in.objects.iter().zip(&text.objects) {
                assert_eq!(a, b, "{}: {}", dir.display(), a.identity());
                kinds.insert(a.kind.clone());
            }
            compared += built_in.objects.len();
        }
        assert!(compared > 100, "{compared}");
        for kind in [
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(kind), "no {kind} compared");
        }
    }

    /// The example project, compiled.
    fn example() -> (crate::WorkTree, crate::Compilation) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/support-desk");
        let source = crate::WorkTree::open(&dir).expect("the example");
        let result = crate::compile(&source, &crate::Options::default());
        (source, result)
    }

    /// The example's files in memory, with `edits` (file, from, to) made.
    fn example_with(edits: &[(&str, &str, &str)]) -> crate::MemorySource {
        fn read(dir: &std::path::Path, prefix: &str, source: &mut crate::MemorySource) {
            for entry in std::fs::read_dir(dir).expect("read the example") {
                let path = entry.expect("entry").path();
                let name = format!(
                    "{prefix}{}",
                    path.file_name().and_then(|n| n.to_str()).expect("name")
                );
                if path.is_dir() {
                    read(&path, &format!("{name}/"), source);
                } else {
                    source.insert(name, std::fs::read(&path).expect("read"));
                }
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/support-desk");
        let mut source = crate::MemorySource::new();
        read(&dir, "", &mut source);
        for (file, from, to) in edits {
            let text = String::from_utf8(source.files()[*file].clone()).expect("text");
            assert!(text.contains(from), "{from} not in {file}");
            source.insert(file.to_string(), text.replacen(from, to, 1).into_bytes());
        }
        source
    }

    /// Every integer field at its schema maximum reaches the objects and
    /// the runtime configuration as written: what the schema lets through,
    /// the Kubernetes types and the runtime's fields hold (no value
    /// refused by the render, none replaced by a default).
    #[test]
    fn every_integer_at_its_maximum_is_rendered_as_written() {
        const MAX: i64 = i32::MAX as i64;
        let source = example_with(&[
            (
                "agents/lookup.yaml",
                "  replicas: 1\n  pool: batch\n",
                "  replicas: 2147483647\n  messaging: { inbox: { capacity: 2147483647 }, delivery: { maxAttempts: 2147483647 } }\n  health: { failureThreshold: 2147483647, interval: 2147483647s }\n",
            ),
            (
                "workflows/nightly-report.yaml",
                "      input: { trigger: \"$(trigger.name)\" }\n",
                "      input: { trigger: \"$(trigger.name)\" }\n      retries: { limit: 2147483647 }\n",
            ),
            (
                "workflows/nightly-report.yaml",
                "  tasks:\n",
                "  concurrency: 2147483647\n  maxActiveExecutions: 2147483647\n  tasks:\n",
            ),
        ]);
        let result = crate::compile(&source, &crate::Options::default());
        let resolved = result
            .validated()
            .unwrap_or_else(|| panic!("{:#?}", result.diagnostics));
        let bundle = render(resolved, &source).unwrap_or_else(|d| panic!("{d:#?}"));
        let agent = &bundle.runtime["agents"]["crm-lookup"];
        let workflow = &bundle.runtime["workflows"]["nightly-report"];
        for (what, value) in [
            ("replicas", &agent["replicas"]),
            ("inbox capacity", &agent["inbox"]["capacity"]),
            ("delivery attempts", &agent["delivery"]["maxAttempts"]),
            ("failure threshold", &agent["health"]["failureThreshold"]),
            ("concurrency", &workflow["concurrency"]),
            ("active executions", &workflow["maxActiveExecutions"]),
            ("retries", &workflow["tasks"]["count"]["retries"]["limit"]),
        ] {
            assert_eq!(value, &json!(MAX), "{what} in runtime.json");
        }
        assert_eq!(agent["health"]["intervalMs"], json!(MAX * 1000));
        let deployment = bundle
            .objects
            .iter()
            .find(|o| o.kind == "Deployment" && o.name == "crm-lookup")
            .expect("the Deployment");
        assert_eq!(deployment.body["spec"]["replicas"], json!(MAX));
        let probe = &deployment.body["spec"]["template"]["spec"]["containers"][0]["livenessProbe"];
        assert_eq!(probe["failureThreshold"], json!(MAX));
        assert_eq!(probe["periodSeconds"], json!(MAX));
    }

    /// Renders `source` sharing bodies, keeping a memo.
    fn render_first<'r>(
        resolved: &'r Resolved,
        source: &crate::MemorySource,
    ) -> (Bundle<Shared, SharedRuntime>, Memo<'r, Shared>) {
        render_shared(resolved, source).expect("renders")
    }

    /// Renders `source` sharing bodies, after a render whose memo is
    /// `previous` (or on its own).
    fn render_after(
        resolved: &Resolved,
        source: &crate::MemorySource,
        previous: Option<&Memo<'_, Shared>>,
    ) -> Bundle<Shared, SharedRuntime> {
        render_taking(resolved, source, previous).expect("renders")
    }

    /// The agents whose objects a render took from `before` (the same
    /// allocations), and those it rendered again.
    fn taken_and_rendered(
        after: &Bundle<Shared, SharedRuntime>,
        before: &Bundle<Shared, SharedRuntime>,
    ) -> (Vec<String>, Vec<String>) {
        let (mut taken, mut rendered) = (BTreeSet::new(), BTreeSet::new());
        for object in &after.objects {
            let Some(spec) = object.spec.clone().filter(|s| s.starts_with("Agent/")) else {
                continue;
            };
            let same = before
                .objects
                .iter()
                .any(|o| o.identity() == object.identity() && Arc::ptr_eq(&o.body, &object.body));
            if same { &mut taken } else { &mut rendered }.insert(spec);
        }
        (taken.into_iter().collect(), rendered.into_iter().collect())
    }

    /// A render after another takes the objects of the agents whose spec,
    /// pool and project are unchanged, renders the others, and makes what
    /// a render on its own makes.
    #[test]
    fn a_second_render_takes_only_unchanged_agents_from_the_first() {
        let old_source = example_with(&[]);
        let new_source = example_with(&[
            ("agents/triage.yaml", "replicas: 2", "replicas: 3"),
            ("pools.yaml", "effect: NoSchedule", "effect: NoExecute"),
        ]);
        let old = crate::compile(&old_source, &crate::Options::default());
        let new = crate::compile(&new_source, &crate::Options::default());
        let (old, new) = (old.validated().expect("old"), new.validated().expect("new"));
        let (first, memo) = render_first(old, &old_source);
        assert_eq!(memo.len(), 4);
        let second = render_after(new, &new_source, Some(&memo));
        let alone = render_after(new, &new_source, None);
        assert_eq!(second.objects, alone.objects);
        assert_eq!(second.runtime, alone.runtime);
        // Shards cut from the entries' texts (some taken) are those of the
        // config as JSON, at any size.
        let plain = render(new, &new_source).expect("renders");
        for limit in [200, 1_000, runtime::SHARD_BYTES] {
            assert_eq!(
                second.runtime.shards(limit),
                runtime::shards(&plain.runtime, limit),
                "{limit}"
            );
        }
        let (taken, rendered) = taken_and_rendered(&second, &first);
        // triage changed; crm-lookup runs in the pool that changed.
        assert_eq!(taken, ["Agent/reviewer", "Agent/writer"]);
        assert_eq!(rendered, ["Agent/crm-lookup", "Agent/triage"]);
        // What changed shows: triage's new replica count, crm-lookup's
        // new toleration.
        let body = |bundle: &Bundle<Shared, SharedRuntime>, kind: &str, name: &str| {
            let object = bundle
                .objects
                .iter()
                .find(|o| o.kind == kind && o.name == name);
            Value::clone(&object.expect("the object").body)
        };
        // Runtime entries are made from their spec alone: only triage's is
        // made again; the others, and every workflow's, are the first
        // render's.
        for (section, name, shared) in [
            ("agents", "triage", false),
            ("agents", "crm-lookup", true),
            ("agents", "writer", true),
            ("workflows", "ticket-pipeline", true),
        ] {
            let (a, b) = (
                first.runtime.entry(section, name),
                second.runtime.entry(section, name),
            );
            let (a, b) = (a.expect("first"), b.expect("second"));
            assert_eq!(Arc::ptr_eq(&a.value, &b.value), shared, "{section}/{name}");
            assert_eq!(Arc::ptr_eq(&a.json, &b.json), shared, "{section}/{name}");
        }
        assert_ne!(
            body(&second, "Deployment", "crm-lookup"),
            body(&first, "Deployment", "crm-lookup")
        );
        assert_eq!(
            body(&second, "Deployment", "writer"),
            body(&first, "Deployment", "writer")
        );
    }

    /// Another template text, or other project facts, and nothing is taken
    /// from the first render.
    #[test]
    fn a_second_render_with_other_templates_or_project_facts_renders_everything() {
        let old_source = example_with(&[]);
        let old = crate::compile(&old_source, &crate::Options::default());
        let old = old.validated().expect("old");
        let (first, memo) = render_first(old, &old_source);
        let configmap = DEFAULT_TEMPLATES
            .iter()
            .find(|(name, _)| *name == "configmap.yaml.j2")
            .map(|(_, text)| format!("{text}\n# edited\n"))
            .expect("the configmap template");
        let other_template = example_with(&[]).with("templates/configmap.yaml.j2", configmap);
        let other_project =
            example_with(&[("cortex.yaml", "name: support-desk", "name: help-desk")]);
        for source in [other_template, other_project] {
            let new = crate::compile(&source, &crate::Options::default());
            let new = new.validated().expect("new");
            let second = render_after(new, &source, Some(&memo));
            let alone = render_after(new, &source, None);
            assert_eq!(second.objects, alone.objects);
            let (taken, rendered) = taken_and_rendered(&second, &first);
            assert!(taken.is_empty(), "{taken:?}");
            assert_eq!(rendered.len(), 4, "{rendered:?}");
        }
    }

    /// An agent's context from the example, and the same with every
    /// conditional of the templates taken both ways (contexts the projects
    /// do not reach), each named by what it changes.
    fn branch_contexts(resolved: &Resolved) -> Vec<(String, Value)> {
        let project = project_facts(resolved);
        let spec = resolved
            .specs
            .iter()
            .find(|s| s.kind == Kind::Agent)
            .expect("an agent");
        let mut base = agent::context(spec, None, &project);
        base["autoscaling"] =
            json!({"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": null});
        let variants: Vec<(&str, Value)> = vec![
            ("/container/args", json!(["--verbose", "1"])),
            ("/container/args", json!([])),
            ("/container/command", json!(["/bin/agent"])),
            ("/container/command", json!([])),
            ("/container/command", Value::Null),
            ("/container/ports", json!([])),
            (
                "/container/ports",
                json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]),
            ),
            (
                "/container/probe",
                json!({"exec": {"command": ["true"]}, "periodSeconds": 3}),
            ),
            ("/container/probe", Value::Null),
            ("/pod/nodeSelector", json!({})),
            ("/pod/nodeSelector", json!({"disk": "ssd"})),
            ("/pod/tolerations", json!([])),
            (
                "/pod/tolerations",
                json!([{"key": "gpu", "operator": "Exists"}]),
            ),
            ("/replicas", Value::Null),
            ("/replicas", json!(0)),
            (
                "/autoscaling",
                json!({"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 0}),
            ),
            (
                "/autoscaling",
                json!({"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 70}),
            ),
            (
                "/autoscaling",
                json!({"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": null}),
            ),
            ("/service_account/annotations", json!({"iam": "role/x"})),
            ("/pod/automountServiceAccountToken", json!(true)),
            ("/labels", json!({"a": "yes", "b": "1.0", "c": "{{ x }}"})),
        ];
        let mut contexts = vec![("the example".to_string(), base.clone())];
        for (pointer, value) in variants {
            let mut ctx = base.clone();
            *ctx.pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{pointer}")) = value.clone();
            contexts.push((format!("{pointer} = {value}"), ctx));
        }
        contexts
    }

    /// The agents' templates (the runtime's ConfigMap has its own test).
    fn agent_template_names() -> impl Iterator<Item = &'static str> {
        DEFAULT_TEMPLATES
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t != RUNTIME_TEMPLATE)
    }

    /// The built-in forms agree with the templates on every branch.
    #[test]
    fn built_in_templates_agree_on_every_branch() {
        let (source, result) = example();
        let resolved = result.validated().expect("the example validates");
        let text = Templates::load(&source, Engine::Text).expect("templates");
        for (what, ctx) in branch_contexts(resolved) {
            let prepared = Prepared::new(&ctx);
            for template in agent_template_names() {
                let rendered = text
                    .env
                    .get_template(template)
                    .and_then(|t| t.render(prepared.value()))
                    .expect("renders");
                let read = crate::yaml::parse_json(&"t".into(), &rendered).expect("YAML");
                let built = builtin::render(template, &ctx).expect("built in");
                assert_eq!(read, vec![built], "{template} with {what}");
            }
        }
    }

    /// What lets a built-in form's objects be checked once per shape
    /// ([`shape`]): on every branch they pass the check, and still pass
    /// with every string but `apiVersion` and `kind` replaced by one no
    /// timestamp or base64 reading takes, so no field they write is read
    /// by its content. (The test shows it can fail: a timestamp field with
    /// that string is refused.)
    #[test]
    fn built_in_objects_pass_the_check_whatever_their_strings_hold() {
        const NOT_READ: &str = "not a time, not base64: ~!";
        fn replace_strings(value: &mut Value) {
            match value {
                Value::String(text) => *text = NOT_READ.to_string(),
                Value::Array(items) => items.iter_mut().for_each(replace_strings),
                Value::Object(map) => map.values_mut().for_each(replace_strings),
                _ => {}
            }
        }
        let (_, result) = example();
        let resolved = result.validated().expect("the example validates");
        let project = project_facts(resolved);
        let runtime = RuntimeShard {
            index: 0,
            count: 1,
            json: "{}",
        };
        let mut objects: Vec<(String, Value)> = Vec::new();
        for (what, ctx) in branch_contexts(resolved) {
            for template in agent_template_names() {
                let built = builtin::render(template, &ctx).expect("built in");
                objects.push((format!("{template} with {what}"), built));
            }
        }
        let source = crate::MemorySource::new();
        let mut templates = Templates::load(&source, Engine::BuiltIn).expect("templates");
        let (shards, diags) = runtime.render(&mut templates, &project, resolved);
        assert!(diags.is_empty(), "{diags:?}");
        objects.extend(
            shards
                .into_iter()
                .map(|o| ("the runtime's ConfigMap".to_string(), o.body)),
        );
        for (what, mut object) in objects {
            assert_eq!(check::check(&object), Ok(()), "{what}");
            let (api_version, kind) = (object["apiVersion"].clone(), object["kind"].clone());
            replace_strings(&mut object);
            object["apiVersion"] = api_version;
            object["kind"] = kind;
            assert_eq!(check::check(&object), Ok(()), "{what}, strings replaced");
        }
        let mut timed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        timed["metadata"]["creationTimestamp"] = json!(NOT_READ);
        assert!(check::check(&timed).is_err());
    }

    /// Every object the default templates render for the example project
    /// takes the fast reader (`yaml::fast`), and it reads exactly what the
    /// full YAML parser reads.
    #[test]
    fn rendered_objects_take_the_fast_reader_and_read_the_same() {
        let (source, result) = example();
        let resolved = result.validated().expect("the example validates");
        let project = project_facts(resolved);
        let templates = Templates::load(&source, Engine::Text).expect("templates");
        let env = templates.env;
        let pools = pools_by_name(resolved);
        let mut checked = 0;
        for spec in resolved.specs.iter().filter(|s| s.kind == Kind::Agent) {
            let ctx = agent::context(spec, agent::pool_of(spec, &pools), &project);
            let prepared = Prepared::new(&ctx);
            for template in agent_templates(&ctx) {
                let text = env
                    .get_template(template)
                    .and_then(|t| t.render(prepared.value()))
                    .expect("renders");
                let fast = crate::yaml::fast::documents(&text)
                    .unwrap_or_else(|| panic!("{template} for {} fell back:\n{text}", spec.name));
                let slow: Vec<Value> = crate::yaml::parse_json_located(&"t".into(), &text)
                    .expect("parses")
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(fast, slow, "{template} for {}", spec.name);
                checked += 1;
            }
        }
        assert!(checked >= 12, "{checked}");
    }
}
