//! The pull-request comment: a summary table of creates, updates and
//! deletes per kind, then one collapsible `<details>` per changed object
//! with its changed fields (and the spec lines that caused them) and its
//! unified diff.
//!
//! GitHub refuses comments over 65,535 characters. When the whole comment
//! would be longer, the largest diffs are shortened (every diff is cut to
//! the longest length that fits), then field lists, then the last objects
//! are left out — the header and the table are never cut, and the comment
//! says what was shortened.

use std::fmt::Write;

use crate::plan::render::{inline_value, sources_text};
use crate::plan::{Action, Change, Plan, Realm};

/// GitHub's limit on the length of a comment, in characters.
pub const GITHUB_COMMENT_LIMIT: usize = 65_535;

/// How much of each object to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Budget {
    /// Diff lines per object.
    diff_lines: usize,
    /// Field lines per object.
    field_lines: usize,
    /// Objects shown.
    objects: usize,
}

/// Renders a plan as a Markdown comment of at most `limit` characters
/// (use [`GITHUB_COMMENT_LIMIT`]).
pub fn render_markdown(plan: &Plan, limit: usize) -> String {
    let changed: Vec<&Change> = plan.changed().collect();
    let most_lines = changed
        .iter()
        .map(|c| c.diff.lines().count())
        .max()
        .unwrap_or(0);
    let most_fields = changed.iter().map(|c| c.fields.len()).max().unwrap_or(0);
    let full = Budget {
        diff_lines: most_lines,
        field_lines: most_fields,
        objects: changed.len(),
    };
    let fits = |b: Budget| render(plan, &changed, b, full).chars().count() <= limit;
    if fits(full) {
        return render(plan, &changed, full, full);
    }
    // Shorten the largest diffs first, then field lists, then leave out
    // the last objects: each step keeps as much as fits.
    let budget = if fits(Budget {
        diff_lines: 0,
        ..full
    }) {
        Budget {
            diff_lines: largest(most_lines, |n| {
                fits(Budget {
                    diff_lines: n,
                    ..full
                })
            }),
            ..full
        }
    } else {
        let no_diffs = Budget {
            diff_lines: 0,
            ..full
        };
        if fits(Budget {
            field_lines: 0,
            ..no_diffs
        }) {
            Budget {
                field_lines: largest(most_fields, |n| {
                    fits(Budget {
                        field_lines: n,
                        ..no_diffs
                    })
                }),
                ..no_diffs
            }
        } else {
            let bare = Budget {
                field_lines: 0,
                ..no_diffs
            };
            Budget {
                objects: largest(changed.len(), |n| fits(Budget { objects: n, ..bare })),
                ..bare
            }
        }
    };
    render(plan, &changed, budget, full)
}

/// The largest `n` in `0..=max` for which `ok(n)` holds (`ok` is monotonic
/// and `ok(0)` is assumed).
fn largest(max: usize, ok: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ok(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

fn render(plan: &Plan, changed: &[&Change], budget: Budget, full: Budget) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}: {} → {}\n",
        plan.title,
        code(&plan.from.to_string()),
        code(&plan.to.to_string())
    );
    let _ = writeln!(
        out,
        "Project **{}** · {} · namespace {}\n",
        escape(&plan.project),
        plan.environment
            .as_deref()
            .map_or("no environment".to_string(), |e| format!(
                "environment **{}**",
                escape(e)
            )),
        code(&plan.namespace)
    );
    let s = &plan.summary;
    if !s.has_changes() {
        let _ = writeln!(out, "**No changes.** {} objects unchanged.", s.unchanged);
        return out;
    }
    let _ = writeln!(
        out,
        "**Plan: {} to create, {} to update, {} to delete, {} unchanged.**\n",
        s.create, s.update, s.delete, s.unchanged
    );
    out.push_str("| Target | Kind | Create | Update | Delete | Unchanged |\n");
    out.push_str("|---|---|---:|---:|---:|---:|\n");
    for (target, kind, counts) in plan.counts_by_kind() {
        let target = match target {
            Realm::Kubernetes => "Kubernetes",
            Realm::Runtime => "runtime",
        };
        let _ = writeln!(
            out,
            "| {target} | {} | {} | {} | {} | {} |",
            escape(&kind),
            counts.create,
            counts.update,
            counts.delete,
            counts.unchanged
        );
    }
    out.push('\n');
    for change in changed.iter().take(budget.objects) {
        section(change, budget, &mut out);
    }
    if budget != full {
        let mut cuts = Vec::new();
        if budget.diff_lines < full.diff_lines {
            cuts.push(format!(
                "diffs longer than {} lines are cut",
                budget.diff_lines
            ));
        }
        if budget.field_lines < full.field_lines {
            cuts.push(format!(
                "field lists longer than {} are cut",
                budget.field_lines
            ));
        }
        if budget.objects < full.objects {
            cuts.push(format!(
                "{} changed objects are not shown",
                full.objects - budget.objects
            ));
        }
        let _ = writeln!(
            out,
            "> [!NOTE]\n> Shortened to fit GitHub's {GITHUB_COMMENT_LIMIT}-character comment limit: {}. \
             Run `{}` locally (or `--format json`) for the whole plan.",
            cuts.join("; "),
            plan.title
        );
    }
    out
}

fn section(change: &Change, budget: Budget, out: &mut String) {
    let what = match change.action {
        Action::Update => format!(
            "update, {} field{}",
            change.fields.len(),
            if change.fields.len() == 1 { "" } else { "s" }
        ),
        other => other.as_str().to_string(),
    };
    let source = change
        .source
        .as_ref()
        .map(|s| format!(" · <code>{}</code>", html(&s.to_string())))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<details><summary><code>{} {}</code> — {what}{source}</summary>\n",
        change.action.sign(),
        html(&change.id.to_string())
    );
    for field in change.fields.iter().take(budget.field_lines) {
        let sources = if field.sources.is_empty() {
            String::new()
        } else {
            format!(" — {}", code(&sources_text(&field.sources)))
        };
        let _ = writeln!(
            out,
            "- {}: {} → {}{sources}",
            code(&field.path),
            code(&inline_value(field.old.as_ref())),
            code(&inline_value(field.new.as_ref())),
        );
    }
    let hidden_fields = change.fields.len().saturating_sub(budget.field_lines);
    if hidden_fields > 0 {
        let _ = writeln!(out, "- … {hidden_fields} more fields");
    }
    if !change.fields.is_empty() {
        out.push('\n');
    }
    if budget.diff_lines > 0 && !change.diff.is_empty() {
        let lines: Vec<&str> = change.diff.lines().collect();
        let shown = lines.len().min(budget.diff_lines);
        let body = lines[..shown].join("\n");
        let fence = "`".repeat(longest_run(&body, '`').max(2) + 1);
        let _ = writeln!(out, "{fence}diff\n{body}\n{fence}");
        if shown < lines.len() {
            let _ = writeln!(out, "\n… {} more diff lines", lines.len() - shown);
        }
        out.push('\n');
    }
    out.push_str("</details>\n\n");
}

/// Markdown inline code that survives backticks inside.
fn code(text: &str) -> String {
    let fence = "`".repeat(longest_run(text, '`') + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for ch in text.chars() {
        run = if ch == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// Escapes text inside inline HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escapes text for Markdown.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' | '*' | '_' | '`' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_survive_backticks() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
    }

    #[test]
    fn largest_finds_the_boundary() {
        assert_eq!(largest(100, |n| n <= 37), 37);
        assert_eq!(largest(100, |_| true), 100);
        assert_eq!(largest(100, |n| n == 0), 0);
    }
}
