//! What the broker needs from `runtime.json` and the applied tokens: topics
//! (ordering, delivery, dead letters, retention, compiled schema,
//! subscribers), agents (inbox, delivery, publish/subscribe rights) and who
//! each token belongs to.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::fields::{millis as ms, strings};
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
    fn parse(value: Option<&str>) -> Ordering {
        match value {
            Some("per-key") => Ordering::PerKey,
            Some("total") => Ordering::Total,
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
}

/// A topic schema that does not compile (the compiler checks schemas, so
/// this only happens with a hand-edited store).
#[derive(Debug, thiserror::Error)]
#[error("topic {topic}: its schema does not compile: {message}")]
pub struct ConfigError {
    /// The topic.
    pub topic: String,
    /// Why.
    pub message: String,
}

fn delivery(value: Option<&Value>) -> Delivery {
    use cortex_compiler::render::runtime::defaults;
    Delivery {
        max_attempts: value
            .and_then(|d| d.get("maxAttempts"))
            .and_then(Value::as_u64)
            .unwrap_or(defaults::MAX_ATTEMPTS as u64)
            .clamp(1, u32::MAX as u64) as u32,
        ack_timeout: ms(
            value.and_then(|d| d.get("ackTimeoutMs")),
            defaults::ACK_TIMEOUT_MS,
        ),
    }
}

impl BrokerConfig {
    /// The broker's view of an applied config; `operator` is the hash of
    /// the operator's token (kept beside the store, not in the applied config).
    pub fn from_applied(
        applied: &Applied,
        operator: TokenHash,
    ) -> Result<BrokerConfig, ConfigError> {
        use cortex_compiler::render::runtime::defaults;
        let config = &applied.config;
        let mut topics = HashMap::new();
        for (name, topic) in config
            .get("topics")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let schema = match topic.get("schema").filter(|s| !s.is_null()) {
                Some(schema) => {
                    Some(jsonschema::validator_for(schema).map_err(|e| ConfigError {
                        topic: name.clone(),
                        message: e.to_string(),
                    })?)
                }
                None => None,
            };
            let mut subscribers = strings(topic.get("subscribers"));
            subscribers.sort();
            subscribers.dedup();
            topics.insert(
                name.clone(),
                Arc::new(TopicConfig {
                    name: Arc::from(name.as_str()),
                    ordering: Ordering::parse(topic.get("ordering").and_then(Value::as_str)),
                    delivery: delivery(topic.get("delivery")),
                    dead_letter: topic
                        .get("deadLetter")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    retention: ms(topic.get("retentionMs"), defaults::RETENTION_MS),
                    schema,
                    subscribers,
                }),
            );
        }
        let agents = config
            .get("agents")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, agent)| {
                (
                    name.clone(),
                    AgentConfig {
                        inbox_capacity: agent
                            .pointer("/inbox/capacity")
                            .and_then(Value::as_u64)
                            .unwrap_or(defaults::INBOX_CAPACITY as u64)
                            .max(1) as usize,
                        delivery: delivery(agent.get("delivery")),
                        publish: strings(agent.get("publish")),
                        subscribe: strings(agent.get("subscribe")),
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
        Ok(BrokerConfig {
            revision: applied.revision,
            topics,
            agents,
            tokens,
            operator: Some(operator),
        })
    }
}
