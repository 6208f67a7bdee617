//! Scale: a mapping with many keys is built and read in linear time (the
//! map's index agrees with a plain list, whatever is inserted and removed),
//! and generated wide and deep documents compile with every key kept,
//! inheritance included.

use cortex_compiler::node::{Entry, Map, Node, Value};
use cortex_compiler::span::{Provenance, Span};
use cortex_compiler::{Kind, MemorySource, Options, compile};
use proptest::prelude::*;

fn entry(key: &str, n: i64) -> Entry {
    let span = Span::file_only("test.yaml".into());
    Entry {
        key: key.to_string(),
        key_span: span.clone(),
        value: Node::new(
            Value::Int(n),
            Provenance {
                span,
                spec: "test".into(),
            },
        ),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, i64),
    Remove(u8),
    Retain(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), any::<i64>()).prop_map(|(k, n)| Op::Insert(k, n)),
        1 => any::<u8>().prop_map(Op::Remove),
        1 => any::<u8>().prop_map(Op::Retain),
    ]
}

proptest! {
    /// Inserting, replacing and removing keep a map equal to a plain list
    /// of entries in insertion order, above and below the indexing size.
    #[test]
    fn a_map_behaves_as_an_ordered_list(ops in prop::collection::vec(op(), 0..400)) {
        let mut map = Map::new();
        let mut list: Vec<(String, i64)> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(k, n) => {
                    let key = format!("k{k}");
                    map.insert(entry(&key, n));
                    match list.iter_mut().find(|(lk, _)| *lk == key) {
                        Some(slot) => slot.1 = n,
                        None => list.push((key, n)),
                    }
                }
                Op::Remove(k) => {
                    let key = format!("k{k}");
                    let removed = map.remove(&key).map(|e| e.key);
                    let at = list.iter().position(|(lk, _)| *lk == key);
                    prop_assert_eq!(removed.is_some(), at.is_some());
                    if let Some(at) = at {
                        list.remove(at);
                    }
                }
                Op::Retain(k) => {
                    let drop = format!("k{k}");
                    map.retain(|e| e.key != drop);
                    list.retain(|(lk, _)| *lk != drop);
                }
            }
            prop_assert_eq!(map.len(), list.len());
        }
        let got: Vec<(String, i64)> = map
            .iter()
            .map(|e| match e.value.value {
                Value::Int(n) => (e.key.clone(), n),
                _ => unreachable!(),
            })
            .collect();
        prop_assert_eq!(&got, &list);
        for (key, n) in &list {
            prop_assert_eq!(map.get(key).map(|v| v.value.clone()), Some(Value::Int(*n)));
        }
        prop_assert!(map.get("absent").is_none());
    }

    /// A generated agent with `width` annotations and a config nested
    /// `depth` levels, extending a template with annotations of its own:
    /// it compiles, keeps every annotation (the child's winning), and keeps
    /// the nesting.
    #[test]
    fn wide_and_deep_documents_compile_with_every_key(width in 0usize..3000, depth in 1usize..55) {
        let mut template = String::from(
            "apiVersion: cortex.codevald.io/v1\nkind: AgentTemplate\nmetadata:\n  name: base\n  annotations:\n",
        );
        for i in (0..width).step_by(2) {
            template.push_str(&format!("    key-{i}: from-template\n"));
        }
        template.push_str("spec:\n  image: x\n");
        let mut agent = String::from(
            "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata:\n  name: wide\n  annotations:\n",
        );
        for i in 0..width {
            agent.push_str(&format!("    key-{i}: value-{i}\n"));
        }
        agent.push_str(&format!(
            "spec:\n  extends: base\n  config:\n    deep: {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ));
        let source = MemorySource::new()
            .with(
                "cortex.yaml",
                "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: wide }\nspec:\n  include: [\"*.yaml\"]\n",
            )
            .with("base.yaml", template)
            .with("agent.yaml", agent);
        let result = compile(&source, &Options::default());
        prop_assert!(!result.diagnostics.has_errors(), "{:?}", result.diagnostics);
        let resolved = result.resolved.expect("resolved");
        let wide = resolved
            .specs
            .iter()
            .find(|s| s.kind == Kind::Agent && s.name == "wide")
            .expect("the agent");
        let annotations = wide
            .node
            .path(&["metadata", "annotations"])
            .and_then(Node::as_map);
        prop_assert_eq!(annotations.map_or(0, Map::len), width);
        if let Some(annotations) = annotations {
            for i in [0, width / 2, width.saturating_sub(1)] {
                if i < width {
                    let value = annotations.get(&format!("key-{i}")).and_then(Node::as_str);
                    let expected = format!("value-{i}");
                    prop_assert_eq!(value, Some(expected.as_str()));
                }
            }
        }
        let mut levels = 0;
        let mut node = wide.node.path(&["spec", "config", "deep"]);
        while let Some(items) = node.and_then(Node::as_seq) {
            levels += 1;
            node = items.first();
        }
        prop_assert_eq!(levels, depth);
    }
}
