//! Crash safety: `cortex up` is killed with SIGKILL while acknowledged
//! messages are in flight (10,000 in one run, a random number in others,
//! so the kill lands at different points of the publish, deliver and ack
//! streams) and more are being published, delivered and acked; after a
//! restart, every publish the broker acknowledged is delivered, no message
//! whose delivery was acked comes back, and nothing is delivered that was
//! never sent. And workflow executions: killed with SIGKILL while 30
//! executions of a ten-task workflow run, `cortex up` restarts, resumes
//! them all to success, and no task that had succeeded runs again.

use cortex_testkit::git as common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cortex_client::Client;
use cortex_runtime::store::{SqliteStore, Store};
use serde_json::json;

fn up(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cortex"))
        .args(["up", "--no-agents", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("CORTEX_LOG", "warn")
        .env_remove("CORTEX_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cortex up")
}

/// The runtime's URL and the agents' tokens, once the runtime answers.
async fn connect(
    dir: &Path,
    previous: Option<&str>,
) -> (String, std::collections::BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "cortex up did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(store) = SqliteStore::open(&dir.join(".cortex/state.db")) else {
            continue;
        };
        let (Ok(Some(url)), Ok(Some(applied))) =
            (store.meta("runtime.url").await, store.applied().await)
        else {
            continue;
        };
        store.close();
        if Some(url.as_str()) == previous {
            continue;
        }
        let healthy = cortex_client::http_client()
            .get(format!("{url}/healthz"))
            .send()
            .await;
        if healthy.is_ok_and(|r| r.status().is_success()) {
            return (url, applied.tokens);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9() {
    // The figure, then two kill points drawn at random.
    let random = |low: u64, high: u64| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        low + nanos % (high - low)
    };
    for in_flight_at_kill in [10_000, random(200, 3_000), random(3_000, 9_000)] {
        eprintln!("crash test: kill -9 with {in_flight_at_kill} acknowledged messages waiting");
        crash_once(in_flight_at_kill as usize).await;
    }
}

async fn crash_once(in_flight_at_kill: usize) {
    const MESSAGES: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let project = common::fixture_path("runtime/crash");
    for file in ["cortex.yaml", "specs.yaml"] {
        std::fs::copy(project.join(file), dir.path().join(file)).unwrap();
    }
    let mut child = up(dir.path());
    let (url, tokens) = connect(dir.path(), None).await;
    let source = Client::new(&url, "source", &tokens["source"]);
    let sink = Client::new(&url, "sink", &tokens["sink"]);

    // Publishers: 32 concurrent streams of messages; every 202 is recorded.
    let published: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    // Every publish sent, answered or not.
    let sent: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let consumed: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    // Acks sent, answered or not: an ack cut off by the kill may have been
    // made durable before its answer, so those messages are not owed.
    let acking: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for lane in 0..32u64 {
        let source = source.clone();
        let published = published.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = lane;
            while n < MESSAGES {
                sent.lock().unwrap().insert(n);
                match source.publish("load", None, &json!({ "n": n })).await {
                    Ok(_) => {
                        published.lock().unwrap().insert(n);
                    }
                    Err(_) => return, // the runtime is gone
                }
                n += 32;
            }
        }));
    }
    // A consumer receives in batches and acks most of what it gets, leaving
    // the rest in flight.
    {
        let sink = sink.clone();
        let consumed = consumed.clone();
        let acking = acking.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(batch) = sink.receive(200, Duration::from_millis(200)).await else {
                    return;
                };
                for (i, d) in batch.iter().enumerate() {
                    if i % 4 == 3 {
                        continue; // left in flight
                    }
                    let n = d.payload["n"].as_u64().unwrap();
                    acking.lock().unwrap().insert(n);
                    if sink.ack(d.id).await.is_err() {
                        return;
                    }
                    consumed.lock().unwrap().insert(n);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    // Kill -9 once 10,000 acknowledged messages wait in the broker
    // (published, not yet acked by the consumer), publishers still going.
    let in_flight = || {
        published
            .lock()
            .unwrap()
            .len()
            .saturating_sub(consumed.lock().unwrap().len())
    };
    while in_flight() < in_flight_at_kill {
        assert!(Instant::now() < deadline, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let published = published.lock().unwrap().clone();
    let consumed = consumed.lock().unwrap().clone();
    let acking = acking.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(published.len() - consumed.len() >= in_flight_at_kill);
    assert!(
        published.len() < MESSAGES as usize,
        "killed while publishing"
    );

    // Restart and drain the sink's inbox.
    let mut child = up(dir.path());
    let (url, tokens) = connect(dir.path(), Some(&url)).await;
    let sink = Client::new(&url, "sink", &tokens["sink"]);
    let mut delivered = BTreeSet::new();
    loop {
        let batch = sink
            .receive(1000, Duration::from_millis(500))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        for d in batch {
            delivered.insert(d.payload["n"].as_u64().unwrap());
            sink.ack(d.id).await.expect("ack");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let owed: BTreeSet<u64> = published.difference(&acking).copied().collect();
    let lost: Vec<&u64> = owed.difference(&delivered).collect();
    let returned: Vec<&u64> = consumed.intersection(&delivered).collect();
    eprintln!(
        "crash test: {} publishes acknowledged, {} deliveries acked before the kill, {} delivered after the restart, {} lost, {} acked ones returned",
        published.len(),
        consumed.len(),
        delivered.len(),
        lost.len(),
        returned.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        returned.is_empty(),
        "acked deliveries came back: {:?}",
        &returned[..returned.len().min(10)]
    );
    // Messages sent but not acknowledged (in the kill's window) may or may
    // not be there; nothing that was never sent may.
    let invented: Vec<&u64> = delivered.difference(&sent).collect();
    assert!(
        invented.is_empty(),
        "delivered but never sent: {invented:?}"
    );
    let unanswered = sent.len() - published.len();
    assert!(
        delivered.difference(&published).count() <= unanswered,
        "only publishes cut off by the kill may come back unacknowledged"
    );
}

/// Every (execution, task) → the attempts noted in keys.log.
fn attempts_by_task(dir: &Path) -> std::collections::BTreeMap<(String, String), Vec<u32>> {
    let mut seen: std::collections::BTreeMap<(String, String), Vec<u32>> = Default::default();
    let log = std::fs::read_to_string(dir.join("keys.log")).unwrap_or_default();
    for line in log.lines() {
        let parts: Vec<&str> = line.split('/').collect();
        assert_eq!(parts.len(), 3, "an idempotency key: {line:?}");
        seen.entry((parts[0].to_string(), parts[1].to_string()))
            .or_default()
            .push(parts[2].parse().expect("an attempt number"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_executions_resume_after_kill_9_without_rerunning_what_succeeded() {
    const EXECUTIONS: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let project = common::fixture_path("runtime/crash");
    for file in ["cortex.yaml", "specs.yaml"] {
        std::fs::copy(project.join(file), dir.path().join(file)).unwrap();
    }
    let state = dir.path().join(".cortex");
    let mut child = up(dir.path());
    let (url, _) = connect(dir.path(), None).await;
    let token = {
        let store = SqliteStore::open(&state.join("state.db")).unwrap();
        let token = cortex_runtime::tokens::read_operator_token(&state, &store)
            .await
            .unwrap()
            .expect("the operator token");
        store.close();
        token
    };
    let operator = Client::new(&url, "cortex", &token);
    let mut ids = Vec::new();
    for _ in 0..EXECUTIONS {
        ids.push(
            operator
                .start_execution("chain10", &json!({}))
                .await
                .expect("starts")
                .id,
        );
    }
    // Kill once about a third of the 300 tasks have run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while attempts_by_task(dir.path()).len() < 100 {
        assert!(Instant::now() < deadline, "the executions stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // What the store says had succeeded when the runtime died.
    let store = SqliteStore::open(&state.join("state.db")).unwrap();
    let before = store.executions(Some("chain10")).await.unwrap();
    store.close();
    let succeeded_before: BTreeSet<(String, String)> = before
        .iter()
        .flat_map(|e| {
            e.tasks
                .iter()
                .filter(|(_, t)| t.state == "succeeded")
                .map(|(name, _)| (e.id.clone(), name.clone()))
        })
        .collect();
    let unfinished = before.iter().filter(|e| e.state == "running").count();
    assert!(!succeeded_before.is_empty(), "some tasks had succeeded");
    assert!(unfinished > 0, "the kill landed while executions ran");

    let mut child = up(dir.path());
    let (url, _) = connect(dir.path(), Some(&url)).await;
    let operator = Client::new(&url, "cortex", &token);
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let all = operator.executions(Some("chain10")).await.expect("list");
        if all.len() == EXECUTIONS && all.iter().all(|e| e.is_finished()) {
            break all;
        }
        assert!(Instant::now() < deadline, "not resumed: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(after.iter().all(|e| e.state == "succeeded"), "{after:#?}");
    let attempts = attempts_by_task(dir.path());
    assert_eq!(attempts.len(), EXECUTIONS * 10, "every task ran");
    let rerun: Vec<_> = succeeded_before
        .iter()
        .filter(|k| attempts[*k].len() != 1)
        .collect();
    assert!(
        rerun.is_empty(),
        "tasks that had succeeded ran again: {rerun:?}"
    );
    // Only a task in flight at the kill ran twice, as attempt 2.
    let twice: Vec<_> = attempts.iter().filter(|(_, a)| a.len() > 1).collect();
    assert!(twice.len() <= unfinished, "{twice:?}");
    assert!(twice.iter().all(|(_, a)| a == &&vec![1, 2]), "{twice:?}");
    eprintln!(
        "workflow crash test: {} tasks had succeeded at the kill, {unfinished} executions were running, {} tasks ran again as attempt 2; all {EXECUTIONS} executions succeeded",
        succeeded_before.len(),
        twice.len()
    );
}

/// Agent state: `cortex up` is killed with SIGKILL while four writers
/// count with compare-and-swap; after it, every write the runtime
/// acknowledged is in the store (each key holds at least its last
/// acknowledged count, and the log holds every acknowledged version), and a
/// restarted runtime goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_state_writes_survive_kill_9() {
    let repo = common::Repo::new();
    repo.copy_dir(&common::fixture_path("runtime/state"), "");
    let dir = repo.path().to_path_buf();
    let mut child = up(&dir);
    let (url, tokens) = connect(&dir, None).await;
    let acked: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = Client::new(&url, "counter", &tokens["counter"]);
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let desk = client.state("desk");
            let key = format!("writer-{w}");
            let mut version = 0;
            for n in 0.. {
                match desk.put_if(&key, &json!({ "n": n }), version).await {
                    Ok(cortex_client::Cas::Written(v)) => {
                        acked.lock().unwrap().push((key.clone(), n, v));
                        version = v;
                    }
                    Ok(other) => panic!("{key}: nobody else writes it: {other:?}"),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a few hundred writes were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "the writers did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("kill -9");
    child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let store = SqliteStore::open(&dir.join(".cortex/state.db")).unwrap();
    let log = store.state_changes("desk", 0, 1_000_000).await.unwrap();
    let logged: BTreeSet<u64> = log.changes.iter().map(|c| c.version).collect();
    for (key, n, version) in &acked {
        assert!(
            logged.contains(version),
            "{key}={n} (version {version}) was acknowledged but is not in the log"
        );
    }
    for w in 0..4 {
        let key = format!("writer-{w}");
        let last = acked
            .iter()
            .filter(|(k, ..)| *k == key)
            .map(|(_, n, _)| *n)
            .max();
        let stored = store.state_get("desk", &key).await.unwrap();
        if let Some(last) = last {
            let stored = stored.expect("an acknowledged key is there");
            assert!(
                stored.value["n"].as_u64().unwrap() >= last,
                "{key}: stored {} < acknowledged {last}",
                stored.value
            );
        }
    }
    store.close();
    // A restarted runtime serves what was kept and takes new writes.
    let mut child = up(&dir);
    let (url, tokens) = connect(&dir, Some(&url)).await;
    let desk = Client::new(&url, "counter", &tokens["counter"]).state("desk");
    let doc = desk.get("writer-0").await.unwrap().expect("kept");
    assert!(matches!(
        desk.put_if("writer-0", &json!({"n": 1_000_000}), doc.version).await.unwrap(),
        cortex_client::Cas::Written(v) if v > doc.version
    ));
    child.kill().unwrap();
    child.wait().unwrap();
}
