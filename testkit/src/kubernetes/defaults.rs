//! The defaulting step of the API server, for the kinds cortex renders: the
//! fields a real server adds to what was applied, so that plans can be
//! tested to never show them as changes.

use serde_json::{Value, json};

/// Fills in the defaults a real API server would, in place.
pub fn apply_defaults(kind: &str, object: &mut Value, cluster_ip: impl FnOnce() -> String) {
    match kind {
        "Deployment" => deployment(object),
        "Service" => service(object, cluster_ip),
        "Namespace" => {
            let name = object["metadata"]["name"].clone();
            default(
                object,
                &["metadata", "labels", "kubernetes.io/metadata.name"],
                name,
            );
            default(object, &["spec", "finalizers"], json!(["kubernetes"]));
        }
        _ => {}
    }
}

fn deployment(object: &mut Value) {
    default(object, &["spec", "replicas"], json!(1));
    default(object, &["spec", "revisionHistoryLimit"], json!(10));
    default(object, &["spec", "progressDeadlineSeconds"], json!(600));
    default(
        object,
        &["spec", "strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    );
    let pod = &["spec", "template", "spec"];
    for (field, value) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("securityContext", json!({})),
    ] {
        let mut path = pod.to_vec();
        path.push(field);
        default(object, &path, value);
    }
    let containers = object
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut);
    for container in containers.into_iter().flatten() {
        let latest = container["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(":latest") || !i.contains(':'));
        default(
            container,
            &["terminationMessagePath"],
            json!("/dev/termination-log"),
        );
        default(container, &["terminationMessagePolicy"], json!("File"));
        default(
            container,
            &["imagePullPolicy"],
            json!(if latest { "Always" } else { "IfNotPresent" }),
        );
        canonical_cpu(container);
        for port in container
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            default(port, &["protocol"], json!("TCP"));
        }
    }
}

/// Stores CPU quantities in canonical form, as the API server does
/// (`0.5` → `500m`, `1000m` → `1`).
fn canonical_cpu(container: &mut Value) {
    for section in ["limits", "requests"] {
        let Some(cpu) = container.pointer_mut(&format!("/resources/{section}/cpu")) else {
            continue;
        };
        let text = match &*cpu {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        let Some(cores) = cortex_reconciler::target::kubernetes::quantity::value(&text) else {
            continue;
        };
        let millis = (cores * 1000.0).round();
        if (cores * 1000.0 - millis).abs() > 1e-9 {
            continue;
        }
        *cpu = if millis % 1000.0 == 0.0 {
            json!(format!("{}", millis / 1000.0))
        } else {
            json!(format!("{millis}m"))
        };
    }
}

fn service(object: &mut Value, cluster_ip: impl FnOnce() -> String) {
    default(object, &["spec", "type"], json!("ClusterIP"));
    default(object, &["spec", "sessionAffinity"], json!("None"));
    default(object, &["spec", "internalTrafficPolicy"], json!("Cluster"));
    default(object, &["spec", "ipFamilies"], json!(["IPv4"]));
    default(object, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
    if object.pointer("/spec/clusterIP").is_none() {
        let ip = cluster_ip();
        default(object, &["spec", "clusterIP"], json!(ip));
        default(object, &["spec", "clusterIPs"], json!([ip]));
    }
    for port in object
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        default(port, &["protocol"], json!("TCP"));
        let number = port["port"].clone();
        default(port, &["targetPort"], number);
    }
}

/// Sets `path` to `value` when nothing is there.
fn default(object: &mut Value, path: &[&str], value: Value) {
    let mut at = object;
    for key in &path[..path.len() - 1] {
        if !at.is_object() {
            return;
        }
        at = at
            .as_object_mut()
            .expect("checked above")
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
    }
    if let Some(map) = at.as_object_mut() {
        map.entry(path[path.len() - 1].to_string()).or_insert(value);
    }
}
