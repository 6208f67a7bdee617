//! Stage 2: resolve `extends` chains and apply the selected environment.
//!
//! Each spec is resolved as `merge(resolved parent, own document)`, then the
//! environment's patches for it are merged on top. Parents are resolved once
//! and memoized, so a template patched by the environment passes the patched
//! value to every spec that extends it. Specs that others extend are
//! resolved first, one chain at a time; the rest (most of a project: the
//! agents and workflows themselves) then each merge over a resolved parent,
//! independently, over every core.

pub mod merge;

use std::collections::HashMap;
use std::sync::Arc;

use crate::diagnostic::{Diagnostic, Diagnostics, closest, codes, did_you_mean};
use crate::document::{Document, Kind};
use crate::load::Documents;
use crate::node::{Map, Node, Value};
use crate::schema::Schemas;
use crate::span::{Provenance, SourceMap, Span};

/// Namespace used when neither the project nor the environment sets one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A spec after inheritance and overlays.
#[derive(Clone, Debug)]
pub struct ResolvedSpec {
    /// Its kind.
    pub kind: Kind,
    /// `metadata.name`.
    pub name: String,
    /// Where the name is written.
    pub name_span: Span,
    /// The file that declares it.
    pub file: Arc<str>,
    /// The inheritance chain, this spec first, the root last.
    pub chain: Vec<String>,
    /// False when the chain is broken (unknown parent, cycle): the spec is
    /// resolved without its ancestors, so missing fields are not reported.
    pub complete: bool,
    /// The whole resolved document (`extends` removed).
    pub node: Node,
}

impl ResolvedSpec {
    /// `Kind/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The resolved `spec` mapping.
    pub fn spec(&self) -> Option<&Node> {
        self.node.get("spec")
    }
}

/// The selected environment.
#[derive(Clone, Debug)]
pub struct SelectedEnvironment {
    /// Its name.
    pub name: String,
    /// The file it was loaded from.
    pub file: Arc<str>,
}

/// The output of stage 2.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The project document.
    pub project: Document,
    /// `metadata.name` of the project.
    pub project_name: String,
    /// The namespace (environment over project over `default`).
    pub namespace: String,
    /// Template values (environment values merged over project values).
    pub values: Node,
    /// The environment, when one was selected.
    pub environment: Option<SelectedEnvironment>,
    /// Every spec (templates included), in load order.
    pub specs: Vec<ResolvedSpec>,
    /// Every Environment document (only the selected one is applied).
    pub environments: Vec<Document>,
    /// The text of every file read.
    pub files: SourceMap,
    /// Whether some file failed to load (see [`Documents::incomplete`]).
    pub incomplete: bool,
    /// Values whose template failed: later checks of them are dropped,
    /// since the template error already says what is wrong there.
    pub template_failures: std::collections::HashSet<Span>,
}

/// Resolves every spec of `docs` for environment `env`.
pub fn resolve(mut docs: Documents, env: Option<&str>, diags: &mut Diagnostics) -> Resolved {
    let index = index_specs(&docs.specs, diags);
    let environment = env.and_then(|name| select_environment(&docs, name, diags));
    let patches = collect_patches(&docs, &index, environment, diags);
    let extended = extended_specs(&docs.specs, &index);
    let mut resolver = Resolver {
        docs: &docs.specs,
        index: &index,
        patches: &patches,
        memo: vec![State::Pending; docs.specs.len()],
        diags,
    };
    for i in (0..docs.specs.len()).filter(|&i| extended[i]) {
        resolver.resolve(i);
    }
    let memo = std::mem::take(&mut resolver.memo);
    drop(resolver);
    // No spec extends a leaf: its document's tree moves into its resolved
    // spec instead of being copied.
    let leaf_nodes: Vec<(usize, Node)> = docs
        .specs
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| !extended[*i])
        .map(|(i, doc)| {
            let emptied = Node::new(Value::Null, doc.node.prov.clone());
            (i, std::mem::replace(&mut doc.node, emptied))
        })
        .collect();
    let leaves: Vec<(usize, (bool, Arc<ResolvedSpec>), Diagnostics)> = {
        use rayon::prelude::*;
        let specs = &docs.specs;
        leaf_nodes
            .into_par_iter()
            .with_min_len(64)
            .map(|(i, node)| {
                let mut found = Diagnostics::new();
                let leaf = resolve_leaf(specs, &index, &patches, &memo, (i, node), &mut found);
                (i, leaf, found)
            })
            .collect()
    };
    let mut shared: Vec<Option<(bool, Arc<ResolvedSpec>)>> = memo
        .into_iter()
        .map(|state| match state {
            State::Done(spec) => Some((spec.complete, spec)),
            _ => None,
        })
        .collect();
    for (i, leaf, found) in leaves {
        shared[i] = Some(leaf);
        diags.extend(found);
    }
    // With the memo gone, each spec has one owner left: taken, not copied.
    let specs: Vec<ResolvedSpec> = shared
        .into_iter()
        .flatten()
        .map(|(complete, spec)| {
            let mut spec = Arc::try_unwrap(spec).unwrap_or_else(|spec| (*spec).clone());
            spec.complete = complete;
            spec
        })
        .collect();

    let empty = Node::new(
        Value::Map(Map::new()),
        Provenance {
            span: Span::file_only(docs.project.file.clone()),
            spec: Arc::from("project"),
        },
    );
    let project_values = docs
        .project
        .node
        .path(&["spec", "values"])
        .unwrap_or(&empty);
    let env_doc = environment.map(|i| &docs.environments[i]);
    let values = match env_doc.and_then(|e| e.node.path(&["spec", "values"])) {
        Some(overlay) => merge::merge_values(project_values, overlay),
        None => project_values.clone(),
    };
    let namespace = env_doc
        .and_then(|e| e.node.str_at(&["spec", "namespace"]))
        .or_else(|| docs.project.node.str_at(&["spec", "namespace"]))
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    Resolved {
        project_name: docs.project.name.clone(),
        namespace,
        values,
        environment: env_doc.map(|e| SelectedEnvironment {
            name: e.name.clone(),
            file: e.file.clone(),
        }),
        specs,
        environments: docs.environments,
        incomplete: docs.incomplete,
        template_failures: Default::default(),
        project: docs.project,
        files: docs.files,
    }
}

type Index = HashMap<(Kind, String), usize>;

fn index_specs(specs: &[Document], diags: &mut Diagnostics) -> Index {
    let mut index = Index::new();
    for (i, doc) in specs.iter().enumerate() {
        if let Some(&first) = index.get(&(doc.kind, doc.name.clone())) {
            let first: &Document = &specs[first];
            diags.push(
                Diagnostic::error(
                    codes::DUPLICATE_NAME,
                    format!("{} is declared twice", doc.id()),
                )
                .at(&doc.name_span)
                .label("second declaration")
                .with_label(&first.name_span, "first declared here")
                .help(format!(
                    "names are unique per kind; rename one of the two {}s",
                    doc.kind
                )),
            );
        } else {
            index.insert((doc.kind, doc.name.clone()), i);
        }
    }
    index
}

fn select_environment(docs: &Documents, name: &str, diags: &mut Diagnostics) -> Option<usize> {
    if let Some(i) = docs.environments.iter().position(|e| e.name == name) {
        return Some(i);
    }
    let mut known: Vec<String> = docs.environments.iter().map(|e| e.name.clone()).collect();
    if let Some(map) = docs
        .project
        .node
        .path(&["spec", "environments"])
        .and_then(Node::as_map)
    {
        known.extend(map.iter().map(|e| e.key.clone()));
    }
    known.sort();
    known.dedup();
    let at = docs
        .project
        .node
        .path(&["spec", "environments"])
        .map_or(&docs.project.name_span, Node::span);
    diags.push(
        Diagnostic::error(
            codes::UNKNOWN_ENVIRONMENT,
            format!("unknown environment `{name}`"),
        )
        .at(at)
        .label("environments are declared here")
        .maybe_help(did_you_mean(name, known.iter().map(String::as_str)))
        .note(if known.is_empty() {
            "the project declares no environments".to_string()
        } else {
            format!("declared: {}", known.join(", "))
        }),
    );
    None
}

/// Checks every environment's patch targets; returns the selected one's
/// patches by spec index.
fn collect_patches(
    docs: &Documents,
    index: &Index,
    selected: Option<usize>,
    diags: &mut Diagnostics,
) -> HashMap<usize, Vec<Node>> {
    let mut out: HashMap<usize, Vec<Node>> = HashMap::new();
    for (env_index, env) in docs.environments.iter().enumerate() {
        let Some(patches) = env.node.path(&["spec", "patches"]).and_then(Node::as_seq) else {
            continue;
        };
        for patch in patches {
            let (Some(target_node), Some(body)) = (patch.get("target"), patch.get("patch")) else {
                continue; // reported by the schema check
            };
            let Some(target) = target_node.as_str() else {
                continue;
            };
            let mut scratch = Diagnostics::new();
            let found = patch_target(target, target_node.span(), &docs.specs, index, &mut scratch);
            if !docs.incomplete {
                diags.extend(scratch);
            }
            let Some(spec_index) = found else {
                continue;
            };
            if Some(env_index) == selected {
                out.entry(spec_index).or_default().push(body.clone());
            }
        }
    }
    out
}

fn patch_target(
    target: &str,
    span: &Span,
    specs: &[Document],
    index: &Index,
    diags: &mut Diagnostics,
) -> Option<usize> {
    let Some((kind_text, name)) = target.split_once('/') else {
        diags.push(
            Diagnostic::error(
                codes::BAD_PATCH_TARGET,
                format!("patch target `{target}` is not `kind/name`"),
            )
            .at(span)
            .help("write e.g. `agent/triage` or `workflow/ticket-pipeline`"),
        );
        return None;
    };
    let Some(kind) =
        Kind::parse_ref(kind_text).filter(|k| !matches!(k, Kind::Project | Kind::Environment))
    else {
        let kinds: Vec<String> = Kind::ALL
            .iter()
            .map(|k| k.as_str().to_lowercase())
            .collect();
        diags.push(
            Diagnostic::error(
                codes::BAD_PATCH_TARGET,
                format!("unknown kind `{kind_text}` in patch target"),
            )
            .at(span)
            .maybe_help(did_you_mean(
                &kind_text.to_lowercase(),
                kinds.iter().map(String::as_str),
            )),
        );
        return None;
    };
    if let Some(&i) = index.get(&(kind, name.to_string())) {
        return Some(i);
    }
    let names = specs
        .iter()
        .filter(|d| d.kind == kind)
        .map(|d| d.name.as_str());
    diags.push(
        Diagnostic::error(
            codes::BAD_PATCH_TARGET,
            format!("patch target `{target}`: no {kind} named `{name}`"),
        )
        .at(span)
        .maybe_help(closest(name, names).map(|c| format!("did you mean `{kind_text}/{c}`?"))),
    );
    None
}

#[derive(Clone)]
enum State {
    Pending,
    Visiting,
    /// Resolved: shared with the children that extend it, never copied.
    Done(Arc<ResolvedSpec>),
}

struct Resolver<'a> {
    docs: &'a [Document],
    index: &'a Index,
    patches: &'a HashMap<usize, Vec<Node>>,
    memo: Vec<State>,
    diags: &'a mut Diagnostics,
}

impl Resolver<'_> {
    /// Resolves spec `i`; the flag is false when the chain is broken (the
    /// spec is still resolved as far as possible, so its own mistakes are
    /// reported too).
    fn resolve(&mut self, i: usize) -> (bool, Arc<ResolvedSpec>) {
        match &self.memo[i] {
            State::Done(spec) => return (spec.complete, Arc::clone(spec)),
            State::Visiting => return (false, Arc::new(self.alone(i))),
            State::Pending => {}
        }
        self.memo[i] = State::Visiting;
        let docs = self.docs;
        let doc = &docs[i];
        let parent = parent_of(doc.kind, &doc.node, |parent_node| {
            match self.parent(i, parent_node) {
                Some(p) => Parent::Found(self.resolve(p)),
                None => Parent::Missing,
            }
        });
        let resolved = Arc::new(assemble(
            doc,
            doc.node.clone(),
            parent,
            self.patches.get(&i),
            self.diags,
        ));
        self.memo[i] = State::Done(Arc::clone(&resolved));
        (resolved.complete, resolved)
    }

    fn alone(&mut self, i: usize) -> ResolvedSpec {
        let doc = &self.docs[i];
        let mut scratch = Diagnostics::new();
        let node = merge::normalize(
            doc.node.clone(),
            Schemas::get().cursor(doc.kind),
            &mut scratch,
        );
        ResolvedSpec {
            kind: doc.kind,
            name: doc.name.clone(),
            name_span: doc.name_span.clone(),
            file: doc.file.clone(),
            chain: vec![doc.name.clone()],
            complete: false,
            node,
        }
    }

    /// Finds the parent named by `extends`, reporting unknown names, wrong
    /// kinds and cycles.
    fn parent(&mut self, i: usize, parent_node: &Node) -> Option<usize> {
        let p = find_parent(self.docs, self.index, i, parent_node, self.diags)?;
        if matches!(self.memo[p], State::Visiting) || p == i {
            self.report_cycle(i, p);
            return None;
        }
        Some(p)
    }

    fn report_cycle(&mut self, from: usize, to: usize) {
        // Walk the extends links from `to` until we are back at `from`.
        let mut cycle = vec![to];
        let mut at = to;
        while at != from && cycle.len() <= self.docs.len() {
            let doc = &self.docs[at];
            let Some(next) = doc
                .node
                .str_at(&["spec", "extends"])
                .and_then(|name| lookup_parent(doc, name, self.index))
            else {
                break;
            };
            cycle.push(next);
            at = next;
        }
        // Report at the alphabetically first member, so the report is stable.
        let start = (0..cycle.len())
            .min_by_key(|&k| {
                (
                    &self.docs[cycle[k]].file,
                    self.docs[cycle[k]].name_span.line,
                )
            })
            .unwrap_or(0);
        cycle.rotate_left(start);
        if cycle.len() > 1 && cycle.first() == cycle.last() {
            cycle.pop();
        }
        let names: Vec<&str> = cycle.iter().map(|&k| self.docs[k].name.as_str()).collect();
        let path = format!("{} → {}", names.join(" → "), names[0]);
        let first = &self.docs[cycle[0]];
        let Some(first_extends) = first.node.path(&["spec", "extends"]) else {
            return;
        };
        let mut diag = Diagnostic::error(codes::EXTENDS_CYCLE, format!("extends cycle: {path}"))
            .at(first_extends.span())
            .label(format!(
                "`{}` extends `{}`",
                first.name,
                names.get(1).unwrap_or(&names[0])
            ))
            .help("break the cycle: one of these specs must not extend the others");
        for &k in cycle.iter().skip(1) {
            if let Some(ext) = self.docs[k].node.path(&["spec", "extends"]) {
                diag = diag.with_label(
                    ext.span(),
                    format!(
                        "`{}` extends `{}`",
                        self.docs[k].name,
                        ext.as_str().unwrap_or("")
                    ),
                );
            }
        }
        self.diags.push(diag);
    }
}

/// Finds the parent named by `extends` of spec `i`, reporting unknown names
/// and wrong kinds.
fn find_parent(
    docs: &[Document],
    index: &Index,
    i: usize,
    parent_node: &Node,
    diags: &mut Diagnostics,
) -> Option<usize> {
    let doc = &docs[i];
    let Some(parent_name) = parent_node.as_str() else {
        diags.push(
            Diagnostic::error(
                codes::SCHEMA_WRONG_TYPE,
                format!(
                    "`extends` must be a name, found {}",
                    parent_node.type_name()
                ),
            )
            .at(parent_node.span()),
        );
        return None;
    };
    let Some(p) = lookup_parent(doc, parent_name, index) else {
        let other_kind = Kind::ALL
            .into_iter()
            .find(|k| index.contains_key(&(*k, parent_name.to_string())));
        let diag = match other_kind {
            Some(k) => Diagnostic::error(
                codes::EXTENDS_WRONG_FAMILY,
                format!(
                    "{} `{}` cannot extend {k} `{parent_name}`",
                    doc.kind, doc.name
                ),
            )
            .at(parent_node.span())
            .label(format!(
                "this is {} {k}",
                crate::diagnostic::article(k.as_str())
            ))
            .help(format!(
                "{} {} extends one of: {}",
                crate::diagnostic::article(doc.kind.as_str()),
                doc.kind,
                doc.kind
                    .parents()
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => {
                let candidates = docs
                    .iter()
                    .filter(|d| doc.kind.parents().contains(&d.kind) && d.name != doc.name)
                    .map(|d| d.name.as_str());
                Diagnostic::error(
                    codes::UNKNOWN_PARENT,
                    format!(
                        "`{}` extends `{parent_name}`, which does not exist",
                        doc.name
                    ),
                )
                .at(parent_node.span())
                .label("unknown parent")
                .maybe_help(did_you_mean(parent_name, candidates))
            }
        };
        diags.push(diag);
        return None;
    };
    Some(p)
}

/// What a spec's `extends` found.
enum Parent {
    /// No `extends`.
    None,
    /// `extends` (written here) on a kind that does not inherit.
    WrongFamily(Span),
    /// A parent that does not exist, or a cycle (reported already).
    Missing,
    /// The resolved parent, and whether its own chain is whole.
    Found((bool, Arc<ResolvedSpec>)),
}

/// The spec of a kind `doc` may extend named `name`.
fn lookup_parent(doc: &Document, name: &str, index: &Index) -> Option<usize> {
    doc.kind
        .parents()
        .iter()
        .find_map(|k| index.get(&(*k, name.to_string())).copied())
}

/// What the `extends` of `node`, a spec of `kind`, names: `find` looks up
/// a parent of a kind that inherits.
fn parent_of(kind: Kind, node: &Node, find: impl FnOnce(&Node) -> Parent) -> Parent {
    match node.path(&["spec", "extends"]) {
        Some(parent_node) if !kind.parents().is_empty() => find(parent_node),
        Some(parent_node) => Parent::WrongFamily(parent_node.span().clone()),
        None => Parent::None,
    }
}

/// Which specs another spec extends (the ones resolved first).
fn extended_specs(docs: &[Document], index: &Index) -> Vec<bool> {
    let mut extended = vec![false; docs.len()];
    for doc in docs {
        let Some(name) = doc.node.str_at(&["spec", "extends"]) else {
            continue;
        };
        if let Some(p) = lookup_parent(doc, name, index) {
            extended[p] = true;
        }
    }
    extended
}

/// Resolves a spec no other spec extends, its parent (if any) resolved
/// already; `node` is the tree of its document `i`.
fn resolve_leaf(
    docs: &[Document],
    index: &Index,
    patches: &HashMap<usize, Vec<Node>>,
    memo: &[State],
    (i, node): (usize, Node),
    diags: &mut Diagnostics,
) -> (bool, Arc<ResolvedSpec>) {
    let doc = &docs[i];
    let parent = parent_of(doc.kind, &node, |parent_node| {
        match find_parent(docs, index, i, parent_node, diags).map(|p| &memo[p]) {
            Some(State::Done(spec)) => Parent::Found((spec.complete, Arc::clone(spec))),
            _ => Parent::Missing,
        }
    });
    let resolved = assemble(doc, node, parent, patches.get(&i), diags);
    (resolved.complete, Arc::new(resolved))
}

/// A spec merged over its parent, the environment's patches on top.
fn assemble(
    doc: &Document,
    node: Node,
    parent: Parent,
    patches: Option<&Vec<Node>>,
    diags: &mut Diagnostics,
) -> ResolvedSpec {
    let schema = Schemas::get().cursor(doc.kind);
    let mut ok = true;
    let inherited = match parent {
        Parent::Found((parent_ok, parent)) => {
            ok = parent_ok;
            Some(parent)
        }
        Parent::Missing => {
            ok = false;
            None
        }
        Parent::WrongFamily(extends) => {
            diags.push(
                Diagnostic::error(
                    codes::EXTENDS_WRONG_FAMILY,
                    format!("{} cannot use `extends`", doc.kind),
                )
                .at(&extends)
                .help("only Agent, AgentTemplate, Workflow and WorkflowTemplate inherit"),
            );
            ok = false;
            None
        }
        Parent::None => None,
    };
    let mut chain = vec![doc.name.clone()];
    // The parent is shared with its other children: its tree is copied once
    // here and merged under the child's in place.
    let mut node = match inherited {
        Some(parent) => {
            chain.extend(parent.chain.iter().cloned());
            merge::merge(Some(parent.node.value.clone()), node, schema, diags)
        }
        None => merge::normalize(node, schema, diags),
    };
    if let Some(spec) = spec_map_mut(&mut node) {
        spec.remove("extends");
    }
    for patch in patches.into_iter().flatten() {
        let spec_schema = schema.property("spec");
        if let Some(spec_node) = node_spec_mut(&mut node) {
            let under = std::mem::take(&mut spec_node.value);
            *spec_node = merge::merge(Some(under), patch.clone(), spec_schema, diags);
        }
    }
    chain.dedup();
    ResolvedSpec {
        kind: doc.kind,
        name: doc.name.clone(),
        name_span: doc.name_span.clone(),
        file: doc.file.clone(),
        chain,
        complete: ok,
        node,
    }
}

fn spec_map_mut(node: &mut Node) -> Option<&mut Map> {
    match &mut node_spec_mut(node)?.value {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

fn node_spec_mut(node: &mut Node) -> Option<&mut Node> {
    match &mut node.value {
        Value::Map(m) => m.get_mut("spec"),
        _ => None,
    }
}
