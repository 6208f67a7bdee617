//! One loop per agent replica: start the process, check its health at its
//! interval (with jitter), and restart it with backoff when it exits or
//! turns unhealthy; stop it on shutdown. A start that can never succeed as
//! specified is reported once, as `failed`, not retried. Every state change
//! is reported.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::backoff::{Backoff, STABLE_PERIOD};
use super::health::{HealthSettings, HealthState, Probe, Tracker};
use super::process::Launcher;

/// Spread of check times: ±10 % of the interval, so thousands of agents
/// started together do not check in lockstep.
pub const JITTER: f64 = 0.1;

/// The first check of a new process comes after this (or its interval when
/// shorter), so a started agent is seen healthy quickly.
pub const FIRST_CHECK: Duration = Duration::from_secs(1);

/// One replica to supervise.
#[derive(Clone, Debug)]
pub struct ReplicaSpec {
    /// The agent.
    pub agent: String,
    /// Replica index.
    pub replica: u32,
    /// Its checks.
    pub health: HealthSettings,
    /// Its restart backoff.
    pub backoff: Backoff,
}

/// A state change of a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The agent.
    pub agent: String,
    /// Replica index.
    pub replica: u32,
    /// The new state.
    pub state: HealthState,
    /// Why (check error, exit status, next restart delay).
    pub detail: String,
    /// Restarts so far.
    pub restarts: u32,
    /// The process id while running.
    pub pid: Option<u32>,
}

/// Receives reports.
pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

fn jittered(interval: Duration) -> Duration {
    let unit = (getrandom::u64().unwrap_or(0) % 2001) as f64 / 1000.0 - 1.0; // -1..=1
    interval.mul_f64((1.0 + JITTER * unit).max(0.0))
}

/// Supervises one replica until `shutdown` turns true.
pub async fn run_replica(
    spec: ReplicaSpec,
    launcher: Arc<dyn Launcher>,
    probe: Option<Arc<dyn Probe>>,
    report: Reporter,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut restarts = 0u32;
    let mut failures_in_a_row = 0u32;
    let send = |state: HealthState, detail: String, restarts: u32, pid: Option<u32>| {
        report(Report {
            agent: spec.agent.clone(),
            replica: spec.replica,
            state,
            detail,
            restarts,
            pid,
        });
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let why = match launcher.launch().await {
            Err(e) if e.permanent => {
                // Reported once; a new revision that changes the agent starts it again.
                send(
                    HealthState::Failed,
                    format!("{e}; not retried: fix the agent's spec and apply again"),
                    restarts,
                    None,
                );
                let _ = shutdown.wait_for(|s| *s).await;
                send(
                    HealthState::Stopped,
                    "stopped by cortex".into(),
                    restarts,
                    None,
                );
                return;
            }
            Err(e) => e.message,
            Ok(mut process) => {
                let pid = process.pid();
                send(HealthState::Starting, "started".into(), restarts, pid);
                let mut tracker = Tracker::new(spec.health.failure_threshold);
                let mut next_check =
                    Instant::now() + jittered(spec.health.interval.min(FIRST_CHECK));
                loop {
                    tokio::select! {
                        status = process.wait() => break format!("exited ({status})"),
                        _ = tokio::time::sleep_until(next_check), if probe.is_some() => {
                            let result = match &probe {
                                Some(p) => match tokio::time::timeout(spec.health.timeout, p.check()).await {
                                    Ok(r) => r,
                                    Err(_) => Err(format!("no answer within {} ms", spec.health.timeout.as_millis())),
                                },
                                None => Ok(()),
                            };
                            next_check = Instant::now() + jittered(spec.health.interval);
                            if let Some(state) = tracker.observe(&result) {
                                let detail = result.as_ref().err().cloned().unwrap_or_else(|| "check passed".into());
                                send(state, detail.clone(), restarts, pid);
                                if state == HealthState::Unhealthy {
                                    process.stop().await;
                                    break format!("unhealthy after {} failed checks ({detail})", tracker.failures());
                                }
                            }
                        }
                        _ = shutdown.changed() => {
                            process.stop().await;
                            send(HealthState::Stopped, "stopped by cortex".into(), restarts, None);
                            return;
                        }
                    }
                }
            }
        };
        if started.elapsed() >= STABLE_PERIOD {
            failures_in_a_row = 0;
        }
        let delay = spec.backoff.delay(failures_in_a_row);
        failures_in_a_row = failures_in_a_row.saturating_add(1);
        restarts += 1;
        send(
            HealthState::Restarting,
            format!("{why}; restarting in {} ms", delay.as_millis()),
            restarts,
            None,
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {
                send(HealthState::Stopped, "stopped by cortex".into(), restarts, None);
                return;
            }
        }
    }
}
