//! The JSON Schemas of `schemas/`, embedded in the binary.
//!
//! Each kind's schema is bundled with the shared definitions of
//! `schemas/defs.json` into one self-contained document. Besides validation,
//! the schemas drive the compiler through extension keywords, so behaviour
//! follows the schema rather than hard-coded field lists:
//!
//! | keyword | meaning |
//! |---|---|
//! | `x-cortex-merge-key: name` | a keyed list: `extends` merges entries by this key |
//! | `x-cortex-union: [a, b]` | a mapping takes one of these keys; a child that picks one drops the parent's other |
//! | `x-cortex-merge: replace` | the value is replaced whole, never merged |
//! | `x-cortex-verbatim: true` | never templated (agent `config`, topic `schema`) |
//! | `x-cortex-format: F` | checked by cortex: `duration`, `quantity`, `cron`, `dns-label`, `dns-subdomain` |
//! | `x-cortex-secret: true` | never printed in plans and diffs |

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::document::Kind;
use crate::validate::node_json::NodeJson;

const DEFS: &str = include_str!("../../schemas/defs.json");

fn kind_source(kind: Kind) -> &'static str {
    match kind {
        Kind::Project => include_str!("../../schemas/project.json"),
        Kind::AgentTemplate => include_str!("../../schemas/agent-template.json"),
        Kind::Agent => include_str!("../../schemas/agent.json"),
        Kind::WorkflowTemplate => include_str!("../../schemas/workflow-template.json"),
        Kind::Workflow => include_str!("../../schemas/workflow.json"),
        Kind::Topic => include_str!("../../schemas/topic.json"),
        Kind::ResourcePool => include_str!("../../schemas/resource-pool.json"),
        Kind::AccessPolicy => include_str!("../../schemas/access-policy.json"),
        Kind::AlertRule => include_str!("../../schemas/alert-rule.json"),
        Kind::State => include_str!("../../schemas/state.json"),
        Kind::Environment => include_str!("../../schemas/environment.json"),
    }
}

/// A kind's bundled schema and its compiled validator.
pub struct KindSchema {
    /// The self-contained schema document.
    pub bundled: Value,
    /// The compiled validator, which reads spec trees in place.
    pub validator: jsonschema::Validator<NodeJson>,
    /// The schema as a pre-resolved tree for walking alongside instances.
    tree: Tree,
}

/// Every kind's schema.
pub struct Schemas {
    kinds: HashMap<Kind, KindSchema>,
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(Schemas::build);

impl Schemas {
    /// The embedded schemas (parsed and compiled once per process).
    pub fn get() -> &'static Schemas {
        &SCHEMAS
    }

    /// Starts compiling the schemas on a thread of their own, when they are
    /// not compiled yet: a compile reads and parses its files meanwhile (and
    /// a diff waits for libgit2 to set up), instead of waiting for them when
    /// it first validates.
    pub fn warm_up() {
        if LazyLock::get(&SCHEMAS).is_none() {
            std::thread::spawn(|| {
                Schemas::get();
            });
        }
    }

    fn build() -> Schemas {
        // The schemas are part of the binary and covered by tests; a broken
        // one is a build defect, not user input.
        let defs: Value = serde_json::from_str(DEFS).expect("schemas/defs.json is valid JSON");
        let shared = defs["$defs"].as_object().cloned().unwrap_or_default();
        let kinds = Kind::ALL
            .into_iter()
            .map(|kind| {
                let bundled = bundle(kind_source(kind), &shared);
                let validator = jsonschema::options_for::<NodeJson>()
                    .build(&bundled)
                    .unwrap_or_else(|e| panic!("schema of {kind} compiles: {e}"));
                let tree = Tree::compile(&bundled);
                (
                    kind,
                    KindSchema {
                        bundled,
                        validator,
                        tree,
                    },
                )
            })
            .collect();
        Schemas { kinds }
    }

    /// The schema of `kind`.
    pub fn kind(&self, kind: Kind) -> &KindSchema {
        &self.kinds[&kind]
    }

    /// A cursor at the root of `kind`'s schema.
    pub fn cursor(&self, kind: Kind) -> Cursor<'_> {
        Cursor {
            tree: &self.kind(kind).tree,
            node: Some(0),
        }
    }
}

fn bundle(source: &str, shared: &Map<String, Value>) -> Value {
    let mut schema: Value = serde_json::from_str(source).expect("kind schema is valid JSON");
    let own = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut all = shared.clone();
    all.extend(own);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$defs".into(), Value::Object(all));
    }
    schema
}

/// Suffix of the `$defs` copies that [`editor_schema`] relaxes.
const INHERITED: &str = "~inherited";

/// The schema of `kind` for editors and other tools: self-contained (every
/// `$ref` points into its own `$defs`), and, for kinds that inherit, with
/// the fields inheritance can supply optional when `spec.extends` is set —
/// an editor then marks nothing red in a file that is valid once resolved
/// (the compiler still checks the resolved spec against the strict schema).
/// Unknown fields stay errors either way.
pub fn editor_schema(kind: Kind) -> Value {
    let mut schema = templated(&Schemas::get().kind(kind).bundled);
    if kind.parents().is_empty() {
        return schema;
    }
    let Some(object) = schema.as_object_mut() else {
        return schema;
    };
    if let Some(Value::Object(defs)) = object.get_mut("$defs") {
        let relaxed: Vec<(String, Value)> = defs
            .iter()
            .map(|(name, def)| (format!("{name}{INHERITED}"), relaxed(def)))
            .collect();
        defs.extend(relaxed);
    }
    if let Some(spec) = object.get_mut("properties").and_then(|p| p.get_mut("spec")) {
        let strict = spec.take();
        *spec = serde_json::json!({
            "if": { "type": "object", "required": ["extends"] },
            "then": relaxed(&strict),
            "else": strict,
        });
    }
    schema
}

/// `schema` as a child may write it: no `required`, no `minProperties` (a
/// union's variant may come from the parent), every property may be `null`
/// (which removes an inherited key), a mapping may say `$patch` (merge
/// directives), every `$ref` to its relaxed copy.
fn relaxed(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| *k != "required" && *k != "minProperties")
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) if r.starts_with("#/$defs/") => {
                            Value::String(format!("{r}{INHERITED}"))
                        }
                        ("properties", Value::Object(properties)) => Value::Object(
                            properties
                                .iter()
                                .map(|(name, p)| {
                                    let p = relaxed(p);
                                    let nullable =
                                        serde_json::json!({ "anyOf": [{ "type": "null" }, p] });
                                    (name.clone(), nullable)
                                })
                                .collect(),
                        ),
                        _ => relaxed(v),
                    };
                    (k.clone(), v)
                })
                .collect();
            if out.get("additionalProperties") == Some(&Value::Bool(false))
                && let Some(Value::Object(properties)) = out.get_mut("properties")
            {
                properties
                    .entry("$patch")
                    .or_insert_with(|| serde_json::json!({ "enum": ["replace", "delete"] }));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(relaxed).collect()),
        other => other.clone(),
    }
}

/// A compile-time template in place of a value (`"{{ values.replicas }}"`
/// where an integer belongs): the compiler evaluates it before it checks
/// types, so an editor must take it too.
const TEMPLATE_STRING: &str = r"\{\{.*\}\}";

/// `schema` with every integer, number or boolean also taking a string that
/// holds a compile-time template.
fn templated(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let inner = Value::Object(map.iter().map(|(k, v)| (k.clone(), templated(v))).collect());
            let scalar_type =
                |t: &Value| matches!(t.as_str(), Some("integer" | "number" | "boolean"));
            let typed = match map.get("type") {
                Some(Value::Array(types)) => {
                    types.iter().any(scalar_type) && !types.iter().any(|t| t == "string")
                }
                Some(t) => scalar_type(t),
                None => false,
            };
            if typed {
                serde_json::json!({
                    "anyOf": [inner, { "type": "string", "pattern": TEMPLATE_STRING }]
                })
            } else {
                inner
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(templated).collect()),
        other => other.clone(),
    }
}

/// A schema that accepts any cortex document, dispatching on `kind`, for
/// editors that map one schema to every file: each kind's
/// [`editor_schema`], its `$defs` gathered once at the top, so every
/// `#/$defs/…` resolves in the document itself.
pub fn combined_schema() -> Value {
    let mut defs = Map::new();
    let branches: Vec<Value> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let mut schema = editor_schema(kind);
            if let Some(obj) = schema.as_object_mut() {
                obj.remove("$schema");
                obj.remove("$id");
                if let Some(Value::Object(own)) = obj.remove("$defs") {
                    defs.extend(own);
                }
            }
            serde_json::json!({
                "if": { "properties": { "kind": { "const": kind.as_str() } }, "required": ["kind"] },
                "then": schema,
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cortex.codevald.io/schemas/v1/all.json",
        "title": "cortex document",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": { "kind": { "enum": Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>() } },
        "allOf": branches,
        "$defs": defs,
    })
}

/// One schema position with its `$ref` and `allOf` layers merged in.
#[derive(Default)]
struct TreeNode {
    properties: Vec<(String, usize)>,
    additional: Option<usize>,
    items: Option<usize>,
    merge_key: Option<String>,
    replaces_whole: bool,
    union: Option<Vec<String>>,
    verbatim: bool,
    secret: bool,
    /// Whether a secret is here or anywhere under here.
    holds_secret: bool,
    format: Option<String>,
    types: Option<Vec<String>>,
}

/// A schema compiled once into nodes whose `$ref`s and `allOf`s are
/// resolved, so walking it costs a field read per step.
struct Tree {
    nodes: Vec<TreeNode>,
}

/// Most layers (`$ref` targets and `allOf` branches) merged at one
/// position; the bundled schemas use at most three.
const MAX_LAYERS: usize = 16;

impl Tree {
    fn compile(root: &Value) -> Tree {
        let mut tree = Tree { nodes: Vec::new() };
        let mut memo = HashMap::new();
        tree.node(root, root, &mut memo);
        tree.mark_secret_holders();
        tree
    }

    /// Marks every node under which a secret can be: until no mark
    /// changes, as schemas refer to themselves.
    fn mark_secret_holders(&mut self) {
        for node in &mut self.nodes {
            node.holds_secret = node.secret;
        }
        loop {
            let mut changed = false;
            for id in 0..self.nodes.len() {
                let node = &self.nodes[id];
                let below = node
                    .properties
                    .iter()
                    .map(|(_, child)| *child)
                    .chain(node.additional)
                    .chain(node.items)
                    .any(|child| self.nodes[child].holds_secret);
                if below && !node.holds_secret {
                    self.nodes[id].holds_secret = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn node(
        &mut self,
        value: &Value,
        root: &Value,
        memo: &mut HashMap<*const Value, usize>,
    ) -> usize {
        if let Some(&id) = memo.get(&(value as *const Value)) {
            return id;
        }
        let id = self.nodes.len();
        self.nodes.push(TreeNode::default());
        memo.insert(value as *const Value, id);
        let layers = layers(value, root);
        let first = |name: &str| layers.iter().find_map(|l| l.get(name));
        let mut node = TreeNode {
            merge_key: first("x-cortex-merge-key")
                .and_then(Value::as_str)
                .map(str::to_string),
            replaces_whole: first("x-cortex-merge").and_then(Value::as_str) == Some("replace"),
            union: first("x-cortex-union").and_then(Value::as_array).map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }),
            verbatim: first("x-cortex-verbatim").and_then(Value::as_bool) == Some(true),
            secret: first("x-cortex-secret").and_then(Value::as_bool) == Some(true),
            format: first("x-cortex-format")
                .and_then(Value::as_str)
                .map(str::to_string),
            types: first("type").and_then(|t| match t {
                Value::String(s) => Some(vec![s.clone()]),
                Value::Array(list) => Some(
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                ),
                _ => None,
            }),
            ..TreeNode::default()
        };
        for layer in &layers {
            for (key, sub) in layer
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if !node.properties.iter().any(|(k, _)| k == key) {
                    let child = self.node(sub, root, memo);
                    node.properties.push((key.clone(), child));
                }
            }
        }
        node.properties.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(additional) = layers
            .iter()
            .find_map(|l| l.get("additionalProperties").filter(|a| a.is_object()))
        {
            node.additional = Some(self.node(additional, root, memo));
        }
        if let Some(items) = first("items") {
            node.items = Some(self.node(items, root, memo));
        }
        self.nodes[id] = node;
        id
    }
}

/// The schemas that apply at `value`: itself, its `$ref` target and its
/// `allOf` branches, recursively.
fn layers<'a>(value: &'a Value, root: &'a Value) -> Vec<&'a Value> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(node) = stack.pop() {
        if out.len() == MAX_LAYERS {
            break;
        }
        out.push(node);
        if let Some(target) = node
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| root.pointer(p))
        {
            stack.push(target);
        }
        if let Some(all) = node.get("allOf").and_then(Value::as_array) {
            stack.extend(all.iter().rev());
        }
    }
    out
}

/// A position in a kind's schema, moved along as an instance is walked
/// (`property`, `items`); it answers what the schema says there.
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    tree: &'a Tree,
    node: Option<usize>,
}

impl<'a> Cursor<'a> {
    fn here(&self) -> Option<&'a TreeNode> {
        self.node.map(|id| &self.tree.nodes[id])
    }

    fn to(&self, node: Option<usize>) -> Cursor<'a> {
        Cursor {
            tree: self.tree,
            node,
        }
    }

    /// The schema of property `key` of the mapping here (or of its
    /// `additionalProperties`).
    pub fn property(&self, key: &str) -> Cursor<'a> {
        let next = self.here().and_then(|n| {
            n.properties
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .map(|i| n.properties[i].1)
                .or(n.additional)
        });
        self.to(next)
    }

    /// The schema of the items of the list here.
    pub fn items(&self) -> Cursor<'a> {
        self.to(self.here().and_then(|n| n.items))
    }

    /// Follows a JSON pointer of the instance (`/spec/env/0`).
    pub fn at_pointer(&self, pointer: &str) -> Cursor<'a> {
        pointer
            .split('/')
            .skip(1)
            .fold(*self, |cursor, token| cursor.step(token))
    }

    /// One step of a JSON pointer: an array index or a property.
    pub fn step(&self, token: &str) -> Cursor<'a> {
        let has_items = self.here().is_some_and(|n| n.items.is_some());
        if has_items && token.parse::<usize>().is_ok() {
            self.items()
        } else {
            self.property(&token.replace("~1", "/").replace("~0", "~"))
        }
    }

    /// The key a keyed list merges on (`x-cortex-merge-key`).
    pub fn merge_key(&self) -> Option<&'a str> {
        self.here()?.merge_key.as_deref()
    }

    /// Whether values here are replaced whole (`x-cortex-merge: replace`).
    pub fn replaces_whole(&self) -> bool {
        self.here().is_some_and(|n| n.replaces_whole)
    }

    /// The variant keys of a union mapping (`x-cortex-union`).
    pub fn union(&self) -> Option<Vec<&'a str>> {
        Some(
            self.here()?
                .union
                .as_ref()?
                .iter()
                .map(String::as_str)
                .collect(),
        )
    }

    /// Whether the value is passed through verbatim (`x-cortex-verbatim`).
    pub fn is_verbatim(&self) -> bool {
        self.here().is_some_and(|n| n.verbatim)
    }

    /// Whether the value is secret (`x-cortex-secret`).
    pub fn is_secret(&self) -> bool {
        self.here().is_some_and(|n| n.secret)
    }

    /// Whether a value marked `x-cortex-secret` can be here or anywhere
    /// under here (a walk looking for secrets skips the rest).
    pub fn holds_secret(&self) -> bool {
        self.here().is_some_and(|n| n.holds_secret)
    }

    /// The cortex format checked here (`x-cortex-format`).
    pub fn format(&self) -> Option<&'a str> {
        self.here()?.format.as_deref()
    }

    /// The JSON types allowed here (`type`), when the schema says.
    pub fn types(&self) -> Option<Vec<&'a str>> {
        Some(
            self.here()?
                .types
                .as_ref()?
                .iter()
                .map(String::as_str)
                .collect(),
        )
    }

    /// The property names a mapping here accepts, sorted.
    pub fn known_properties(&self) -> Vec<&'a str> {
        self.here()
            .map(|n| {
                n.properties
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| !k.starts_with('$'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether anything is known about this position.
    pub fn is_known(&self) -> bool {
        self.node.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every integer a spec may hold is bounded, within what an int32
    /// holds: what reads it (a Kubernetes int32 field, the runtime's
    /// counters) takes every value the schema lets through, so `validate`
    /// refuses what `build` would refuse, and no value is dropped for not
    /// fitting its field.
    #[test]
    fn every_integer_of_every_schema_has_a_maximum_an_int32_holds() {
        fn walk(at: &str, value: &Value, unbounded: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    let integer = match map.get("type") {
                        Some(Value::String(t)) => t == "integer",
                        Some(Value::Array(types)) => types.iter().any(|t| t == "integer"),
                        _ => false,
                    };
                    let bounded = map
                        .get("maximum")
                        .and_then(Value::as_i64)
                        .is_some_and(|max| max <= i64::from(i32::MAX));
                    if integer && !bounded {
                        unbounded.push(at.to_string());
                    }
                    for (key, inner) in map {
                        walk(&format!("{at}/{key}"), inner, unbounded);
                    }
                }
                Value::Array(items) => {
                    for (i, inner) in items.iter().enumerate() {
                        walk(&format!("{at}/{i}"), inner, unbounded);
                    }
                }
                _ => {}
            }
        }
        let sources = Kind::ALL
            .map(|kind| (kind.as_str(), kind_source(kind)))
            .into_iter()
            .chain([("defs", DEFS)]);
        let mut unbounded = Vec::new();
        for (name, text) in sources {
            let schema: Value = serde_json::from_str(text).expect("a schema parses");
            walk(name, &schema, &mut unbounded);
        }
        assert!(unbounded.is_empty(), "unbounded integers: {unbounded:#?}");
    }
}
