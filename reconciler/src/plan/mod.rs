//! Plans: what would change between two desired states (two revisions of a
//! repository) or between a desired state and what a target holds.
//!
//! A [`Plan`] is a list of [`Change`]s, one per object, keyed by identity
//! (`group/kind/namespace/name` for Kubernetes objects, `kind/name` for
//! runtime objects), each create, update, delete or unchanged. An update
//! carries a field-level diff ([`FieldChange`]: path, old, new, and the spec
//! lines that caused it) and a unified YAML diff. Secret values are masked
//! before anything is compared, so no rendering can print one.

pub mod fields;
pub mod line_diff;
pub mod mask;
pub mod provenance;
pub mod render;
pub mod source_ref;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use cortex_compiler::bundle::Project;
use cortex_compiler::bundle::{Bundle, SharedRuntime, kind_rank};
use cortex_compiler::resolve::Resolved;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::fields::FieldChange;
use crate::plan::mask::Masker;
use crate::plan::provenance::{Declarations, SpecChanges};
use crate::plan::source_ref::SourceRef;

/// Version of the plan's JSON layout (`cortex diff --format json`).
pub const FORMAT_VERSION: u32 = 1;

/// Where an object lives: the realm a plan entry belongs to (a Kubernetes
/// object, or a runtime object of runtime.json).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Realm {
    /// A Kubernetes object.
    Kubernetes,
    /// A runtime object (runtime.json: agents, topics, workflows, policies, alert rules).
    Runtime,
}

/// The identity of an object: what plans key on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectId {
    /// Kubernetes or runtime.
    pub target: Realm,
    /// API group (`""` for core and for runtime objects).
    pub group: String,
    /// Kind (`Deployment`, `Topic`…).
    pub kind: String,
    /// Namespace, for namespaced Kubernetes objects.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectId {
    /// `group/kind/namespace/name` for Kubernetes objects, `kind/name` for
    /// runtime objects: the key of the plan and of inventory.json.
    pub fn key(&self) -> String {
        match self.target {
            Realm::Kubernetes => format!(
                "{}/{}/{}/{}",
                self.group,
                self.kind,
                self.namespace.as_deref().unwrap_or(""),
                self.name
            ),
            Realm::Runtime => format!("{}/{}", self.kind, self.name),
        }
    }

    /// Order of a plan: Kubernetes objects in apply order, then runtime objects.
    pub(crate) fn order(&self) -> (Realm, usize, &str, Option<&str>, &str) {
        (
            self.target,
            match self.target {
                Realm::Kubernetes => kind_rank(&self.kind),
                Realm::Runtime => 0,
            },
            &self.kind,
            self.namespace.as_deref(),
            &self.name,
        )
    }
}

impl fmt::Display for ObjectId {
    /// `Kind/name` (namespaces are shown once, in the plan's header).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// One object of a desired or live state.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanObject {
    /// Its identity.
    pub id: ObjectId,
    /// `apiVersion` of Kubernetes objects.
    pub api_version: Option<String>,
    /// The spec it was rendered from (`Agent/triage`), when known.
    pub spec: Option<String>,
    /// The object; shared with the other side of a diff when the same
    /// render made both (an unchanged agent's objects), so comparing them
    /// is comparing two pointers.
    pub body: Arc<Value>,
}

impl PlanObject {
    /// Whether `other` has the same body: the same shared one (an unchanged
    /// agent's objects in a diff) needs no walk.
    fn same_body(&self, other: &PlanObject) -> bool {
        Arc::ptr_eq(&self.body, &other.body) || self.body == other.body
    }
}

/// The runtime sections of runtime.json and the kind of their entries.
pub use cortex_compiler::runtime_config::SECTIONS as RUNTIME_SECTIONS;

/// Every object of a bundle, moved out of it: the Kubernetes objects, then
/// the runtime objects (one per entry of runtime.json's sections).
pub fn into_objects<B: Into<Arc<Value>>, R: RuntimeObjects>(
    bundle: Bundle<B, R>,
) -> (Project, Vec<PlanObject>) {
    let Bundle {
        project,
        objects,
        runtime,
        ..
    } = bundle;
    let mut out: Vec<PlanObject> = objects
        .into_iter()
        .map(|o| PlanObject {
            id: ObjectId {
                target: Realm::Kubernetes,
                group: o.group().to_string(),
                kind: o.kind,
                namespace: o.namespace,
                name: o.name,
            },
            api_version: Some(o.api_version),
            spec: o.spec,
            body: o.body.into(),
        })
        .collect();
    out.extend(runtime.into_runtime_objects());
    (project, out)
}

/// A runtime config that becomes plan objects, one per entry.
pub trait RuntimeObjects {
    /// Its entries as runtime objects, section by section
    /// ([`RUNTIME_SECTIONS`]), in name order.
    fn into_runtime_objects(self) -> Vec<PlanObject>;
}

impl RuntimeObjects for Value {
    fn into_runtime_objects(self) -> Vec<PlanObject> {
        runtime_objects(self)
    }
}

impl RuntimeObjects for SharedRuntime {
    /// The agents and workflows keep their shared entries.
    fn into_runtime_objects(self) -> Vec<PlanObject> {
        let SharedRuntime { rest, sections } = self;
        let mut small = runtime_objects(rest).into_iter().peekable();
        let mut out = Vec::new();
        for (section, kind) in RUNTIME_SECTIONS {
            match sections.iter().find(|(s, _)| *s == section) {
                Some((_, entries)) => out.extend(
                    entries
                        .iter()
                        .map(|(name, entry)| runtime_object(kind, name, entry.value.clone())),
                ),
                None => {
                    while let Some(object) = small.next_if(|o| o.id.kind == kind) {
                        out.push(object);
                    }
                }
            }
        }
        out
    }
}

fn runtime_object(kind: &str, name: &str, body: Arc<Value>) -> PlanObject {
    PlanObject {
        id: ObjectId {
            target: Realm::Runtime,
            group: String::new(),
            kind: kind.to_string(),
            namespace: None,
            name: name.to_string(),
        },
        api_version: None,
        spec: Some(format!("{kind}/{name}")),
        body,
    }
}

/// The runtime objects of a runtime config (runtime.json): one per entry
/// of its sections.
pub fn runtime_objects(mut runtime: Value) -> Vec<PlanObject> {
    let mut out = Vec::new();
    for (section, kind) in RUNTIME_SECTIONS {
        if let Some(Value::Object(entries)) = runtime.get_mut(section).map(Value::take) {
            for (name, body) in entries {
                out.push(runtime_object(kind, &name, Arc::new(body)));
            }
        }
    }
    out
}

/// One side of a plan.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// Its objects.
    pub objects: &'a [PlanObject],
    /// The resolved specs they were rendered from, when the side was
    /// compiled (not when it was read from a target): the source of
    /// provenance.
    pub resolved: Option<&'a Resolved>,
}

/// What happens to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Only on the new side.
    Create,
    /// On both sides, different.
    Update,
    /// Only on the old side.
    Delete,
    /// On both sides, equal.
    Unchanged,
}

impl Action {
    /// `+`, `~`, `-` or ` `.
    pub fn sign(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Delete => '-',
            Action::Unchanged => ' ',
        }
    }

    /// The word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
        }
    }
}

/// The change of one object.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Which object.
    #[serde(flatten)]
    pub id: ObjectId,
    /// `group/kind/namespace/name` or `kind/name`.
    pub identity: String,
    /// `apiVersion` (Kubernetes objects).
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// What happens to it.
    pub action: Action,
    /// The spec it is rendered from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// Where that spec is declared (new side; old side for deletes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// Field-level changes (updates only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Unified diff of the object as YAML (empty when unchanged).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
}

/// Counts of a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Objects to create.
    pub create: usize,
    /// Objects to update.
    pub update: usize,
    /// Objects to delete.
    pub delete: usize,
    /// Objects left as they are.
    pub unchanged: usize,
}

impl Summary {
    /// Adds one change.
    pub fn count(&mut self, action: Action) {
        match action {
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Delete => self.delete += 1,
            Action::Unchanged => self.unchanged += 1,
        }
    }

    /// Whether anything changes.
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.delete > 0
    }
}

/// One side's description in a plan's header.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Revision {
    /// As the user named it (`origin/main`, `work tree`).
    pub name: String,
    /// The commit, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.commit {
            Some(c) => write!(f, "{} ({})", self.name, &c[..c.len().min(7)]),
            None => f.write_str(&self.name),
        }
    }
}

/// A plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The command that made it (`cortex diff`, `cortex plan`), for headings.
    #[serde(skip)]
    pub title: &'static str,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The old side.
    pub from: Revision,
    /// The new side.
    pub to: Revision,
    /// Project name.
    pub project: String,
    /// Environment, when one was selected.
    pub environment: Option<String>,
    /// Namespace of the new side.
    pub namespace: String,
    /// Counts.
    pub summary: Summary,
    /// Every object, in apply order (Kubernetes first, then runtime objects).
    pub changes: Vec<Change>,
}

impl Plan {
    /// The changes that change something.
    pub fn changed(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| c.action != Action::Unchanged)
    }

    /// Counts per kind (in plan order), for summary tables.
    pub fn counts_by_kind(&self) -> Vec<(Realm, String, Summary)> {
        let mut counts: Vec<(Realm, String, Summary)> = Vec::new();
        for change in &self.changes {
            match counts
                .iter_mut()
                .find(|(t, k, _)| *t == change.id.target && *k == change.id.kind)
            {
                Some((_, _, s)) => s.count(change.action),
                None => {
                    let mut s = Summary::default();
                    s.count(change.action);
                    counts.push((change.id.target, change.id.kind.clone(), s));
                }
            }
        }
        counts
    }
}

/// How to build a plan.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Masks secret values.
    pub masker: Masker,
    /// Lines of context around each change in unified diffs.
    pub context_lines: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            masker: Masker::random(),
            context_lines: 3,
        }
    }
}

/// An object's old and new form (either missing: created or deleted).
type Pair<'p> = (Option<&'p PlanObject>, Option<&'p PlanObject>);

/// Compares two sides object by object.
pub fn diff(
    from: Side<'_>,
    to: Side<'_>,
    header: (Revision, Revision),
    project: (&str, Option<&str>, &str),
    options: &PlanOptions,
) -> Plan {
    // Pairing the objects and reading the specs' changes are independent.
    let (pairs, (spec_changes, declared)) = rayon::join(
        || pairs_of(from.objects, to.objects),
        || {
            rayon::join(
                || SpecChanges::new(from.resolved, to.resolved),
                || {
                    (
                        Declarations::new(from.resolved),
                        Declarations::new(to.resolved),
                    )
                },
            )
        },
    );
    // Most pairs hold the same object (an unchanged agent's, in a diff):
    // those are found first, in pieces over the cores. Each other pair is
    // then compared as a task of its own, so that big ones (the runtime
    // shards, 768 KiB of JSON each) go to different cores.
    let sorted: Vec<Result<Change, Pair<'_>>> = pairs
        .into_par_iter()
        .with_min_len(64)
        .map(|pair| match pair {
            (Some(old), Some(new)) if old.same_body(new) => Ok(change_of(new, Action::Unchanged)),
            other => Err(other),
        })
        .collect();
    let to_compare: Vec<Pair<'_>> = sorted
        .iter()
        .filter_map(|r| r.as_ref().err().copied())
        .collect();
    let compared: Vec<Option<Change>> = to_compare
        .into_par_iter()
        .with_max_len(1)
        .map(|pair| match pair {
            (Some(old), Some(new)) => Some(update(old, new, &declared.1, &spec_changes, options)),
            (None, Some(new)) => Some(one_sided(new, Action::Create, &declared.1, options)),
            (Some(old), None) => Some(one_sided(old, Action::Delete, &declared.0, options)),
            (None, None) => None,
        })
        .collect();
    let mut compared = compared.into_iter();
    let changes: Vec<Change> = sorted
        .into_iter()
        .filter_map(|r| match r {
            Ok(unchanged) => Some(unchanged),
            Err(_) => compared.next().flatten(),
        })
        .collect();
    let mut summary = Summary::default();
    for change in &changes {
        summary.count(change.action);
    }
    Plan {
        title: "cortex diff",
        format_version: FORMAT_VERSION,
        from: header.0,
        to: header.1,
        project: project.0.to_string(),
        environment: project.1.map(str::to_string),
        namespace: project.2.to_string(),
        summary,
        changes,
    }
}

/// Each object of `to` with its old form, then each object only in `from`,
/// in plan order.
fn pairs_of<'p>(from: &'p [PlanObject], to: &'p [PlanObject]) -> Vec<Pair<'p>> {
    let mut old: HashMap<&ObjectId, &PlanObject> = from.iter().map(|o| (&o.id, o)).collect();
    let mut pairs: Vec<Pair<'p>> = to
        .iter()
        .map(|object| (old.remove(&object.id), Some(object)))
        .collect();
    let mut deleted: Vec<&PlanObject> = old.into_values().collect();
    deleted.sort_by(|a, b| a.id.cmp(&b.id));
    pairs.extend(deleted.into_iter().map(|o| (Some(o), None)));
    pairs.sort_by_cached_key(|(old, new)| new.or(*old).map(|o| o.id.order()));
    pairs
}

fn change_of(object: &PlanObject, action: Action) -> Change {
    Change {
        identity: object.id.key(),
        id: object.id.clone(),
        api_version: object.api_version.clone(),
        action,
        spec: object.spec.clone(),
        source: None,
        fields: Vec::new(),
        diff: String::new(),
    }
}

fn update(
    old: &PlanObject,
    new: &PlanObject,
    declared: &Declarations,
    spec_changes: &SpecChanges,
    options: &PlanOptions,
) -> Change {
    let mut change = change_of(new, Action::Unchanged);
    if old.same_body(new) {
        return change;
    }
    change.source = new.spec.as_deref().and_then(|s| declared.of(s));
    let (old_body, new_body) =
        rayon::join(|| options.masker.mask(old), || options.masker.mask(new));
    change.action = Action::Update;
    // The changed fields and the text diff are independent, and each is
    // long for a big object (a runtime shard holds 768 KiB of JSON).
    let (old_side, new_side) = rayon::join(
        || fields::Parsed::new(&old_body),
        || fields::Parsed::new(&new_body),
    );
    let (fields, diff) = rayon::join(
        || fields::diff(&old_side, &new_side),
        || fields::unified(&old_side, &new_side, &new.id, options.context_lines),
    );
    change.fields = fields;
    spec_changes.attribute(new, &mut change.fields);
    change.diff = diff;
    change
}

fn one_sided(
    object: &PlanObject,
    action: Action,
    declared: &Declarations,
    options: &PlanOptions,
) -> Change {
    let mut change = change_of(object, action);
    change.source = object.spec.as_deref().and_then(|s| declared.of(s));
    let body = options.masker.mask(object);
    let null = Value::Null;
    let (none, body) = (fields::Parsed::new(&null), fields::Parsed::new(&body));
    change.diff = match action {
        Action::Create => fields::unified(&none, &body, &object.id, options.context_lines),
        _ => fields::unified(&body, &none, &object.id, options.context_lines),
    };
    change
}
