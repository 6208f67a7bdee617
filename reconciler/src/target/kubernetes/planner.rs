//! Plans against a cluster: desired objects compared with live ones, where
//! every object whose content changed since cortex applied it (or whose
//! managed fields drifted) is dry-run applied so the API server's defaults
//! never show as changes.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::desired::Desired;
use crate::plan::{
    self, Action, ObjectId, PlanObject, PlanOptions, Realm, Revision, Side, Summary,
};
use crate::target::kubernetes::cluster::{Cluster, Discovery, FIELD_MANAGER};
use crate::target::kubernetes::error::{FieldConflict, KubeError, field_conflicts};
use crate::target::kubernetes::live::{self, CONCURRENCY, HASH_ANNOTATION, KindRef, LiveObject};
use crate::target::kubernetes::lock;

/// Version of the saved plan's layout (`cortex plan -o plan.json`).
pub const SAVED_PLAN_VERSION: u32 = 1;

/// What every saved plan says it is.
pub const SAVED_PLAN_KIND: &str = "cortex-kubernetes-plan";

/// The kinds cortex's own templates render: always read, so a prune finds
/// them even when the project no longer renders any.
pub const RENDERED_KINDS: [(&str, &str); 6] = [
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
];

/// How to plan.
#[derive(Clone, Debug)]
pub struct PlanSettings {
    /// Delete owned objects that left the desired set.
    pub prune: bool,
    /// Prune even more than half of what cortex owns.
    pub force: bool,
    /// Take over fields other managers own (dry-runs use `force`).
    pub force_conflicts: bool,
    /// Create the namespace when missing.
    pub create_namespace: bool,
    /// Masking and diff context.
    pub options: PlanOptions,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            prune: false,
            force: false,
            force_conflicts: false,
            create_namespace: true,
            options: PlanOptions::default(),
        }
    }
}

/// An object to apply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Write {
    /// Identity.
    pub id: ObjectId,
    /// `apiVersion`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Create or update.
    pub action: Action,
    /// The object exactly as it will be applied.
    pub body: Value,
}

/// An object to delete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delete {
    /// Identity.
    pub id: ObjectId,
    /// `apiVersion`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The resourceVersion it had when planned (a precondition of the delete).
    #[serde(rename = "resourceVersion")]
    pub resource_version: String,
}

/// Field conflicts of one object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectConflicts {
    /// `Kind/name`.
    pub object: String,
    /// The fields and who manages them.
    pub fields: Vec<FieldConflict>,
}

/// A plan against a cluster, as `cortex plan -o` saves it and `cortex
/// apply PLAN` applies it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`SAVED_PLAN_VERSION`].
    pub format_version: u32,
    /// [`SAVED_PLAN_KIND`].
    pub kind: String,
    /// Project.
    pub project: String,
    /// Environment.
    pub environment: Option<String>,
    /// Namespace.
    pub namespace: String,
    /// What was compiled (work tree or commit).
    pub revision: Revision,
    /// The API server planned against.
    pub server: String,
    /// Create the namespace first.
    pub create_namespace: bool,
    /// Deletes were planned.
    pub prune: bool,
    /// The prune guard was overridden.
    pub force: bool,
    /// Objects cortex owned when planned.
    pub owned: usize,
    /// The kinds read (listed again to check the plan is not stale).
    pub kinds: Vec<KindRef>,
    /// Every object read or expected absent: identity → resourceVersion
    /// (`null`: absent).
    pub read: BTreeMap<String, Option<String>>,
    /// Creates and updates, in apply order.
    pub writes: Vec<Write>,
    /// Deletes, in delete order.
    pub deletes: Vec<Delete>,
    /// Owned objects no longer desired, kept because `--prune` was not given.
    pub orphans: Vec<String>,
    /// Fields other managers own that the writes set.
    pub conflicts: Vec<ObjectConflicts>,
    /// Counts.
    pub summary: Summary,
    /// The plan as `cortex diff --format json` shows plans (for reading).
    pub plan: Value,
}

/// A plan and its rendering.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    /// What apply needs.
    pub saved: SavedPlan,
    /// What people read.
    pub display: plan::Plan,
}

/// Plans the desired state against the cluster.
pub async fn plan(
    cluster: &Cluster,
    desired: &Desired,
    settings: &PlanSettings,
) -> Result<ClusterPlan, KubeError> {
    let namespace = desired.project.namespace.clone();
    let objects: Vec<&PlanObject> = desired
        .objects
        .iter()
        .filter(|o| o.id.target == Realm::Kubernetes)
        .collect();

    let namespace_exists = namespace_exists(cluster, &namespace).await?;
    if !namespace_exists && !settings.create_namespace {
        return Err(KubeError::NamespaceMissing(namespace));
    }
    let (discovery, kinds) = kinds_to_read(
        cluster,
        &objects,
        &desired.project.name,
        &namespace,
        namespace_exists,
    )
    .await?;
    let live = live::read_live(
        cluster,
        &discovery,
        &kinds,
        namespace_exists.then_some(namespace.as_str()),
        &desired.project.name,
    )
    .await?;

    let mut read: BTreeMap<String, Option<String>> = live
        .values()
        .map(|l| (l.id.key(), Some(l.resource_version())))
        .collect();
    let mut old_side: Vec<PlanObject> = Vec::new();
    let mut new_side: Vec<PlanObject> = Vec::new();
    let mut writes: Vec<Write> = Vec::new();
    let mut to_dry_run: Vec<(&PlanObject, Value, &LiveObject)> = Vec::new();

    if !namespace_exists {
        let body = namespace_object(&namespace);
        new_side.push(plan_object(
            ObjectId::namespace(&namespace),
            "v1",
            None,
            body,
        ));
    }
    for object in &objects {
        let body = live::with_hash(&object.body);
        let api_version = object.api_version.clone().unwrap_or_default();
        match live.get(&object.id) {
            None => {
                read.insert(object.id.key(), None);
                new_side.push(plan_object(
                    object.id.clone(),
                    &api_version,
                    object.spec.clone(),
                    live::comparable(&body),
                ));
                writes.push(Write {
                    id: object.id.clone(),
                    api_version,
                    action: Action::Create,
                    body,
                });
            }
            Some(current) => {
                let same_hash = current.body["metadata"]["annotations"][HASH_ANNOTATION]
                    == body["metadata"]["annotations"][HASH_ANNOTATION];
                if same_hash && live::contains(&current.body, &body) {
                    let shown = live::comparable(&current.body);
                    old_side.push(plan_object(
                        object.id.clone(),
                        &api_version,
                        object.spec.clone(),
                        shown.clone(),
                    ));
                    new_side.push(plan_object(
                        object.id.clone(),
                        &api_version,
                        object.spec.clone(),
                        shown,
                    ));
                } else {
                    to_dry_run.push((object, body, current));
                }
            }
        }
    }

    // The objects that may have changed: ask the API server what applying
    // them would make, several at once.
    // (Collected first: a lazy iterator of futures borrowing from here
    // keeps the whole plan's future from being provably Send.)
    let requests: Vec<_> = to_dry_run
        .into_iter()
        .map(|(object, body, current)| {
            let discovery = &discovery;
            async move {
                let result =
                    dry_run(cluster, discovery, object, &body, settings.force_conflicts).await?;
                Ok::<_, KubeError>((object, body, current, result))
            }
        })
        .collect();
    let dry_runs = futures::stream::iter(requests)
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut conflicts = Vec::new();
    for result in dry_runs {
        let (object, body, current, (would_be, found)) = result?;
        let api_version = object.api_version.clone().unwrap_or_default();
        if let Some(fields) = found {
            conflicts.push(ObjectConflicts {
                object: object.id.to_string(),
                fields,
            });
        }
        let old = live::comparable(&current.body);
        let new = live::comparable(&would_be);
        if old != new {
            writes.push(Write {
                id: object.id.clone(),
                api_version: api_version.clone(),
                action: Action::Update,
                body,
            });
        }
        old_side.push(plan_object(
            object.id.clone(),
            &api_version,
            object.spec.clone(),
            old,
        ));
        new_side.push(plan_object(
            object.id.clone(),
            &api_version,
            object.spec.clone(),
            new,
        ));
    }

    // Owned objects that left the desired set.
    let wanted: BTreeSet<&ObjectId> = objects.iter().map(|o| &o.id).collect();
    let leftover: Vec<&LiveObject> = live.values().filter(|l| !wanted.contains(&l.id)).collect();
    let owned = live.len();
    let mut deletes = Vec::new();
    let mut orphans = Vec::new();
    if settings.prune {
        if leftover.len() * 2 > owned && !settings.force {
            return Err(KubeError::PruneGuard {
                deletes: leftover.len(),
                owned,
                namespace,
            });
        }
        for l in &leftover {
            old_side.push(plan_object(
                l.id.clone(),
                &l.api_version,
                None,
                live::comparable(&l.body),
            ));
            deletes.push(Delete {
                id: l.id.clone(),
                api_version: l.api_version.clone(),
                resource_version: l.resource_version(),
            });
        }
        deletes.sort_by(|a, b| b.id.order().cmp(&a.id.order()));
    } else {
        orphans = leftover.iter().map(|l| l.id.to_string()).collect();
    }
    writes.sort_by(|a, b| a.id.order().cmp(&b.id.order()));

    let mut options = settings.options.clone();
    options.masker.learn(&desired.resolved);
    let mut display = plan::diff(
        Side {
            objects: &old_side,
            resolved: None,
        },
        Side {
            objects: &new_side,
            resolved: Some(&desired.resolved),
        },
        (
            Revision {
                name: format!(
                    "cluster {}",
                    cluster.context.as_deref().unwrap_or(&cluster.server)
                ),
                commit: None,
            },
            desired.revision.clone(),
        ),
        (
            &desired.project.name,
            desired.project.environment.as_deref(),
            &namespace,
        ),
        &options,
    );
    display.title = "cortex plan";
    let saved = SavedPlan {
        format_version: SAVED_PLAN_VERSION,
        kind: SAVED_PLAN_KIND.to_string(),
        project: desired.project.name.clone(),
        environment: desired.project.environment.clone(),
        namespace,
        revision: desired.revision.clone(),
        server: cluster.server.clone(),
        create_namespace: !namespace_exists,
        prune: settings.prune,
        force: settings.force,
        owned,
        kinds,
        read,
        writes,
        deletes,
        orphans,
        conflicts,
        summary: display.summary,
        plan: serde_json::to_value(&display).unwrap_or(Value::Null),
    };
    Ok(ClusterPlan { saved, display })
}

/// The kinds a plan lists — cortex's rendered kinds, the desired ones and
/// those the last apply recorded — as the cluster serves them. A desired
/// kind the cluster does not serve is an error, unless a desired CRD
/// defines it.
async fn kinds_to_read(
    cluster: &Cluster,
    objects: &[&PlanObject],
    project: &str,
    namespace: &str,
    namespace_exists: bool,
) -> Result<(Discovery, Vec<KindRef>), KubeError> {
    let recorded = match namespace_exists {
        true => lock::recorded_kinds(cluster, namespace, project).await?,
        false => Vec::new(),
    };
    let mut kinds: BTreeSet<KindRef> = RENDERED_KINDS
        .iter()
        .map(|(a, k)| (a.to_string(), k.to_string()))
        .collect();
    kinds.extend(recorded);
    for o in objects {
        kinds.insert((o.api_version.clone().unwrap_or_default(), o.id.kind.clone()));
    }
    let api_versions: BTreeSet<String> = kinds.iter().map(|(a, _)| a.clone()).collect();
    let discovery = cluster.discover(&api_versions).await?;
    let pending = pending_custom_kinds(objects);
    for o in objects {
        let av = o.api_version.as_deref().unwrap_or_default();
        if discovery.get(av, &o.id.kind).is_none()
            && !pending.contains(&(av.to_string(), o.id.kind.clone()))
        {
            return Err(KubeError::UnknownKind {
                api_version: av.to_string(),
                kind: o.id.kind.clone(),
                object: o.id.to_string(),
            });
        }
    }
    let kinds: Vec<KindRef> = kinds
        .into_iter()
        .filter(|(a, k)| discovery.get(a, k).is_some())
        .collect();
    Ok((discovery, kinds))
}

impl ObjectId {
    /// The identity of a Namespace.
    pub fn namespace(name: &str) -> ObjectId {
        ObjectId {
            target: Realm::Kubernetes,
            group: String::new(),
            kind: "Namespace".to_string(),
            namespace: None,
            name: name.to_string(),
        }
    }
}

/// The Namespace cortex creates when it is missing: labelled as managed by
/// cortex but without the ownership label, so no prune ever deletes it.
pub fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "cortex" } },
    })
}

fn plan_object(id: ObjectId, api_version: &str, spec: Option<String>, body: Value) -> PlanObject {
    PlanObject {
        id,
        api_version: Some(api_version.to_string()),
        spec,
        body: body.into(),
    }
}

/// Whether the namespace exists (one GET).
pub async fn namespace_exists(cluster: &Cluster, namespace: &str) -> Result<bool, KubeError> {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(cluster.client().clone());
    crate::target::kubernetes::retry::retry(cluster.retry, false, || api.get_opt(namespace))
        .await
        .map(|n| n.is_some())
        .map_err(|e| cluster.error(&format!("read namespace {namespace}"), e))
}

/// `(apiVersion, kind)` of the custom resources the desired CRDs define.
pub fn pending_custom_kinds(objects: &[&PlanObject]) -> BTreeSet<KindRef> {
    objects
        .iter()
        .filter(|o| o.id.kind == "CustomResourceDefinition")
        .flat_map(|crd| live::crd_kinds(&crd.body))
        .collect()
}

/// The object applying `body` would make, and the field conflicts the
/// apply would meet without `force` (the would-be object is then the
/// forced one, so the plan still shows everything that would change).
async fn dry_run(
    cluster: &Cluster,
    discovery: &Discovery,
    object: &PlanObject,
    body: &Value,
    force: bool,
) -> Result<(Value, Option<Vec<FieldConflict>>), KubeError> {
    let api_version = object.api_version.as_deref().unwrap_or_default();
    let kind =
        discovery
            .get(api_version, &object.id.kind)
            .ok_or_else(|| KubeError::UnknownKind {
                api_version: api_version.to_string(),
                kind: object.id.kind.clone(),
                object: object.id.to_string(),
            })?;
    let api = cluster.api(kind, object.id.namespace.as_deref());
    let what = format!("dry-run apply {}", object.id);
    let run = |force: bool| {
        let api = api.clone();
        async move {
            let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
            if force {
                params = params.force();
            }
            let patch = Patch::Apply(body);
            crate::target::kubernetes::retry::retry(cluster.retry, true, || {
                api.patch(&object.id.name, &params, &patch)
            })
            .await
        }
    };
    match run(force).await {
        Ok(o) => Ok((serde_json::to_value(o).unwrap_or(Value::Null), None)),
        Err(e) => match field_conflicts(&e) {
            Some(fields) => {
                let forced = run(true).await.map_err(|e| cluster.error(&what, e))?;
                Ok((
                    serde_json::to_value(forced).unwrap_or(Value::Null),
                    Some(fields),
                ))
            }
            None => Err(cluster.error(&what, e)),
        },
    }
}
