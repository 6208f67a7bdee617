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
        Kind::Environment => include_str!("../../schemas/environment.json"),
    }
}

/// A kind's bundled schema and its compiled validator.
pub struct KindSchema {
    /// The self-contained schema document.
    pub bundled: Value,
    /// The compiled validator.
    pub validator: jsonschema::Validator,
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

    fn build() -> Schemas {
        // The schemas are part of the binary and covered by tests; a broken
        // one is a build defect, not user input.
        let defs: Value = serde_json::from_str(DEFS).expect("schemas/defs.json is valid JSON");
        let shared = defs["$defs"].as_object().cloned().unwrap_or_default();
        let kinds = Kind::ALL
            .into_iter()
            .map(|kind| {
                let bundled = bundle(kind_source(kind), &shared);
                let validator = jsonschema::options()
                    .build(&bundled)
                    .unwrap_or_else(|e| panic!("schema of {kind} compiles: {e}"));
                (kind, KindSchema { bundled, validator })
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
        let root = &self.kind(kind).bundled;
        Cursor {
            root,
            node: Some(root),
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

/// A schema that accepts any cortex document, dispatching on `kind`, for
/// editors that map one schema to every file.
pub fn combined_schema() -> Value {
    let schemas = Schemas::get();
    let branches: Vec<Value> = Kind::ALL
        .into_iter()
        .map(|kind| {
            let mut bundled = schemas.kind(kind).bundled.clone();
            if let Some(obj) = bundled.as_object_mut() {
                obj.remove("$schema");
                obj.remove("$id");
            }
            serde_json::json!({
                "if": { "properties": { "kind": { "const": kind.as_str() } }, "required": ["kind"] },
                "then": bundled,
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
    })
}

/// A position in a schema that follows `$ref`, `allOf`, `properties`,
/// `additionalProperties` and `items` as an instance is walked.
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    root: &'a Value,
    node: Option<&'a Value>,
}

impl<'a> Cursor<'a> {
    /// A cursor that knows nothing (beyond the schema, or free-form values).
    pub fn unknown(self) -> Cursor<'a> {
        Cursor {
            root: self.root,
            node: None,
        }
    }

    /// The schemas that apply here: this node, its `$ref` target and its
    /// `allOf` branches, recursively.
    fn layers(&self) -> Vec<&'a Value> {
        let mut out = Vec::new();
        let mut stack: Vec<&'a Value> = self.node.into_iter().collect();
        while let Some(node) = stack.pop() {
            if out.len() > 32 {
                break;
            }
            out.push(node);
            if let Some(target) = node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| self.root.pointer(p))
            {
                stack.push(target);
            }
            if let Some(all) = node.get("allOf").and_then(Value::as_array) {
                stack.extend(all.iter());
            }
        }
        out
    }

    fn keyword(&self, name: &str) -> Option<&'a Value> {
        self.layers().into_iter().find_map(|l| l.get(name))
    }

    /// The schema of property `key` of the mapping here.
    pub fn property(&self, key: &str) -> Cursor<'a> {
        let layers = self.layers();
        let found = layers
            .iter()
            .find_map(|l| l.get("properties").and_then(|p| p.get(key)))
            .or_else(|| {
                layers
                    .iter()
                    .find_map(|l| l.get("additionalProperties").filter(|a| a.is_object()))
            });
        Cursor {
            root: self.root,
            node: found,
        }
    }

    /// The schema of the items of the list here.
    pub fn items(&self) -> Cursor<'a> {
        Cursor {
            root: self.root,
            node: self.keyword("items"),
        }
    }

    /// Follows a JSON pointer of the instance (`/spec/env/0`).
    pub fn at_pointer(&self, pointer: &str) -> Cursor<'a> {
        let mut cursor = *self;
        for token in pointer.split('/').skip(1) {
            cursor = if token.parse::<usize>().is_ok() && cursor.keyword("items").is_some() {
                cursor.items()
            } else {
                cursor.property(&token.replace("~1", "/").replace("~0", "~"))
            };
        }
        cursor
    }

    /// The key a keyed list merges on (`x-cortex-merge-key`).
    pub fn merge_key(&self) -> Option<&'a str> {
        self.keyword("x-cortex-merge-key").and_then(Value::as_str)
    }

    /// Whether values here are replaced whole (`x-cortex-merge: replace`).
    pub fn replaces_whole(&self) -> bool {
        self.keyword("x-cortex-merge").and_then(Value::as_str) == Some("replace")
    }

    /// The variant keys of a union mapping (`x-cortex-union`).
    pub fn union(&self) -> Option<Vec<&'a str>> {
        let list = self.keyword("x-cortex-union")?.as_array()?;
        Some(list.iter().filter_map(Value::as_str).collect())
    }

    /// Whether the value is passed through verbatim (`x-cortex-verbatim`).
    pub fn is_verbatim(&self) -> bool {
        self.keyword("x-cortex-verbatim").and_then(Value::as_bool) == Some(true)
    }

    /// Whether the value is secret (`x-cortex-secret`).
    pub fn is_secret(&self) -> bool {
        self.keyword("x-cortex-secret").and_then(Value::as_bool) == Some(true)
    }

    /// The cortex format checked here (`x-cortex-format`).
    pub fn format(&self) -> Option<&'a str> {
        self.keyword("x-cortex-format").and_then(Value::as_str)
    }

    /// The property names a mapping here accepts, sorted.
    pub fn known_properties(&self) -> Vec<&'a str> {
        let mut keys: Vec<&str> = self
            .layers()
            .into_iter()
            .filter_map(|l| l.get("properties").and_then(Value::as_object))
            .flat_map(|p| p.keys().map(String::as_str))
            .filter(|k| !k.starts_with('$'))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Whether anything is known about this position.
    pub fn is_known(&self) -> bool {
        self.node.is_some()
    }
}

impl<'a> Cursor<'a> {
    /// The JSON types allowed here (`type`), when the schema says.
    pub fn types(&self) -> Option<Vec<&'a str>> {
        let ty = self.keyword("type")?;
        match ty {
            Value::String(s) => Some(vec![s.as_str()]),
            Value::Array(list) => Some(list.iter().filter_map(Value::as_str).collect()),
            _ => None,
        }
    }
}
