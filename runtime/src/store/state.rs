//! Agent state as the stores keep it: versioned documents by scope and key,
//! written with compare-and-swap, and each scope's change log, from which
//! watches read (etcd's model: one revision counter per scope, a key's
//! version is the scope revision of its last write).
//!
//! The rule every store applies inside its own atomic step is here, once
//! ([`StateWrite::decide`]); the stores only keep the data.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Changes a scope keeps for watches when its spec does not say.
pub const DEFAULT_HISTORY: u64 = 10_000;

/// One key's current document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateEntry {
    /// The key.
    pub key: String,
    /// The value (any JSON).
    pub value: Value,
    /// The scope's revision at the key's last write: strictly increasing
    /// per key, never reused, and comparable with the watch's versions.
    pub version: u64,
    /// When it was written (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Who wrote it (an agent, or `cortex` for the operator).
    pub updated_by: String,
}

/// One change of a scope, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateChange {
    /// The scope's revision this change made.
    pub version: u64,
    /// The key.
    pub key: String,
    /// The new value; `None` when the key was deleted.
    pub value: Option<Value>,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Who.
    pub by: String,
}

/// A compare-and-swap write of one key ([`crate::store::Store::state_write`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StateWrite {
    /// The scope (`agents/triage`, or a declared `State`'s name).
    pub scope: String,
    /// The key.
    pub key: String,
    /// The new value; `None` deletes the key.
    pub value: Option<Value>,
    /// The version the key must have: `Some(0)` means it must not exist
    /// (create only); `None` writes whatever is there.
    pub if_version: Option<u64>,
    /// Who writes.
    pub by: String,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// How many changes of the scope its log keeps (older ones are
    /// dropped as this one is written).
    pub history: u64,
}

/// What a [`StateWrite`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum StateOutcome {
    /// Written (or deleted) as the scope's revision `version`.
    Written {
        /// The new version.
        version: u64,
    },
    /// `if_version` did not match: nothing was written; the key as it is
    /// (`None`: it does not exist).
    Conflict {
        /// The current document.
        current: Option<StateEntry>,
    },
    /// A delete of a key that does not exist (without `if_version`, or
    /// with `0`).
    Missing,
}

/// What a store does with a write, given the key's current document.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Write it as the next revision.
    Proceed,
    /// Answer this and write nothing.
    Refuse(StateOutcome),
}

impl StateWrite {
    /// The compare-and-swap rule, applied by every store inside its atomic
    /// step, with the key's document as the store holds it then.
    pub fn decide(&self, current: Option<&StateEntry>) -> Decision {
        let found = current.map_or(0, |c| c.version);
        match self.if_version {
            Some(wanted) if wanted != found => Decision::Refuse(StateOutcome::Conflict {
                current: current.cloned(),
            }),
            // Nothing to delete (with or without `ifVersion: 0`).
            _ if self.value.is_none() && current.is_none() => {
                Decision::Refuse(StateOutcome::Missing)
            }
            _ => Decision::Proceed,
        }
    }

    /// The revision below which the scope's log is dropped once this write
    /// is `version` (changes at or below it are gone).
    pub fn compacted_at(&self, version: u64) -> u64 {
        version.saturating_sub(self.history.max(1))
    }

    /// The change this write records as `version`.
    pub fn change(&self, version: u64) -> StateChange {
        StateChange {
            version,
            key: self.key.clone(),
            value: self.value.clone(),
            at_ms: self.at_ms,
            by: self.by.clone(),
        }
    }

    /// The document this write leaves as `version` (none for a delete).
    pub fn entry(&self, version: u64) -> Option<StateEntry> {
        self.value.as_ref().map(|value| StateEntry {
            key: self.key.clone(),
            value: value.clone(),
            version,
            updated_ms: self.at_ms,
            updated_by: self.by.clone(),
        })
    }
}

/// A scope's log after a version ([`crate::store::Store::state_changes`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateLog {
    /// The changes after the asked version, in version order (at most the
    /// asked number).
    pub changes: Vec<StateChange>,
    /// The scope's revision now (0: never written).
    pub head: u64,
    /// Changes at or below this version were dropped from the log: a watch
    /// from before it cannot be served without a gap.
    pub compacted: u64,
}

/// One scope's counters ([`crate::store::Store::state_scopes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeStats {
    /// The scope.
    pub scope: String,
    /// Its revision (the last change's version).
    pub version: u64,
    /// Keys it holds.
    pub keys: u64,
    /// The log is dropped at or below this version.
    pub compacted: u64,
}

impl ScopeStats {
    /// The counters after a change `version` that created (`+1`), deleted
    /// (`-1`) or replaced (`0`) a key, dropping the log at `compacted`.
    pub fn after(&self, version: u64, keys_delta: i64, compacted: u64) -> ScopeStats {
        ScopeStats {
            scope: self.scope.clone(),
            version,
            keys: self.keys.saturating_add_signed(keys_delta),
            compacted: self.compacted.max(compacted),
        }
    }
}

/// Every scope: the `declared` ones (zero counters until written) and
/// those `stored`, by name.
pub fn with_declared<'a>(
    declared: impl IntoIterator<Item = &'a String>,
    stored: Vec<ScopeStats>,
) -> Vec<ScopeStats> {
    let mut all: std::collections::BTreeMap<String, ScopeStats> = declared
        .into_iter()
        .map(|name| {
            let empty = ScopeStats {
                scope: name.clone(),
                ..ScopeStats::default()
            };
            (name.clone(), empty)
        })
        .collect();
    for stats in stored {
        all.insert(stats.scope.clone(), stats);
    }
    all.into_values().collect()
}

/// How a write changes the number of keys: `+1` creates, `-1` deletes.
pub fn keys_delta(existed: bool, write: &StateWrite) -> i64 {
    match (existed, write.value.is_some()) {
        (false, true) => 1,
        (true, false) => -1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(value: Option<Value>, if_version: Option<u64>) -> StateWrite {
        StateWrite {
            scope: "s".into(),
            key: "k".into(),
            value,
            if_version,
            by: "a".into(),
            at_ms: 1,
            history: 10,
        }
    }

    fn entry(version: u64) -> StateEntry {
        StateEntry {
            key: "k".into(),
            value: json!(1),
            version,
            updated_ms: 0,
            updated_by: "a".into(),
        }
    }

    #[test]
    fn compare_and_swap_rule() {
        let put = |v| write(Some(json!(2)), v);
        assert_eq!(put(None).decide(None), Decision::Proceed);
        assert_eq!(put(Some(0)).decide(None), Decision::Proceed);
        assert!(matches!(
            put(Some(0)).decide(Some(&entry(3))),
            Decision::Refuse(StateOutcome::Conflict { current: Some(_) })
        ));
        assert_eq!(put(Some(3)).decide(Some(&entry(3))), Decision::Proceed);
        assert!(matches!(
            put(Some(2)).decide(Some(&entry(3))),
            Decision::Refuse(StateOutcome::Conflict { .. })
        ));
        assert!(matches!(
            put(Some(2)).decide(None),
            Decision::Refuse(StateOutcome::Conflict { current: None })
        ));
        let delete = |v| write(None, v);
        assert_eq!(
            delete(None).decide(None),
            Decision::Refuse(StateOutcome::Missing)
        );
        assert_eq!(
            delete(Some(0)).decide(None),
            Decision::Refuse(StateOutcome::Missing)
        );
        assert_eq!(delete(None).decide(Some(&entry(3))), Decision::Proceed);
        assert_eq!(delete(Some(3)).decide(Some(&entry(3))), Decision::Proceed);
    }

    #[test]
    fn the_log_keeps_history_changes() {
        let w = write(Some(json!(1)), None);
        assert_eq!(w.compacted_at(5), 0);
        assert_eq!(w.compacted_at(25), 15);
    }
}
