//! `cortex build [DIR] [--env E] -o OUT` and `cortex graph`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use cortex_compiler::graph::{GraphFormat, draw_with_states};
use cortex_compiler::validate::pools::{format_cpu, format_memory};
use cortex_compiler::{Kind, Options, compile, find_spec, render::render_output};

use crate::cli::DiagnosticFormat;
use crate::output;

pub fn run(
    dir: &Path,
    env: Option<String>,
    out_dir: &Path,
    format: DiagnosticFormat,
) -> anyhow::Result<ExitCode> {
    let source = super::open_project(dir)?;
    let result = compile(&source, &Options { env: env.clone() });
    let prefix = output::prefix_of(dir);
    output::diagnostics(&result.diagnostics, &result.files, &prefix, format)?;
    let Some(resolved) = result.validated() else {
        return Ok(ExitCode::from(1));
    };
    let bundle = match render_output(resolved, &source) {
        Ok(bundle) => bundle,
        Err(diags) => {
            output::diagnostics(&diags, &result.files, &prefix, format)?;
            return Ok(ExitCode::from(1));
        }
    };
    cortex_reconciler::write::write_build(out_dir, &bundle)?;
    print_summary(&bundle, env, out_dir)?;
    // The process ends here: freeing the compile and the output's objects
    // one by one would only take CPU from the exit (rustc does the same).
    // Writing the output makes little new memory, so freeing the compile
    // earlier, on the other core, gave it nothing to reuse: it was slower
    // and the peak the same.
    std::mem::forget((result, bundle));
    Ok(ExitCode::SUCCESS)
}

fn print_summary(
    bundle: &cortex_compiler::bundle::Output,
    env: Option<String>,
    out_dir: &Path,
) -> anyhow::Result<()> {
    let mut out = anstream::stdout();
    writeln!(
        out,
        "\x1b[1;32mbuilt\x1b[0m project `{}`{} into {} ({} objects, namespace {})",
        bundle.project.name,
        env.map(|e| format!(" (env {e})")).unwrap_or_default(),
        out_dir.display(),
        bundle.objects.len(),
        bundle.project.namespace,
    )?;
    let counts: Vec<String> = bundle
        .counts()
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    writeln!(out, "  objects: {}", counts.join(", "))?;
    let runtime_counts: Vec<String> = [
        ("agents", "agents"),
        ("topics", "topics"),
        ("workflows", "workflows"),
    ]
    .iter()
    .map(|(key, word)| format!("{} {word}", bundle.runtime.count(key)))
    .collect();
    writeln!(out, "  runtime: {}", runtime_counts.join(", "))?;
    for pool in &bundle.pools {
        let cost = pool
            .cost_per_cpu_hour
            .map(|c| format!(", ≈ ${:.3}/h", c * pool.cpu_used() as f64 / 1000.0))
            .unwrap_or_default();
        writeln!(
            out,
            "  pool {}: cpu {}/{}, memory {}/{}, agents {}/{} at maximum scale{cost}",
            pool.pool,
            format_cpu(pool.cpu_used()),
            pool.cpu_capacity.map_or("-".into(), format_cpu),
            format_memory(pool.memory_used()),
            pool.memory_capacity.map_or("-".into(), format_memory),
            pool.agents_used(),
            pool.agents_capacity.map_or("-".into(), |c| c.to_string()),
        )?;
    }
    Ok(())
}

pub fn graph(
    args: &[String],
    env: Option<String>,
    format: GraphFormat,
    execution: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let (dir, reference) = super::dir_and_reference(args, "cortex graph [DIR] workflow/NAME")?;
    let dir = dir.as_path();
    let source = super::open_project(dir)?;
    let result = compile(&source, &Options { env: env.clone() });
    output::diagnostics(
        &result.diagnostics,
        &result.files,
        &output::prefix_of(dir),
        DiagnosticFormat::Text,
    )?;
    let Some(resolved) = result.validated() else {
        return Ok(ExitCode::from(1));
    };
    let spec = find_spec(resolved, reference).map_err(anyhow::Error::msg)?;
    if spec.kind != Kind::Workflow {
        anyhow::bail!("{} is not a Workflow", spec.id());
    }
    let states = match execution {
        Some(id) => match super::workflows::task_states(dir, env, id, &spec.name)? {
            Some(states) => states,
            None => return Ok(ExitCode::from(1)),
        },
        None => Default::default(),
    };
    write!(
        std::io::stdout(),
        "{}",
        draw_with_states(spec, format, &states)
    )?;
    Ok(ExitCode::SUCCESS)
}
