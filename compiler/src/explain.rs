//! `cortex explain`: a resolved spec as YAML, each value followed by the
//! file, line and spec of the inheritance chain that set it.

use crate::node::{Node, Value};
use crate::resolve::ResolvedSpec;

/// Column where provenance comments start (further right for long lines).
const COMMENT_COLUMN: usize = 44;

/// Renders `spec` with a provenance comment on every scalar.
pub fn explain(spec: &ResolvedSpec, path_prefix: &str) -> String {
    let mut lines: Vec<(String, Option<String>)> = Vec::new();
    lines.push((
        format!("# {} ({})", spec.id(), display(path_prefix, &spec.file)),
        None,
    ));
    if spec.chain.len() > 1 {
        lines.push((format!("# extends: {}", spec.chain.join(" → ")), None));
    }
    emit_map_body(&spec.node, 0, path_prefix, &mut lines, None);
    let width = lines
        .iter()
        .filter(|(_, c)| c.is_some())
        .map(|(l, _)| l.chars().count())
        .filter(|w| *w < 100)
        .max()
        .unwrap_or(0)
        .max(COMMENT_COLUMN - 2);
    let mut out = String::new();
    for (line, comment) in lines {
        out.push_str(&line);
        if let Some(c) = comment {
            let pad = (width + 2).saturating_sub(line.chars().count()).max(2);
            out.push_str(&" ".repeat(pad));
            out.push_str("# ");
            out.push_str(&c);
        }
        out.push('\n');
    }
    out
}

fn display(prefix: &str, file: &str) -> String {
    crate::diagnostic::render::display_path(prefix, file)
}

fn origin(node: &Node, prefix: &str) -> String {
    format!(
        "{}:{} ({})",
        display(prefix, &node.prov.span.file),
        node.prov.span.line,
        node.prov.spec
    )
}

type Lines = Vec<(String, Option<String>)>;

/// Emits the entries of a map at `indent`; `first_prefix` replaces the
/// indentation of the first line (for `- ` list items).
fn emit_map_body(
    node: &Node,
    indent: usize,
    prefix: &str,
    out: &mut Lines,
    first_prefix: Option<String>,
) {
    let Value::Map(map) = &node.value else { return };
    let mut lead = first_prefix;
    for entry in map {
        let pad = lead.take().unwrap_or_else(|| " ".repeat(indent));
        let key = scalar_text(&Value::Str(entry.key.clone()));
        emit_value(&entry.value, &format!("{pad}{key}:"), indent, prefix, out);
    }
}

fn emit_value(node: &Node, head: &str, indent: usize, prefix: &str, out: &mut Lines) {
    match &node.value {
        Value::Map(map) if !map.is_empty() => {
            out.push((head.to_string(), None));
            emit_map_body(node, indent + 2, prefix, out, None);
        }
        Value::Seq(items) if !items.is_empty() => {
            out.push((head.to_string(), None));
            for item in items {
                let dash = format!("{}- ", " ".repeat(indent + 2));
                match &item.value {
                    Value::Map(m) if !m.is_empty() => {
                        emit_map_body(item, indent + 4, prefix, out, Some(dash))
                    }
                    Value::Seq(s) if !s.is_empty() => {
                        emit_value(item, dash.trim_end(), indent + 2, prefix, out);
                    }
                    _ => emit_scalar(item, &dash, indent + 4, prefix, out),
                }
            }
        }
        _ => emit_scalar(node, &format!("{head} "), indent + 2, prefix, out),
    }
}

fn emit_scalar(node: &Node, head: &str, indent: usize, prefix: &str, out: &mut Lines) {
    let comment = Some(origin(node, prefix));
    match &node.value {
        Value::Str(s) if s.contains('\n') => {
            let indicator = if s.ends_with('\n') { "|" } else { "|-" };
            out.push((format!("{head}{indicator}"), comment));
            for line in s.trim_end_matches('\n').split('\n') {
                out.push((
                    format!("{}{line}", " ".repeat(indent))
                        .trim_end()
                        .to_string(),
                    None,
                ));
            }
        }
        Value::Map(_) => out.push((format!("{head}{{}}"), comment)),
        Value::Seq(_) => out.push((format!("{head}[]"), comment)),
        other => out.push((format!("{head}{}", scalar_text(other)), comment)),
    }
}

/// A scalar as YAML: plain when unambiguous, double-quoted (JSON) otherwise.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.is_finite() {
                format!("{f:.1}")
            } else {
                f.to_string()
            }
        }
        Value::Str(s) if crate::yaml_out::is_plain_safe(s) => s.clone(),
        Value::Str(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Seq(_) | Value::Map(_) => String::new(),
    }
}
