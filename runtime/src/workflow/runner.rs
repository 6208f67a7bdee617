//! Runs the attempts of one execution's tasks by their kind: an `agent`
//! task is a request to the agent through the broker (its reply is the
//! output; the request's key is the attempt's idempotency key), a `run`
//! task a local command ([`super::command`]). Each execution gets its own
//! runner over the definition it started with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cortex_compiler::runtime_config::WorkflowEntry;
use serde_json::Value;

use crate::broker::{Broker, BrokerError, Principal};
use crate::store::BoxFuture;
use crate::workflow::command::{self, CommandTask};
use crate::workflow::driver::{Attempt, TaskRunner};

/// `<execution>/<task>/<attempt>`: new for every attempt, the same for a
/// repeat of one (an agent or command can tell them apart).
pub fn idempotency_key(execution: &str, task: &str, attempt: u32) -> String {
    format!("{execution}/{task}/{attempt}")
}

/// The task runner of one execution.
pub struct ExecutionRunner {
    /// The definition the execution runs.
    pub workflow: Arc<WorkflowEntry>,
    /// Where agent tasks send their requests.
    pub broker: Arc<Broker>,
    /// The project directory (`run` tasks' working directory).
    pub project: PathBuf,
}

impl TaskRunner for ExecutionRunner {
    fn run(&self, attempt: Attempt) -> BoxFuture<'static, Result<Value, String>> {
        let Some(task) = self.workflow.tasks.get(&attempt.task).cloned() else {
            let name = attempt.task;
            return Box::pin(async move { Err(format!("the workflow has no task `{name}`")) });
        };
        let timeout = Duration::from_millis(task.timeout_ms);
        let key = idempotency_key(&attempt.execution, &attempt.task, attempt.number);
        if let Some(agent) = task.agent {
            let broker = self.broker.clone();
            return Box::pin(async move {
                let payload = attempt.input.to_string();
                let reply = broker
                    .request(&Principal::Operator, &agent, Some(&key), &payload, timeout)
                    .await
                    .map_err(|e| match e {
                        BrokerError::Timeout { ms, .. } => {
                            format!("timed out after {ms} ms: agent `{agent}` did not reply")
                        }
                        other => format!("request to agent `{agent}` failed: {other}"),
                    })?;
                serde_json::from_str(&reply)
                    .map_err(|e| format!("agent `{agent}` replied with something not JSON: {e}"))
            });
        }
        let Some(run) = task.run else {
            let name = attempt.task;
            return Box::pin(async move {
                Err(format!(
                    "task `{name}` names neither an agent nor a command"
                ))
            });
        };
        let project = self.project.clone();
        Box::pin(async move {
            command::run(&CommandTask {
                command: &run.command,
                project: &project,
                input: &attempt.input,
                execution: &attempt.execution,
                task: &attempt.task,
                attempt: attempt.number,
                timeout,
            })
            .await
        })
    }
}
