//! A fast reader for the YAML cortex's object templates render: block
//! mappings and sequences whose values are JSON (`tojson`) or plain words.
//! Reading back every rendered object with the full YAML parser was about
//! a fifth of `cortex build`; JSON is YAML, so what this reader takes means
//! the same to both. Anything else — block scalars, anchors, quoted keys,
//! comments after values, words that might be booleans or numbers —
//! returns `None`, and the caller uses the full parser, which also makes
//! every diagnostic.

use serde_json::{Map, Value};

use super::MAX_DEPTH;

/// One content line: its indentation and the text after it.
struct Line<'t> {
    indent: usize,
    text: &'t str,
}

/// The documents of `text`, when it has only the shapes this reader takes.
pub fn documents(text: &str) -> Option<Vec<Value>> {
    let mut docs = Vec::new();
    let mut current: Vec<Line<'_>> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw == "---" {
            docs.push(std::mem::take(&mut current));
            continue;
        }
        let text = raw.trim_start_matches(' ');
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if text.starts_with('\t') || raw.starts_with("...") || raw.starts_with('%') {
            return None;
        }
        current.push(Line {
            indent: raw.len() - text.len(),
            text: text.trim_end(),
        });
    }
    docs.push(current);
    docs.into_iter()
        .filter(|lines| !lines.is_empty())
        .map(|lines| {
            let mut at = 0;
            let value = block(&lines, &mut at, lines[0].indent, 1)?;
            (at == lines.len()).then_some(value)
        })
        .collect()
}

/// The block starting at `lines[*at]`, whose lines are indented `indent`.
fn block(lines: &[Line<'_>], at: &mut usize, indent: usize, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    if lines.get(*at)?.text.starts_with("- ") || lines[*at].text == "-" {
        sequence(lines, at, indent, depth)
    } else {
        mapping(lines, at, indent, depth, None)
    }
}

/// A block mapping at `indent`; `first` is an entry already split off (the
/// text after a sequence entry's `- `).
fn mapping(
    lines: &[Line<'_>],
    at: &mut usize,
    indent: usize,
    depth: usize,
    mut first: Option<&str>,
) -> Option<Value> {
    let mut map = Map::new();
    loop {
        let text = match first.take() {
            Some(text) => text,
            None => {
                let Some(line) = lines.get(*at).filter(|l| l.indent == indent) else {
                    break;
                };
                if line.text.starts_with('-') {
                    break;
                }
                *at += 1;
                line.text
            }
        };
        let (key, rest) = split_key(text)?;
        let value = if rest.is_empty() {
            // A nested block: more indented, or a sequence at the same indent.
            match lines.get(*at) {
                Some(next) if next.indent > indent => block(lines, at, next.indent, depth + 1)?,
                Some(next) if next.indent == indent && next.text.starts_with("- ") => {
                    sequence(lines, at, indent, depth + 1)?
                }
                _ => return None,
            }
        } else {
            scalar(rest, depth)?
        };
        if map.insert(key.to_string(), value).is_some() {
            return None;
        }
    }
    if lines.get(*at).is_some_and(|l| l.indent > indent) {
        return None;
    }
    Some(Value::Object(map))
}

/// A block sequence at `indent`.
fn sequence(lines: &[Line<'_>], at: &mut usize, indent: usize, depth: usize) -> Option<Value> {
    let mut items = Vec::new();
    while let Some(line) = lines.get(*at).filter(|l| l.indent == indent) {
        let rest = line.text.strip_prefix("- ")?.trim_start();
        *at += 1;
        let item = if rest.starts_with(['{', '[', '"']) || split_key(rest).is_none() {
            scalar(rest, depth)?
        } else {
            // `- key: value`, its other keys two columns further in.
            let inner = indent + (line.text.len() - rest.len());
            mapping(lines, at, inner, depth + 1, Some(rest))?
        };
        items.push(item);
    }
    if lines.get(*at).is_some_and(|l| l.indent > indent) {
        return None;
    }
    Some(Value::Array(items))
}

/// `key: rest` or `key:` with a plain key.
fn split_key(text: &str) -> Option<(&str, &str)> {
    let (key, rest) = match text.split_once(": ") {
        Some((key, rest)) => (key, rest.trim_start()),
        None => (text.strip_suffix(':')?, ""),
    };
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    plain.then_some((key, rest))
}

/// A value on one line: JSON (objects, arrays, strings) read as JSON;
/// `true`, `false`, `null`, a decimal integer; or a plain word that can only
/// be a string.
fn scalar(text: &str, depth: usize) -> Option<Value> {
    if text.starts_with(['{', '[', '"']) {
        let value: Value = serde_json::from_str(text).ok()?;
        return (depth + nesting(&value) <= MAX_DEPTH).then_some(value);
    }
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        "null" => return Some(Value::Null),
        _ => {}
    }
    let bytes = text.as_bytes();
    if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) {
        // No leading zeros: `0755` is read differently by YAML 1.1 and 1.2.
        if bytes.len() > 1 && bytes[0] == b'0' {
            return None;
        }
        return text.parse::<i64>().ok().map(Value::from);
    }
    let word = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    let starts_like_a_word = bytes.first().is_some_and(u8::is_ascii_alphabetic);
    let reserved = ["true", "false", "null", "yes", "no", "on", "off", "y", "n"]
        .iter()
        .any(|r| text.eq_ignore_ascii_case(r));
    (word && starts_like_a_word && !reserved && !text.eq_ignore_ascii_case(".inf"))
        .then(|| Value::String(text.to_string()))
}

/// Collections nested in `value` (0 for a scalar).
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_the_templates_render() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: \"triage\"\n  labels: {\"a\":\"b\"}\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: agent\n          image: \"x:1\"\n          env: [{\"name\":\"A\",\"value\":\"y\"}]\n        - name: side\n      volumes: []\n";
        let docs = documents(text).expect("fast");
        assert_eq!(
            docs,
            [json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "triage", "labels": {"a": "b"}},
                "spec": {"replicas": 2, "template": {"spec": {
                    "containers": [
                        {"name": "agent", "image": "x:1", "env": [{"name": "A", "value": "y"}]},
                        {"name": "side"}
                    ],
                    "volumes": []
                }}}
            })]
        );
    }

    #[test]
    fn leaves_everything_else_to_the_full_parser() {
        for text in [
            "a: yes\n",
            "a: True\n",
            "a: 1.5\n",
            "a: 0755\n",
            "a: |\n  text\n",
            "a: &x 1\n",
            "\"a\": 1\n",
            "a: {\"b\": 1} # c\n",
            "a: 1\na: 2\n",
            "a:\n    b: 1\n  c: 2\n",
            "a: !tag x\n",
            "a:\tb\n",
            "<<: {}\n",
        ] {
            assert_eq!(documents(text), None, "{text:?}");
        }
    }
}
