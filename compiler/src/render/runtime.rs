//! `runtime.json`: what the runtime loads — topics, subscriptions and
//! publish rights per agent, health checks, alert rules, access policies,
//! and workflows compiled to DAGs (topological order, ancestors, resolved
//! defaults). Durations are milliseconds; every default is filled in.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde_json::{Map, Value, json};

use crate::document::Kind;
use crate::node::Node;
use crate::resolve::{Resolved, ResolvedSpec};
use crate::validate::formats::parse_duration_ms;
use crate::validate::pools::max_replicas;
use crate::validate::workflow::dag;

/// Most compact JSON one runtime ConfigMap holds (Kubernetes caps an object
/// at 1 MiB; the rest is left for metadata).
pub const SHARD_BYTES: usize = 768 * 1024;

/// Version of the runtime.json layout.
pub const FORMAT_VERSION: u32 = 1;

/// Defaults the runtime applies where a spec is silent. Health follows the
/// Kubernetes probe defaults; delivery and inbox follow SPEC.md's examples.
pub mod defaults {
    /// Health check interval (Kubernetes `periodSeconds` default: 10 s).
    pub const HEALTH_INTERVAL_MS: u64 = 10_000;
    /// Health check timeout (Kubernetes `timeoutSeconds` default: 1 s).
    pub const HEALTH_TIMEOUT_MS: u64 = 1_000;
    /// Failures before unhealthy (Kubernetes `failureThreshold` default: 3).
    pub const HEALTH_FAILURE_THRESHOLD: i64 = 3;
    /// Delivery attempts before dead-lettering.
    pub const MAX_ATTEMPTS: i64 = 5;
    /// Time an agent has to ack a delivery before it is redelivered.
    pub const ACK_TIMEOUT_MS: u64 = 30_000;
    /// Messages an agent's inbox holds before senders get "inbox full".
    pub const INBOX_CAPACITY: i64 = 1024;
    /// Recovery backoff: first delay, cap, factor.
    pub const BACKOFF_INITIAL_MS: u64 = 1_000;
    /// See [`BACKOFF_INITIAL_MS`].
    pub const BACKOFF_MAX_MS: u64 = 300_000;
    /// See [`BACKOFF_INITIAL_MS`].
    pub const BACKOFF_MULTIPLIER: f64 = 2.0;
    /// Topic retention.
    pub const RETENTION_MS: u64 = 7 * 86_400_000;
    /// Task timeout.
    pub const TASK_TIMEOUT_MS: u64 = 60_000;
    /// Tasks of one execution running at once.
    pub const CONCURRENCY: i64 = 10;
    /// Executions of one workflow running at once.
    pub const MAX_ACTIVE_EXECUTIONS: i64 = 50;
}

fn ms(value: Option<&Value>, default: u64) -> u64 {
    value
        .and_then(Value::as_str)
        .and_then(|s| parse_duration_ms(s).ok())
        .unwrap_or(default)
}

fn body(spec: &ResolvedSpec) -> Value {
    spec.spec().map(Node::to_json).unwrap_or_else(|| json!({}))
}

fn backoff(value: Option<&Value>) -> Value {
    let b = value.cloned().unwrap_or_else(|| json!({}));
    json!({
        "initialMs": ms(b.get("initial"), defaults::BACKOFF_INITIAL_MS),
        "maxMs": ms(b.get("max"), defaults::BACKOFF_MAX_MS),
        "multiplier": b.get("multiplier").cloned().unwrap_or(json!(defaults::BACKOFF_MULTIPLIER)),
    })
}

/// Builds the runtime configuration of a validated project.
pub fn runtime_config(resolved: &Resolved) -> Value {
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
    let agents: Map<String, Value> = agent_specs
        .par_iter()
        .with_min_len(64)
        .map(|spec| (spec.name.clone(), agent(spec)))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    let topics: Map<String, Value> = of(Kind::Topic)
        .map(|spec| {
            let b = body(spec);
            (
                spec.name.clone(),
                json!({
                    "ordering": b.get("ordering").cloned().unwrap_or(json!("none")),
                    "retentionMs": ms(b.get("retention"), defaults::RETENTION_MS),
                    "delivery": {
                        "maxAttempts": b.pointer("/delivery/maxAttempts").cloned().unwrap_or(json!(defaults::MAX_ATTEMPTS)),
                        "ackTimeoutMs": ms(b.pointer("/delivery/ackTimeout"), defaults::ACK_TIMEOUT_MS),
                    },
                    "deadLetter": b.get("deadLetter").cloned().unwrap_or(Value::Null),
                    "schema": b.get("schema").cloned().unwrap_or(Value::Null),
                    "subscribers": subscriptions.get(&spec.name).map(|s| s.iter().collect::<Vec<_>>()).unwrap_or_default(),
                }),
            )
        })
        .collect();
    let workflow_specs: Vec<&ResolvedSpec> = of(Kind::Workflow).collect();
    let workflows: Map<String, Value> = workflow_specs
        .par_iter()
        .with_min_len(16)
        .map(|spec| (spec.name.clone(), workflow(spec)))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    let policies: Map<String, Value> = of(Kind::AccessPolicy)
        .map(|s| (s.name.clone(), body(s)))
        .collect();
    let alerts: Map<String, Value> = of(Kind::AlertRule)
        .map(|s| {
            let b = body(s);
            let mut rule = b.clone();
            rule["when"]["forMs"] = json!(ms(b.pointer("/when/for"), 0));
            rule["severity"] = b.get("severity").cloned().unwrap_or(json!("warning"));
            (s.name.clone(), rule)
        })
        .collect();
    json!({
        "format_version": FORMAT_VERSION,
        "project": resolved.project_name,
        "namespace": resolved.namespace,
        "environment": resolved.environment.as_ref().map(|e| e.name.clone()),
        "agents": agents,
        "topics": topics,
        "workflows": workflows,
        "accessPolicies": policies,
        "alertRules": alerts,
    })
}

/// The runtime entry of one agent.
fn agent(spec: &ResolvedSpec) -> Value {
    let b = body(spec);
    let health = b.get("health").map(|h| {
        json!({
            "check": h.get("check").cloned().unwrap_or(Value::Null),
            "intervalMs": ms(h.get("interval"), defaults::HEALTH_INTERVAL_MS),
            "timeoutMs": ms(h.get("timeout"), defaults::HEALTH_TIMEOUT_MS),
            "failureThreshold": h.get("failureThreshold").cloned().unwrap_or(json!(defaults::HEALTH_FAILURE_THRESHOLD)),
        })
    });
    json!({
        "labels": spec.node.path(&["metadata", "labels"]).map(Node::to_json).unwrap_or(json!({})),
        "subscribe": b.get("subscribe").cloned().unwrap_or(json!([])),
        "publish": b.get("publish").cloned().unwrap_or(json!([])),
        "replicas": b.get("replicas").cloned().unwrap_or(json!(1)),
        "maxReplicas": spec.spec().map_or(1, max_replicas),
        "local": b.get("local").cloned().unwrap_or(Value::Null),
        "health": health.unwrap_or(Value::Null),
        "recovery": { "backoff": backoff(b.pointer("/recovery/backoff")) },
        "inbox": { "capacity": b.pointer("/messaging/inbox/capacity").cloned().unwrap_or(json!(defaults::INBOX_CAPACITY)) },
        "delivery": {
            "maxAttempts": b.pointer("/messaging/delivery/maxAttempts").cloned().unwrap_or(json!(defaults::MAX_ATTEMPTS)),
            "ackTimeoutMs": ms(b.pointer("/messaging/delivery/ackTimeout"), defaults::ACK_TIMEOUT_MS),
        },
        "config": b.get("config").cloned().unwrap_or(json!({})),
    })
}

fn workflow(spec: &ResolvedSpec) -> Value {
    let b = body(spec);
    let Some(spec_node) = spec.spec() else {
        return json!({});
    };
    let graph = dag(spec_node);
    let default_timeout = ms(b.pointer("/defaults/timeout"), defaults::TASK_TIMEOUT_MS);
    let default_retries = b
        .pointer("/defaults/retries")
        .cloned()
        .unwrap_or(json!({ "limit": 0 }));
    let order = topological_order(&graph);
    let mut tasks = Map::new();
    for task in b
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = task.get("name").and_then(Value::as_str) else {
            continue;
        };
        let retries = task
            .get("retries")
            .cloned()
            .unwrap_or_else(|| default_retries.clone());
        let mut compiled = json!({
            "dependsOn": task.get("dependsOn").cloned().unwrap_or(json!([])),
            "ancestors": graph.ancestors(name).into_iter().collect::<Vec<_>>(),
            "input": task.get("input").cloned().unwrap_or(Value::Null),
            "timeoutMs": ms(task.get("timeout"), default_timeout),
            "retries": { "limit": retries.get("limit").cloned().unwrap_or(json!(0)), "backoff": backoff(retries.get("backoff")) },
        });
        if let Some(agent) = task.get("agent") {
            compiled["agent"] = agent.clone();
        }
        if let Some(run) = task.get("run") {
            compiled["run"] = run.clone();
        }
        tasks.insert(name.to_string(), compiled);
    }
    json!({
        "triggers": b.get("triggers").cloned().unwrap_or(json!([])),
        "concurrency": b.get("concurrency").cloned().unwrap_or(json!(defaults::CONCURRENCY)),
        "maxActiveExecutions": b.get("maxActiveExecutions").cloned().unwrap_or(json!(defaults::MAX_ACTIVE_EXECUTIONS)),
        "onFailure": b.get("onFailure").cloned().unwrap_or(json!("fail-fast")),
        "order": order,
        "tasks": tasks,
    })
}

/// Kahn's algorithm; ties broken by name so the order is stable.
pub fn topological_order(graph: &crate::validate::workflow::Dag<'_>) -> Vec<String> {
    let mut remaining: BTreeMap<&str, usize> = graph
        .tasks
        .keys()
        .map(|t| {
            (
                *t,
                graph.deps[t]
                    .iter()
                    .filter(|d| graph.tasks.contains_key(*d))
                    .count(),
            )
        })
        .collect();
    let mut order = Vec::new();
    let mut ready: BTreeSet<&str> = remaining
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(t, _)| *t)
        .collect();
    while let Some(task) = ready.pop_first() {
        remaining.remove(task);
        order.push(task.to_string());
        for (other, deps) in &graph.deps {
            if deps.contains(&task)
                && let Some(n) = remaining.get_mut(other)
            {
                *n -= 1;
                if *n == 0 {
                    ready.insert(other);
                }
            }
        }
    }
    order
}

/// Splits the runtime configuration into shards of at most `limit` bytes of
/// compact JSON, each shaped like runtime.json itself: the first holds every
/// small section, agents and workflows are spread over as many shards as
/// they need, in name order. Merging the shards' maps gives back the whole.
pub fn shards(runtime: &Value, limit: usize) -> Vec<Value> {
    const BIG: [&str; 2] = ["agents", "workflows"];
    // Every small section as it is; the big ones empty (not copied only to
    // be replaced).
    let mut base: Map<String, Value> = runtime
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let value = if BIG.contains(&key.as_str()) {
                json!({})
            } else {
                value.clone()
            };
            (key.clone(), value)
        })
        .collect();
    for section in BIG {
        base.entry(section).or_insert_with(|| json!({}));
    }
    let big: Vec<(&str, &str, &Value)> = BIG
        .iter()
        .filter_map(|section| Some((*section, runtime.get(*section)?.as_object()?)))
        .flat_map(|(section, map)| {
            map.iter()
                .map(move |(name, value)| (section, name.as_str(), value))
        })
        .collect();
    // Entry sizes are independent: measure them over every core.
    let sizes: Vec<usize> = big
        .par_iter()
        .with_min_len(64)
        .map(|(_, name, value)| compact_len(value) + name.len() + 8)
        .collect();
    let base = Value::Object(base);
    let mut size = compact_len(&base);
    let mut out = vec![base];
    for ((section, name, value), entry) in big.into_iter().zip(sizes) {
        if size + entry > limit && size > 0 {
            out.push(json!({ "format_version": FORMAT_VERSION, "agents": {}, "workflows": {} }));
            size = 0;
        }
        if let Some(shard) = out.last_mut() {
            shard[section][name] = value.clone();
        }
        size += entry;
    }
    out
}

/// Length of `value` as compact JSON, counted without building the text.
pub fn compact_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}
