//! `cortex diff [DIR] --from REF [--to REF]`: the plan between two
//! revisions, for pull-request review.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use cortex_compiler::Options;
use cortex_compiler::diagnostic::render;
use cortex_reconciler::plan::render::{json::render_json, markdown, text::render_text};
use cortex_reconciler::{At, DesiredError, PlanOptions, desired_pair, plan_between};

use crate::cli::PlanFormat;
use crate::output;

/// What to compare and how to print it.
pub struct Request {
    pub from: String,
    pub to: Option<String>,
    pub env: Option<String>,
    pub format: PlanFormat,
    pub detailed_exitcode: bool,
    pub unified: bool,
}

pub fn run(dir: &Path, request: Request) -> anyhow::Result<ExitCode> {
    let options = Options {
        env: request.env.clone(),
    };
    let from = At::Revision(request.from.clone());
    let to = request.to.clone().map_or(At::WorkTree, At::Revision);
    let (old, new) = desired_pair(dir, &from, &to, &options);
    let (old, new) = match (old, new) {
        (Ok(old), Ok(new)) => (old, new),
        (old, new) => {
            let failures: Vec<DesiredError> =
                [old.err(), new.err()].into_iter().flatten().collect();
            report_failures(dir, &failures, request.format)?;
            return Ok(ExitCode::from(1));
        }
    };
    let plan = plan_between(&old, &new, &PlanOptions::default());
    let text = match request.format {
        PlanFormat::Text => render_text(&plan, request.unified),
        PlanFormat::Markdown => markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT),
        PlanFormat::Json => render_json(&plan),
    };
    anstream::stdout().write_all(text.as_bytes())?;
    // Freeing both compiled projects would only delay the exit.
    std::mem::forget((old, new));
    Ok(if request.detailed_exitcode && plan.summary.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Says which side failed and why, in the requested format.
pub(crate) fn report_failures(
    dir: &Path,
    failures: &[DesiredError],
    format: PlanFormat,
) -> anyhow::Result<()> {
    let dir_prefix = output::prefix_of(dir);
    let prefix_for = |revision: &cortex_reconciler::plan::Revision| match &revision.commit {
        Some(_) if dir_prefix.is_empty() => format!("{}:", revision.name),
        Some(_) => format!("{}:{}/", revision.name, dir_prefix.trim_end_matches('/')),
        None => dir_prefix.clone(),
    };
    match format {
        PlanFormat::Text => {
            for failure in failures {
                output::error_line(&failure.to_string())?;
                if let DesiredError::Compile {
                    revision,
                    diagnostics,
                    files,
                } = failure
                {
                    let mut err = anstream::stderr();
                    write!(
                        err,
                        "{}",
                        render::render_text(diagnostics, files, &prefix_for(revision), true)
                    )?;
                }
            }
        }
        PlanFormat::Markdown => {
            let mut out = String::from("### cortex diff: cannot compare\n\n");
            for failure in failures {
                out.push_str(&format!("**{failure}**\n\n"));
                if let DesiredError::Compile {
                    revision,
                    diagnostics,
                    files,
                } = failure
                {
                    let text =
                        render::render_text(diagnostics, files, &prefix_for(revision), false);
                    let fence = "`".repeat(longest_backtick_run(&text).max(2) + 1);
                    out.push_str(&format!("{fence}text\n{}\n{fence}\n\n", text.trim_end()));
                }
            }
            std::io::stdout().write_all(out.as_bytes())?;
        }
        PlanFormat::Json => {
            let errors: Vec<serde_json::Value> = failures
                .iter()
                .map(|failure| match failure {
                    DesiredError::Compile {
                        revision,
                        diagnostics,
                        ..
                    } => serde_json::json!({
                        "revision": revision,
                        "message": failure.to_string(),
                        "diagnostics": serde_json::from_str::<serde_json::Value>(
                            &render::render_json(diagnostics, &prefix_for(revision))
                        ).unwrap_or_default(),
                    }),
                    other => serde_json::json!({ "message": other.to_string() }),
                })
                .collect();
            let doc = serde_json::json!({
                "format_version": cortex_reconciler::plan::FORMAT_VERSION,
                "errors": errors,
            });
            let mut text = serde_json::to_string_pretty(&doc)?;
            text.push('\n');
            std::io::stdout().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}
