//! What the broker needs from `runtime.json` and the applied tokens: topics
//! (ordering, delivery, dead letters, retention, compiled schema,
//! subscribers), agents (inbox, delivery, publish/subscribe rights), who
//! each token belongs to, and the declared state scopes' rights and schemas
//! ([`crate::state::rules`]: swapped with the rest on every apply).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cortex_compiler::runtime_config::{self, ConfigShapeError, RuntimeConfig};

use crate::store::Applied;
use crate::tokens::TokenHash;

/// How a topic orders deliveries within one inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// Any order; any number in flight.
    None,
    /// One message per key in flight at a time, in publish order per key.
    PerKey,
    /// One message of the topic in flight at a time, in publish order.
    Total,
}

impl Ordering {
    fn parse(value: &str) -> Ordering {
        match value {
            "per-key" => Ordering::PerKey,
            "total" => Ordering::Total,
            _ => Ordering::None,
        }
    }
}

/// Delivery settings of a topic or of an agent's direct messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Deliveries before a message is dead-lettered.
    pub max_attempts: u32,
    /// How long a delivery may stay unacked before it is delivered again.
    pub ack_timeout: Duration,
}

/// One topic.
#[derive(Debug)]
pub struct TopicConfig {
    /// Its name.
    pub name: Arc<str>,
    /// Ordering within each subscriber's inbox.
    pub ordering: Ordering,
    /// Delivery settings.
    pub delivery: Delivery,
    /// Where dead letters are also published.
    pub dead_letter: Option<String>,
    /// Undelivered messages older than this are dropped.
    pub retention: Duration,
    /// The payload schema, compiled.
    pub schema: Option<jsonschema::Validator>,
    /// Agents subscribed (sorted).
    pub subscribers: Vec<String>,
}

/// One agent's messaging settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Messages its inbox holds (ready + in flight).
    pub inbox_capacity: usize,
    /// Delivery settings of its direct messages.
    pub delivery: Delivery,
    /// Topics it may publish to.
    pub publish: Vec<String>,
    /// Topics it subscribes to.
    pub subscribe: Vec<String>,
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// An agent, by name.
    Agent(String),
    /// The operator (the CLI, tests): may publish and send anywhere.
    Operator,
}

impl Principal {
    /// The sender name recorded on messages.
    pub fn name(&self) -> &str {
        match self {
            Principal::Agent(a) => a,
            Principal::Operator => "cortex",
        }
    }
}

/// Everything the broker routes by.
#[derive(Clone, Debug, Default)]
pub struct BrokerConfig {
    /// The applied revision this config came from.
    pub revision: u64,
    /// Topics by name.
    pub topics: HashMap<String, Arc<TopicConfig>>,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentConfig>,
    /// The SHA-256 of each token → its principal (the broker keeps no
    /// token in clear).
    pub tokens: HashMap<TokenHash, Principal>,
    /// The operator token's hash (the runtime's identity proof is keyed by it).
    pub operator: Option<TokenHash>,
    /// Inboxes of the runtime's own consumers: one per workflow with a
    /// topic trigger ([`workflow_inbox`]), subscribed to its topics.
    pub internal_inboxes: BTreeSet<String>,
    /// Declared state scopes, by name ([`crate::state::rules`]).
    pub states: HashMap<String, Arc<crate::state::rules::ScopeRules>>,
}

/// The inbox a workflow's topic triggers fill: `workflow/NAME` (agent
/// names are DNS labels, so it never meets an agent's).
pub fn workflow_inbox(workflow: &str) -> String {
    format!("workflow/{workflow}")
}

/// An applied config the broker cannot take.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It does not have runtime.json's shape (a field named).
    #[error(transparent)]
    Shape(#[from] ConfigShapeError),
    /// A topic schema that does not compile (the compiler checks schemas,
    /// so this only happens with a hand-edited store).
    #[error("topic {topic}: its schema does not compile: {message}")]
    Schema {
        /// The topic.
        topic: String,
        /// Why.
        message: String,
    },
    /// A state scope's value schema that does not compile.
    #[error("state {scope}: its schema does not compile: {message}")]
    StateSchema {
        /// The scope.
        scope: String,
        /// Why.
        message: String,
    },
}

impl From<runtime_config::Delivery> for Delivery {
    fn from(d: runtime_config::Delivery) -> Delivery {
        Delivery {
            max_attempts: d.max_attempts.max(1),
            ack_timeout: Duration::from_millis(d.ack_timeout_ms),
        }
    }
}

impl BrokerConfig {
    /// The broker's view of an applied config; `operator` is the hash of
    /// the operator's token (kept beside the store, not in the applied config).
    pub fn from_applied(
        applied: &Applied,
        operator: TokenHash,
    ) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::new(
            applied,
            &RuntimeConfig::from_value(&applied.config)?,
            operator,
        )
    }

    /// [`BrokerConfig::from_applied`], given the applied config already read.
    pub fn new(
        applied: &Applied,
        config: &RuntimeConfig,
        operator: TokenHash,
    ) -> Result<BrokerConfig, ConfigError> {
        let mut topics = HashMap::new();
        for (name, topic) in &config.topics {
            let schema =
                match topic.schema.as_ref().filter(|s| !s.is_null()) {
                    Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
                        ConfigError::Schema {
                            topic: name.clone(),
                            message: e.to_string(),
                        }
                    })?),
                    None => None,
                };
            let mut subscribers = topic.subscribers.clone();
            subscribers.extend(
                config
                    .workflows
                    .iter()
                    .filter(|(_, w)| w.triggers.iter().any(|t| t.topic.as_ref() == Some(name)))
                    .map(|(workflow, _)| workflow_inbox(workflow)),
            );
            subscribers.sort();
            subscribers.dedup();
            topics.insert(
                name.clone(),
                Arc::new(TopicConfig {
                    name: Arc::from(name.as_str()),
                    ordering: Ordering::parse(&topic.ordering),
                    delivery: topic.delivery.into(),
                    dead_letter: topic.dead_letter.clone(),
                    retention: Duration::from_millis(topic.retention_ms),
                    schema,
                    subscribers,
                }),
            );
        }
        let agents = config
            .agents
            .iter()
            .map(|(name, agent)| {
                (
                    name.clone(),
                    AgentConfig {
                        inbox_capacity: usize::try_from(agent.inbox.capacity.max(1))
                            .unwrap_or(usize::MAX),
                        delivery: agent.delivery.into(),
                        publish: agent.publish.clone(),
                        subscribe: agent.subscribe.clone(),
                    },
                )
            })
            .collect();
        let mut tokens: HashMap<TokenHash, Principal> = applied
            .tokens
            .iter()
            .map(|(agent, token)| (TokenHash::of(token), Principal::Agent(agent.clone())))
            .collect();
        tokens.insert(operator, Principal::Operator);
        let internal_inboxes = config
            .workflows
            .iter()
            .filter(|(_, w)| w.triggers.iter().any(|t| t.topic.is_some()))
            .map(|(workflow, _)| workflow_inbox(workflow))
            .collect();
        Ok(BrokerConfig {
            revision: applied.revision,
            topics,
            agents,
            tokens,
            operator: Some(operator),
            internal_inboxes,
            states: crate::state::rules::compile(config)?,
        })
    }
}
