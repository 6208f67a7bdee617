//! Stage 5: render a validated project into Kubernetes objects (from the
//! minijinja templates of `templates/`, a project's own `templates/`
//! overriding one by name) and the runtime configuration. Every object is
//! checked against its Kubernetes type.

pub mod agent;
pub mod check;
pub mod runtime;

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::bundle::{Bundle, Object};
use crate::diagnostic::{Diagnostic, Diagnostics, codes};
use crate::document::Kind;
use crate::resolve::Resolved;
use crate::source::{Source, SourceError};
use crate::validate::pools;

/// The object templates cortex ships, by file name.
pub const DEFAULT_TEMPLATES: &[(&str, &str)] = &[
    (
        "deployment.yaml.j2",
        include_str!("../../../templates/deployment.yaml.j2"),
    ),
    (
        "serviceaccount.yaml.j2",
        include_str!("../../../templates/serviceaccount.yaml.j2"),
    ),
    (
        "configmap.yaml.j2",
        include_str!("../../../templates/configmap.yaml.j2"),
    ),
    (
        "service.yaml.j2",
        include_str!("../../../templates/service.yaml.j2"),
    ),
    (
        "hpa.yaml.j2",
        include_str!("../../../templates/hpa.yaml.j2"),
    ),
    (
        "pdb.yaml.j2",
        include_str!("../../../templates/pdb.yaml.j2"),
    ),
    (
        "runtime-configmap.yaml.j2",
        include_str!("../../../templates/runtime-configmap.yaml.j2"),
    ),
];

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
    fn from_resolved(resolved: &Resolved) -> Project {
        let spec = resolved.project.node.get("spec");
        let chart = |k: &str| {
            spec.and_then(|s| s.path(&["chart", k]))
                .and_then(|n| n.as_str())
                .map(str::to_string)
        };
        Project {
            name: resolved.project_name.clone(),
            namespace: resolved.namespace.clone(),
            environment: resolved.environment.as_ref().map(|e| e.name.clone()),
            chart_name: chart("name").unwrap_or_else(|| resolved.project_name.clone()),
            chart_version: chart("version").unwrap_or_else(|| "0.1.0".to_string()),
            chart_description: chart("description")
                .unwrap_or_else(|| format!("{} — rendered by cortex", resolved.project_name)),
            broker_url: spec
                .and_then(|s| s.str_at(&["targets", "kubernetes", "brokerUrl"]))
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "http://cortex-runtime.{}.svc:{}",
                        resolved.namespace,
                        agent::BROKER_PORT
                    )
                }),
        }
    }

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

/// Renders a validated project. `source` provides the project's own
/// template overrides (`templates/<name>`).
pub fn render(resolved: &Resolved, source: &dyn Source) -> Result<Bundle, Diagnostics> {
    let mut diags = Diagnostics::new();
    let project = Project::from_resolved(resolved);
    let env = match template_environment(source) {
        Ok(env) => env,
        Err(d) => return Err(Diagnostics::from(*d)),
    };
    let pools_by_name: BTreeMap<&str, &crate::resolve::ResolvedSpec> = resolved
        .specs
        .iter()
        .filter(|s| s.kind == Kind::ResourcePool)
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut objects = Vec::new();
    for spec in resolved.specs.iter().filter(|s| s.kind == Kind::Agent) {
        let ctx = agent::context(spec, &project, &pools_by_name);
        let mut wanted = vec![
            "serviceaccount.yaml.j2",
            "configmap.yaml.j2",
            "deployment.yaml.j2",
        ];
        if ctx["service_ports"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
        {
            wanted.push("service.yaml.j2");
        }
        if !ctx["autoscaling"].is_null() {
            wanted.push("hpa.yaml.j2");
        }
        if ctx["pdb"] == json!(true) {
            wanted.push("pdb.yaml.j2");
        }
        for template in wanted {
            render_one(
                &env,
                template,
                &ctx,
                Some(&spec.id()),
                &spec.file,
                &mut objects,
                &mut diags,
            );
        }
    }
    let runtime = runtime::runtime_config(resolved);
    let runtime_ctx = json!({
        "project": project.to_json(),
        "name": format!("{}-runtime", project.name),
        "labels": agent::project_labels(&project),
        "runtime_json": agent::pretty_canonical(&runtime),
    });
    render_one(
        &env,
        "runtime-configmap.yaml.j2",
        &runtime_ctx,
        None,
        &resolved.project.file,
        &mut objects,
        &mut diags,
    );
    if diags.has_errors() {
        diags.finish();
        return Err(diags);
    }
    Ok(Bundle::new(
        project,
        objects,
        runtime,
        pools::usage(&resolved.specs),
    ))
}

fn template_environment(source: &dyn Source) -> Result<Environment<'static>, Box<Diagnostic>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(1_000_000));
    for (name, default) in DEFAULT_TEMPLATES {
        let path = format!("templates/{name}");
        let at = crate::span::Span::file_only(std::sync::Arc::from(path.as_str()));
        let fail = |code, message: String| Box::new(Diagnostic::error(code, message).at(&at));
        let text = match source.read(&path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| fail(codes::NOT_UTF8, format!("{path} is not UTF-8 text")))?,
            Err(SourceError::NotFound(_)) => default.to_string(),
            Err(e) => return Err(fail(codes::FILE_UNREADABLE, e.to_string())),
        };
        env.add_template_owned(name.to_string(), text)
            .map_err(|e| {
                let mut d = fail(
                    codes::RENDER_TEMPLATE,
                    format!("template `{name}` does not parse"),
                );
                d.label = Some(e.to_string());
                d
            })?;
    }
    Ok(env)
}

fn render_one(
    env: &Environment<'_>,
    template: &str,
    ctx: &Value,
    spec: Option<&str>,
    file: &std::sync::Arc<str>,
    objects: &mut Vec<Object>,
    diags: &mut Diagnostics,
) {
    let who = spec.map_or_else(|| "the project".to_string(), str::to_string);
    let at = crate::span::Span::file_only(file.clone());
    let text = match env
        .get_template(template)
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(ctx))))
    {
        Ok(text) => text,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_TEMPLATE,
                    format!("template `{template}` failed for {who}"),
                )
                .at(&at)
                .label(format!("{e:#}"))
                .help("check the template (a project's own templates/ overrides cortex's)"),
            );
            return;
        }
    };
    let name: std::sync::Arc<str> = std::sync::Arc::from(format!("templates/{template}"));
    let nodes = match crate::yaml::parse(&name, &text) {
        Ok(nodes) => nodes,
        Err(d) => {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_NOT_AN_OBJECT,
                    format!("template `{template}` rendered invalid YAML for {who}"),
                )
                .at(&at)
                .label(d.message),
            );
            return;
        }
    };
    let body = match nodes.as_slice() {
        [] => return, // the template chose to render nothing
        [one] => one.to_json(),
        _ => {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_NOT_AN_OBJECT,
                    format!(
                        "template `{template}` rendered {} documents for {who}",
                        nodes.len()
                    ),
                )
                .at(&at)
                .help("render one object per template"),
            );
            return;
        }
    };
    let (Some(api_version), Some(kind), Some(name)) = (
        body.get("apiVersion").and_then(Value::as_str),
        body.get("kind").and_then(Value::as_str),
        body.pointer("/metadata/name").and_then(Value::as_str),
    ) else {
        diags.push(
            Diagnostic::error(codes::RENDER_NOT_AN_OBJECT, format!("template `{template}` rendered an object without apiVersion, kind or metadata.name for {who}"))
                .at(&at),
        );
        return;
    };
    match check::check(&body) {
        Ok(()) => {}
        Err(check::Problem::UnknownFields(paths)) => {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_UNKNOWN_FIELD,
                    format!(
                        "{kind} `{name}` rendered by `{template}` for {who} has unknown fields: {}",
                        paths.join(", ")
                    ),
                )
                .at(&at)
                .help(format!(
                    "{kind} ({api_version}) has no such field; check the spelling in the template"
                )),
            );
            return;
        }
        Err(check::Problem::Invalid(why)) => {
            diags.push(
                Diagnostic::error(
                    codes::RENDER_INVALID_OBJECT,
                    format!(
                        "{kind} `{name}` rendered by `{template}` for {who} is not a valid {kind}"
                    ),
                )
                .at(&at)
                .label(why),
            );
            return;
        }
    }
    objects.push(Object {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace: body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string),
        name: name.to_string(),
        template: template.to_string(),
        spec: spec.map(str::to_string),
        body: sort_keys(&body),
    });
}

/// A copy of `value` with every object's keys sorted.
pub fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// Compact JSON with sorted keys: the canonical form content hashes use.
pub fn canonical_json(value: &Value) -> String {
    serde_json::to_string(&sort_keys(value)).unwrap_or_default()
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
