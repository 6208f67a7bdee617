//! Alert rules over agent health: a rule holds while an agent it selects
//! is in the rule's state (or worse: `unhealthy` and `restarting` also
//! satisfy `degraded`); after holding for `for` it fires, and when it stops
//! holding it resolves. Each transition POSTs a JSON body to the rule's
//! webhooks, signed with HMAC-SHA256 of the body under the secret the rule
//! names (`X-Cortex-Signature: sha256=<hex>`, as GitHub signs webhooks).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;

use super::health::HealthState;
use cortex_compiler::runtime_config::RuntimeConfig;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Cortex-Signature";
/// Attempts per webhook call.
pub const WEBHOOK_ATTEMPTS: u32 = 3;

/// A webhook target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// URL.
    pub url: String,
    /// Name of the secret holding the HMAC key.
    pub secret_ref: Option<String>,
}

/// One alert rule.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// Its name.
    pub name: String,
    /// The state that makes it hold.
    pub health: HealthState,
    /// How long it must hold before firing.
    pub hold: Duration,
    /// Only this agent (`when.agent`).
    pub agent: Option<String>,
    /// Only agents with these labels (`when.selector`).
    pub selector: BTreeMap<String, String>,
    /// `critical`, `warning`…
    pub severity: String,
    /// Where to send.
    pub webhooks: Vec<Webhook>,
}

/// The health of one agent, as alerts see it.
#[derive(Clone, Debug)]
pub struct AgentHealth {
    /// Name.
    pub agent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its worst replica's state.
    pub state: HealthState,
}

/// Fired or resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The rule.
    pub rule: String,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The JSON body to send.
    pub body: Value,
    /// Where.
    pub webhooks: Vec<Webhook>,
}

fn satisfies(state: HealthState, wanted: HealthState) -> bool {
    let rank = |s: HealthState| match s {
        HealthState::Degraded => 1,
        HealthState::Unhealthy | HealthState::Restarting | HealthState::Failed => 2,
        _ => 0,
    };
    state == wanted || (rank(wanted) > 0 && rank(state) >= rank(wanted))
}

impl AlertRule {
    /// The rules of a runtime config's `alertRules` (a rule on a health
    /// state the runtime does not know is skipped).
    pub fn from_runtime(config: &RuntimeConfig) -> Vec<AlertRule> {
        config
            .alert_rules
            .iter()
            .filter_map(|(name, rule)| {
                let health = match rule.when.health.as_str() {
                    "degraded" => HealthState::Degraded,
                    "unhealthy" => HealthState::Unhealthy,
                    "healthy" => HealthState::Healthy,
                    "starting" => HealthState::Starting,
                    _ => return None,
                };
                Some(AlertRule {
                    name: name.clone(),
                    health,
                    hold: Duration::from_millis(rule.when.for_ms),
                    agent: rule.when.agent.clone(),
                    selector: rule.when.selector.clone().unwrap_or_default(),
                    severity: rule.severity.clone(),
                    webhooks: rule
                        .notify
                        .iter()
                        .map(|n| Webhook {
                            url: n.webhook.url.clone(),
                            secret_ref: n.webhook.secret_ref.clone(),
                        })
                        .collect(),
                })
            })
            .collect()
    }

    fn selects(&self, agent: &AgentHealth) -> bool {
        self.agent.as_ref().is_none_or(|a| *a == agent.agent)
            && self
                .selector
                .iter()
                .all(|(k, v)| agent.labels.get(k) == Some(v))
    }
}

/// Tracks which rules hold, since when, and which fired.
#[derive(Debug, Default)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    holding_since: HashMap<String, Instant>,
    firing: BTreeSet<String>,
}

impl AlertEngine {
    /// An engine for `rules`.
    pub fn new(rules: Vec<AlertRule>) -> AlertEngine {
        AlertEngine {
            rules,
            ..AlertEngine::default()
        }
    }

    /// Replaces the rules (after an apply); firing rules that are gone resolve
    /// at the next evaluation only if they still exist, so they are dropped.
    pub fn set_rules(&mut self, rules: Vec<AlertRule>) {
        let names: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        self.holding_since.retain(|k, _| names.contains(k.as_str()));
        self.firing.retain(|k| names.contains(k.as_str()));
        self.rules = rules;
    }

    /// Rules firing now.
    pub fn firing(&self) -> impl Iterator<Item = &str> {
        self.firing.iter().map(String::as_str)
    }

    /// Evaluates every rule at `now`; returns what fired and what resolved.
    pub fn evaluate(
        &mut self,
        now: Instant,
        wall_ms: u64,
        agents: &[AgentHealth],
    ) -> Vec<Notification> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let matching: Vec<&str> = agents
                .iter()
                .filter(|a| rule.selects(a) && satisfies(a.state, rule.health))
                .map(|a| a.agent.as_str())
                .collect();
            let holds = !matching.is_empty();
            if !holds {
                self.holding_since.remove(&rule.name);
                if self.firing.remove(&rule.name) {
                    out.push(notification(rule, "resolved", &matching, wall_ms));
                }
                continue;
            }
            let since = *self.holding_since.entry(rule.name.clone()).or_insert(now);
            if now.duration_since(since) >= rule.hold && self.firing.insert(rule.name.clone()) {
                out.push(notification(rule, "firing", &matching, wall_ms));
            }
        }
        out
    }
}

fn notification(
    rule: &AlertRule,
    status: &'static str,
    agents: &[&str],
    wall_ms: u64,
) -> Notification {
    Notification {
        rule: rule.name.clone(),
        status,
        body: json!({
            "rule": rule.name,
            "status": status,
            "severity": rule.severity,
            "health": rule.health.as_str(),
            "agents": agents,
            "atMs": wall_ms,
        }),
        webhooks: rule.webhooks.clone(),
    }
}

/// `sha256=<hex HMAC-SHA256 of body under key>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&[0]).expect("HMAC takes any key length")
    });
    mac.update(body);
    format!(
        "sha256={}",
        super::tokens::hex(&mac.finalize().into_bytes())
    )
}

/// Whether `header` is the signature of `body` under `key` (constant time).
pub fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(bytes) = header
        .strip_prefix("sha256=")
        .and_then(super::tokens::unhex)
    else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// POSTs `body` to `url`, signed with `key` when given, retrying
/// [`WEBHOOK_ATTEMPTS`] times on errors and 5xx.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    key: Option<&[u8]>,
    body: &Value,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..WEBHOOK_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        let mut request = http
            .post(url)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(10))
            .body(bytes.clone());
        if let Some(key) = key {
            request = request.header(SIGNATURE_HEADER, signature(key, &bytes));
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                return Err(format!("{url} answered {}", r.status()));
            }
            Ok(r) => last = format!("{url} answered {}", r.status()),
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: an answer computed outside cortex, so the
    /// signature is checked against HMAC-SHA256 itself, not against
    /// cortex's own `verify`.
    #[test]
    fn webhook_signatures_are_hmac_sha256_known_answer() {
        let expected = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            expected
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", expected));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", expected));
    }

    fn rule(hold: u64) -> AlertRule {
        AlertRule {
            name: "agent-down".into(),
            health: HealthState::Unhealthy,
            hold: Duration::from_secs(hold),
            agent: None,
            selector: BTreeMap::from([("team".into(), "support".into())]),
            severity: "critical".into(),
            webhooks: vec![],
        }
    }

    fn agent(state: HealthState, team: &str) -> AgentHealth {
        AgentHealth {
            agent: "triage".into(),
            labels: BTreeMap::from([("team".into(), team.into())]),
            state,
        }
    }

    #[test]
    fn fires_after_holding_for_its_duration_and_resolves_once() {
        let mut engine = AlertEngine::new(vec![rule(120)]);
        let t0 = Instant::now();
        let down = [agent(HealthState::Unhealthy, "support")];
        assert!(engine.evaluate(t0, 0, &down).is_empty());
        assert!(
            engine
                .evaluate(t0 + Duration::from_secs(119), 0, &down)
                .is_empty()
        );
        let fired = engine.evaluate(t0 + Duration::from_secs(120), 0, &down);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, "firing");
        assert_eq!(fired[0].body["agents"], json!(["triage"]));
        assert!(
            engine
                .evaluate(t0 + Duration::from_secs(200), 0, &down)
                .is_empty(),
            "fires once"
        );
        let up = [agent(HealthState::Healthy, "support")];
        let resolved = engine.evaluate(t0 + Duration::from_secs(201), 0, &up);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, "resolved");
        assert!(
            engine
                .evaluate(t0 + Duration::from_secs(202), 0, &up)
                .is_empty()
        );
    }

    #[test]
    fn a_blip_shorter_than_for_never_fires_and_the_selector_filters() {
        let mut engine = AlertEngine::new(vec![rule(60)]);
        let t0 = Instant::now();
        engine.evaluate(t0, 0, &[agent(HealthState::Unhealthy, "support")]);
        engine.evaluate(
            t0 + Duration::from_secs(30),
            0,
            &[agent(HealthState::Healthy, "support")],
        );
        assert!(
            engine
                .evaluate(
                    t0 + Duration::from_secs(61),
                    0,
                    &[agent(HealthState::Unhealthy, "support")]
                )
                .is_empty()
        );
        let other = [agent(HealthState::Unhealthy, "billing")];
        assert!(
            engine
                .evaluate(t0 + Duration::from_secs(500), 0, &other)
                .is_empty()
        );
    }

    #[test]
    fn signatures_verify_and_tampering_does_not() {
        let sig = signature(b"key", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(b"key", b"{\"a\":1}", &sig));
        assert!(!verify(b"key", b"{\"a\":2}", &sig));
        assert!(!verify(b"other", b"{\"a\":1}", &sig));
        assert!(!verify(b"key", b"{\"a\":1}", "sha256=zz"));
    }
}
