//! Pretty-printed JSON, byte for byte as `serde_json::to_writer_pretty`
//! writes it, with the members of large objects and arrays formatted in
//! parallel (`runtime.json` of a big project is mostly two maps of
//! thousands of entries, `inventory.json` a list of every object).

use std::io::{self, Write};

use rayon::prelude::*;
use serde_json::Value;

/// Objects and arrays with at least this many members are formatted member
/// by member over every core.
const PARALLEL_FROM: usize = 64;

/// Writes `value` as `serde_json::to_writer_pretty` does.
pub fn write_pretty(out: &mut dyn Write, value: &Value) -> io::Result<()> {
    write_at(out, value, 0)
}

/// Writes `value` as it appears `depth` levels deep in a pretty document.
fn write_at(out: &mut dyn Write, value: &Value, depth: usize) -> io::Result<()> {
    let (open, close, count) = match value {
        Value::Object(map) => (b"{", b"}", map.len()),
        Value::Array(items) => (b"[", b"]", items.len()),
        _ => return out.write_all(&indented(value, depth)),
    };
    if count == 0 || (depth > 0 && count < PARALLEL_FROM) {
        return out.write_all(&indented(value, depth));
    }
    // Each member as its text, made in parallel when there are many.
    let member = |key: Option<&String>, value: &Value| {
        let mut text = Vec::new();
        // Writing into a vector cannot fail.
        let _ = write_member(&mut text, key, value, depth + 1);
        text
    };
    let texts: Vec<Vec<u8>> = match value {
        Value::Object(map) => {
            let entries: Vec<(&String, &Value)> = map.iter().collect();
            entries
                .par_iter()
                .with_min_len(16)
                .map(|(key, value)| member(Some(key), value))
                .collect()
        }
        Value::Array(items) => items
            .par_iter()
            .with_min_len(16)
            .map(|item| member(None, item))
            .collect(),
        _ => Vec::new(),
    };
    out.write_all(open)?;
    for (i, text) in texts.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        out.write_all(text)?;
    }
    out.write_all(b"\n")?;
    indent(out, depth)?;
    out.write_all(close)
}

/// One member at `depth`: an array's item, or an object's `"key": value`
/// (and the lines of its value).
fn write_member(
    out: &mut dyn Write,
    key: Option<&String>,
    value: &Value,
    depth: usize,
) -> io::Result<()> {
    indent(out, depth)?;
    if let Some(key) = key {
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b": ")?;
    }
    write_at(out, value, depth)
}

/// `value` pretty-printed on its own, each line after the first indented
/// by `depth` levels (JSON strings hold no raw line breaks, so every line
/// break is the printer's).
fn indented(value: &Value, depth: usize) -> Vec<u8> {
    let text = serde_json::to_vec_pretty(value).unwrap_or_default();
    if depth == 0 || !text.contains(&b'\n') {
        return text;
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
            out.extend(std::iter::repeat_n(b' ', 2 * depth));
        }
        out.extend_from_slice(line);
    }
    out
}

fn indent(out: &mut dyn Write, depth: usize) -> io::Result<()> {
    for _ in 0..depth {
        out.write_all(b"  ")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pretty(value: &Value) -> String {
        let mut out = Vec::new();
        write_pretty(&mut out, value).expect("writes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn the_text_is_serde_jsons_for_every_shape() {
        let many: serde_json::Map<String, Value> = (0..200)
            .map(|i| {
                let entry = json!({
                    "n": i,
                    "empty": {},
                    "list": [1, {"a": "b\nc"}, []],
                    "nested": {"deeper": {"x": null, "y": 1.5}},
                    "text": "quote \" and \\ and \u{1}",
                });
                (format!("entry-{i:03}"), entry)
            })
            .collect();
        let values = [
            json!(null),
            json!("plain"),
            json!([]),
            json!({}),
            json!({"a": 1, "b": [true, false], "c": {}}),
            json!({"big": many.clone(), "small": {"k": "v"}, "version": 1}),
            json!({"outer": {"big": many.clone()}}),
            json!({"list": many.values().cloned().collect::<Vec<_>>()}),
            json!([[many.clone()], many.values().cloned().collect::<Vec<_>>()]),
            Value::Object(many),
        ];
        for value in values {
            let expected = serde_json::to_string_pretty(&value).expect("serializes");
            assert_eq!(pretty(&value), expected);
        }
    }
}
