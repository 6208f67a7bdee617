//! Spec trees as instances of the JSON Schema validator: the validator
//! reads [`Node`]s in place through jsonschema's custom-representation
//! traits, instead of each spec being converted to a `serde_json::Value`
//! first (that copy, and freeing it, were four fifths of the schema check).
//!
//! Every accessor answers what it would answer for [`Node::to_json`] of the
//! same node — a float that is not finite is `null`, as there — except
//! that a mapping's members come in document order instead of sorted;
//! diagnostics are sorted by position afterwards, so no output changes.
//! A test holds the validator's errors on this form to its errors on the
//! JSON form for every example, fixture and hand-made case.

use std::borrow::Cow;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node as JsonNode, NodeIdentity, Object};
use serde_json::Value as JsonValue;

use crate::node::{Entry, Map, Node, Value};

/// The representation: spec trees.
pub struct NodeJson;

/// A node the validator reads: a spec node, or a property name it checks
/// as a string (`propertyNames`).
#[derive(Clone, Copy)]
pub enum View<'a> {
    /// A node of the spec.
    Tree(&'a Node),
    /// A property name.
    Name(&'a str),
}

impl<'a> View<'a> {
    fn value(&self) -> Option<&'a Value> {
        match self {
            View::Tree(node) => Some(&node.value),
            View::Name(_) => None,
        }
    }
}

impl Json for NodeJson {
    type Node<'a> = View<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // Maps under sixteen keys are looked up by a scan: a pass over a few
    // members costs less than as many lookups.
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(View<'_>) -> T) -> T {
        f(View::Name(string))
    }
}

/// A number of a spec: an integer, or a finite float.
#[derive(Clone, Copy)]
pub enum Number {
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
}

impl Number {
    fn to_json(self) -> serde_json::Number {
        match self {
            Number::Int(i) => serde_json::Number::from(i),
            // Finite by construction (`View::as_number`).
            Number::Float(f) => serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into()),
        }
    }
}

impl JsonNumber for Number {
    fn as_u64(&self) -> Option<u64> {
        match self {
            Number::Int(i) => u64::try_from(*i).ok(),
            Number::Float(_) => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(*i),
            Number::Float(_) => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Number::Int(i) => Some(*i as f64),
            Number::Float(f) => Some(*f),
        }
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.to_json().to_string())
    }

    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        Cow::Owned(self.to_json())
    }
}

impl<'a> JsonNode<'a, NodeJson> for View<'a> {
    type Object = &'a Map;
    type Array = &'a [Node];
    type Number = Number;

    fn as_object(&self) -> Option<&'a Map> {
        match self.value()? {
            Value::Map(map) => Some(map),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&'a [Node]> {
        match self.value()? {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            View::Name(name) => Some(Cow::Borrowed(name)),
            View::Tree(node) => match &node.value {
                Value::Str(s) => Some(Cow::Borrowed(s)),
                _ => None,
            },
        }
    }

    fn as_number(&self) -> Option<Number> {
        match self.value()? {
            Value::Int(i) => Some(Number::Int(*i)),
            Value::Float(f) if f.is_finite() => Some(Number::Float(*f)),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.value()? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        self.json_type() == JsonType::Null
    }

    fn json_type(&self) -> JsonType {
        match self.value() {
            None | Some(Value::Str(_)) => JsonType::String,
            Some(Value::Null) => JsonType::Null,
            Some(Value::Bool(_)) => JsonType::Boolean,
            Some(Value::Int(_)) => JsonType::Number,
            Some(Value::Float(f)) if f.is_finite() => JsonType::Number,
            Some(Value::Float(_)) => JsonType::Null,
            Some(Value::Seq(_)) => JsonType::Array,
            Some(Value::Map(_)) => JsonType::Object,
        }
    }

    fn to_value(&self) -> Cow<'a, JsonValue> {
        Cow::Owned(match self {
            View::Tree(node) => node.to_json(),
            View::Name(name) => JsonValue::String((*name).to_owned()),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        match self {
            View::Tree(node) => Some(NodeIdentity::new(std::ptr::from_ref::<Node>(node) as usize)),
            View::Name(_) => None,
        }
    }
}

/// A mapping's members for the validator.
pub struct Members<'a>(std::slice::Iter<'a, Entry>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, View<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next()
            .map(|entry| (entry.key.as_str(), View::Tree(&entry.value)))
    }
}

impl<'a> Object<'a, NodeJson> for &'a Map {
    type Node = View<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        Map::len(self)
    }

    fn get(&self, key: &String) -> Option<View<'a>> {
        Map::get(self, key).map(View::Tree)
    }

    fn members(&self) -> Members<'a> {
        Members(self.iter())
    }
}

impl<'a> Array<'a, NodeJson> for &'a [Node] {
    type Node = View<'a>;
    type ElementsIter = std::iter::Map<std::slice::Iter<'a, Node>, fn(&'a Node) -> View<'a>>;

    fn len(&self) -> usize {
        <[Node]>::len(self)
    }

    fn elements(&self) -> Self::ElementsIter {
        self.iter().map(View::Tree)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use jsonschema::error::ValidationErrorKind;

    use super::View;
    use crate::document::Kind;
    use crate::node::Node;
    use crate::schema::Schemas;

    /// What a validator reports on an instance: each error's place and
    /// message, sorted. Unexpected properties are listed in the order the
    /// members come (sorted in JSON, document order in a tree): compared as
    /// sets, as `schema_check` reports each on its own.
    fn errors_of<'i>(errors: impl Iterator<Item = jsonschema::ValidationError<'i>>) -> Vec<String> {
        let mut found: Vec<String> = errors
            .map(|e| match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let mut keys = unexpected.clone();
                    keys.sort();
                    format!("{}: unexpected {keys:?}", e.instance_path().as_str())
                }
                _ => format!("{}: {e}", e.instance_path().as_str()),
            })
            .collect();
        found.sort();
        found
    }

    /// Checks `node` (a document of `kind`) both ways: on the tree in
    /// place, and on its JSON with serde_json's representation.
    fn same_verdict(kind: Kind, node: &Node, by_json: &jsonschema::Validator, what: &str) {
        let by_tree = &Schemas::get().kind(kind).validator;
        let json = node.to_json();
        let expected = errors_of(by_json.iter_errors(&json));
        assert_eq!(
            errors_of(by_tree.iter_errors(View::Tree(node))),
            expected,
            "{what}"
        );
        assert_eq!(
            by_tree.is_valid(View::Tree(node)),
            expected.is_empty(),
            "{what}"
        );
    }

    fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                yaml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }

    #[test]
    fn the_validator_reads_spec_trees_as_it_reads_their_json() {
        let by_json: Vec<(Kind, jsonschema::Validator)> = Kind::ALL
            .into_iter()
            .map(|kind| {
                let bundled = &Schemas::get().kind(kind).bundled;
                (
                    kind,
                    jsonschema::options().build(bundled).expect("compiles"),
                )
            })
            .collect();
        let validator_of = |kind: Kind| &by_json.iter().find(|(k, _)| *k == kind).expect("kind").1;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        yaml_files(&root.join("examples"), &mut files);
        yaml_files(&root.join("fixtures"), &mut files);
        let mut checked = 0;
        for path in files {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let file: Arc<str> = Arc::from(path.display().to_string());
            let Ok(docs) = crate::yaml::parse(&file, &text) else {
                continue;
            };
            for doc in &docs {
                let Some(kind) = doc.get("kind").and_then(Node::as_str).and_then(Kind::parse)
                else {
                    continue;
                };
                same_verdict(kind, doc, validator_of(kind), &path.display().to_string());
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} documents found");

        // What no example holds: numbers of every kind where strings,
        // integers or ranges are expected, a float that is not finite,
        // property names, unknown keys in document order, a wrong type
        // deep down.
        let made = [
            "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {name: a}\nspec: {image: x, replicas: .nan, zz: 1, aa: 2}\n",
            "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {name: a}\nspec: {image: 7, replicas: 1.5, ports: [{name: h, port: 99999999999}]}\n",
            "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {name: a, labels: {1: 2}}\nspec: {image: x, replicas: -1, subscribe: [a, a]}\n",
            "apiVersion: cortex.codevald.io/v1\nkind: Topic\nmetadata: {name: t}\nspec: {retention: 5, ordering: sideways, schema: {type: object}}\n",
            "apiVersion: cortex.codevald.io/v1\nkind: Workflow\nmetadata: {name: w}\nspec: {tasks: [{name: a, agent: x, run: y, timeout: .inf}]}\n",
            "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: {name: p}\nspec: {namespace: 1e3, values: {a: [1, 2.0, null]}}\n",
        ];
        for text in made {
            let file: Arc<str> = Arc::from("made.yaml");
            let docs = crate::yaml::parse(&file, text).expect(text);
            let kind = docs[0]
                .get("kind")
                .and_then(Node::as_str)
                .and_then(Kind::parse)
                .expect(text);
            same_verdict(kind, &docs[0], validator_of(kind), text);
            assert!(
                !validator_of(kind).is_valid(&docs[0].to_json()),
                "{text} is invalid"
            );
        }
    }
}
