//! The output of a build: Kubernetes objects, the runtime configuration,
//! and an inventory with a content hash of every object; and the files of
//! `cortex build -o OUT` (chart, manifests.yaml, runtime.json,
//! inventory.json). Output is deterministic: sorted keys, stable order.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::hash::canonical_hash;
use crate::validate::pools::PoolUsage;
use crate::yaml_out::to_yaml;

/// Largest chart template file cortex writes (Helm's limit is 5 MiB).
pub const CHART_FILE_BYTES: usize = 1024 * 1024;

/// Version of the inventory.json layout.
pub const INVENTORY_FORMAT_VERSION: u32 = 1;

/// One rendered Kubernetes object.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// The template that rendered it.
    pub template: String,
    /// The spec it was rendered for (`Agent/triage`), none for project-wide objects.
    pub spec: Option<String>,
    /// The object (keys sorted: JSON maps are ordered in this build).
    pub body: Value,
    /// The object as YAML, emitted on first use (manifests.yaml and the
    /// chart share it; a plan never needs it).
    yaml: std::sync::OnceLock<String>,
}

impl Object {
    /// An object rendered by `template` for `spec`.
    pub fn new(
        api_version: String,
        kind: String,
        name: String,
        template: String,
        spec: Option<String>,
        body: Value,
    ) -> Object {
        Object {
            namespace: body
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string),
            api_version,
            kind,
            name,
            template,
            spec,
            body,
            yaml: std::sync::OnceLock::new(),
        }
    }

    /// The object as YAML.
    pub fn yaml(&self) -> &str {
        self.yaml.get_or_init(|| to_yaml(&self.body))
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// `group/kind/namespace/name`, the identity plans key on.
    pub fn identity(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.group(),
            self.kind,
            self.namespace.as_deref().unwrap_or(""),
            self.name
        )
    }

    /// SHA-256 of the canonical JSON of the object.
    pub fn content_hash(&self) -> String {
        canonical_hash(&self.body)
    }
}

/// Project facts every template sees.
#[derive(Clone, Debug)]
pub struct Project {
    /// Project name.
    pub name: String,
    /// Target namespace.
    pub namespace: String,
    /// Selected environment.
    pub environment: Option<String>,
    /// Chart name (defaults to the project name).
    pub chart_name: String,
    /// Chart version (defaults to 0.1.0).
    pub chart_version: String,
    /// Chart description.
    pub chart_description: String,
    /// Broker URL handed to agents in the cluster.
    pub broker_url: String,
}

impl Project {
    /// As the templates see it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "environment": self.environment,
            "chart": { "name": self.chart_name, "version": self.chart_version, "description": self.chart_description },
            "brokerUrl": self.broker_url,
        })
    }
}

/// Apply order of kinds: what others depend on first.
pub fn kind_rank(kind: &str) -> usize {
    const ORDER: [&str; 12] = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
    ];
    ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(if kind == "PodDisruptionBudget" {
            12
        } else {
            13
        })
}

/// Everything a build produces.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// Project facts.
    pub project: Project,
    /// The objects, in apply order (kind rank, then namespace and name).
    pub objects: Vec<Object>,
    /// The runtime configuration (runtime.json).
    pub runtime: Value,
    /// Pool usage at maximum scale.
    pub pools: Vec<PoolUsage>,
}

impl Bundle {
    /// Sorts the objects into apply order.
    pub fn new(
        project: Project,
        mut objects: Vec<Object>,
        runtime: Value,
        pools: Vec<PoolUsage>,
    ) -> Bundle {
        objects.sort_by(|a, b| {
            (kind_rank(&a.kind), &a.kind, &a.namespace, &a.name).cmp(&(
                kind_rank(&b.kind),
                &b.kind,
                &b.namespace,
                &b.name,
            ))
        });
        Bundle {
            project,
            objects,
            runtime,
            pools,
        }
    }

    /// `manifests.yaml`: every object as multi-document YAML.
    pub fn manifests_yaml(&self) -> String {
        let size = self.objects.iter().map(|o| o.yaml().len() + 4).sum();
        let mut out = String::with_capacity(size);
        for object in &self.objects {
            out.push_str("---\n");
            out.push_str(object.yaml());
        }
        out
    }

    /// `runtime.json`.
    pub fn runtime_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.runtime).unwrap_or_default();
        text.push('\n');
        text
    }

    /// `inventory.json`: identity and content hash of every object,
    /// Kubernetes objects and runtime objects alike.
    pub fn inventory_json(&self) -> String {
        use rayon::prelude::*;
        // Hashing is most of the work and each object's is independent.
        let objects: Vec<Value> = self
            .objects
            .par_iter()
            .with_min_len(64)
            .map(|o| {
                json!({
                    "apiVersion": o.api_version, "kind": o.kind, "namespace": o.namespace, "name": o.name,
                    "identity": o.identity(), "hash": o.content_hash(), "template": o.template, "spec": o.spec,
                })
            })
            .collect();
        let mut entries: Vec<(&str, &String, &Value)> = Vec::new();
        for (section, kind) in crate::runtime_config::SECTIONS {
            if let Some(map) = self.runtime.get(section).and_then(Value::as_object) {
                entries.extend(map.iter().map(|(name, value)| (kind, name, value)));
            }
        }
        let mut runtime_objects: Vec<Value> = entries
            .par_iter()
            .with_min_len(64)
            .map(|(kind, name, value)| {
                json!({ "kind": kind, "name": name, "identity": format!("{kind}/{name}"), "hash": canonical_hash(value) })
            })
            .collect();
        runtime_objects.sort_by(|a, b| a["identity"].as_str().cmp(&b["identity"].as_str()));
        let inventory = json!({
            "format_version": INVENTORY_FORMAT_VERSION,
            "project": self.project.name,
            "namespace": self.project.namespace,
            "environment": self.project.environment,
            "objects": objects,
            "runtimeObjects": runtime_objects,
        });
        let mut text = serde_json::to_string_pretty(&inventory).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The Helm chart: `Chart.yaml`, `values.yaml` and the objects in
    /// `templates/objects-NNN.yaml` (apply order, at most 1 MiB per file),
    /// each escaped so that Helm prints it exactly as cortex rendered it.
    pub fn chart_files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        let chart = json!({
            "apiVersion": "v2",
            "name": self.project.chart_name,
            "version": self.project.chart_version,
            "description": self.project.chart_description,
            "type": "application",
            "annotations": { "cortex.codevald.io/project": self.project.name },
        });
        files.insert("Chart.yaml".to_string(), to_yaml(&chart));
        files.insert(
            "values.yaml".to_string(),
            "# Rendered by cortex: every object in templates/ is complete, so the chart\n# takes no values. Change the specs and run `cortex build` again.\n{}\n".to_string(),
        );
        // Objects in apply order, in files of at most CHART_FILE_BYTES (Helm
        // refuses template files over 5 MiB; few files keep writes fast).
        let mut chunk = String::with_capacity(CHART_FILE_BYTES);
        let mut by_file: BTreeMap<String, String> = BTreeMap::new();
        for object in &self.objects {
            let text = escape_for_helm(object.yaml());
            if !chunk.is_empty() && chunk.len() + text.len() > CHART_FILE_BYTES {
                by_file.insert(
                    format!("templates/objects-{:03}.yaml", by_file.len()),
                    std::mem::take(&mut chunk),
                );
            }
            chunk.push_str("---\n");
            chunk.push_str(&text);
        }
        if !chunk.is_empty() {
            by_file.insert(
                format!("templates/objects-{:03}.yaml", by_file.len()),
                chunk,
            );
        }
        files.extend(by_file);
        files
    }

    /// Every output file of `cortex build -o OUT`, by relative path.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        let files = std::sync::Mutex::new(BTreeMap::new());
        let kept = self.emit(&|path, bytes| {
            files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path, bytes);
            Ok(())
        });
        // Keeping files in memory cannot fail.
        debug_assert!(kept.is_ok());
        files.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every output file to `sink` (its path under the output
    /// directory, its content) as soon as it is made, each once, from
    /// several threads at once; the first error `sink` answers stops the
    /// rest. What [`Bundle::files`] collects; a build writes each file as
    /// it comes, so the whole output is never in memory at once.
    pub fn emit(
        &self,
        sink: &(dyn Fn(String, Vec<u8>) -> std::io::Result<()> + Sync),
    ) -> std::io::Result<()> {
        // Emit every object's YAML over all cores first; the chart and
        // manifests.yaml then share it.
        {
            use rayon::prelude::*;
            self.objects.par_iter().with_min_len(64).for_each(|o| {
                o.yaml();
            });
        }
        // The outputs are independent: built (and handed over) concurrently.
        let chart = || {
            self.chart_files()
                .into_iter()
                .try_for_each(|(path, text)| sink(format!("chart/{path}"), text.into_bytes()))
        };
        let runtime = || sink("runtime.json".into(), self.runtime_json().into_bytes());
        let manifests = || sink("manifests.yaml".into(), self.manifests_yaml().into_bytes());
        let inventory = || sink("inventory.json".into(), self.inventory_json().into_bytes());
        let ((a, b), (c, d)) = rayon::join(
            || rayon::join(chart, runtime),
            || rayon::join(manifests, inventory),
        );
        a.and(b).and(c).and(d)
    }

    /// Number of objects per kind, in apply order.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for object in &self.objects {
            match counts.iter_mut().find(|(k, _)| *k == object.kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((object.kind.clone(), 1)),
            }
        }
        counts
    }
}

/// Escapes what Helm's template engine would interpret. Every maximal run
/// of brace characters that contains `{{` or `}}` becomes one action that
/// prints the run literally (`{}}` → ``{{`{}}`}}``). Escaping whole runs
/// matters: escaping only the `}}` of `{}}` would leave `{` right before
/// the inserted `{{`, and Go's template lexer would read `{{{`.
pub fn escape_for_helm(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['{', '}']) {
        out.push_str(&rest[..start]);
        let run_len = rest[start..]
            .find(|c| c != '{' && c != '}')
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + run_len];
        if run.contains("{{") || run.contains("}}") {
            out.push_str("{{`");
            out.push_str(run);
            out.push_str("`}}");
        } else {
            out.push_str(run);
        }
        rest = &rest[start + run_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::escape_for_helm;

    #[test]
    fn helm_escaping_covers_both_delimiters() {
        assert_eq!(escape_for_helm("a {{ b }} c"), "a {{`{{`}} b {{`}}`}} c");
        assert_eq!(escape_for_helm("}} {{"), "{{`}}`}} {{`{{`}}");
        assert_eq!(escape_for_helm("no braces { } {}"), "no braces { } {}");
        assert_eq!(escape_for_helm("{{{"), "{{`{{{`}}");
        assert_eq!(escape_for_helm(r#"{"a":{}}"#), r#"{"a":{{`{}}`}}"#);
    }
}
