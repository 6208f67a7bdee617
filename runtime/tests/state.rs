//! Agent state end to end: a runtime on a fixture project, agents acting
//! through `cortex-client` over real HTTP with their own tokens.

use std::sync::Arc;
use std::time::Duration;

use cortex_client::{Cas, ClientError};
use cortex_runtime::store::Store;
use cortex_testkit::git::fixture_path;
use cortex_testkit::runtime::{TestRuntime, options, start_project};
use serde_json::{Value, json};

async fn runtime() -> TestRuntime {
    start_project(&fixture_path("runtime/state"), false).await
}

fn api_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, cortex_client::ApiError) {
    match result {
        Err(ClientError::Api { status, error }) => (status, error),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_creates_updates_and_deletes() {
    let t = runtime().await;
    let desk = t.client("counter").state("desk");
    assert_eq!(
        desk.get("open").await.unwrap(),
        None,
        "a missing key is None"
    );
    let v1 = match desk.put_if("open", &json!({"n": 1}), 0).await.unwrap() {
        Cas::Written(v) => v,
        other => panic!("create: {other:?}"),
    };
    match desk.put_if("open", &json!({"n": 9}), 0).await.unwrap() {
        Cas::Conflict(Some(current)) => {
            assert_eq!((current.version, current.value), (v1, json!({"n": 1})));
            assert_eq!(current.updated_by, "counter");
            assert!(current.updated_at.ends_with('Z'), "{}", current.updated_at);
        }
        other => panic!("create over an existing key: {other:?}"),
    }
    let v2 = match desk.put_if("open", &json!({"n": 2}), v1).await.unwrap() {
        Cas::Written(v) => v,
        other => panic!("update: {other:?}"),
    };
    assert!(v2 > v1, "versions grow");
    assert!(
        matches!(desk.delete_if("open", v1).await.unwrap(), Cas::Conflict(Some(c)) if c.version == v2),
        "a stale delete is a conflict naming the current version"
    );
    assert!(matches!(desk.delete_if("open", v2).await.unwrap(), Cas::Written(v) if v > v2));
    assert_eq!(desk.get("open").await.unwrap(), None, "deleted");
    let (status, error) = api_error(desk.delete_if("open", 0).await);
    assert_eq!(
        (status, error.code.as_str()),
        (404, "not_found"),
        "{}",
        error.message
    );
    // Keys may be paths; the page is in key order and names the next.
    for k in ["t/1", "t/2", "t/3", "u/1"] {
        desk.put(k, &json!({"n": 0})).await.unwrap();
    }
    let page = desk.list("t/", "", 2).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["t/1", "t/2"]);
    assert_eq!(page.next.as_deref(), Some("t/2"));
    let rest = desk.list("t/", "t/2", 2).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next, None);
    // Any key survives the URL: spaces, `?`, `#`, `%`, unicode.
    let odd = "odd key?#%/ünï";
    desk.put(odd, &json!({"n": 7})).await.unwrap();
    let doc = desk.get(odd).await.unwrap().expect("found by the same key");
    assert_eq!(doc.key, odd);
    // `watch` alone is the watch, not a key; a longer key is fine.
    desk.put("watch/list", &json!({"n": 8})).await.unwrap();
    assert!(desk.get("watch/list").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_come_from_the_spec_and_values_from_the_schema() {
    let t = runtime().await;
    let forbidden = |r: Result<Cas, ClientError>| {
        let (status, error) = api_error(r);
        assert_eq!(
            (status, error.code.as_str()),
            (403, "forbidden"),
            "{}",
            error.message
        );
        error.message
    };
    t.client("counter")
        .state("desk")
        .put("k", &json!({"n": 1}))
        .await
        .unwrap();
    let reader = t.client("reader");
    assert_eq!(
        reader.state("desk").get("k").await.unwrap().unwrap().value,
        json!({"n": 1})
    );
    let said = forbidden(reader.state("desk").put_if("k", &json!({"n": 2}), 0).await);
    assert!(said.contains("writers"), "{said}");
    let outsider = t.client("outsider");
    let (status, _) = api_error(outsider.state("desk").get("k").await);
    assert_eq!(status, 403, "not a reader");
    forbidden(
        outsider
            .state("agents/counter")
            .put_if("k", &json!(1), 0)
            .await,
    );
    // Its own scope is its own.
    outsider
        .state("agents/outsider")
        .put("k", &json!(1))
        .await
        .unwrap();
    let (status, error) = api_error(outsider.state("nowhere").get("k").await);
    assert_eq!((status, error.code.as_str()), (404, "unknown_scope"));
    // The operator may use every scope.
    assert!(
        t.operator()
            .state("agents/outsider")
            .get("k")
            .await
            .unwrap()
            .is_some()
    );
    // The schema names the failing pointer.
    let (status, error) = api_error(
        t.client("counter")
            .state("desk")
            .put_if("bad", &json!({"n": -1}), 0)
            .await,
    );
    assert_eq!(
        (status, error.code.as_str()),
        (400, "schema"),
        "{}",
        error.message
    );
    assert_eq!(error.pointer.as_deref(), Some("/n"));
    assert_eq!(
        t.client("counter").state("desk").get("bad").await.unwrap(),
        None,
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_one_wins_the_other_gets_409_with_the_winners_value() {
    let t = runtime().await;
    let (a, b) = (t.client("counter"), t.client("counter"));
    let (a, b) = (a.state("desk"), b.state("desk"));
    let mut version = match a.put_if("race", &json!({"n": 0}), 0).await.unwrap() {
        Cas::Written(v) => v,
        other => panic!("{other:?}"),
    };
    for round in 1..=25 {
        let (va, vb) = (json!({"n": round}), json!({"n": 100 + round}));
        let (x, y) = tokio::join!(
            a.put_if("race", &va, version),
            b.put_if("race", &vb, version),
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let (won, lost, value) = match (&x, &y) {
            (Cas::Written(v), Cas::Conflict(c)) => (*v, c.clone(), json!({"n": round})),
            (Cas::Conflict(c), Cas::Written(v)) => (*v, c.clone(), json!({"n": 100 + round})),
            other => panic!("round {round}: exactly one must win: {other:?}"),
        };
        let lost = lost.expect("the loser sees the key");
        assert_eq!((lost.version, lost.value), (won, value), "round {round}");
        version = won;
    }
    let metrics = cortex_runtime::server::render_metrics(&t.runtime.shared);
    assert!(
        metrics.contains("cortex_state_conflicts_total{scope=\"desk\"} 25"),
        "one loser a round: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_retries_on_conflict_until_every_increment_landed() {
    let t = runtime().await;
    // Two replicas of one agent share its scope.
    let replicas = [t.client("counter"), t.client("counter")];
    let mut tasks = Vec::new();
    for client in replicas {
        tasks.push(tokio::spawn(async move {
            let mine = client.state("agents/counter");
            for _ in 0..20 {
                mine.update("handled", |old| {
                    json!(old.and_then(Value::as_u64).unwrap_or(0) + 1)
                })
                .await
                .expect("update");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let doc = t
        .client("counter")
        .state("agents/counter")
        .get("handled")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.value, json!(40), "no increment lost");
    let metrics = cortex_runtime::server::render_metrics(&t.runtime.shared);
    assert!(
        metrics.contains("cortex_state_writes_total{scope=\"agents/counter\"} 40"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_across_a_runtime_restart_with_nothing_missed_or_repeated() {
    let t = runtime().await;
    let TestRuntime {
        runtime,
        store,
        tokens,
        state,
    } = t;
    let url = runtime.url.clone();
    let writer = cortex_client::Client::new(&url, "counter", &tokens["counter"]);
    let reader = cortex_client::Client::new(&url, "reader", &tokens["reader"]);
    let desk = writer.state("desk");
    for n in 0..5 {
        desk.put(&format!("k{n}"), &json!({"n": n})).await.unwrap();
    }
    let mut watch = reader.state("desk").watch(0);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(watch.next().await.unwrap());
    }
    // Restart on the same address: the watch reconnects by itself.
    runtime.stop().await.unwrap();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("the same port again");
    let project = fixture_path("runtime/state");
    let again = cortex_runtime::engine::start_on(
        store.clone() as Arc<dyn Store>,
        options(&project, state.path(), false),
        listener,
        "test store",
    )
    .await
    .unwrap();
    for n in 5..10 {
        desk.put(&format!("k{n}"), &json!({"n": n})).await.unwrap();
    }
    for _ in 0..5 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let versions: Vec<u64> = seen.iter().map(|c| c.version).collect();
    assert_eq!(
        versions,
        (1..=10).collect::<Vec<_>>(),
        "every change once, in order"
    );
    let keys: Vec<String> = seen.iter().map(|c| c.key.clone()).collect();
    assert_eq!(keys, (0..10).map(|n| format!("k{n}")).collect::<Vec<_>>());
    // A watch from an explicit version resumes there too.
    let mut from_seven = reader.state("desk").watch(7);
    assert_eq!(from_seven.next().await.unwrap().version, 8);
    let metrics = cortex_runtime::server::render_metrics(&again.shared);
    assert!(
        metrics.contains("cortex_state_watchers 2\n"),
        "the resumed watch and the one from 7 are open: {metrics}"
    );
    let delivered: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cortex_state_watch_lag_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        delivered >= 6,
        "five changes to the resumed watch and at least one from 7 since the restart: {delivered}"
    );
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_the_kept_history_is_told_to_list_again() {
    let t = runtime().await;
    let short = t.client("counter").state("short");
    for n in 0..6 {
        short.put("k", &json!(n)).await.unwrap();
    }
    let (status, error) = api_error(short.watch(1).next().await);
    assert_eq!(
        (status, error.code.as_str()),
        (410, "compacted"),
        "{}",
        error.message
    );
    let page = short.list("", "", 10).await.unwrap();
    assert_eq!(page.version, 6);
    let mut watch = short.watch(page.version);
    short.put("k", &json!(6)).await.unwrap();
    let change = watch.next().await.unwrap();
    assert_eq!((change.version, change.value), (7, Some(json!(6))));
    let status = t.runtime.shared.state.scopes().await.unwrap();
    assert!(
        status
            .iter()
            .any(|s| s.scope == "short" && s.version == 7 && s.keys == 1 && s.compacted == 4),
        "{status:?}"
    );
    assert!(
        status.iter().any(|s| s.scope == "desk" && s.version == 0),
        "declared scopes show unwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_socket_carries_state_calls_with_the_same_rights_and_answers() {
    let t = runtime().await;
    let mut session = t.client("counter").session(8).await.unwrap();
    assert_eq!(session.state_get("desk", "s").await.unwrap(), None);
    let v = match session
        .state_put("desk", "s", &json!({"n": 1}), Some(0))
        .await
        .unwrap()
    {
        Cas::Written(v) => v,
        other => panic!("{other:?}"),
    };
    match session
        .state_put("desk", "s", &json!({"n": 2}), Some(0))
        .await
        .unwrap()
    {
        Cas::Conflict(Some(current)) => {
            assert_eq!((current.version, current.value), (v, json!({"n": 1})))
        }
        other => panic!("a create over an existing key: {other:?}"),
    }
    let doc = session.state_get("desk", "s").await.unwrap().unwrap();
    assert_eq!((doc.version, doc.updated_by.as_str()), (v, "counter"));
    // The same document over HTTP.
    assert_eq!(
        t.client("counter")
            .state("desk")
            .get("s")
            .await
            .unwrap()
            .unwrap(),
        doc
    );
    let (status, error) = api_error(
        session
            .state_put("desk", "s", &json!({"n": -5}), None)
            .await,
    );
    assert_eq!((status, error.pointer.as_deref()), (400, Some("/n")));
    assert!(
        matches!(session.state_delete("desk", "s", Some(v)).await.unwrap(), Cas::Written(d) if d > v)
    );
    let mut reader = t.client("reader").session(8).await.unwrap();
    let (status, _) = api_error(reader.state_put("desk", "x", &json!({"n": 1}), None).await);
    assert_eq!(status, 403, "a reader may not write over the socket either");
    // Deliveries still flow on a socket that made state calls.
    t.operator()
        .send("counter", None, &json!({"hi": 1}))
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), session.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(delivery.payload, json!({"hi": 1}));
}
