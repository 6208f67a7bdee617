//! `spec.manifests`: plain Kubernetes objects shipped with the project.
//!
//! Each matched file is templated like the specs (`{{ values.x }}`,
//! `{{ env.name }}`, `{{ project.namespace }}`), split into its YAML
//! documents, and each object gets the ownership labels and, when its kind
//! is namespaced and it names no namespace, the project's namespace. Known
//! kinds are checked against their Kubernetes type. Objects keep their own
//! names; one that is also rendered by cortex is an error.

use std::collections::BTreeSet;
use std::sync::Arc;

use globset::GlobBuilder;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::bundle::Object;
use crate::bundle::Project;
use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use crate::render::agent::{PROJECT_LABEL, label_value};
use crate::resolve::Resolved;
use crate::source::{Source, check_relative};
use crate::span::Span;

/// Kinds without a namespace (besides CustomResourceDefinitions' own
/// cluster-scoped kinds).
const CLUSTER_SCOPED: [&str; 12] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
];

/// The objects of `spec.manifests`; `rendered` gives the identities of
/// cortex's own objects, which a manifest may not redefine (made only when
/// the project has manifests).
pub fn manifests(
    resolved: &Resolved,
    source: &dyn Source,
    project: &Project,
    rendered: impl FnOnce() -> BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Vec<Object> {
    // Their path diagnostics were made when the project was validated.
    let files = matched_files(resolved, source, &mut Diagnostics::new());
    if files.is_empty() {
        return Vec::new();
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(crate::template::TEMPLATE_FUEL * 20));
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    let ctx = minijinja::Value::from(minijinja::value::Serde(&crate::template::context(resolved)));
    let mut bodies: Vec<(Span, Value)> = Vec::new();
    for file in files {
        let at = Span::file_only(file.clone());
        let text = match source.read(&file).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                diags.push(
                    Diagnostic::error(
                        codes::RENDER_NOT_AN_OBJECT,
                        format!("manifest {file} is not UTF-8"),
                    )
                    .at(&at),
                );
                continue;
            }
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        codes::RENDER_NOT_AN_OBJECT,
                        format!("cannot read manifest {file}: {e}"),
                    )
                    .at(&at),
                );
                continue;
            }
        };
        let templated = match env.render_str(&text, &ctx) {
            Ok(t) => t,
            Err(e) => {
                let at = Span {
                    line: e.line().map_or(1, |l| l as u32),
                    ..at
                };
                diags.push(
                    Diagnostic::error(codes::RENDER_TEMPLATE, format!("manifest {file} failed to template"))
                        .at(&at)
                        .label(e.detail().map_or_else(|| e.kind().to_string(), str::to_string))
                        .help("manifests see `values`, `env` and `project`, as specs do; write literal braces as `{{ '{{' }}`"),
                );
                continue;
            }
        };
        match crate::yaml::parse_json_located(&file, &templated) {
            Ok(docs) => bodies.extend(docs.into_iter().filter(|(_, d)| !d.is_null())),
            Err(d) => diags.push(*d),
        }
    }
    let cluster_kinds: BTreeSet<String> = bodies
        .iter()
        .filter(|(_, b)| {
            b["kind"] == "CustomResourceDefinition"
                && b.pointer("/spec/scope") == Some(&json!("Cluster"))
        })
        .filter_map(|(_, b)| {
            b.pointer("/spec/names/kind")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let mut seen = rendered();
    let mut out = Vec::new();
    for (at, mut body) in bodies {
        let file = at.file.clone();
        let field = |b: &Value, p: &str| b.pointer(p).and_then(Value::as_str).map(str::to_string);
        let (Some(api_version), Some(kind), Some(name)) = (
            field(&body, "/apiVersion"),
            field(&body, "/kind"),
            field(&body, "/metadata/name"),
        ) else {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_NOT_AN_OBJECT,
                    format!("a document of manifest {file} is not a Kubernetes object"),
                )
                .at(&at)
                .help("every document needs apiVersion, kind and metadata.name"),
            );
            continue;
        };
        let namespaced = !CLUSTER_SCOPED.contains(&kind.as_str()) && !cluster_kinds.contains(&kind);
        let metadata = &mut body["metadata"];
        if namespaced && metadata.get("namespace").is_none() {
            metadata["namespace"] = json!(project.namespace);
        } else if !namespaced && let Some(m) = metadata.as_object_mut() {
            m.remove("namespace");
        }
        if !metadata["labels"].is_object() {
            metadata["labels"] = json!({});
        }
        let labels = &mut metadata["labels"];
        labels["app.kubernetes.io/managed-by"] = json!("cortex");
        labels["app.kubernetes.io/part-of"] = json!(project.name);
        labels["app.kubernetes.io/instance"] = json!(project.name);
        labels["helm.sh/chart"] = json!(label_value(&format!(
            "{}-{}",
            project.chart_name, project.chart_version
        )));
        labels[PROJECT_LABEL] = json!(project.name);
        let what = format!("{kind} `{name}` of manifest {file}");
        if !crate::render::check::check_object(&body, &|| what.clone(), "manifest", &at, diags) {
            continue;
        }
        let object = Object::new(api_version, kind, name, file.to_string(), None, body);
        if !seen.insert(object.identity()) {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_NOT_AN_OBJECT,
                    format!(
                        "{what} is defined twice (by another manifest or by cortex's own rendering)"
                    ),
                )
                .at(&at)
                .help("give it another name, or leave it to the specs that render it"),
            );
            continue;
        }
        out.push(object);
    }
    out
}

/// The files `spec.manifests` matches, sorted, each once; a pattern that
/// leads outside the project, does not parse or matches nothing is a
/// diagnostic.
pub fn matched_files(
    resolved: &Resolved,
    source: &dyn Source,
    diags: &mut Diagnostics,
) -> Vec<Arc<str>> {
    let Some(patterns) = resolved
        .project
        .node
        .path(&["spec", "manifests"])
        .and_then(|n| n.as_seq())
    else {
        return Vec::new();
    };
    let mut files = BTreeSet::new();
    for node in patterns {
        let Some(pattern) = node.as_str().map(|p| p.trim_start_matches("./")) else {
            continue;
        };
        let span = node.span().clone();
        if check_relative(pattern).is_err() {
            diags.push(
                Diagnostic::error(
                    codes::OUTSIDE_ROOT,
                    format!("manifest pattern `{pattern}` leads outside the project root"),
                )
                .at(&span)
                .label("absolute paths and `..` are not allowed"),
            );
            continue;
        }
        let glob = match GlobBuilder::new(pattern).literal_separator(true).build() {
            Ok(glob) => glob.compile_matcher(),
            Err(e) => {
                diags.push(
                    Diagnostic::error(
                        codes::BAD_GLOB,
                        format!("invalid manifest pattern `{pattern}`"),
                    )
                    .at(&span)
                    .label(e.kind().to_string()),
                );
                continue;
            }
        };
        let listed = source
            .list(&crate::load::literal_prefix(pattern))
            .unwrap_or_default();
        let before = files.len();
        files.extend(listed.into_iter().filter(|p| glob.is_match(p)));
        if files.len() == before {
            diags.push(
                Diagnostic::warning(
                    codes::EMPTY_INCLUDE,
                    format!("manifest pattern `{pattern}` matches no file"),
                )
                .at(&span),
            );
        }
    }
    files.into_iter().map(|f| Arc::from(f.as_str())).collect()
}
