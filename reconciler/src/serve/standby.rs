//! The replica that does not lead: it stops the runtime if it ran it,
//! serves the API alone, and shows the status the leader publishes in the
//! shared store (written only when it changes, so a no-op reconcile writes
//! nothing).

use serde::Serialize;

use super::{LastError, Serve, leader};

/// The store's name of the status the leader publishes.
const PUBLISHED_STATUS: &str = "serve/status";

/// What the leader publishes of its status, and a standby shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Published {
    head_commit: Option<String>,
    synced_commit: Option<String>,
    synced_revision: Option<u64>,
    sync_state: String,
    last_sync_at: Option<String>,
    last_error: Option<PublishedError>,
    drift: Vec<String>,
    pending: Vec<String>,
}

/// [`LastError`] as published (its message; the diagnostics by line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
struct PublishedError {
    commit: Option<String>,
    message: String,
}

impl Serve {
    /// A standby: stops the runtime if this replica ran it (the lease was
    /// lost), serves the API alone, and shows what the leader published.
    pub(super) async fn stand_by(&mut self, known: &leader::Leadership) {
        if let Some(up) = self.up.take() {
            tracing::warn!("the lease is lost: stopping the runtime");
            *self.runtime.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if let Err(e) = up.stop().await {
                tracing::error!(error = %e, "the runtime did not stop cleanly");
            }
            self.published = None;
        }
        if self.standalone.is_none()
            && let Err(e) = self.serve_standalone().await
        {
            tracing::error!(error = %e, "the API cannot be served");
        }
        let published = match &self.store {
            Some(store) => cortex_runtime::store::Store::meta(&**store, PUBLISHED_STATUS).await,
            None => Ok(None),
        };
        let published = published
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_str::<Published>(&v).ok());
        let waiting = match (&known.holder, &known.error) {
            (_, Some(error)) => format!("standing by: cannot take the lease: {error}"),
            (Some(holder), None) => format!("standing by: {holder} leads"),
            (None, None) => "standing by: asking for the lease".to_string(),
        };
        self.set(|s| {
            if let Some(p) = published {
                s.head_commit = p.head_commit;
                s.synced_commit = p.synced_commit;
                s.synced_revision = p.synced_revision;
                s.sync_state = p.sync_state;
                s.last_sync_at = p.last_sync_at;
                s.last_error = p.last_error.map(|e| LastError {
                    commit: e.commit,
                    message: e.message,
                    diagnostics: Vec::new(),
                });
                s.drift = p.drift;
                s.pending = p.pending;
            }
            s.runtime = None;
            s.standby = Some(waiting);
            // Ready once another replica is known to lead (not while the
            // first answer about the lease is awaited).
            s.ready = known.holder.is_some();
        });
    }

    /// The leader writes what a standby shows into the store, when it
    /// changed (a no-op reconcile writes nothing).
    pub(super) async fn publish(&mut self) {
        let view = {
            let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            Published {
                head_commit: s.head_commit.clone(),
                synced_commit: s.synced_commit.clone(),
                synced_revision: s.synced_revision,
                sync_state: s.sync_state.clone(),
                last_sync_at: s.last_sync_at.clone(),
                last_error: s.last_error.as_ref().map(|e| PublishedError {
                    commit: e.commit.clone(),
                    message: e.message.clone(),
                }),
                drift: s.drift.clone(),
                pending: s.pending.clone(),
            }
        };
        if self.published.as_ref() == Some(&view) {
            return;
        }
        let (Some(store), Ok(text)) = (&self.store, serde_json::to_string(&view)) else {
            return;
        };
        let op = cortex_runtime::store::Op::Meta {
            key: PUBLISHED_STATUS.into(),
            value: Some(text),
        };
        match cortex_runtime::store::Store::write(&**store, vec![op]).await {
            Ok(()) => self.published = Some(view),
            Err(e) => tracing::warn!(error = %e, "cannot publish the status for the standbys"),
        }
    }
}
