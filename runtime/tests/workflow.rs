//! An execution recorded in a real SQLite store, interrupted as a crash
//! would interrupt it, then resumed from what the store holds: tasks that
//! succeeded never run again, the one that was running runs as a new
//! attempt.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cortex_compiler::runtime_config::{TaskEntry, WorkflowEntry};
use cortex_runtime::store::{BoxFuture, Op, SqliteStore, Store, StoredExecution};
use cortex_runtime::workflow::driver::{Attempt, TaskRunner, Trigger, drive};
use cortex_runtime::workflow::record::{StoreRecorder, recorded_tasks};
use cortex_runtime::workflow::{Execution, ExecutionState, TaskState};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Runs every task in 10 ms, answering its name; `hang` never answers.
/// Counts the attempts it was given.
struct Runner {
    hang: Option<&'static str>,
    seen: Arc<Mutex<Vec<(String, u32)>>>,
    /// Notified when the task that hangs has started.
    hung: Arc<tokio::sync::Notify>,
}

impl TaskRunner for Runner {
    fn run(&self, attempt: Attempt) -> BoxFuture<'static, Result<Value, String>> {
        self.seen
            .lock()
            .unwrap()
            .push((attempt.task.clone(), attempt.number));
        let hang = self.hang == Some(attempt.task.as_str());
        if hang {
            self.hung.notify_one();
        }
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(json!({ "by": attempt.task }))
        })
    }
}

fn diamond() -> Arc<WorkflowEntry> {
    let mut workflow = WorkflowEntry::default();
    for (name, deps) in [
        ("a", vec![]),
        ("b", vec!["a"]),
        ("c", vec!["a"]),
        ("d", vec!["b", "c"]),
    ] {
        workflow.order.push(name.to_string());
        workflow.tasks.insert(
            name.to_string(),
            TaskEntry {
                depends_on: deps.into_iter().map(str::to_string).collect(),
                timeout_ms: 3_600_000,
                ..TaskEntry::default()
            },
        );
    }
    Arc::new(workflow)
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_execution_resumes_without_running_succeeded_tasks_again() {
    let state = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&state.path().join("state.db")).expect("store"));
    let workflow = diamond();
    store
        .write(vec![Op::Execution(Box::new(StoredExecution {
            id: "diamond-1".into(),
            workflow: "diamond".into(),
            revision: 1,
            trigger: "by-hand".into(),
            payload: Value::Null,
            state: "running".into(),
            definition: serde_json::to_value(&*workflow).expect("json"),
            created_ms: 0,
            finished_ms: None,
            tasks: BTreeMap::new(),
        }))])
        .await
        .expect("created");
    let trigger = Trigger {
        name: "by-hand".into(),
        payload: Value::Null,
    };
    let recorder = StoreRecorder::new(cortex_runtime::broker::Journal::to(store.clone()));
    let (_cancel, cancelled) = watch::channel(false);

    // First run: d hangs; once it has started, the run is cut off as a
    // crash would cut it (its future dropped mid-way).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hung = Arc::new(tokio::sync::Notify::new());
    let runner = Arc::new(Runner {
        hang: Some("d"),
        seen: seen.clone(),
        hung: hung.clone(),
    });
    let mut first = Execution::new(workflow.clone());
    tokio::select! {
        end = drive("diamond-1", &mut first, &trigger, runner, &recorder, cancelled.clone()) => {
            panic!("the first run ended ({end:?}) though d never answers")
        }
        _ = hung.notified() => {}
    }
    assert_eq!(seen.lock().unwrap().len(), 4, "a, b, c and d started");

    // What the store holds is what a restarted runtime resumes from.
    let stored = store.executions(Some("diamond")).await.expect("read");
    let recorded = recorded_tasks(&stored[0].tasks);
    assert_eq!(recorded["d"].state, TaskState::Running);
    let mut resumed = Execution::restore(workflow, recorded);
    assert_eq!(resumed.tasks()["b"].state, TaskState::Succeeded);
    assert_eq!(resumed.tasks()["d"].state, TaskState::Pending);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(Runner {
        hang: None,
        seen: seen.clone(),
        hung: Arc::new(tokio::sync::Notify::new()),
    });
    let end = drive(
        "diamond-1",
        &mut resumed,
        &trigger,
        runner,
        &recorder,
        cancelled,
    )
    .await
    .expect("drives");
    assert_eq!(end, ExecutionState::Succeeded);
    assert_eq!(
        *seen.lock().unwrap(),
        [("d".to_string(), 2)],
        "only d ran again, as its second attempt"
    );
    let stored = store.executions(Some("diamond")).await.expect("read");
    assert_eq!(stored[0].state, "succeeded");
    assert_eq!(stored[0].tasks["d"].output, Some(json!({"by": "d"})));
    assert_eq!(stored[0].tasks["a"].output, Some(json!({"by": "a"})));
}
