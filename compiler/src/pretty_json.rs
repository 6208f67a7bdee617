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

/// The pretty form of `text` when it is a JSON text exactly as serde_json
/// writes the value it holds ([`is_own_compact`]): made by re-indenting
/// its bytes ([`reindent`]), which is what `serde_json::to_string_pretty`
/// of the parsed value writes, without building the value. `None` for any
/// other text.
pub fn pretty_of_compact(text: &str) -> Option<String> {
    if !is_own_compact(text) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 2);
    reindent(text, 0, &mut out);
    String::from_utf8(out).ok()
}

/// Whether valid JSON `text` is what `serde_json::to_string` writes for
/// the value it holds: no whitespace between tokens, each object's keys in
/// strictly rising order (a key with an escape is not accepted), strings
/// escaped as serde_json escapes them, and numbers as it prints them.
/// Only for text that parses: it checks the form, not the grammar.
pub(crate) fn is_own_compact(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Per open container: whether it is an object, and its last key.
    let mut open: Vec<(bool, Option<&[u8]>)> = Vec::new();
    // In an object, whether the next string is a key.
    let mut key_next = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let Some(end) = string_end(bytes, i + 1) else {
                    return false;
                };
                if key_next {
                    let key = &bytes[i + 1..end];
                    let Some((_, last)) = open.last_mut() else {
                        return false;
                    };
                    if key.contains(&b'\\') || last.is_some_and(|last| last >= key) {
                        return false;
                    }
                    *last = Some(key);
                    key_next = false;
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                let object = bytes[i] == b'{';
                open.push((object, None));
                key_next = object;
                i += 1;
            }
            b'}' | b']' => {
                open.pop();
                key_next = false;
                i += 1;
            }
            b',' => {
                key_next = open.last().is_some_and(|(object, _)| *object);
                i += 1;
            }
            b':' => i += 1,
            b't' | b'f' | b'n' => {
                i += bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphabetic())
                    .count()
            }
            b'-' | b'0'..=b'9' => {
                let length = bytes[i..]
                    .iter()
                    .take_while(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .count();
                if !is_own_number(&text[i..i + length]) {
                    return false;
                }
                i += length;
            }
            // Whitespace, or anything else.
            _ => return false,
        }
    }
    true
}

/// The index of the quote that closes the string whose text starts at
/// `start`, when every escape in it is one serde_json writes: `\"`, `\\`,
/// `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00xx` (lower-case hex) for the
/// other control characters.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    loop {
        let at = i + bytes
            .get(i..)?
            .iter()
            .position(|b| *b == b'"' || *b == b'\\')?;
        if bytes[at] == b'"' {
            return Some(at);
        }
        match bytes.get(at + 1)? {
            b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => i = at + 2,
            b'u' => {
                let hex = bytes.get(at + 2..at + 6)?;
                let code = std::str::from_utf8(hex).ok().and_then(|h| {
                    u8::from_str_radix(h, 16)
                        .ok()
                        .filter(|_| h.starts_with("00"))
                });
                let lower = hex.iter().all(|b| !b.is_ascii_uppercase());
                match code {
                    Some(c)
                        if c < 0x20 && lower && !matches!(c, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) =>
                    {
                        i = at + 6
                    }
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

/// Whether serde_json prints the number that `literal` parses to as
/// `literal`.
fn is_own_number(literal: &str) -> bool {
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    let integer = digits.bytes().all(|b| b.is_ascii_digit());
    if integer {
        // Integers that fit 64 bits print as written, unless they have a
        // leading zero or are `-0` (which parses as a float).
        let fits = match literal.starts_with('-') {
            true => literal.parse::<i64>().is_ok(),
            false => literal.parse::<u64>().is_ok(),
        };
        return fits && (digits == "0" || !digits.starts_with('0')) && literal != "-0";
    }
    literal
        .parse::<serde_json::Number>()
        .is_ok_and(|n| n.to_string() == literal)
}

/// Compact JSON text (as serde_json writes it) made pretty as
/// [`write_pretty`] writes the same value `depth` levels deep: a pass over
/// the bytes, the structure read from brackets, commas and colons outside
/// strings (the two forms escape strings alike).
pub fn reindent(compact: &str, depth: usize, out: &mut Vec<u8>) {
    fn line(out: &mut Vec<u8>, level: usize) {
        const SPACES: &[u8; 64] = &[b' '; 64];
        out.push(b'\n');
        let mut left = 2 * level;
        while left > 0 {
            let run = left.min(SPACES.len());
            out.extend_from_slice(&SPACES[..run]);
            left -= run;
        }
    }
    let bytes = compact.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 2);
    let mut level = depth;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            b'"' => {
                // The string to its closing quote, copied whole: only a
                // backslash (whose next byte is taken with it) or a quote
                // stops the search.
                let start = i - 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        Some(at) if bytes[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at + 1;
                            break;
                        }
                        None => {
                            i = bytes.len();
                            break;
                        }
                    }
                    if i >= bytes.len() {
                        break;
                    }
                }
                let end = i.min(bytes.len());
                out.extend_from_slice(&bytes[start..end]);
                i = end;
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

/// Writes an object (`brackets` `{}`) or an array (`[]`) whose members
/// are made already, each with its own lines at `depth + 1` (an object's
/// member with its key), as the value of a member at `depth`: `{}` or `[]`
/// when there are none.
pub fn write_members(
    out: &mut dyn Write,
    brackets: [u8; 2],
    members: &[Vec<u8>],
    depth: usize,
) -> io::Result<()> {
    if members.is_empty() {
        return out.write_all(&brackets);
    }
    out.write_all(&brackets[..1])?;
    for (i, member) in members.iter().enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        out.write_all(member)?;
    }
    out.write_all(b"\n")?;
    indent(out, depth)?;
    out.write_all(&brackets[1..])
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

    /// Any JSON value: keys drawn from `key_chars`, strings from characters
    /// serde_json writes plain and ones it escapes.
    fn any_value(key_chars: &'static [char]) -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = |chars: &'static [char]| {
            proptest::collection::vec(proptest::sample::select(chars), 0..4)
                .prop_map(|c| c.into_iter().collect::<String>())
        };
        const CHARS: &[char] = &[
            'a', 'B', '"', '\\', '/', '\n', '\u{8}', '\u{1}', '\u{1f}', '\u{7f}', 'é', '\u{2028}',
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            (-1000i32..1000, -12i32..12)
                .prop_map(|(m, e)| Value::from(f64::from(m) * 10f64.powi(e))),
            text(CHARS).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(text(key_chars), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn pick(choices: &mut impl Iterator<Item = u8>, n: u8) -> u8 {
        choices.next().unwrap_or(0) % n
    }

    /// `value`'s JSON with the deviations `choices` pick: spaces, keys out
    /// of order, other escapes and other forms of the same numbers.
    fn variant_text(value: &Value, choices: &mut impl Iterator<Item = u8>, out: &mut String) {
        match value {
            Value::String(s) => {
                out.push('"');
                for c in s.chars() {
                    match (c, pick(choices, 4)) {
                        ('/', 0) => out.push_str("\\/"),
                        ('\u{8}', 0) => out.push_str("\\u0008"),
                        ('\u{1f}', 0) => out.push_str("\\u001F"),
                        ('a', 0) => out.push_str("\\u0061"),
                        _ => {
                            let quoted = serde_json::to_string(&c.to_string()).expect("json");
                            out.push_str(&quoted[1..quoted.len() - 1]);
                        }
                    }
                }
                out.push('"');
            }
            Value::Number(n) => {
                let text = n.to_string();
                match pick(choices, 4) {
                    0 if !text.contains(['.', 'e']) => out.push_str(&format!("{text}.0")),
                    1 if !text.contains('e') => out.push_str(&format!("{text}e0")),
                    _ => out.push_str(&text),
                }
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if pick(choices, 8) == 0 {
                        out.push(' ');
                    }
                    variant_text(item, choices, out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if pick(choices, 3) == 0 {
                    entries.reverse();
                }
                out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    variant_text(&Value::from(key.as_str()), choices, out);
                    out.push_str(if pick(choices, 8) == 0 { ": " } else { ":" });
                    variant_text(item, choices, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    proptest::proptest! {
        /// serde_json's own compact text is accepted (when no key needs an
        /// escape) and re-indented into its own pretty text.
        #[test]
        fn serde_jsons_own_text_is_made_pretty_as_serde_json_does(
            value in any_value(&['a', 'b', 'Z', '_', '1', 'é'])
        ) {
            let text = serde_json::to_string(&value).expect("json");
            proptest::prop_assert!(is_own_compact(&text), "{}", text);
            proptest::prop_assert_eq!(
                pretty_of_compact(&text),
                Some(serde_json::to_string_pretty(&value).expect("pretty"))
            );
        }

        /// A text that is accepted is the text serde_json writes for what it
        /// holds, whatever spaces, key order, escapes and number forms it has.
        #[test]
        fn an_accepted_text_is_serde_jsons_own(
            value in any_value(&['a', 'b', '"', '\\', '/', '\u{1}', 'é']),
            choices in proptest::collection::vec(proptest::prelude::any::<u8>(), 64),
        ) {
            let mut text = String::new();
            variant_text(&value, &mut choices.into_iter().cycle(), &mut text);
            let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
            let own = serde_json::to_string(&parsed).expect("json");
            proptest::prop_assert!(!is_own_compact(&text) || own == text, "{}", text);
        }
    }

    #[test]
    fn other_forms_of_a_value_are_not_accepted() {
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a": 1}"#,
            r#"["\/"]"#,
            r#"["\u0041"]"#,
            r#"["\u001F"]"#,
            r#"["\u0008"]"#,
            "[1.0e0]",
            "[1E5]",
            "[-0]",
            "[100000000000000000000]",
            r#"{"a\"b":1}"#,
        ] {
            assert!(!is_own_compact(text), "{text}");
            assert_eq!(pretty_of_compact(text), None);
        }
        for text in [
            r#"{"a":[1,-2,0.5,1e-7,"\u001f\b\n"],"b":{}}"#,
            "[]",
            "null",
            r#""x""#,
        ] {
            assert!(is_own_compact(text), "{text}");
        }
    }
}
