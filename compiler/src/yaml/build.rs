//! Builds spanned [`Node`]s straight from the YAML parser's events: one
//! tree per document, with no tree of the parser's own in between. The
//! spec language's rules hold as the events come: mapping keys are strings,
//! integers, booleans or floats (never null, a collection or the merge key
//! `<<`), no key twice, no custom tag, aliases expand to at most
//! [`MAX_ALIAS_NODES`] nodes in a file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use saphyr::{Marker, Scalar, ScanError, Tag};
use saphyr_parser::Event;

use super::{MAX_ALIAS_NODES, scalar_value, scan_error};
use crate::diagnostic::{Diagnostic, codes};
use crate::node::{Entry, KeyIndex, Map, Node, Value, find_key, index_last};
use crate::span::{Provenance, Span};

/// A collection being read. Its items or entries so far are the tail of
/// the builder's shared `items` or `entries`, from `first` on: one vector
/// per kind grows to the deepest nesting once, and each finished
/// collection is moved out of it at its exact size (vectors grown one
/// element at a time were a sixth of parsing).
enum Frame<'t> {
    Seq {
        first: usize,
        start: Marker,
        anchor: usize,
        tag: Option<Cow<'t, Tag>>,
    },
    Map {
        first: usize,
        /// Its keys' positions, kept as a [`Map`] keeps them (duplicate
        /// keys found in linear time).
        index: KeyIndex,
        start: Marker,
        anchor: usize,
        tag: Option<Cow<'t, Tag>>,
        /// The key read, waiting for its value, and where it starts.
        key: Option<(Node, Marker)>,
    },
}

/// Receives the parser's events of one file and builds its documents.
pub(super) struct Builder<'t> {
    file: Arc<str>,
    text: &'t str,
    /// The owner every node starts with (set later by `set_owner`).
    owner: Arc<str>,
    stack: Vec<Frame<'t>>,
    /// The items of every sequence being read, innermost last.
    items: Vec<Node>,
    /// The entries of every mapping being read, innermost last.
    entries: Vec<Entry>,
    root: Option<Node>,
    docs: Vec<Node>,
    anchors: HashMap<usize, Node>,
    /// Nodes aliases may still expand to in this file.
    alias_budget: usize,
}

impl<'t> Builder<'t> {
    pub(super) fn new(file: &Arc<str>, text: &'t str) -> Builder<'t> {
        Builder {
            file: file.clone(),
            text,
            owner: Arc::from(""),
            stack: Vec::new(),
            items: Vec::new(),
            entries: Vec::new(),
            root: None,
            docs: Vec::new(),
            anchors: HashMap::new(),
            alias_budget: MAX_ALIAS_NODES,
        }
    }

    /// The non-empty documents read.
    pub(super) fn into_documents(self) -> Vec<Node> {
        self.docs
    }

    fn span(&self, start: Marker, end: Marker) -> Span {
        Span {
            file: self.file.clone(),
            line: start.line() as u32,
            col: start.col() as u32 + 1,
            start: start.index() as u32,
            end: end.index().max(start.index()) as u32,
        }
    }

    fn node(&self, value: Value, span: Span) -> Node {
        Node::new(
            value,
            Provenance {
                span,
                spec: self.owner.clone(),
            },
        )
    }

    fn unsupported(span: &Span, what: &str, help: &str) -> Box<Diagnostic> {
        Box::new(
            Diagnostic::error(codes::UNSUPPORTED_YAML, format!("{what} is not supported"))
                .at(span)
                .help(help.to_string()),
        )
    }

    fn tag_error(span: &Span, tag: &Tag) -> Box<Diagnostic> {
        Builder::unsupported(
            span,
            &format!("the YAML tag `{tag}`"),
            "remove the tag; quote the value to make it a string",
        )
    }

    fn bad_value(span: &Span) -> Box<Diagnostic> {
        Box::new(
            Diagnostic::error(
                codes::YAML_SYNTAX,
                "invalid YAML value (a tag that does not fit its value, or an unresolved alias)",
            )
            .at(span),
        )
    }

    /// Takes one event (the parser's checks of depth and anchors ran).
    pub(super) fn event(
        &mut self,
        event: Event<'t>,
        at: saphyr_parser::Span,
    ) -> Result<(), Box<Diagnostic>> {
        let mark = at.start;
        match event {
            Event::DocumentEnd => match self.root.take() {
                Some(root) if root.value == Value::Null => {}
                Some(root) => self.docs.push(root),
                None => return Err(Builder::bad_value(&self.span(mark, at.end))),
            },
            Event::SequenceStart(anchor, tag) => self.stack.push(Frame::Seq {
                first: self.items.len(),
                start: mark,
                anchor,
                tag,
            }),
            Event::MappingStart(anchor, tag) => self.stack.push(Frame::Map {
                first: self.entries.len(),
                index: None,
                start: mark,
                anchor,
                tag,
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, start, anchor, tag) = match self.stack.pop() {
                    Some(Frame::Seq {
                        first,
                        start,
                        anchor,
                        tag,
                    }) => (
                        Value::Seq(self.items.drain(first..).collect()),
                        start,
                        anchor,
                        tag,
                    ),
                    Some(Frame::Map {
                        first,
                        index,
                        start,
                        anchor,
                        tag,
                        ..
                    }) => {
                        let entries = self.entries.drain(first..).collect();
                        (
                            Value::Map(Map::from_unique_entries(entries, index)),
                            start,
                            anchor,
                            tag,
                        )
                    }
                    None => return Ok(()),
                };
                let span = self.span(start, mark);
                if let Some(tag) = tag.filter(|t| !t.is_yaml_core_schema()) {
                    return Err(Builder::tag_error(&span, &tag));
                }
                let node = self.node(value, span);
                self.insert(node, anchor, mark)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let span = self.span(at.start, at.end);
                if let Some(tag) = tag.as_ref().filter(|t| !t.is_yaml_core_schema()) {
                    return Err(Builder::tag_error(&span, tag));
                }
                let Some(scalar) = Scalar::parse_from_cow_and_metadata(text, style, tag.as_ref())
                else {
                    return Err(Builder::bad_value(&span));
                };
                let node = self.node(scalar_value(&scalar), span);
                self.insert(node, anchor, mark)?;
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(Builder::bad_value(&self.span(at.start, at.end)));
                };
                if !within_budget(anchored, &mut self.alias_budget) {
                    let err = ScanError::new_str(
                        mark,
                        "alias expansion exceeded the maximum node budget (possible billion-laughs attack)",
                    );
                    return Err(Box::new(scan_error(&self.file, self.text, &err)));
                }
                let mut node = anchored.clone();
                node.prov.span = self.span(at.start, at.end);
                self.insert(node, 0, mark)?;
            }
            Event::DocumentStart(_) | Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
        Ok(())
    }

    /// Places a finished node: the document's root, an item, a key or a
    /// value.
    fn insert(&mut self, node: Node, anchor: usize, mark: Marker) -> Result<(), Box<Diagnostic>> {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { .. }) => self.items.push(node),
            Some(Frame::Map {
                key: key @ None, ..
            }) => *key = Some((node, mark)),
            Some(Frame::Map {
                first, index, key, ..
            }) => {
                let Some((key_node, key_mark)) = key.take() else {
                    return Ok(());
                };
                let Node {
                    value: key_value,
                    prov: key_prov,
                } = key_node;
                let text = match key_value {
                    Value::Str(s) => s,
                    Value::Int(i) => i.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Float(f) => f.to_string(),
                    _ => {
                        return Err(Builder::unsupported(
                            &key_prov.span,
                            "a null or non-scalar mapping key",
                            "use a plain string as the key",
                        ));
                    }
                };
                if text == "<<" {
                    return Err(Builder::unsupported(
                        &key_prov.span,
                        "the YAML merge key `<<`",
                        "share values with `extends` (an AgentTemplate or WorkflowTemplate) instead",
                    ));
                }
                if find_key(&self.entries[*first..], index, &text).is_some() {
                    let err = ScanError::new_str(key_mark, "duplicated key in mapping");
                    return Err(Box::new(scan_error(&self.file, self.text, &err)));
                }
                self.entries.push(Entry {
                    key: text,
                    key_span: key_prov.span,
                    value: node,
                });
                index_last(&self.entries[*first..], index);
            }
        }
        Ok(())
    }
}

/// Counts `node`'s nodes against `budget` (a mapping entry counts once more
/// than its value), as the parser's own loader does; false when it runs out.
fn within_budget(node: &Node, budget: &mut usize) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    match &node.value {
        Value::Seq(items) => items.iter().all(|item| within_budget(item, budget)),
        Value::Map(map) => map.iter().all(|entry| {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            within_budget(&entry.value, budget)
        }),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, parse_json_by_tree, parse_json_located};
    use crate::diagnostic::codes;
    use crate::node::{INDEX_FROM, Node};
    use std::sync::Arc;

    fn file() -> Arc<str> {
        Arc::from("t.yaml")
    }

    /// The nodes built from events read what the parser's own tree reads.
    #[test]
    fn reads_what_the_parsers_tree_reads() {
        let texts = [
            "a: 1\nb: [1, 2.5, true, null, ~, 'x', \"y\"]\nc: {d: e}\n",
            "- one\n- two: 2\n  three: [3]\n- - nested\n  - deeper\n",
            "base: &b {x: 1, y: [a, b]}\nother: *b\nlist: [*b, *b]\n",
            "text: |\n  line one\n  line two\nfolded: >-\n  a\n  b\n",
            "one: 1\n---\ntwo: 2\n---\n",
            "0x1f: hex\n7: int\ntrue: bool\nempty:\n",
            "\u{feff}bom: yes\n",
            "---\n# only a comment\n",
        ];
        for text in texts {
            let nodes = parse(&file(), text).unwrap_or_else(|d| panic!("{text}: {}", d.message));
            let json: Vec<serde_json::Value> = nodes.iter().map(Node::to_json).collect();
            let expected = parse_json_by_tree(&file(), text).expect("parses");
            assert_eq!(json, expected, "{text}");
        }
    }

    /// Manifests and other YAML read as JSON keep the spec language's key
    /// rules: the parser's own tree kept `1` and `"1"` apart, then JSON
    /// made them one key and silently kept the second value.
    #[test]
    fn documents_read_as_json_refuse_a_key_written_twice() {
        let text = "data:\n  1: a\n  \"1\": b\n";
        assert_eq!(
            parse_json_by_tree(&file(), text).expect("the tree reads it"),
            vec![serde_json::json!({"data": {"1": "b"}})],
            "what was read before: one value lost"
        );
        let error = parse_json_located(&file(), text).expect_err("a duplicate key");
        assert_eq!(error.code, codes::DUPLICATE_KEY);
        assert_eq!(error.span.as_ref().map(|s| s.line), Some(3));
        let docs =
            parse_json_located(&file(), "# a comment\n---\na: 1\n---\nb: [2]\n").expect("parses");
        let starts: Vec<(u32, u32)> = docs.iter().map(|(at, _)| (at.line, at.start)).collect();
        assert_eq!(
            starts,
            [(3, 16), (5, 25)],
            "each document where its value starts"
        );
        assert!(docs.iter().all(|(at, _)| at.start == at.end), "of no width");
    }

    #[test]
    fn keys_and_values_carry_their_spans() {
        let nodes = parse(&file(), "top:\n  key: value\nlist:\n  - item\n").expect("parses");
        let map = nodes[0].as_map().expect("a map");
        let top = map.entry("top").expect("top");
        assert_eq!((top.key_span.line, top.key_span.col), (1, 1));
        let key = top
            .value
            .as_map()
            .and_then(|m| m.entry("key"))
            .expect("key");
        assert_eq!((key.key_span.line, key.key_span.col), (2, 3));
        assert_eq!((key.value.span().line, key.value.span().col), (2, 8));
        let item = &map.get("list").and_then(Node::as_seq).expect("list")[0];
        assert_eq!((item.span().line, item.span().col), (4, 5));
    }

    #[test]
    fn the_languages_rules_hold_while_reading() {
        for (text, code, line) in [
            ("a: 1\nb: 2\na: 3\n", codes::DUPLICATE_KEY, 3),
            ("1: x\n\"1\": y\n", codes::DUPLICATE_KEY, 2),
            ("a: !custom 1\n", codes::UNSUPPORTED_YAML, 1),
            ("a: !custom [x]\n", codes::UNSUPPORTED_YAML, 1),
            (
                "base: &b {x: 1}\nc:\n  <<: *b\n",
                codes::UNSUPPORTED_YAML,
                3,
            ),
            ("? [a]\n: 1\n", codes::UNSUPPORTED_YAML, 1),
            ("~: 1\n", codes::UNSUPPORTED_YAML, 1),
            ("a: !!int x\n", codes::YAML_SYNTAX, 1),
        ] {
            let d = parse(&file(), text).expect_err(text);
            assert_eq!(d.code, code, "{text}: {}", d.message);
            assert_eq!(
                d.span.as_ref().map(|s| s.line),
                Some(line),
                "{text}: {}",
                d.message
            );
        }
    }

    /// Mappings and sequences nested inside each other share the builder's
    /// vectors: each keeps its own entries, the same key may appear at
    /// every level, and a key written twice is found before and after the
    /// map keeps an index (from `INDEX_FROM` keys on).
    #[test]
    fn nested_collections_keep_their_own_entries() {
        let wide: String = (0..INDEX_FROM + 4)
            .map(|i| {
                format!("k{i}:\n  k{i}: [{i}, {{k{i}: x}}]\n  inner: {{a: 1, b: [2, {{a: 3}}]}}\n")
            })
            .collect();
        let nodes = parse(&file(), &wide).expect("no key is written twice at one level");
        let json: Vec<serde_json::Value> = nodes.iter().map(Node::to_json).collect();
        assert_eq!(json, parse_json_by_tree(&file(), &wide).expect("parses"));
        let map = nodes[0].as_map().expect("a map");
        assert_eq!(map.len(), INDEX_FROM + 4);
        assert!(
            map.get(&format!("k{}", INDEX_FROM + 3)).is_some(),
            "found by the index"
        );
        for (again, line) in [(2, INDEX_FROM + 5), (INDEX_FROM + 1, INDEX_FROM + 5)] {
            let text: String = (0..INDEX_FROM + 4)
                .map(|i| format!("k{i}: {i}\n"))
                .chain([format!("k{again}: again\n")])
                .collect();
            let d = parse(&file(), &text).expect_err("a key written twice");
            assert_eq!(d.code, codes::DUPLICATE_KEY);
            assert_eq!(d.span.as_ref().map(|s| s.line as usize), Some(line));
        }
    }

    #[test]
    fn aliases_expand_within_the_budget_of_the_file() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..=5 {
            let prev = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            text.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let d = parse(&file(), &text).expect_err("a billion laughs");
        assert_eq!(d.code, codes::ALIAS_LIMIT, "{}", d.message);
        let few = parse(&file(), "a: &a [1, 2]\nb: [*a, *a]\n").expect("a few aliases");
        assert_eq!(few[0].to_json()["b"], serde_json::json!([[1, 2], [1, 2]]));
    }
}
