//! Machine-readable diagnostics: one JSON object, `format_version` 1.

use serde::Serialize;

use super::display_path;
use crate::diagnostic::{Diagnostic, Diagnostics};

/// Version of the JSON layout; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct Report<'a> {
    format_version: u32,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<JsonDiagnostic<'a>>,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    #[serde(flatten)]
    diagnostic: &'a Diagnostic,
    /// The file as the user can open it (project directory prefix applied).
    path: Option<String>,
}

/// Renders all diagnostics as one pretty-printed JSON document.
pub fn render_json(diags: &Diagnostics, path_prefix: &str) -> String {
    let report = Report {
        format_version: FORMAT_VERSION,
        errors: diags.error_count(),
        warnings: diags.warning_count(),
        diagnostics: diags
            .iter()
            .map(|d| JsonDiagnostic {
                diagnostic: d,
                path: d.span.as_ref().map(|s| display_path(path_prefix, &s.file)),
            })
            .collect(),
    };
    let mut out =
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    out.push('\n');
    out
}
