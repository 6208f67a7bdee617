//! Bearer tokens: how they are made, how the runtime checks them without
//! keeping them (it holds their SHA-256), where the operator's token lives
//! (a 0600 file in the state directory; the store holds only its hash), and
//! how the runtime proves who it is before a client sends it the operator
//! token (an HMAC of the client's nonce under the token's hash, which only
//! the runtime that wrote the store knows).

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::store::{Op, Store, StoreError};

/// Meta key of the operator token's SHA-256 (hex).
pub const OPERATOR_TOKEN_HASH: &str = "operator.token.sha256";
/// Meta key under which earlier versions kept the operator token in clear;
/// removed when found.
const LEGACY_OPERATOR_TOKEN: &str = "operator.token";
/// The operator token's file in the state directory.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

/// The SHA-256 of a token: what the broker keeps to check tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Lowercase hex.
    pub fn to_hex(self) -> String {
        hex(&self.0)
    }

    /// From lowercase or uppercase hex; `None` unless 64 hex digits.
    pub fn from_hex(text: &str) -> Option<TokenHash> {
        let bytes = unhex(text.trim())?;
        Some(TokenHash(bytes.try_into().ok()?))
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex; `None` unless every pair is hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to time and address entropy mixed by SHA-256.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&Sha256::digest(seed.as_bytes()));
    }
    hex(&bytes)
}

/// The HMAC of an identity challenge: `nonce` keyed by the operator
/// token's hash, in a domain of its own.
fn identity_mac(operator: &TokenHash, nonce: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&operator.0).expect("HMAC takes any key length");
    mac.update(b"cortex-runtime-identity:");
    mac.update(nonce.as_bytes());
    mac
}

/// The runtime's answer to an identity challenge: hex HMAC-SHA256 of
/// `nonce` keyed by the operator token's hash.
pub fn identity_proof(operator: &TokenHash, nonce: &str) -> String {
    hex(&identity_mac(operator, nonce).finalize().into_bytes())
}

/// Whether `proof` answers `nonce` for the holder of `token` (constant time).
pub fn verify_identity(token: &str, nonce: &str, proof: &str) -> bool {
    unhex(proof.trim()).is_some_and(|bytes| {
        identity_mac(&TokenHash::of(token), nonce)
            .verify_slice(&bytes)
            .is_ok()
    })
}

/// Where the operator token of the store in `state_dir` is kept.
pub fn operator_token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(OPERATOR_TOKEN_FILE)
}

/// The operator token as the CLI finds it: the file's token when the
/// store's hash matches it (`None` otherwise: no runtime ran on this store,
/// or the file belongs to another store).
pub async fn read_operator_token(
    state_dir: &Path,
    store: &dyn Store,
) -> Result<Option<String>, StoreError> {
    let Some(hash) = store
        .meta(OPERATOR_TOKEN_HASH)
        .await?
        .and_then(|h| TokenHash::from_hex(&h))
    else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(operator_token_path(state_dir))
        .ok()
        .map(|t| t.trim().to_string());
    Ok(token.filter(|t| TokenHash::of(t) == hash))
}

/// The operator token the runtime uses: the one in the state directory when
/// the store's hash matches it, else a new one (written to the file, 0600,
/// and its hash to the store). A clear token left in the store by an
/// earlier version is removed.
pub async fn operator_token(state_dir: &Path, store: &dyn Store) -> Result<String, StoreError> {
    if store.meta(LEGACY_OPERATOR_TOKEN).await?.is_some() {
        store
            .write(vec![Op::Meta {
                key: LEGACY_OPERATOR_TOKEN.into(),
                value: None,
            }])
            .await?;
    }
    if let Some(token) = read_operator_token(state_dir, store).await? {
        return Ok(token);
    }
    let token = new_token();
    let path = operator_token_path(state_dir);
    crate::private_files::create_dir(state_dir)
        .and_then(|()| crate::private_files::write(&path, token.as_bytes()))
        .map_err(|e| StoreError::Backend(format!("cannot write {}: {e}", path.display())))?;
    store
        .write(vec![Op::Meta {
            key: OPERATOR_TOKEN_HASH.into(),
            value: Some(TokenHash::of(&token).to_hex()),
        }])
        .await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hash_round_trips_through_hex() {
        let h = TokenHash::of("secret");
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("abc"), None);
        // Known answer: SHA-256 of "secret".
        assert_eq!(
            h.to_hex(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }

    #[test]
    fn only_the_holder_of_the_token_proves_its_identity() {
        let hash = TokenHash::of("operator-token");
        let proof = identity_proof(&hash, "nonce-1");
        assert!(verify_identity("operator-token", "nonce-1", &proof));
        assert!(!verify_identity("operator-token", "nonce-2", &proof));
        assert!(!verify_identity("another-token", "nonce-1", &proof));
        assert!(!verify_identity("operator-token", "nonce-1", "zz"));
        let impostor = identity_proof(&TokenHash::of("guess"), "nonce-1");
        assert!(!verify_identity("operator-token", "nonce-1", &impostor));
    }
}
