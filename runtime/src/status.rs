//! What the runtime shows: every agent replica's state, restarts and
//! problems; queue figures; firing alerts. Kept in memory (the board),
//! served as JSON on `/v1/status` and as gauges on `/metrics`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::broker::InboxStats;
use super::health::HealthState;
use super::supervisor::Report;

/// One replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Index.
    pub replica: u32,
    /// State.
    pub state: HealthState,
    /// Last detail (check error, exit status).
    pub detail: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Since when (ms since the epoch).
    pub since_ms: u64,
}

/// One agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// Whether cortex runs it (`local.command`); others connect on their own.
    pub local: bool,
    /// Its replicas.
    pub replicas: Vec<ReplicaStatus>,
    /// Problems that keep it from running as specified (command not
    /// found, a secret not set).
    pub problems: Vec<String>,
}

impl AgentStatus {
    /// The worst state of its replicas (`None` without replicas).
    pub fn worst(&self) -> Option<HealthState> {
        let rank = |s: HealthState| match s {
            HealthState::Healthy => 0,
            HealthState::Stopped => 1,
            HealthState::Starting => 2,
            HealthState::Degraded => 3,
            HealthState::Restarting => 4,
            HealthState::Unhealthy => 5,
            HealthState::Failed => 6,
        };
        self.replicas
            .iter()
            .map(|r| r.state)
            .max_by_key(|s| rank(*s))
    }
}

/// The whole runtime's status (`GET /v1/status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStatus {
    /// Project.
    pub project: String,
    /// The applied revision running.
    pub revision: u64,
    /// The broker's URL.
    pub url: String,
    /// Agents by name.
    pub agents: BTreeMap<String, AgentStatus>,
    /// Queue figures per inbox.
    pub queues: Vec<InboxStatsView>,
    /// Alert rules firing.
    pub alerts_firing: Vec<String>,
    /// Agent state scopes: declared ones and those written, with their
    /// revision and key count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<crate::store::ScopeStats>,
}

/// [`InboxStats`] in the status JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxStatsView {
    /// The agent.
    pub inbox: String,
    /// Ready messages.
    pub depth: usize,
    /// In flight.
    pub in_flight: usize,
    /// Dead letters.
    pub dead_letters: usize,
    /// Capacity.
    pub capacity: usize,
}

impl From<InboxStats> for InboxStatsView {
    fn from(s: InboxStats) -> Self {
        InboxStatsView {
            inbox: s.inbox,
            depth: s.depth,
            in_flight: s.in_flight,
            dead_letters: s.dead_letters,
            capacity: s.capacity,
        }
    }
}

/// The replicas' live states.
#[derive(Debug, Default)]
pub struct Board {
    /// Agents by name.
    pub agents: BTreeMap<String, AgentStatus>,
}

impl Board {
    /// Takes a supervisor report.
    pub fn record(&mut self, report: &Report, at_ms: u64) {
        let agent = self.agents.entry(report.agent.clone()).or_default();
        agent.local = true;
        let status = ReplicaStatus {
            replica: report.replica,
            state: report.state,
            detail: report.detail.clone(),
            restarts: report.restarts,
            pid: report.pid,
            since_ms: at_ms,
        };
        match agent
            .replicas
            .iter_mut()
            .find(|r| r.replica == report.replica)
        {
            Some(r) => *r = status,
            None => {
                agent.replicas.push(status);
                agent.replicas.sort_by_key(|r| r.replica);
            }
        }
    }
}

/// Renders a status as the table `cortex status` prints.
pub fn render_table(status: &RuntimeStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — revision {} — broker {}",
        status.project, status.revision, status.url
    );
    let _ = writeln!(
        out,
        "\n{:<20} {:<11} {:>8} {:>9}  detail",
        "AGENT", "HEALTH", "REPLICAS", "RESTARTS"
    );
    for (name, agent) in &status.agents {
        let health = if agent.local {
            agent.worst().map_or("-", HealthState::as_str).to_string()
        } else {
            "external".to_string()
        };
        let up = agent
            .replicas
            .iter()
            .filter(|r| r.state == HealthState::Healthy)
            .count();
        let restarts: u32 = agent.replicas.iter().map(|r| r.restarts).sum();
        let detail = agent
            .problems
            .first()
            .cloned()
            .or_else(|| {
                agent
                    .replicas
                    .iter()
                    .find(|r| r.state != HealthState::Healthy)
                    .map(|r| format!("#{}: {}", r.replica, r.detail))
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{name:<20} {health:<11} {:>8} {restarts:>9}  {detail}",
            format!("{up}/{}", agent.replicas.len())
        );
    }
    let _ = writeln!(
        out,
        "\n{:<20} {:>7} {:>9} {:>6} {:>9}",
        "INBOX", "DEPTH", "IN FLIGHT", "DEAD", "CAPACITY"
    );
    for q in &status.queues {
        let _ = writeln!(
            out,
            "{:<20} {:>7} {:>9} {:>6} {:>9}",
            q.inbox, q.depth, q.in_flight, q.dead_letters, q.capacity
        );
    }
    if !status.states.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>9} {:>7}",
            "STATE SCOPE", "VERSION", "KEYS"
        );
        for s in &status.states {
            let _ = writeln!(out, "{:<24} {:>9} {:>7}", s.scope, s.version, s.keys);
        }
    }
    if !status.alerts_firing.is_empty() {
        let _ = writeln!(out, "\nalerts firing: {}", status.alerts_firing.join(", "));
    }
    out
}
