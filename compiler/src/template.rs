//! Stage 3: compile-time templates (`{{ values.x }}`, `{{ env.name }}`,
//! `{{ project.name }}`) with minijinja and strict undefined.
//!
//! Every string of a resolved spec is evaluated, except under schema nodes
//! marked `x-cortex-verbatim` (an agent's `config`, a topic's `schema`).
//! Runtime references `$(…)` are not template syntax and pass through. A
//! string that is a single `{{ expression }}` at a position where the schema
//! expects a non-string (e.g. `replicas: "{{ values.replicas }}"`) takes the
//! expression's type.

use std::collections::HashMap;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::json;

use crate::diagnostic::{Diagnostic, Diagnostics, codes, did_you_mean};
use crate::node::{Node, Value};
use crate::resolve::Resolved;
use crate::schema::{Cursor, Schemas};

/// Evaluation steps one template string may take (minijinja fuel); enough
/// for any real expression, small enough to stop a runaway loop at once.
pub const TEMPLATE_FUEL: u64 = 50_000;

/// The variables templates see.
pub fn context(resolved: &Resolved) -> serde_json::Value {
    json!({
        "values": resolved.values.to_json(),
        "env": {
            "name": resolved.environment.as_ref().map_or("default", |e| e.name.as_str()),
            "namespace": resolved.namespace,
        },
        "project": {
            "name": resolved.project_name,
            "namespace": resolved.namespace,
        },
    })
}

/// Evaluates the templates of every spec of `resolved` in place.
pub fn render_templates(resolved: &mut Resolved, diags: &mut Diagnostics) {
    use rayon::prelude::*;
    let ctx = context(resolved);
    // Specs are templated independently: spread them over the cores, each
    // worker with an engine (and a cache of evaluated strings) of its own.
    let per_spec: Vec<Diagnostics> = resolved
        .specs
        .par_iter_mut()
        .with_min_len(64)
        .map_init(
            || Engine::new(ctx.clone()),
            |engine, spec| {
                let mut failed = Diagnostics::new();
                template_spec(engine, spec, &mut failed);
                failed
            },
        )
        .collect();
    let mut failed = Diagnostics::new();
    for found in per_spec {
        failed.extend(found);
    }
    resolved
        .template_failures
        .extend(failed.iter().filter_map(|d| d.span.clone()));
    diags.extend(failed);
}

/// Evaluates the template strings of one spec in place.
fn template_spec(
    engine: &mut Engine,
    spec: &mut crate::resolve::ResolvedSpec,
    failed: &mut Diagnostics,
) {
    let cursor = Schemas::get().cursor(spec.kind);
    // Most values hold no template: find the few strings that do, then
    // place only those in the schema.
    let found: Vec<String> = spec
        .node
        .nodes_where(&|node| node.as_str().is_some_and(is_template))
        .into_iter()
        .map(|(pointer, _)| pointer)
        .collect();
    for pointer in found {
        if is_verbatim_path(cursor, &pointer) {
            continue;
        }
        if let Some(node) = node_at_mut(&mut spec.node, &pointer) {
            engine.evaluate_node(node, cursor.at_pointer(&pointer), failed);
        }
    }
}

#[derive(Clone)]
enum Outcome {
    Text(String),
    Typed(serde_json::Value),
    Failed(Failure),
}

#[derive(Clone)]
struct Failure {
    code: crate::diagnostic::Code,
    message: String,
    label: String,
    help: Option<String>,
}

struct Engine {
    env: Environment<'static>,
    ctx: minijinja::Value,
    raw_ctx: serde_json::Value,
    cache: HashMap<(String, bool), Outcome>,
}

impl Engine {
    fn new(ctx: serde_json::Value) -> Engine {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        Engine {
            env,
            ctx: minijinja::Value::from(minijinja::value::Serde(&ctx)),
            raw_ctx: ctx,
            cache: HashMap::new(),
        }
    }

    /// Evaluates the template string at `node` (render_templates finds
    /// them) in place, typed when its schema does not accept a string.
    fn evaluate_node(&mut self, node: &mut Node, schema: Cursor<'_>, diags: &mut Diagnostics) {
        if schema.is_verbatim() {
            return;
        }
        let Value::Str(s) = &mut node.value else {
            return;
        };
        if !is_template(s) {
            return;
        }
        let typed = !accepts_string(schema);
        match self.evaluate(s, typed) {
            Outcome::Text(text) => *s = text,
            Outcome::Typed(value) => *node = Node::from_json(&value, &node.prov),
            Outcome::Failed(f) => diags.push(
                Diagnostic::error(f.code, f.message)
                    .at(node.span())
                    .label(f.label)
                    .maybe_help(f.help),
            ),
        }
    }

    fn evaluate(&mut self, source: &str, typed: bool) -> Outcome {
        let key = (source.to_string(), typed);
        if let Some(hit) = self.cache.get(&key) {
            return hit.clone();
        }
        let outcome = self.evaluate_uncached(source, typed);
        self.cache.insert(key, outcome.clone());
        outcome
    }

    fn evaluate_uncached(&self, source: &str, typed: bool) -> Outcome {
        if typed && let Some(expr) = single_expression(source) {
            return match self.env.compile_expression(expr) {
                Ok(compiled) => match compiled.eval(&self.ctx) {
                    Ok(value) if value.is_undefined() => Outcome::Failed(self.undefined(source)),
                    Ok(value) => match serde_json::to_value(&value) {
                        Ok(json) => Outcome::Typed(json),
                        Err(e) => Outcome::Failed(eval_failure(e.to_string())),
                    },
                    Err(e) => Outcome::Failed(self.failure(source, &e)),
                },
                Err(e) => Outcome::Failed(self.failure(source, &e)),
            };
        }
        match self.env.render_str(source, &self.ctx) {
            Ok(text) => Outcome::Text(text),
            Err(e) => Outcome::Failed(self.failure(source, &e)),
        }
    }

    fn failure(&self, source: &str, err: &minijinja::Error) -> Failure {
        match err.kind() {
            ErrorKind::UndefinedError => self.undefined(source),
            ErrorKind::SyntaxError => Failure {
                code: codes::TEMPLATE_SYNTAX,
                message: "template syntax error".to_string(),
                label: err
                    .detail()
                    .unwrap_or("cannot parse this template")
                    .to_string(),
                help: Some(
                    "to write literal braces use `{{ '{{' }}` or a `{% raw %}…{% endraw %}` block"
                        .to_string(),
                ),
            },
            _ => eval_failure(
                err.detail()
                    .map_or_else(|| err.kind().to_string(), str::to_string),
            ),
        }
    }

    /// Names the first undefined variable of `source`, with a suggestion.
    fn undefined(&self, source: &str) -> Failure {
        let mut missing: Option<(String, Option<String>)> = None;
        if let Ok(template) = self.env.template_from_str(source) {
            let mut names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
            names.sort();
            for name in names {
                let mut at = &self.raw_ctx;
                let mut parts = Vec::new();
                for part in name.split('.') {
                    match at.get(part) {
                        Some(next) => {
                            at = next;
                            parts.push(part);
                        }
                        None => {
                            let candidates: Vec<&str> = at
                                .as_object()
                                .map(|o| o.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            let mut full = parts.clone();
                            full.push(part);
                            let hint =
                                did_you_mean(part, candidates.iter().copied()).or_else(|| {
                                    (!candidates.is_empty()).then(|| {
                                        format!(
                                            "`{}` has: {}",
                                            parts.join("."),
                                            candidates.join(", ")
                                        )
                                    })
                                });
                            missing = Some((full.join("."), hint));
                            break;
                        }
                    }
                }
                if missing.is_some() {
                    break;
                }
            }
        }
        let (name, help) = missing.unwrap_or_else(|| ("a variable".to_string(), None));
        Failure {
            code: codes::TEMPLATE_UNDEFINED,
            message: format!("undefined template variable `{name}`"),
            label: format!("`{name}` is not defined"),
            help: help.or_else(|| {
                Some("templates see `values`, `env` (name, namespace) and `project` (name, namespace)".to_string())
            }),
        }
    }
}

fn eval_failure(detail: String) -> Failure {
    Failure {
        code: codes::TEMPLATE_EVAL,
        message: "template evaluation failed".to_string(),
        label: detail,
        help: None,
    }
}

/// Whether `s` holds template syntax at all (the fast path skips the rest).
pub fn is_template(s: &str) -> bool {
    let bytes = s.as_bytes();
    memchr::memchr_iter(b'{', bytes).any(|at| matches!(bytes.get(at + 1), Some(b'{' | b'%' | b'#')))
}

/// The expression of a string that is exactly one `{{ … }}`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner)
}

/// Whether the schema accepts a string here (or says nothing).
fn accepts_string(schema: Cursor<'_>) -> bool {
    match schema.types() {
        None => true,
        Some(types) => types.contains(&"string"),
    }
}

/// Whether any schema position on the way to `pointer` is verbatim.
fn is_verbatim_path(root: Cursor<'_>, pointer: &str) -> bool {
    let mut cursor = root;
    for token in pointer.split('/').skip(1) {
        if cursor.is_verbatim() {
            return true;
        }
        cursor = cursor.step(token);
    }
    cursor.is_verbatim()
}

/// The node at a JSON pointer, mutably.
fn node_at_mut<'n>(node: &'n mut Node, pointer: &str) -> Option<&'n mut Node> {
    let mut node = node;
    for raw in pointer.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        node = match &mut node.value {
            Value::Map(m) => m.get_mut(&token)?,
            Value::Seq(s) => s.get_mut(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::is_template;

    #[test]
    fn template_markers_are_found_where_contains_finds_them() {
        let texts = [
            "",
            "{",
            "plain",
            "{{ x }}",
            "a {% if %}",
            "{# note #}",
            "{ {",
            "{}",
            "x{",
            "{{",
            "{%",
            "{#",
            "}}",
            "{ # }",
            "json {\"a\": {\"b\": 1}}",
            "ü{{",
        ];
        for text in texts {
            let by_contains = text.contains("{{") || text.contains("{%") || text.contains("{#");
            assert_eq!(is_template(text), by_contains, "{text:?}");
        }
    }
}
