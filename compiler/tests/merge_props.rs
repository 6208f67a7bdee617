//! Properties of the merge: an empty child equals its parent, merging is
//! deterministic and idempotent, the child always wins, and provenance
//! always points at a real line of a real file holding the value.

use std::collections::BTreeMap;
use std::sync::Arc;

use cortex_compiler::diagnostic::Diagnostics;
use cortex_compiler::node::{Node, Value};
use cortex_compiler::resolve::merge::merge;
use cortex_compiler::schema::Schemas;
use cortex_compiler::{Kind, MemorySource, Options, compile};
use proptest::prelude::*;

/// A tree of plain mappings and scalars, written as YAML.
#[derive(Clone, Debug)]
enum Tree {
    Leaf(u16),
    Map(BTreeMap<String, Tree>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = any::<u16>().prop_map(Tree::Leaf);
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_string),
            inner,
            0..4,
        )
        .prop_map(Tree::Map)
    })
}

fn yaml(tree: &Tree, indent: usize, out: &mut String) {
    if let Tree::Map(map) = tree {
        for (k, v) in map {
            match v {
                Tree::Leaf(n) => out.push_str(&format!("{}{k}: {n}\n", " ".repeat(indent))),
                Tree::Map(m) if m.is_empty() => {
                    out.push_str(&format!("{}{k}: {{}}\n", " ".repeat(indent)))
                }
                Tree::Map(_) => {
                    out.push_str(&format!("{}{k}:\n", " ".repeat(indent)));
                    yaml(v, indent + 2, out);
                }
            }
        }
    }
}

/// Env entries (a keyed list) as YAML flow mappings.
fn env_list() -> impl Strategy<Value = Vec<(String, u16)>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["A", "B", "C", "D", "E"]).prop_map(str::to_string),
        any::<u16>(),
        0..5,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn agent_doc(name: &str, parent: Option<&str>, config: &Tree, env: &[(String, u16)]) -> String {
    let mut text = format!(
        "apiVersion: cortex.codevald.io/v1\nkind: AgentTemplate\nmetadata:\n  name: {name}\nspec:\n"
    );
    if let Some(p) = parent {
        text.push_str(&format!("  extends: {p}\n"));
    }
    if !env.is_empty() {
        text.push_str("  env:\n");
        for (k, v) in env {
            text.push_str(&format!("    - {{ name: {k}, value: \"{v}\" }}\n"));
        }
    }
    if let Tree::Map(m) = config
        && !m.is_empty()
    {
        text.push_str("  config:\n");
        yaml(config, 4, &mut text);
    }
    text
}

fn resolve_pair(parent: &str, child: &str) -> (Node, Node, MemorySource) {
    let source = MemorySource::new()
        .with("cortex.yaml", "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: p }\nspec:\n  include: [\"*.yaml\"]\n")
        .with("parent.yaml", parent)
        .with("child.yaml", child);
    let result = compile(&source, &Options::default());
    assert!(!result.diagnostics.has_errors(), "{:?}", result.diagnostics);
    let resolved = result.resolved.expect("resolved");
    let get = |name: &str| {
        resolved
            .specs
            .iter()
            .find(|s| s.name == name)
            .expect("spec")
            .node
            .clone()
    };
    (get("parent"), get("child"), source)
}

fn leaves(node: &Node, path: String, out: &mut Vec<(String, Node)>) {
    match &node.value {
        Value::Map(m) => m
            .iter()
            .for_each(|e| leaves(&e.value, format!("{path}/{}", e.key), out)),
        Value::Seq(s) => s
            .iter()
            .enumerate()
            .for_each(|(i, n)| leaves(n, format!("{path}/{i}"), out)),
        _ => out.push((path, node.clone())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn an_empty_child_equals_its_parent(config in tree(), env in env_list()) {
        let (parent, child, _) = resolve_pair(
            &agent_doc("parent", None, &config, &env),
            "apiVersion: cortex.codevald.io/v1\nkind: AgentTemplate\nmetadata:\n  name: child\nspec:\n  extends: parent\n",
        );
        // An empty `spec:` is null on one side and `{}` on the other: both empty.
        let spec = |n: &Node| n.get("spec").map(Node::to_json).filter(|j| j.as_object().is_some_and(|o| !o.is_empty()));
        prop_assert_eq!(spec(&parent), spec(&child));
    }

    #[test]
    fn merging_is_deterministic_and_idempotent(config in tree(), env in env_list()) {
        let (parent, _, _) = resolve_pair(&agent_doc("parent", None, &config, &env), &agent_doc("child", Some("parent"), &Tree::Leaf(0), &[]));
        let cursor = Schemas::get().cursor(Kind::AgentTemplate);
        let mut diags = Diagnostics::new();
        let once = merge(Some(parent.value.clone()), parent.clone(), cursor, &mut diags);
        let again = merge(Some(parent.value.clone()), parent.clone(), cursor, &mut diags);
        prop_assert!(diags.is_empty());
        prop_assert_eq!(once.to_json(), again.to_json());
        prop_assert_eq!(once.to_json(), parent.to_json());
    }

    #[test]
    fn the_child_wins_and_provenance_points_at_the_value(
        parent_config in tree(), child_config in tree(), parent_env in env_list(), child_env in env_list(),
    ) {
        let (parent, child, source) = resolve_pair(
            &agent_doc("parent", None, &parent_config, &parent_env),
            &agent_doc("child", Some("parent"), &child_config, &child_env),
        );
        let mut child_leaves = Vec::new();
        leaves(&child, String::new(), &mut child_leaves);
        let files = source.files();
        for (path, leaf) in &child_leaves {
            // Provenance names a real file and a line whose text holds the value.
            let span = &leaf.prov.span;
            let text = std::str::from_utf8(&files[&*span.file]).expect("utf-8");
            let line = text.lines().nth(span.line as usize - 1).unwrap_or_else(|| panic!("{path}: line {} of {}", span.line, span.file));
            let written = match &leaf.value {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            prop_assert!(line.contains(&written), "{}: `{}` not on {}:{} `{}`", path, written, span.file, span.line, line);
            prop_assert!(&*leaf.prov.spec == "child" || &*leaf.prov.spec == "parent");
        }
        // Every env entry the child sets has the child's value.
        let env_of = |n: &Node| -> BTreeMap<String, String> {
            n.path(&["spec", "env"]).and_then(Node::as_seq).unwrap_or_default().iter()
                .map(|e| (e.str_at(&["name"]).unwrap_or_default().to_string(), e.str_at(&["value"]).unwrap_or_default().to_string()))
                .collect()
        };
        let merged_env = env_of(&child);
        for (k, v) in &child_env {
            prop_assert_eq!(merged_env.get(k), Some(&v.to_string()));
        }
        for (k, v) in &parent_env {
            if !child_env.iter().any(|(ck, _)| ck == k) {
                prop_assert_eq!(merged_env.get(k), Some(&v.to_string()));
            }
        }
        prop_assert_eq!(merged_env.len(), env_of(&parent).keys().chain(child_env.iter().map(|(k, _)| k)).collect::<std::collections::BTreeSet<_>>().len());
    }
}

#[test]
fn provenance_file_names_are_shared_not_copied() {
    // Spans share one allocation per file name (cheap clones in big projects).
    let (_, child, _) = resolve_pair(
        &agent_doc("parent", None, &Tree::Leaf(0), &[("A".into(), 1)]),
        &agent_doc("child", Some("parent"), &Tree::Leaf(0), &[]),
    );
    let a = child.path(&["spec", "env"]).and_then(Node::as_seq).unwrap()[0]
        .prov
        .span
        .file
        .clone();
    let b = child.path(&["spec", "env"]).and_then(Node::as_seq).unwrap()[0]
        .get("value")
        .unwrap()
        .prov
        .span
        .file
        .clone();
    assert!(Arc::ptr_eq(&a, &b));
}
