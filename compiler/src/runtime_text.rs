//! The runtime configuration as a build's files need it: its small sections
//! as JSON, and each agent and workflow — most of a big project's config —
//! as its compact JSON text and content hash, made once from the typed
//! config, entry by entry over every core.
//!
//! From those texts come the runtime shards (cut, not serialized again),
//! the inventory's hashes and `runtime.json` (the texts made pretty). The
//! whole config is never a JSON tree in memory: each entry's tree lives only
//! while its text is written.

use std::io::{self, Write};

use rayon::prelude::*;
use serde_json::Value;

use crate::document::Kind;
use crate::hash::{canonical_hash, canonical_json, sha256_hex};
use crate::pretty_json;
use crate::runtime_config::{RuntimeConfig, each_entry};

/// The sections whose entries are kept as text.
pub const BIG_SECTIONS: [&str; 2] = ["agents", "workflows"];

/// The one of [`BIG_SECTIONS`] that holds the entries of `kind`.
pub fn section_of(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Agent => Some("agents"),
        Kind::Workflow => Some("workflows"),
        _ => None,
    }
}

/// The runtime configuration with its agents and workflows as text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeText {
    /// Everything but the entries of [`BIG_SECTIONS`] (there: empty maps).
    pub rest: Value,
    /// The entries of each of [`BIG_SECTIONS`], in name order.
    pub sections: Vec<(&'static str, Vec<EntryText>)>,
}

/// One entry of a big section.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryText {
    /// Its name (the key in its section).
    pub name: String,
    /// Its compact JSON, keys sorted: its canonical form.
    pub json: String,
    /// SHA-256 of `json`: its content hash.
    pub hash: String,
}

impl EntryText {
    /// The entry `name` with the value `value`.
    pub fn new(name: String, value: &Value) -> EntryText {
        let json = canonical_json(value);
        let hash = sha256_hex(json.as_bytes());
        EntryText { name, json, hash }
    }

    /// The entry `name` of the typed config. Its types declare their
    /// fields in the order of their JSON names, so the text serde_json
    /// writes for it is usually canonical already: that is checked
    /// ([`pretty_json::is_own_compact`]: every object's keys rising), and
    /// only an entry whose text is not goes through a JSON tree to be
    /// sorted.
    pub fn of_typed<T: serde::Serialize>(name: String, entry: &T) -> EntryText {
        match serde_json::to_string(entry) {
            Ok(json) if pretty_json::is_own_compact(&json) => {
                let hash = sha256_hex(json.as_bytes());
                EntryText { name, json, hash }
            }
            // Plain data with string keys always converts.
            _ => EntryText::new(name, &serde_json::to_value(entry).unwrap_or(Value::Null)),
        }
    }
}

impl RuntimeText {
    /// Made from the typed config, which it consumes.
    pub fn from_config(mut config: RuntimeConfig) -> RuntimeText {
        let agents = std::mem::take(&mut config.agents);
        let workflows = std::mem::take(&mut config.workflows);
        let rest = config.to_value();
        drop(config);
        let (agents, workflows) = rayon::join(
            || each_entry(agents, |name, entry| EntryText::of_typed(name, &entry)),
            || each_entry(workflows, |name, entry| EntryText::of_typed(name, &entry)),
        );
        RuntimeText {
            rest,
            sections: vec![("agents", agents), ("workflows", workflows)],
        }
    }

    /// Made from the config as JSON.
    pub fn from_value(runtime: &Value) -> RuntimeText {
        let mut rest = without_big_sections(runtime);
        let sections = map_big_entries(runtime, |name, value| {
            EntryText::new(name.to_string(), value)
        });
        for section in BIG_SECTIONS {
            if let (Some(map), Some(_)) = (rest.as_object_mut(), runtime.get(section)) {
                map.insert(section.to_string(), Value::Object(Default::default()));
            }
        }
        RuntimeText { rest, sections }
    }

    /// The entries of `section`, if it is one of [`BIG_SECTIONS`].
    pub fn entries(&self, section: &str) -> Option<&[EntryText]> {
        self.sections
            .iter()
            .find(|(name, _)| *name == section)
            .map(|(_, entries)| entries.as_slice())
    }

    /// How many entries `section` has.
    pub fn count(&self, section: &str) -> usize {
        match self.entries(section) {
            Some(entries) => entries.len(),
            None => self
                .rest
                .get(section)
                .and_then(Value::as_object)
                .map_or(0, |m| m.len()),
        }
    }

    /// The content hash of every entry of `section`, with its name.
    pub fn hashes(&self, section: &str) -> Vec<(&str, String)> {
        match self.entries(section) {
            Some(entries) => entries
                .iter()
                .map(|e| (e.name.as_str(), e.hash.clone()))
                .collect(),
            None => {
                let entries: Vec<(&String, &Value)> = self
                    .rest
                    .get(section)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .collect();
                entries
                    .par_iter()
                    .with_min_len(64)
                    .map(|(name, value)| (name.as_str(), canonical_hash(value)))
                    .collect()
            }
        }
    }

    /// Writes `runtime.json` (without its final line break) as
    /// [`pretty_json::write_pretty`] writes the whole config.
    pub fn write_pretty(&self, out: &mut dyn Write) -> io::Result<()> {
        let Some(members) = self.rest.as_object() else {
            return pretty_json::write_pretty(out, &self.rest);
        };
        if members.is_empty() {
            return out.write_all(b"{}");
        }
        out.write_all(b"{")?;
        for (i, (key, value)) in members.iter().enumerate() {
            out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
            pretty_json::member_key(out, key, 1)?;
            match self.entries(key) {
                Some(entries) => write_entries(out, entries)?,
                None => pretty_json::write_value_at(out, value, 1)?,
            }
        }
        out.write_all(b"\n}")
    }
}

/// A big section's entries as its pretty object, one level deep; each
/// entry made pretty on its own core.
fn write_entries(out: &mut dyn Write, entries: &[EntryText]) -> io::Result<()> {
    let texts: Vec<Vec<u8>> = entries
        .par_iter()
        .with_min_len(16)
        .map(|entry| {
            let mut text = Vec::with_capacity(entry.json.len() * 2);
            // Writing into a vector cannot fail.
            let _ = pretty_json::member_key(&mut text, &entry.name, 2);
            pretty_json::reindent(&entry.json, 2, &mut text);
            text
        })
        .collect();
    pretty_json::write_members(out, *b"{}", &texts, 1)
}

/// Each entry of each of [`BIG_SECTIONS`] of a config as JSON made into
/// a `T` by `into` (name and value), entries over every core, in name
/// order.
pub fn map_big_entries<'v, T: Send>(
    runtime: &'v Value,
    into: impl Fn(&'v str, &'v Value) -> T + Sync,
) -> Vec<(&'static str, Vec<T>)> {
    BIG_SECTIONS
        .iter()
        .map(|section| {
            let entries: Vec<(&String, &Value)> = runtime
                .get(*section)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .collect();
            let made = entries
                .par_iter()
                .with_min_len(64)
                .map(|(name, value)| into(name.as_str(), value))
                .collect();
            (*section, made)
        })
        .collect()
}

/// A copy of the config as JSON without [`BIG_SECTIONS`].
fn without_big_sections(runtime: &Value) -> Value {
    match runtime.as_object() {
        Some(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !BIG_SECTIONS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        None => runtime.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::EntryText;
    use crate::hash::canonical_json;
    use crate::runtime_config::*;

    /// An entry's text as its type writes it, checked for canonical form.
    fn written_as_it_stands<T: serde::Serialize>(entry: &T) -> String {
        let text = serde_json::to_string(entry).expect("serializes");
        assert!(
            crate::pretty_json::is_own_compact(&text),
            "fields out of the order of their JSON names: {text}"
        );
        text
    }

    /// Every field of an agent's and a workflow's entry set, so each type
    /// in them writes every key: their declared order is their keys'.
    #[test]
    fn entries_with_every_field_are_written_in_canonical_order() {
        let agent = AgentEntry {
            labels: BTreeMap::from([("team".to_string(), "a".to_string())]),
            subscribe: vec!["in".into()],
            publish: vec!["out".into()],
            local: Some(LocalRun {
                command: vec!["run".into()],
            }),
            health: Some(HealthEntry {
                check: Some(HealthCheck::Http {
                    path: Some("/healthz".into()),
                    port: PortRef::Name("http".into()),
                }),
                ..HealthEntry::default()
            }),
            config: json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": null}}),
            env: vec![EnvVar {
                name: "TOKEN".into(),
                value: Some(json!("x")),
                secret_ref: Some(SecretKeyRef {
                    name: "s".into(),
                    key: "k".into(),
                }),
            }],
            ports: vec![Port {
                name: "http".into(),
                port: Some(8080),
                protocol: Some("TCP".into()),
            }],
            ..AgentEntry::default()
        };
        let task = TaskEntry {
            agent: Some("a".into()),
            run: Some(RunCommand {
                command: vec!["true".into()],
            }),
            depends_on: vec!["first".into()],
            ancestors: vec!["first".into()],
            input: json!({"q": "$(first.output)", "p": 1}),
            ..TaskEntry::default()
        };
        let workflow = WorkflowEntry {
            triggers: vec![Trigger {
                name: "t".into(),
                topic: Some("in".into()),
                schedule: Some("* * * * *".into()),
                manual: Some(Manual {}),
            }],
            order: vec!["first".into(), "second".into()],
            tasks: BTreeMap::from([("second".to_string(), task)]),
            ..WorkflowEntry::default()
        };
        for (text, value) in [
            (written_as_it_stands(&agent), serde_json::to_value(&agent)),
            (
                written_as_it_stands(&workflow),
                serde_json::to_value(&workflow),
            ),
        ] {
            assert_eq!(text, canonical_json(&value.expect("converts")));
        }
        let taken = EntryText::of_typed("a".into(), &agent);
        assert_eq!(taken.json, written_as_it_stands(&agent));
        assert_eq!(taken.hash, crate::hash::sha256_hex(taken.json.as_bytes()));
    }

    /// A type whose fields are not in the order of their keys still gets
    /// its canonical text, through a JSON tree.
    #[test]
    fn an_entry_out_of_order_is_sorted() {
        #[derive(serde::Serialize)]
        struct OutOfOrder {
            zeta: u8,
            alpha: u8,
        }
        let taken = EntryText::of_typed("x".into(), &OutOfOrder { zeta: 1, alpha: 2 });
        assert_eq!(taken.json, r#"{"alpha":2,"zeta":1}"#);
    }
}
