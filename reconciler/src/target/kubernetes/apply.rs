//! Applying a plan: namespace first, then the lock, a staleness check,
//! server-side apply in dependency order (waiting for CRDs to be
//! Established before their custom resources), deletes in reverse order,
//! and `--wait`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cortex_compiler::bundle::kind_rank;
use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::Value;

use crate::plan::{Action, ObjectId};
use crate::target::kubernetes::cluster::{Cluster, Discovery, FIELD_MANAGER, Kind};
use crate::target::kubernetes::error::{KubeError, field_conflicts};
use crate::target::kubernetes::live::{self, CONCURRENCY, KindRef};
use crate::target::kubernetes::lock::Lock;
use crate::target::kubernetes::planner::{
    self, ObjectConflicts, SAVED_PLAN_KIND, SAVED_PLAN_VERSION, SavedPlan, Write,
};
use crate::target::kubernetes::retry::retry;
use crate::target::kubernetes::wait::{self, Awaited};

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplySettings {
    /// Take over fields other managers own.
    pub force_conflicts: bool,
    /// How long to wait for someone else's lock.
    pub lock_timeout: Duration,
    /// Wait for rollouts, this long at most.
    pub wait: Option<Duration>,
    /// How often `--wait` and CRD waits look.
    pub poll: Duration,
    /// How long a CRD may take to become Established.
    pub crd_timeout: Duration,
    /// Show a progress display while waiting (on a terminal).
    pub progress: bool,
    /// Who applies (recorded on the lock).
    pub holder: String,
    /// Notified to stop (Ctrl-C): no further writes are sent, the lock is
    /// released, and the apply ends with [`KubeError::Interrupted`].
    pub interrupt: Option<std::sync::Arc<tokio::sync::Notify>>,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            force_conflicts: false,
            lock_timeout: Duration::ZERO,
            wait: None,
            poll: Duration::from_secs(1),
            crd_timeout: Duration::from_secs(60),
            progress: false,
            holder: crate::target::holder_identity(),
            interrupt: None,
        }
    }
}

/// What an apply did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    /// The namespace was created.
    pub namespace_created: bool,
    /// Objects created.
    pub created: usize,
    /// Objects updated.
    pub updated: usize,
    /// Objects deleted.
    pub deleted: usize,
}

/// Checks that a saved plan can be applied to this cluster.
pub fn check_plan(cluster: &Cluster, plan: &SavedPlan) -> Result<(), KubeError> {
    if plan.kind != SAVED_PLAN_KIND || plan.format_version != SAVED_PLAN_VERSION {
        return Err(KubeError::Plan(format!(
            "not a cortex plan of format {SAVED_PLAN_VERSION} (kind {:?}, format {})",
            plan.kind, plan.format_version
        )));
    }
    if plan.server != cluster.server {
        return Err(KubeError::Plan(format!(
            "this plan was made against {}, but the current context points at {}; select that cluster (--context) or plan again",
            plan.server, cluster.server
        )));
    }
    Ok(())
}

/// Applies a plan, exactly: refuses when any object it read changed since.
pub async fn apply(
    cluster: &Cluster,
    plan: &SavedPlan,
    settings: &ApplySettings,
) -> Result<ApplyReport, KubeError> {
    check_plan(cluster, plan)?;
    if !plan.conflicts.is_empty() && !settings.force_conflicts {
        return Err(conflicts_error(&plan.conflicts));
    }
    if plan.deletes.len() * 2 > plan.owned && !plan.force {
        return Err(KubeError::PruneGuard {
            deletes: plan.deletes.len(),
            owned: plan.owned,
            namespace: plan.namespace.clone(),
        });
    }
    let mut report = ApplyReport::default();
    if plan.writes.is_empty() && plan.deletes.is_empty() && !plan.create_namespace {
        return Ok(report); // nothing to do: no lock, no writes
    }
    if !planner::namespace_exists(cluster, &plan.namespace).await? {
        if !plan.create_namespace {
            return Err(KubeError::NamespaceMissing(plan.namespace.clone()));
        }
        create_namespace(cluster, &plan.namespace).await?;
        report.namespace_created = true;
    }
    let lock = Lock::acquire(
        cluster,
        &plan.namespace,
        &plan.project,
        &settings.holder,
        settings.lock_timeout,
    )
    .await?;
    let result =
        until_interrupted(settings, apply_locked(cluster, plan, settings, &mut report)).await;
    let applied_kinds: Vec<KindRef> = {
        let mut kinds: BTreeSet<KindRef> = plan.kinds.iter().cloned().collect();
        kinds.extend(
            plan.writes
                .iter()
                .map(|w| (w.api_version.clone(), w.id.kind.clone())),
        );
        kinds.into_iter().collect()
    };
    // Kinds are recorded even after a failure: some objects may exist now.
    let released = lock.release(&applied_kinds).await;
    if let Err(KubeError::Interrupted { .. }) = result {
        return Err(KubeError::Interrupted {
            created: report.created,
            updated: report.updated,
            deleted: report.deleted,
        });
    }
    let discovery = result?;
    released?;
    if let Some(timeout) = settings.wait {
        let awaited: Vec<Awaited> = plan
            .writes
            .iter()
            .filter(|w| {
                matches!(
                    w.id.kind.as_str(),
                    "Deployment" | "HorizontalPodAutoscaler" | "PodDisruptionBudget"
                )
            })
            .map(|w| (w.id.clone(), w.api_version.clone()))
            .collect();
        until_interrupted(
            settings,
            wait::wait_for(
                cluster,
                &discovery,
                &awaited,
                timeout,
                settings.poll,
                settings.progress,
            ),
        )
        .await
        .map_err(|e| match e {
            KubeError::Interrupted { .. } => KubeError::Interrupted {
                created: report.created,
                updated: report.updated,
                deleted: report.deleted,
            },
            other => other,
        })?;
    }
    Ok(report)
}

/// Runs `work` until it ends or the interrupt is notified.
async fn until_interrupted<T>(
    settings: &ApplySettings,
    work: impl std::future::Future<Output = Result<T, KubeError>>,
) -> Result<T, KubeError> {
    match &settings.interrupt {
        None => work.await,
        Some(interrupt) => tokio::select! {
            result = work => result,
            () = interrupt.notified() => Err(KubeError::Interrupted { created: 0, updated: 0, deleted: 0 }),
        },
    }
}

fn conflicts_error(conflicts: &[ObjectConflicts]) -> KubeError {
    KubeError::Conflicts(
        conflicts
            .iter()
            .map(|c| (c.object.clone(), c.fields.clone()))
            .collect(),
    )
}

async fn create_namespace(cluster: &Cluster, namespace: &str) -> Result<(), KubeError> {
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        cluster.client().clone(),
        &kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        ),
    );
    let body = planner::namespace_object(namespace);
    let params = PatchParams::apply(FIELD_MANAGER);
    let patch = Patch::Apply(&body);
    retry(cluster.retry, true, || {
        api.patch(namespace, &params, &patch)
    })
    .await
    .map(|_| ())
    .map_err(|e| cluster.error(&format!("create namespace {namespace}"), e))
}

async fn apply_locked(
    cluster: &Cluster,
    plan: &SavedPlan,
    settings: &ApplySettings,
    report: &mut ApplyReport,
) -> Result<Discovery, KubeError> {
    let mut versions: BTreeSet<String> = plan.kinds.iter().map(|(a, _)| a.clone()).collect();
    versions.extend(plan.writes.iter().map(|w| w.api_version.clone()));
    let mut discovery = cluster.discover(&versions).await?;
    check_fresh(cluster, &discovery, plan).await?;

    // Creates and updates, one kind rank at a time.
    let mut groups: BTreeMap<usize, Vec<&Write>> = BTreeMap::new();
    for w in &plan.writes {
        groups.entry(kind_rank(&w.id.kind)).or_default().push(w);
    }
    for writes in groups.values() {
        // (Futures collected first: see the planner's dry runs.)
        let requests: Vec<_> = writes
            .iter()
            .copied()
            .map(|w| {
                let discovery = &discovery;
                async move { apply_one(cluster, discovery, w, settings.force_conflicts).await }
            })
            .collect();
        let applied = futures::stream::iter(requests)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for result in applied {
            match result? {
                Action::Create => report.created += 1,
                _ => report.updated += 1,
            }
        }
        let crds: Vec<&&Write> = writes
            .iter()
            .filter(|w| w.id.kind == "CustomResourceDefinition")
            .collect();
        if !crds.is_empty() {
            for crd in &crds {
                wait_established(cluster, &discovery, crd, settings).await?;
            }
            let defined: BTreeSet<String> = crds
                .iter()
                .flat_map(|crd| live::crd_kinds(&crd.body))
                .map(|(api_version, _)| api_version)
                .collect();
            discovery.extend(cluster.discover(&defined).await?);
        }
    }

    // Deletes, in reverse dependency order (the plan keeps them so).
    let mut by_rank: BTreeMap<std::cmp::Reverse<usize>, Vec<&planner::Delete>> = BTreeMap::new();
    for d in &plan.deletes {
        by_rank
            .entry(std::cmp::Reverse(kind_rank(&d.id.kind)))
            .or_default()
            .push(d);
    }
    for deletes in by_rank.values() {
        let requests: Vec<_> = deletes
            .iter()
            .copied()
            .map(|d| {
                let discovery = &discovery;
                async move { delete_one(cluster, discovery, d).await }
            })
            .collect();
        let done = futures::stream::iter(requests)
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for result in done {
            result?;
            report.deleted += 1;
        }
    }
    Ok(discovery)
}

fn kind_of<'d>(
    discovery: &'d Discovery,
    id: &ObjectId,
    api_version: &str,
) -> Result<&'d Kind, KubeError> {
    discovery
        .get(api_version, &id.kind)
        .ok_or_else(|| KubeError::UnknownKind {
            api_version: api_version.to_string(),
            kind: id.kind.clone(),
            object: id.to_string(),
        })
}

/// Every object the plan read must be as it was (same resourceVersion, or
/// still absent), and no new owned object may have appeared.
async fn check_fresh(
    cluster: &Cluster,
    discovery: &Discovery,
    plan: &SavedPlan,
) -> Result<(), KubeError> {
    let namespace = Some(plan.namespace.as_str());
    let live = live::read_live(cluster, discovery, &plan.kinds, namespace, &plan.project).await?;
    let now: BTreeMap<String, (String, String)> = live
        .values()
        .map(|l| (l.id.key(), (l.id.to_string(), l.resource_version())))
        .collect();
    let mut stale = Vec::new();
    for (identity, was) in &plan.read {
        let shown = || {
            identity
                .split('/')
                .skip(1)
                .step_by(2)
                .collect::<Vec<_>>()
                .join("/")
        };
        match (was, now.get(identity)) {
            (Some(rv), Some((_, now_rv))) if rv != now_rv => {
                stale.push(format!("{} changed", shown()))
            }
            (Some(_), None) => stale.push(format!("{} was deleted", shown())),
            (None, Some((name, _))) => stale.push(format!("{name} was created")),
            _ => {}
        }
    }
    for (identity, (name, _)) in &now {
        if !plan.read.contains_key(identity) {
            stale.push(format!("{name} appeared"));
        }
    }
    match stale.is_empty() {
        true => Ok(()),
        false => Err(KubeError::Stale(stale)),
    }
}

async fn apply_one(
    cluster: &Cluster,
    discovery: &Discovery,
    write: &Write,
    force: bool,
) -> Result<Action, KubeError> {
    let kind = kind_of(discovery, &write.id, &write.api_version)?;
    let api = cluster.api(kind, write.id.namespace.as_deref());
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if force {
        params = params.force();
    }
    let patch = Patch::Apply(&write.body);
    match retry(cluster.retry, true, || {
        api.patch(&write.id.name, &params, &patch)
    })
    .await
    {
        Ok(_) => Ok(write.action),
        Err(e) => match field_conflicts(&e) {
            Some(fields) => Err(KubeError::Conflicts(vec![(write.id.to_string(), fields)])),
            None => Err(cluster.error(&format!("apply {}", write.id), e)),
        },
    }
}

async fn delete_one(
    cluster: &Cluster,
    discovery: &Discovery,
    delete: &planner::Delete,
) -> Result<(), KubeError> {
    let kind = kind_of(discovery, &delete.id, &delete.api_version)?;
    let api = cluster.api(kind, delete.id.namespace.as_deref());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(delete.resource_version.clone()),
            uid: None,
        }),
        ..DeleteParams::background()
    };
    match retry(cluster.retry, false, || {
        api.delete(&delete.id.name, &params)
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Err(KubeError::Stale(vec![format!("{} changed", delete.id)]))
        }
        Err(e) => Err(cluster.error(&format!("delete {}", delete.id), e)),
    }
}

async fn wait_established(
    cluster: &Cluster,
    discovery: &Discovery,
    crd: &Write,
    settings: &ApplySettings,
) -> Result<(), KubeError> {
    let kind = kind_of(discovery, &crd.id, &crd.api_version)?;
    let api = cluster.api(kind, None);
    let started = tokio::time::Instant::now();
    loop {
        let object = retry(cluster.retry, false, || api.get(&crd.id.name))
            .await
            .map_err(|e| cluster.error(&format!("read {}", crd.id), e))?;
        let body = serde_json::to_value(object).unwrap_or(Value::Null);
        let established = body
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        if established {
            return Ok(());
        }
        if started.elapsed() >= settings.crd_timeout {
            return Err(KubeError::Timeout {
                after: settings.crd_timeout,
                pending: vec![format!("{}: not Established", crd.id)],
            });
        }
        tokio::time::sleep(settings.poll).await;
    }
}
