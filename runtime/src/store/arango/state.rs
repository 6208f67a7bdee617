//! Agent state on ArangoDB: three collections, every write one stream
//! transaction.
//!
//! | collection | documents |
//! |---|---|
//! | `state_scopes` | one per scope: its revision, key count and compaction point |
//! | `state_entries` | one per key: value, version, who and when |
//! | `state_changes` | the scope's log, one per change, kept `history` deep |
//!
//! A write reads the scope's document, then the key's, decides
//! ([`StateWrite::decide`]), and in one transaction replaces the scope's
//! document only if its `_rev` is still the one read (`If-Match`), writes
//! the key and appends the change. The scope's document is the point every
//! writer of the scope passes: a writer that lost the race (412 on
//! `If-Match`, 409 write-write conflict, 1210 on a first insert) aborts and
//! starts again from the reads, so of two writers racing on one key exactly
//! one wins and the other then sees the winner's version.
//!
//! Watches poll the change log (`version > after`, by a persistent index),
//! not a change feed: ArangoDB's WAL tailing API is a replication interface
//! (admin rights, single server or per DB-server in a cluster), while the
//! log is an ordinary collection any replica reads the same way, and the
//! runtime wakes its watchers itself on its own writes.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::{Client, Failure};
use super::{decode, queries};
use crate::store::state::{Decision, keys_delta};
use crate::store::{
    ScopeStats, StateChange, StateEntry, StateLog, StateOutcome, StateWrite, StoreError,
    StoreResult,
};

/// Times a write starts again after losing its scope to another writer.
const MAX_TRIES: u32 = 64;
/// Log entries one write drops at most (the log shrinks by this much per
/// write when a scope's `history` was lowered).
const MAX_DROPS: u64 = 256;
/// ArangoDB's numbers for "someone else wrote first".
const ERROR_CONFLICT: i64 = 1200;
const ERROR_UNIQUE: i64 = 1210;

/// A document key for any text: its SHA-256, hex (always a valid key,
/// never longer than 64 characters).
fn hashed(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn entry_key(scope: &str, key: &str) -> String {
    hashed(&format!("{}:{scope}{key}", scope.len()))
}

fn change_key(scope: &str, version: u64) -> String {
    format!("{}-{version:020}", hashed(scope))
}

fn lost_race(f: &Failure) -> bool {
    f.lost_race() || f.number == ERROR_CONFLICT || f.number == ERROR_UNIQUE
}

fn stats_of(doc: Option<&Value>, scope: &str) -> ScopeStats {
    doc.and_then(|d| serde_json::from_value::<ScopeStats>(d.clone()).ok())
        .unwrap_or_else(|| ScopeStats {
            scope: scope.to_string(),
            ..ScopeStats::default()
        })
}

fn damaged(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("ArangoDB: a stored {what} is damaged: {e}"))
}

/// Writes one key with compare-and-swap, starting again when another
/// writer of the scope came first.
pub(super) async fn write(client: &Client, write: &StateWrite) -> StoreResult<StateOutcome> {
    for attempt in 0..MAX_TRIES {
        match try_write(client, write).await {
            Ok(Some(outcome)) => return Ok(outcome),
            Ok(None) => {
                // Spread the retries of writers that collided.
                let pause = 1 + u64::from(attempt.min(8)) * (write.at_ms % 7 + 1);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(f) => return Err(f.into_store_error("writing state")),
        }
    }
    Err(StoreError::Backend(format!(
        "ArangoDB: scope {} is written by too many writers at once ({MAX_TRIES} tries lost)",
        write.scope
    )))
}

/// One try: `Ok(None)` when another writer of the scope came first.
async fn try_write(client: &Client, write: &StateWrite) -> Result<Option<StateOutcome>, Failure> {
    let scope_key = hashed(&write.scope);
    let scope_doc = client.document("state_scopes", &scope_key).await?;
    let stats = stats_of(scope_doc.as_ref(), &write.scope);
    let entry_key = entry_key(&write.scope, &write.key);
    let current = client
        .document("state_entries", &entry_key)
        .await?
        .and_then(|d| serde_json::from_value::<StateEntry>(d).ok());
    if let Decision::Refuse(outcome) = write.decide(current.as_ref()) {
        // True of the key as it was read: a conflict needs no transaction.
        return Ok(Some(outcome));
    }
    let version = stats.version + 1;
    let next = stats.after(
        version,
        keys_delta(current.is_some(), write),
        write.compacted_at(version),
    );
    let trx = client
        .begin(&["state_scopes", "state_entries", "state_changes"])
        .await?;
    let finished = match write_in(client, &trx, write, &scope_doc, &stats, &next).await {
        Ok(()) => client.commit(&trx).await,
        Err(f) => {
            client.abort(&trx).await;
            Err(f)
        }
    };
    match finished {
        Ok(_) => Ok(Some(StateOutcome::Written { version })),
        Err(f) if lost_race(&f) => Ok(None),
        Err(f) => Err(f),
    }
}

async fn write_in(
    client: &Client,
    trx: &str,
    write: &StateWrite,
    scope_doc: &Option<Value>,
    stats: &ScopeStats,
    next: &ScopeStats,
) -> Result<(), Failure> {
    let in_trx = [("x-arango-trx-id", trx)];
    let scope_body = serde_json::to_value(next).unwrap_or_default();
    client
        .swap(
            "state_scopes",
            &hashed(&write.scope),
            scope_body,
            scope_doc.as_ref(),
            Some(trx),
        )
        .await?;
    let entry_key = entry_key(&write.scope, &write.key);
    match write.entry(next.version) {
        Some(entry) => {
            let mut doc = serde_json::to_value(&entry).unwrap_or_default();
            doc["_key"] = entry_key.into();
            doc["scope"] = write.scope.clone().into();
            client
                .call(
                    Method::POST,
                    "/_api/document/state_entries?overwriteMode=replace",
                    Some(&doc),
                    &in_trx,
                )
                .await?;
        }
        None => {
            client
                .documents(
                    trx,
                    Method::DELETE,
                    "/_api/document/state_entries",
                    json!([entry_key]),
                    false,
                )
                .await?;
        }
    }
    let mut change = serde_json::to_value(write.change(next.version)).unwrap_or_default();
    change["_key"] = change_key(&write.scope, next.version).into();
    change["scope"] = write.scope.clone().into();
    client
        .call(
            Method::POST,
            "/_api/document/state_changes",
            Some(&change),
            &in_trx,
        )
        .await?;
    if next.compacted > stats.compacted {
        let from = (stats.compacted + 1).max(next.compacted.saturating_sub(MAX_DROPS - 1));
        let dropped: Vec<String> = (from..=next.compacted)
            .map(|v| change_key(&write.scope, v))
            .collect();
        client
            .documents(
                trx,
                Method::DELETE,
                "/_api/document/state_changes",
                json!(dropped),
                true,
            )
            .await?;
    }
    Ok(())
}

/// One key's document.
pub(super) async fn get(
    client: &Client,
    scope: &str,
    key: &str,
) -> StoreResult<Option<StateEntry>> {
    let doc = client
        .document("state_entries", &entry_key(scope, key))
        .await
        .map_err(|f| f.into_store_error("reading state"))?;
    doc.map(|d| serde_json::from_value(d).map_err(|e| damaged("state entry", e)))
        .transpose()
}

/// A page of a scope's keys.
pub(super) async fn list(
    client: &Client,
    scope: &str,
    prefix: &str,
    after: &str,
    limit: usize,
) -> StoreResult<Vec<StateEntry>> {
    let rows = client
        .query(
            queries::STATE_LIST,
            json!({ "scope": scope, "prefix": prefix, "after": after, "limit": limit }),
        )
        .await
        .map_err(|f| f.into_store_error("listing state"))?;
    decode(rows, "state entry")
}

/// A scope's changes after a version. The log is read before the scope's
/// document, so the compaction point read is never older than the log.
pub(super) async fn changes(
    client: &Client,
    scope: &str,
    after: u64,
    limit: usize,
) -> StoreResult<StateLog> {
    let rows = client
        .query(
            queries::STATE_CHANGES,
            json!({ "scope": scope, "after": after, "limit": limit }),
        )
        .await
        .map_err(|f| f.into_store_error("reading state changes"))?;
    let changes: Vec<StateChange> = decode(rows, "state change")?;
    let doc = client
        .document("state_scopes", &hashed(scope))
        .await
        .map_err(|f| f.into_store_error("reading a state scope"))?;
    let stats = stats_of(doc.as_ref(), scope);
    let head = changes.last().map_or(0, |c| c.version).max(stats.version);
    Ok(StateLog {
        changes,
        head,
        compacted: stats.compacted,
    })
}

/// Every scope's counters.
pub(super) async fn scopes(client: &Client) -> StoreResult<Vec<ScopeStats>> {
    let rows = client
        .query(queries::STATE_SCOPES, json!({}))
        .await
        .map_err(|f| f.into_store_error("reading state scopes"))?;
    decode(rows, "state scope")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_document_keys() {
        let k = entry_key("agents/triage", "a key / with ünïcode");
        assert_eq!(k.len(), 64);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(entry_key("a", "bc"), entry_key("ab", "c"));
        assert!(change_key("s", 2) < change_key("s", 10));
    }
}
