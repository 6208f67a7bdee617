//! Drives one execution to its end: starts every ready task (its input
//! resolved at start), enforces each attempt's timeout (a late answer is
//! ignored), waits out retry delays, applies `onFailure`, stops on cancel.
//! Every transition goes to a [`Recorder`] — the store, in the runtime —
//! and takes effect only once recorded.
//!
//! The loop has the runtime's one shape: wait in one `select!` for the
//! first of its events (an attempt done, a retry due, cancel), then act.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::store::BoxFuture;
use crate::workflow::execution::{AfterFailure, Execution, ExecutionState, TaskRun, TaskState};
use crate::workflow::input::{Scope, resolve};

/// One attempt of a task, as a runner gets it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The execution's id.
    pub execution: String,
    /// The task's name.
    pub task: String,
    /// The attempt, 1-based.
    pub number: u32,
    /// The resolved input.
    pub input: Value,
}

/// Runs task attempts (an agent request, a local command).
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs `attempt`; `Ok` is the output, `Err` why it failed.
    fn run(&self, attempt: Attempt) -> BoxFuture<'static, Result<Value, String>>;
}

/// A transition of an execution.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// An attempt starts.
    Started {
        /// The task.
        task: String,
        /// The attempt, 1-based.
        attempt: u32,
        /// Attempts before its current retry budget (an operator's retry).
        earlier_attempts: u32,
    },
    /// A task succeeded.
    Succeeded {
        /// The task.
        task: String,
        /// The attempt that did.
        attempt: u32,
        /// Its output.
        output: Value,
    },
    /// An attempt failed (`retry`: another comes).
    Failed {
        /// The task.
        task: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// Whether another attempt follows.
        retry: bool,
    },
    /// The execution ended; `stopped` are the tasks it skipped or cancelled
    /// on the way (recorded with the end, in one write).
    Finished {
        /// How it ended.
        state: ExecutionState,
        /// Tasks that will not run, with their progress.
        stopped: Vec<(String, TaskRun)>,
    },
}

/// Where transitions are made durable before they take effect.
pub trait Recorder: Send + Sync {
    /// Records `transition` of `execution`; `Err` stops the execution
    /// where it is (it resumes from what was recorded).
    fn record(&self, execution: &str, transition: Transition) -> BoxFuture<'_, Result<(), String>>;
}

/// An attempt that ended: its task, its number, and what it returned.
type Ended = (String, u32, Result<Value, String>);

/// What started an execution.
#[derive(Clone, Debug)]
pub struct Trigger {
    /// The trigger's name.
    pub name: String,
    /// Its payload (`null` for a schedule).
    pub payload: Value,
}

/// The end of `execution` as a transition.
fn finished(execution: &Execution) -> Transition {
    Transition::Finished {
        state: execution.state(),
        stopped: execution
            .tasks()
            .iter()
            .filter(|(_, t)| matches!(t.state, TaskState::Skipped | TaskState::Cancelled))
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect(),
    }
}

/// Drives `execution` (id `id`, started by `trigger`) until it ends or is
/// cancelled (`cancel` turns true); returns its final state, or the
/// recorder's error.
pub async fn drive(
    id: &str,
    execution: &mut Execution,
    trigger: &Trigger,
    runner: Arc<dyn TaskRunner>,
    recorder: &dyn Recorder,
    mut cancel: watch::Receiver<bool>,
) -> Result<ExecutionState, String> {
    let mut in_flight: JoinSet<Ended> = JoinSet::new();
    // Which task each running attempt is, for an attempt that panics.
    let mut attempts: HashMap<tokio::task::Id, (String, u32)> = HashMap::new();
    // Writes submitted and not yet awaited: the ends of attempts, written
    // together with the starts they make ready.
    let mut writes = Vec::new();
    loop {
        let now = Instant::now();
        // Every ready task's start is recorded in one go, with the ends
        // that made them ready (the journal writes them together); none
        // runs before all are durable.
        let mut starting = Vec::new();
        for task in execution.ready(now) {
            let scope = Scope {
                trigger_name: &trigger.name,
                trigger_payload: &trigger.payload,
                tasks: execution.tasks(),
            };
            let input = execution
                .workflow()
                .tasks
                .get(&task)
                .map_or(Ok(Value::Null), |t| resolve(&t.input, &scope));
            let run = &execution.tasks()[&task];
            let (attempt, earlier_attempts) = (run.attempts + 1, run.earlier_attempts);
            writes.push(recorder.record(
                id,
                Transition::Started {
                    task: task.clone(),
                    attempt,
                    earlier_attempts,
                },
            ));
            execution.start(&task);
            starting.push((task, attempt, input));
        }
        for write in writes.drain(..) {
            write.await?;
        }
        for (task, attempt, input) in starting {
            let input = match input {
                Ok(input) => input,
                Err(e) => {
                    // The same input fails the same way: no retry.
                    let error = e.to_string();
                    recorder
                        .record(
                            id,
                            Transition::Failed {
                                task: task.clone(),
                                attempt,
                                error: error.clone(),
                                retry: false,
                            },
                        )
                        .await?;
                    execution.fail_for_good(&task, error);
                    continue;
                }
            };
            let timeout = execution.timeout(&task);
            let run = runner.run(Attempt {
                execution: id.to_string(),
                task: task.clone(),
                number: attempt,
                input,
            });
            let name = task.clone();
            let handle = in_flight.spawn(async move {
                let result = match tokio::time::timeout(timeout, run).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
                };
                (task, attempt, result)
            });
            attempts.insert(handle.id(), (name, attempt));
        }
        if execution.state() != ExecutionState::Running && in_flight.is_empty() {
            let state = execution.state();
            recorder.record(id, finished(execution)).await?;
            return Ok(state);
        }
        let retry_at = execution.next_retry();
        tokio::select! {
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                // Every attempt that has ended by now, recorded together.
                let mut ended = vec![done];
                while let Some(more) = in_flight.try_join_next_with_id() {
                    ended.push(more);
                }
                for done in ended {
                    let Some((task, attempt, result)) = attempt_result(done, &mut attempts) else {
                        continue;
                    };
                    let transition = match result {
                        Ok(output) => {
                            execution.succeeded(&task, output.clone());
                            Transition::Succeeded { task, attempt, output }
                        }
                        Err(error) => {
                            let retry = execution.would_retry(&task);
                            let after = execution.failed(&task, error.clone(), Instant::now());
                            debug_assert_eq!(retry, matches!(after, AfterFailure::Retry { .. }));
                            Transition::Failed { task, attempt, error, retry }
                        }
                    };
                    // Applied in memory at once, acted on (a dependent
                    // started) only once durable: awaited at the top of
                    // the loop, with the starts it allows.
                    writes.push(recorder.record(id, transition));
                }
            }
            _ = tokio::time::sleep_until(retry_at.unwrap_or(now)), if retry_at.is_some() => {}
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() {
                    execution.cancel();
                    in_flight.abort_all();
                    recorder.record(id, finished(execution)).await?;
                    return Ok(ExecutionState::Cancelled);
                }
            }
        }
    }
}

/// What an ended attempt's task returned (a runner that panicked failed
/// the attempt); `None` for a task this driver did not start.
fn attempt_result(
    done: Result<(tokio::task::Id, Ended), tokio::task::JoinError>,
    attempts: &mut HashMap<tokio::task::Id, (String, u32)>,
) -> Option<Ended> {
    match done {
        Ok((handle, ended)) => {
            attempts.remove(&handle);
            Some(ended)
        }
        Err(e) => {
            let (task, attempt) = attempts.remove(&e.id())?;
            Some((
                task,
                attempt,
                Err(format!("the attempt's runner failed: {e}")),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_compiler::runtime_config::{
        Backoff as BackoffEntry, Retries, TaskEntry, WorkflowEntry,
    };
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A runner whose tasks take `ms` of (paused) time and answer
    /// `{"task": name, "input": input}`; `flaky` fails its first attempts;
    /// `stuck` never answers. It records starts and the most at once.
    #[derive(Default)]
    struct Fake {
        log: Mutex<Vec<(String, u32, u64)>>,
        running: Mutex<(usize, usize)>,
        flaky: Vec<(&'static str, u32)>,
        stuck: Vec<&'static str>,
        started: Mutex<Option<Instant>>,
    }

    impl TaskRunner for Arc<Fake> {
        fn run(&self, attempt: Attempt) -> BoxFuture<'static, Result<Value, String>> {
            let fake = self.clone();
            Box::pin(async move {
                let t0 = *fake
                    .started
                    .lock()
                    .unwrap()
                    .get_or_insert_with(Instant::now);
                fake.log.lock().unwrap().push((
                    attempt.task.clone(),
                    attempt.number,
                    t0.elapsed().as_millis() as u64,
                ));
                {
                    let mut r = fake.running.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                if fake.stuck.contains(&attempt.task.as_str()) {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                fake.running.lock().unwrap().0 -= 1;
                let fails = fake
                    .flaky
                    .iter()
                    .find(|(t, _)| *t == attempt.task)
                    .map_or(0, |(_, n)| *n);
                if attempt.number <= fails {
                    return Err(format!("attempt {} failed", attempt.number));
                }
                Ok(json!({"task": attempt.task, "input": attempt.input}))
            })
        }
    }

    #[derive(Default)]
    struct Memory(Mutex<Vec<Transition>>);

    impl Recorder for Memory {
        fn record(&self, _: &str, t: Transition) -> BoxFuture<'_, Result<(), String>> {
            self.0.lock().unwrap().push(t);
            Box::pin(async { Ok(()) })
        }
    }

    fn task(deps: &[&str], input: Value, limit: u64, timeout_ms: u64) -> TaskEntry {
        TaskEntry {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            input,
            timeout_ms,
            retries: Retries {
                limit,
                backoff: BackoffEntry {
                    initial_ms: 1000,
                    max_ms: 30_000,
                    multiplier: 2.0,
                },
            },
            ..TaskEntry::default()
        }
    }

    fn workflow(tasks: Vec<(&str, TaskEntry)>, on_failure: &str) -> Execution {
        let mut entry = WorkflowEntry {
            on_failure: on_failure.into(),
            ..WorkflowEntry::default()
        };
        for (name, t) in tasks {
            entry.order.push(name.into());
            entry.tasks.insert(name.into(), t);
        }
        Execution::new(Arc::new(entry))
    }

    /// Drives `run` with `runner` to its end, recording in memory.
    async fn drive_to_end(
        run: &mut Execution,
        runner: Arc<dyn TaskRunner>,
    ) -> (ExecutionState, Memory) {
        let recorder = Memory::default();
        let (_cancel, cancelled) = watch::channel(false);
        let state = drive("x", run, &trigger(), runner, &recorder, cancelled)
            .await
            .expect("drives");
        (state, recorder)
    }

    fn trigger() -> Trigger {
        Trigger {
            name: "on-ticket".into(),
            payload: json!({"id": 7}),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_diamond_runs_its_middle_tasks_at_once_and_outputs_flow_with_their_types() {
        let mut run = workflow(
            vec![
                (
                    "a",
                    task(&[], json!({"ticket": "$(trigger.payload.id)"}), 0, 60_000),
                ),
                (
                    "b",
                    task(&["a"], json!("$(tasks.a.output.input.ticket)"), 0, 60_000),
                ),
                ("c", task(&["a"], json!(null), 0, 60_000)),
                (
                    "d",
                    task(
                        &["b", "c"],
                        json!({"from_b": "$(tasks.b.output.input)"}),
                        0,
                        60_000,
                    ),
                ),
            ],
            "fail-fast",
        );
        let fake = Arc::new(Fake::default());
        let (state, recorder) = drive_to_end(&mut run, Arc::new(fake.clone())).await;
        assert_eq!(state, ExecutionState::Succeeded);
        let log = fake.log.lock().unwrap().clone();
        let at = |t: &str| log.iter().find(|(n, _, _)| n == t).expect(t).2;
        assert_eq!((at("a"), at("b"), at("c"), at("d")), (0, 100, 100, 200));
        assert_eq!(fake.running.lock().unwrap().1, 2, "b and c ran together");
        // 7 stayed a number all the way to d.
        assert_eq!(run.outputs()["d"]["input"], json!({"from_b": 7}));
        assert!(matches!(
            recorder.0.lock().unwrap().last(),
            Some(Transition::Finished {
                state: ExecutionState::Succeeded,
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flaky_task_is_retried_on_the_backoff_then_succeeds() {
        let mut run = workflow(vec![("a", task(&[], json!(null), 3, 60_000))], "fail-fast");
        let fake = Arc::new(Fake {
            flaky: vec![("a", 2)],
            ..Fake::default()
        });
        let (state, recorder) = drive_to_end(&mut run, Arc::new(fake.clone())).await;
        assert_eq!(state, ExecutionState::Succeeded);
        // Each attempt takes 100 ms; then 1 s, then 2 s of backoff.
        let starts: Vec<(u32, u64)> = fake
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n, t)| (*n, *t))
            .collect();
        assert_eq!(starts, [(1, 0), (2, 1100), (3, 3200)]);
        let failed = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|t| matches!(t, Transition::Failed { retry: true, .. }))
            .count();
        assert_eq!(failed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_past_its_timeout_fails_and_a_late_answer_is_ignored() {
        let mut run = workflow(
            vec![
                ("slow", task(&[], json!(null), 0, 500)),
                ("next", task(&["slow"], json!(null), 0, 500)),
            ],
            "fail-fast",
        );
        let fake = Arc::new(Fake {
            stuck: vec!["slow"],
            ..Fake::default()
        });
        let (state, _) = drive_to_end(&mut run, Arc::new(fake.clone())).await;
        assert_eq!(state, ExecutionState::Failed);
        assert!(
            run.tasks()["slow"]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("timed out after 500 ms"),
            "{:?}",
            run.tasks()["slow"]
        );
        assert_eq!(
            run.tasks()["next"].state,
            crate::workflow::TaskState::Skipped
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_input_reference_fails_the_task_without_retries() {
        let mut run = workflow(
            vec![(
                "a",
                task(&[], json!("$(trigger.payload.customer)"), 5, 60_000),
            )],
            "fail-fast",
        );
        let fake = Arc::new(Fake::default());
        let (state, _) = drive_to_end(&mut run, Arc::new(fake.clone())).await;
        assert_eq!(state, ExecutionState::Failed);
        assert!(
            fake.log.lock().unwrap().is_empty(),
            "the runner was never called"
        );
        assert!(
            run.tasks()["a"]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("trigger.payload.customer")
        );
    }

    struct Panics;

    impl TaskRunner for Panics {
        fn run(&self, _: Attempt) -> BoxFuture<'static, Result<Value, String>> {
            Box::pin(async { panic!("the runner broke") })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_runner_that_panics_fails_the_attempt_instead_of_hanging() {
        let mut run = workflow(vec![("a", task(&[], json!(null), 0, 60_000))], "fail-fast");
        let (state, _) = drive_to_end(&mut run, Arc::new(Panics)).await;
        assert_eq!(state, ExecutionState::Failed);
        assert!(
            run.tasks()["a"]
                .error
                .as_deref()
                .unwrap_or("")
                .contains("runner failed"),
            "{:?}",
            run.tasks()["a"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_the_running_tasks_and_ends_the_execution() {
        let mut run = workflow(vec![("a", task(&[], json!(null), 0, 60_000))], "fail-fast");
        let fake = Arc::new(Fake {
            stuck: vec!["a"],
            ..Fake::default()
        });
        let recorder = Memory::default();
        let (cancel, cancelled) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = cancel.send(true);
        });
        let state = drive(
            "x-5",
            &mut run,
            &trigger(),
            Arc::new(fake.clone()),
            &recorder,
            cancelled,
        )
        .await
        .expect("drives");
        assert_eq!(state, ExecutionState::Cancelled);
        assert_eq!(run.state(), ExecutionState::Cancelled);
    }
}
