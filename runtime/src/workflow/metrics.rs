//! The workflow runtime's metrics: executions by workflow and state,
//! queued and running executions, task durations and retries. A
//! [`Metered`] recorder counts each transition as it is recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::metrics::{Histogram, TASK_BUCKETS, family, label};
use crate::store::BoxFuture;
use crate::workflow::driver::{Recorder, Transition};
use crate::workflow::execution::ExecutionState;

/// Counters and gauges of the workflow runtime.
#[derive(Debug)]
pub struct WorkflowMetrics {
    /// Executions that ended, by (workflow, state).
    finished: Mutex<BTreeMap<(String, String), u64>>,
    /// Executions running and queued now, by workflow.
    active: Mutex<BTreeMap<String, (usize, usize)>>,
    /// Failed attempts that were retried, by workflow.
    retries: Mutex<BTreeMap<String, u64>>,
    /// How long task attempts took.
    pub task_duration: Histogram,
}

impl Default for WorkflowMetrics {
    fn default() -> WorkflowMetrics {
        WorkflowMetrics {
            finished: Mutex::default(),
            active: Mutex::default(),
            retries: Mutex::default(),
            task_duration: Histogram::with_bounds(&TASK_BUCKETS),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorkflowMetrics {
    /// An execution of `workflow` ended in `state`.
    pub fn finished(&self, workflow: &str, state: ExecutionState) {
        let state = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *lock(&self.finished)
            .entry((workflow.to_string(), state))
            .or_default() += 1;
    }

    /// `running` and `queued` executions of `workflow` now.
    pub fn set_active(&self, workflow: &str, running: usize, queued: usize) {
        lock(&self.active).insert(workflow.to_string(), (running, queued));
    }

    /// Executions that ended in `state` (all workflows).
    pub fn finished_count(&self, state: &str) -> u64 {
        lock(&self.finished)
            .iter()
            .filter(|((_, s), _)| s == state)
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes the families.
    pub fn render(&self, out: &mut String) {
        let finished: Vec<(String, f64)> = lock(&self.finished)
            .iter()
            .map(|((w, s), n)| {
                (
                    format!("{{workflow=\"{}\",state=\"{s}\"}}", label(w)),
                    *n as f64,
                )
            })
            .collect();
        family(
            out,
            "cortex_workflow_executions_total",
            "counter",
            "Executions that ended, by workflow and final state.",
            &finished,
        );
        let mut active = Vec::new();
        for (w, (running, queued)) in lock(&self.active).iter() {
            active.push((
                format!("{{workflow=\"{}\",state=\"running\"}}", label(w)),
                *running as f64,
            ));
            active.push((
                format!("{{workflow=\"{}\",state=\"queued\"}}", label(w)),
                *queued as f64,
            ));
        }
        family(
            out,
            "cortex_workflow_executions_active",
            "gauge",
            "Executions running or queued now, by workflow.",
            &active,
        );
        let retries: Vec<(String, f64)> = lock(&self.retries)
            .iter()
            .map(|(w, n)| (format!("{{workflow=\"{}\"}}", label(w)), *n as f64))
            .collect();
        family(
            out,
            "cortex_workflow_task_retries_total",
            "counter",
            "Failed task attempts that were retried, by workflow.",
            &retries,
        );
        self.task_duration.render(
            out,
            "cortex_workflow_task_duration_seconds",
            "How long task attempts took (succeeded or failed).",
        );
    }
}

/// A recorder that counts what it records, then hands it on.
pub struct Metered<'a> {
    /// The recorder that makes transitions durable.
    pub inner: &'a dyn Recorder,
    /// Where counts go.
    pub metrics: &'a WorkflowMetrics,
    /// The execution's workflow.
    pub workflow: &'a str,
    /// When each running attempt started, by task.
    pub started: Mutex<HashMap<String, Instant>>,
}

impl Recorder for Metered<'_> {
    fn record(&self, execution: &str, transition: Transition) -> BoxFuture<'_, Result<(), String>> {
        match &transition {
            Transition::Started { task, .. } => {
                lock(&self.started).insert(task.clone(), Instant::now());
            }
            Transition::Succeeded { task, .. } | Transition::Failed { task, .. } => {
                if let Some(at) = lock(&self.started).remove(task) {
                    self.metrics.task_duration.observe(at.elapsed());
                }
                if matches!(transition, Transition::Failed { retry: true, .. }) {
                    *lock(&self.metrics.retries)
                        .entry(self.workflow.to_string())
                        .or_default() += 1;
                }
            }
            Transition::Finished { .. } => {}
        }
        self.inner.record(execution, transition)
    }
}
