//! `cortex bench`: times `validate` (load from disk, resolve, template,
//! validate) of a generated project. Figures go in the README.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cortex_compiler::generate::{Shape, write_to};
use cortex_compiler::{Options, WorkTree, compile};

pub fn run(shape: Shape, runs: usize, keep: Option<&Path>) -> anyhow::Result<ExitCode> {
    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = match keep {
        Some(dir) if dir.exists() => {
            anyhow::bail!("{} exists; --keep wants a new directory", dir.display())
        }
        Some(dir) => dir.to_path_buf(),
        None => temp.path().to_path_buf(),
    };
    write_to(shape, &dir).context("cannot write the generated project")?;
    let source = WorkTree::open(&dir)?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "generated project: {} agents (3-level inheritance), {} workflows × {} tasks{}",
        shape.agents,
        shape.workflows,
        shape.tasks,
        keep.map(|d| format!(", kept in {}", d.display()))
            .unwrap_or_default()
    )?;
    let mut timings: Vec<Duration> = Vec::new();
    for run in 0..=runs.max(1) {
        let started = Instant::now();
        let result = compile(&source, &Options::default());
        let elapsed = started.elapsed();
        anyhow::ensure!(
            !result.diagnostics.has_errors(),
            "the generated project did not validate: {} errors (first: {:?})",
            result.diagnostics.error_count(),
            result.diagnostics.iter().next().map(|d| &d.message)
        );
        if run == 0 {
            writeln!(
                out,
                "validate, first run (cold caches): {:.0} ms",
                ms(elapsed)
            )?;
        } else {
            timings.push(elapsed);
        }
    }
    // Where the time goes: each stage on its own, once.
    let mut diags = cortex_compiler::Diagnostics::new();
    let started = Instant::now();
    let docs = cortex_compiler::load::load(&source, &mut diags).context("load")?;
    let load = started.elapsed();
    let started = Instant::now();
    let mut resolved = cortex_compiler::resolve::resolve(docs, None, &mut diags);
    let resolve = started.elapsed();
    let started = Instant::now();
    cortex_compiler::template::render_templates(&mut resolved, &mut diags);
    let template = started.elapsed();
    let started = Instant::now();
    cortex_compiler::validate::validate(&resolved, &mut diags);
    let validate = started.elapsed();
    writeln!(
        out,
        "stages: load {:.0} ms, resolve {:.0} ms, template {:.0} ms, validate {:.0} ms",
        ms(load),
        ms(resolve),
        ms(template),
        ms(validate)
    )?;
    timings.sort();
    let median = timings[timings.len() / 2];
    writeln!(
        out,
        "validate, {} runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        timings.len(),
        ms(timings[0]),
        ms(median),
        ms(timings[timings.len() - 1])
    )?;
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
