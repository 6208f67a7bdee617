//! The store conformance suite against the embedded SQLite store.

use std::sync::Arc;

use cortex_reconciler::store::{SqliteStore, Store, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let open = move || SqliteStore::open(&path).map(|s| Arc::new(s) as Arc<dyn Store>);
    if let Err(failures) = conformance::run(&open).await {
        panic!(
            "the embedded store fails the suite:\n- {}",
            failures.join("\n- ")
        );
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
