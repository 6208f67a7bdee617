//! Secret masking. Objects are masked before they are compared, so no
//! rendering of a plan can print a secret: the values under a Secret's
//! `data`/`stringData`, secret references (`secretKeyRef`, `secretRef`, a
//! pod volume's `secret`), and every value the spec schema marks
//! `x-cortex-secret` become `(secret 1a2b3c4d)`.
//!
//! The short hash is keyed with a random key per plan: the two sides of one
//! plan hash alike (so a reviewer sees *that* a value changed), while the
//! hash of a guessable value cannot be looked up or compared across plans.

use cortex_compiler::hash::canonical_json;
use cortex_compiler::node::{Node, Value as NodeValue};
use cortex_compiler::resolve::Resolved;
use cortex_compiler::schema::{Cursor, Schemas};
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::plan::{PlanObject, Realm};

/// Keys whose values are secret references.
const SECRET_REFERENCE_KEYS: [&str; 2] = ["secretKeyRef", "secretRef"];

/// Masks secret values.
#[derive(Clone, Debug)]
pub struct Masker {
    key: [u8; 16],
    /// Every value a spec schema marks secret (each once).
    marked: Vec<Value>,
}

impl Masker {
    /// A masker with a fresh random key.
    pub fn random() -> Masker {
        let mut key = [0u8; 16];
        if getrandom::fill(&mut key).is_err() {
            // No OS randomness: fall back to std's randomly seeded hasher.
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id().into());
            key[..8].copy_from_slice(&h.finish().to_le_bytes());
        }
        Masker::with_key(key)
    }

    /// A masker with a fixed key (tests and reproducible output).
    pub fn with_key(key: [u8; 16]) -> Masker {
        Masker {
            key,
            marked: Vec::new(),
        }
    }

    /// Learns the values the schemas mark secret in a project's specs, so
    /// that they are masked wherever rendering copied them.
    pub fn learn(&mut self, resolved: &Resolved) {
        let schemas = Schemas::get();
        // Each spec is read on its own: over every core.
        let found: Vec<Vec<Value>> = resolved
            .specs
            .par_iter()
            .with_min_len(64)
            .map(|spec| {
                let mut found = Vec::new();
                collect_marked(&spec.node, schemas.cursor(spec.kind), &mut found);
                found
            })
            .collect();
        for value in found.into_iter().flatten() {
            if !self.marked.contains(&value) {
                self.marked.push(value);
            }
        }
    }

    /// `(secret 1a2b3c4d)` for a value.
    pub fn token(&self, value: &Value) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(canonical_json(value).as_bytes());
        let digest = hasher.finalize();
        let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("(secret {hex})")
    }

    /// The object's body with every secret value replaced by its token.
    pub fn mask(&self, object: &PlanObject) -> Value {
        let mut body = Value::clone(&object.body);
        let is_secret_kind = object.id.target == Realm::Kubernetes
            && object.id.group.is_empty()
            && object.id.kind == "Secret";
        if is_secret_kind {
            for section in ["data", "stringData"] {
                if let Some(Value::Object(map)) = body.get_mut(section) {
                    for value in map.values_mut() {
                        *value = Value::String(self.token(value));
                    }
                }
            }
        }
        self.mask_tree(&mut body, None);
        body
    }

    fn mask_tree(&self, value: &mut Value, key: Option<&str>) {
        // Compared by value: serializing every node to look it up would make
        // masking quadratic in the depth of an object.
        if self.marked.contains(value) {
            *value = Value::String(self.token(value));
            return;
        }
        match value {
            Value::Object(map) => {
                let is_volume = map.contains_key("name") && map.contains_key("secret");
                for (k, v) in map.iter_mut() {
                    let secret = SECRET_REFERENCE_KEYS.contains(&k.as_str())
                        || (is_volume && key == Some("volumes") && k == "secret");
                    if secret {
                        *v = Value::String(self.token(v));
                    } else {
                        self.mask_tree(v, Some(k));
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.mask_tree(item, key);
                }
            }
            _ => {}
        }
    }
}

fn collect_marked(node: &Node, cursor: Cursor<'_>, out: &mut Vec<Value>) {
    if !cursor.holds_secret() {
        return;
    }
    if cursor.is_secret() {
        let value = node.to_json();
        if !out.contains(&value) {
            out.push(value);
        }
        return;
    }
    match &node.value {
        NodeValue::Map(map) => {
            for entry in map {
                collect_marked(&entry.value, cursor.property(&entry.key), out);
            }
        }
        NodeValue::Seq(items) => {
            for item in items {
                collect_marked(item, cursor.items(), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::ObjectId;

    fn object(kind: &str, body: Value) -> PlanObject {
        PlanObject {
            id: ObjectId {
                target: Realm::Kubernetes,
                group: String::new(),
                kind: kind.into(),
                namespace: Some("ns".into()),
                name: "x".into(),
            },
            api_version: Some("v1".into()),
            spec: None,
            body: body.into(),
        }
    }

    #[test]
    fn secret_data_and_references_are_masked() {
        let masker = Masker::with_key([7; 16]);
        let secret = masker.mask(&object(
            "Secret",
            json!({"data": {"k": "aHVudGVyMg=="}, "stringData": {"p": "hunter2"}, "metadata": {"name": "x"}}),
        ));
        let text = secret.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg=="),
            "{text}"
        );
        assert!(
            secret["data"]["k"]
                .as_str()
                .unwrap()
                .starts_with("(secret ")
        );
        assert_eq!(secret["metadata"]["name"], "x");

        let pod = masker.mask(&object(
            "Deployment",
            json!({"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api"}}}],
                   "volumes": [{"name": "v", "secret": {"secretName": "tls"}}]}),
        ));
        let text = pod.to_string();
        assert!(!text.contains("keys") && !text.contains("tls"), "{text}");
        assert_eq!(pod["env"][0]["name"], "K");
    }

    #[test]
    fn tokens_are_keyed() {
        let a = Masker::with_key([1; 16]).token(&json!("hunter2"));
        let b = Masker::with_key([2; 16]).token(&json!("hunter2"));
        assert_ne!(a, b);
        assert_eq!(a, Masker::with_key([1; 16]).token(&json!("hunter2")));
        assert_ne!(a, Masker::with_key([1; 16]).token(&json!("hunter3")));
    }

    /// Every secret value under `node`, looking everywhere.
    fn every_marked(node: &Node, cursor: Cursor<'_>, out: &mut Vec<Value>) {
        if cursor.is_secret() && !out.contains(&node.to_json()) {
            out.push(node.to_json());
        }
        match &node.value {
            NodeValue::Map(map) => map
                .iter()
                .for_each(|e| every_marked(&e.value, cursor.property(&e.key), out)),
            NodeValue::Seq(items) => items
                .iter()
                .for_each(|item| every_marked(item, cursor.items(), out)),
            _ => {}
        }
    }

    #[test]
    fn learning_skips_only_what_holds_no_secret() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/support-desk");
        let source = cortex_compiler::WorkTree::open(&dir).expect("example");
        let resolved = cortex_compiler::compile(&source, &Default::default())
            .resolved
            .expect("compiles");
        let mut masker = Masker::with_key([3; 16]);
        masker.learn(&resolved);
        let mut everywhere = Vec::new();
        for spec in &resolved.specs {
            every_marked(
                &spec.node,
                Schemas::get().cursor(spec.kind),
                &mut everywhere,
            );
        }
        assert!(
            everywhere.contains(&json!({"name": "crm", "key": "token"})),
            "{everywhere:?}"
        );
        assert!(everywhere.contains(&json!({"name": "llm-keys", "key": "api-key"})));
        let mut learned = masker.marked.clone();
        learned.sort_by_key(|v| v.to_string());
        everywhere.sort_by_key(|v| v.to_string());
        assert_eq!(learned, everywhere);
        let agent = Schemas::get().cursor(cortex_compiler::Kind::Agent);
        assert!(agent.holds_secret());
        assert!(!agent.property("metadata").holds_secret());
    }
}
