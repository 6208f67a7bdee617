//! The merge rules of SPEC.md, driven by the schema.
//!
//! Applied parent first, child last: mappings merge deeply, scalars and
//! lists are replaced, keyed lists (`x-cortex-merge-key`) merge entry by
//! entry, a union mapping (`x-cortex-union`) drops the parent's other
//! variants when the child picks one, `x-cortex-merge: replace` values are
//! replaced whole; `key: null` deletes a key, `{name: X, $patch: delete}`
//! deletes a keyed entry, `$patch: replace` replaces a mapping (or, as a lone
//! entry of a keyed list, the inherited list).

use std::borrow::Cow;
use std::collections::HashMap;

use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use crate::node::{Entry, Map, Node, Value};
use crate::schema::Cursor;
use crate::span::Span;

/// The directive key.
pub const PATCH: &str = "$patch";

/// Merges `child` over `parent`; with no parent, normalizes `child` (drops
/// null keys and directives). Misused directives are reported to `diags`.
///
/// Both are taken by value: the child's nodes move into the result and the
/// parent's values are merged where they stand, so no subtree is copied
/// (a caller whose parent is shared copies it once, at the top).
pub fn merge(
    parent: Option<Value>,
    child: Node,
    schema: Cursor<'_>,
    diags: &mut Diagnostics,
) -> Node {
    let Node { value, prov } = child;
    match value {
        Value::Map(map) => Node::new(Value::Map(merge_map(parent, map, schema, diags)), prov),
        Value::Seq(items) => Node::new(Value::Seq(merge_seq(parent, items, schema, diags)), prov),
        value => Node::new(value, prov),
    }
}

/// Normalizes a value that has no parent.
pub fn normalize(node: Node, schema: Cursor<'_>, diags: &mut Diagnostics) -> Node {
    merge(None, node, schema, diags)
}

fn merge_map(
    parent: Option<Value>,
    mut map: Map,
    schema: Cursor<'_>,
    diags: &mut Diagnostics,
) -> Map {
    let mut parent_map = match parent {
        Some(Value::Map(parent_map)) => Some(parent_map),
        _ => None,
    };
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
    let Some(mut result) = parent_map else {
        // Nothing inherited: the child's entries stay in their places
        // (their keys are unique), less nulls and directives.
        map.retain(|entry| entry.key != PATCH && entry.value.value != Value::Null);
        return map.map_values(|key, value| normalize(value, schema.property(key), diags));
    };
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
        let inherited = result
            .get_mut(&entry.key)
            .map(|node| std::mem::take(&mut node.value));
        let value = merge(inherited, entry.value, schema.property(&entry.key), diags);
        result.insert(Entry { value, ..entry });
    }
    result
}

fn merge_seq(
    parent: Option<Value>,
    items: Vec<Node>,
    schema: Cursor<'_>,
    diags: &mut Diagnostics,
) -> Vec<Node> {
    let item_schema = schema.items();
    let Some(key) = schema.merge_key() else {
        return items
            .into_iter()
            .map(|item| {
                if let Some(entry) = item.as_map().and_then(|m| m.entry(PATCH)) {
                    diags.push(
                        Diagnostic::error(codes::PATCH_MISUSE, "`$patch` in a list that is not keyed")
                            .at(&entry.key_span)
                            .label("this list is replaced whole when inherited")
                            .help("write the complete list; only keyed lists (env, ports, volumes, tasks, triggers, roles) merge by entry"),
                    );
                }
                normalize(without_directive(item), item_schema, diags)
            })
            .collect();
    };
    let replace_all = items.iter().any(|item| {
        item.as_map().is_some_and(|m| {
            m.get(key).is_none() && m.get(PATCH).and_then(Node::as_str) == Some("replace")
        })
    });
    let mut result: Vec<Node> = match parent {
        Some(Value::Seq(inherited)) if !replace_all => inherited,
        _ => Vec::new(),
    };
    // Where the first entry of each name is written, for duplicates.
    let mut seen: HashMap<String, Span> = HashMap::new();
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
        let key_span = map.get(key).map_or(item.span(), Node::span);
        if let Some(first) = seen.get(name.as_ref()) {
            diags.push(
                Diagnostic::error(
                    codes::KEYED_ENTRY_DUPLICATE,
                    format!("duplicate entry `{name}`"),
                )
                .at(key_span)
                .label("second entry with this name")
                .with_label(first, "first entry")
                .help("merge the two entries into one"),
            );
            continue;
        }
        seen.insert(name.to_string(), key_span.clone());
        let position = result
            .iter()
            .position(|r| r.get(key).and_then(key_text).as_deref() == Some(name.as_ref()));
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
                Some(at) => {
                    let inherited = std::mem::take(&mut result[at].value);
                    result[at] = merge(Some(inherited), item, item_schema, diags);
                }
                None => result.push(normalize(item, item_schema, diags)),
            },
        }
    }
    result
}

/// `item` without its `$patch` key (reported already where it is misused).
fn without_directive(item: Node) -> Node {
    match item.value {
        Value::Map(mut map) if map.get(PATCH).is_some() => {
            map.remove(PATCH);
            Node::new(Value::Map(map), item.prov)
        }
        value => Node::new(value, item.prov),
    }
}

/// The name a keyed entry is merged on, as text.
fn key_text(node: &Node) -> Option<Cow<'_, str>> {
    match &node.value {
        Value::Str(s) => Some(Cow::Borrowed(s)),
        Value::Int(i) => Some(Cow::Owned(i.to_string())),
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
