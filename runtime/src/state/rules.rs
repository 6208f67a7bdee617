//! Who may read and write which state scope, and what its values must
//! look like: the `states` of runtime.json, compiled once per applied
//! revision (held by the broker's config, swapped with it).
//!
//! An agent owns `agents/<its name>` (read and write, no schema). A
//! declared scope (`State`) is read by its readers and writers and written
//! by its writers. The operator reads and writes every scope that exists.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cortex_compiler::runtime_config::{RuntimeConfig, defaults};

use crate::broker::Principal;
use crate::broker::config::ConfigError;

/// One declared scope's rules.
#[derive(Debug)]
pub struct ScopeRules {
    /// Agents that may read.
    pub readers: BTreeSet<String>,
    /// Agents that may write (and read).
    pub writers: BTreeSet<String>,
    /// Every value must satisfy it.
    pub schema: Option<jsonschema::Validator>,
    /// Changes kept for watches.
    pub history: u64,
}

/// What a call does to a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// get, list, watch.
    Read,
    /// put, delete.
    Write,
}

impl Access {
    /// As a verb for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// The scope as a call may use it.
#[derive(Clone, Debug)]
pub struct Granted {
    /// Its rules (`None` for an agent's own scope: no schema).
    pub rules: Option<Arc<ScopeRules>>,
    /// Changes kept for watches.
    pub history: u64,
}

/// Why a call may not use a scope.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such scope: not a declared `State`, nor `agents/<an agent>`.
    Unknown,
    /// The caller lacks the right.
    Forbidden,
}

/// Compiles the `states` of a runtime config.
pub fn compile(config: &RuntimeConfig) -> Result<HashMap<String, Arc<ScopeRules>>, ConfigError> {
    config
        .states
        .iter()
        .map(|(name, entry)| {
            let schema = match entry.schema.as_ref().filter(|s| !s.is_null()) {
                Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
                    ConfigError::StateSchema {
                        scope: name.clone(),
                        message: e.to_string(),
                    }
                })?),
                None => None,
            };
            let rules = ScopeRules {
                readers: entry.readers.iter().cloned().collect(),
                writers: entry.writers.iter().cloned().collect(),
                schema,
                history: entry.history.max(1),
            };
            Ok((name.clone(), Arc::new(rules)))
        })
        .collect()
}

/// Whether `who` may `access` `scope`, given the declared scopes and
/// whether an agent is known.
pub fn check(
    states: &HashMap<String, Arc<ScopeRules>>,
    is_agent: impl Fn(&str) -> bool,
    who: &Principal,
    scope: &str,
    access: Access,
) -> Result<Granted, Refusal> {
    if let Some(owner) = scope.strip_prefix("agents/") {
        if !is_agent(owner) {
            return Err(Refusal::Unknown);
        }
        return match who {
            Principal::Operator => Ok(own_scope()),
            Principal::Agent(a) if a == owner => Ok(own_scope()),
            Principal::Agent(_) => Err(Refusal::Forbidden),
        };
    }
    let rules = states.get(scope).ok_or(Refusal::Unknown)?;
    let allowed = match who {
        Principal::Operator => true,
        Principal::Agent(a) => {
            rules.writers.contains(a) || (access == Access::Read && rules.readers.contains(a))
        }
    };
    if !allowed {
        return Err(Refusal::Forbidden);
    }
    Ok(Granted {
        rules: Some(rules.clone()),
        history: rules.history,
    })
}

fn own_scope() -> Granted {
    Granted {
        rules: None,
        history: defaults::STATE_HISTORY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_compiler::runtime_config::StateScopeEntry;

    fn states() -> HashMap<String, Arc<ScopeRules>> {
        let mut config = RuntimeConfig::default();
        config.states.insert(
            "desk".into(),
            StateScopeEntry {
                readers: vec!["reader".into()],
                writers: vec!["writer".into()],
                ..StateScopeEntry::default()
            },
        );
        compile(&config).unwrap()
    }

    #[test]
    fn rights_follow_the_spec() {
        let states = states();
        let agent = |n: &str| Principal::Agent(n.into());
        let known = |a: &str| ["reader", "writer", "other"].contains(&a);
        let may = |who: &Principal, scope: &str, access| {
            check(&states, known, who, scope, access).map(|_| ())
        };
        assert_eq!(may(&agent("writer"), "desk", Access::Write), Ok(()));
        assert_eq!(may(&agent("writer"), "desk", Access::Read), Ok(()));
        assert_eq!(may(&agent("reader"), "desk", Access::Read), Ok(()));
        assert_eq!(
            may(&agent("reader"), "desk", Access::Write),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            may(&agent("other"), "desk", Access::Read),
            Err(Refusal::Forbidden)
        );
        assert_eq!(may(&agent("other"), "agents/other", Access::Write), Ok(()));
        assert_eq!(
            may(&agent("other"), "agents/reader", Access::Read),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            may(&agent("other"), "agents/ghost", Access::Read),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            may(&agent("other"), "nowhere", Access::Read),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            may(&Principal::Operator, "agents/reader", Access::Write),
            Ok(())
        );
        assert_eq!(may(&Principal::Operator, "desk", Access::Write), Ok(()));
    }
}
