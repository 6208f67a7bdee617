//! The runtime configuration as a diff compares it: its small sections as
//! JSON, and each agent and workflow entry behind an `Arc`.
//!
//! An entry is made from its spec alone, so where a spec is the same value
//! in both revisions of a diff, the second render takes the first one's
//! entry instead of building it again ([`crate::render::memo`]); the two
//! sides then share it, and the plan compares it by pointer. Each entry's
//! compact JSON is made with it, once, so that the shards are cut from
//! texts and a taken entry's text is taken with it.

use std::sync::Arc;

use serde_json::Value;

use crate::hash::canonical_json;
use crate::render::runtime::{shard_sections, shards_from};
use crate::runtime_config::{RuntimeConfig, entries_as};

/// An agent's or workflow's entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Its value.
    pub value: Arc<Value>,
    /// Its compact JSON, keys sorted (what the shards hold).
    pub json: Arc<str>,
}

impl Entry {
    /// The entry holding `value`.
    pub fn new(value: Value) -> Entry {
        Entry {
            json: canonical_json(&value).into(),
            value: Arc::new(value),
        }
    }
}

/// An entry taken from another render: its section, name and entry.
pub type Taken = (&'static str, String, Entry);

/// A section's entries, by name, in name order.
pub type Entries = Vec<(String, Entry)>;

/// The runtime configuration with its agents and workflows shared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedRuntime {
    /// Everything but the agents' and workflows' entries (there: empty
    /// maps).
    pub rest: Value,
    /// The entries of agents and workflows, in name order.
    pub sections: Vec<(&'static str, Entries)>,
}

impl SharedRuntime {
    /// Made from the typed config, which it consumes, and the entries
    /// `taken` from another render (the config has none of those).
    pub fn from_config(mut config: RuntimeConfig, taken: Vec<Taken>) -> SharedRuntime {
        let agents = std::mem::take(&mut config.agents);
        let workflows = std::mem::take(&mut config.workflows);
        let rest = config.to_value();
        drop(config);
        let shared = |name, value| (name, Entry::new(value));
        let (mut agents, mut workflows) = rayon::join(
            || entries_as(agents, shared),
            || entries_as(workflows, shared),
        );
        for (section, name, value) in taken {
            match section {
                "agents" => agents.push((name, value)),
                _ => workflows.push((name, value)),
            }
        }
        agents.sort_by(|a, b| a.0.cmp(&b.0));
        workflows.sort_by(|a, b| a.0.cmp(&b.0));
        SharedRuntime {
            rest,
            sections: vec![("agents", agents), ("workflows", workflows)],
        }
    }

    /// Every entry of agents and workflows, shared.
    pub fn entries(&self) -> Vec<Taken> {
        self.sections
            .iter()
            .flat_map(|(section, entries)| {
                entries
                    .iter()
                    .map(move |(name, value)| (*section, name.clone(), value.clone()))
            })
            .collect()
    }

    /// The entry `name` of `section` (`agents` or `workflows`).
    pub fn entry(&self, section: &str, name: &str) -> Option<&Entry> {
        let (_, entries) = self.sections.iter().find(|(s, _)| *s == section)?;
        let at = entries
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()?;
        Some(&entries[at].1)
    }

    /// Its shards' compact JSON, cut from the entries' texts
    /// ([`crate::render::runtime::shards`]).
    pub fn shards(&self, limit: usize) -> Vec<String> {
        let sections = shard_sections(&self.sections, |(name, entry)| {
            (name.as_str(), &*entry.json)
        });
        shards_from(&self.rest, &sections, limit)
    }
}
