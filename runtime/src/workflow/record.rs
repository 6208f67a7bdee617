//! The store as a [`Recorder`]: each transition of an execution becomes
//! the store write that makes it durable (the task's latest record, or the
//! execution's end), and a stored execution's tasks become the records an
//! [`Execution`](super::Execution) resumes from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::broker::Journal;
use crate::store::{BoxFuture, Op, StoredTask, now_ms};
use crate::workflow::driver::{Recorder, Transition};
use crate::workflow::execution::{ExecutionState, TaskRun, TaskState};

/// Records transitions in a store.
pub struct StoreRecorder {
    journal: Journal,
    /// When each running attempt started and the attempts before its
    /// retry budget, by (execution, task).
    started: Mutex<HashMap<(String, String), (u64, u32)>>,
}

impl StoreRecorder {
    /// A recorder writing through `journal` (the runtime's group commit).
    pub fn new(journal: Journal) -> StoreRecorder {
        StoreRecorder {
            journal,
            started: Mutex::new(HashMap::new()),
        }
    }

    /// When the attempt of `task` started and its attempts before the
    /// current retry budget (forgotten: the attempt is over).
    fn take_started(&self, execution: &str, task: &str) -> (Option<u64>, u32) {
        self.started
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&(execution.to_string(), task.to_string())))
            .map_or((None, 0), |(at, earlier)| (Some(at), earlier))
    }

    fn task_op(&self, execution: &str, task: &str, record: StoredTask) -> Op {
        Op::Task {
            execution: execution.to_string(),
            task: task.to_string(),
            record,
        }
    }
}

/// A state's name as it is stored (`running`, `succeeded`…): its serde name.
fn state_name(state: impl serde::Serialize) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Recorder for StoreRecorder {
    fn record(&self, execution: &str, transition: Transition) -> BoxFuture<'_, Result<(), String>> {
        let now = now_ms();
        let key = |task: &str| (execution.to_string(), task.to_string());
        let op = match transition {
            Transition::Started {
                task,
                attempt,
                earlier_attempts,
            } => {
                if let Ok(mut started) = self.started.lock() {
                    started.insert(key(&task), (now, earlier_attempts));
                }
                self.task_op(
                    execution,
                    &task,
                    StoredTask {
                        state: state_name(TaskState::Running),
                        attempts: attempt,
                        output: None,
                        error: None,
                        started_ms: Some(now),
                        finished_ms: None,
                        earlier_attempts,
                    },
                )
            }
            Transition::Succeeded {
                task,
                attempt,
                output,
            } => {
                let (started, earlier_attempts) = self.take_started(execution, &task);
                self.task_op(
                    execution,
                    &task,
                    StoredTask {
                        state: state_name(TaskState::Succeeded),
                        attempts: attempt,
                        output: Some(output),
                        error: None,
                        started_ms: started,
                        finished_ms: Some(now),
                        earlier_attempts,
                    },
                )
            }
            Transition::Failed {
                task,
                attempt,
                error,
                retry,
            } => {
                let (started, earlier_attempts) = self.take_started(execution, &task);
                let state = if retry {
                    TaskState::Pending
                } else {
                    TaskState::Failed
                };
                self.task_op(
                    execution,
                    &task,
                    StoredTask {
                        state: state_name(state),
                        attempts: attempt,
                        output: None,
                        error: Some(error),
                        started_ms: started,
                        finished_ms: (!retry).then_some(now),
                        earlier_attempts,
                    },
                )
            }
            Transition::Finished { state, stopped } => {
                let mut ops: Vec<Op> = stopped
                    .into_iter()
                    .map(|(task, run)| {
                        let (started, _) = self.take_started(execution, &task);
                        self.task_op(
                            execution,
                            &task,
                            StoredTask {
                                state: state_name(run.state),
                                attempts: run.attempts,
                                output: None,
                                error: run.error,
                                started_ms: started,
                                finished_ms: Some(now),
                                earlier_attempts: run.earlier_attempts,
                            },
                        )
                    })
                    .collect();
                ops.push(Op::ExecutionState {
                    id: execution.to_string(),
                    state: state_name(state),
                    finished_ms: (state != ExecutionState::Running).then_some(now),
                });
                let durable = self.journal.submit(ops);
                return Box::pin(async move { durable.wait().await.map_err(|e| e.to_string()) });
            }
        };
        let durable = self.journal.submit(vec![op]);
        Box::pin(async move { durable.wait().await.map_err(|e| e.to_string()) })
    }
}

/// The task records of a stored execution, as [`Execution::restore`]
/// (super::Execution::restore) takes them (unknown states are left out:
/// those tasks start over).
pub fn recorded_tasks(tasks: &BTreeMap<String, StoredTask>) -> BTreeMap<String, TaskRun> {
    tasks
        .iter()
        .filter_map(|(name, t)| {
            let state: TaskState =
                serde_json::from_value(serde_json::Value::String(t.state.clone())).ok()?;
            Some((
                name.clone(),
                TaskRun {
                    state,
                    attempts: t.attempts,
                    output: t.output.clone(),
                    error: t.error.clone(),
                    retry_at: None,
                    earlier_attempts: t.earlier_attempts,
                },
            ))
        })
        .collect()
}
