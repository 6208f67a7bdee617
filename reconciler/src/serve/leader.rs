//! Leader election between `serve` replicas: a lease kept where they all
//! reach it ([`LeaseKeeper`]) — in the state store they share with the
//! embedded target ([`Store::take_lease`]), in a `coordination.k8s.io`
//! Lease with the Kubernetes target ([`super::target::ClusterLease`]), as
//! client-go's leader election keeps it. Every replica asks for the lease every fifth of
//! its time (the holder's asking renews it); a replica leads while its
//! lease holds, and stops leading when it could not renew for two thirds of
//! the lease time, before any other replica can take the lease over (the
//! leader steps down first). A replica that stops gives its lease up, so a
//! standby takes over at its next ask; one killed outright is taken over
//! once its lease expires.
//!
//! The loop has the runtime's shape: wait in one `select!` for the first of
//! the period and shutdown, then act.

use std::sync::Arc;
use std::time::Duration;

use cortex_runtime::store::{Lease, Store, now_ms};

use crate::target::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

/// The lease's name in the store.
pub const LEASE: &str = "cortex-serve";

/// What this replica knows about who leads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// This replica holds the lease.
    pub leader: bool,
    /// Who holds it (none before the first answer, or when nobody does).
    pub holder: Option<String>,
    /// Why the store could not be asked, while it cannot.
    pub error: Option<String>,
}

/// Where the lease is kept: takes or renews it for `holder` until
/// `until_ms` when it is free, expired at `now_ms` or `holder`'s already;
/// answers the lease as kept afterwards (`until_ms` at `now_ms` gives it up).
pub trait LeaseKeeper: Send + Sync {
    /// See the trait.
    fn take<'a>(
        &'a self,
        holder: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, String>>;
}

/// The lease in a state store the replicas share.
pub struct StoreLease(pub Arc<dyn Store>);

impl LeaseKeeper for StoreLease {
    fn take<'a>(
        &'a self,
        holder: &'a str,
        now_ms: u64,
        until_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, String>> {
        Box::pin(async move {
            self.0
                .take_lease(LEASE, holder, now_ms, until_ms)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Asks for the lease until shut down; see the module's documentation.
pub struct Elector {
    keeper: Arc<dyn LeaseKeeper>,
    holder: String,
    lease: Duration,
}

impl Elector {
    /// An elector for `holder` (unique among the replicas) with the lease
    /// kept by `keeper`, for `lease` at a time.
    pub fn new(keeper: Arc<dyn LeaseKeeper>, holder: String, lease: Duration) -> Elector {
        Elector {
            keeper,
            holder,
            lease: lease.max(Duration::from_millis(500)),
        }
    }

    /// Runs the election until `shutdown`, telling `leadership` each change.
    pub async fn run(
        self,
        leadership: watch::Sender<Leadership>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let period = self.lease / 5;
        let renew_deadline = self.lease * 2 / 3;
        let mut next = Instant::now();
        let mut held_since_renewal: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.changed() => break,
            }
            let asked = Instant::now();
            next = asked + period;
            let now = now_ms();
            let until = now + self.lease.as_millis() as u64;
            let answer = tokio::time::timeout(period, self.keeper.take(&self.holder, now, until))
                .await
                .map_err(|_| format!("no answer within {period:?}"))
                .and_then(|r| r);
            let known = match answer {
                Ok(lease) => {
                    let leader = lease.holder == self.holder && lease.expires_ms > now;
                    held_since_renewal = leader.then_some(asked);
                    Leadership {
                        leader,
                        holder: Some(lease.holder).filter(|_| lease.expires_ms > now),
                        error: None,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot take the lease; trying again");
                    let still = held_since_renewal
                        .is_some_and(|renewed| renewed.elapsed() < renew_deadline);
                    if !still {
                        held_since_renewal = None;
                    }
                    let holder = leadership.borrow().holder.clone();
                    Leadership {
                        leader: still,
                        holder,
                        error: Some(error),
                    }
                }
            };
            leadership.send_if_modified(|current| {
                if *current == known {
                    return false;
                }
                if current.leader != known.leader {
                    if known.leader {
                        tracing::info!(holder = %self.holder, "leading: this replica holds the lease");
                    } else {
                        tracing::warn!(leader = ?known.holder, "standing by: another replica holds the lease, or it could not be renewed");
                    }
                }
                *current = known;
                true
            });
        }
    }

    /// Gives the lease up when this replica holds it (at shutdown, once
    /// the runtime has stopped), so a standby takes over at its next ask.
    pub async fn release(keeper: &dyn LeaseKeeper, holder: &str) {
        let now = now_ms();
        if let Err(error) = keeper.take(holder, now, now).await {
            tracing::warn!(%error, "cannot give the lease up; it expires on its own");
        }
    }
}

/// This replica's name in the lease: host, process and address, so a
/// standby can say where the leader is.
pub fn holder_name(url: &str) -> String {
    format!(
        "{}/{} {url}",
        crate::target::host_name(),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_runtime::store::SqliteStore;

    async fn elect(
        store: Arc<dyn Store>,
        holder: &str,
    ) -> (watch::Receiver<Leadership>, watch::Sender<bool>) {
        let (tell, told) = watch::channel(Leadership::default());
        let (stop, stopped) = watch::channel(false);
        let keeper = Arc::new(StoreLease(store));
        let elector = Elector::new(keeper, holder.into(), Duration::from_millis(1500));
        tokio::spawn(elector.run(tell, stopped));
        (told, stop)
    }

    async fn until(told: &mut watch::Receiver<Leadership>, leader: bool) -> Leadership {
        loop {
            if told.borrow_and_update().leader == leader {
                return told.borrow().clone();
            }
            told.changed().await.expect("the elector runs");
        }
    }

    #[tokio::test]
    async fn one_replica_leads_and_the_other_takes_over_when_it_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let (mut a, stop_a) = elect(store.clone(), "a").await;
        let first = until(&mut a, true).await;
        assert_eq!(first.holder.as_deref(), Some("a"));
        let (mut b, _stop_b) = elect(store.clone(), "b").await;
        // b hears that a leads, and does not lead.
        loop {
            b.changed().await.unwrap();
            let seen = b.borrow().clone();
            if seen.holder.is_some() {
                assert!(!seen.leader);
                assert_eq!(seen.holder.as_deref(), Some("a"));
                break;
            }
        }
        stop_a.send(true).unwrap();
        Elector::release(&StoreLease(store.clone()), "a").await;
        let taken = until(&mut b, true).await;
        assert_eq!(taken.holder.as_deref(), Some("b"));
        assert!(
            a.borrow().leader,
            "a stopped asking; it was told nothing else"
        );
    }
}
