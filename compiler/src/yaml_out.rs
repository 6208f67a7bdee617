//! Deterministic YAML output of JSON values: keys sorted (JSON maps are
//! `BTreeMap`s in this build), block style,
//! strings plain when that is unambiguous, multi-line strings as block
//! literals, everything else double-quoted (JSON strings are valid YAML).

use serde_json::Value;

/// One YAML document for `value` (without the `---` separator).
///
/// Written into a buffer each thread keeps ([`crate::scratch`]), then
/// copied at its length: a build keeps 10,000 objects' texts, and a string
/// grown by doubling carries up to as much again unused.
pub fn to_yaml(value: &Value) -> String {
    thread_local! {
        static BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    crate::scratch::with_kept(&BUFFER, |out| {
        write_document(value, out);
        out.as_str().to_owned()
    })
}

/// Appends the YAML document for `value` to `out`.
fn write_document(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => emit_map(value, 0, out),
        Value::Array(items) if !items.is_empty() => emit_seq(value, 0, out),
        other => {
            push_scalar(other, out);
            out.push('\n');
        }
    }
}

/// Appends `count` spaces.
fn indent_by(count: usize, out: &mut String) {
    const SPACES: &str = "                                                                ";
    let mut left = count;
    while left > 0 {
        let step = left.min(SPACES.len());
        out.push_str(&SPACES[..step]);
        left -= step;
    }
}

fn emit_map(value: &Value, indent: usize, out: &mut String) {
    let Value::Object(map) = value else { return };
    for (i, (key, v)) in map.iter().enumerate() {
        if i > 0 || !out.ends_with("- ") {
            indent_by(indent, out);
        }
        push_string(key, out);
        out.push(':');
        emit_value(v, indent, out);
    }
}

fn emit_seq(value: &Value, indent: usize, out: &mut String) {
    let Value::Array(items) = value else { return };
    for item in items {
        indent_by(indent, out);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => emit_map(item, indent + 2, out),
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                emit_seq(item, indent + 2, out);
            }
            other => match block_of(other) {
                Some((s, indicator)) => {
                    out.pop();
                    emit_string_block(s, indicator, indent + 2, out);
                }
                None => {
                    push_scalar(other, out);
                    out.push('\n');
                }
            },
        }
    }
}

/// Emits what follows `key:`.
fn emit_value(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(value, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_seq(value, indent + 2, out);
        }
        other => match block_of(other) {
            Some((s, indicator)) => emit_string_block(s, indicator, indent + 2, out),
            None => {
                out.push(' ');
                push_scalar(other, out);
                out.push('\n');
            }
        },
    }
}

/// A string value that is written as a literal block, with its block
/// indicator.
fn block_of(value: &Value) -> Option<(&str, &'static str)> {
    let Value::String(s) = value else { return None };
    block_literal(s).map(|indicator| (s.as_str(), indicator))
}

fn emit_string_block(s: &str, indicator: &str, indent: usize, out: &mut String) {
    let lines = s.bytes().filter(|b| *b == b'\n').count();
    out.reserve(s.len() + (lines + 1) * (indent + 1) + 4);
    out.push(' ');
    out.push_str(indicator);
    out.push('\n');
    for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
        if !line.is_empty() {
            indent_by(indent, out);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// The block indicator (`|` or `|-`) when `s` can be written as a literal
/// block that reads back identically.
fn block_literal(s: &str) -> Option<&'static str> {
    if !s.contains('\n') || s.ends_with("\n\n") || s.starts_with([' ', '\t', '\n']) {
        return None;
    }
    if !is_clean_block(s.as_bytes()) {
        return None;
    }
    Some(if s.ends_with('\n') { "|" } else { "|-" })
}

/// Whether no line of `s` ends with a space or tab and no character but
/// tab and newline is a control character (C0, DEL, C1), in one pass over
/// the bytes (a runtime shard shown in a diff is 1.7 MB of text).
fn is_clean_block(s: &[u8]) -> bool {
    // Most text has none of the bytes that need a closer look: that is
    // found by a pass with no branch per byte.
    let suspect = |b: u8| (b < 0x20 && b != b'\n' && b != b'\t') | (b == 0x7f) | (b == 0xc2);
    let suspicious = s.iter().fold(false, |found, &b| found | suspect(b))
        || s.iter()
            .zip(s.iter().skip(1))
            .fold(false, |found, (&b, &next)| {
                found | ((next == b'\n') & ((b == b' ') | (b == b'\t')))
            });
    if !suspicious {
        return s.last().is_none_or(|b| *b != b' ' && *b != b'\t');
    }
    is_clean_block_bytewise(s)
}

/// [`is_clean_block`] byte by byte.
fn is_clean_block_bytewise(s: &[u8]) -> bool {
    let mut previous = b'\n';
    for (i, &byte) in s.iter().enumerate() {
        let bad = match byte {
            b'\n' => previous == b' ' || previous == b'\t',
            b'\t' => false,
            0x00..=0x1f | 0x7f => true,
            // U+0080..=U+009F are 0xC2 0x80..=0x9F in UTF-8.
            0xc2 => s
                .get(i + 1)
                .is_some_and(|next| (0x80..=0x9f).contains(next)),
            _ => false,
        };
        if bad {
            return false;
        }
        previous = byte;
    }
    previous != b' ' && previous != b'\t'
}

/// Appends a string (a key or a value): plain when that reads back the
/// same, else double-quoted JSON.
fn push_string(s: &str, out: &mut String) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// Appends a scalar (an empty map or list in flow style).
fn push_scalar(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => push_string(s, out),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
    }
}

/// Whether `s` reads back as the same string when written without quotes,
/// by a YAML 1.2 reader (cortex's own) and by a YAML 1.1 one (go-yaml v2,
/// which Helm and kubectl use; PyYAML): not a boolean, null, number in any
/// base or form, timestamp, `=` or `<<` in either.
pub fn is_plain_safe(s: &str) -> bool {
    // Most keys and values are words: a letter, then letters, digits and
    // `_./-`. Of those, only the reserved words read back as another type.
    let bytes = s.as_bytes();
    let word = bytes.first().is_some_and(u8::is_ascii_alphabetic)
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'));
    if word {
        return !is_reserved_word(s);
    }
    is_plain_safe_in_full(s)
}

/// [`is_plain_safe`] for any string.
fn is_plain_safe_in_full(s: &str) -> bool {
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return false;
    }
    let first_byte = s.as_bytes()[0];
    let may_be_number = first_byte.is_ascii_digit() || matches!(first_byte, b'+' | b'-' | b'.');
    if may_be_number && (s.parse::<f64>().is_ok() || looks_numeric(s) || looks_like_a_date(s)) {
        return false;
    }
    if is_reserved_word(s) {
        return false;
    }
    let mut chars = s.chars();
    let first = chars.next().unwrap_or(' ');
    // `-` may start a plain scalar when a non-space follows (`--serve`).
    let dash_ok = first == '-' && chars.next().is_some_and(|c| !c.is_whitespace());
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) && !dash_ok {
        return false;
    }
    if s.ends_with(':') {
        return false;
    }
    // One pass: no `: `, no ` #`, no flow indicator or tab, no control
    // character (C0, DEL, and C1, which UTF-8 writes as 0xC2 0x80–0x9F).
    let bytes = s.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        let next = bytes.get(i + 1).copied();
        match b {
            b':' => next != Some(b' '),
            b' ' => next != Some(b'#'),
            b'{' | b'}' | b'[' | b']' | b',' => false,
            0xC2 => !next.is_some_and(|n| (0x80..=0x9F).contains(&n)),
            _ => b >= 0x20 && b != 0x7F,
        }
    })
}

/// Booleans and nulls of YAML 1.2 and 1.1 (`y` and `n` are 1.1
/// booleans), YAML 1.1's value key `=` and merge key `<<`.
fn is_reserved_word(s: &str) -> bool {
    matches!(
        s,
        "null"
            | "Null"
            | "NULL"
            | "~"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
            | "y"
            | "Y"
            | "n"
            | "N"
            | "="
            | "<<"
    )
}

/// YAML 1.1 timestamps begin with a date: `2001-12-14`, `2001-1-2t…`.
fn looks_like_a_date(s: &str) -> bool {
    let mut parts = s.splitn(3, '-');
    let (Some(year), Some(month), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let day: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let digits = |p: &str, range: std::ops::RangeInclusive<usize>| {
        range.contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit())
    };
    digits(year, 4..=4) && digits(month, 1..=2) && digits(&day, 1..=2)
}

/// YAML 1.1 readers (many tools) also take these as numbers or times.
fn looks_numeric(s: &str) -> bool {
    let t = s.trim_start_matches(['+', '-']);
    t.starts_with("0x")
        || t.starts_with("0o")
        || t.starts_with("0b")
        || t.starts_with('.') && t[1..].eq_ignore_ascii_case("inf")
        || t.eq_ignore_ascii_case(".nan")
        || (t.contains(':')
            && t.split(':')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit() || c == '.')))
        || t.contains('_') && t.replace('_', "").parse::<f64>().is_ok()
}

/// Parses multi-document YAML into JSON values (empty documents skipped),
/// with cortex's loader rules (used to read back rendered manifests and
/// Helm's output).
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let file: std::sync::Arc<str> = std::sync::Arc::from("input.yaml");
    crate::yaml::parse_json(&file, text).map_err(|d| {
        format!(
            "{}: {}",
            d.span.map(|s| s.to_string()).unwrap_or_default(),
            d.message
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        /// The byte scan says what a scan of the characters says: no line
        /// ends in a space or tab, no control character but tab.
        #[test]
        fn a_clean_block_is_found_clean_byte_by_byte(
            chars in proptest::collection::vec(
                proptest::sample::select(vec![
                    'a', ' ', '\t', '\n', '\r', '\u{0}', '\u{7f}', '\u{80}', '\u{85}',
                    '\u{9f}', '\u{a0}', '\u{c2}', 'é', '\u{2028}',
                ]),
                0..12,
            )
        ) {
            let s: String = chars.into_iter().collect();
            let by_chars = s
                .split('\n')
                .all(|l| !l.ends_with([' ', '\t']) && l.chars().all(|c| !c.is_control() || c == '\t'));
            proptest::prop_assert_eq!(is_clean_block(s.as_bytes()), by_chars, "{:?}", s);
            proptest::prop_assert_eq!(is_clean_block_bytewise(s.as_bytes()), by_chars, "{:?}", s);
        }

        /// The words' shortcut answers what the full check answers: strings
        /// of word characters, reserved words' letters and the characters
        /// that make a string a number, a date or an indicator.
        #[test]
        fn the_words_shortcut_agrees_with_the_full_check(
            chars in proptest::collection::vec(
                proptest::sample::select(vec![
                    'a', 'e', 'E', 'n', 'N', 'o', 'O', 'y', 'Y', 'f', 't', 'r', 'u', 'l', 's',
                    '0', '1', '9', 'x', 'b', '_', '.', '/', '-', '+', ':', ' ', '#', '~', '<',
                    '=', '{', '\t',
                ]),
                0..6,
            )
        ) {
            let s: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(is_plain_safe(&s), is_plain_safe_in_full(&s), "{:?}", s);
        }
    }

    fn round_trip(value: &Value) {
        let text = to_yaml(value);
        let file: std::sync::Arc<str> = std::sync::Arc::from("t.yaml");
        let nodes = crate::yaml::parse(&file, &text).unwrap_or_else(|e| panic!("{text}\n{e:?}"));
        assert_eq!(nodes[0].to_json(), *value, "{text}");
    }

    #[test]
    fn round_trips() {
        round_trip(&json!({"b": 1, "a": [1, "two", {"x": null, "y": true}], "c": {"d": "e: f"}}));
        round_trip(
            &json!({"prompt": "line one\n  indented {{ braces }}\nlast\n", "k": "no newline\nend"}),
        );
        round_trip(
            &json!({"odd": ["yes", "no", "1.0", "0x1f", "12:30", "-", " lead", "trail ", "#x", "a #b", ""]}),
        );
        round_trip(&json!({"list": [[1, 2], [], {}], "quote": "it's \"q\"", "tab": "a\tb"}));
        round_trip(&json!({"blank": "a\n\nb\n", "two": "x\n\n"}));
        round_trip(&json!({"args": ["--serve", "-v", "-", "- x", "-1", "-.inf"]}));
    }

    /// Regression: `y` was written plain, which Helm's and kubectl's YAML
    /// 1.1 reader takes as `true` (an API server then refused the env value).
    #[test]
    fn what_a_yaml_1_1_reader_takes_for_another_type_is_quoted() {
        for s in [
            "y",
            "Y",
            "n",
            "N",
            "yes",
            "Off",
            "~",
            "null",
            "=",
            "<<",
            "0x1F",
            "0o17",
            "0b101",
            "017",
            "1_000",
            "+12",
            "-3",
            "1:20",
            "190:20:30.15",
            ".inf",
            "-.Inf",
            ".NaN",
            "1e3",
            "6.8523015e+5",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "2002-1-2",
        ] {
            assert!(!is_plain_safe(s), "{s} must be quoted");
            round_trip(&json!({ "v": s }));
        }
        for s in [
            "yay", "nope", "1.4.2", "v1", "250m", "3d", "--serve", "a=b", "2001-12", "y2k",
        ] {
            assert!(is_plain_safe(s), "{s} needs no quotes");
        }
    }

    /// Indicators, tabs and control characters (C0, DEL, C1) anywhere in a
    /// string make it quoted; other non-ASCII text stays plain.
    #[test]
    fn indicators_and_control_characters_are_quoted() {
        for s in [
            "a: b",
            "a #b",
            "a:",
            "{x",
            "x}",
            "[",
            "a,b",
            "a\tb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{9f}",
            "\u{a0}x",
            "x\u{2003}",
        ] {
            assert!(!is_plain_safe(s), "{s:?} must be quoted");
            round_trip(&json!({ "v": s }));
        }
        for s in ["a:b", "a#b", "é", "naïve", "x\u{a0}y", "日本", "a - b"] {
            assert!(is_plain_safe(s), "{s:?} needs no quotes");
            round_trip(&json!({ "v": s }));
        }
    }

    #[test]
    fn keys_are_sorted() {
        assert_eq!(to_yaml(&json!({"b": 1, "a": 2})), "a: 2\nb: 1\n");
    }

    /// The thread's buffer is reused, and let go past its bound: each
    /// document comes out whole and alone, at its own length.
    #[test]
    fn documents_written_one_after_another_share_nothing() {
        let large = "x".repeat(crate::scratch::KEPT_BYTES * 2);
        for value in [json!({"a": 1}), json!({"big": large}), json!({"b": 2})] {
            let text = to_yaml(&value);
            assert_eq!(text.capacity(), text.len());
            assert_eq!(parse_documents(&text).unwrap(), vec![value]);
        }
    }
}
