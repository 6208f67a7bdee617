//! Who may call `cortex serve`'s API. Callers are the tokens of `--tokens
//! FILE` — YAML, a list of `{name, sha256, groups}` (only each token's
//! SHA-256 is kept, never the token) — and the operator token (always in
//! the `admin` group). What they may do comes from the synced project's
//! AccessPolicy `bindings`: groups and token names get roles, whose
//! `rules` list resources (`sync`, `status`, `history`, `workflows/NAME`…,
//! `*` at the end of a pattern matching any rest) and verbs (`get`,
//! `sync`…). Members of `admin` may do everything; a project without an
//! AccessPolicy allows nobody else.

use std::path::Path;
use std::sync::Arc;

use cortex_compiler::node::Node;
use cortex_runtime::tokens::{TokenHash, unhex};
use serde_json::Value;

/// Who called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`operator` for the operator token).
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
}

/// The group whose members may do everything.
pub const ADMIN: &str = "admin";

/// The tokens `serve` accepts.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<(TokenHash, Caller)>,
}

impl Tokens {
    /// Only the operator token.
    pub fn operator_only(operator: TokenHash) -> Tokens {
        Tokens {
            entries: vec![(
                operator,
                Caller {
                    name: "operator".into(),
                    groups: vec![ADMIN.into()],
                },
            )],
        }
    }

    /// Adds the tokens of `path` (`--tokens`); an entry that does not have
    /// the expected shape is refused, naming its line.
    pub fn load(mut self, path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
        let file: Arc<str> = Arc::from(path.display().to_string());
        let documents = cortex_compiler::parse_yaml(&file, &text)
            .map_err(|d| format!("{}: not YAML: {}", path.display(), d.message))?;
        let Some(list) = documents.first() else {
            return Ok(self);
        };
        let Some(items) = list.as_seq() else {
            return Err(format!(
                "{}:{}: expected a list of {{name, sha256, groups}}",
                path.display(),
                list.span().line
            ));
        };
        for item in items {
            let at = |what: &str| format!("{}:{}: {what}", path.display(), item.span().line);
            let name = item
                .str_at(&["name"])
                .filter(|n| !n.is_empty())
                .ok_or_else(|| at("an entry without a `name`"))?;
            let hash = item
                .str_at(&["sha256"])
                .and_then(unhex)
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    at(&format!(
                        "`{name}`: `sha256` must be the token's SHA-256 in hex (64 characters)"
                    ))
                })?;
            let groups = match item.get("groups") {
                None => Vec::new(),
                Some(groups) => groups
                    .as_seq()
                    .and_then(|g| g.iter().map(|g| g.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| at(&format!("`{name}`: `groups` must be a list of names")))?,
            };
            if let Some(extra) = item.as_map().and_then(|m| {
                m.iter()
                    .find(|e| !["name", "sha256", "groups"].contains(&e.key.as_str()))
            }) {
                return Err(at(&format!(
                    "`{name}`: unknown field `{}` (an entry has name, sha256, groups)",
                    extra.key
                )));
            }
            self.entries.push((
                TokenHash(hash),
                Caller {
                    name: name.to_string(),
                    groups,
                },
            ));
        }
        Ok(self)
    }

    /// The caller holding `token`.
    pub fn caller(&self, token: &str) -> Option<&Caller> {
        let hash = TokenHash::of(token);
        self.entries
            .iter()
            .find(|(h, _)| *h == hash)
            .map(|(_, c)| c)
    }
}

#[derive(Clone, Debug, Default)]
struct Rule {
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// The roles and bindings of a project's AccessPolicies.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// Role → its rules.
    roles: Vec<(String, Vec<Rule>)>,
    /// (role, group or token name) pairs: `group:NAME` or `token:NAME`.
    bindings: Vec<(String, String)>,
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Policies {
    /// The policies of the resolved AccessPolicy specs (their `spec`s as JSON).
    pub fn from_specs(specs: &[Value]) -> Policies {
        let mut policies = Policies::default();
        for spec in specs {
            for role in spec["roles"].as_array().into_iter().flatten() {
                let rules = role["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| Rule {
                        resources: strings(&r["resources"]),
                        verbs: strings(&r["verbs"]),
                    })
                    .collect();
                if let Some(name) = role["name"].as_str() {
                    policies.roles.push((name.to_string(), rules));
                }
            }
            for binding in spec["bindings"].as_array().into_iter().flatten() {
                let Some(role) = binding["role"].as_str() else {
                    continue;
                };
                for subject in binding["subjects"].as_array().into_iter().flatten() {
                    if let Some(g) = subject["group"].as_str() {
                        policies.bindings.push((role.into(), format!("group:{g}")));
                    }
                    if let Some(t) = subject["token"].as_str() {
                        policies.bindings.push((role.into(), format!("token:{t}")));
                    }
                }
            }
        }
        policies
    }

    /// The AccessPolicy specs of a resolved project.
    pub fn from_resolved(resolved: &cortex_compiler::Resolved) -> Policies {
        let specs: Vec<Value> = resolved
            .specs
            .iter()
            .filter(|s| s.kind == cortex_compiler::Kind::AccessPolicy)
            .filter_map(|s| s.spec().map(Node::to_json))
            .collect();
        Policies::from_specs(&specs)
    }

    /// Whether `caller` may `verb` `resource`.
    pub fn allows(&self, caller: &Caller, resource: &str, verb: &str) -> bool {
        if caller.groups.iter().any(|g| g == ADMIN) {
            return true;
        }
        let subjects: Vec<String> = caller
            .groups
            .iter()
            .map(|g| format!("group:{g}"))
            .chain(std::iter::once(format!("token:{}", caller.name)))
            .collect();
        self.bindings
            .iter()
            .filter(|(_, subject)| subjects.contains(subject))
            .filter_map(|(role, _)| self.roles.iter().find(|(name, _)| name == role))
            .flat_map(|(_, rules)| rules)
            .any(|rule| {
                rule.verbs.iter().any(|v| v == verb || v == "*")
                    && rule.resources.iter().any(|r| matches(r, resource))
            })
    }
}

/// `pattern` (`workflows/*`, `sync`, `*`) against `resource`.
fn matches(pattern: &str, resource: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => resource.starts_with(prefix),
        None => pattern == resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(name: &str, groups: &[&str]) -> Caller {
        Caller {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn roles_come_from_bindings_of_groups_and_token_names() {
        let policies = Policies::from_specs(&[json!({
            "roles": [
                {"name": "syncer", "rules": [{"resources": ["sync"], "verbs": ["sync", "get"]}]},
                {"name": "viewer", "rules": [{"resources": ["status", "history"], "verbs": ["get"]}]}
            ],
            "bindings": [
                {"role": "syncer", "subjects": [{"token": "ci-bot"}]},
                {"role": "viewer", "subjects": [{"group": "support"}]}
            ]
        })]);
        let bot = caller("ci-bot", &[]);
        let reader = caller("ada", &["support"]);
        assert!(policies.allows(&bot, "sync", "sync"));
        assert!(!policies.allows(&bot, "status", "get"));
        assert!(policies.allows(&reader, "status", "get"));
        assert!(!policies.allows(&reader, "sync", "sync"));
        assert!(policies.allows(&caller("root", &[ADMIN]), "sync", "sync"));
        assert!(!Policies::default().allows(&reader, "status", "get"));
        assert!(matches("workflows/*", "workflows/ticket-pipeline"));
        assert!(!matches("workflows/*", "agents/triage"));
    }

    #[test]
    fn a_tokens_file_is_read_and_a_bad_entry_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let hash = cortex_runtime::tokens::hex(&TokenHash::of("s3cret").0);
        std::fs::write(
            &path,
            format!("- {{ name: ci-bot, sha256: {hash}, groups: [deployers] }}\n"),
        )
        .unwrap();
        let tokens = Tokens::default().load(&path).expect("loads");
        assert_eq!(tokens.caller("s3cret").unwrap().name, "ci-bot");
        assert!(tokens.caller("other").is_none());
        std::fs::write(
            &path,
            format!("- {{ name: ci-bot, sha256: {hash} }}\n- {{ name: broken, sha256: abc }}\n"),
        )
        .unwrap();
        let err = Tokens::default().load(&path).unwrap_err();
        assert!(err.contains("tokens.yaml:2:"), "{err}");
        assert!(err.contains("`broken`"), "{err}");
    }
}
