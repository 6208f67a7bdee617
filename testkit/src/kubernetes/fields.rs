//! Field paths of server-side apply, as the fake API server tracks them:
//! object keys, list elements keyed by `name` (containers, env, ports,
//! volumes…), and every other list as one atomic value.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// An object key.
    Key(String),
    /// The element of a named list with this `name`.
    Named(String),
}

/// A field path.
pub type FieldPath = Vec<Step>;

/// Whether a list is merged element by element (every element an object
/// with a string `name`), as the API server merges containers or env.
pub fn is_named_list(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("name").and_then(Value::as_str).is_some())
}

/// The fields an applied object sets: its leaves, with `apiVersion`, `kind`,
/// `status` and the identifying metadata left out.
pub fn applied_fields(body: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(map) = body.as_object() else {
        return out;
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for (mkey, mvalue) in value.as_object().into_iter().flatten() {
                    if matches!(mkey.as_str(), "labels" | "annotations") {
                        let path = vec![Step::Key(key.clone()), Step::Key(mkey.clone())];
                        leaves(mvalue, path, &mut out);
                    }
                }
            }
            _ => leaves(value, vec![Step::Key(key.clone())], &mut out),
        }
    }
    out
}

fn leaves(value: &Value, path: FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut p = path.clone();
                p.push(Step::Key(k.clone()));
                leaves(v, p, out);
            }
        }
        Value::Array(items) if is_named_list(items) => {
            for item in items {
                let name = item["name"].as_str().unwrap_or_default().to_string();
                let mut p = path.clone();
                p.push(Step::Named(name));
                leaves(item, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The value at `path`.
pub fn get<'v>(value: &'v Value, path: &[Step]) -> Option<&'v Value> {
    let mut at = value;
    for step in path {
        at = match step {
            Step::Key(k) => at.get(k)?,
            Step::Named(n) => at
                .as_array()?
                .iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some(n))?,
        };
    }
    Some(at)
}

/// Merges an applied object into a live one as server-side apply does:
/// objects key by key, named lists element by element (the applied
/// elements first, in the applied order, then the ones others own),
/// anything else replaced. `apiVersion`, `kind` and `status` are left alone.
pub fn merge(live: &mut Value, applied: &Value) {
    let Some(map) = applied.as_object() else {
        return;
    };
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind" | "status") {
            continue;
        }
        if !live.is_object() {
            *live = Value::Object(Map::new());
        }
        let slot = live
            .as_object_mut()
            .expect("made an object above")
            .entry(key.clone())
            .or_insert(Value::Null);
        merge_value(slot, value);
    }
}

fn merge_value(live: &mut Value, applied: &Value) {
    match applied {
        Value::Object(map) if !map.is_empty() => {
            if !live.is_object() {
                *live = Value::Object(Map::new());
            }
            let target = live.as_object_mut().expect("made an object above");
            for (k, v) in map {
                merge_value(target.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        Value::Array(items) if is_named_list(items) => {
            let mut existing: Vec<Value> = match live.take() {
                Value::Array(l) => l,
                _ => Vec::new(),
            };
            let mut ordered = Vec::with_capacity(items.len());
            for item in items {
                let name = item.get("name");
                let mut element = match existing.iter().position(|e| e.get("name") == name) {
                    Some(i) => existing.remove(i),
                    None => json!({}),
                };
                merge_value(&mut element, item);
                ordered.push(element);
            }
            ordered.extend(existing);
            *live = Value::Array(ordered);
        }
        other => *live = other.clone(),
    }
}

/// Sets the value at `path`, creating objects and named elements on the way.
pub fn set(value: &mut Value, path: &[Step], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        *value = new;
        return;
    };
    let mut at = value;
    for (i, step) in parents.iter().enumerate() {
        let next_is_named = matches!(path.get(i + 1), Some(Step::Named(_)));
        at = child(at, step, next_is_named);
    }
    match last {
        Step::Key(k) => {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            at.as_object_mut().map(|m| m.insert(k.clone(), new));
        }
        Step::Named(_) => *child(at, last, false) = new,
    }
}

fn child<'v>(at: &'v mut Value, step: &Step, list: bool) -> &'v mut Value {
    match step {
        Step::Key(k) => {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            let empty = if list { json!([]) } else { json!({}) };
            let map = at.as_object_mut().expect("made an object above");
            let entry = map.entry(k.clone()).or_insert(empty);
            if list && !entry.is_array() {
                *entry = json!([]);
            }
            entry
        }
        Step::Named(n) => {
            if !at.is_array() {
                *at = json!([]);
            }
            let items = at.as_array_mut().expect("made an array above");
            let index = match items
                .iter()
                .position(|i| i.get("name").and_then(Value::as_str) == Some(n))
            {
                Some(i) => i,
                None => {
                    items.push(json!({ "name": n }));
                    items.len() - 1
                }
            };
            &mut items[index]
        }
    }
}

/// Removes the value at `path`; a named element left with nothing but its
/// name goes too, and so do objects left empty by the removal.
pub fn remove(value: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = &mut *value;
    for step in parents {
        let next = match step {
            Step::Key(k) => at.get_mut(k),
            Step::Named(n) => at.as_array_mut().and_then(|items| {
                items
                    .iter_mut()
                    .find(|i| i.get("name").and_then(Value::as_str) == Some(n))
            }),
        };
        match next {
            Some(n) => at = n,
            None => return,
        }
    }
    match last {
        Step::Key(k) => {
            at.as_object_mut().map(|m| m.remove(k));
        }
        Step::Named(n) => {
            if let Some(items) = at.as_array_mut() {
                items.retain(|i| i.get("name").and_then(Value::as_str) != Some(n));
            }
        }
    }
    // Tidy the parents the removal emptied.
    for depth in (1..path.len()).rev() {
        let parent_path = &path[..depth];
        let empty = match get(value, parent_path) {
            Some(Value::Array(items)) => items.is_empty(),
            Some(Value::Object(m)) => {
                m.is_empty()
                    || (matches!(parent_path.last(), Some(Step::Named(_)))
                        && m.len() == 1
                        && m.contains_key("name"))
            }
            _ => false,
        };
        if !empty {
            break;
        }
        remove(value, parent_path);
    }
}

/// A field path as the API server prints it in conflicts:
/// `.spec.template.spec.containers[name="agent"].image`.
pub fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Named(n) => out.push_str(&format!("[name=\"{n}\"]")),
        }
    }
    out
}

/// The `fieldsV1` rendering of a field set (`f:spec`, `k:{"name":"x"}`).
pub fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut root = json!({});
    for path in fields {
        let mut at = &mut root;
        for step in path {
            let key = match step {
                Step::Key(k) => format!("f:{k}"),
                Step::Named(n) => format!("k:{}", json!({ "name": n })),
            };
            at = at
                .as_object_mut()
                .expect("fieldsV1 nodes are objects")
                .entry(key)
                .or_insert_with(|| json!({}));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_lists_are_merged_by_name_and_others_are_atomic() {
        let body =
            json!({"spec": {"containers": [{"name": "a", "image": "x", "args": ["1", "2"]}]}});
        let fields = applied_fields(&body);
        let shown: Vec<String> = fields.iter().map(|p| display(p)).collect();
        assert_eq!(
            shown,
            [
                ".spec.containers[name=\"a\"].args",
                ".spec.containers[name=\"a\"].image",
                ".spec.containers[name=\"a\"].name"
            ]
        );
    }

    #[test]
    fn set_and_remove_round_trip() {
        let mut v = json!({});
        let path = vec![
            Step::Key("spec".into()),
            Step::Key("env".into()),
            Step::Named("A".into()),
            Step::Key("value".into()),
        ];
        set(&mut v, &path, json!("1"));
        assert_eq!(v, json!({"spec": {"env": [{"name": "A", "value": "1"}]}}));
        remove(&mut v, &path);
        assert_eq!(v, json!({}));
    }
}
