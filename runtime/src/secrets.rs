//! Secret values for local agents and alert webhooks. Specs only reference
//! secrets; the embedded target reads values from a YAML file kept out of
//! git (`.cortex/secrets.yaml` beside the state store: `name: {key: value}`,
//! or `name: value` for single-value secrets such as webhook HMAC keys) or
//! from the environment (`CORTEX_SECRET_<NAME>_<KEY>`, or
//! `CORTEX_SECRET_<NAME>`, upper-cased, other characters as `_`), which wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

/// The secrets file's name, beside the state store.
pub const SECRETS_FILE: &str = "secrets.yaml";

/// Loaded secret values.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    file: Option<PathBuf>,
    values: BTreeMap<String, Value>,
}

/// The environment variable naming a secret (and key).
pub fn env_name(name: &str, key: Option<&str>) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    match key {
        Some(k) => format!("CORTEX_SECRET_{}_{}", clean(name), clean(k)),
        None => format!("CORTEX_SECRET_{}", clean(name)),
    }
}

impl Secrets {
    /// Reads `dir/secrets.yaml` when it exists.
    pub fn load(dir: &Path) -> Result<Secrets, String> {
        let file = dir.join(SECRETS_FILE);
        let Ok(text) = std::fs::read_to_string(&file) else {
            return Ok(Secrets {
                file: Some(file),
                values: BTreeMap::new(),
            });
        };
        let name: Arc<str> = Arc::from(file.display().to_string());
        let docs = cortex_compiler::parse_yaml_json(&name, &text)
            .map_err(|d| format!("{}: {}", file.display(), d.message))?;
        let values = match docs.into_iter().next() {
            Some(Value::Object(map)) => map.into_iter().collect(),
            None | Some(Value::Null) => BTreeMap::new(),
            Some(_) => {
                return Err(format!(
                    "{}: expected a mapping of secret names",
                    file.display()
                ));
            }
        };
        Ok(Secrets {
            file: Some(file),
            values,
        })
    }

    /// Secrets from a map (tests).
    pub fn from_values(values: BTreeMap<String, Value>) -> Secrets {
        Secrets { file: None, values }
    }

    /// The value of `name`/`key` (a `secretRef: {name, key}`).
    pub fn get(&self, name: &str, key: &str) -> Result<String, String> {
        if let Ok(v) = std::env::var(env_name(name, Some(key))) {
            return Ok(v);
        }
        self.values
            .get(name)
            .and_then(|v| v.get(key))
            .and_then(scalar)
            .ok_or_else(|| self.missing(&format!("{name}/{key}"), &env_name(name, Some(key))))
    }

    /// The value of a single-value secret (`secretRef: name`).
    pub fn get_single(&self, name: &str) -> Result<String, String> {
        if let Ok(v) = std::env::var(env_name(name, None)) {
            return Ok(v);
        }
        self.values
            .get(name)
            .and_then(scalar)
            .ok_or_else(|| self.missing(name, &env_name(name, None)))
    }

    fn missing(&self, what: &str, var: &str) -> String {
        match &self.file {
            Some(f) => format!("secret {what} is not set (in {} or ${var})", f.display()),
            None => format!("secret {what} is not set (${var})"),
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
