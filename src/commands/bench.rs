//! `cortex bench`: times `validate` (load from disk, resolve, template,
//! validate) of a generated project. Figures go in the README.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cortex_compiler::generate::{Shape, write_to};
use cortex_compiler::{Options, WorkTree, compile};

pub fn run(agents: usize, workflows: usize, tasks: usize, runs: usize) -> anyhow::Result<ExitCode> {
    let shape = Shape {
        agents,
        workflows,
        tasks,
    };
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    write_to(shape, dir.path()).context("cannot write the generated project")?;
    let source = WorkTree::open(dir.path())?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "generated project: {agents} agents (3-level inheritance), {workflows} workflows × {tasks} tasks"
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
