//! Content hashes: SHA-256 of an object's canonical JSON (compact, keys
//! sorted), as inventories, config checksums and live objects use them.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Compact JSON with sorted keys: the canonical form content hashes use.
/// (`serde_json::Map` is a `BTreeMap` in this build — the `preserve_order`
/// feature is off — so keys are sorted by construction.)
pub fn canonical_json(value: &Value) -> String {
    let mut text = Vec::new();
    write_compact(&mut text, value);
    // Only whole strings and ASCII are written: the text is UTF-8.
    String::from_utf8(text).unwrap_or_default()
}

/// Appends `value` to `out` as compact JSON, byte for byte as serde_json
/// writes it. A string with nothing to escape (almost every one) is copied
/// whole; serde_json looks each of its bytes up in its escape table.
pub fn write_compact(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Writing into a vector cannot fail.
        Value::Number(number) => {
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_compact(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_compact(out, item);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string: as it is between quotes when JSON needs no escape in it
/// (no control character, quote or backslash), else as serde_json escapes
/// it.
pub(crate) fn write_string(out: &mut Vec<u8>, text: &str) {
    // A fold, not a search: no early exit, so the compiler checks many
    // bytes at once.
    let needs_escape = text.bytes().fold(false, |seen, b| {
        seen | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Lower-case hex SHA-256 of the canonical JSON of `value`. The text is
/// written into a buffer each thread keeps ([`crate::scratch`]), then
/// hashed in one pass: the serializer writes a few bytes at a time, which
/// fed to SHA-256 one by one cost more than the hashing.
pub fn canonical_hash(value: &Value) -> String {
    thread_local! {
        static TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    crate::scratch::with_kept(&TEXT, |text| {
        write_compact(text, value);
        hex(&Sha256::digest(&*text))
    })
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn json_tree() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            Just(String::new()),
            "[a-z]{1,8}",
            "[ -~]{0,12}",
            "\\PC{0,6}",
            prop::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('\n'),
                    Just('\u{1}'),
                    Just('\u{7f}'),
                    Just('é'),
                    Just('x')
                ],
                0..6
            )
            .prop_map(|chars| chars.into_iter().collect()),
        ];
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.clone().prop_map(Value::String),
        ];
        scalar.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(text.clone(), inner, 0..5)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn the_compact_text_is_serde_jsons(value in json_tree()) {
            let ours = canonical_json(&value);
            prop_assert_eq!(&ours, &serde_json::to_string(&value).unwrap_or_default());
            prop_assert_eq!(canonical_hash(&value), sha256_hex(ours.as_bytes()));
        }
    }

    #[test]
    fn the_hash_is_that_of_the_canonical_text_at_any_size() {
        // After the large one, the thread's buffer has been let go.
        for n in [0, 1, 300, 5_000, 2] {
            let value = json!({
                "items": (0..n).map(|i| json!({"i": i, "s": "x".repeat(i % 7)})).collect::<Vec<_>>(),
            });
            let text = canonical_json(&value);
            assert_eq!(canonical_hash(&value), sha256_hex(text.as_bytes()), "{n}");
        }
    }
}
