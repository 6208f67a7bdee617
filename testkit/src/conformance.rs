//! The behaviour every [`Store`] must have, as one suite that tests run
//! against each implementation (the embedded store always; ArangoDB when
//! `CORTEX_TEST_ARANGO_URL` points at a server).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use cortex_runtime::store::{
    Applied, AuditEntry, BoxFuture, HealthRecord, Lease, Op, ScopeStats, StateEntry, StateLog,
    StateOutcome, StateWrite, Store, StoreError, StoredExecution, StoredMessage, StoredTask,
};

/// Opens the store under test; called more than once, each call must reach
/// the same (initially empty) state, as two replicas sharing it would.
pub type Opener<'a> =
    &'a (dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Store>, StoreError>> + Sync);

fn check(ok: bool, what: &str, failures: &mut Vec<String>) {
    if !ok {
        failures.push(what.to_string());
    }
}

/// A message for the suite.
pub fn message(id: u64, inbox: &str) -> StoredMessage {
    StoredMessage {
        id,
        inbox: inbox.to_string(),
        topic: Some("orders".into()),
        key: Some(format!("k{}", id % 3)),
        sender: "tester".into(),
        payload: json!({ "n": id }).to_string(),
        attempts: 0,
        published_ms: 1_700_000_000_000 + id,
        request: false,
        in_reply_to: None,
        dead: None,
    }
}

fn applied(marker: &str) -> Applied {
    Applied {
        revision: 0,
        commit: Some(marker.to_string()),
        config: json!({ "agents": { marker: {} } }),
        tokens: BTreeMap::from([(marker.to_string(), format!("token-{marker}"))]),
        applied_at_ms: 42,
    }
}

/// Runs the suite; `Err` lists every expectation that failed.
pub async fn run(open: Opener<'_>) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    let f = &mut failures;
    let fail = |e: StoreError| vec![format!("unexpected store error: {e}")];
    let store = open().await.map_err(fail)?;

    // An empty store.
    check(
        store.applied().await.map_err(fail)?.is_none(),
        "a new store has no applied config",
        f,
    );
    check(
        store.revision().await.map_err(fail)? == 0,
        "a new store is at revision 0",
        f,
    );
    check(
        store.messages().await.map_err(fail)?.is_empty(),
        "a new store has no messages",
        f,
    );
    check(
        store.last_message_id().await.map_err(fail)? == 0,
        "a new store's last message id is 0",
        f,
    );

    // Applies: compare-and-swap on the revision.
    let first = store.apply(0, applied("one")).await.map_err(fail)?;
    check(first == 1, "the first apply gets revision 1", f);
    let stored = store.applied().await.map_err(fail)?;
    check(
        stored.as_ref().is_some_and(|a| {
            a.revision == 1
                && a.commit.as_deref() == Some("one")
                && a.tokens.get("one").map(String::as_str) == Some("token-one")
        }),
        "the applied config reads back with its revision, commit and tokens",
        f,
    );
    match store.apply(0, applied("two")).await {
        Err(StoreError::Stale {
            expected: 0,
            found: 1,
        }) => {}
        other => f.push(format!(
            "an apply based on revision 0 after revision 1 must be stale, got {other:?}"
        )),
    }
    check(
        store.apply(1, applied("two")).await.map_err(fail)? == 2,
        "an apply on the current revision gets the next",
        f,
    );
    check(
        store.revision().await.map_err(fail)? == 2,
        "revision() follows applies",
        f,
    );

    // Two replicas apply on the same revision at once: exactly one wins.
    let other = open().await.map_err(fail)?;
    let (a, b) = tokio::join!(
        store.apply(2, applied("three")),
        other.apply(2, applied("four"))
    );
    let wins = [&a, &b].iter().filter(|r| matches!(r, Ok(3))).count();
    let stale = [&a, &b]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(StoreError::Stale {
                    expected: 2,
                    found: 3
                })
            )
        })
        .count();
    check(
        wins == 1 && stale == 1,
        &format!(
            "of two applies racing on revision 2 one wins and one is stale (got {a:?} and {b:?})"
        ),
        f,
    );
    drop(other);

    // Messages: enqueue, update, remove, in id order.
    store
        .write(
            (1..=5)
                .rev()
                .map(|id| Op::Enqueue(message(id, "triage")))
                .collect(),
        )
        .await
        .map_err(fail)?;
    store
        .write(vec![
            Op::Remove(2),
            Op::Attempted { id: 3, attempts: 2 },
            Op::Dead {
                id: 4,
                reason: "ack timeout after 5 attempts".into(),
                attempts: 5,
            },
        ])
        .await
        .map_err(fail)?;
    let messages = store.messages().await.map_err(fail)?;
    let ids: Vec<u64> = messages.iter().map(|m| m.id).collect();
    check(
        ids == [1, 3, 4, 5],
        &format!("messages come back in id order without removed ones (got {ids:?})"),
        f,
    );
    check(
        messages.iter().any(|m| m.id == 3 && m.attempts == 2),
        "attempts are updated",
        f,
    );
    check(
        messages.iter().any(|m| {
            m.id == 4
                && m.dead.as_deref() == Some("ack timeout after 5 attempts")
                && m.attempts == 5
        }),
        "dead letters keep their reason and attempts",
        f,
    );
    check(
        messages.first() == Some(&message(1, "triage")),
        "a message reads back field for field",
        f,
    );
    store
        .write(vec![
            Op::Remove(1),
            Op::Remove(3),
            Op::Remove(4),
            Op::Remove(5),
        ])
        .await
        .map_err(fail)?;
    check(
        store.messages().await.map_err(fail)?.is_empty(),
        "removed messages are gone",
        f,
    );
    check(
        store.last_message_id().await.map_err(fail)? == 5,
        "the last message id survives removing every message",
        f,
    );

    // Concurrent writers all land (group commit must not lose a batch).
    let mut tasks = Vec::new();
    for t in 0..50u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let ops = (0..20)
                .map(|i| Op::Enqueue(message(100 + t * 20 + i, "writer")))
                .collect();
            store.write(ops).await
        }));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            other => f.push(format!("a concurrent write failed: {other:?}")),
        }
    }
    let count = store.messages().await.map_err(fail)?.len();
    check(
        count == 1000,
        &format!("1,000 messages written by 50 concurrent writers are all stored (got {count})"),
        f,
    );

    // Health history and audit log: newest first, limited.
    let health = |at_ms: u64, state: &str| {
        Op::Health(HealthRecord {
            agent: "triage".into(),
            replica: 0,
            at_ms,
            state: state.into(),
            detail: String::new(),
        })
    };
    store
        .write(vec![
            health(1, "starting"),
            health(2, "healthy"),
            health(3, "degraded"),
        ])
        .await
        .map_err(fail)?;
    let history = store.health_history("triage", 2).await.map_err(fail)?;
    let states: Vec<&str> = history.iter().map(|h| h.state.as_str()).collect();
    check(
        states == ["degraded", "healthy"],
        &format!("health history is newest first and limited (got {states:?})"),
        f,
    );
    check(
        store
            .health_history("nobody", 5)
            .await
            .map_err(fail)?
            .is_empty(),
        "health history is per agent",
        f,
    );
    // Trimming: an agent keeps its newest HEALTH_HISTORY_PER_AGENT records;
    // another agent's are not touched.
    let keep = cortex_runtime::store::sqlite::HEALTH_HISTORY_PER_AGENT;
    let record = |agent: &str, n: u64| {
        Op::Health(HealthRecord {
            agent: agent.into(),
            replica: 0,
            at_ms: n,
            state: "healthy".into(),
            detail: n.to_string(),
        })
    };
    store.write(vec![record("trim-b", 0)]).await.map_err(fail)?;
    store
        .write((0..keep as u64 + 25).map(|n| record("trim-a", n)).collect())
        .await
        .map_err(fail)?;
    let trimmed = store
        .health_history("trim-a", keep * 2)
        .await
        .map_err(fail)?;
    check(
        trimmed.len() == keep
            && trimmed.first().map(|h| h.detail.as_str()) == Some(&(keep + 24).to_string())
            && trimmed.last().map(|h| h.detail.as_str()) == Some("25"),
        "health history is trimmed to the newest records per agent",
        f,
    );
    check(
        store
            .health_history("trim-b", 10)
            .await
            .map_err(fail)?
            .len()
            == 1,
        "trimming one agent's history keeps the others'",
        f,
    );
    let audit = |at_ms: u64, action: &str| {
        Op::Audit(AuditEntry {
            at_ms,
            actor: "tester".into(),
            action: action.into(),
            detail: String::new(),
        })
    };
    store
        .write(vec![audit(1, "apply"), audit(2, "restart")])
        .await
        .map_err(fail)?;
    let log = store.audit_log(10).await.map_err(fail)?;
    check(
        log.first().map(|a| a.action.as_str()) == Some("restart") && log.len() == 2,
        "the audit log is newest first",
        f,
    );

    // Named values.
    store
        .write(vec![Op::Meta {
            key: "runtime.url".into(),
            value: Some("http://127.0.0.1:1".into()),
        }])
        .await
        .map_err(fail)?;
    check(
        store.meta("runtime.url").await.map_err(fail)?.as_deref() == Some("http://127.0.0.1:1"),
        "a named value reads back",
        f,
    );
    store
        .write(vec![Op::Meta {
            key: "runtime.url".into(),
            value: None,
        }])
        .await
        .map_err(fail)?;
    check(
        store.meta("runtime.url").await.map_err(fail)?.is_none(),
        "a named value can be removed",
        f,
    );
    let named = |key: &str, value: &str| Op::Meta {
        key: key.into(),
        value: Some(value.into()),
    };
    store
        .write(vec![
            named("process/b/0", "2"),
            named("process/a/1", "1"),
            named("processes", "not this"),
            named("proc", "nor this"),
        ])
        .await
        .map_err(fail)?;
    check(
        store.meta_prefix("process/").await.map_err(fail)?
            == vec![
                ("process/a/1".to_string(), "1".to_string()),
                ("process/b/0".to_string(), "2".to_string()),
            ],
        "named values are listed by prefix, in name order",
        f,
    );

    // Workflow executions: created once per id, tasks and state as they move.
    let execution = |id: &str, workflow: &str| {
        Op::Execution(Box::new(StoredExecution {
            id: id.into(),
            workflow: workflow.into(),
            revision: 3,
            trigger: "on-ticket".into(),
            payload: json!({"id": 7}),
            state: "running".into(),
            definition: json!({"order": ["a", "b"]}),
            created_ms: 1,
            finished_ms: None,
            tasks: BTreeMap::new(),
        }))
    };
    let task = |execution: &str, task: &str, state: &str, output: Option<Value>| Op::Task {
        execution: execution.into(),
        task: task.into(),
        record: StoredTask {
            state: state.into(),
            attempts: 1,
            output,
            error: None,
            started_ms: Some(2),
            finished_ms: None,
            earlier_attempts: 0,
        },
    };
    store
        .write(vec![
            execution("pipeline-m1", "pipeline"),
            execution("other-1", "other"),
            task("pipeline-m1", "a", "running", None),
        ])
        .await
        .map_err(fail)?;
    // The same trigger again (a redelivered message): nothing changes.
    let mut again = execution("pipeline-m1", "pipeline");
    if let Op::Execution(e) = &mut again {
        e.payload = json!("a second copy");
    }
    store
        .write(vec![
            again,
            execution("pipeline-m2", "pipeline"),
            task("pipeline-m1", "a", "succeeded", Some(json!({"n": 1}))),
            Op::ExecutionState {
                id: "pipeline-m1".into(),
                state: "succeeded".into(),
                finished_ms: Some(9),
            },
        ])
        .await
        .map_err(fail)?;
    let pipeline = store.executions(Some("pipeline")).await.map_err(fail)?;
    let ids: Vec<&str> = pipeline.iter().map(|e| e.id.as_str()).collect();
    check(
        ids == ["pipeline-m1", "pipeline-m2"],
        &format!("a workflow's executions are listed oldest first, each once (got {ids:?})"),
        f,
    );
    let first = pipeline.first();
    check(
        first.is_some_and(|e| e.payload == json!({"id": 7})),
        "an execution created twice keeps its first trigger payload",
        f,
    );
    check(
        first.is_some_and(|e| e.state == "succeeded" && e.finished_ms == Some(9)),
        "an execution's state and end are updated",
        f,
    );
    check(
        first.is_some_and(|e| {
            e.tasks
                .get("a")
                .is_some_and(|t| t.state == "succeeded" && t.output == Some(json!({"n": 1})))
                && e.tasks.len() == 1
        }),
        "a task's latest record replaces its earlier one",
        f,
    );
    check(
        store.executions(None).await.map_err(fail)?.len() == 3,
        "every workflow's executions are listed without a filter",
        f,
    );

    // Everything survives closing and opening again.
    drop(store);
    let again = open().await.map_err(fail)?;
    check(
        again.revision().await.map_err(fail)? == 3,
        "the revision survives reopening",
        f,
    );
    check(
        again.messages().await.map_err(fail)?.len() == 1000,
        "messages survive reopening",
        f,
    );
    check(
        again
            .health_history("triage", 10)
            .await
            .map_err(fail)?
            .len()
            == 3,
        "health history survives reopening",
        f,
    );
    check(
        again
            .executions(Some("pipeline"))
            .await
            .map_err(fail)?
            .first()
            .is_some_and(|e| {
                e.tasks.contains_key("a") && e.definition == json!({"order": ["a", "b"]})
            }),
        "executions and their tasks survive reopening",
        f,
    );
    leases(&*again, f).await.map_err(fail)?;
    state(&*again, f).await.map_err(fail)?;
    let second = open().await.map_err(fail)?;
    racing_writers(&*again, &*second, f).await.map_err(fail)?;
    drop((again, second));
    let third = open().await.map_err(fail)?;
    check(
        third
            .state_get("agents/triage", "count")
            .await
            .map_err(fail)?
            .is_some_and(|e| e.value == json!(3)),
        "state survives reopening",
        f,
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Leader election's lease: one holder at a time, renewed by its holder,
/// taken over once expired, given up by its holder only.
async fn leases(store: &dyn Store, f: &mut Vec<String>) -> Result<(), StoreError> {
    let a = store.take_lease("serve", "a", 1_000, 16_000).await?;
    check(
        a.holder == "a" && a.expires_ms == 16_000,
        "a free lease is taken",
        f,
    );
    let b = store.take_lease("serve", "b", 2_000, 17_000).await?;
    check(
        b == a,
        "a held lease is not taken; the asker is told who holds it",
        f,
    );
    let renewed = store.take_lease("serve", "a", 5_000, 20_000).await?;
    check(
        renewed.holder == "a" && renewed.expires_ms == 20_000,
        "the holder renews its lease",
        f,
    );
    let other = store.take_lease("other", "b", 5_000, 20_000).await?;
    check(other.holder == "b", "leases of other names are apart", f);
    let taken = store.take_lease("serve", "b", 20_000, 35_000).await?;
    check(
        taken.holder == "b" && taken.expires_ms == 35_000,
        "an expired lease is taken over",
        f,
    );
    let refused = store.take_lease("serve", "a", 21_000, 21_000).await?;
    check(refused.holder == "b", "only the holder gives a lease up", f);
    store.take_lease("serve", "b", 22_000, 22_000).await?;
    let free = store.take_lease("serve", "a", 22_000, 37_000).await?;
    check(free.holder == "a", "a lease given up is free at once", f);
    check(
        store.meta("lease/serve").await?.is_some(),
        "a lease is kept among the named values",
        f,
    );
    Ok(())
}

/// A state write for the suite.
pub fn state_write(
    scope: &str,
    key: &str,
    value: Option<Value>,
    if_version: Option<u64>,
) -> StateWrite {
    StateWrite {
        scope: scope.to_string(),
        key: key.to_string(),
        value,
        if_version,
        by: "tester".into(),
        at_ms: 1_700_000_000_000,
        history: 4,
    }
}

fn written(outcome: &StateOutcome) -> u64 {
    match outcome {
        StateOutcome::Written { version } => *version,
        _ => 0,
    }
}

/// Agent state: compare-and-swap create, update and delete; versions per
/// scope; pages by prefix; the change log with its compaction point.
async fn state(store: &dyn Store, f: &mut Vec<String>) -> Result<(), StoreError> {
    let scope = "agents/triage";
    let w =
        |key: &str, value: Option<Value>, if_version| state_write(scope, key, value, if_version);
    let created = store
        .state_write(w("count", Some(json!(1)), Some(0)))
        .await?;
    check(
        written(&created) == 1,
        "ifVersion 0 creates a key as version 1",
        f,
    );
    let again = store
        .state_write(w("count", Some(json!(9)), Some(0)))
        .await?;
    check(
        matches!(&again, StateOutcome::Conflict { current: Some(e) } if e.version == 1 && e.value == json!(1)),
        "ifVersion 0 on an existing key is a conflict with the current value",
        f,
    );
    let updated = store
        .state_write(w("count", Some(json!(2)), Some(1)))
        .await?;
    check(
        written(&updated) == 2,
        "ifVersion = the current version updates",
        f,
    );
    let stale = store
        .state_write(w("count", Some(json!(5)), Some(1)))
        .await?;
    check(
        matches!(&stale, StateOutcome::Conflict { current: Some(e) } if e.version == 2 && e.value == json!(2)),
        "a stale ifVersion is a conflict naming the current version",
        f,
    );
    let other = store
        .state_write(w("other", Some(json!("x")), None))
        .await?;
    check(
        written(&other) == 3,
        "versions count per scope, across keys",
        f,
    );
    let blind = store.state_write(w("count", Some(json!(3)), None)).await?;
    check(written(&blind) == 4, "a write without ifVersion writes", f);
    let entry: Option<StateEntry> = store.state_get(scope, "count").await?;
    check(
        entry.as_ref().is_some_and(|e| {
            e.value == json!(3) && e.version == 4 && e.updated_by == "tester" && e.key == "count"
        }),
        "a key reads back with its value, version and writer",
        f,
    );
    let missing = store.state_write(w("nothing", None, None)).await?;
    check(
        missing == StateOutcome::Missing,
        "deleting a missing key says so",
        f,
    );
    let stale_delete = store.state_write(w("other", None, Some(1))).await?;
    check(
        matches!(stale_delete, StateOutcome::Conflict { .. }),
        "a delete with a stale ifVersion is a conflict",
        f,
    );
    let deleted = store.state_write(w("other", None, Some(3))).await?;
    check(
        written(&deleted) == 5,
        "a delete with the current version deletes",
        f,
    );
    check(
        store.state_get(scope, "other").await?.is_none(),
        "a deleted key is gone",
        f,
    );
    let recreated = store
        .state_write(w("other", Some(json!(0)), Some(0)))
        .await?;
    check(
        written(&recreated) == 6,
        "a deleted key is created again with a new, higher version",
        f,
    );
    for key in ["tickets/1", "tickets/2", "tickets/3", "users/1"] {
        store.state_write(w(key, Some(json!(key)), None)).await?;
    }
    let page = store.state_list(scope, "tickets/", "", 2).await?;
    let keys: Vec<&str> = page.iter().map(|e| e.key.as_str()).collect();
    check(
        keys == ["tickets/1", "tickets/2"],
        "a page of a prefix, in key order",
        f,
    );
    let next = store.state_list(scope, "tickets/", "tickets/2", 2).await?;
    check(
        next.iter().map(|e| e.key.as_str()).collect::<Vec<_>>() == ["tickets/3"],
        "the next page starts after the last key",
        f,
    );
    check(
        store
            .state_list("agents/other", "", "", 10)
            .await?
            .is_empty(),
        "scopes are apart",
        f,
    );
    // history 4: versions 7..=10 are kept, up to 6 are compacted.
    let log: StateLog = store.state_changes(scope, 0, 100).await?;
    check(log.head == 10, "the log's head is the scope's revision", f);
    check(log.compacted == 6, "the log keeps `history` changes", f);
    check(
        log.changes.iter().map(|c| c.version).collect::<Vec<_>>() == [7, 8, 9, 10],
        "the kept changes, in version order",
        f,
    );
    let head_only = store.state_changes(scope, 0, 0).await?;
    check(
        head_only.changes.is_empty() && head_only.head == 10 && head_only.compacted == 6,
        "a limit of 0 answers the head and compaction point alone",
        f,
    );
    check(
        store
            .state_changes(scope, u64::MAX, 10)
            .await?
            .changes
            .is_empty(),
        "nothing comes after the highest version",
        f,
    );
    let tail = store.state_changes(scope, 8, 1).await?;
    check(
        tail.changes.len() == 1
            && tail.changes[0].version == 9
            && tail.changes[0].key == "tickets/3"
            && tail.changes[0].value == Some(json!("tickets/3")),
        "changes after a version, at most the limit",
        f,
    );
    store.state_write(w("tickets/1", None, None)).await?;
    let deletion = store.state_changes(scope, 10, 10).await?;
    check(
        deletion.changes.len() == 1 && deletion.changes[0].value.is_none(),
        "a delete is a change without a value",
        f,
    );
    let scopes: Vec<ScopeStats> = store.state_scopes().await?;
    check(
        scopes
            .iter()
            .any(|s| s.scope == scope && s.version == 11 && s.keys == 5),
        "a scope's counters: revision and keys",
        f,
    );
    store
        .state_write(state_write(
            "agents/triage",
            "count",
            Some(json!(3)),
            Some(4),
        ))
        .await?;
    Ok(())
}

/// Two writers (two openings of the store) race on one key with the same
/// `ifVersion`, many times: exactly one wins each round, the other gets the
/// winner's version and value.
async fn racing_writers(
    a: &dyn Store,
    b: &dyn Store,
    f: &mut Vec<String>,
) -> Result<(), StoreError> {
    let scope = "shared.race";
    let first = a
        .state_write(state_write(scope, "k", Some(json!("start")), Some(0)))
        .await?;
    let mut version = written(&first);
    for round in 0..20 {
        let (x, y) = tokio::join!(
            a.state_write(state_write(
                scope,
                "k",
                Some(json!(format!("a{round}"))),
                Some(version)
            )),
            b.state_write(state_write(
                scope,
                "k",
                Some(json!(format!("b{round}"))),
                Some(version)
            )),
        );
        let (x, y) = (x?, y?);
        let (winner, loser, value) = match (&x, &y) {
            (StateOutcome::Written { version: v }, other) => (*v, other, format!("a{round}")),
            (other, StateOutcome::Written { version: v }) => (*v, other, format!("b{round}")),
            _ => {
                f.push(format!(
                    "round {round}: neither racing writer won ({x:?}, {y:?})"
                ));
                return Ok(());
            }
        };
        check(
            matches!(loser, StateOutcome::Conflict { current: Some(e) } if e.version == winner && e.value == json!(value)),
            &format!("round {round}: the loser gets 409 with the winner's version and value"),
            f,
        );
        version = winner;
    }
    let log = a.state_changes(scope, 0, 100).await?;
    check(
        log.head == 21
            && log
                .changes
                .windows(2)
                .all(|w| w[1].version == w[0].version + 1),
        "racing writers leave a gapless log, one change per round",
        f,
    );
    Ok(())
}

/// A store that refuses writes on demand, over a real one: for showing
/// that what the store refused leaves no trace (the broker undoes it).
pub struct FailingStore {
    inner: Arc<dyn Store>,
    failing: std::sync::atomic::AtomicBool,
    refusing_executions: std::sync::atomic::AtomicBool,
}

impl FailingStore {
    /// `inner`, writing normally until [`FailingStore::fail_writes`].
    pub fn new(inner: Arc<dyn Store>) -> Arc<FailingStore> {
        Arc::new(FailingStore {
            inner,
            failing: std::sync::atomic::AtomicBool::new(false),
            refusing_executions: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on, a write that creates a workflow execution fails
    /// (`true`); every other write passes.
    pub fn refuse_executions(&self, refuse: bool) {
        self.refusing_executions
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on, writes and applies fail (`true`) or pass to the real
    /// store again (`false`).
    pub fn fail_writes(&self, fail: bool) {
        self.failing
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    fn refused(&self) -> Option<StoreError> {
        self.failing
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| StoreError::Backend("injected failure: the store refuses writes".into()))
    }
}

impl Store for FailingStore {
    fn applied(&self) -> BoxFuture<'_, Result<Option<Applied>, StoreError>> {
        self.inner.applied()
    }
    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.revision()
    }
    fn apply(&self, expected: u64, next: Applied) -> BoxFuture<'_, Result<u64, StoreError>> {
        match self.refused() {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.inner.apply(expected, next),
        }
    }
    fn write(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<(), StoreError>> {
        let creates = ops.iter().any(|op| matches!(op, Op::Execution(_)));
        if creates
            && self
                .refusing_executions
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Box::pin(async {
                Err(StoreError::Backend(
                    "injected failure: the store refuses new executions".into(),
                ))
            });
        }
        match self.refused() {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.inner.write(ops),
        }
    }
    fn messages(&self) -> BoxFuture<'_, Result<Vec<StoredMessage>, StoreError>> {
        self.inner.messages()
    }
    fn last_message_id(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.last_message_id()
    }
    fn health_history(
        &self,
        agent: &str,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HealthRecord>, StoreError>> {
        self.inner.health_history(agent, limit)
    }
    fn audit_log(&self, limit: usize) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        self.inner.audit_log(limit)
    }
    fn meta(&self, key: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        self.inner.meta(key)
    }
    fn executions(
        &self,
        workflow: Option<&str>,
    ) -> BoxFuture<'_, Result<Vec<StoredExecution>, StoreError>> {
        self.inner.executions(workflow)
    }
    fn meta_prefix(
        &self,
        prefix: &str,
    ) -> BoxFuture<'_, Result<Vec<(String, String)>, StoreError>> {
        self.inner.meta_prefix(prefix)
    }
    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'_, Result<Lease, StoreError>> {
        self.inner.take_lease(name, holder, now_ms, until_ms)
    }
    fn state_write(&self, write: StateWrite) -> BoxFuture<'_, Result<StateOutcome, StoreError>> {
        match self.refused() {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.inner.state_write(write),
        }
    }
    fn state_get(
        &self,
        scope: &str,
        key: &str,
    ) -> BoxFuture<'_, Result<Option<StateEntry>, StoreError>> {
        self.inner.state_get(scope, key)
    }
    fn state_list(
        &self,
        scope: &str,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StateEntry>, StoreError>> {
        self.inner.state_list(scope, prefix, after, limit)
    }
    fn state_changes(
        &self,
        scope: &str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<StateLog, StoreError>> {
        self.inner.state_changes(scope, after, limit)
    }
    fn state_scopes(&self) -> BoxFuture<'_, Result<Vec<ScopeStats>, StoreError>> {
        self.inner.state_scopes()
    }
}
