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

/// Compact JSON text (as serde_json writes it) made pretty as
/// [`write_pretty`] writes the same value `depth` levels deep: a pass over
/// the bytes, the structure read from brackets, commas and colons outside
/// strings (the two forms escape strings alike).
pub fn reindent(compact: &str, depth: usize, out: &mut Vec<u8>) {
    fn line(out: &mut Vec<u8>, level: usize) {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', 2 * level));
    }
    let bytes = compact.as_bytes();
    let mut level = depth;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if in_string {
            out.push(b);
            match b {
                b'\\' => {
                    if let Some(escaped) = bytes.get(i) {
                        out.push(*escaped);
                        i += 1;
                    }
                }
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                let close = if b == b'{' { b'}' } else { b']' };
                if bytes.get(i) == Some(&close) {
                    out.push(close);
                    i += 1;
                } else {
                    level += 1;
                    line(out, level);
                }
            }
            b'}' | b']' => {
                level = level.saturating_sub(1);
                line(out, level);
                out.push(b);
            }
            b',' => {
                out.push(b);
                line(out, level);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(b),
        }
    }
}

/// Writes `"key": ` at `depth`, the start of an object's member.
pub fn member_key(out: &mut dyn Write, key: &str, depth: usize) -> io::Result<()> {
    indent(out, depth)?;
    serde_json::to_writer(&mut *out, key)?;
    out.write_all(b": ")
}

/// Writes `value` as a member's value `depth` levels deep (after its key).
pub fn write_value_at(out: &mut dyn Write, value: &Value, depth: usize) -> io::Result<()> {
    write_at(out, value, depth)
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
            for depth in [0, 1, 3] {
                let mut reindented = Vec::new();
                reindent(
                    &serde_json::to_string(&value).expect("json"),
                    depth,
                    &mut reindented,
                );
                assert_eq!(
                    String::from_utf8(reindented).expect("utf-8"),
                    String::from_utf8(indented(&value, depth)).expect("utf-8"),
                    "{value} at depth {depth}"
                );
            }
        }
    }

    #[test]
    fn reindenting_keeps_strings_whole() {
        let value = json!({
            "braces": "{[,:]}", "escaped": "a \" quote, a \\ and \"{\"", "unicode": "é ✓ \u{7}",
            "empty": {"o": {}, "a": []}, "numbers": [-1.5e-7, 0, 12345678901234u64],
        });
        let mut out = Vec::new();
        reindent(&serde_json::to_string(&value).expect("json"), 0, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            serde_json::to_string_pretty(&value).expect("pretty")
        );
    }
}
