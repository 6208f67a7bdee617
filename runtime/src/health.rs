//! Health checks of local agents (http, tcp, exec) and the state machine
//! their results drive: starting → healthy; a failure makes a healthy
//! replica degraded; `failureThreshold` failures in a row make it unhealthy
//! (and the supervisor restarts it); a success makes it healthy again.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::BoxFuture;
use cortex_compiler::runtime_config::{HealthCheck, HealthEntry, PortRef};

/// The state of one agent replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Started, no check has passed yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// Failing, fewer than `failureThreshold` times in a row.
    Degraded,
    /// Failed `failureThreshold` times in a row.
    Unhealthy,
    /// Waiting out the backoff before a restart.
    Restarting,
    /// Stopped by cortex.
    Stopped,
    /// Cannot be started as specified (a spawn error no retry can mend,
    /// such as a NUL character in its environment); not retried until a
    /// new revision changes the agent.
    Failed,
}

impl HealthState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Restarting => "restarting",
            HealthState::Stopped => "stopped",
            HealthState::Failed => "failed",
        }
    }

    /// Every state, for metrics.
    pub const ALL: [HealthState; 7] = [
        HealthState::Starting,
        HealthState::Healthy,
        HealthState::Degraded,
        HealthState::Unhealthy,
        HealthState::Restarting,
        HealthState::Stopped,
        HealthState::Failed,
    ];
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `GET http://127.0.0.1:{port}{path}` answers 2xx or 3xx.
    Http {
        /// Port (after named ports are resolved).
        port: u16,
        /// Path.
        path: String,
    },
    /// A TCP connection to `127.0.0.1:{port}` opens.
    Tcp {
        /// Port.
        port: u16,
    },
    /// The command exits 0.
    Exec {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// An agent's `health` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// The check, when the agent has one.
    pub check: Option<Check>,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Failures in a row that make a replica unhealthy.
    pub failure_threshold: u32,
}

impl HealthSettings {
    /// From a runtime.json `health` entry; `port` resolves a port name or
    /// number to the port the replica really listens on.
    pub fn from_runtime(
        entry: Option<&HealthEntry>,
        port: impl Fn(&PortRef) -> Option<u16>,
    ) -> HealthSettings {
        let base = HealthEntry::default();
        let entry = entry.unwrap_or(&base);
        let check = entry.check.as_ref().and_then(|c| match c {
            HealthCheck::Http { path, port: p } => Some(Check::Http {
                port: port(p)?,
                path: path.clone().unwrap_or_else(|| "/".to_string()),
            }),
            HealthCheck::Tcp { port: p } => Some(Check::Tcp { port: port(p)? }),
            HealthCheck::Exec { command } => Some(Check::Exec {
                command: command.clone(),
            }),
        });
        HealthSettings {
            check,
            interval: Duration::from_millis(entry.interval_ms),
            timeout: Duration::from_millis(entry.timeout_ms),
            failure_threshold: entry.failure_threshold.max(1),
        }
    }
}

/// Runs one check.
pub trait Probe: Send + Sync {
    /// `Ok` when healthy; `Err` says what failed.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The real probe of a local replica.
#[derive(Clone, Debug)]
pub struct LocalProbe {
    /// What to run.
    pub check: Check,
    /// Environment for exec checks.
    pub env: Vec<(String, String)>,
    /// HTTP client (shared).
    pub http: reqwest::Client,
}

impl Probe for LocalProbe {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match &self.check {
                Check::Http { port, path } => {
                    let url = format!("http://127.0.0.1:{port}{path}");
                    let response = self
                        .http
                        .get(&url)
                        .send()
                        .await
                        .map_err(|e| format!("GET {url}: {e}"))?;
                    let status = response.status();
                    if status.is_success() || status.is_redirection() {
                        Ok(())
                    } else {
                        Err(format!("GET {url}: {status}"))
                    }
                }
                Check::Tcp { port } => tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect 127.0.0.1:{port}: {e}")),
                Check::Exec { command } => {
                    let Some((program, args)) = command.split_first() else {
                        return Err("exec check without a command".into());
                    };
                    let status = tokio::process::Command::new(program)
                        .args(args)
                        .envs(self.env.iter().map(|(k, v)| (k, v)))
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .status()
                        .await
                        .map_err(|e| format!("{program}: {e}"))?;
                    if status.success() {
                        Ok(())
                    } else {
                        Err(format!("{program} exited with {status}"))
                    }
                }
            }
        })
    }
}

/// Turns check results into states.
#[derive(Clone, Debug)]
pub struct Tracker {
    threshold: u32,
    failures: u32,
    state: HealthState,
}

impl Tracker {
    /// A replica that just started.
    pub fn new(threshold: u32) -> Tracker {
        Tracker {
            threshold: threshold.max(1),
            failures: 0,
            state: HealthState::Starting,
        }
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Takes one check result; returns the new state when it changed.
    pub fn observe(&mut self, result: &Result<(), String>) -> Option<HealthState> {
        let next = match result {
            Ok(()) => {
                self.failures = 0;
                HealthState::Healthy
            }
            Err(_) => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    HealthState::Unhealthy
                } else if self.state == HealthState::Starting {
                    HealthState::Starting
                } else {
                    HealthState::Degraded
                }
            }
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_degrade_then_make_unhealthy_and_a_success_heals() {
        let mut t = Tracker::new(3);
        let fail = Err("down".to_string());
        assert_eq!(t.observe(&Ok(())), Some(HealthState::Healthy));
        assert_eq!(t.observe(&fail), Some(HealthState::Degraded));
        assert_eq!(t.observe(&fail), None);
        assert_eq!(t.observe(&fail), Some(HealthState::Unhealthy));
        assert_eq!(t.failures(), 3);
        assert_eq!(t.observe(&Ok(())), Some(HealthState::Healthy));
        assert_eq!(t.failures(), 0);
    }

    #[test]
    fn a_replica_failing_from_the_start_stays_starting_until_unhealthy() {
        let mut t = Tracker::new(2);
        let fail = Err("refused".to_string());
        assert_eq!(t.observe(&fail), None);
        assert_eq!(t.observe(&fail), Some(HealthState::Unhealthy));
    }

    #[test]
    fn named_ports_and_defaults_are_resolved() {
        let value = serde_json::json!({"check": {"http": {"path": "/healthz", "port": "http"}}, "intervalMs": 500});
        let entry: HealthEntry = serde_json::from_value(value).expect("a health entry");
        let s = HealthSettings::from_runtime(Some(&entry), |p| {
            (*p == PortRef::Name("http".into())).then_some(4321)
        });
        assert_eq!(
            s.check,
            Some(Check::Http {
                port: 4321,
                path: "/healthz".into()
            })
        );
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(s.failure_threshold, 3);
    }
}
