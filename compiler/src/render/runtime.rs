//! `runtime.json`: what the runtime loads — topics, subscriptions and
//! publish rights per agent, health checks, alert rules, access policies,
//! and workflows compiled to DAGs (topological order, ancestors, resolved
//! defaults). Durations are milliseconds; every default is filled in.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde_json::{Value, json};

use crate::document::Kind;
use crate::hash::canonical_json;
use crate::node::{Node, from_node};
use crate::resolve::{Resolved, ResolvedSpec};
use crate::runtime_config::{
    AgentEntry, AlertRuleEntry, Backoff, Delivery, HealthEntry, Inbox, Recovery, Retries,
    RuntimeConfig, StateScopeEntry, TaskEntry, TopicEntry, WorkflowEntry,
};
use crate::runtime_text::{BIG_SECTIONS, RuntimeText, map_big_entries};
use crate::validate::formats::parse_duration_ms;
use crate::validate::pools::max_replicas;
use crate::validate::workflow::dag;

/// Most compact JSON one runtime ConfigMap holds (Kubernetes caps an object
/// at 1 MiB; the rest is left for metadata).
pub const SHARD_BYTES: usize = 768 * 1024;

pub use crate::runtime_config::{FORMAT_VERSION, defaults};

fn ms(value: Option<&Node>, default: u64) -> u64 {
    value
        .and_then(Node::as_str)
        .and_then(|s| parse_duration_ms(s).ok())
        .unwrap_or(default)
}

/// A value of the (validated) spec as the type the runtime reads, or the
/// default when absent. It is read from the spec's nodes as it would be
/// from their JSON ([`from_node`]), without making the JSON.
fn typed<'a, T: serde::Deserialize<'a>>(value: Option<&'a Node>, default: T) -> T {
    value.and_then(|v| from_node(v).ok()).unwrap_or(default)
}

/// A value of the spec as JSON (where the runtime keeps it as written).
fn as_json(value: Option<&Node>) -> Option<Value> {
    value.map(Node::to_json)
}

fn body(spec: &ResolvedSpec) -> Value {
    spec.spec().map(Node::to_json).unwrap_or_else(|| json!({}))
}

fn backoff(value: Option<&Node>) -> Backoff {
    let base = Backoff::default();
    let Some(b) = value else {
        return base;
    };
    Backoff {
        initial_ms: ms(b.get("initial"), base.initial_ms),
        max_ms: ms(b.get("max"), base.max_ms),
        multiplier: typed(b.get("multiplier"), base.multiplier),
    }
}

fn delivery(value: Option<&Node>) -> Delivery {
    let base = Delivery::default();
    Delivery {
        max_attempts: typed(value.and_then(|d| d.get("maxAttempts")), base.max_attempts),
        ack_timeout_ms: ms(value.and_then(|d| d.get("ackTimeout")), base.ack_timeout_ms),
    }
}

/// Builds the runtime configuration of a validated project (as JSON with
/// sorted keys: runtime.json).
pub fn runtime_config(resolved: &Resolved) -> Value {
    typed_runtime_config(resolved).into_value()
}

/// Builds the runtime configuration of a validated project.
pub fn typed_runtime_config(resolved: &Resolved) -> RuntimeConfig {
    typed_runtime_config_except(resolved, &|_| false)
}

/// [`typed_runtime_config`] without the entries of the agents and
/// workflows `taken` says are taken from elsewhere (a previous render of
/// the same specs: an entry is made from its spec alone).
pub fn typed_runtime_config_except(
    resolved: &Resolved,
    taken: &(dyn Fn(&ResolvedSpec) -> bool + Sync),
) -> RuntimeConfig {
    let of = |kind: Kind| resolved.specs.iter().filter(move |s| s.kind == kind);
    let agent_specs: Vec<&ResolvedSpec> = of(Kind::Agent).collect();
    let mut subscriptions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for spec in &agent_specs {
        for topic in spec
            .spec()
            .and_then(|s| s.get("subscribe"))
            .and_then(Node::as_seq)
            .into_iter()
            .flatten()
            .filter_map(Node::as_str)
        {
            subscriptions
                .entry(topic.to_string())
                .or_default()
                .insert(spec.name.clone());
        }
    }
    // Entries are independent: build them over every core.
    let agents: BTreeMap<String, AgentEntry> = agent_specs
        .par_iter()
        .with_min_len(64)
        .filter(|spec| !taken(spec))
        .map(|spec| (spec.name.clone(), agent(spec)))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    let topics: BTreeMap<String, TopicEntry> = of(Kind::Topic)
        .map(|spec| {
            let b = spec.spec();
            let at = |key: &str| b.and_then(|b| b.get(key));
            let base = TopicEntry::default();
            let entry = TopicEntry {
                ordering: typed(at("ordering"), base.ordering),
                retention_ms: ms(at("retention"), base.retention_ms),
                delivery: delivery(at("delivery")),
                dead_letter: typed(at("deadLetter"), None),
                schema: as_json(at("schema")),
                subscribers: subscriptions
                    .get(&spec.name)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
            };
            (spec.name.clone(), entry)
        })
        .collect();
    let workflow_specs: Vec<&ResolvedSpec> = of(Kind::Workflow).collect();
    let workflows: BTreeMap<String, WorkflowEntry> = workflow_specs
        .par_iter()
        .with_min_len(16)
        .filter(|spec| !taken(spec))
        .map(|spec| (spec.name.clone(), workflow(spec)))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    let access_policies: BTreeMap<String, Value> = of(Kind::AccessPolicy)
        .map(|s| (s.name.clone(), body(s)))
        .collect();
    let alert_rules: BTreeMap<String, AlertRuleEntry> = of(Kind::AlertRule)
        .filter_map(|s| {
            let b = body(s);
            let mut rule: AlertRuleEntry = serde_json::from_value(b).ok()?;
            rule.when.for_ms = ms(s.spec().and_then(|b| b.path(&["when", "for"])), 0);
            Some((s.name.clone(), rule))
        })
        .collect();
    let states: BTreeMap<String, StateScopeEntry> = of(Kind::State)
        .map(|s| {
            let b = s.spec();
            let at = |key: &str| b.and_then(|b| b.get(key));
            let base = StateScopeEntry::default();
            let entry = StateScopeEntry {
                readers: typed(at("readers"), base.readers),
                writers: typed(at("writers"), base.writers),
                schema: as_json(at("schema")),
                history: typed(at("history"), base.history),
            };
            (s.name.clone(), entry)
        })
        .collect();
    RuntimeConfig {
        format_version: FORMAT_VERSION,
        project: resolved.project_name.clone(),
        namespace: resolved.namespace.clone(),
        environment: resolved.environment.as_ref().map(|e| e.name.clone()),
        agents,
        topics,
        workflows,
        access_policies,
        alert_rules,
        states,
    }
}

/// The runtime entry of one agent.
fn agent(spec: &ResolvedSpec) -> AgentEntry {
    let b = spec.spec();
    let at = |path: &[&str]| b.and_then(|b| b.path(path));
    let base = AgentEntry::default();
    let health = at(&["health"]).map(|h| {
        let base = HealthEntry::default();
        HealthEntry {
            check: typed(h.get("check"), None),
            interval_ms: ms(h.get("interval"), base.interval_ms),
            timeout_ms: ms(h.get("timeout"), base.timeout_ms),
            failure_threshold: typed(h.get("failureThreshold"), base.failure_threshold),
        }
    });
    AgentEntry {
        labels: typed(spec.node.path(&["metadata", "labels"]), base.labels),
        subscribe: typed(at(&["subscribe"]), base.subscribe),
        publish: typed(at(&["publish"]), base.publish),
        replicas: typed(at(&["replicas"]), base.replicas),
        max_replicas: b.map_or(1, |s| u32::try_from(max_replicas(s)).unwrap_or(u32::MAX)),
        local: typed(at(&["local"]), None),
        health,
        recovery: Recovery {
            backoff: backoff(at(&["recovery", "backoff"])),
        },
        inbox: Inbox {
            capacity: typed(at(&["messaging", "inbox", "capacity"]), base.inbox.capacity),
        },
        delivery: delivery(at(&["messaging", "delivery"])),
        config: as_json(at(&["config"])).unwrap_or(base.config),
        env: Vec::new(),
        ports: Vec::new(),
    }
}

/// The runtime entry of one workflow.
fn workflow(spec: &ResolvedSpec) -> WorkflowEntry {
    let base = WorkflowEntry::default();
    let Some(b) = spec.spec() else {
        return base;
    };
    let graph = dag(b);
    let default_timeout = ms(b.path(&["defaults", "timeout"]), defaults::TASK_TIMEOUT_MS);
    let default_retries = b.path(&["defaults", "retries"]);
    let order = topological_order(&graph);
    let mut tasks = BTreeMap::new();
    for task in b.get("tasks").and_then(Node::as_seq).into_iter().flatten() {
        let Some(name) = task.get("name").and_then(Node::as_str) else {
            continue;
        };
        let retries = task.get("retries").or(default_retries);
        let compiled = TaskEntry {
            agent: typed(task.get("agent"), None),
            run: typed(task.get("run"), None),
            depends_on: typed(task.get("dependsOn"), Vec::new()),
            ancestors: graph.ancestors(name).names().map(str::to_string).collect(),
            input: as_json(task.get("input")).unwrap_or(Value::Null),
            timeout_ms: ms(task.get("timeout"), default_timeout),
            retries: Retries {
                limit: typed(retries.and_then(|r| r.get("limit")), 0),
                backoff: backoff(retries.and_then(|r| r.get("backoff"))),
            },
        };
        tasks.insert(name.to_string(), compiled);
    }
    WorkflowEntry {
        triggers: typed(b.get("triggers"), Vec::new()),
        concurrency: typed(b.get("concurrency"), base.concurrency),
        max_active_executions: typed(b.get("maxActiveExecutions"), base.max_active_executions),
        on_failure: typed(b.get("onFailure"), base.on_failure),
        order,
        tasks,
    }
}

/// The workflow's tasks in dependency order ([`Dag::topological_order`]).
///
/// [`Dag::topological_order`]: crate::validate::workflow::Dag::topological_order
pub fn topological_order(graph: &crate::validate::workflow::Dag<'_>) -> Vec<String> {
    graph
        .topological_order()
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Splits the runtime configuration into shards of at most `limit` bytes of
/// compact JSON, each shaped like runtime.json itself: the first holds every
/// small section, agents and workflows are spread over as many shards as
/// they need, in name order. Merging the shards' maps gives back the whole.
/// Each shard is its compact JSON text.
pub fn shards(runtime: &Value, limit: usize) -> Vec<String> {
    // Each entry's text (no hash: shards need none).
    let texts = map_big_entries(runtime, |name, value| (name, canonical_json(value)));
    let sections = shard_sections(&texts, |(name, json)| (*name, json.as_str()));
    shards_from(runtime, &sections, limit)
}

/// [`shards`] of a config whose agents and workflows are texts already:
/// the shards are cut from them.
pub fn shards_of(runtime: &RuntimeText, limit: usize) -> Vec<String> {
    let sections = shard_sections(&runtime.sections, |entry| {
        (entry.name.as_str(), entry.json.as_str())
    });
    shards_from(&runtime.rest, &sections, limit)
}

/// A big section's entries as the shards take them: its name, and the
/// name and compact JSON of each entry, in name order.
pub type ShardSection<'a> = (&'a str, Vec<(&'a str, &'a str)>);

/// The big sections of a runtime config whose entries are `E`, as the
/// shards take them (`text` gives an entry's name and compact JSON).
pub fn shard_sections<'a, E>(
    sections: &'a [(&'static str, Vec<E>)],
    text: impl Fn(&'a E) -> (&'a str, &'a str),
) -> Vec<ShardSection<'a>> {
    sections
        .iter()
        .map(|(section, entries)| (*section, entries.iter().map(&text).collect()))
        .collect()
}

/// [`shards`] of the small sections of `rest` and the entries of the big
/// ones, `sections` (what `rest` holds under a big section's name is not
/// read).
pub fn shards_from(rest: &Value, sections: &[ShardSection<'_>], limit: usize) -> Vec<String> {
    /// A section of a shard: a small one as it is, or some entries of a
    /// big one (name and compact JSON of each).
    enum Part<'a> {
        Whole(&'a Value),
        Entries(Vec<(&'a str, &'a str)>),
        Version(u32),
    }
    type Shard<'a> = BTreeMap<&'a str, Part<'a>>;
    /// The shard's compact JSON, as serde_json writes the same map.
    fn text(shard: &Shard<'_>) -> String {
        let key = |k: &str| serde_json::to_string(k).unwrap_or_default();
        let mut out = String::from("{");
        for (i, (name, part)) in shard.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&key(name));
            out.push(':');
            match part {
                Part::Whole(value) => {
                    out.push_str(&serde_json::to_string(value).unwrap_or_default())
                }
                Part::Version(version) => out.push_str(&version.to_string()),
                Part::Entries(entries) => {
                    out.push('{');
                    for (j, (name, json)) in entries.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        out.push_str(&key(name));
                        out.push(':');
                        out.push_str(json);
                    }
                    out.push('}');
                }
            }
        }
        out.push('}');
        out
    }
    let new_shard = || -> Shard {
        BTreeMap::from([
            ("agents", Part::Entries(Vec::new())),
            ("format_version", Part::Version(FORMAT_VERSION)),
            ("workflows", Part::Entries(Vec::new())),
        ])
    };
    let mut base: Shard = rest
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let part = if BIG_SECTIONS.contains(&key.as_str()) {
                Part::Entries(Vec::new())
            } else {
                Part::Whole(value)
            };
            (key.as_str(), part)
        })
        .collect();
    for section in BIG_SECTIONS {
        base.entry(section)
            .or_insert_with(|| Part::Entries(Vec::new()));
    }
    let mut size = text(&base).len();
    let mut out = vec![base];
    for (section, entries) in sections {
        for (name, json) in entries {
            let length = json.len() + name.len() + 8;
            if size + length > limit && size > 0 {
                out.push(new_shard());
                size = 0;
            }
            if let Some(Part::Entries(list)) = out.last_mut().and_then(|s| s.get_mut(section)) {
                list.push((name, json));
            }
            size += length;
        }
    }
    out.par_iter().map(text).collect()
}
