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
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(Sha256::new());
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut hashing, value);
    hex(&hashing.0.finalize())
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
