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

/// Lower-case hex SHA-256 of the canonical JSON of `value`, hashed as it
/// is serialized (the text is never held in memory).
pub fn canonical_hash(value: &Value) -> String {
    /// SHA-256 fed in blocks: the serializer writes a few bytes at a time.
    /// The block is on the stack (no allocation per object hashed).
    struct Hashing {
        sha: Sha256,
        block: [u8; HASH_BLOCK],
        filled: usize,
    }
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.filled + bytes.len() > HASH_BLOCK {
                self.sha.update(&self.block[..self.filled]);
                self.filled = 0;
                if bytes.len() > HASH_BLOCK {
                    self.sha.update(bytes);
                    return Ok(bytes.len());
                }
            }
            self.block[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
            self.filled += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    const HASH_BLOCK: usize = 8192;
    let mut hashing = Hashing {
        sha: Sha256::new(),
        block: [0; HASH_BLOCK],
        filled: 0,
    };
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut hashing, value);
    hashing.sha.update(&hashing.block[..hashing.filled]);
    hex(&hashing.sha.finalize())
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
