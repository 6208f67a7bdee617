//! Checks a rendered object against its Kubernetes type from k8s-openapi,
//! failing on unknown fields (which the API server would drop or reject),
//! and says so as a diagnostic ([`check_object`]).

use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{apps, autoscaling, core, networking, policy, rbac};

use super::unknown_fields;
use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

/// What is wrong with an object.
#[derive(Debug, PartialEq, Eq)]
pub enum Problem {
    /// Fields the type does not have (dotted paths).
    UnknownFields(Vec<String>),
    /// The object does not deserialize into its type.
    Invalid(String),
}

/// Checks `object` when its kind is known; `Ok` for unknown kinds.
pub fn check(object: &Value) -> Result<(), Problem> {
    check_by::<Tracking>(object)
}

/// How an object is read into its type, its unknown fields listed.
trait Reader {
    fn read<T: DeserializeOwned>(object: &Value) -> Result<(), Problem>;
}

/// Reads with [`unknown_fields`] (keys borrowed from the object).
struct Tracking;

impl Reader for Tracking {
    fn read<T: DeserializeOwned>(object: &Value) -> Result<(), Problem> {
        let (result, unknown) = unknown_fields::deserialize::<T>(object);
        problem(result, unknown)
    }
}

/// What a reading found: its error, else the fields its type ignores.
fn problem<T>(result: Result<T, serde_json::Error>, unknown: Vec<String>) -> Result<(), Problem> {
    match result {
        Err(e) => Err(Problem::Invalid(e.to_string())),
        Ok(_) if !unknown.is_empty() => Err(Problem::UnknownFields(unknown)),
        Ok(_) => Ok(()),
    }
}

fn check_by<R: Reader>(object: &Value) -> Result<(), Problem> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (api_version, kind) {
        ("apps/v1", "Deployment") => R::read::<apps::v1::Deployment>(object),
        ("apps/v1", "StatefulSet") => R::read::<apps::v1::StatefulSet>(object),
        ("v1", "ServiceAccount") => R::read::<core::v1::ServiceAccount>(object),
        ("v1", "ConfigMap") => R::read::<core::v1::ConfigMap>(object),
        ("v1", "Secret") => R::read::<core::v1::Secret>(object),
        ("v1", "Service") => R::read::<core::v1::Service>(object),
        ("v1", "Namespace") => R::read::<core::v1::Namespace>(object),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            R::read::<autoscaling::v2::HorizontalPodAutoscaler>(object)
        }
        ("policy/v1", "PodDisruptionBudget") => R::read::<policy::v1::PodDisruptionBudget>(object),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            R::read::<networking::v1::NetworkPolicy>(object)
        }
        ("networking.k8s.io/v1", "Ingress") => R::read::<networking::v1::Ingress>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => R::read::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => R::read::<rbac::v1::RoleBinding>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => R::read::<rbac::v1::ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            R::read::<rbac::v1::ClusterRoleBinding>(object)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            R::read::<apiextensions::CustomResourceDefinition>(object)
        }
        _ => Ok(()),
    }
}

/// Checks an object against its Kubernetes type (known kinds only);
/// `what` names it in the messages (made only for one), `written_in`
/// says where to fix it.
pub fn check_object(
    body: &Value,
    what: &dyn Fn() -> String,
    written_in: &str,
    at: &crate::span::Span,
    diags: &mut Diagnostics,
) -> bool {
    let field = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    match check(body) {
        Ok(()) => true,
        Err(Problem::UnknownFields(paths)) => {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_UNKNOWN_FIELD,
                    format!("{} has unknown fields: {}", what(), paths.join(", ")),
                )
                .at(at)
                .help(format!(
                    "{kind} ({api_version}) has no such field; check the spelling in the {written_in}"
                )),
            );
            false
        }
        Err(Problem::Invalid(why)) => {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_INVALID_OBJECT,
                    format!("{} is not a valid {kind}", what()),
                )
                .at(at)
                .label(why),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The reading [`Tracking`] replaced: `serde_ignored`, which copies
    /// every key to know the paths.
    struct SerdeIgnored;

    impl Reader for SerdeIgnored {
        fn read<T: DeserializeOwned>(object: &Value) -> Result<(), Problem> {
            let mut unknown = Vec::new();
            let result: Result<T, _> = serde_ignored::deserialize(object, |path| {
                unknown.push(unknown_fields::written(&path.to_string()));
            });
            problem(result, unknown)
        }
    }

    /// Objects of every checked kind, written out with most of their
    /// fields.
    fn objects() -> Vec<Value> {
        let meta = json!({ "name": "x", "namespace": "n", "labels": { "app": "x" }, "annotations": { "a.b/c": "d" } });
        let container = json!({
            "name": "agent", "image": "r/x:1", "command": ["run"], "args": ["--a"],
            "env": [{ "name": "A", "value": "1" }, { "name": "S", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } }],
            "envFrom": [{ "configMapRef": { "name": "c" } }],
            "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": 1 } },
            "livenessProbe": { "httpGet": { "path": "/healthz", "port": "http" }, "periodSeconds": 10 },
            "securityContext": { "runAsNonRoot": true, "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" } },
            "volumeMounts": [{ "name": "v", "mountPath": "/v", "readOnly": true }]
        });
        let pod = json!({
            "metadata": { "labels": { "app": "x" }, "annotations": { "h": "1" } },
            "spec": {
                "serviceAccountName": "x", "automountServiceAccountToken": false,
                "securityContext": { "fsGroup": 1000 }, "nodeSelector": { "pool": "a" },
                "tolerations": [{ "key": "k", "operator": "Exists", "effect": "NoSchedule" }],
                "containers": [container], "volumes": [{ "name": "v", "configMap": { "name": "c", "items": [{ "key": "a", "path": "a" }] } }]
            }
        });
        vec![
            json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": { "replicas": 2, "revisionHistoryLimit": 5, "selector": { "matchLabels": { "app": "x" } }, "template": pod } }),
            json!({ "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": { "serviceName": "x", "selector": { "matchExpressions": [{ "key": "a", "operator": "In", "values": ["b"] }] }, "template": pod } }),
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": false }),
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": { "a": "1", "runtime.json": "{}" } }),
            json!({ "apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "stringData": { "k": "v" } }),
            json!({ "apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": { "type": "ClusterIP", "selector": { "app": "x" }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] } }),
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": meta }),
            json!({ "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta, "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "x" }, "minReplicas": 1, "maxReplicas": 3, "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 70 } } }] } }),
            json!({ "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta, "spec": { "maxUnavailable": 1, "selector": { "matchLabels": { "app": "x" } } } }),
            json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": { "podSelector": {}, "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "a": "b" } } }], "ports": [{ "port": 80 }] }] } }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] }] }),
            json!({ "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": { "ingressClassName": "nginx", "tls": [{ "hosts": ["a.example"], "secretName": "t" }], "rules": [{ "host": "a.example", "http": { "paths": [{ "path": "/", "pathType": "Prefix", "backend": { "service": { "name": "x", "port": { "name": "http" } } } }] } }] } }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta, "rules": [{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"] }] }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta, "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "x" }, "subjects": [{ "kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io" }] }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta, "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x" }, "subjects": [{ "kind": "ServiceAccount", "name": "x" }] }),
            json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": meta, "spec": { "group": "e.com", "scope": "Namespaced", "names": { "kind": "W", "plural": "ws" }, "versions": [{ "name": "v1", "served": true, "storage": true, "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true, "default": { "a": [1, { "b": null }] } } } }] } }),
        ]
    }

    /// Every way to change one place of `value`: an unknown field added to
    /// an object, a value of another type, an extra item.
    fn variants(value: &Value, out: &mut Vec<Value>, rebuild: &dyn Fn(Value) -> Value) {
        let others = [
            json!(null),
            json!(true),
            json!(7),
            json!(-1.5),
            json!("s"),
            json!([1]),
            json!({ "k": 1 }),
        ];
        for other in &others {
            if std::mem::discriminant(other) != std::mem::discriminant(value) {
                out.push(rebuild(other.clone()));
            }
        }
        match value {
            Value::Object(map) => {
                let mut more = map.clone();
                more.insert("bogusField".into(), json!({ "deep": [1] }));
                out.push(rebuild(Value::Object(more)));
                for (key, inner) in map {
                    let rebuild_inner = |v: Value| {
                        let mut map = map.clone();
                        map.insert(key.clone(), v);
                        rebuild(Value::Object(map))
                    };
                    variants(inner, out, &rebuild_inner);
                }
            }
            Value::Array(items) => {
                let mut more = items.clone();
                more.push(json!({ "name": "extra", "bogus": 1 }));
                out.push(rebuild(Value::Array(more)));
                for (i, inner) in items.iter().enumerate() {
                    let rebuild_inner = |v: Value| {
                        let mut items = items.clone();
                        items[i] = v;
                        rebuild(Value::Array(items))
                    };
                    variants(inner, out, &rebuild_inner);
                }
            }
            _ => {}
        }
    }

    /// The borrowed-key reading finds what `serde_ignored` found — the
    /// same unknown paths in the same order, the same error — on every
    /// checked kind's object and on every one-place change of it.
    #[test]
    fn tracking_reads_as_serde_ignored_did() {
        let (mut cases, mut unknown, mut invalid) = (0, 0, 0);
        let objects = objects();
        assert_eq!(objects.len(), 16, "one object of each kind checked");
        for object in objects {
            assert_eq!(check_by::<Tracking>(&object), Ok(()), "{object:#}");
            let mut unknown_at_top = object.clone();
            unknown_at_top["bogusField"] = json!(1);
            assert_eq!(
                check_by::<Tracking>(&unknown_at_top),
                Err(Problem::UnknownFields(vec!["bogusField".into()])),
                "a kind that is checked: {object:#}"
            );
            let mut changed = Vec::new();
            variants(&object, &mut changed, &|v| v);
            for case in changed {
                let tracked = check_by::<Tracking>(&case);
                assert_eq!(tracked, check_by::<SerdeIgnored>(&case), "{case:#}");
                cases += 1;
                unknown += usize::from(matches!(tracked, Err(Problem::UnknownFields(_))));
                invalid += usize::from(matches!(tracked, Err(Problem::Invalid(_))));
            }
        }
        assert!(
            cases > 1000 && unknown > 100 && invalid > 300,
            "{cases} cases: {unknown} unknown, {invalid} invalid"
        );
    }

    #[test]
    fn a_misspelled_field_is_found_with_its_path() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "x" },
            "spec": { "selector": {}, "template": { "spec": { "containers": [{ "name": "a", "imagePullPolicyy": "Always" }] } } }
        });
        match check(&object) {
            Err(Problem::UnknownFields(paths)) => assert_eq!(
                paths,
                vec!["spec.template.spec.containers.0.imagePullPolicyy"]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_is_invalid() {
        let object = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "x" }, "data": ["a"] });
        assert!(matches!(check(&object), Err(Problem::Invalid(_))));
    }

    #[test]
    fn unknown_kinds_are_not_checked() {
        assert_eq!(
            check(
                &json!({ "apiVersion": "example.com/v1", "kind": "Widget", "spec": { "anything": 1 } })
            ),
            Ok(())
        );
    }
}
