//! rustc-style text: the message, the code, the source line with a caret
//! under the exact text, secondary labels, help and notes.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet, renderer::DecorStyle};

use super::display_path;
use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::span::{SourceMap, Span, char_to_byte};

/// Renders every diagnostic as rustc does. `path_prefix` is prepended to
/// project-relative paths; `color` adds ANSI styles.
pub fn render_text(
    diags: &Diagnostics,
    files: &SourceMap,
    path_prefix: &str,
    color: bool,
) -> String {
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    }
    .decor_style(DecorStyle::Ascii);
    let mut out = String::new();
    for diag in diags {
        out.push_str(&render_one(diag, files, path_prefix, &renderer));
        out.push_str("\n\n");
    }
    out
}

/// The closing line, e.g. `error: 2 errors and 1 warning`.
pub fn summary_line(diags: &Diagnostics) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    match (diags.error_count(), diags.warning_count()) {
        (0, 0) => "no problems found".to_string(),
        (0, w) => format!("warning: {}", plural(w, "warning")),
        (e, 0) => format!("error: {}", plural(e, "error")),
        (e, w) => format!("error: {} and {}", plural(e, "error"), plural(w, "warning")),
    }
}

struct Located {
    span: Span,
    path: String,
    range: std::ops::Range<usize>,
}

fn locate<'f>(span: &Span, files: &'f SourceMap, prefix: &str) -> Option<(Located, &'f str)> {
    let text = files.text(&span.file)?;
    let start = char_to_byte(text, span.start as usize);
    let mut end = char_to_byte(text, span.end as usize).max(start);
    if end == start {
        // Point at one character (or at the end of the file).
        end = text[start..]
            .chars()
            .next()
            .map_or(start, |c| start + c.len_utf8());
    }
    let located = Located {
        span: span.clone(),
        path: display_path(prefix, &span.file),
        range: start..end,
    };
    Some((located, text))
}

fn render_one(diag: &Diagnostic, files: &SourceMap, prefix: &str, renderer: &Renderer) -> String {
    let level = match diag.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let mut title_text = diag.message.clone();
    if let Some(pointer) = &diag.pointer
        && !pointer.is_empty()
    {
        title_text.push_str(&format!(" (at `{pointer}`)"));
    }
    let mut group = Group::with_title(level.clone().primary_title(title_text).id(diag.code.0));
    let primary = diag.span.as_ref().and_then(|s| locate(s, files, prefix));
    let mut trailing: Vec<Group<'_>> = Vec::new();
    match primary {
        Some((loc, text)) => {
            let mut snippet = Snippet::source(text)
                .path(loc.path.clone())
                .fold(true)
                .annotation(
                    AnnotationKind::Primary
                        .span(loc.range.clone())
                        .label(diag.label.clone().unwrap_or_default()),
                );
            for label in &diag.labels {
                if label.span.file == loc.span.file
                    && let Some((other, _)) = locate(&label.span, files, prefix)
                {
                    snippet = snippet.annotation(
                        AnnotationKind::Context
                            .span(other.range)
                            .label(label.message.clone()),
                    );
                }
            }
            group = group.element(snippet);
            for label in diag.labels.iter().filter(|l| l.span.file != loc.span.file) {
                if let Some((other, text)) = locate(&label.span, files, prefix) {
                    trailing.push(
                        Group::with_title(Level::NOTE.secondary_title(label.message.clone()))
                            .element(
                                Snippet::source(text)
                                    .path(other.path)
                                    .fold(true)
                                    .annotation(AnnotationKind::Context.span(other.range)),
                            ),
                    );
                }
            }
        }
        None => {
            if let Some(span) = &diag.span {
                group = group.element(Level::NOTE.message(format!(
                    "in {}:{}:{}",
                    display_path(prefix, &span.file),
                    span.line,
                    span.col
                )));
            }
        }
    }
    for note in &diag.notes {
        group = group.element(Level::NOTE.message(note.clone()));
    }
    if let Some(help) = &diag.help {
        group = group.element(Level::HELP.message(help.clone()));
    }
    let mut report = vec![group];
    report.extend(trailing);
    renderer.render(&report).to_string()
}
