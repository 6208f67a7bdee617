//! Field-level and unified diffs of two objects.
//!
//! Lists whose items all carry a unique `name` (containers, env, ports,
//! volumes…) are compared by name, so inserting an item does not shift every
//! later one; a `{name, value}` item (an env var) shows as `env[MODEL]`. A
//! string holding a JSON document (a ConfigMap's `config.json`, the runtime
//! config) is compared field by field inside the document.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::plan::ObjectId;
use crate::plan::source_ref::SourceRef;

/// One changed field of an object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// Display path: `spec.template.spec.containers[triage].env[MODEL]`.
    pub path: String,
    /// JSON pointer (RFC 6901) of the field in the object; for a field
    /// inside an embedded JSON document, of the string that holds it.
    pub pointer: String,
    /// JSON pointer inside the embedded JSON document, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<String>,
    /// The old value (absent: the field is new).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The new value (absent: the field is removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
    /// The spec lines that caused the change (new side).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRef>,
}

#[derive(Clone, Default)]
struct Path {
    display: String,
    pointer: String,
    inner: Option<String>,
}

impl Path {
    fn key(&self, key: &str) -> Path {
        let mut next = self.clone();
        if is_identifier(key) {
            if !next.display.is_empty() {
                next.display.push('.');
            }
            next.display.push_str(key);
        } else {
            next.display.push('[');
            next.display
                .push_str(&serde_json::to_string(key).unwrap_or_default());
            next.display.push(']');
        }
        next.push_token(key);
        next
    }

    fn item(&self, index: usize, label: Option<&str>) -> Path {
        let mut next = self.clone();
        match label {
            Some(name) if is_identifier(name) => next.display.push_str(&format!("[{name}]")),
            Some(name) => next.display.push_str(&format!(
                "[{}]",
                serde_json::to_string(name).unwrap_or_default()
            )),
            None => next.display.push_str(&format!("[{index}]")),
        }
        next.push_token(&index.to_string());
        next
    }

    fn push_token(&mut self, token: &str) {
        let pointer = match &mut self.inner {
            Some(inner) => inner,
            None => &mut self.pointer,
        };
        cortex_compiler::node::push_pointer_token(pointer, token);
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One side of a comparison: an object (`null` for a missing one) and the
/// texts of its strings that hold a JSON document. A document is checked,
/// not parsed into a tree: a runtime shard holds 768 KiB of JSON of which
/// a change touches a few entries, so only the parts whose texts differ
/// are parsed ([`walk_document`]), and a document is shown by re-indenting
/// its text when serde_json wrote it ([`pretty_document`]).
pub struct Parsed<'a> {
    value: &'a Value,
    documents: HashSet<&'a str>,
}

impl<'a> Parsed<'a> {
    /// `value` with its embedded documents found.
    pub fn new(value: &'a Value) -> Parsed<'a> {
        fn collect<'a>(value: &'a Value, out: &mut HashSet<&'a str>) {
            match value {
                Value::String(s) if holds_document(s) => {
                    out.insert(s);
                }
                Value::Object(map) => map.values().for_each(|v| collect(v, out)),
                Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        let mut documents = HashSet::new();
        collect(value, &mut documents);
        Parsed { value, documents }
    }
}

/// Every changed field between `old` and `new` (either may be `null` for a
/// missing object), in document order.
pub fn diff(old: &Parsed, new: &Parsed) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let documents = (&old.documents, &new.documents);
    walk(
        Some(old.value),
        Some(new.value),
        &Path::default(),
        documents,
        &mut out,
    );
    out
}

/// The texts of each side's strings that hold a document.
type Documents<'d> = (&'d HashSet<&'d str>, &'d HashSet<&'d str>);

fn walk(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &Path,
    documents: Documents<'_>,
    out: &mut Vec<FieldChange>,
) {
    match (old, new) {
        (Some(a), Some(b)) if a == b => {}
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                walk(a.get(key), b.get(key), &path.key(key), documents, out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if !all_scalars(a) || !all_scalars(b) => {
            walk_list(a, b, path, documents, out)
        }
        (Some(Value::String(a)), Some(Value::String(b)))
            if path.inner.is_none()
                && documents.0.contains(a.as_str())
                && documents.1.contains(b.as_str()) =>
        {
            let mut inner = path.clone();
            inner.inner = Some(String::new());
            walk_document(a, b, &inner, out);
        }
        _ => out.push(leaf(path, old, new)),
    }
}

fn leaf(path: &Path, old: Option<&Value>, new: Option<&Value>) -> FieldChange {
    FieldChange {
        path: if path.display.is_empty() {
            "(whole object)".to_string()
        } else {
            path.display.clone()
        },
        pointer: path.pointer.clone(),
        inner: path.inner.clone(),
        old: old.cloned(),
        new: new.cloned(),
        sources: Vec::new(),
    }
}

/// Lists of scalars (`[billing, bug]`) read best as whole values.
fn all_scalars(items: &[Value]) -> bool {
    items.iter().all(|i| !i.is_object() && !i.is_array())
}

/// The names of a list whose items are all maps with a unique string `name`.
fn names(items: &[Value]) -> Option<Vec<&str>> {
    unique_names(items.iter().map(|i| i.get("name").and_then(Value::as_str)))
}

/// The names, when every item has one and no two are alike: such a list
/// is compared by name (rendered objects here, resolved specs in
/// `provenance`).
pub(crate) fn unique_names<'a>(
    names: impl Iterator<Item = Option<&'a str>>,
) -> Option<Vec<&'a str>> {
    let names: Vec<&str> = names.collect::<Option<_>>()?;
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    (sorted.len() == names.len()).then_some(names)
}

/// The `value` of a `{name, value}` item (an env var), shown as the item.
fn pair_value(item: &Value) -> Option<&Value> {
    let map = item.as_object()?;
    (map.len() == 2 && map.contains_key("name"))
        .then(|| map.get("value"))
        .flatten()
}

fn walk_list(
    a: &[Value],
    b: &[Value],
    path: &Path,
    documents: Documents<'_>,
    out: &mut Vec<FieldChange>,
) {
    let (Some(old_names), Some(new_names)) = (names(a), names(b)) else {
        for i in 0..a.len().max(b.len()) {
            walk(a.get(i), b.get(i), &path.item(i, None), documents, out);
        }
        return;
    };
    let before = out.len();
    for (i, name) in new_names.iter().enumerate() {
        let old = old_names.iter().position(|n| n == name).map(|j| &a[j]);
        item(old, Some(&b[i]), &path.item(i, Some(name)), documents, out);
    }
    for (j, name) in old_names.iter().enumerate() {
        if !new_names.contains(name) {
            item(Some(&a[j]), None, &path.item(j, Some(name)), documents, out);
        }
    }
    if out.len() == before && old_names != new_names {
        out.push(FieldChange {
            path: format!("{} (order)", path.display),
            ..leaf(
                path,
                Some(&Value::from(old_names)),
                Some(&Value::from(new_names)),
            )
        });
    }
}

fn item(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &Path,
    documents: Documents<'_>,
    out: &mut Vec<FieldChange>,
) {
    let old_pair = old.map(pair_value);
    let new_pair = new.map(pair_value);
    let all_pairs = old_pair.is_none_or(|p| p.is_some()) && new_pair.is_none_or(|p| p.is_some());
    if all_pairs && old != new {
        let mut value_path = path.clone();
        value_path.push_token("value");
        out.push(leaf(&value_path, old_pair.flatten(), new_pair.flatten()));
        if let Some(last) = out.last_mut() {
            last.path = path.display.clone();
        }
    } else {
        walk(old, new, path, documents, out);
    }
}

/// Compares two different JSON texts as [`walk`] compares the values they
/// hold, parsing only what it must: members whose texts are the same are
/// equal, and objects are split into their members' texts until the texts
/// differ; what differs is parsed and walked. (Fields inside a document
/// are never documents themselves.)
fn walk_document(old: &str, new: &str, path: &Path, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    let (Some(old_members), Some(new_members)) = (members(old), members(new)) else {
        return walk_parsed(Some(old), Some(new), path, out);
    };
    let mut keys: Vec<&String> = old_members.keys().chain(new_members.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let path = path.key(key);
        match (old_members.get(key), new_members.get(key)) {
            (Some(old), Some(new)) => walk_document(old.get(), new.get(), &path, out),
            (old, new) => walk_parsed(old.map(|r| r.get()), new.map(|r| r.get()), &path, out),
        }
    }
}

/// Parses the parts of a document that differ (either may be missing) and
/// walks them as values.
fn walk_parsed(old: Option<&str>, new: Option<&str>, path: &Path, out: &mut Vec<FieldChange>) {
    let (old, new) = (old.map(parse_checked), new.map(parse_checked));
    let no_documents = HashSet::new();
    walk(
        old.as_ref(),
        new.as_ref(),
        path,
        (&no_documents, &no_documents),
        out,
    );
}

/// The members of a JSON object's text, each as its own text (`None` for
/// any other value).
fn members(text: &str) -> Option<BTreeMap<String, &RawValue>> {
    text.trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str(text).ok())
        .flatten()
}

/// A part of a document that [`holds_document`] checked (`null` is never
/// returned for one: every part of a checked document parses).
fn parse_checked(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

/// The deepest nesting serde_json parses into a value (deeper text is an
/// error, and is compared as a plain string).
const DEEPEST_DOCUMENT: usize = 127;

/// Whether a string holds a JSON object or array that serde_json parses
/// into a value: checked by a scan, without building the value.
fn holds_document(text: &str) -> bool {
    let trimmed = text.trim_start();
    (trimmed.starts_with('{') || trimmed.starts_with('['))
        && nesting(text) <= DEEPEST_DOCUMENT
        && serde_json::from_str::<&RawValue>(text).is_ok()
}

/// How deeply the brackets outside strings nest in `text`.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for byte in text.bytes() {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'{' | b'[') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A document as a reviewer reads it, pretty-printed: re-indented when it
/// is serde_json's own compact text (a runtime shard), else parsed and
/// printed.
fn pretty_document(text: &str) -> String {
    let mut pretty = cortex_compiler::pretty_json::pretty_of_compact(text)
        .unwrap_or_else(|| serde_json::to_string_pretty(&parse_checked(text)).unwrap_or_default());
    pretty.push('\n');
    pretty
}

/// The object as a reviewer reads it: strings holding JSON documents are
/// pretty-printed so that line diffs show the changed lines.
fn for_display(value: &Value, documents: &HashSet<&str>) -> Value {
    match value {
        Value::String(s) if documents.contains(s.as_str()) => Value::String(pretty_document(s)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| for_display(v, documents)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), for_display(v, documents)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn yaml_of(side: &Parsed) -> String {
    if side.value.is_null() {
        String::new()
    } else {
        let shown = for_display(side.value, &side.documents);
        cortex_compiler::yaml_out::to_yaml(&shown)
    }
}

/// A unified diff of the two objects as YAML (`null` for a missing side).
pub fn unified(old: &Parsed, new: &Parsed, id: &ObjectId, context: usize) -> String {
    let (a, b) = rayon::join(|| yaml_of(old), || yaml_of(new));
    let old_name = if old.value.is_null() {
        "/dev/null".to_string()
    } else {
        format!("a/{id}")
    };
    let new_name = if new.value.is_null() {
        "/dev/null".to_string()
    } else {
        format!("b/{id}")
    };
    crate::plan::line_diff::unified(&a, &b, context, (&old_name, &new_name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(old: Value, new: Value) -> Vec<(String, Option<Value>, Option<Value>)> {
        diff(&Parsed::new(&old), &Parsed::new(&new))
            .into_iter()
            .map(|f| (f.path, f.old, f.new))
            .collect()
    }

    #[test]
    fn env_vars_compare_by_name_and_show_their_value() {
        let old =
            json!({"env": [{"name": "A", "value": "1"}, {"name": "MODEL", "value": "small"}]});
        let new = json!({"env": [{"name": "NEW", "value": "x"}, {"name": "A", "value": "1"}, {"name": "MODEL", "value": "large"}]});
        assert_eq!(
            paths(old, new),
            vec![
                ("env[NEW]".into(), None, Some(json!("x"))),
                (
                    "env[MODEL]".into(),
                    Some(json!("small")),
                    Some(json!("large"))
                ),
            ]
        );
    }

    #[test]
    fn lists_without_names_compare_by_index() {
        assert_eq!(
            paths(
                json!({"a": [{"x": 1}, {"x": 2}]}),
                json!({"a": [{"x": 1}, {"x": 3}, {"x": 4}]})
            ),
            vec![
                ("a[1].x".into(), Some(json!(2)), Some(json!(3))),
                ("a[2]".into(), None, Some(json!({"x": 4}))),
            ]
        );
    }

    #[test]
    fn scalar_lists_change_whole() {
        assert_eq!(
            paths(json!({"a": [1, 2]}), json!({"a": [1, 3, 2]})),
            vec![("a".into(), Some(json!([1, 2])), Some(json!([1, 3, 2])))]
        );
    }

    #[test]
    fn json_inside_strings_is_compared_inside() {
        let old = json!({"data": {"config.json": "{\"model\": \"a\", \"t\": 1}"}});
        let new = json!({"data": {"config.json": "{\"model\": \"b\", \"t\": 1}"}});
        let changes = diff(&Parsed::new(&old), &Parsed::new(&new));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, r#"data["config.json"].model"#);
        assert_eq!(changes[0].pointer, "/data/config.json");
        assert_eq!(changes[0].inner.as_deref(), Some("/model"));
    }

    #[test]
    fn json_inside_a_moved_named_item_is_compared_with_its_own_old_form() {
        let old = json!({"c": [
            {"name": "a", "cfg": "{\"x\": 1}"},
            {"name": "b", "cfg": "{\"y\": 1}"},
        ]});
        let new = json!({"c": [
            {"name": "b", "cfg": "{\"y\": 2}"},
            {"name": "a", "cfg": "{\"x\": 1}"},
        ]});
        assert_eq!(
            paths(old, new),
            vec![("c[b].cfg.y".into(), Some(json!(1)), Some(json!(2)))]
        );
    }

    #[test]
    fn reordering_named_items_is_a_change() {
        let old = json!({"c": [{"name": "a"}, {"name": "b"}]});
        let new = json!({"c": [{"name": "b"}, {"name": "a"}]});
        assert_eq!(paths(old, new)[0].0, "c (order)");
    }

    #[test]
    fn unified_diff_shows_changed_lines() {
        let id = ObjectId {
            target: crate::plan::Realm::Runtime,
            group: String::new(),
            kind: "Topic".into(),
            namespace: None,
            name: "t".into(),
        };
        let (old, new) = (json!({"a": 1, "b": 2}), json!({"a": 1, "b": 3}));
        let text = unified(&Parsed::new(&old), &Parsed::new(&new), &id, 3);
        assert!(text.contains("-b: 2\n+b: 3\n"), "{text}");
        assert!(text.starts_with("--- a/Topic/t\n+++ b/Topic/t\n"), "{text}");
    }

    #[test]
    fn the_deepest_document_is_the_deepest_serde_json_parses() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let deepest = nested(DEEPEST_DOCUMENT);
        let deeper = nested(DEEPEST_DOCUMENT + 1);
        assert!(serde_json::from_str::<Value>(&deepest).is_ok());
        assert!(serde_json::from_str::<Value>(&deeper).is_err());
        assert!(holds_document(&deepest));
        assert!(!holds_document(&deeper));
        assert_eq!(nesting(r#"{"a": "[[[\"{", "b": [[1]]}"#), 3);
    }

    #[test]
    fn a_document_that_serde_json_did_not_write_is_shown_as_it_would_write_it() {
        let text = r#"{ "b": [1.0, {"y": "\u0041"}], "a": 2 }"#;
        let parsed: Value = serde_json::from_str(text).expect("json");
        let expected = format!(
            "{}\n",
            serde_json::to_string_pretty(&parsed).expect("pretty")
        );
        assert_eq!(pretty_document(text), expected);
        let compact = serde_json::to_string(&parsed).expect("json");
        assert_eq!(pretty_document(&compact), expected);
    }

    /// Values small enough that two drawn at random share parts.
    fn small_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(json!(null)),
            Just(json!(1)),
            Just(json!(1.5)),
            Just(json!("x")),
            Just(json!("{a")),
            Just(json!([1, 2])),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            let key = proptest::sample::select(vec!["a", "b", "c d", "name", "é"]);
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::vec(
                    (
                        proptest::sample::select(vec!["n1", "n2", "n3"]),
                        inner.clone()
                    ),
                    0..3
                )
                .prop_map(|items| Value::from(
                    items
                        .into_iter()
                        .map(|(n, v)| json!({"name": n, "v": v}))
                        .collect::<Vec<_>>()
                )),
                proptest::collection::btree_map(key, inner, 0..4).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    /// A JSON text of `value`, compact or pretty.
    fn text_of(value: &Value, pretty: bool) -> String {
        match pretty {
            true => serde_json::to_string_pretty(value),
            false => serde_json::to_string(value),
        }
        .expect("json")
    }

    proptest::proptest! {
        /// Two documents held in strings are compared as the values they
        /// hold are, part by part, whatever form their texts have.
        #[test]
        fn documents_compare_as_their_values_do(
            old in small_value(),
            new in small_value(),
            old_pretty in proptest::prelude::any::<bool>(),
            new_pretty in proptest::prelude::any::<bool>(),
        ) {
            let as_values = diff(
                &Parsed::new(&json!({"doc": old})),
                &Parsed::new(&json!({"doc": new})),
            );
            let (old_doc, new_doc) = (
                json!({"doc": text_of(&old, old_pretty)}),
                json!({"doc": text_of(&new, new_pretty)}),
            );
            let as_texts = diff(&Parsed::new(&old_doc), &Parsed::new(&new_doc));
            let documents = old.is_object() || old.is_array();
            let both = documents && (new.is_object() || new.is_array());
            if both {
                let seen: Vec<(String, String, Option<Value>, Option<Value>)> = as_texts
                    .into_iter()
                    .map(|f| (f.path, format!("{}{}", f.pointer, f.inner.unwrap_or_default()), f.old, f.new))
                    .collect();
                let expected: Vec<(String, String, Option<Value>, Option<Value>)> = as_values
                    .into_iter()
                    .map(|f| (f.path, f.pointer, f.old, f.new))
                    .collect();
                proptest::prop_assert_eq!(seen, expected);
            }
        }
    }
}
