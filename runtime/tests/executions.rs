//! The workflow runtime end to end: a runtime started in-process on a copy
//! of `fixtures/runtime/workflows`, real shell commands as `run` tasks,
//! the test acting as the agent of `agent` tasks, everything over the real
//! HTTP API with the operator's token.

use std::path::Path;
use std::time::Duration;

use cortex_client::{Client, ClientError, ExecutionView};
use cortex_testkit::git::fixture_path;
use cortex_testkit::runtime::{TestRuntime, apply_project, start_project};
use serde_json::{Value, json};

/// A copy of the fixture project (tests that apply a change edit it).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["cortex.yaml", "specs.yaml"] {
        std::fs::copy(
            fixture_path("runtime/workflows").join(file),
            dir.path().join(file),
        )
        .expect("copy the fixture");
    }
    dir
}

async fn start() -> (TestRuntime, tempfile::TempDir) {
    let project = project();
    let runtime = start_project(project.path(), false).await;
    (runtime, project)
}

/// Polls until the execution ended (the deadline only stops a hung test;
/// what is asserted never depends on timing).
async fn finished(api: &Client, id: &str) -> ExecutionView {
    for _ in 0..600 {
        let e = api.execution(id).await.expect("read the execution");
        if e.is_finished() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("execution {id} did not finish");
}

fn task<'a>(e: &'a ExecutionView, name: &str) -> &'a cortex_client::TaskView {
    e.tasks.iter().find(|t| t.name == name).expect(name)
}

fn nanos(dir: &Path, file: &str) -> u128 {
    std::fs::read_to_string(dir.join(file))
        .expect(file)
        .trim()
        .parse()
        .expect("a time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_its_middle_tasks_together_and_outputs_keep_their_types() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let scratch = tempfile::tempdir().unwrap();
    let started = api
        .start_execution("diamond", &json!({ "dir": scratch.path() }))
        .await
        .expect("starts");
    assert_eq!(started.id, "diamond-1");
    assert_eq!(started.trigger.name, "by-hand");
    let done = finished(&api, &started.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(done.revision, 1);
    // b and c overlapped: each started before the other ended.
    let dir = scratch.path();
    assert!(nanos(dir, "b.start") < nanos(dir, "c.end"));
    assert!(nanos(dir, "c.start") < nanos(dir, "b.end"));
    // d read a's number as a number and b's output as an object.
    assert_eq!(
        task(&done, "d").output,
        Some(json!({ "n": 7, "b": { "from": "b" } }))
    );
    let order: Vec<&str> = done.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_command_is_retried_with_new_idempotency_keys_until_it_succeeds() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let scratch = tempfile::tempdir().unwrap();
    let e = api
        .start_execution("flaky", &json!({ "dir": scratch.path() }))
        .await
        .unwrap();
    let done = finished(&api, &e.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    let shaky = task(&done, "shaky");
    assert_eq!(shaky.attempts, 3);
    assert_eq!(shaky.output, Some(json!({ "attempts": 3 })));
    let keys = std::fs::read_to_string(scratch.path().join("keys")).unwrap();
    assert_eq!(
        keys.lines().collect::<Vec<_>>(),
        ["flaky-1/shaky/1", "flaky-1/shaky/2", "flaky-1/shaky/3"]
    );
    let metrics = rt.runtime.shared.workflows.metrics.clone();
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(
        text.contains("cortex_workflow_task_retries_total{workflow=\"flaky\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("cortex_workflow_executions_total{workflow=\"flaky\",state=\"succeeded\"} 1")
    );
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_skips_the_dependents_of_a_failure_and_runs_the_rest() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let e = api.start_execution("carry-on", &json!({})).await.unwrap();
    let done = finished(&api, &e.id).await;
    assert_eq!(done.state, "failed");
    let bad = task(&done, "bad");
    assert_eq!(bad.state, "failed");
    assert!(
        bad.error
            .as_deref()
            .unwrap_or("")
            .contains("no such customer"),
        "{bad:?}"
    );
    assert_eq!(task(&done, "after-bad").state, "skipped");
    assert_eq!(task(&done, "solo").state, "succeeded");
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_lets_the_running_task_finish_and_starts_nothing_new() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let e = api.start_execution("stop-early", &json!({})).await.unwrap();
    let done = finished(&api, &e.id).await;
    assert_eq!(done.state, "failed");
    assert_eq!(task(&done, "bad").state, "failed");
    assert_eq!(task(&done, "slow").state, "succeeded");
    assert_eq!(task(&done, "later").state, "skipped");
    assert_eq!(task(&done, "later").attempts, 0);
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_with_its_children() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let scratch = tempfile::tempdir().unwrap();
    let e = api
        .start_execution("too-slow", &json!({ "dir": scratch.path() }))
        .await
        .unwrap();
    let done = finished(&api, &e.id).await;
    assert_eq!(done.state, "failed");
    let hang = task(&done, "hang");
    assert!(
        hang.error.as_deref().unwrap_or("").contains("timed out"),
        "{hang:?}"
    );
    let pid = std::fs::read_to_string(scratch.path().join("pid")).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let mut gone = false;
    for _ in 0..250 {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        if s.is_empty() || s.contains(") Z ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the command's child outlived the timeout");
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_task_is_a_request_with_the_idempotency_key_and_its_reply_the_output() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let agent = rt.client("answerer");
    let e = api
        .start_execution("ask", &json!({ "q": 21 }))
        .await
        .unwrap();
    let delivery = loop {
        let got = agent.receive(1, Duration::from_secs(5)).await.unwrap();
        if let Some(d) = got.into_iter().next() {
            break d;
        }
    };
    assert!(delivery.request);
    assert_eq!(delivery.key.as_deref(), Some("ask-1/question/1"));
    assert_eq!(delivery.payload, json!({ "q": 21 }));
    let q = delivery.payload["q"].as_i64().unwrap();
    agent
        .reply(delivery.id, &json!({ "answer": q * 2 }))
        .await
        .unwrap();
    let done = finished(&api, &e.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(task(&done, "after").output, Some(json!(42)));
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_reply_in_time_fails_the_task() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let e = api
        .start_execution("ask-quickly", &json!({}))
        .await
        .unwrap();
    let done = finished(&api, &e.id).await;
    assert_eq!(done.state, "failed");
    let q = task(&done, "question");
    assert!(
        q.error
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 300 ms"),
        "{q:?}"
    );
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_execution_and_retry_runs_only_what_did_not_succeed() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let e = api.start_execution("long", &json!({})).await.unwrap();
    // Wait for the first task to be running, then cancel.
    for _ in 0..200 {
        if task(&api.execution(&e.id).await.unwrap(), "wait").state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = api.cancel_execution(&e.id).await.expect("cancels");
    assert_eq!(cancelled.state, "cancelled");
    assert_eq!(task(&cancelled, "wait").state, "cancelled");
    assert_eq!(task(&cancelled, "then").state, "cancelled");
    // Cancelling again is refused with the state named.
    match api.cancel_execution(&e.id).await {
        Err(ClientError::Api { status: 409, error }) => {
            assert!(error.message.contains("is cancelled"), "{}", error.message)
        }
        other => panic!("expected 409, got {other:?}"),
    }
    // Retry: both tasks run (again), attempts keep counting.
    let again = api.retry_execution(&e.id).await.expect("retries");
    assert_eq!(again.id, e.id);
    let done = finished(&api, &e.id).await;
    assert_eq!(done.state, "succeeded", "{done:#?}");
    assert_eq!(task(&done, "wait").attempts, 2);
    assert_eq!(task(&done, "then").attempts, 1);
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_a_failed_execution_keeps_the_outputs_of_succeeded_tasks() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let e = api.start_execution("carry-on", &json!({})).await.unwrap();
    let failed = finished(&api, &e.id).await;
    assert_eq!(failed.state, "failed");
    let solo_finished = task(&failed, "solo").finished_at.clone();
    api.retry_execution(&e.id).await.expect("retries");
    let again = finished(&api, &e.id).await;
    // bad fails again (a new attempt), after-bad is skipped again, solo
    // was not run again: its record is the same.
    assert_eq!(again.state, "failed");
    assert_eq!(task(&again, "bad").attempts, 2);
    assert_eq!(task(&again, "solo").attempts, 1);
    assert_eq!(task(&again, "solo").finished_at, solo_finished);
    assert_eq!(task(&again, "solo").output, Some(json!({ "solo": true })));
    // A succeeded execution cannot be retried.
    let ok = api
        .start_execution("diamond", &json!({ "dir": "/tmp" }))
        .await;
    let ok = finished(&api, &ok.unwrap().id).await;
    match api.retry_execution(&ok.id).await {
        Err(ClientError::Api { status: 409, .. }) => {}
        other => panic!("expected 409, got {other:?}"),
    }
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_messages_start_one_execution_each_queued_past_max_active() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    for n in 0..3 {
        api.publish("jobs", None, &json!({ "dir": format!("/job/{n}") }))
            .await
            .expect("publishes");
    }
    // A payload the topic's schema refuses starts nothing.
    match api.publish("jobs", None, &json!({ "nodir": 1 })).await {
        Err(ClientError::Api { status: 400, .. }) => {}
        other => panic!("expected a schema error, got {other:?}"),
    }
    let mut all = Vec::new();
    let mut most_running = 0;
    for _ in 0..400 {
        all = api.executions(Some("on-job")).await.unwrap();
        most_running = most_running.max(all.iter().filter(|e| e.state == "running").count());
        if all.len() == 3 && all.iter().all(ExecutionView::is_finished) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(all.iter().all(|e| e.state == "succeeded"), "{all:#?}");
    assert!(all.iter().all(|e| e.id.starts_with("on-job-m")));
    assert!(all.iter().all(|e| e.trigger.name == "job"));
    assert_eq!(most_running, 1, "maxActiveExecutions is 1");
    let outputs: Vec<Value> = all
        .iter()
        .map(|e| task(e, "work").output.clone().unwrap())
        .collect();
    assert_eq!(
        outputs,
        [
            json!({"dir": "/job/0"}),
            json!({"dir": "/job/1"}),
            json!({"dir": "/job/2"})
        ]
    );
    // Every trigger message was acked once its execution existed.
    let status = rt.runtime.status();
    let inbox = status
        .queues
        .iter()
        .find(|q| q.inbox == "workflow/on-job")
        .expect("the workflow's inbox");
    assert_eq!((inbox.depth, inbox.in_flight), (0, 0));
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_workflow_queues_and_resume_starts_in_order() {
    let (rt, _project) = start().await;
    let api = rt.operator();
    let paused = api.pause_workflow("on-job", true).await.unwrap();
    assert!(paused.paused);
    let first = api.start_execution("on-job", &json!(1)).await.unwrap();
    let second = api.start_execution("on-job", &json!(2)).await.unwrap();
    assert_eq!(
        (first.state.as_str(), second.state.as_str()),
        ("queued", "queued")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.execution(&first.id).await.unwrap().state, "queued");
    let resumed = api.pause_workflow("on-job", false).await.unwrap();
    assert!(!resumed.paused);
    let a = finished(&api, &first.id).await;
    let b = finished(&api, &second.id).await;
    assert_eq!(
        (a.state.as_str(), b.state.as_str()),
        ("succeeded", "succeeded")
    );
    assert!(a.finished_at <= b.started_at, "in order, one at a time");
    // Unknown workflows and workflows without a manual trigger are named.
    match api.start_execution("nope", &json!({})).await {
        Err(ClientError::Api { status: 404, error }) => {
            assert!(
                error.message.contains("there are: ask"),
                "{}",
                error.message
            )
        }
        other => panic!("expected 404, got {other:?}"),
    }
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_finishes_on_its_own_revision_across_an_apply() {
    let project = project();
    let rt = start_project(project.path(), false).await;
    let api = rt.operator();
    let old = api.start_execution("long", &json!({})).await.unwrap();
    assert_eq!(old.revision, 1);
    // While `wait` runs, version 2 of the workflow is applied.
    let specs = project.path().join("specs.yaml");
    let text = std::fs::read_to_string(&specs).unwrap();
    std::fs::write(
        &specs,
        text.replace("{\\\"version\\\": 1}", "{\\\"version\\\": 2}"),
    )
    .unwrap();
    assert_eq!(apply_project(project.path(), &rt.store).await, 2);
    // The runtime notices the revision (it polls every 100 ms in tests).
    for _ in 0..100 {
        if rt.runtime.status().revision == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = api.start_execution("long", &json!({})).await.unwrap();
    assert_eq!(new.revision, 2);
    let old = finished(&api, &old.id).await;
    let new = finished(&api, &new.id).await;
    assert_eq!(task(&old, "then").output, Some(json!({ "version": 1 })));
    assert_eq!(task(&new, "then").output, Some(json!({ "version": 2 })));
    rt.runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_only_the_operator_token() {
    let (rt, _project) = start().await;
    let agent = rt.client("answerer");
    match agent.start_execution("diamond", &json!({})).await {
        Err(ClientError::Api { status: 403, .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    let stranger = Client::new(&rt.runtime.url, "x", "not-a-token");
    match stranger.executions(None).await {
        Err(ClientError::Api { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    rt.runtime.stop().await.unwrap();
}
