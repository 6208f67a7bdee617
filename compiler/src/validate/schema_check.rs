//! JSON Schema validation of a resolved document, with each error turned
//! into a diagnostic at the exact key or value and a "did you mean" hint.

use jsonschema::error::ValidationErrorKind;

use crate::diagnostic::{Diagnostic, Diagnostics, codes, did_you_mean};
use crate::document::Kind;
use crate::node::{Node, pointer_token};
use crate::schema::Schemas;
use crate::validate::node_json::View;

/// Validates `node` (a whole document of `kind`). Templates are partial by
/// nature, so missing required fields are not reported for them.
pub fn check(kind: Kind, node: &Node, complete: bool, diags: &mut Diagnostics) {
    let schemas = Schemas::get();
    let schema = schemas.kind(kind);
    let instance = View::Tree(node);
    // Most specs are valid: the yes-or-no check stops at nothing and
    // builds no errors.
    if schema.validator.is_valid(instance) {
        return;
    }
    let partial = !complete || matches!(kind, Kind::AgentTemplate | Kind::WorkflowTemplate);
    for error in schema.validator.iter_errors(instance) {
        let pointer = error.instance_path().as_str().to_string();
        let at = node.pointer(&pointer).unwrap_or(node);
        let cursor = schemas.cursor(kind).at_pointer(&pointer);
        let where_ = location(&pointer);
        let diag = match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    let key_span = at
                        .as_map()
                        .and_then(|m| m.entry(key))
                        .map_or(at.span(), |e| &e.key_span);
                    let known = cursor.known_properties();
                    let help = did_you_mean(key, known.iter().copied())
                        .unwrap_or_else(|| format!("known fields here: {}", known.join(", ")));
                    diags.push(
                        Diagnostic::error(
                            codes::SCHEMA_UNKNOWN_FIELD,
                            format!("unknown field `{key}` in {where_}"),
                        )
                        .at(key_span)
                        .pointer(format!("{pointer}/{}", pointer_token(key)))
                        .label("unknown field")
                        .help(help),
                    );
                }
                continue;
            }
            ValidationErrorKind::Required { property } => {
                if partial {
                    continue;
                }
                let name = property.as_str().unwrap_or_default();
                let span = node
                    .pointer_entry(&pointer)
                    .map_or(at.span(), |e| &e.key_span);
                let help = match kind {
                    Kind::Agent | Kind::Workflow if pointer == "/spec" => {
                        format!("set `{name}` in this spec or in a template it extends")
                    }
                    _ => format!("add `{name}: …`"),
                };
                Diagnostic::error(
                    codes::SCHEMA_MISSING_FIELD,
                    format!("missing required field `{name}` in {where_}"),
                )
                .at(span)
                .pointer(pointer.clone())
                .label(format!("`{name}` is required here"))
                .help(help)
            }
            // A bare number where a duration is expected gets the better
            // message of the format check ("write `2s`").
            ValidationErrorKind::Type { .. } if cursor.format() == Some("duration") => continue,
            ValidationErrorKind::Type { kind: expected } => {
                let expected: Vec<String> = match expected {
                    jsonschema::error::TypeKind::Single(t) => vec![t.to_string()],
                    jsonschema::error::TypeKind::Multiple(set) => {
                        set.iter().map(|t| t.to_string()).collect()
                    }
                };
                Diagnostic::error(codes::SCHEMA_WRONG_TYPE, format!("wrong type for {where_}"))
                    .at(at.span())
                    .pointer(pointer.clone())
                    .label(format!(
                        "expected {}, found {}",
                        type_words(&expected),
                        at.type_name()
                    ))
            }
            ValidationErrorKind::Enum { options } => {
                let allowed: Vec<String> = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let written = at.as_str().unwrap_or_default();
                Diagnostic::error(
                    codes::SCHEMA_NOT_ALLOWED,
                    format!("invalid value for {where_}"),
                )
                .at(at.span())
                .pointer(pointer.clone())
                .label(format!("expected one of: {}", allowed.join(", ")))
                .maybe_help(did_you_mean(written, allowed.iter().map(String::as_str)))
            }
            ValidationErrorKind::Constant { expected_value } => Diagnostic::error(
                codes::SCHEMA_NOT_ALLOWED,
                format!("invalid value for {where_}"),
            )
            .at(at.span())
            .pointer(pointer.clone())
            .label(format!("expected {expected_value}")),
            ValidationErrorKind::MinProperties { .. }
            | ValidationErrorKind::MaxProperties { .. }
                if cursor.union().is_some() =>
            {
                let variants = cursor.union().unwrap_or_default();
                union_diagnostic(at, &pointer, &where_, &variants)
            }
            _ => Diagnostic::error(
                codes::SCHEMA_CONSTRAINT,
                format!("invalid value for {where_}"),
            )
            .at(at.span())
            .pointer(pointer.clone())
            .label(error.to_string()),
        };
        diags.push(diag);
    }
}

/// "exactly one of …" for a union mapping with none or several variants.
pub fn union_diagnostic(at: &Node, pointer: &str, where_: &str, variants: &[&str]) -> Diagnostic {
    let present: Vec<&str> = at
        .as_map()
        .map(|m| {
            variants
                .iter()
                .copied()
                .filter(|v| m.get(v).is_some())
                .collect()
        })
        .unwrap_or_default();
    let list = variants
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let label = if present.is_empty() {
        "none is set".to_string()
    } else {
        format!(
            "sets {}",
            present
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        )
    };
    Diagnostic::error(
        codes::SCHEMA_UNION,
        format!("{where_} takes exactly one of {list}"),
    )
    .at(at.span())
    .pointer(pointer.to_string())
    .label(label)
}

/// `spec.env[1].name` from `/spec/env/1/name`, for messages.
pub fn location(pointer: &str) -> String {
    if pointer.is_empty() {
        return "the document".to_string();
    }
    let mut out = String::from("`");
    for token in pointer.split('/').skip(1) {
        if token.parse::<usize>().is_ok() {
            out.push_str(&format!("[{token}]"));
        } else {
            if out.len() > 1 {
                out.push('.');
            }
            out.push_str(&token.replace("~1", "/").replace("~0", "~"));
        }
    }
    out.push('`');
    out
}

/// `a string or an integer`: JSON Schema type names as a person says them.
fn type_words(types: &[String]) -> String {
    types
        .iter()
        .map(|t| match t.as_str() {
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "a boolean",
            "object" => "a mapping",
            "array" => "a list",
            "null" => "null",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" or ")
}
