//! The terminal rendering: one line per changed object, one per changed
//! field with the spec lines that caused it, then the totals. Colour is
//! written as ANSI escapes; the caller's stream strips them when colour is
//! off (NO_COLOR, not a terminal).

use std::fmt::Write;

use crate::plan::render::{inline_value, sources_text};
use crate::plan::{Action, Change, Plan, Realm};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";

fn colour(action: Action) -> &'static str {
    match action {
        Action::Create => "\x1b[32m",
        Action::Update => "\x1b[33m",
        Action::Delete => "\x1b[31m",
        Action::Unchanged => "",
    }
}

/// Renders a plan for a terminal. With `unified`, each change is followed
/// by its unified YAML diff.
pub fn render_text(plan: &Plan, unified: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{BOLD}{}{RESET} {} → {}",
        plan.title, plan.from, plan.to
    );
    let _ = writeln!(
        out,
        "{DIM}project {} · {} · namespace {}{RESET}",
        plan.project,
        plan.environment
            .as_deref()
            .map_or("no environment".to_string(), |e| format!("environment {e}")),
        plan.namespace
    );
    for (target, title) in [
        (Realm::Kubernetes, "Kubernetes objects"),
        (Realm::Runtime, "Runtime objects"),
    ] {
        let changed: Vec<&Change> = plan.changed().filter(|c| c.id.target == target).collect();
        if changed.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{BOLD}{title}{RESET}");
        for change in changed {
            change_text(change, unified, &mut out);
        }
    }
    let s = &plan.summary;
    if s.has_changes() {
        let _ = writeln!(
            out,
            "\n{BOLD}Plan:{RESET} {} to create, {} to update, {} to delete, {} unchanged.",
            s.create, s.update, s.delete, s.unchanged
        );
    } else {
        let _ = writeln!(
            out,
            "\n{BOLD}No changes.{RESET} {} objects unchanged.",
            s.unchanged
        );
    }
    out
}

fn change_text(change: &Change, unified: bool, out: &mut String) {
    let c = colour(change.action);
    let source = change.source.as_ref().map(|s| match change.action {
        Action::Delete => format!("  {DIM}(was {s}){RESET}"),
        _ => format!("  {DIM}({s}){RESET}"),
    });
    let _ = writeln!(
        out,
        "  {c}{} {}{RESET}{}",
        change.action.sign(),
        change.id,
        source.unwrap_or_default()
    );
    for field in &change.fields {
        let sources = if field.sources.is_empty() {
            String::new()
        } else {
            format!("   {DIM}{}{RESET}", sources_text(&field.sources))
        };
        let _ = writeln!(
            out,
            "      {}: \x1b[31m{}{RESET} → \x1b[32m{}{RESET}{sources}",
            field.path,
            inline_value(field.old.as_ref()),
            inline_value(field.new.as_ref()),
        );
    }
    if unified && !change.diff.is_empty() {
        for line in change.diff.lines() {
            let colour = match line.chars().next() {
                _ if line.starts_with("+++") || line.starts_with("---") => BOLD,
                Some('+') => "\x1b[32m",
                Some('-') => "\x1b[31m",
                Some('@') => "\x1b[36m",
                _ => "",
            };
            let _ = writeln!(out, "      {colour}{line}{RESET}");
        }
    }
}
