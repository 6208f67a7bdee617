//! `cortex serve` against real git repositories (a bare "remote" and a
//! work repository pushing to it, in temporary directories): a pushed
//! commit is applied and runs; a commit that does not compile keeps the
//! last good one and its diagnostics are in the status; a fix syncs; a
//! force-push back to an older commit is followed; an empty remote is
//! reported, with the API up before anything runs.

use std::path::Path;
use std::time::{Duration, Instant};

use cortex_reconciler::serve::{Serve, ServeOptions, ServeTarget, Source};
use cortex_runtime::store::Store;
use cortex_testkit::git::Repo;
use cortex_testkit::kubernetes::FakeApiServer;
use cortex_testkit::serve::{ServeApi, remote_options, small_project, small_specs};
use git2::Repository;
use serde_json::Value;

/// The small project's `cortex.yaml` (project and namespace `served`).
fn project() -> String {
    small_project("served", "served")
}

/// A bare "remote" and a work repository whose first commit (the small
/// project, retention 1d) is pushed to it; the commit's id.
fn remote_with_a_first_commit() -> (tempfile::TempDir, Repo, String) {
    let remote = tempfile::tempdir().unwrap();
    Repository::init_bare(remote.path()).expect("bare");
    let work = Repo::new();
    work.write("cortex.yaml", &project());
    work.write("specs.yaml", &small_specs("1d"));
    let first = work.commit("first").to_string();
    push(&work, remote.path());
    (remote, work, first)
}

/// Pushes the work repository's `main` to the remote, forced.
fn push(work: &Repo, remote: &Path) {
    let repo = Repository::open(work.path()).expect("open");
    repo.remote_anonymous(remote.to_str().expect("utf-8"))
        .expect("remote")
        .push(&["+refs/heads/main:refs/heads/main"], None)
        .expect("push");
}

/// Serve's options for these tests: the remote at `remote`, state in
/// `state`, a 200 ms interval, auto sync with self-heal, no webhook, the
/// operator token only.
fn options(remote: &Path, state: &Path) -> ServeOptions {
    ServeOptions {
        lease: Duration::from_secs(3),
        ..remote_options(remote, state, Duration::from_millis(200))
    }
}

/// A running serve: its API (with the operator token), its stop switch
/// and its task.
struct Running {
    api: ServeApi,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), cortex_reconciler::serve::ServeError>>,
}

impl Running {
    async fn start(options: ServeOptions) -> Running {
        let state = options.state.clone();
        let mut serve = Serve::new(options);
        let url = serve.listen().await.expect("listens");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(serve.run(stopped));
        Running {
            api: ServeApi::operator(&url, &state),
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().expect("stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_pushed_commits_keeps_the_last_good_one_and_follows_a_force_push() {
    let remote_dir = tempfile::tempdir().unwrap();
    Repository::init_bare(remote_dir.path()).expect("bare");
    let state = tempfile::tempdir().unwrap();
    let served = Running::start(options(remote_dir.path(), state.path())).await;
    let api = &served.api;

    // Nothing pushed yet: the fetch fails, said in the status; the API is up.
    let empty = api
        .until("an empty remote reported", |s| s["syncState"] == "error")
        .await;
    assert!(
        empty["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot fetch branch main"),
        "{empty:#}"
    );
    let ready = cortex_client::http_client()
        .get(format!("{}/readyz", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready once the first sync failed");
    let refused = cortex_client::http_client()
        .get(format!("{}/api/v1/status", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "no token, no status");

    // A first commit is applied and runs.
    let work = Repo::new();
    work.write("cortex.yaml", &project());
    work.write("specs.yaml", &small_specs("1d"));
    let first = work.commit("first").to_string();
    push(&work, remote_dir.path());
    let synced = api
        .until("the first commit synced", |s| {
            s["syncedCommit"] == first.as_str()
        })
        .await;
    assert_eq!(synced["syncState"], "synced");
    assert_eq!(synced["syncedRevision"], 1);
    assert!(synced["lastError"].is_null());
    let runtime = synced["runtime"]
        .as_str()
        .expect("the runtime's URL")
        .to_string();
    assert_eq!(runtime, api.url, "the runtime took the API's address over");
    // Reconciles that find nothing new compile nothing (and plan nothing).
    let after = synced["reconciles"].as_u64().unwrap();
    api.until("three more reconciles", |s| {
        s["reconciles"].as_u64().unwrap_or(0) >= after + 3
    })
    .await;
    assert_eq!(api.metric("cortex_serve_compiles_total").await, Some(1.0));

    // A commit that does not compile: the first stays, the error is named.
    work.write(
        "specs.yaml",
        &small_specs("1d").replace("image: example/agent:1", "image: 7"),
    );
    let broken = work.commit("broken").to_string();
    push(&work, remote_dir.path());
    let failed = api
        .until("the broken commit reported", |s| {
            s["lastError"]["commit"] == broken.as_str()
        })
        .await;
    assert_eq!(failed["syncState"], "error");
    assert_eq!(
        failed["syncedCommit"],
        first.as_str(),
        "the last good commit stays"
    );
    assert_eq!(failed["syncedRevision"], 1);
    let problem = &failed["lastError"]["diagnostics"][0];
    assert_eq!(problem["file"], "specs.yaml", "{failed:#}");
    assert_eq!(problem["line"], 10, "{failed:#}");
    assert!(problem["code"].as_str().unwrap().starts_with("CX"));

    // The fix (with a change) syncs as revision 2.
    work.write("specs.yaml", &small_specs("7d"));
    let fixed = work.commit("fixed").to_string();
    push(&work, remote_dir.path());
    let synced = api
        .until("the fix synced", |s| s["syncedCommit"] == fixed.as_str())
        .await;
    assert_eq!(synced["syncedRevision"], 2);
    assert!(synced["lastError"].is_null());

    // Someone applies another revision behind serve's back: drift, put
    // back on the next interval (revision 3 is the manual one, 4 the heal).
    let manual = tempfile::tempdir().unwrap();
    std::fs::write(manual.path().join("cortex.yaml"), project()).unwrap();
    std::fs::write(manual.path().join("specs.yaml"), small_specs("30d")).unwrap();
    let store = cortex_runtime::store::SqliteStore::open(&state.path().join("state.db")).unwrap();
    assert_eq!(
        cortex_testkit::runtime::apply_project(manual.path(), &store).await,
        3
    );
    store.close();
    let healed = api
        .until("the drift healed", |s| s["driftHealed"] == 1)
        .await;
    assert_eq!(healed["syncedRevision"], 4);
    assert_eq!(healed["syncedCommit"], fixed.as_str());
    assert_eq!(
        healed["drift"],
        serde_json::json!(["Topic/jobs"]),
        "{healed:#}"
    );
    // Serve's metrics beside the runtime's, on its /metrics.
    let metrics = api.metrics().await;
    for line in [
        "cortex_serve_drift_healed_total 1",
        "cortex_serve_syncs_total{outcome=\"healed\"} 1",
        "cortex_serve_syncs_total{outcome=\"applied\"} 2",
        "cortex_serve_fetch_to_applied_seconds_count 2",
        "# TYPE cortex_queue_depth gauge",
    ] {
        assert!(metrics.contains(line), "{line}:\n{metrics}");
    }
    assert!(
        !metrics.contains("cortex_serve_compile_failures_total 0\n"),
        "the broken commit was counted: {metrics}"
    );
    // The running project's agents and topics.
    let get = |path: &str| {
        cortex_client::http_client()
            .get(format!("{}{path}", api.url))
            .bearer_auth(&api.token)
            .send()
    };
    let agents: Value = get("/api/v1/agents").await.unwrap().json().await.unwrap();
    assert!(agents["agents"]["worker"].is_object(), "{agents:#}");
    let topics: Value = get("/api/v1/topics").await.unwrap().json().await.unwrap();
    assert_eq!(topics["topics"][0]["name"], "jobs", "{topics:#}");
    assert_eq!(
        topics["topics"][0]["subscribers"],
        serde_json::json!(["worker"])
    );

    // A force-push back to the first commit is followed: revision 5.
    let repo = Repository::open(work.path()).unwrap();
    let oid = git2::Oid::from_str(&first).unwrap();
    repo.reference("refs/heads/main", oid, true, "rewind")
        .unwrap();
    push(&work, remote_dir.path());
    let rewound = api
        .until("the force-push followed", |s| {
            s["syncedCommit"] == first.as_str()
        })
        .await;
    assert_eq!(rewound["syncedRevision"], 5);
    let history = api.get("/api/v1/history").await;
    let outcomes: Vec<&str> = history["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    // Newest first: the rewind, the heal, the fix, the broken commit's
    // failure(s), the first commit, the empty remote's failure(s).
    assert_eq!(
        outcomes[..3],
        ["applied", "healed", "applied"],
        "{history:#}"
    );
    assert!(outcomes.contains(&"failed"));

    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_fetches_at_once_with_a_valid_signature_and_nothing_without() {
    let (remote_dir, work, first) = remote_with_a_first_commit();
    let state = tempfile::tempdir().unwrap();
    let secret = b"webhook secret".to_vec();
    let served = Running::start(ServeOptions {
        // Only the first fetch comes from the interval.
        interval: Duration::from_secs(3600),
        webhook_secret: Some(secret.clone()),
        ..options(remote_dir.path(), state.path())
    })
    .await;
    let api = &served.api;
    api.until("the first commit synced", |s| {
        s["syncedCommit"] == first.as_str()
    })
    .await;

    work.write("specs.yaml", &small_specs("2d"));
    let second = work.commit("second").to_string();
    push(&work, remote_dir.path());
    let body = br#"{"ref": "refs/heads/main"}"#;
    let post = |signature: Option<String>| {
        let mut request = cortex_client::http_client()
            .post(format!("{}/api/v1/webhook", api.url))
            .body(body.to_vec());
        if let Some(s) = signature {
            request = request.header("X-Hub-Signature-256", s);
        }
        request.send()
    };
    let sign = |key: &[u8]| cortex_testkit::serve::github_signature(key, body);
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(sign(b"wrong secret"))).await.unwrap().status(),
        401
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.status().await["syncedCommit"],
        first.as_str(),
        "a refused webhook fetches nothing"
    );
    assert_eq!(post(Some(sign(&secret))).await.unwrap().status(), 202);
    api.until("the webhook's fetch synced", |s| {
        s["syncedCommit"] == second.as_str()
    })
    .await;
    // The sync that applied the second commit is the webhook's: the
    // refused calls woke nothing.
    let history = api.get("/api/v1/history").await;
    let newest = &history["syncs"][0];
    assert_eq!(newest["commit"], second.as_str(), "{history:#}");
    assert_eq!(newest["trigger"], "webhook", "{history:#}");
    assert_eq!(newest["outcome"], "applied");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_sync_holds_new_commits_and_drift_until_a_sync_is_asked_for() {
    let (remote_dir, work, first) = remote_with_a_first_commit();
    let state = tempfile::tempdir().unwrap();
    let served = Running::start(ServeOptions {
        auto_sync: false,
        self_heal: false,
        ..options(remote_dir.path(), state.path())
    })
    .await;
    let api = &served.api;
    let sync = || {
        cortex_client::http_client()
            .post(format!("{}/api/v1/sync", api.url))
            .bearer_auth(&api.token)
            .send()
    };

    // Nothing is applied until asked.
    let held = api
        .until("the first commit held", |s| s["syncState"] == "out-of-sync")
        .await;
    assert!(held["syncedCommit"].is_null(), "{held:#}");
    assert!(held["syncedRevision"].is_null(), "{held:#}");
    assert_eq!(sync().await.unwrap().status(), 202);
    api.until("synced when asked", |s| s["syncedCommit"] == first.as_str())
        .await;

    // A new commit waits, its change listed.
    work.write("specs.yaml", &small_specs("2d"));
    let second = work.commit("second").to_string();
    push(&work, remote_dir.path());
    let waiting = api
        .until("the second commit held", |s| {
            s["headCommit"] == second.as_str() && s["syncState"] == "out-of-sync"
        })
        .await;
    assert_eq!(waiting["syncedCommit"], first.as_str());
    assert_eq!(waiting["pending"], serde_json::json!(["Topic/jobs"]));
    // The pending plan, as a pull request would show it.
    let plan = cortex_client::http_client()
        .get(format!("{}/api/v1/plan?format=text", api.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(plan.contains("~ Topic/jobs"), "{plan}");
    assert!(plan.contains("retentionMs"), "{plan}");
    assert_eq!(sync().await.unwrap().status(), 202);
    let synced = api
        .until("the second commit synced", |s| {
            s["syncedCommit"] == second.as_str()
        })
        .await;
    assert_eq!(synced["syncedRevision"], 2);
    assert_eq!(synced["pending"], serde_json::json!([]));

    // Drift without self-heal: reported, not put back.
    let manual = tempfile::tempdir().unwrap();
    std::fs::write(manual.path().join("cortex.yaml"), project()).unwrap();
    std::fs::write(manual.path().join("specs.yaml"), small_specs("30d")).unwrap();
    let store = cortex_runtime::store::SqliteStore::open(&state.path().join("state.db")).unwrap();
    assert_eq!(
        cortex_testkit::runtime::apply_project(manual.path(), &store).await,
        3
    );
    let drifted = api
        .until("the drift reported", |s| s["syncState"] == "out-of-sync")
        .await;
    assert_eq!(drifted["drift"], serde_json::json!(["Topic/jobs"]));
    assert_eq!(drifted["driftHealed"], 0);
    assert_eq!(store.revision().await.unwrap(), 3, "not put back");
    store.close();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_decide_each_call_and_a_sync_is_audited_with_its_caller() {
    let remote_dir = tempfile::tempdir().unwrap();
    Repository::init_bare(remote_dir.path()).expect("bare");
    let work = Repo::new();
    work.write("cortex.yaml", &project());
    work.write(
        "specs.yaml",
        &format!(
            "{}---
apiVersion: cortex.codevald.io/v1
kind: AccessPolicy
metadata: {{ name: ops }}
spec:
  roles:
    - {{ name: syncer, rules: [{{ resources: [sync, status], verbs: [sync, get] }}] }}
    - {{ name: viewer, rules: [{{ resources: [status, workflows/hello], verbs: [get, list] }}] }}
    - {{ name: runner, rules: [{{ resources: [workflows/hello], verbs: [run, get] }}] }}
    - {{ name: noter, rules: [{{ resources: [state/notes], verbs: [write, get, list] }}] }}
    - {{ name: reader, rules: [{{ resources: [\"state/*\"], verbs: [get, list] }}] }}
  bindings:
    - {{ role: syncer, subjects: [{{ token: ci-bot }}] }}
    - {{ role: runner, subjects: [{{ token: ci-bot }}] }}
    - {{ role: noter, subjects: [{{ token: ci-bot }}] }}
    - {{ role: viewer, subjects: [{{ group: support }}] }}
    - {{ role: reader, subjects: [{{ group: support }}] }}
---
apiVersion: cortex.codevald.io/v1
kind: State
metadata: {{ name: notes }}
spec: {{ writers: [worker] }}
---
apiVersion: cortex.codevald.io/v1
kind: Workflow
metadata: {{ name: hello }}
spec:
  triggers:
    - {{ name: by-hand, manual: {{}} }}
  tasks:
    - name: greet
      run: {{ command: [\"sh\", \"-c\", \"echo '{{}}'\"] }}
",
            small_specs("1d")
        ),
    );
    let first = work.commit("first").to_string();
    push(&work, remote_dir.path());
    let state = tempfile::tempdir().unwrap();
    let hash = |t: &str| cortex_runtime::tokens::hex(&cortex_runtime::tokens::TokenHash::of(t).0);
    let tokens = state.path().join("tokens.yaml");
    let with_tokens = ServeOptions {
        interval: Duration::from_secs(3600),
        tokens_file: Some(tokens.clone()),
        ..options(remote_dir.path(), state.path())
    };
    // A malformed entry stops serve at start, naming its line.
    std::fs::write(
        &tokens,
        format!(
            "- {{ name: ada, sha256: {}, groups: [support] }}\n- {{ name: ci-bot }}\n",
            hash("ada-token")
        ),
    )
    .unwrap();
    let refused = Serve::new(with_tokens.clone())
        .listen()
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("tokens.yaml:2:"), "{refused}");
    std::fs::write(
        &tokens,
        format!(
            "- {{ name: ada, sha256: {}, groups: [support] }}\n- {{ name: ci-bot, sha256: {} }}\n",
            hash("ada-token"),
            hash("bot-token")
        ),
    )
    .unwrap();
    let served = Running::start(with_tokens).await;
    let admin = &served.api;
    let url = admin.url.clone();
    admin
        .until("synced", |s| s["syncedCommit"] == first.as_str())
        .await;
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = cortex_client::http_client().request(method, format!("{url}{path}"));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send()
    };
    use reqwest::Method;
    // Each call's status code; the table's rows in order.
    let expect = |rows: Vec<(Method, String, Option<&'static str>, u16)>| {
        let calls: Vec<_> = rows
            .into_iter()
            .map(|(method, path, token, code)| {
                let what = format!("{method} {path} with {token:?}");
                (call(method, &path, token), what, code)
            })
            .collect();
        async move {
            for (sent, what, code) in calls {
                assert_eq!(sent.await.unwrap().status().as_u16(), code, "{what}");
            }
        }
    };
    let status = "/api/v1/status".to_string();
    expect(vec![
        (Method::GET, status.clone(), None, 401),
        (Method::GET, status.clone(), Some("nobody"), 401),
        (Method::GET, status, Some("ada-token"), 200),
        (
            Method::GET,
            "/api/v1/history".into(),
            Some("bot-token"),
            403,
        ),
        (Method::GET, "/api/v1/audit".into(), Some("ada-token"), 403),
    ])
    .await;
    let forbidden = call(Method::POST, "/api/v1/sync", Some("ada-token"))
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    assert!(
        forbidden
            .text()
            .await
            .unwrap()
            .contains("ada may not sync sync")
    );
    expect(vec![(
        Method::POST,
        "/api/v1/sync".into(),
        Some("bot-token"),
        202,
    )])
    .await;
    // The sync asked for is kept with its caller, and audited in the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = admin.get("/api/v1/history").await;
        if history["syncs"][0]["trigger"] == "api:ci-bot" {
            break;
        }
        assert!(Instant::now() < deadline, "{history:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Whether the audit log has an entry by `actor` for `action` whose
    // detail holds each of `details`.
    let audited = |actor: &'static str, action: &'static str, details: Vec<String>| {
        let read = call(Method::GET, "/api/v1/audit", Some(&admin.token));
        async move {
            let audit: Value = read.await.unwrap().json().await.unwrap();
            let found = audit["entries"].as_array().unwrap().iter().any(|e| {
                let detail = e["detail"].as_str().unwrap();
                e["actor"] == actor
                    && e["action"] == action
                    && details.iter().all(|d| detail.contains(d.as_str()))
            });
            assert!(found, "{actor} {action} {details:?}: {audit:#}");
        }
    };
    audited("ci-bot", "sync-unchanged", vec![first.clone()]).await;

    // The runtime's workflow endpoints, decided per workflow by the roles.
    let run = "/api/v1/workflows/hello/executions";
    expect(vec![(Method::POST, run.into(), Some("ada-token"), 403)]).await;
    let started = call(Method::POST, run, Some("bot-token")).await.unwrap();
    assert_eq!(started.status(), 201);
    let execution: Value = started.json().await.unwrap();
    let one = format!("/api/v1/executions/{}", execution["id"].as_str().unwrap());
    expect(vec![
        (Method::GET, one.clone(), Some("ada-token"), 200),
        // The runner may not cancel.
        (
            Method::POST,
            format!("{one}/cancel"),
            Some("bot-token"),
            403,
        ),
        (Method::GET, "/api/v1/executions/nope".into(), None, 401),
    ])
    .await;
    let listed: Value = call(Method::GET, run, Some("ada-token"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["executions"][0]["id"], execution["id"], "{listed}");
    audited(
        "ci-bot",
        "workflow-run",
        vec!["workflows/hello: ok".into(), first.clone()],
    )
    .await;

    // Agent state, decided per scope by the roles (`state/SCOPE`).
    let put = |token: &'static str| {
        cortex_client::http_client()
            .put(format!("{url}/api/v1/state/notes/greeting"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "value": "hello", "ifVersion": 0 }))
            .send()
    };
    assert_eq!(
        put("ada-token").await.unwrap().status(),
        403,
        "a reader may not write"
    );
    let written: Value = put("bot-token").await.unwrap().json().await.unwrap();
    assert_eq!(written["key"], "greeting", "{written}");
    let conflict = put("bot-token").await.unwrap();
    assert_eq!(conflict.status(), 409, "ifVersion 0 on an existing key");
    let doc: Value = call(
        Method::GET,
        "/api/v1/state/notes/greeting",
        Some("ada-token"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        (doc["value"].clone(), doc["updatedBy"].clone()),
        (Value::from("hello"), Value::from("cortex"))
    );
    expect(vec![
        (
            Method::GET,
            "/api/v1/state/notes".into(),
            Some("ada-token"),
            200,
        ),
        (
            Method::GET,
            "/api/v1/state/agents/worker".into(),
            Some("bot-token"),
            403,
        ),
        (
            Method::GET,
            "/api/v1/state/nowhere/k".into(),
            Some("ada-token"),
            404,
        ),
        (
            Method::DELETE,
            "/api/v1/state/notes/greeting".into(),
            None,
            401,
        ),
    ])
    .await;
    audited("ci-bot", "state-put", vec!["notes/greeting version".into()]).await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_with_a_commit_pins_it_until_a_sync_without_one() {
    let remote_dir = tempfile::tempdir().unwrap();
    Repository::init_bare(remote_dir.path()).expect("bare");
    let work = Repo::new();
    work.write("cortex.yaml", &project());
    work.write("specs.yaml", &small_specs("1d"));
    let a = work.commit("a").to_string();
    work.write("specs.yaml", &small_specs("2d"));
    let b = work.commit("b").to_string();
    push(&work, remote_dir.path());
    let state = tempfile::tempdir().unwrap();
    let served = Running::start(options(remote_dir.path(), state.path())).await;
    let api = &served.api;
    api.until("b synced", |s| s["syncedCommit"] == b.as_str())
        .await;
    let sync = |body: String| {
        cortex_client::http_client()
            .post(format!("{}/api/v1/sync", api.url))
            .bearer_auth(&api.token)
            .body(body)
            .send()
    };
    // Pin the older commit.
    let pin = format!("{{\"commit\": \"{a}\"}}");
    assert_eq!(sync(pin).await.unwrap().status(), 202);
    let pinned = api
        .until("a pinned", |s| s["syncedCommit"] == a.as_str())
        .await;
    assert_eq!(pinned["pinned"], a.as_str());
    // A new head is seen, and not followed.
    work.write("specs.yaml", &small_specs("3d"));
    let c = work.commit("c").to_string();
    push(&work, remote_dir.path());
    let seen = api.until("c seen", |s| s["headCommit"] == c.as_str()).await;
    let after = seen["reconciles"].as_u64().unwrap();
    let later = api
        .until("a reconcile after c was seen", |s| {
            s["reconciles"].as_u64().unwrap_or(0) > after
        })
        .await;
    assert_eq!(later["syncedCommit"], a.as_str(), "{later:#}");
    // A commit the fetch never brought is refused, naming it.
    assert_eq!(
        sync(r#"{"commit": "0123456789abcdef0123456789abcdef01234567"}"#.to_string())
            .await
            .unwrap()
            .status(),
        202
    );
    let refused = api
        .until("an unknown commit refused", |s| s["syncState"] == "error")
        .await;
    assert!(
        refused["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot pin 0123456789"),
        "{refused:#}"
    );
    assert_eq!(refused["syncedCommit"], a.as_str());
    // A sync without a commit follows the branch again.
    assert_eq!(sync(String::new()).await.unwrap().status(), 202);
    let followed = api
        .until("c synced", |s| s["syncedCommit"] == c.as_str())
        .await;
    assert!(followed["pinned"].is_null());
    served.stop().await;
}

/// Serve's options for the Kubernetes target: the cluster of `kubeconfig`.
fn kubernetes(remote: &Path, state: &Path, kubeconfig: &Path, prune: bool) -> ServeOptions {
    ServeOptions {
        target: ServeTarget::Kubernetes {
            connect: cortex_reconciler::target::kubernetes::ConnectOptions {
                kubeconfig: Some(kubeconfig.to_path_buf()),
                context: None,
            },
            prune,
        },
        ..options(remote, state)
    }
}

/// The in-process API server with its `default` namespace (which a real
/// cluster always has: the leader's lease goes there), and a kubeconfig
/// for it.
fn cluster() -> (FakeApiServer, tempfile::TempDir, std::path::PathBuf) {
    let server = FakeApiServer::start().expect("the in-process API server");
    server.create_namespace("default");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path()).unwrap();
    (server, dir, kubeconfig)
}

/// The image of the first container of Deployment `name` in `served`.
fn image(server: &FakeApiServer, name: &str) -> Option<String> {
    server
        .object("Deployment", Some("served"), name)
        .and_then(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .map(str::to_string)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_a_cluster_is_healed_or_reported_and_prune_deletes_what_left() {
    let (server, _dir, kubeconfig) = cluster();
    let (remote, work, first) = remote_with_a_first_commit();

    // Self-heal: an edit in the cluster (a `kubectl edit`) is put back.
    let state = tempfile::tempdir().unwrap();
    let served = Running::start(kubernetes(remote.path(), state.path(), &kubeconfig, false)).await;
    let api = &served.api;
    let synced = api
        .until("the first commit synced to the cluster", |s| {
            s["syncedCommit"] == first.as_str() && s["syncState"] == "synced"
        })
        .await;
    assert_eq!(synced["target"], "kubernetes");
    assert!(synced["runtime"].is_null(), "no runtime runs here");
    let deployments = server.names("Deployment", Some("served"));
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    let worker = deployments[0].clone();
    assert!(worker.contains("worker"), "{worker}");
    assert!(
        synced["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["identity"].as_str().unwrap().contains(&worker)),
        "{synced:#}"
    );
    assert_eq!(image(&server, &worker).as_deref(), Some("example/agent:1"));
    assert!(
        server.edit("Deployment", Some("served"), &worker, "kubectl-edit", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/agent:6".into();
        })
    );
    let drifted = |s: &Value| {
        s["drift"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d.as_str().unwrap().contains(&worker)))
    };
    let healed = api
        .until("the edit healed, the worker named", |s| {
            s["driftHealed"].as_u64() >= Some(1) && drifted(s)
        })
        .await;
    assert_eq!(healed["syncState"], "synced", "{healed:#}");
    assert_eq!(image(&server, &worker).as_deref(), Some("example/agent:1"));

    // Without --prune, an agent that left the project stays, and is noted.
    work.write(
        "specs.yaml",
        "apiVersion: cortex.codevald.io/v1
kind: Topic
metadata: { name: jobs }
spec: { ordering: none, retention: 1d }
---
apiVersion: cortex.codevald.io/v1
kind: Agent
metadata: { name: keeper }
spec:
  image: example/keeper:1
  subscribe: [jobs]
",
    );
    let second = work.commit("the worker leaves, a keeper comes").to_string();
    push(&work, remote.path());
    let kept = api
        .until("the second commit synced", |s| {
            s["syncedCommit"] == second.as_str() && s["syncState"] == "synced"
        })
        .await;
    assert!(
        server
            .object("Deployment", Some("served"), &worker)
            .is_some()
    );
    assert!(
        kept["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("--prune")),
        "{kept:#}"
    );
    served.stop().await;

    // Without self-heal, an edit is reported, not put back; with --prune
    // what left the project is deleted.
    let state = tempfile::tempdir().unwrap();
    let served = Running::start(ServeOptions {
        self_heal: false,
        ..kubernetes(remote.path(), state.path(), &kubeconfig, true)
    })
    .await;
    let api = &served.api;
    api.until("the second commit synced with prune", |s| {
        s["syncedCommit"] == second.as_str() && s["syncState"] == "synced"
    })
    .await;
    assert!(
        server
            .object("Deployment", Some("served"), &worker)
            .is_none(),
        "pruned"
    );
    let maps = server.names("ConfigMap", Some("served"));
    let map = maps.first().expect("a ConfigMap").clone();
    let key = server.object("ConfigMap", Some("served"), &map).unwrap()["data"]
        .as_object()
        .and_then(|d| d.keys().next().cloned())
        .expect("a data key");
    assert!(
        server.edit("ConfigMap", Some("served"), &map, "kubectl-edit", |m| {
            m["data"][&key] = "by hand".into();
        })
    );
    let reported = api
        .until("the edit reported", |s| s["syncState"] == "out-of-sync")
        .await;
    assert!(
        reported["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains(&map)),
        "{reported:#}"
    );
    let still = server.object("ConfigMap", Some("served"), &map).unwrap();
    assert_eq!(still["data"][&key], "by hand", "not put back");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_syncing_a_cluster_elect_their_leader_with_a_lease_in_it() {
    use cortex_reconciler::serve::leader::LeaseKeeper;
    use cortex_reconciler::serve::target::ClusterLease;
    let (server, _dir, kubeconfig) = cluster();
    let connect = cortex_reconciler::target::kubernetes::ConnectOptions {
        kubeconfig: Some(kubeconfig.clone()),
        context: None,
    };
    // The lease's rule, kept in a Lease object in the context's namespace.
    let keeper = ClusterLease::new(connect, "a repository");
    let taken = keeper.take("a", 1_000, 16_000).await.unwrap();
    assert_eq!(taken.holder, "a");
    assert_eq!(keeper.take("b", 2_000, 17_000).await.unwrap().holder, "a");
    keeper.take("a", 3_000, 3_000).await.unwrap();
    assert_eq!(keeper.take("b", 4_000, 19_000).await.unwrap().holder, "b");
    let leases = server.names("Lease", Some("default"));
    assert!(
        leases.iter().any(|l| l.starts_with("cortex-serve-")),
        "{leases:?}"
    );

    // Two replicas: one leads and syncs, the other stands by; when the
    // leader stops, the standby takes over.
    let (remote, _work, first) = remote_with_a_first_commit();
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = |state: &Path| ServeOptions {
        lease: Duration::from_millis(1500),
        ..kubernetes(remote.path(), state, &kubeconfig, false)
    };
    let a = Running::start(replica(state_a.path())).await;
    a.api
        .until("a leads and syncs", |s| {
            s["leader"] == true && s["syncedCommit"] == first.as_str()
        })
        .await;
    let b = Running::start(replica(state_b.path())).await;
    let standing = b
        .api
        .until("b stands by", |s| s["leaderId"].is_string())
        .await;
    assert_eq!(standing["leader"], false, "{standing:#}");
    assert!(
        standing["leaderId"].as_str().unwrap().contains(&a.api.url),
        "{standing:#}"
    );
    a.stop().await;
    b.api
        .until("b takes over and syncs", |s| {
            s["leader"] == true && s["syncedCommit"] == first.as_str()
        })
        .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_is_watched_and_each_saved_change_synced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cortex.yaml"), project()).unwrap();
    std::fs::write(dir.path().join("specs.yaml"), small_specs("1d")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let served = Running::start(ServeOptions {
        source: Source::Local {
            dir: dir.path().to_path_buf(),
        },
        // Only the first reconcile comes from the interval.
        interval: Duration::from_secs(3600),
        ..options(dir.path(), state.path())
    })
    .await;
    let api = &served.api;
    let first = api
        .until("the directory synced", |s| s["syncState"] == "synced")
        .await;
    assert_eq!(first["syncedRevision"], 1);
    assert!(first["syncedCommit"].is_null(), "not a git work tree");
    // A save is seen by the watcher, not the interval, and applied.
    std::fs::write(dir.path().join("specs.yaml"), small_specs("2d")).unwrap();
    let second = api
        .until("the saved change synced", |s| s["syncedRevision"] == 2)
        .await;
    assert_eq!(
        second["driftHealed"], 0,
        "a change of the source is no drift"
    );
    let history: Value = api.get("/api/v1/history").await;
    assert_eq!(history["syncs"][0]["trigger"], "watch", "{history:#}");
    assert_eq!(history["syncs"][0]["outcome"], "applied", "{history:#}");
    // A file that does not compile keeps the last good revision.
    std::fs::write(dir.path().join("specs.yaml"), "kind: [").unwrap();
    let broken = api
        .until("the broken save reported", |s| s["syncState"] == "error")
        .await;
    assert_eq!(broken["syncedRevision"], 2);
    assert_eq!(
        broken["lastError"]["diagnostics"][0]["file"], "specs.yaml",
        "{broken:#}"
    );
    served.stop().await;
}
