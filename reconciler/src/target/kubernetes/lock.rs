//! The apply lock: a `coordination.k8s.io/v1` Lease per project in its
//! namespace, held while an apply runs, so two applies cannot interleave.
//!
//! The Lease stays when released (its holder is cleared), and carries the
//! kinds cortex applied, so the next plan lists them even when the project
//! stopped rendering one.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use crate::target::kubernetes::cluster::{Cluster, FIELD_MANAGER};
use crate::target::kubernetes::error::KubeError;
use crate::target::kubernetes::live::KindRef;
use crate::target::kubernetes::retry::retry;

/// How long a lock lasts without renewal.
pub const LEASE_SECONDS: i32 = 120;

/// The annotation with the holder's random id (holders are compared by it).
const LOCK_ID: &str = "cortex.codevald.io/lock-id";

/// The annotation listing the kinds cortex applied (`apps/v1 Deployment,…`).
const KINDS: &str = "cortex.codevald.io/applied-kinds";

/// The Lease's name for a project.
pub fn lease_name(project: &str) -> String {
    format!("cortex-lock-{project}")
}

/// A held lock. Release it with [`Lock::release`].
pub struct Lock {
    api: Api<Lease>,
    name: String,
    id: String,
    renewer: tokio::task::JoinHandle<()>,
    cluster: Cluster,
}

/// Writes of the Lease, as field manager `cortex`.
fn write_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn expired(spec: &LeaseSpec) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    jiff::Timestamp::now().as_second() > renewed.0.as_second() + seconds
}

fn holder_of(lease: &Lease) -> Option<(&str, Option<&str>)> {
    let holder = lease
        .spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())?;
    let id = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCK_ID))
        .map(String::as_str);
    Some((holder, id))
}

impl Lock {
    /// Takes the lock of `project` in `namespace` for `holder`, waiting up
    /// to `wait` while someone else holds an unexpired one.
    pub async fn acquire(
        cluster: &Cluster,
        namespace: &str,
        project: &str,
        holder: &str,
        wait: Duration,
    ) -> Result<Lock, KubeError> {
        let api: Api<Lease> = Api::namespaced(cluster.client().clone(), namespace);
        let name = lease_name(project);
        let id = format!("{:016x}", getrandom::u64().unwrap_or_default());
        let deadline = tokio::time::Instant::now() + wait;
        let what = format!("lock {namespace}/{name}");
        let params = write_params();
        loop {
            let current = retry(cluster.retry, false, || api.get_opt(&name))
                .await
                .map_err(|e| cluster.error(&what, e))?;
            let taken = match current {
                None => {
                    let mut lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: None,
                    };
                    hold(&mut lease, holder, &id);
                    api.create(&params, &lease).await
                }
                Some(mut lease) => {
                    let free = match (holder_of(&lease), lease.spec.as_ref()) {
                        (None, _) => true,
                        (Some((_, lid)), Some(spec)) => lid == Some(id.as_str()) || expired(spec),
                        (Some(_), None) => true,
                    };
                    if !free {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(locked(namespace, &lease));
                        }
                        let left = deadline - tokio::time::Instant::now();
                        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
                        continue;
                    }
                    hold(&mut lease, holder, &id);
                    api.replace(&name, &params, &lease).await
                }
            };
            match taken {
                Ok(_) => break,
                // Someone else got there first: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(cluster.error(&what, e)),
            }
        }
        let renewer = tokio::spawn(renew(api.clone(), name.clone(), id.clone()));
        Ok(Lock {
            api,
            name,
            id,
            renewer,
            cluster: cluster.clone(),
        })
    }

    /// Releases the lock, recording the kinds the apply wrote.
    pub async fn release(self, applied_kinds: &[KindRef]) -> Result<(), KubeError> {
        self.renewer.abort();
        let what = format!("unlock {}", self.name);
        let Some(mut lease) = retry(self.cluster.retry, false, || self.api.get_opt(&self.name))
            .await
            .map_err(|e| self.cluster.error(&what, e))?
        else {
            return Ok(());
        };
        if holder_of(&lease).and_then(|(_, id)| id) != Some(self.id.as_str()) {
            return Ok(()); // broken by `cortex unlock` meanwhile
        }
        clear(&mut lease);
        if !applied_kinds.is_empty() {
            let text = applied_kinds
                .iter()
                .map(|(a, k)| format!("{a} {k}"))
                .collect::<Vec<_>>()
                .join(",");
            lease
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(KINDS.into(), text);
        }
        let params = write_params();
        self.api
            .replace(&self.name, &params, &lease)
            .await
            .map(|_| ())
            .map_err(|e| self.cluster.error(&what, e))
    }
}

fn hold(lease: &mut Lease, holder: &str, id: &str) {
    let spec = lease.spec.get_or_insert_default();
    let changed = spec.holder_identity.as_deref() != Some(holder);
    spec.holder_identity = Some(holder.to_string());
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    spec.acquire_time = Some(now());
    spec.renew_time = Some(now());
    if changed {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(LOCK_ID.into(), id.to_string());
}

fn clear(lease: &mut Lease) {
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
    }
    if let Some(a) = lease.metadata.annotations.as_mut() {
        a.remove(LOCK_ID);
    }
}

fn locked(namespace: &str, lease: &Lease) -> KubeError {
    let spec = lease.spec.clone().unwrap_or_default();
    let since = spec
        .acquire_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| "?".into());
    let expires = spec
        .renew_time
        .as_ref()
        .and_then(|t| {
            t.0.checked_add(jiff::SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS),
            )))
            .ok()
        })
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into());
    KubeError::Locked {
        namespace: namespace.to_string(),
        holder: spec.holder_identity.unwrap_or_default(),
        since,
        expires,
    }
}

/// Keeps the lease fresh while the apply runs.
async fn renew(api: Api<Lease>, name: String, id: String) {
    let every = Duration::from_secs(u64::try_from(LEASE_SECONDS / 4).unwrap_or(30));
    loop {
        tokio::time::sleep(every).await;
        let Ok(Some(mut lease)) = api.get_opt(&name).await else {
            continue;
        };
        if holder_of(&lease).and_then(|(_, i)| i) != Some(id.as_str()) {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        let _ = api.replace(&name, &write_params(), &lease).await;
    }
}

/// Breaks the lock of `project` in `namespace`, whoever holds it. Returns
/// who held it (`None`: nobody did).
pub async fn unlock(
    cluster: &Cluster,
    namespace: &str,
    project: &str,
) -> Result<Option<String>, KubeError> {
    let api: Api<Lease> = Api::namespaced(cluster.client().clone(), namespace);
    let name = lease_name(project);
    let what = format!("unlock {namespace}/{name}");
    let Some(mut lease) = retry(cluster.retry, false, || api.get_opt(&name))
        .await
        .map_err(|e| cluster.error(&what, e))?
    else {
        return Ok(None);
    };
    let Some(holder) = holder_of(&lease).map(|(h, _)| h.to_string()) else {
        return Ok(None);
    };
    clear(&mut lease);
    let params = write_params();
    api.replace(&name, &params, &lease)
        .await
        .map_err(|e| cluster.error(&what, e))?;
    Ok(Some(holder))
}

/// The kinds the last apply recorded (one GET; none when there is no Lease).
pub async fn recorded_kinds(
    cluster: &Cluster,
    namespace: &str,
    project: &str,
) -> Result<Vec<KindRef>, KubeError> {
    let api: Api<Lease> = Api::namespaced(cluster.client().clone(), namespace);
    let name = lease_name(project);
    let lease = retry(cluster.retry, false, || api.get_opt(&name))
        .await
        .map_err(|e| cluster.error(&format!("read {namespace}/{name}"), e))?;
    Ok(lease
        .and_then(|l| l.metadata.annotations)
        .and_then(|mut a| a.remove(KINDS))
        .map(|text| {
            text.split(',')
                .filter_map(|e| e.split_once(' '))
                .map(|(a, k)| (a.to_string(), k.to_string()))
                .collect()
        })
        .unwrap_or_default())
}
