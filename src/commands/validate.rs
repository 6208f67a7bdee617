//! `cortex validate`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use cortex_compiler::{Kind, Options, check};

use crate::cli::DiagnosticFormat;
use crate::output;

pub fn run(dir: &Path, env: Option<String>, format: DiagnosticFormat) -> anyhow::Result<ExitCode> {
    let source = super::open_project(dir)?;
    // A project with templates of its own or shipped manifests is also
    // rendered, so `validate` refuses what `build` would.
    let result = check(&source, &Options { env: env.clone() });
    let prefix = output::prefix_of(dir);
    output::diagnostics(&result.diagnostics, &result.files, &prefix, format)?;
    if result.diagnostics.has_errors() {
        return Ok(ExitCode::from(1));
    }
    if format == DiagnosticFormat::Text
        && let Some(resolved) = &result.resolved
    {
        let count = |k: Kind| resolved.specs.iter().filter(|s| s.kind == k).count();
        let mut out = anstream::stdout();
        writeln!(
            out,
            "\x1b[1;32mvalid\x1b[0m: project `{}`{}: {} agents ({} templates), {} workflows ({} templates), {} topics, {} pools, {} policies, {} alert rules{}",
            resolved.project_name,
            env.map(|e| format!(" (env {e})")).unwrap_or_default(),
            count(Kind::Agent),
            count(Kind::AgentTemplate),
            count(Kind::Workflow),
            count(Kind::WorkflowTemplate),
            count(Kind::Topic),
            count(Kind::ResourcePool),
            count(Kind::AccessPolicy),
            count(Kind::AlertRule),
            match count(Kind::State) {
                0 => String::new(),
                n => format!(", {n} state scopes"),
            },
        )?;
    }
    // Leave freeing the compiled project to the process exit.
    std::mem::forget(result);
    Ok(ExitCode::SUCCESS)
}
