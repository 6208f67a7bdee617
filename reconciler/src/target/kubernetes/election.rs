//! Leader election's lease in a cluster: a `coordination.k8s.io/v1` Lease,
//! as client-go's leader election keeps it (`holderIdentity`,
//! `leaseDurationSeconds`, `renewTime`), taken and renewed by
//! compare-and-swap on its `resourceVersion` (a `409` means another replica
//! wrote first: it is read again and answered). The same rule as the
//! store's lease ([`cortex_runtime::store::Lease::next`]).

use k8s_openapi::api::coordination::v1::{Lease as KubeLease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use cortex_runtime::store::Lease;

use crate::target::kubernetes::cluster::{Cluster, FIELD_MANAGER};
use crate::target::kubernetes::error::KubeError;

/// The lease as the store's rule sees it (none held: an empty holder).
fn read(lease: &KubeLease) -> Lease {
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec
        .renew_time
        .or(spec.acquire_time)
        .map_or(0, |t| t.0.as_millisecond().max(0) as u64);
    let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
    Lease {
        holder: spec.holder_identity.unwrap_or_default(),
        expires_ms: renewed + seconds * 1000,
    }
}

fn micro(ms: u64) -> MicroTime {
    MicroTime(
        jiff::Timestamp::from_millisecond(ms as i64).unwrap_or_else(|_| jiff::Timestamp::now()),
    )
}

/// Takes or renews the Lease `name` in `namespace` for `holder` until
/// `until_ms` when it is free, expired at `now_ms` or `holder`'s; answers
/// the lease as the cluster holds it afterwards.
pub async fn take_lease(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    holder: &str,
    now_ms: u64,
    until_ms: u64,
) -> Result<Lease, KubeError> {
    let api: Api<KubeLease> = Api::namespaced(cluster.client().clone(), namespace);
    let what = format!("leader lease {namespace}/{name}");
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let current = api
        .get_opt(name)
        .await
        .map_err(|e| cluster.error(&what, e))?;
    let seen = current.as_ref().map(read);
    let next = Lease::next(seen.clone(), holder, now_ms, until_ms);
    if seen.as_ref() == Some(&next) {
        return Ok(next);
    }
    let changed_hands = seen.as_ref().is_none_or(|s| s.holder != next.holder);
    let mut lease = current.unwrap_or_else(|| KubeLease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    spec.holder_identity = Some(next.holder.clone());
    spec.renew_time = Some(micro(now_ms));
    spec.lease_duration_seconds =
        Some(next.expires_ms.saturating_sub(now_ms).div_ceil(1000) as i32);
    if changed_hands {
        spec.acquire_time = Some(micro(now_ms));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(LeaseSpec { ..spec });
    let written = if lease.metadata.resource_version.is_some() {
        api.replace(name, &params, &lease).await
    } else {
        api.create(&params, &lease).await
    };
    match written {
        Ok(_) => Ok(next),
        // Another replica wrote first: what it wrote is the answer.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let now = api
                .get_opt(name)
                .await
                .map_err(|e| cluster.error(&what, e))?;
            Ok(now.as_ref().map(read).unwrap_or(Lease {
                holder: String::new(),
                expires_ms: 0,
            }))
        }
        Err(e) => Err(cluster.error(&what, e)),
    }
}
