//! The store conformance suite against the embedded SQLite store.

use std::sync::Arc;

use cortex_runtime::store::{
    ArangoConfig, ArangoStore, BoxFuture, HealthRecord, Op, SqliteStore, Store,
};
use cortex_testkit::conformance;

use cortex_testkit::arango::FakeArango;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let open = move || -> BoxFuture<'static, _> {
        let opened = SqliteStore::open(&path).map(|s| Arc::new(s) as Arc<dyn Store>);
        Box::pin(async move { opened })
    };
    if let Err(failures) = conformance::run(&open).await {
        panic!(
            "the embedded store fails the suite:\n- {}",
            failures.join("\n- ")
        );
    }
}

#[tokio::test]
async fn the_memory_store_for_paused_clock_tests_conforms() {
    let store = cortex_testkit::memory::MemoryStore::new();
    let open = move || -> BoxFuture<'static, _> {
        let opened = Arc::new(store.clone()) as Arc<dyn Store>;
        Box::pin(async move { Ok(opened) })
    };
    if let Err(failures) = conformance::run(&open).await {
        panic!(
            "the memory store fails the suite:\n- {}",
            failures.join("\n- ")
        );
    }
}

/// Regression: a 0-byte `state.db` silently became a new store; an SQLite
/// file of another program would have been taken over. Both are refused,
/// naming the file, and left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_refuses_an_empty_file_and_another_programs_database() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let err = SqliteStore::open(&empty).expect_err("an empty file is not a store");
    let said = err.to_string();
    assert!(
        said.contains(&empty.display().to_string()) && said.contains("empty or truncated"),
        "{said}"
    );
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    drop(conn);
    let before = std::fs::read(&other).unwrap();
    let err = SqliteStore::open(&other).expect_err("another program's database");
    assert!(
        err.to_string().contains("not a cortex state store"),
        "{err}"
    );
    assert!(std::fs::read(&other).unwrap() == before, "left as it was");

    // An absent file is a new store, and opens again as one.
    let fresh = dir.path().join("fresh.db");
    drop(SqliteStore::open(&fresh).expect("a new store"));
    drop(SqliteStore::open(&fresh).expect("opens again"));
}

/// Regression: the first `cortex up` made `state.db-wal` and `-shm` (which
/// hold tokens) 0644. A new state directory is 0700 and every file of the
/// store is 0600, from its creation.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".cortex");
    let path = state.join("state.db");
    let store = SqliteStore::open(&path).expect("open");
    store
        .write(vec![Op::Meta {
            key: "k".into(),
            value: Some("v".into()),
        }])
        .await
        .expect("write");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "the state directory");
    for file in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_refuses_a_file_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(
        &path,
        "this is not a database, and it must not be overwritten",
    )
    .unwrap();
    let err = SqliteStore::open(&path).expect_err("not a database");
    assert!(
        err.to_string().contains("cannot open the state store"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "this is not a database, and it must not be overwritten"
    );
}

/// The ArangoDB under test: a real server when `CORTEX_TEST_ARANGO_URL`
/// points at one (`http://user:password@host:8529`; a throwaway database
/// `cortex_test_<random>` is made and dropped), else the in-process stand-in.
struct Arango {
    config: ArangoConfig,
    fake: Option<FakeArango>,
}

impl Arango {
    async fn start() -> Arango {
        let database = format!("cortex_test_{:08x}", rand_u32());
        match std::env::var("CORTEX_TEST_ARANGO_URL") {
            Ok(url) => {
                let mut config = ArangoConfig::parse(&url).expect("CORTEX_TEST_ARANGO_URL");
                config.database = database;
                Arango { config, fake: None }
            }
            Err(_) => {
                let fake = FakeArango::start().await;
                let config = ArangoConfig::parse(&fake.url(&database)).unwrap();
                Arango {
                    config,
                    fake: Some(fake),
                }
            }
        }
    }

    async fn finish(self) {
        if self.fake.is_none() {
            ArangoStore::drop_database(&self.config)
                .await
                .expect("drop the test database");
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arango_store_conforms() {
    let arango = Arango::start().await;
    let config = arango.config.clone();
    let open = move || -> BoxFuture<'static, _> {
        let config = config.clone();
        Box::pin(async move {
            ArangoStore::connect(config)
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>)
        })
    };
    let result = conformance::run(&open).await;
    arango.finish().await;
    if let Err(failures) = result {
        panic!(
            "the ArangoDB store fails the suite:\n- {}",
            failures.join("\n- ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_halfway_leaves_nothing_in_arango() {
    let fake = FakeArango::start().await;
    let config = ArangoConfig::parse(&fake.url("cortex")).unwrap();
    let store = ArangoStore::connect(config).await.unwrap();
    let health = Op::Health(HealthRecord {
        agent: "triage".into(),
        replica: 0,
        at_ms: 1,
        state: "healthy".into(),
        detail: String::new(),
    });
    // The batch is three requests in one transaction (messages, health,
    // the last message id); the second fails.
    fake.fail_document_writes_after(1);
    let err = store
        .write(vec![
            Op::Enqueue(conformance::message(1, "triage")),
            health.clone(),
        ])
        .await
        .expect_err("the injected failure reaches the caller");
    assert!(err.to_string().contains("503"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(fake.transactions(), (0, 1), "the transaction was aborted");
    assert!(store.messages().await.unwrap().is_empty());
    assert!(store.health_history("triage", 5).await.unwrap().is_empty());
    assert_eq!(store.last_message_id().await.unwrap(), 0);

    // The same batch again goes through whole.
    store
        .write(vec![Op::Enqueue(conformance::message(1, "triage")), health])
        .await
        .unwrap();
    assert_eq!(store.messages().await.unwrap().len(), 1);
    assert_eq!(store.health_history("triage", 5).await.unwrap().len(), 1);
    assert_eq!(store.last_message_id().await.unwrap(), 1);
    assert_eq!(fake.documents("cortex", "messages").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_open_error() {
    let fake = FakeArango::start().await;
    let url = fake
        .url("cortex")
        .replace(cortex_testkit::arango::PASSWORD, "wrong");
    let err = ArangoStore::connect(ArangoConfig::parse(&url).unwrap())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("cannot open the state store"), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(
        !text.contains("wrong"),
        "the password is not printed: {text}"
    );
}
