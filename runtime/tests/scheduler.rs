//! The workflow scheduler on tokio's paused clock, over a store in memory
//! (every call answers at once, so the clock only moves when the test
//! lets it): schedule ticks, the tick missed while the runtime was down,
//! and a trigger message seen twice starting one execution. Plus a trigger
//! message that stays unacked while its execution cannot be stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cortex_compiler::runtime_config::{
    Manual, RunCommand, RuntimeConfig, TaskEntry, Trigger, WorkflowEntry,
};
use cortex_runtime::broker::{Broker, BrokerConfig, Journal};
use cortex_runtime::store::{Op, SqliteStore, Store, now_ms};
use cortex_runtime::workflow::{SchedulerOptions, Start, Workflows};
use cortex_testkit::conformance::FailingStore;
use cortex_testkit::memory::MemoryStore;
use cortex_testkit::runtime::{apply_project, options};
use serde_json::json;
use tokio::sync::watch;

fn config() -> Arc<RuntimeConfig> {
    let mut workflow = WorkflowEntry {
        triggers: vec![
            Trigger {
                name: "tick".into(),
                topic: None,
                schedule: Some("* * * * *".into()),
                manual: None,
            },
            Trigger {
                name: "job".into(),
                topic: Some("jobs".into()),
                schedule: None,
                manual: None,
            },
            Trigger {
                name: "by-hand".into(),
                topic: None,
                schedule: None,
                manual: Some(Manual {}),
            },
        ],
        ..WorkflowEntry::default()
    };
    workflow.order.push("note".into());
    workflow.tasks.insert(
        "note".into(),
        TaskEntry {
            run: Some(RunCommand {
                command: vec!["cat".into()],
            }),
            ..TaskEntry::default()
        },
    );
    Arc::new(RuntimeConfig {
        workflows: BTreeMap::from([("minutely".to_string(), workflow)]),
        ..RuntimeConfig::default()
    })
}

/// The scheduler over `store`, its workflow paused (so no task process
/// runs: executions are recorded as queued).
async fn scheduler(store: &MemoryStore) -> (Workflows, watch::Sender<bool>) {
    store
        .write(vec![Op::Meta {
            key: "workflow.paused.minutely".into(),
            value: Some("true".into()),
        }])
        .await
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    let broker = Broker::new(BrokerConfig::default(), Journal::none(), 0);
    let (workflows, _task) = Workflows::start(
        SchedulerOptions {
            store: Arc::new(store.clone()),
            journal: Journal::to(Arc::new(store.clone())),
            broker,
            project: std::env::temp_dir(),
        },
        config(),
        1,
        stopped,
    )
    .await
    .expect("starts");
    (workflows, stop)
}

fn tick_seconds(id: &str) -> u64 {
    id.rsplit_once("-s").expect("a tick id").1.parse().unwrap()
}

/// The minute boundary strictly after `ms`, in milliseconds.
fn next_minute_ms(ms: u64) -> u64 {
    (ms / 60_000 + 1) * 60_000
}

#[tokio::test(start_paused = true)]
async fn a_schedule_runs_at_every_tick() {
    let store = MemoryStore::new();
    // The scheduler's wall clock starts somewhere in [before, after]; the
    // paused clock then runs to 30 s past the third minute boundary after
    // `after`, so ticks never fall near the end of the wait.
    let before = now_ms();
    let (workflows, _stop) = scheduler(&store).await;
    let after = now_ms();
    let first = next_minute_ms(after);
    let end = first + 2 * 60_000 + 30_000;
    tokio::time::sleep(Duration::from_millis(end - after)).await;
    let executions = workflows.list(Some("minutely")).await.unwrap();
    let ticks: Vec<u64> = executions.iter().map(|e| tick_seconds(&e.id)).collect();
    // A boundary between `before` and `after` is a tick only if the
    // scheduler's clock started before it: one more, a minute earlier.
    let straddled = next_minute_ms(before) < first;
    let expected = if straddled && ticks.len() == 4 { 4 } else { 3 };
    assert_eq!(ticks.len(), expected, "{executions:#?}");
    // On the minute, one minute apart, the last the third after `after`.
    assert!(ticks.iter().all(|t| t % 60 == 0));
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 60), "{ticks:?}");
    assert_eq!(ticks.last().copied(), Some((first + 2 * 60_000) / 1000));
    for e in &executions {
        assert_eq!(e.trigger.name, "tick");
        assert_eq!(e.state, "queued", "the workflow is paused");
        let at = e.trigger.payload["scheduledAt"].as_str().unwrap();
        assert!(at.ends_with(":00.000Z"), "{at}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_tick_missed_while_the_runtime_was_down_runs_once_on_start() {
    let store = MemoryStore::new();
    let now = now_ms();
    // The last tick ran ten minutes ago; ten were missed since.
    store
        .write(vec![Op::Meta {
            key: "workflow.tick.minutely/tick".into(),
            value: Some((now - 10 * 60_000).to_string()),
        }])
        .await
        .unwrap();
    let (workflows, _stop) = scheduler(&store).await;
    let after = now_ms();
    let executions = workflows.list(Some("minutely")).await.unwrap();
    assert_eq!(executions.len(), 1, "{executions:#?}");
    // The latest boundary before the scheduler's start, which lies in
    // [now, after]: the two differ only if a minute turned in between.
    let latest = [now / 60_000 * 60, after / 60_000 * 60];
    assert!(
        latest.contains(&tick_seconds(&executions[0].id)),
        "{executions:#?}"
    );
    // And a first start records no backlog: a new store starts from now.
    let fresh = MemoryStore::new();
    let (workflows, _stop) = scheduler(&fresh).await;
    assert!(workflows.list(None).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_trigger_message_seen_twice_starts_one_execution() {
    let store = MemoryStore::new();
    let (workflows, _stop) = scheduler(&store).await;
    let message = || Start::Message {
        topic: "jobs".into(),
        id: 41,
    };
    let first = workflows
        .start_execution("minutely", message(), json!({"n": 1}))
        .await
        .unwrap();
    let again = workflows
        .start_execution("minutely", message(), json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(first.id, "minutely-m41");
    assert_eq!(again.id, first.id);
    assert_eq!(first.trigger.name, "job");
    assert_eq!(workflows.list(None).await.unwrap().len(), 1);
}

/// The fixture's `on-job` workflow over a store that refuses new executions: the
/// message is not acked (no execution could be stored); once the store
/// takes writes again, the redelivered message starts exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_message_stays_unacked_until_its_execution_is_stored() {
    let project = cortex_testkit::git::fixture_path("runtime/workflows");
    let state = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&state.path().join("state.db")).unwrap();
    apply_project(&project, &sqlite).await;
    let store = FailingStore::new(Arc::new(sqlite));
    let runtime = cortex_runtime::start(
        store.clone() as Arc<dyn Store>,
        options(&project, state.path(), false),
        "test store",
    )
    .await
    .expect("starts");
    let api = cortex_client::Client::new(&runtime.url, "cortex", &runtime.operator_token);
    store.refuse_executions(true);
    let published = api
        .publish("jobs", None, &json!({"dir": "/job/x"}))
        .await
        .expect("publishes");
    let id = published.ids[0];
    let inbox = |rt: &cortex_runtime::Runtime| {
        rt.status()
            .queues
            .into_iter()
            .find(|q| q.inbox == "workflow/on-job")
            .map(|q| (q.depth, q.in_flight))
    };
    // The consumer took the message and could not store its execution:
    // the message is kept (offered again later), and nothing was created.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = inbox(&runtime).expect("the workflow's inbox");
    assert_eq!(held.0 + held.1, 1, "the message is kept: {held:?}");
    assert!(api.executions(Some("on-job")).await.unwrap().is_empty());
    store.refuse_executions(false);
    let mut found = Vec::new();
    for _ in 0..400 {
        found = api.executions(Some("on-job")).await.unwrap();
        if !found.is_empty() && inbox(&runtime) == Some((0, 0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].id, format!("on-job-m{id}"));
    assert_eq!(inbox(&runtime), Some((0, 0)), "acked once stored");
    runtime.stop().await.unwrap();
}
