//! What the object templates of one Agent see: labels, the pod and container
//! pieces (probes from `health`, env with secret references, the hardened
//! security context and its explicit relaxations), the config and its
//! checksum.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::json_at;
use crate::bundle::Project;
use crate::hash::canonical_hash;
use crate::node::Node;
use crate::resolve::ResolvedSpec;
use crate::validate::formats::parse_duration_ms;

/// Where agents' containers mount their config.
pub const CONFIG_DIR: &str = "/etc/cortex";

/// Port of the runtime's broker inside the cluster.
pub const BROKER_PORT: u16 = 7700;

/// Kubernetes probe defaults (period 10 s, timeout 1 s, failure threshold 3),
/// used where `health` leaves a field unset.
pub const PROBE_PERIOD_SECONDS: u64 = 10;
/// See [`PROBE_PERIOD_SECONDS`].
pub const PROBE_TIMEOUT_SECONDS: u64 = 1;
/// See [`PROBE_PERIOD_SECONDS`].
pub const PROBE_FAILURE_THRESHOLD: i64 = 3;

/// The ownership label: every object cortex renders carries it, with the
/// project's name, so later stages can find and prune what cortex owns.
pub const PROJECT_LABEL: &str = "cortex.codevald.io/project";

/// The template context of one agent.
///
/// It is made from `spec`, the pool the agent runs in and the project facts,
/// and from nothing else: agents whose three are the same have the same
/// context, and so the same objects ([`super::memo`] relies on it).
pub fn context(spec: &ResolvedSpec, pool: Option<&ResolvedSpec>, project: &Project) -> Value {
    let body = spec.spec().map(Node::to_json).unwrap_or_else(|| json!({}));
    let name = spec.name.as_str();
    let labels = labels(spec, &body, project);
    let selector = json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": project.name,
    });
    let mut annotations = string_map(spec.node.path(&["metadata", "annotations"]));
    annotations.insert(
        "cortex.codevald.io/source".into(),
        json!(spec.file.as_ref()),
    );

    let config_map_name = format!("{name}-config");
    let config_data = json!({
        "CORTEX_AGENT_NAME": name,
        "CORTEX_CONFIG_FILE": format!("{CONFIG_DIR}/config.json"),
        "config.json": pretty_canonical(body.get("config").unwrap_or(&json!({}))),
    });
    let checksum = canonical_hash(&config_data);

    let autoscaling = body.get("autoscaling").map(|a| {
        json!({
            "minReplicas": a.get("minReplicas").cloned().unwrap_or(json!(1)),
            "maxReplicas": a.get("maxReplicas").cloned().unwrap_or(json!(1)),
            "targetCPUUtilization": a.get("targetCPUUtilization").cloned().unwrap_or(Value::Null),
        })
    });
    let replicas = body.get("replicas").and_then(Value::as_i64).unwrap_or(1);
    let min_replicas = autoscaling
        .as_ref()
        .and_then(|a| a["minReplicas"].as_i64())
        .unwrap_or(replicas);
    let security = body.get("security").cloned().unwrap_or_else(|| json!({}));
    let automount = json_at(&body, &["serviceAccount", "automountToken"])
        .or_else(|| security.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut tolerations: Vec<Value> = pool
        .and_then(|p| p.spec())
        .and_then(|s| s.get("tolerations"))
        .map(Node::to_json)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    tolerations.extend(
        body.get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    );
    let node_selector = pool
        .and_then(|p| p.spec())
        .and_then(|s| s.get("nodeSelector"))
        .map(Node::to_json)
        .unwrap_or_else(|| json!({}));

    let (volumes, mounts) = volumes(name, &config_map_name, &body);
    let mut pod_security = json!({ "runAsNonRoot": security.get("runAsNonRoot").cloned().unwrap_or(json!(true)),
        "seccompProfile": { "type": security.get("seccompProfile").cloned().unwrap_or(json!("RuntimeDefault")) } });
    if let Some(user) = security.get("runAsUser") {
        pod_security["runAsUser"] = user.clone();
    }
    let mut capabilities = json!({ "drop": ["ALL"] });
    if let Some(add) = json_at(&security, &["capabilities", "add"])
        .filter(|a| a.as_array().is_some_and(|l| !l.is_empty()))
    {
        capabilities["add"] = add.clone();
    }

    let service_account = object! {
        "annotations" => json_at(&body, &["serviceAccount", "annotations"])
            .cloned()
            .unwrap_or(json!({})),
    };
    let pod = object! {
        "annotations" => object! { "checksum/config" => checksum },
        "automountServiceAccountToken" => automount,
        "securityContext" => pod_security,
        "nodeSelector" => node_selector,
        "tolerations" => tolerations,
        "volumes" => volumes,
    };
    let container_security = object! {
        "allowPrivilegeEscalation" => security
            .get("allowPrivilegeEscalation")
            .cloned()
            .unwrap_or(json!(false)),
        "readOnlyRootFilesystem" => security
            .get("readOnlyRootFilesystem")
            .cloned()
            .unwrap_or(json!(true)),
        "runAsNonRoot" => security.get("runAsNonRoot").cloned().unwrap_or(json!(true)),
        "capabilities" => capabilities,
    };
    let container = object! {
        "image" => body.get("image").cloned().unwrap_or(Value::Null),
        "command" => body.get("command").cloned().unwrap_or(Value::Null),
        "args" => body.get("args").cloned().unwrap_or(Value::Null),
        "env" => env(&body, project),
        "envFrom" => json!([{ "configMapRef": { "name": format!("{name}-config") } }]),
        "ports" => container_ports(&body),
        "resources" => resources(&body),
        "probe" => probe(&body),
        "securityContext" => container_security,
        "volumeMounts" => mounts,
    };
    object! {
        "project" => project.to_json(),
        "service_ports" => service_ports(&body),
        "agent" => object! { "name" => name, "spec" => body },
        "labels" => labels,
        "selector" => selector,
        "annotations" => annotations,
        "replicas" => if autoscaling.is_some() { Value::Null } else { json!(replicas) },
        "autoscaling" => autoscaling.unwrap_or(Value::Null),
        "pdb" => replicas.max(min_replicas) > 1,
        "config_map_name" => config_map_name,
        "config_data" => config_data,
        "service_account" => service_account,
        "pod" => pod,
        "container" => container,
    }
}

fn labels(spec: &ResolvedSpec, body: &Value, project: &Project) -> Map<String, Value> {
    let mut labels = string_map(spec.node.path(&["metadata", "labels"]));
    let version = body
        .get("image")
        .and_then(Value::as_str)
        .and_then(|image| {
            image
                .rsplit_once(':')
                .filter(|(repo, tag)| !tag.contains('/') && !repo.is_empty())
        })
        .map(|(_, tag)| label_value(tag))
        .unwrap_or_else(|| "latest".to_string());
    for (key, value) in [
        ("app.kubernetes.io/name", spec.name.clone()),
        ("app.kubernetes.io/instance", project.name.clone()),
        ("app.kubernetes.io/component", "agent".to_string()),
        ("app.kubernetes.io/part-of", project.name.clone()),
        ("app.kubernetes.io/managed-by", "cortex".to_string()),
        ("app.kubernetes.io/version", version),
        (
            "helm.sh/chart",
            label_value(&format!("{}-{}", project.chart_name, project.chart_version)),
        ),
        (PROJECT_LABEL, project.name.clone()),
    ] {
        labels.insert(key.to_string(), json!(value));
    }
    labels
}

/// The resource pool `spec` names (`spec.pool`), among `pools` by name.
pub fn pool_of<'r>(
    spec: &ResolvedSpec,
    pools: &BTreeMap<&str, &'r ResolvedSpec>,
) -> Option<&'r ResolvedSpec> {
    let name = spec.spec()?.get("pool")?.as_str()?;
    pools.get(name).copied()
}

/// The project-level labels (the runtime ConfigMap).
pub fn project_labels(project: &Project) -> Value {
    json!({
        "app.kubernetes.io/name": format!("{}-runtime", project.name),
        "app.kubernetes.io/instance": project.name,
        "app.kubernetes.io/component": "runtime-config",
        "app.kubernetes.io/part-of": project.name,
        "app.kubernetes.io/managed-by": "cortex",
        "helm.sh/chart": label_value(&format!("{}-{}", project.chart_name, project.chart_version)),
        PROJECT_LABEL: project.name,
    })
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn label_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn string_map(node: Option<&Node>) -> Map<String, Value> {
    node.map(Node::to_json)
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

fn env(body: &Value, project: &Project) -> Vec<Value> {
    let mut out: Vec<Value> = body
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e.get("name").cloned().unwrap_or(Value::Null);
            match e.get("secretRef") {
                Some(r) => json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": r["name"], "key": r["key"] } } }),
                None => json!({ "name": name, "value": e.get("value").cloned().unwrap_or(json!("")) }),
            }
        })
        .collect();
    out.push(json!({ "name": "CORTEX_BROKER_URL", "value": project.broker_url }));
    out
}

fn container_ports(body: &Value) -> Vec<Value> {
    body.get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| json!({ "name": p["name"], "containerPort": p["port"], "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP")) }))
        .collect()
}

fn service_ports(body: &Value) -> Vec<Value> {
    body.get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| json!({ "name": p["name"], "port": p["port"], "targetPort": p["name"], "protocol": p.get("protocol").cloned().unwrap_or(json!("TCP")) }))
        .collect()
}

/// Resources with every quantity as a string (Kubernetes' canonical form).
fn resources(body: &Value) -> Value {
    let mut out = Map::new();
    for section in ["requests", "limits"] {
        if let Some(map) = json_at(body, &["resources", section]).and_then(Value::as_object) {
            let values: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
                    )
                })
                .collect();
            out.insert(section.into(), Value::Object(values));
        }
    }
    Value::Object(out)
}

fn seconds(body: &Value, path: &[&str], default: u64) -> u64 {
    json_at(body, path)
        .and_then(Value::as_str)
        .and_then(|d| parse_duration_ms(d).ok())
        .map_or(default, |ms| ms.div_ceil(1000).max(1))
}

fn probe(body: &Value) -> Value {
    let Some(check) = json_at(body, &["health", "check"]) else {
        return Value::Null;
    };
    let mut probe = if let Some(http) = check.get("http") {
        json!({ "httpGet": { "path": http.get("path").cloned().unwrap_or(json!("/")), "port": http["port"] } })
    } else if let Some(tcp) = check.get("tcp") {
        json!({ "tcpSocket": { "port": tcp["port"] } })
    } else if let Some(exec) = check.get("exec") {
        json!({ "exec": { "command": exec["command"] } })
    } else {
        return Value::Null;
    };
    probe["periodSeconds"] = json!(seconds(body, &["health", "interval"], PROBE_PERIOD_SECONDS));
    probe["timeoutSeconds"] = json!(seconds(body, &["health", "timeout"], PROBE_TIMEOUT_SECONDS));
    probe["failureThreshold"] = json_at(body, &["health", "failureThreshold"])
        .cloned()
        .unwrap_or(json!(PROBE_FAILURE_THRESHOLD));
    probe
}

fn volumes(name: &str, config_map: &str, body: &Value) -> (Vec<Value>, Vec<Value>) {
    let _ = name;
    let mut volumes = vec![
        json!({ "name": "cortex-config", "configMap": { "name": config_map, "items": [{ "key": "config.json", "path": "config.json" }] } }),
        json!({ "name": "tmp", "emptyDir": {} }),
    ];
    let mut mounts = vec![
        json!({ "name": "cortex-config", "mountPath": CONFIG_DIR, "readOnly": true }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    for v in body
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut volume = json!({ "name": v["name"] });
        if let Some(e) = v.get("emptyDir") {
            volume["emptyDir"] = e.clone();
        } else if let Some(c) = v.get("configMap") {
            volume["configMap"] = c.clone();
        } else if let Some(s) = v.get("secret") {
            volume["secret"] = s.clone();
        } else {
            volume["emptyDir"] = json!({});
        }
        volumes.push(volume);
        if let Some(path) = v.get("mountPath") {
            let mut mount = json!({ "name": v["name"], "mountPath": path });
            if let Some(ro) = v.get("readOnly") {
                mount["readOnly"] = ro.clone();
            }
            mounts.push(mount);
        }
    }
    (volumes, mounts)
}

/// Pretty JSON with sorted keys (the config file agents read).
pub fn pretty_canonical(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
