//! Live state: what the cluster holds of a project, read with one LIST per
//! kind filtered by the project's ownership label; and the helpers that
//! compare live objects with desired ones.

use std::collections::BTreeMap;

use cortex_compiler::hash::canonical_hash;
use cortex_compiler::render::agent::PROJECT_LABEL;
use futures::StreamExt;
use kube::api::ListParams;
use serde_json::Value;

use crate::plan::{ObjectId, Realm};
use crate::target::kubernetes::cluster::{Cluster, Discovery};
use crate::target::kubernetes::error::KubeError;
use crate::target::kubernetes::quantity;
use crate::target::kubernetes::retry::retry;

/// The annotation holding the SHA-256 of what cortex last applied.
pub const HASH_ANNOTATION: &str = "cortex.codevald.io/applied-hash";

/// How many requests run at once.
pub const CONCURRENCY: usize = 8;

/// One live object.
#[derive(Clone, Debug)]
pub struct LiveObject {
    /// Identity.
    pub id: ObjectId,
    /// `apiVersion`.
    pub api_version: String,
    /// The object as the API server returned it.
    pub body: Value,
}

impl LiveObject {
    /// Its resourceVersion.
    pub fn resource_version(&self) -> String {
        self.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A kind to read: `(apiVersion, kind)`.
pub type KindRef = (String, String);

/// Lists every object of `kinds` carrying the ownership label of `project`:
/// namespaced kinds in `namespace` (none when it does not exist yet),
/// cluster-scoped kinds cluster-wide. Kinds the cluster does not serve are
/// skipped. One request per kind, several at once.
pub async fn read_live(
    cluster: &Cluster,
    discovery: &Discovery,
    kinds: &[KindRef],
    namespace: Option<&str>,
    project: &str,
) -> Result<BTreeMap<ObjectId, LiveObject>, KubeError> {
    let selector = format!("{PROJECT_LABEL}={project}");
    let lists = kinds
        .iter()
        .filter_map(|(av, k)| discovery.get(av, k).map(|kind| (av, kind)))
        .filter(|(_, kind)| !kind.namespaced || namespace.is_some())
        .map(|(av, kind)| {
            let api = cluster.api(kind, namespace);
            let params = ListParams::default().labels(&selector);
            let what = format!("list {}", kind.resource.plural);
            async move {
                let list = retry(cluster.retry, false, || api.list(&params))
                    .await
                    .map_err(|e| cluster.error(&what, e))?;
                let items: Vec<LiveObject> = list
                    .items
                    .into_iter()
                    .filter_map(|item| {
                        let mut body = serde_json::to_value(item).ok()?;
                        body["apiVersion"] = Value::String(av.clone());
                        body["kind"] = Value::String(kind.resource.kind.clone());
                        Some(LiveObject {
                            id: id_of(&body, &kind.resource.group)?,
                            api_version: av.clone(),
                            body,
                        })
                    })
                    .collect();
                Ok::<_, KubeError>(items)
            }
        })
        .collect::<Vec<_>>();
    let mut out = BTreeMap::new();
    let mut results = futures::stream::iter(lists).buffer_unordered(CONCURRENCY);
    while let Some(items) = results.next().await {
        for item in items? {
            out.insert(item.id.clone(), item);
        }
    }
    Ok(out)
}

/// `(apiVersion, kind)` of every version a CustomResourceDefinition serves.
pub fn crd_kinds(crd: &Value) -> Vec<KindRef> {
    let text = |pointer: &str| {
        crd.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (group, kind) = (text("/spec/group"), text("/spec/names/kind"));
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .map(|v| (format!("{group}/{v}"), kind.to_string()))
        .collect()
}

/// The identity of an object body.
pub fn id_of(body: &Value, group: &str) -> Option<ObjectId> {
    Some(ObjectId {
        target: Realm::Kubernetes,
        group: group.to_string(),
        kind: body["kind"].as_str()?.to_string(),
        namespace: body["metadata"]["namespace"].as_str().map(str::to_string),
        name: body["metadata"]["name"].as_str()?.to_string(),
    })
}

/// The desired object as cortex applies it: with the hash of its content
/// in [`HASH_ANNOTATION`].
pub fn with_hash(body: &Value) -> Value {
    let hash = canonical_hash(body);
    let mut body = body.clone();
    if !body["metadata"]["annotations"].is_object() {
        body["metadata"]["annotations"] = Value::Object(Default::default());
    }
    body["metadata"]["annotations"][HASH_ANNOTATION] = Value::String(hash);
    body
}

/// Whether every field of `desired` is in `live` with the same value
/// (lists element by element): what cortex manages is as it applied it.
/// Resource quantities (under `resources`, `limits`, `requests`…) compare
/// by value, as the API server stores them in canonical form.
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_at(live, desired, false)
}

/// Keys whose values are maps of resource quantities.
const QUANTITY_MAPS: [&str; 5] = ["limits", "requests", "hard", "capacity", "overhead"];

fn contains_at(live: &Value, desired: &Value, quantities: bool) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| {
            l.get(k).is_some_and(|lv| {
                contains_at(lv, dv, quantities || QUANTITY_MAPS.contains(&k.as_str()))
            })
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains_at(lv, dv, false))
        }
        (Value::String(l), Value::String(d)) if quantities => l == d || quantity::same(l, d),
        (l, Value::Number(d)) if quantities => l
            .as_str()
            .zip(d.as_f64())
            .is_some_and(|(l, d)| quantity::value(l) == Some(d)),
        (l, d) => l == d,
    }
}

/// An object as plans show it: without what the API server keeps for
/// itself (status, managed fields, resourceVersion, uid, timestamps,
/// generation) and without cortex's hash annotation.
pub fn comparable(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = body["metadata"].as_object_mut() {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(key);
        }
        if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
            annotations.remove(HASH_ANNOTATION);
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contains_ignores_added_fields_but_not_changed_ones() {
        let desired =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let live = json!({"spec": {"replicas": 1, "template": {"spec": {"dnsPolicy": "ClusterFirst",
            "containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}}}});
        assert!(contains(&live, &desired));
        let mut drifted = live.clone();
        drifted["spec"]["template"]["spec"]["containers"][0]["image"] = json!("y");
        assert!(!contains(&drifted, &desired));
    }

    #[test]
    fn quantities_compare_by_value_where_they_are_quantities() {
        let desired = json!({"resources": {"limits": {"cpu": "0.5", "memory": "1.5Gi"}, "requests": {"cpu": 1}}, "labels": {"v": "0.5"}});
        let live = json!({"resources": {"limits": {"cpu": "500m", "memory": "1536Mi"}, "requests": {"cpu": "1"}}, "labels": {"v": "0.5"}});
        assert!(contains(&live, &desired));
        let label_drift = json!({"resources": live["resources"], "labels": {"v": "500m"}});
        assert!(
            !contains(&label_drift, &desired),
            "labels are not quantities"
        );
        let mut changed = live.clone();
        changed["resources"]["limits"]["cpu"] = json!("600m");
        assert!(!contains(&changed, &desired));
    }

    #[test]
    fn hash_changes_with_content_only() {
        let a = json!({"metadata": {"name": "x"}, "data": {"k": "1"}});
        let b = json!({"data": {"k": "1"}, "metadata": {"name": "x"}});
        assert_eq!(with_hash(&a), with_hash(&b));
        let c = json!({"metadata": {"name": "x"}, "data": {"k": "2"}});
        assert_ne!(
            with_hash(&a)["metadata"]["annotations"][HASH_ANNOTATION],
            with_hash(&c)["metadata"]["annotations"][HASH_ANNOTATION]
        );
        assert_eq!(comparable(&with_hash(&a)), a);
    }
}
