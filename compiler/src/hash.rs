//! Content hashes: SHA-256 of an object's canonical JSON (compact, keys
//! sorted), as inventories, config checksums and live objects use them.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Compact JSON with sorted keys: the canonical form content hashes use.
/// (`serde_json::Map` is a `BTreeMap` in this build — the `preserve_order`
/// feature is off — so keys are sorted by construction.)
pub fn canonical_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Lower-case hex SHA-256 of the canonical JSON of `value`. The text is
/// written into a buffer each thread keeps (it grows to the largest object
/// once, and is not allocated, zeroed or freed per object), then hashed in
/// one pass: the serializer writes a few bytes at a time, which fed to
/// SHA-256 one by one cost more than the hashing.
pub fn canonical_hash(value: &Value) -> String {
    thread_local! {
        static TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TEXT.with(|text| match text.try_borrow_mut() {
        Ok(mut text) => {
            text.clear();
            // Writing a `Value` into a vector cannot fail.
            let _ = serde_json::to_writer(&mut *text, value);
            hex(&Sha256::digest(&*text))
        }
        // Only a hash taken while this thread's buffer is in use (none
        // today) gets a buffer of its own.
        Err(_) => sha256_hex(&serde_json::to_vec(value).unwrap_or_default()),
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
    use serde_json::json;

    use super::*;

    #[test]
    fn the_hash_is_that_of_the_canonical_text_at_any_size() {
        for n in [0, 1, 300, 5_000] {
            let value = json!({
                "items": (0..n).map(|i| json!({"i": i, "s": "x".repeat(i % 7)})).collect::<Vec<_>>(),
            });
            let text = canonical_json(&value);
            assert_eq!(canonical_hash(&value), sha256_hex(text.as_bytes()), "{n}");
        }
    }
}
