//! Renderings of diagnostics: `text` for people, `json` for tools, `github`
//! for workflow-command annotations on pull requests.

mod github;
mod json;
mod text;

pub use github::render_github;
pub use json::render_json;
pub use text::{render_text, summary_line};

/// Joins the directory the user named with a project-relative file, so paths
/// printed in diagnostics can be opened from where cortex was run. A prefix
/// ending in `:` names a git revision (`origin/main:` → `origin/main:agents/a.yaml`).
pub(crate) fn display_path(prefix: &str, file: &str) -> String {
    if prefix.ends_with(':') {
        return format!("{prefix}{file}");
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() || prefix == "." {
        file.to_string()
    } else {
        format!("{prefix}/{file}")
    }
}
