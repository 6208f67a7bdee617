//! Renderings of a plan: `text` for a terminal, `markdown` for a pull
//! request comment, `json` for tools.

pub mod json;
pub mod markdown;
pub mod text;

use serde_json::Value;

use crate::plan::source_ref::SourceRef;

/// Longest value shown inline in a field line; the unified diff has the rest.
pub const MAX_INLINE_CHARS: usize = 60;

/// A field's value as one short line: `small`, `3`, `"  padded "`,
/// `(none)`, `(12 lines)`, `{"a":1,…}`.
pub fn inline_value(value: Option<&Value>) -> String {
    let text = match value {
        None => return "(none)".to_string(),
        Some(Value::String(s)) if s.contains('\n') => {
            return format!("({} lines)", s.lines().count());
        }
        Some(Value::String(s)) if s.len() >= 32 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            // A content hash: its first characters tell two apart.
            return format!("{}…", &s[..12]);
        }
        Some(Value::String(s)) => {
            let plain = !s.is_empty()
                && s.trim() == s
                && !s.contains('→')
                && !s.chars().any(char::is_control);
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Some(Value::Array(items)) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let items: Vec<String> = items.iter().map(|i| inline_value(Some(i))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(other) => other.to_string(),
    };
    shorten(&text, MAX_INLINE_CHARS)
}

/// `text` cut to `max` characters with an ellipsis.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `environments/prod.yaml:12, environments/prod.yaml:3 (values.model)`.
pub fn sources_text(sources: &[SourceRef]) -> String {
    sources
        .iter()
        .map(|s| {
            if s.field.starts_with("values.") {
                format!("{s} ({})", s.field)
            } else {
                s.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inline_values_are_short_and_unambiguous() {
        assert_eq!(inline_value(Some(&json!("large"))), "large");
        assert_eq!(inline_value(Some(&json!(" x"))), "\" x\"");
        assert_eq!(inline_value(Some(&json!(""))), "\"\"");
        assert_eq!(inline_value(Some(&json!(3))), "3");
        assert_eq!(inline_value(None), "(none)");
        assert_eq!(inline_value(Some(&json!("ab".repeat(32)))), "abababababab…");
        assert_eq!(inline_value(Some(&json!(["a", 1, " b"]))), "[a, 1, \" b\"]");
        assert_eq!(inline_value(Some(&json!("a\nb\n"))), "(2 lines)");
        let long = inline_value(Some(&json!("x".repeat(100))));
        assert_eq!(long.chars().count(), MAX_INLINE_CHARS);
        assert!(long.ends_with('…'));
    }
}
