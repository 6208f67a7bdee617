//! The merge rules of SPEC.md, driven by the schema.
//!
//! Applied parent first, child last: mappings merge deeply, scalars and
//! lists are replaced, keyed lists (`x-cortex-merge-key`) merge entry by
//! entry, a union mapping (`x-cortex-union`) drops the parent's other
//! variants when the child picks one, `x-cortex-merge: replace` values are
//! replaced whole; `key: null` deletes a key, `{name: X, $patch: delete}`
//! deletes a keyed entry, `$patch: replace` replaces a mapping (or, as a lone
//! entry of a keyed list, the inherited list).

use std::collections::HashMap;

use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use crate::node::{Map, Node, Value};
use crate::schema::Cursor;

/// The directive key.
pub const PATCH: &str = "$patch";

/// Merges `child` over `parent`; with no parent, normalizes `child` (drops
/// null keys and directives). Misused directives are reported to `diags`.
pub fn merge(
    parent: Option<&Node>,
    child: &Node,
    schema: Cursor<'_>,
    diags: &mut Diagnostics,
) -> Node {
    match &child.value {
        Value::Map(map) => merge_map(parent, child, map, schema, diags),
        Value::Seq(items) => merge_seq(parent, child, items, schema, diags),
        _ => child.clone(),
    }
}

/// Normalizes a value that has no parent.
pub fn normalize(node: &Node, schema: Cursor<'_>, diags: &mut Diagnostics) -> Node {
    merge(None, node, schema, diags)
}

fn merge_map(
    parent: Option<&Node>,
    child: &Node,
    map: &Map,
    schema: Cursor<'_>,
    diags: &mut Diagnostics,
) -> Node {
    let mut parent_map = parent.and_then(Node::as_map);
    if let Some(entry) = map.entry(PATCH) {
        match entry.value.as_str() {
            Some("replace") => parent_map = None,
            Some("delete") => diags.push(
                Diagnostic::error(codes::PATCH_MISUSE, "`$patch: delete` outside an entry of a keyed list")
                    .at(&entry.key_span)
                    .help("to remove an inherited key, set it to `null`; `$patch: delete` removes an entry of a list merged on `name`"),
            ),
            _ => diags.push(unknown_directive(&entry.value)),
        }
    }
    if schema.replaces_whole() {
        parent_map = None;
    }
    let mut result = parent_map.cloned().unwrap_or_default();
    if let Some(variants) = schema.union()
        && let Some(chosen) = variants.iter().find(|v| map.get(v).is_some())
    {
        result.retain(|e| e.key == *chosen || !variants.contains(&e.key.as_str()));
    }
    for entry in map {
        if entry.key == PATCH {
            continue;
        }
        if entry.value.value == Value::Null {
            result.remove(&entry.key);
            continue;
        }
        let merged = merge(
            result.get(&entry.key),
            &entry.value,
            schema.property(&entry.key),
            diags,
        );
        let mut new_entry = entry.clone();
        new_entry.value = merged;
        result.insert(new_entry);
    }
    Node::new(Value::Map(result), child.prov.clone())
}

fn merge_seq(
    parent: Option<&Node>,
    child: &Node,
    items: &[Node],
    schema: Cursor<'_>,
    diags: &mut Diagnostics,
) -> Node {
    let item_schema = schema.items();
    let Some(key) = schema.merge_key() else {
        let merged = items
            .iter()
            .map(|item| {
                if let Some(entry) = item.as_map().and_then(|m| m.entry(PATCH)) {
                    diags.push(
                        Diagnostic::error(codes::PATCH_MISUSE, "`$patch` in a list that is not keyed")
                            .at(&entry.key_span)
                            .label("this list is replaced whole when inherited")
                            .help("write the complete list; only keyed lists (env, ports, volumes, tasks, triggers, roles) merge by entry"),
                    );
                }
                match &item.value {
                    Value::Map(map) if map.get(PATCH).is_some() => {
                        let mut stripped = map.clone();
                        stripped.remove(PATCH);
                        let stripped = Node::new(Value::Map(stripped), item.prov.clone());
                        normalize(&stripped, item_schema, diags)
                    }
                    _ => normalize(item, item_schema, diags),
                }
            })
            .collect();
        return Node::new(Value::Seq(merged), child.prov.clone());
    };
    let replace_all = items.iter().any(|item| {
        item.as_map().is_some_and(|m| {
            m.get(key).is_none() && m.get(PATCH).and_then(Node::as_str) == Some("replace")
        })
    });
    let mut result: Vec<Node> = match parent.and_then(Node::as_seq) {
        Some(inherited) if !replace_all => inherited.to_vec(),
        _ => Vec::new(),
    };
    let mut seen: HashMap<String, &Node> = HashMap::new();
    for item in items {
        let Some(map) = item.as_map() else {
            diags.push(
                Diagnostic::error(
                    codes::KEYED_ENTRY_NO_KEY,
                    format!("entry of a keyed list must be a mapping with `{key}`"),
                )
                .at(item.span())
                .label(format!("found {}", item.type_name())),
            );
            continue;
        };
        let directive = map.get(PATCH);
        let Some(name) = map.get(key).and_then(key_text) else {
            if directive.and_then(Node::as_str) != Some("replace") {
                diags.push(
                    Diagnostic::error(codes::KEYED_ENTRY_NO_KEY, format!("entry has no `{key}`"))
                        .at(item.span())
                        .label(format!("entries of this list are merged by `{key}`"))
                        .help(format!("add `{key}: …` to the entry")),
                );
            }
            continue;
        };
        if let Some(first) = seen.get(&name) {
            diags.push(
                Diagnostic::error(
                    codes::KEYED_ENTRY_DUPLICATE,
                    format!("duplicate entry `{name}`"),
                )
                .at(map.get(key).map_or(item.span(), Node::span))
                .label("second entry with this name")
                .with_label(first.span(), "first entry")
                .help("merge the two entries into one"),
            );
            continue;
        }
        seen.insert(name.clone(), map.get(key).unwrap_or(item));
        let position = result
            .iter()
            .position(|r| r.get(key).and_then(key_text).as_deref() == Some(name.as_str()));
        match directive.map(|d| (d, d.as_str())) {
            Some((d, Some("delete"))) => match position {
                Some(at) => {
                    result.remove(at);
                }
                None => diags.push(
                    Diagnostic::warning(
                        codes::PATCH_NOTHING,
                        format!("`$patch: delete` of `{name}`, which is not inherited"),
                    )
                    .at(d.span())
                    .label("nothing to delete")
                    .help("check the name, or remove this entry"),
                ),
            },
            Some((_, Some("replace"))) => {
                let replaced = normalize(item, item_schema, diags);
                match position {
                    Some(at) => result[at] = replaced,
                    None => result.push(replaced),
                }
            }
            Some((d, _)) => diags.push(unknown_directive(d)),
            None => match position {
                Some(at) => result[at] = merge(Some(&result[at]), item, item_schema, diags),
                None => result.push(normalize(item, item_schema, diags)),
            },
        }
    }
    Node::new(Value::Seq(result), child.prov.clone())
}

fn key_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn unknown_directive(value: &Node) -> Diagnostic {
    let written = value.as_str().unwrap_or("(not a string)");
    Diagnostic::error(
        codes::PATCH_UNKNOWN,
        format!("unknown merge directive `$patch: {written}`"),
    )
    .at(value.span())
    .help("`$patch` takes `delete` (an entry of a keyed list) or `replace`")
}

/// Deep-merges plain mappings (project values under environment values):
/// no schema, no directives beyond `null` deleting a key.
pub fn merge_values(base: &Node, overlay: &Node) -> Node {
    match (&base.value, &overlay.value) {
        (Value::Map(b), Value::Map(o)) => {
            let mut result = b.clone();
            for entry in o {
                if entry.value.value == Value::Null {
                    result.remove(&entry.key);
                    continue;
                }
                let merged = match result.get(&entry.key) {
                    Some(existing) => merge_values(existing, &entry.value),
                    None => entry.value.clone(),
                };
                let mut e = entry.clone();
                e.value = merged;
                result.insert(e);
            }
            Node::new(Value::Map(result), overlay.prov.clone())
        }
        _ => overlay.clone(),
    }
}
