//! One execution of a workflow as a state machine: which tasks may start
//! now (ready-set scheduling — a task is ready as soon as every task it
//! depends on succeeded, up to `concurrency` at once, no level barriers),
//! what a task's success or failure does (retries with backoff, then
//! `onFailure`), and when the execution is over. Pure: no clock of its own
//! (callers pass `now`), no I/O; the runtime persists each transition it
//! reports before acting on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cortex_compiler::runtime_config::WorkflowEntry;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use crate::backoff::Backoff;

/// Where an execution is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    /// Waiting for room under `maxActiveExecutions` (or a paused workflow).
    Queued,
    /// Tasks are running or ready.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// A task failed for good.
    Failed,
    /// An operator cancelled it.
    Cancelled,
}

/// Where a task of an execution is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not started yet (or waiting for a retry).
    Pending,
    /// An attempt is running.
    Running,
    /// Done; its output is kept.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// It will not run: a task it depends on failed, or the execution
    /// stopped (`fail-fast`).
    Skipped,
    /// The execution was cancelled before it finished.
    Cancelled,
}

/// One task's progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRun {
    /// Where it is.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Its output, once it succeeded.
    pub output: Option<Value>,
    /// Why its last attempt failed.
    pub error: Option<String>,
    /// When a retry may start (set while it waits for one).
    #[serde(skip)]
    pub retry_at: Option<Instant>,
    /// Attempts made before its current retry budget began: an operator's
    /// retry of a failed execution gives the task `retries.limit` retries
    /// again while its attempts keep counting (so idempotency keys stay new).
    #[serde(default)]
    pub earlier_attempts: u32,
}

impl TaskRun {
    fn new() -> TaskRun {
        TaskRun {
            state: TaskState::Pending,
            attempts: 0,
            output: None,
            error: None,
            retry_at: None,
            earlier_attempts: 0,
        }
    }
}

/// What a failed attempt leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Another attempt, no earlier than this.
    Retry {
        /// When it may start.
        at: Instant,
        /// The attempt it will be (1-based).
        attempt: u32,
    },
    /// The task failed for good.
    Failed,
}

/// One execution of a workflow. Kept incrementally, so that each step
/// costs in proportion to the tasks it touches, not to the workflow's
/// size: how many tasks are in each state, how many dependencies of each
/// task have not succeeded, and which pending tasks have none left.
#[derive(Clone, Debug)]
pub struct Execution {
    workflow: Arc<WorkflowEntry>,
    tasks: BTreeMap<String, TaskRun>,
    /// Each task's position in the workflow's order.
    position: HashMap<String, usize>,
    /// The tasks depending on each task, by position.
    dependents: Arc<Vec<Vec<usize>>>,
    /// Dependencies of each task (by position) that have not succeeded.
    unmet: Vec<usize>,
    /// Pending tasks whose dependencies all succeeded, by position (those
    /// waiting for a retry too: [`Execution::ready`] checks the time).
    ready: BTreeSet<usize>,
    /// Tasks in each [`TaskState`].
    counts: [usize; 6],
    /// `fail-fast` tripped: nothing new starts.
    stopping: bool,
    cancelled: bool,
}

impl Execution {
    /// A new execution of `workflow`, every task pending.
    pub fn new(workflow: Arc<WorkflowEntry>) -> Execution {
        let tasks: BTreeMap<String, TaskRun> = workflow
            .tasks
            .keys()
            .map(|name| (name.clone(), TaskRun::new()))
            .collect();
        let position: HashMap<String, usize> = workflow
            .order
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        let mut dependents = vec![Vec::new(); workflow.order.len()];
        let mut unmet = vec![0; workflow.order.len()];
        for (i, name) in workflow.order.iter().enumerate() {
            let Some(entry) = workflow.tasks.get(name) else {
                continue;
            };
            for dep in &entry.depends_on {
                if let Some(&d) = position.get(dep) {
                    dependents[d].push(i);
                    unmet[i] += 1;
                }
            }
        }
        let ready = (0..workflow.order.len())
            .filter(|&i| unmet[i] == 0 && tasks.contains_key(&workflow.order[i]))
            .collect();
        let mut counts = [0; 6];
        counts[TaskState::Pending as usize] = tasks.len();
        Execution {
            workflow,
            tasks,
            position,
            dependents: Arc::new(dependents),
            unmet,
            ready,
            counts,
            stopping: false,
            cancelled: false,
        }
    }

    /// Moves `task` to `state`, keeping the counts, the unmet dependencies
    /// of its dependents and the ready set true.
    fn set(&mut self, task: &str, state: TaskState) {
        let Some(run) = self.tasks.get_mut(task) else {
            return;
        };
        let old = run.state;
        if old == state {
            return;
        }
        run.state = state;
        self.counts[old as usize] -= 1;
        self.counts[state as usize] += 1;
        let Some(&at) = self.position.get(task) else {
            return;
        };
        if state == TaskState::Pending && self.unmet[at] == 0 {
            self.ready.insert(at);
        } else {
            self.ready.remove(&at);
        }
        if state == TaskState::Succeeded || old == TaskState::Succeeded {
            for &d in &self.dependents[at] {
                if state == TaskState::Succeeded {
                    self.unmet[d] -= 1;
                } else {
                    self.unmet[d] += 1;
                }
                let pending = self
                    .tasks
                    .get(&self.workflow.order[d])
                    .is_some_and(|t| t.state == TaskState::Pending);
                if self.unmet[d] == 0 && pending {
                    self.ready.insert(d);
                } else {
                    self.ready.remove(&d);
                }
            }
        }
    }

    /// An execution resumed from its recorded tasks (after a restart):
    /// succeeded tasks keep their output and never run again; a task that
    /// was running runs again as a new attempt; failed, skipped and
    /// cancelled tasks stay so (a failure under `fail-fast` keeps the
    /// execution stopping).
    pub fn restore(workflow: Arc<WorkflowEntry>, recorded: BTreeMap<String, TaskRun>) -> Execution {
        let mut execution = Execution::new(workflow);
        for (name, run) in recorded {
            let Some(slot) = execution.tasks.get_mut(&name) else {
                continue;
            };
            let state = match run.state {
                TaskState::Running => TaskState::Pending,
                other => other,
            };
            slot.attempts = run.attempts;
            slot.output = run.output;
            slot.error = run.error;
            slot.earlier_attempts = run.earlier_attempts;
            slot.retry_at = None;
            execution.set(&name, state);
        }
        // What a failure did before the restart, it does again: under
        // `continue` its dependents are skipped, under `fail-fast` nothing
        // new starts.
        let failed: Vec<String> = execution
            .tasks
            .iter()
            .filter(|(_, t)| t.state == TaskState::Failed)
            .map(|(name, _)| name.clone())
            .collect();
        for task in failed {
            if execution.workflow.on_failure == "continue" {
                execution.skip_dependents_of(&task);
            } else {
                execution.stopping = true;
                execution.skip_unstarted();
            }
        }
        execution.cancelled = execution.counts[TaskState::Cancelled as usize] > 0;
        execution
    }

    /// The workflow it runs.
    pub fn workflow(&self) -> &WorkflowEntry {
        &self.workflow
    }

    /// Every task's progress, by name.
    pub fn tasks(&self) -> &BTreeMap<String, TaskRun> {
        &self.tasks
    }

    /// The outputs of the tasks that succeeded.
    pub fn outputs(&self) -> BTreeMap<String, Value> {
        self.tasks
            .iter()
            .filter_map(|(name, run)| Some((name.clone(), run.output.clone()?)))
            .collect()
    }

    /// The tasks that may start at `now`, in the workflow's order: pending,
    /// every dependency succeeded, any retry delay passed — as many as
    /// `concurrency` leaves room for. None once the execution is stopping.
    pub fn ready(&self, now: Instant) -> Vec<String> {
        if self.stopping || self.cancelled {
            return Vec::new();
        }
        let room = usize::try_from(self.workflow.concurrency.max(1))
            .unwrap_or(usize::MAX)
            .saturating_sub(self.counts[TaskState::Running as usize]);
        self.ready
            .iter()
            .map(|&at| &self.workflow.order[at])
            .filter(|name| {
                self.tasks
                    .get(*name)
                    .is_some_and(|run| run.retry_at.is_none_or(|at| at <= now))
            })
            .take(room)
            .cloned()
            .collect()
    }

    /// The earliest time a task waiting for a retry may start.
    pub fn next_retry(&self) -> Option<Instant> {
        self.ready
            .iter()
            .filter_map(|&at| self.tasks.get(&self.workflow.order[at])?.retry_at)
            .min()
    }

    /// Marks `task` started; returns the attempt (1-based).
    pub fn start(&mut self, task: &str) -> u32 {
        self.set(task, TaskState::Running);
        let Some(run) = self.tasks.get_mut(task) else {
            return 0;
        };
        run.attempts += 1;
        run.retry_at = None;
        run.attempts
    }

    /// `task` succeeded with `output`.
    pub fn succeeded(&mut self, task: &str, output: Value) {
        let Some(run) = self.tasks.get_mut(task) else {
            return;
        };
        if run.state != TaskState::Running {
            return;
        }
        run.output = Some(output);
        run.error = None;
        self.set(task, TaskState::Succeeded);
    }

    /// Whether a failed attempt of `task` would be retried now: attempts
    /// remain (`retries.limit` counts retries) and the execution goes on.
    pub fn would_retry(&self, task: &str) -> bool {
        let (Some(entry), Some(run)) = (self.workflow.tasks.get(task), self.tasks.get(task)) else {
            return false;
        };
        u64::from(run.attempts.saturating_sub(run.earlier_attempts)) <= entry.retries.limit
            && !self.stopping
            && !self.cancelled
    }

    /// `task`'s attempt failed with `error` at `now`: a retry after the
    /// backoff while attempts remain, else the task fails and `onFailure`
    /// decides the rest.
    pub fn failed(&mut self, task: &str, error: String, now: Instant) -> AfterFailure {
        if !self.would_retry(task) {
            self.fail_for_good(task, error);
            return AfterFailure::Failed;
        }
        let backoff = self.workflow.tasks[task].retries.backoff;
        let Some(run) = self.tasks.get_mut(task) else {
            return AfterFailure::Failed;
        };
        let delay = Backoff::from_runtime(&backoff)
            .delay(run.attempts.saturating_sub(run.earlier_attempts + 1));
        run.error = Some(error);
        run.retry_at = Some(now + delay);
        let attempt = run.attempts + 1;
        self.set(task, TaskState::Pending);
        AfterFailure::Retry {
            at: now + delay,
            attempt,
        }
    }

    /// `task` fails with no retry (what failed would fail the same way
    /// again, e.g. an input reference that names nothing); `onFailure`
    /// decides the rest.
    pub fn fail_for_good(&mut self, task: &str, error: String) {
        let Some(run) = self.tasks.get_mut(task) else {
            return;
        };
        run.error = Some(error);
        run.retry_at = None;
        self.set(task, TaskState::Failed);
        if self.workflow.on_failure == "continue" {
            self.skip_dependents_of(task);
        } else {
            self.stopping = true;
            self.skip_unstarted();
        }
    }

    /// Cancels the execution: nothing new starts; tasks not finished are
    /// `cancelled` (the caller stops the running ones).
    pub fn cancel(&mut self) -> Vec<String> {
        self.cancelled = true;
        let unfinished: Vec<(String, TaskState)> = self
            .tasks
            .iter()
            .filter(|(_, run)| matches!(run.state, TaskState::Pending | TaskState::Running))
            .map(|(name, run)| (name.clone(), run.state))
            .collect();
        let mut stopped = Vec::new();
        for (name, state) in unfinished {
            self.set(&name, TaskState::Cancelled);
            if let Some(run) = self.tasks.get_mut(&name) {
                run.retry_at = None;
            }
            if state == TaskState::Running {
                stopped.push(name);
            }
        }
        stopped
    }

    fn skip_dependents_of(&mut self, failed: &str) {
        let mut lost: BTreeSet<String> = BTreeSet::from([failed.to_string()]);
        let workflow = self.workflow.clone();
        // Tasks come in topological order: a dependent follows its dependencies.
        for name in &workflow.order {
            let entry = &workflow.tasks[name];
            if entry.depends_on.iter().any(|d| lost.contains(d)) {
                lost.insert(name.clone());
                if self.tasks.get(name).map(|r| r.state) == Some(TaskState::Pending) {
                    self.set(name, TaskState::Skipped);
                    if let Some(run) = self.tasks.get_mut(name) {
                        run.retry_at = None;
                    }
                }
            }
        }
    }

    fn skip_unstarted(&mut self) {
        let pending: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, run)| run.state == TaskState::Pending)
            .map(|(name, _)| name.clone())
            .collect();
        for name in pending {
            self.set(&name, TaskState::Skipped);
            if let Some(run) = self.tasks.get_mut(&name) {
                run.retry_at = None;
            }
        }
    }

    /// Where the execution is: running while a task runs or may still
    /// start; then cancelled, failed (any task failed) or succeeded.
    pub fn state(&self) -> ExecutionState {
        let unfinished =
            self.counts[TaskState::Pending as usize] + self.counts[TaskState::Running as usize];
        if self.cancelled {
            ExecutionState::Cancelled
        } else if unfinished > 0 {
            ExecutionState::Running
        } else if self.counts[TaskState::Failed as usize] > 0 {
            ExecutionState::Failed
        } else {
            ExecutionState::Succeeded
        }
    }

    /// How long until `task`'s attempt times out.
    pub fn timeout(&self, task: &str) -> Duration {
        self.workflow
            .tasks
            .get(task)
            .map_or(Duration::ZERO, |t| Duration::from_millis(t.timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_compiler::runtime_config::{Backoff as BackoffEntry, Retries, TaskEntry};
    use serde_json::json;

    /// A workflow of `(name, depends on)`, in topological order.
    fn workflow(
        tasks: &[(&str, &[&str])],
        on_failure: &str,
        concurrency: u64,
    ) -> Arc<WorkflowEntry> {
        let mut entry = WorkflowEntry {
            on_failure: on_failure.to_string(),
            concurrency,
            ..WorkflowEntry::default()
        };
        for (name, deps) in tasks {
            entry.order.push(name.to_string());
            entry.tasks.insert(
                name.to_string(),
                TaskEntry {
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    retries: Retries {
                        limit: 2,
                        backoff: BackoffEntry {
                            initial_ms: 1000,
                            max_ms: 1500,
                            multiplier: 2.0,
                        },
                    },
                    ..TaskEntry::default()
                },
            );
        }
        Arc::new(entry)
    }

    const DIAMOND: &[(&str, &[&str])] =
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];

    #[test]
    fn a_diamond_runs_its_middle_tasks_together_and_the_last_after_both() {
        let now = Instant::now();
        let mut run = Execution::new(workflow(DIAMOND, "fail-fast", 10));
        assert_eq!(run.ready(now), ["a"]);
        run.start("a");
        assert!(run.ready(now).is_empty(), "nothing waits on a running task");
        run.succeeded("a", json!(1));
        assert_eq!(run.ready(now), ["b", "c"]);
        run.start("b");
        run.start("c");
        run.succeeded("b", json!(2));
        // No level barrier, but d needs c too.
        assert!(run.ready(now).is_empty());
        run.succeeded("c", json!(3));
        assert_eq!(run.ready(now), ["d"]);
        run.start("d");
        assert_eq!(run.state(), ExecutionState::Running);
        run.succeeded("d", json!(4));
        assert_eq!(run.state(), ExecutionState::Succeeded);
        assert_eq!(run.outputs()["c"], json!(3));
    }

    #[test]
    fn concurrency_bounds_the_tasks_started_at_once() {
        let wide: Vec<(String, Vec<&str>)> = (0..5).map(|i| (format!("t{i}"), vec![])).collect();
        let tasks: Vec<(&str, &[&str])> = wide
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let now = Instant::now();
        let mut run = Execution::new(workflow(&tasks, "fail-fast", 2));
        assert_eq!(run.ready(now), ["t0", "t1"]);
        run.start("t0");
        assert_eq!(run.ready(now), ["t1"]);
        run.start("t1");
        assert!(run.ready(now).is_empty());
        run.succeeded("t0", json!(null));
        assert_eq!(run.ready(now), ["t2"]);
    }

    #[test]
    fn a_failed_attempt_is_retried_with_the_backoff_until_the_limit() {
        let now = Instant::now();
        let mut run = Execution::new(workflow(&[("a", &[])], "fail-fast", 10));
        assert_eq!(run.start("a"), 1);
        let secs = Duration::from_secs;
        assert_eq!(
            run.failed("a", "boom".into(), now),
            AfterFailure::Retry {
                at: now + secs(1),
                attempt: 2
            }
        );
        assert!(run.ready(now).is_empty(), "not before its delay");
        assert_eq!(run.next_retry(), Some(now + secs(1)));
        assert_eq!(run.ready(now + secs(1)), ["a"]);
        assert_eq!(run.start("a"), 2);
        // 1 s × 2 = 2 s, capped at 1.5 s.
        assert_eq!(
            run.failed("a", "boom".into(), now),
            AfterFailure::Retry {
                at: now + Duration::from_millis(1500),
                attempt: 3
            }
        );
        assert_eq!(run.start("a"), 3);
        // limit 2: three attempts in all, then it fails.
        assert_eq!(run.failed("a", "still".into(), now), AfterFailure::Failed);
        assert_eq!(run.tasks()["a"].error.as_deref(), Some("still"));
        assert_eq!(run.state(), ExecutionState::Failed);
    }

    fn fail_for_good(run: &mut Execution, task: &str, now: Instant) {
        for _ in 0..3 {
            run.start(task);
            run.failed(task, "no".into(), now);
        }
        assert_eq!(run.tasks()[task].state, TaskState::Failed);
    }

    #[test]
    fn fail_fast_starts_nothing_new_and_lets_running_tasks_finish() {
        let now = Instant::now();
        let mut run = Execution::new(workflow(DIAMOND, "fail-fast", 10));
        run.start("a");
        run.succeeded("a", json!(1));
        run.start("c");
        fail_for_good(&mut run, "b", now);
        assert!(run.ready(now).is_empty());
        assert_eq!(run.tasks()["d"].state, TaskState::Skipped);
        assert_eq!(run.state(), ExecutionState::Running, "c is still running");
        run.succeeded("c", json!(3));
        assert_eq!(run.state(), ExecutionState::Failed);
    }

    #[test]
    fn continue_skips_only_the_dependents_of_a_failed_task() {
        let tasks: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("x", &[]), ("y", &["x"])];
        let now = Instant::now();
        let mut run = Execution::new(workflow(tasks, "continue", 10));
        fail_for_good(&mut run, "a", now);
        assert_eq!(run.tasks()["b"].state, TaskState::Skipped);
        assert_eq!(run.ready(now), ["x"]);
        run.start("x");
        run.succeeded("x", json!(1));
        run.start("y");
        run.succeeded("y", json!(2));
        assert_eq!(
            run.state(),
            ExecutionState::Failed,
            "a failed task fails the execution"
        );
        assert_eq!(run.tasks()["y"].state, TaskState::Succeeded);
    }

    #[test]
    fn cancel_stops_everything_unfinished() {
        let now = Instant::now();
        let mut run = Execution::new(workflow(DIAMOND, "fail-fast", 10));
        run.start("a");
        assert_eq!(run.cancel(), ["a"]);
        assert!(run.ready(now).is_empty());
        assert_eq!(run.state(), ExecutionState::Cancelled);
        assert!(
            run.tasks()
                .values()
                .all(|t| t.state == TaskState::Cancelled)
        );
    }
}
