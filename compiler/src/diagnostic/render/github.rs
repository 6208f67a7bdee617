//! GitHub Actions workflow commands (`::error file=…,line=…,col=…::…`), which
//! GitHub shows as annotations on the pull request's changed lines.

use super::display_path;
use crate::diagnostic::{Diagnostics, Severity};

/// One workflow command per diagnostic. Paths are `path_prefix/file`, which
/// should be relative to the repository root for the annotation to attach.
pub fn render_github(diags: &Diagnostics, path_prefix: &str) -> String {
    let mut out = String::new();
    for d in diags {
        let command = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = Vec::new();
        if let Some(span) = &d.span {
            props.push(format!(
                "file={}",
                escape_property(&display_path(path_prefix, &span.file))
            ));
            props.push(format!("line={}", span.line));
            props.push(format!("col={}", span.col));
        }
        props.push(format!(
            "title={}",
            escape_property(&format!("{} {}", d.code, d.message))
        ));
        let mut body = d.message.clone();
        if let Some(label) = &d.label {
            body.push_str(&format!(": {label}"));
        }
        for note in &d.notes {
            body.push_str(&format!("\nnote: {note}"));
        }
        if let Some(help) = &d.help {
            body.push_str(&format!("\nhelp: {help}"));
        }
        out.push_str(&format!(
            "::{command} {}::{}\n",
            props.join(","),
            escape_data(&body)
        ));
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
