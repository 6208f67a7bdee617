//! Checks a rendered object against its Kubernetes type from k8s-openapi,
//! failing on unknown fields (which the API server would drop or reject),
//! and says so as a diagnostic ([`check_object`]).

use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{apps, autoscaling, core, networking, policy, rbac};

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
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (api_version, kind) {
        ("apps/v1", "Deployment") => typed::<apps::v1::Deployment>(object),
        ("apps/v1", "StatefulSet") => typed::<apps::v1::StatefulSet>(object),
        ("v1", "ServiceAccount") => typed::<core::v1::ServiceAccount>(object),
        ("v1", "ConfigMap") => typed::<core::v1::ConfigMap>(object),
        ("v1", "Secret") => typed::<core::v1::Secret>(object),
        ("v1", "Service") => typed::<core::v1::Service>(object),
        ("v1", "Namespace") => typed::<core::v1::Namespace>(object),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            typed::<autoscaling::v2::HorizontalPodAutoscaler>(object)
        }
        ("policy/v1", "PodDisruptionBudget") => typed::<policy::v1::PodDisruptionBudget>(object),
        ("networking.k8s.io/v1", "NetworkPolicy") => typed::<networking::v1::NetworkPolicy>(object),
        ("networking.k8s.io/v1", "Ingress") => typed::<networking::v1::Ingress>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => typed::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => typed::<rbac::v1::RoleBinding>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<rbac::v1::ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            typed::<rbac::v1::ClusterRoleBinding>(object)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            typed::<apiextensions::CustomResourceDefinition>(object)
        }
        _ => Ok(()),
    }
}

fn typed<T: DeserializeOwned>(object: &Value) -> Result<(), Problem> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(object, |path| {
        // `?` stands for an Option wrapper, not a field the user wrote.
        let path = path.to_string();
        unknown.push(
            path.split('.')
                .filter(|s| *s != "?")
                .collect::<Vec<_>>()
                .join("."),
        );
    });
    match result {
        Err(e) => Err(Problem::Invalid(e.to_string())),
        Ok(_) if !unknown.is_empty() => Err(Problem::UnknownFields(unknown)),
        Ok(_) => Ok(()),
    }
}

/// Checks an object against its Kubernetes type (known kinds only);
/// `what` names it in the messages, `written_in` says where to fix it.
pub fn check_object(
    body: &Value,
    what: &str,
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
                    format!("{what} has unknown fields: {}", paths.join(", ")),
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
                    format!("{what} is not a valid {kind}"),
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
