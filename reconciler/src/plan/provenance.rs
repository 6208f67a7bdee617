//! Provenance in plans: which spec line caused each changed field.
//!
//! Both revisions are compiled, so each spec is known resolved on both
//! sides with the file, line and spec of every value. Comparing a spec's two
//! resolved trees gives its *spec changes* (pointer, old, new, and the line
//! that set the new value — an environment overlay, a template, the agent's
//! own file). A changed field of a rendered object is then attributed to the
//! spec changes of the spec it was rendered from whose values explain it:
//! the same new value (and old value), else a value that contains or is
//! contained in it (`20s` → `periodSeconds: 20`). A field no value explains
//! (a config checksum) is attributed to all of its spec's changes. A value
//! written as a template (`{{ values.model }}`) also names the line that
//! defines the value.

use std::collections::{BTreeMap, HashMap};

use cortex_compiler::node::{Node, Value as NodeValue};
use cortex_compiler::resolve::{Resolved, ResolvedSpec};
use cortex_compiler::span::SourceMap;
use rayon::prelude::*;
use serde_json::Value;

use crate::plan::fields::FieldChange;
use crate::plan::source_ref::SourceRef;
use crate::plan::{PlanObject, RUNTIME_SECTIONS, Realm};

/// Most spec changes named for one field when no value explains it.
const MAX_DERIVED_SOURCES: usize = 3;

/// Where each spec of one side is declared.
#[derive(Debug, Default)]
pub struct Declarations {
    by_id: HashMap<String, SourceRef>,
}

impl Declarations {
    /// Indexes the specs of `resolved` (none for a side read from a target).
    pub fn new(resolved: Option<&Resolved>) -> Declarations {
        let by_id = resolved
            .into_iter()
            .flat_map(|r| r.specs.iter())
            .map(|spec| {
                (
                    spec.id(),
                    SourceRef::from_span(&spec.name_span, spec.name.clone(), String::new()),
                )
            })
            .collect();
        Declarations { by_id }
    }

    /// Where spec `id` (`Agent/triage`) is declared.
    pub fn of(&self, id: &str) -> Option<SourceRef> {
        self.by_id.get(id).cloned()
    }
}

/// One changed value of a resolved spec.
#[derive(Clone, Debug)]
pub struct SpecChange {
    /// Display path in the spec (`spec.env[MODEL].value`).
    pub path: String,
    /// The old value.
    pub old: Option<Value>,
    /// The new value.
    pub new: Option<Value>,
    /// Where the new value is written (for a removal: the nearest mapping
    /// that remains); then the definitions of template values it uses.
    pub sources: Vec<SourceRef>,
}

/// The spec changes of every spec between two resolved projects.
#[derive(Debug, Default)]
pub struct SpecChanges {
    by_spec: BTreeMap<String, Vec<SpecChange>>,
}

impl SpecChanges {
    /// Compares every spec present on both sides (specs only on one side
    /// render objects that are created or deleted whole).
    pub fn new(old: Option<&Resolved>, new: Option<&Resolved>) -> SpecChanges {
        let (Some(old), Some(new)) = (old, new) else {
            return SpecChanges::default();
        };
        let old_specs: HashMap<String, &ResolvedSpec> =
            old.specs.iter().map(|s| (s.id(), s)).collect();
        let values = ValueIndex::new(new);
        let mut by_spec = BTreeMap::new();
        let mut pairs: Vec<(String, &Node, &Node)> = new
            .specs
            .iter()
            .filter_map(|s| {
                let id = s.id();
                let old = old_specs.get(&id)?;
                Some((id, &old.node, &s.node))
            })
            .collect();
        pairs.push((
            format!("Project/{}", new.project_name),
            &old.project.node,
            &new.project.node,
        ));
        // Specs compare independently: over every core.
        let changed: Vec<(String, Vec<SpecChange>)> = pairs
            .into_par_iter()
            .with_min_len(64)
            .filter(|(_, old_node, new_node)| !old_node.same_value(new_node))
            .filter_map(|(id, old_node, new_node)| {
                let mut changes = Vec::new();
                compare(
                    Some(old_node),
                    Some(new_node),
                    new_node,
                    "",
                    &values,
                    &mut changes,
                );
                (!changes.is_empty()).then_some((id, changes))
            })
            .collect();
        by_spec.extend(changed);
        // A spec on one side only explains, as a whole, what it adds to or
        // removes from other objects (a topic's subscribers).
        let new_ids: std::collections::HashSet<String> = new.specs.iter().map(|s| s.id()).collect();
        for spec in &new.specs {
            if !old_specs.contains_key(&spec.id()) {
                by_spec.insert(spec.id(), vec![whole_spec(spec, false)]);
            }
        }
        for spec in &old.specs {
            if !new_ids.contains(&spec.id()) {
                by_spec.insert(spec.id(), vec![whole_spec(spec, true)]);
            }
        }
        SpecChanges { by_spec }
    }

    /// The spec changes of spec `id`.
    pub fn of(&self, id: &str) -> &[SpecChange] {
        self.by_spec.get(id).map_or(&[], Vec::as_slice)
    }

    /// Sets the `sources` of every changed field of `object` (new side):
    /// first the spec changes whose values explain each field; then a field
    /// no value explains (a config checksum) gets the changes of its spec
    /// that explained no other field of the object.
    pub fn attribute(&self, object: &PlanObject, fields: &mut [FieldChange]) {
        let mut used: Vec<&SpecChange> = Vec::new();
        let mut unexplained = Vec::new();
        for (i, field) in fields.iter_mut().enumerate() {
            let chosen = self.explaining(object, field);
            if chosen.is_empty() {
                unexplained.push(i);
                continue;
            }
            used.extend(chosen.iter().copied());
            field.sources = sources_of(&chosen);
        }
        for i in unexplained {
            let owner = owner_of(object, &fields[i]);
            let own = owner.as_deref().map_or(&[][..], |o| self.of(o));
            let mut unused: Vec<&SpecChange> = own
                .iter()
                .filter(|c| !used.iter().any(|u| std::ptr::eq(*u, *c)))
                .collect();
            // A derived field names what it derives from
            // (`checksum/config`): prefer the changes under that name.
            let last = fields[i].path.rsplit(['.', '[']).next().unwrap_or("");
            let hinted: Vec<&SpecChange> = unused
                .iter()
                .copied()
                .filter(|c| words(&c.path).iter().any(|w| words(last).contains(w)))
                .collect();
            if !hinted.is_empty() {
                unused = hinted;
            }
            let chosen: Vec<&SpecChange> = if unused.is_empty() {
                own.iter().take(MAX_DERIVED_SOURCES).collect()
            } else {
                unused.into_iter().take(MAX_DERIVED_SOURCES).collect()
            };
            fields[i].sources = sources_of(&chosen);
        }
    }

    /// The spec changes whose values explain `field`: the best matches
    /// among the changes of its own spec, else confident matches anywhere.
    fn explaining(&self, object: &PlanObject, field: &FieldChange) -> Vec<&SpecChange> {
        let owner = owner_of(object, field);
        let target = Explained::of(field);
        let own = owner.as_deref().map_or(&[][..], |o| self.of(o));
        let chosen = best(own.iter(), &target, 1);
        if !chosen.is_empty() {
            return chosen;
        }
        let all = best(self.by_spec.values().flatten(), &target, 1);
        let confident = all.first().is_some_and(|c| target.score(c) >= 3) || all.len() <= 2;
        if confident { all } else { Vec::new() }
    }
}

fn whole_spec(spec: &ResolvedSpec, removed: bool) -> SpecChange {
    let value = Some(spec.node.to_json());
    let (old, new) = if removed {
        (value, None)
    } else {
        (None, value)
    };
    SpecChange {
        path: String::new(),
        old,
        new,
        sources: vec![SourceRef::from_span(
            &spec.name_span,
            spec.name.clone(),
            String::new(),
        )],
    }
}

/// Words of a path (`checksum/config` → `checksum`, `config`).
fn words(path: &str) -> Vec<&str> {
    path.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| w.len() > 2)
        .collect()
}

fn sources_of(changes: &[&SpecChange]) -> Vec<SourceRef> {
    let mut sources: Vec<SourceRef> = changes
        .iter()
        .flat_map(|c| c.sources.iter().cloned())
        .collect();
    let mut seen = std::collections::HashSet::new();
    sources.retain(|s| seen.insert((s.file.clone(), s.line, s.field.clone())));
    sources
}

/// The spec a field was rendered from: the object's own spec, or for a
/// field inside the runtime ConfigMap's `runtime.json`, the entry's spec.
fn owner_of(object: &PlanObject, field: &FieldChange) -> Option<String> {
    if object.id.target == Realm::Kubernetes
        && let Some(inner) = &field.inner
    {
        let mut tokens = inner.split('/').skip(1);
        if let (Some(section), Some(name)) = (tokens.next(), tokens.next())
            && let Some((_, kind)) = RUNTIME_SECTIONS.iter().find(|(s, _)| *s == section)
        {
            let name = name.replace("~1", "/").replace("~0", "~");
            return Some(format!("{kind}/{name}"));
        }
    }
    object.spec.clone()
}

/// What a changed field looks like, for matching against spec changes.
struct Explained {
    old: Vec<String>,
    new: Vec<String>,
}

impl Explained {
    fn of(field: &FieldChange) -> Explained {
        Explained {
            old: field.old.as_ref().map(scalars).unwrap_or_default(),
            new: field.new.as_ref().map(scalars).unwrap_or_default(),
        }
    }

    /// 4: same old and new values; 3: same new value (or same removed
    /// value); 1: a value contains the other; 0: unrelated.
    fn score(&self, change: &SpecChange) -> u8 {
        let old = change.old.as_ref().map(scalars).unwrap_or_default();
        let new = change.new.as_ref().map(scalars).unwrap_or_default();
        let (mine, theirs, my_old, their_old) = if self.new.is_empty() && new.is_empty() {
            (&self.old, &old, &Vec::new(), &Vec::new())
        } else {
            (&self.new, &new, &self.old, &old)
        };
        if mine.is_empty() || theirs.is_empty() {
            return 0;
        }
        if intersects(mine, theirs) {
            let olds_agree =
                (my_old.is_empty() && their_old.is_empty()) || intersects(my_old, their_old);
            return if olds_agree { 4 } else { 3 };
        }
        let contains = mine.iter().any(|m| {
            theirs.iter().any(|t| {
                (t.chars().count() >= 3 && m.contains(t.as_str()))
                    || (m.chars().count() >= 2 && t.contains(m.as_str()))
            })
        });
        u8::from(contains)
    }
}

fn intersects(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.contains(x))
}

/// The changes with the highest score (at least `min`).
fn best<'c>(
    changes: impl Iterator<Item = &'c SpecChange>,
    target: &Explained,
    min: u8,
) -> Vec<&'c SpecChange> {
    let mut top = min;
    let mut chosen = Vec::new();
    for change in changes {
        let score = target.score(change);
        if score > top {
            top = score;
            chosen.clear();
        }
        if score == top {
            chosen.push(change);
        }
    }
    chosen
}

/// The scalar leaves of a value as text (`3` and `"3"` alike).
fn scalars(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_scalars(value, &mut out);
    out
}

fn collect_scalars(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_scalars(i, out)),
        Value::Object(map) => map.values().for_each(|v| collect_scalars(v, out)),
        other => out.push(other.to_string()),
    }
}

/// Where template values (`values.x.y`) are defined, to name them when a
/// templated spec value changes.
struct ValueIndex<'r> {
    values: &'r Node,
    files: &'r SourceMap,
}

impl<'r> ValueIndex<'r> {
    fn new(resolved: &'r Resolved) -> ValueIndex<'r> {
        ValueIndex {
            values: &resolved.values,
            files: &resolved.files,
        }
    }

    /// The definitions of the `values.…` a templated value reads.
    fn used_by(&self, node: &Node) -> Vec<SourceRef> {
        let Some(text) = self.files.text(&node.prov.span.file) else {
            return Vec::new();
        };
        let span = &node.prov.span;
        let written: String = text
            .chars()
            .skip(span.start as usize)
            .take(span.end.saturating_sub(span.start) as usize)
            .collect();
        if !written.contains("{{") {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut rest = written.as_str();
        while let Some(at) = rest.find("values.") {
            let after = &rest[at + "values.".len()..];
            let path: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '-')
                .collect();
            let keys: Vec<&str> = path.trim_end_matches('.').split('.').collect();
            if let Some(defined) = self.values.path(&keys) {
                out.push(SourceRef::at(
                    &defined.prov,
                    format!("values.{}", keys.join(".")),
                ));
            }
            rest = &after[path.len()..];
        }
        out
    }
}

/// Compares two resolved trees; `anchor` is the nearest node present on
/// the new side (where a removal is reported).
fn compare(
    old: Option<&Node>,
    new: Option<&Node>,
    anchor: &Node,
    path: &str,
    values: &ValueIndex<'_>,
    out: &mut Vec<SpecChange>,
) {
    match (old.map(|n| &n.value), new.map(|n| &n.value)) {
        (Some(NodeValue::Map(a)), Some(NodeValue::Map(b))) => {
            let here = new.unwrap_or(anchor);
            for entry in b {
                compare(
                    a.get(&entry.key),
                    Some(&entry.value),
                    here,
                    &join_key(path, &entry.key),
                    values,
                    out,
                );
            }
            for entry in a {
                if b.get(&entry.key).is_none() {
                    compare(
                        Some(&entry.value),
                        None,
                        here,
                        &join_key(path, &entry.key),
                        values,
                        out,
                    );
                }
            }
        }
        (Some(NodeValue::Seq(a)), Some(NodeValue::Seq(b)))
            if !all_scalars(a) || !all_scalars(b) =>
        {
            let here = new.unwrap_or(anchor);
            match (names(a), names(b)) {
                (Some(old_names), Some(new_names)) => {
                    for (i, name) in new_names.iter().enumerate() {
                        let old = old_names.iter().position(|n| n == name).map(|j| &a[j]);
                        compare(
                            old,
                            Some(&b[i]),
                            here,
                            &format!("{path}[{name}]"),
                            values,
                            out,
                        );
                    }
                    for (j, name) in old_names.iter().enumerate() {
                        if !new_names.contains(name) {
                            compare(
                                Some(&a[j]),
                                None,
                                here,
                                &format!("{path}[{name}]"),
                                values,
                                out,
                            );
                        }
                    }
                }
                _ => {
                    for i in 0..a.len().max(b.len()) {
                        compare(
                            a.get(i),
                            b.get(i),
                            here,
                            &format!("{path}[{i}]"),
                            values,
                            out,
                        );
                    }
                }
            }
        }
        // A subtree that appeared or disappeared: one change per leaf, each
        // with its own line.
        (None, Some(NodeValue::Map(_) | NodeValue::Seq(_)))
        | (Some(NodeValue::Map(_) | NodeValue::Seq(_)), None) => {
            let present = new.or(old).into_iter();
            for node in present {
                let leaves = node
                    .nodes_where(&|n| !matches!(n.value, NodeValue::Map(_) | NodeValue::Seq(_)));
                for (pointer, leaf) in leaves {
                    let leaf_path = format!("{path}{}", pointer_as_path(&pointer));
                    let (old_leaf, new_leaf) = if new.is_some() {
                        (None, Some(leaf))
                    } else {
                        (Some(leaf), None)
                    };
                    out.push(change(old_leaf, new_leaf, anchor, leaf_path, values));
                }
            }
        }
        _ => {
            let (a, b) = (old.map(Node::to_json), new.map(Node::to_json));
            if a != b {
                out.push(change(old, new, anchor, path.to_string(), values));
            }
        }
    }
}

fn change(
    old: Option<&Node>,
    new: Option<&Node>,
    anchor: &Node,
    path: String,
    values: &ValueIndex<'_>,
) -> SpecChange {
    let written = new.unwrap_or(anchor);
    let mut sources = vec![SourceRef::at(&written.prov, path.clone())];
    if let Some(node) = new {
        sources.extend(values.used_by(node));
    }
    SpecChange {
        path,
        old: old.map(Node::to_json),
        new: new.map(Node::to_json),
        sources,
    }
}

fn join_key(path: &str, key: &str) -> String {
    let simple = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), simple) {
        (true, true) => key.to_string(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", serde_json::to_string(key).unwrap_or_default()),
    }
}

fn pointer_as_path(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if token.parse::<usize>().is_ok() {
            out.push_str(&format!("[{token}]"));
        } else {
            out = join_key(&out, &token);
            if !out.starts_with('.') && !out.starts_with('[') {
                out.insert(0, '.');
            }
        }
    }
    out
}

fn all_scalars(items: &[Node]) -> bool {
    items
        .iter()
        .all(|i| !matches!(i.value, NodeValue::Map(_) | NodeValue::Seq(_)))
}

fn names(items: &[Node]) -> Option<Vec<&str>> {
    crate::plan::fields::unique_names(items.iter().map(|i| i.get("name").and_then(Node::as_str)))
}
