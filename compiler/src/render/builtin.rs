//! The shipped object templates (`templates/*.yaml.j2`) as Rust: each
//! function builds exactly the object its template renders from the same
//! context, without a template engine and without reading YAML back. A
//! project that overrides a template by name gets its own template rendered
//! by minijinja; a test holds every function to its template's output.

use serde_json::{Map, Value, json};

/// Builds the object the shipped template `template` renders from `ctx`;
/// `None` for a template without a built-in form.
pub fn render(template: &str, ctx: &Value) -> Option<Value> {
    let object = match template {
        "serviceaccount.yaml.j2" => service_account(ctx),
        "configmap.yaml.j2" => config_map(ctx),
        "deployment.yaml.j2" => deployment(ctx),
        "service.yaml.j2" => service(ctx),
        "hpa.yaml.j2" => autoscaler(ctx),
        "pdb.yaml.j2" => disruption_budget(ctx),
        "runtime-configmap.yaml.j2" => runtime_config_map(ctx),
        _ => return None,
    };
    Some(object)
}

/// Whether `template` has a built-in form.
pub fn has(template: &str) -> bool {
    render(template, &Value::Null).is_some()
}

/// A template's `{% if value %}`: none, false, zero, and empty strings,
/// lists and maps are false (minijinja's truthiness).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// `metadata` with the agent's name, the namespace and the labels.
fn metadata(ctx: &Value, name: &Value) -> Map<String, Value> {
    let mut metadata = Map::new();
    metadata.insert("name".into(), name.clone());
    metadata.insert("namespace".into(), ctx["project"]["namespace"].clone());
    metadata.insert("labels".into(), ctx["labels"].clone());
    metadata
}

fn object(api_version: &str, kind: &str, metadata: Map<String, Value>) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    object.insert("metadata".into(), Value::Object(metadata));
    object
}

fn service_account(ctx: &Value) -> Value {
    let mut metadata = metadata(ctx, &ctx["agent"]["name"]);
    metadata.insert(
        "annotations".into(),
        ctx["service_account"]["annotations"].clone(),
    );
    let mut account = object("v1", "ServiceAccount", metadata);
    account.insert(
        "automountServiceAccountToken".into(),
        ctx["pod"]["automountServiceAccountToken"].clone(),
    );
    Value::Object(account)
}

fn config_map(ctx: &Value) -> Value {
    let mut map = object("v1", "ConfigMap", metadata(ctx, &ctx["config_map_name"]));
    map.insert("data".into(), ctx["config_data"].clone());
    Value::Object(map)
}

fn deployment(ctx: &Value) -> Value {
    let (pod, container) = (&ctx["pod"], &ctx["container"]);
    let mut metadata = metadata(ctx, &ctx["agent"]["name"]);
    metadata.insert("annotations".into(), ctx["annotations"].clone());

    let mut agent = Map::new();
    agent.insert("name".into(), json!("agent"));
    agent.insert("image".into(), container["image"].clone());
    for key in ["command", "args"] {
        if truthy(&container[key]) {
            agent.insert(key.into(), container[key].clone());
        }
    }
    for key in ["env", "envFrom"] {
        agent.insert(key.into(), container[key].clone());
    }
    if truthy(&container["ports"]) {
        agent.insert("ports".into(), container["ports"].clone());
    }
    agent.insert("resources".into(), container["resources"].clone());
    if truthy(&container["probe"]) {
        agent.insert("livenessProbe".into(), container["probe"].clone());
        agent.insert("readinessProbe".into(), container["probe"].clone());
    }
    for key in ["securityContext", "volumeMounts"] {
        agent.insert(key.into(), container[key].clone());
    }

    let mut pod_spec = Map::new();
    pod_spec.insert("serviceAccountName".into(), ctx["agent"]["name"].clone());
    for key in ["automountServiceAccountToken", "securityContext"] {
        pod_spec.insert(key.into(), pod[key].clone());
    }
    for key in ["nodeSelector", "tolerations"] {
        if truthy(&pod[key]) {
            pod_spec.insert(key.into(), pod[key].clone());
        }
    }
    pod_spec.insert(
        "containers".into(),
        Value::Array(vec![Value::Object(agent)]),
    );
    pod_spec.insert("volumes".into(), pod["volumes"].clone());

    let mut spec = Map::new();
    if !ctx["replicas"].is_null() {
        spec.insert("replicas".into(), ctx["replicas"].clone());
    }
    spec.insert("revisionHistoryLimit".into(), json!(5));
    spec.insert(
        "selector".into(),
        object! { "matchLabels" => ctx["selector"].clone() },
    );
    let pod_metadata = object! {
        "labels" => ctx["labels"].clone(),
        "annotations" => pod["annotations"].clone(),
    };
    spec.insert(
        "template".into(),
        object! { "metadata" => pod_metadata, "spec" => pod_spec },
    );
    let mut deployment = object("apps/v1", "Deployment", metadata);
    deployment.insert("spec".into(), Value::Object(spec));
    Value::Object(deployment)
}

fn service(ctx: &Value) -> Value {
    let mut service = object("v1", "Service", metadata(ctx, &ctx["agent"]["name"]));
    service.insert(
        "spec".into(),
        object! {
            "type" => "ClusterIP",
            "selector" => ctx["selector"].clone(),
            "ports" => ctx["service_ports"].clone(),
        },
    );
    Value::Object(service)
}

fn autoscaler(ctx: &Value) -> Value {
    let autoscaling = &ctx["autoscaling"];
    let mut spec = Map::new();
    spec.insert(
        "scaleTargetRef".into(),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "name": ctx["agent"]["name"].clone() }),
    );
    spec.insert("minReplicas".into(), autoscaling["minReplicas"].clone());
    spec.insert("maxReplicas".into(), autoscaling["maxReplicas"].clone());
    if truthy(&autoscaling["targetCPUUtilization"]) {
        spec.insert(
            "metrics".into(),
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": autoscaling["targetCPUUtilization"].clone(),
                    },
                },
            }]),
        );
    }
    let metadata = metadata(ctx, &ctx["agent"]["name"]);
    let mut autoscaler = object("autoscaling/v2", "HorizontalPodAutoscaler", metadata);
    autoscaler.insert("spec".into(), Value::Object(spec));
    Value::Object(autoscaler)
}

fn disruption_budget(ctx: &Value) -> Value {
    let metadata = metadata(ctx, &ctx["agent"]["name"]);
    let mut budget = object("policy/v1", "PodDisruptionBudget", metadata);
    budget.insert(
        "spec".into(),
        object! {
            "maxUnavailable" => 1,
            "selector" => object! { "matchLabels" => ctx["selector"].clone() },
        },
    );
    Value::Object(budget)
}

fn runtime_config_map(ctx: &Value) -> Value {
    let mut map = object("v1", "ConfigMap", metadata(ctx, &ctx["name"]));
    map.insert(
        "data".into(),
        object! { "runtime.json" => ctx["runtime_json"].clone() },
    );
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_follows_the_templates() {
        for falsy in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for truthy_value in [
            json!(true),
            json!(1),
            json!(-1),
            json!("x"),
            json!([0]),
            json!({"a": null}),
        ] {
            assert!(truthy(&truthy_value), "{truthy_value}");
        }
    }

    #[test]
    fn every_shipped_template_has_a_built_in_form() {
        for (name, _) in super::super::DEFAULT_TEMPLATES {
            assert!(has(name), "{name}");
        }
        assert!(!has("mine.yaml.j2"));
    }
}
