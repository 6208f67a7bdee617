//! The runtime configuration (`runtime.json`) as types: the contract
//! between the compiler, which writes it, and the runtime, which reads it.
//!
//! Every default lives here, once: each part's `Default` is what the
//! runtime does where a spec is silent, the compiler starts every entry
//! from it, and a field missing from a stored config reads as it. Unknown
//! fields are refused (`deny_unknown_fields`), so a misspelled field is an
//! error naming it, never a silent default ([`RuntimeConfig::from_value`]).
//! Durations are milliseconds.
//!
//! The fields of an agent's and a workflow's entry, and of every type in
//! them, are declared in the order of their JSON names: serialized as it
//! stands, an entry is already its canonical text (compact, keys sorted),
//! which a build takes without sorting it through a JSON tree
//! ([`crate::runtime_text`] checks the order of every text it takes).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub const HEALTH_FAILURE_THRESHOLD: u32 = 3;
    /// Changes a state scope keeps for watches.
    pub const STATE_HISTORY: u64 = 10_000;
    /// Delivery attempts before dead-lettering.
    pub const MAX_ATTEMPTS: u32 = 5;
    /// Time an agent has to ack a delivery before it is redelivered.
    pub const ACK_TIMEOUT_MS: u64 = 30_000;
    /// Messages an agent's inbox holds before senders get "inbox full".
    pub const INBOX_CAPACITY: u64 = 1024;
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
    pub const CONCURRENCY: u64 = 10;
    /// Executions of one workflow running at once.
    pub const MAX_ACTIVE_EXECUTIONS: u64 = 50;
}

/// A runtime config that does not have the shape the runtime reads.
#[derive(Debug, thiserror::Error)]
#[error("runtime config: {path}: {message}")]
pub struct ConfigShapeError {
    /// Where (`agents.triage.inbox.capacityy`: the misspelled field itself).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// The sections of runtime.json that hold runtime objects, and the kind
/// of their entries (inventories, plans and diffs list them by these).
pub const SECTIONS: [(&str, &str); 6] = [
    ("agents", "Agent"),
    ("topics", "Topic"),
    ("workflows", "Workflow"),
    ("accessPolicies", "AccessPolicy"),
    ("alertRules", "AlertRule"),
    ("states", "State"),
];

/// `runtime.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Project name.
    pub project: String,
    /// Namespace the project renders into.
    pub namespace: String,
    /// Selected environment.
    pub environment: Option<String>,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentEntry>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicEntry>,
    /// Workflows by name, compiled to DAGs.
    pub workflows: BTreeMap<String, WorkflowEntry>,
    /// Access policies by name, as written in their specs.
    #[serde(rename = "accessPolicies")]
    pub access_policies: BTreeMap<String, Value>,
    /// Alert rules by name.
    #[serde(rename = "alertRules")]
    pub alert_rules: BTreeMap<String, AlertRuleEntry>,
    /// Shared state scopes by name (left out when there are none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub states: BTreeMap<String, StateScopeEntry>,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            format_version: FORMAT_VERSION,
            project: String::new(),
            namespace: String::new(),
            environment: None,
            agents: BTreeMap::new(),
            topics: BTreeMap::new(),
            workflows: BTreeMap::new(),
            access_policies: BTreeMap::new(),
            alert_rules: BTreeMap::new(),
            states: BTreeMap::new(),
        }
    }
}

impl RuntimeConfig {
    /// Reads a stored config; an error names the field that does not fit.
    pub fn from_value(value: &Value) -> Result<RuntimeConfig, ConfigShapeError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigShapeError {
                path,
                message: e.into_inner().to_string(),
            }
        })
    }

    /// As JSON (keys sorted: the canonical form runtime.json is written in).
    pub fn to_value(&self) -> Value {
        // Plain data with string keys always converts.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// As JSON, like [`RuntimeConfig::to_value`]; the agents and workflows,
    /// most of a big project's config, are converted entry by entry over
    /// every core.
    pub fn into_value(mut self) -> Value {
        let agents = std::mem::take(&mut self.agents);
        let workflows = std::mem::take(&mut self.workflows);
        let mut value = self.to_value();
        let as_object =
            |entries: Vec<(String, Value)>| Value::Object(entries.into_iter().collect());
        let (agents, workflows) = rayon::join(
            || as_object(entries_as(agents, |name, value| (name, value))),
            || as_object(entries_as(workflows, |name, value| (name, value))),
        );
        value["agents"] = agents;
        value["workflows"] = workflows;
        value
    }
}

/// Each entry of `map`, handed with its name to `into`, over every core
/// (the agents and workflows of a big project), in name order.
pub fn each_entry<T: Send, U: Send>(
    map: BTreeMap<String, T>,
    into: impl Fn(String, T) -> U + Sync,
) -> Vec<U> {
    use rayon::prelude::*;
    let entries: Vec<(String, T)> = map.into_iter().collect();
    entries
        .into_par_iter()
        .with_min_len(64)
        .map(|(name, entry)| into(name, entry))
        .collect()
}

/// [`each_entry`] with each entry as JSON; each entry's tree lives only
/// until `into` returns with it (made into text or shared).
pub fn entries_as<T: Serialize + Send, U: Send>(
    map: BTreeMap<String, T>,
    into: impl Fn(String, Value) -> U + Sync,
) -> Vec<U> {
    // Plain data with string keys always converts.
    each_entry(map, |name, entry| {
        into(name, serde_json::to_value(&entry).unwrap_or(Value::Null))
    })
}

/// One agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct AgentEntry {
    /// `spec.config`, handed to the agent as a file.
    pub config: Value,
    /// Delivery of direct messages to it.
    pub delivery: Delivery,
    /// Environment of its local process (the embedded target adds it; in a
    /// cluster it lives in the Deployment).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Its health check, when it has one.
    pub health: Option<HealthEntry>,
    /// Its inbox.
    pub inbox: Inbox,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// How the embedded target runs it, when it does.
    pub local: Option<LocalRun>,
    /// Most replicas it can scale to.
    pub max_replicas: u32,
    /// Ports it declares (the embedded target adds them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Topics it may publish to.
    pub publish: Vec<String>,
    /// Restarts after failures.
    pub recovery: Recovery,
    /// Replicas to run.
    pub replicas: u32,
    /// Topics it receives.
    pub subscribe: Vec<String>,
}

impl Default for AgentEntry {
    fn default() -> AgentEntry {
        AgentEntry {
            labels: BTreeMap::new(),
            subscribe: Vec::new(),
            publish: Vec::new(),
            replicas: 1,
            max_replicas: 1,
            local: None,
            health: None,
            recovery: Recovery::default(),
            inbox: Inbox::default(),
            delivery: Delivery::default(),
            config: Value::Object(serde_json::Map::new()),
            env: Vec::new(),
            ports: Vec::new(),
        }
    }
}

/// How the embedded target runs an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRun {
    /// Program and arguments.
    pub command: Vec<String>,
}

/// A health check and its timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct HealthEntry {
    /// What to probe (none: the process being up is its health).
    pub check: Option<HealthCheck>,
    /// Failed checks in a row before unhealthy.
    pub failure_threshold: u32,
    /// Time between checks.
    pub interval_ms: u64,
    /// Time one check may take.
    pub timeout_ms: u64,
}

impl Default for HealthEntry {
    fn default() -> HealthEntry {
        HealthEntry {
            check: None,
            interval_ms: defaults::HEALTH_INTERVAL_MS,
            timeout_ms: defaults::HEALTH_TIMEOUT_MS,
            failure_threshold: defaults::HEALTH_FAILURE_THRESHOLD,
        }
    }
}

/// One of the three probes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum HealthCheck {
    /// An HTTP GET answered 2xx or 3xx.
    Http {
        /// Request path (`/` when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Port number or name.
        port: PortRef,
    },
    /// A TCP connection accepted.
    Tcp {
        /// Port number or name.
        port: PortRef,
    },
    /// A command that exits 0.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// A port by number or by the name an agent gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number.
    Number(u64),
    /// The name of one of the agent's ports.
    Name(String),
}

/// Restarts after failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recovery {
    /// Delay between restarts.
    pub backoff: Backoff,
}

/// Exponential backoff: initial delay, multiplied after each attempt,
/// capped at max.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Backoff {
    /// First delay.
    pub initial_ms: u64,
    /// Largest delay.
    pub max_ms: u64,
    /// Factor between one delay and the next.
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial_ms: defaults::BACKOFF_INITIAL_MS,
            max_ms: defaults::BACKOFF_MAX_MS,
            multiplier: defaults::BACKOFF_MULTIPLIER,
        }
    }
}

/// An agent's inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inbox {
    /// Messages it holds before senders get "inbox full".
    pub capacity: u64,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox {
            capacity: defaults::INBOX_CAPACITY,
        }
    }
}

/// Delivery of a topic's messages or of an agent's direct messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Delivery {
    /// Time to ack a delivery before it is redelivered.
    pub ack_timeout_ms: u64,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            max_attempts: defaults::MAX_ATTEMPTS,
            ack_timeout_ms: defaults::ACK_TIMEOUT_MS,
        }
    }
}

/// An environment variable of a local agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Or a key of a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A key of a named secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Key in it.
    pub key: String,
    /// Secret name.
    pub name: String,
}

/// A port an agent declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Its name.
    pub name: String,
    /// The container's port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u64>,
    /// TCP or UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct TopicEntry {
    /// `none`, `per-key` or `total`.
    pub ordering: String,
    /// How long messages are kept.
    pub retention_ms: u64,
    /// Delivery to subscribers.
    pub delivery: Delivery,
    /// Topic that receives messages after the last attempt.
    pub dead_letter: Option<String>,
    /// JSON Schema every payload must satisfy.
    pub schema: Option<Value>,
    /// Agents subscribed to it.
    pub subscribers: Vec<String>,
}

impl Default for TopicEntry {
    fn default() -> TopicEntry {
        TopicEntry {
            ordering: "none".to_string(),
            retention_ms: defaults::RETENTION_MS,
            delivery: Delivery::default(),
            dead_letter: None,
            schema: None,
            subscribers: Vec::new(),
        }
    }
}

/// One shared state scope (a `State` spec). Every agent also owns
/// `agents/NAME`, which needs no entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct StateScopeEntry {
    /// Agents that may read (writers may too).
    pub readers: Vec<String>,
    /// Agents that may write.
    pub writers: Vec<String>,
    /// JSON Schema every value must satisfy.
    pub schema: Option<Value>,
    /// Changes kept for watches.
    pub history: u64,
}

impl Default for StateScopeEntry {
    fn default() -> StateScopeEntry {
        StateScopeEntry {
            readers: Vec::new(),
            writers: Vec::new(),
            schema: None,
            history: defaults::STATE_HISTORY,
        }
    }
}

/// One workflow, compiled to a DAG.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct WorkflowEntry {
    /// Tasks of one execution running at once.
    pub concurrency: u64,
    /// Executions running at once.
    pub max_active_executions: u64,
    /// `fail-fast` or `continue`.
    pub on_failure: String,
    /// The tasks in a topological order (ties broken by name).
    pub order: Vec<String>,
    /// Tasks by name.
    pub tasks: BTreeMap<String, TaskEntry>,
    /// What starts an execution.
    pub triggers: Vec<Trigger>,
}

impl Default for WorkflowEntry {
    fn default() -> WorkflowEntry {
        WorkflowEntry {
            triggers: Vec::new(),
            concurrency: defaults::CONCURRENCY,
            max_active_executions: defaults::MAX_ACTIVE_EXECUTIONS,
            on_failure: "fail-fast".to_string(),
            order: Vec::new(),
            tasks: BTreeMap::new(),
        }
    }
}

/// What starts an execution: exactly one of `topic`, `schedule`, `manual`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// By hand (an operator's command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<Manual>,
    /// Trigger name.
    pub name: String,
    /// A cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Every message on this topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// The (empty) settings of a manual trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manual {}

/// One task of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct TaskEntry {
    /// The agent it sends its input to (or `run`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Every task it depends on, directly or not.
    pub ancestors: Vec<String>,
    /// Tasks that must succeed first.
    pub depends_on: Vec<String>,
    /// Its input, with `$(…)` references.
    pub input: Value,
    /// Attempts after a failure.
    pub retries: Retries,
    /// The command it runs (or `agent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunCommand>,
    /// Time one attempt may take.
    pub timeout_ms: u64,
}

impl Default for TaskEntry {
    fn default() -> TaskEntry {
        TaskEntry {
            agent: None,
            run: None,
            depends_on: Vec::new(),
            ancestors: Vec::new(),
            input: Value::Null,
            timeout_ms: defaults::TASK_TIMEOUT_MS,
            retries: Retries::default(),
        }
    }
}

/// A command a task runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCommand {
    /// Program and arguments.
    pub command: Vec<String>,
}

/// Retries of a failed task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Retries after the first attempt.
    pub limit: u64,
}

/// One alert rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleEntry {
    /// The condition.
    pub when: AlertCondition,
    /// `info`, `warning` or `critical`.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Where to send it.
    #[serde(default)]
    pub notify: Vec<Notify>,
}

fn default_severity() -> String {
    "warning".to_string()
}

/// When an alert fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertCondition {
    /// `degraded` or `unhealthy`.
    pub health: String,
    /// How long, as written in the spec.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_text: Option<String>,
    /// How long, in milliseconds.
    #[serde(default)]
    pub for_ms: u64,
    /// Agents whose labels include these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// One agent by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// One notification target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// A webhook.
    pub webhook: Webhook,
}

/// A webhook, signed with a secret's HMAC key when it names one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Webhook {
    /// https URL.
    pub url: String,
    /// Secret holding the HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_misspelled_field_is_refused_with_its_path() {
        let config = json!({ "agents": { "triage": { "inbox": { "capacityy": 5 } } } });
        let err = RuntimeConfig::from_value(&config).expect_err("refused");
        assert_eq!(err.path, "agents.triage.inbox.capacityy");
        assert!(err.message.contains("capacityy"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_refused_with_its_path() {
        let config = json!({ "topics": { "t": { "retentionMs": "7d" } } });
        let err = RuntimeConfig::from_value(&config).expect_err("refused");
        assert_eq!(err.path, "topics.t.retentionMs");
    }

    #[test]
    fn missing_fields_read_as_the_defaults() {
        let config = RuntimeConfig::from_value(&json!({ "agents": { "a": {} } })).expect("reads");
        let agent = &config.agents["a"];
        assert_eq!(agent.inbox.capacity, defaults::INBOX_CAPACITY);
        assert_eq!(agent.delivery, Delivery::default());
        assert_eq!(agent.replicas, 1);
        assert_eq!(config.format_version, FORMAT_VERSION);
    }

    #[test]
    fn a_config_reads_back_as_written() {
        let mut config = RuntimeConfig::default();
        config.agents.insert(
            "a".into(),
            AgentEntry {
                health: Some(HealthEntry {
                    check: Some(HealthCheck::Http {
                        path: Some("/healthz".into()),
                        port: PortRef::Name("http".into()),
                    }),
                    ..HealthEntry::default()
                }),
                ..AgentEntry::default()
            },
        );
        let back = RuntimeConfig::from_value(&config.to_value()).expect("reads");
        assert_eq!(back, config);
    }

    #[test]
    fn converting_in_parallel_gives_the_same_json() {
        let mut config = RuntimeConfig {
            project: "p".into(),
            ..RuntimeConfig::default()
        };
        for i in 0..200 {
            let agent = AgentEntry {
                replicas: i,
                ..AgentEntry::default()
            };
            config.agents.insert(format!("agent-{i:03}"), agent);
            config
                .workflows
                .insert(format!("flow-{i:03}"), WorkflowEntry::default());
        }
        config.topics.insert("t".into(), TopicEntry::default());
        let whole = config.to_value();
        assert_eq!(whole["agents"]["agent-007"]["replicas"], 7);
        assert_eq!(config.into_value(), whole);
    }
}
