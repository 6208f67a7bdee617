//! `cortex-bench compiler`: times `validate` (load from disk, resolve, template,
//! validate), `build` and `diff` of a generated project, and a Kubernetes
//! plan against the in-process API server. Figures go in
//! docs/benchmarks.md.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::spread::{Spread, min_median_max, ms};

use anyhow::Context;
use cortex_compiler::{Options, WorkTree, compile};
use cortex_reconciler::plan::render::{markdown, text::render_text};
use cortex_reconciler::{At, PlanOptions, desired_pair, plan_between};
use cortex_testkit::generate::{Shape, write_to};

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
    writeln!(out, "validate, {}", Spread::of(&mut timings))?;
    scale_inputs(runs.max(1), &mut out)?;
    let built = build_and_helm(&source, runs.max(1), &mut out)?;
    diff_revisions(shape, &dir, runs.max(1), &mut out)?;
    commands_as_processes(&dir, &built.path().join("out"), runs.max(1), &mut out)?;
    crate::kubernetes::kubernetes_plan(runs.max(1), &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// Times `validate` on the inputs that were quadratic or crashed: one agent
/// with a 1 MiB `metadata.annotations` mapping (about 33,000 keys), and one
/// whose `config` nests as deep as the loader allows, in each construct.
fn scale_inputs(runs: usize, out: &mut impl Write) -> anyhow::Result<()> {
    const PROJECT: &str = "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: scale }\nspec:\n  include: [\"*.yaml\"]\n";
    let mut wide = String::from(
        "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata:\n  name: wide\n  annotations:\n",
    );
    let mut keys = 0;
    while wide.len() < 1024 * 1024 {
        wide.push_str(&format!("    example.com/key-{keys:06}: value-{keys:06}\n"));
        keys += 1;
    }
    wide.push_str("spec:\n  image: x\n");
    // The document, `spec` and `config` hold the four values.
    let levels = cortex_compiler::MAX_YAML_DEPTH - 3;
    let mut deep = String::from(
        "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: { name: deep }\nspec:\n  image: x\n  config:\n",
    );
    deep.push_str(&format!(
        "    flow-sequence: {}1{}\n",
        "[".repeat(levels),
        "]".repeat(levels)
    ));
    deep.push_str(&format!(
        "    flow-mapping: {}1{}\n",
        "{a: ".repeat(levels),
        "}".repeat(levels)
    ));
    deep.push_str(&format!(
        "    block-sequence:\n    {}1\n",
        "- ".repeat(levels)
    ));
    deep.push_str("    block-mapping:");
    for level in 0..levels {
        let value = if level + 1 == levels { " 1" } else { "" };
        deep.push_str(&format!("\n{}k:{value}", " ".repeat(6 + 2 * level)));
    }
    deep.push('\n');
    for (what, file) in [
        (format!("one 1 MiB mapping ({keys} annotations)"), wide),
        (
            format!("the deepest nesting allowed ({levels} levels under config, 4 constructs)"),
            deep,
        ),
    ] {
        let source = cortex_compiler::MemorySource::new()
            .with("cortex.yaml", PROJECT)
            .with("agent.yaml", file);
        let mut timings = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let result = compile(&source, &Options::default());
            timings.push(started.elapsed());
            anyhow::ensure!(
                !result.diagnostics.has_errors(),
                "{what} did not validate: {:?}",
                result.diagnostics.iter().next().map(|d| &d.message)
            );
        }
        writeln!(out, "validate {what}, {}", Spread::of(&mut timings))?;
    }
    Ok(())
}

/// Times `build` (compile, render, write the output directory) and, when
/// helm is installed, `helm template` on the same chart, in one run.
/// Returns the directory holding the build's output (in `out`).
fn build_and_helm(
    source: &WorkTree,
    runs: usize,
    out: &mut impl Write,
) -> anyhow::Result<tempfile::TempDir> {
    let target = tempfile::tempdir().context("cannot create a temporary directory")?;
    let out_dir = target.path().join("out");
    let mut timings = Vec::new();
    let mut objects = 0;
    let mut stages = [Duration::ZERO; 3];
    for _ in 0..runs {
        let started = Instant::now();
        let result = compile(source, &Options::default());
        let resolved = result
            .validated()
            .context("the generated project did not validate")?;
        let compiled = started.elapsed();
        // As `cortex build` does it.
        let output = cortex_compiler::render::render_output(resolved, source).map_err(|d| {
            anyhow::anyhow!(
                "the generated project did not render: {} errors",
                d.error_count()
            )
        })?;
        let rendered = started.elapsed();
        cortex_reconciler::write::write_build(&out_dir, &output)?;
        let written = started.elapsed();
        timings.push(written);
        stages = [compiled, rendered - compiled, written - rendered];
        objects = output.objects.len();
        // Freed outside the timed span, as the CLI never frees them.
        drop((result, output));
    }
    let build = Spread::of(&mut timings);
    let build_median = build.median;
    writeln!(out, "build ({objects} objects, output written), {build}")?;
    writeln!(
        out,
        "build stages (last run): compile {:.0} ms, render, check and emit objects {:.0} ms, write chart, manifests, runtime.json and inventory {:.0} ms",
        ms(stages[0]),
        ms(stages[1]),
        ms(stages[2]),
    )?;
    let Some(helm) = find_helm() else {
        writeln!(
            out,
            "helm template: skipped (helm not found on PATH or in .tools/bin; scripts/test installs it)"
        )?;
        return Ok(target);
    };
    // Helm is a process: so is cortex here. Alternating pairs, so a slow
    // spell of this machine hits both, and the ratio is taken per pair.
    let mut build_process = std::process::Command::new(crate::cortex_binary()?);
    build_process
        .arg("build")
        .arg(source.root())
        .arg("-o")
        .arg(target.path().join("process"));
    let mut helm_process = std::process::Command::new(&helm);
    helm_process
        .args(["template", "release"])
        .arg(out_dir.join("chart"));
    let mut times = alternate(
        &mut [
            (&mut build_process, "cortex build"),
            (&mut helm_process, "helm template"),
        ],
        runs,
    )?;
    // Ratios pair the rounds: taken before the times are sorted.
    let mut ratios = shares(&times[1], &times[0]);
    writeln!(
        out,
        "as processes, alternating: cortex build {}; helm template of the same chart {}",
        Spread::of(&mut times[0]),
        Spread::of(&mut times[1])
    )?;
    let [min, median, max] = min_median_max(&mut ratios);
    writeln!(
        out,
        "helm template ÷ cortex build, per pair: min {min:.1}x, median {median:.1}x, max {max:.1}x (in-process build median {:.0} ms)",
        ms(build_median)
    )?;
    // Peak memory, each as a process of its own. Helm's peak moves from
    // run to run (its garbage collector): three of each, alternating.
    let (mut build_peaks, mut helm_peaks) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        build_peaks.push(peak_memory(&mut build_process)? as f64 / 1024.0);
        helm_peaks.push(peak_memory(&mut helm_process)? as f64 / 1024.0);
    }
    let range = |peaks: &mut Vec<f64>| {
        let [min, _, max] = min_median_max(peaks);
        format!("{min:.0}–{max:.0} MiB")
    };
    writeln!(
        out,
        "peak memory (VmHWM, sampled every 2 ms, 3 runs each): cortex build {}, helm template {}",
        range(&mut build_peaks),
        range(&mut helm_peaks)
    )?;
    Ok(target)
}

/// Runs each of `commands` once a round, in turn, for `rounds` rounds, so a
/// slow spell of this machine hits all of them alike; each command's times,
/// in the order given.
fn alternate(
    commands: &mut [(&mut std::process::Command, &str)],
    rounds: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut times = vec![Vec::with_capacity(rounds); commands.len()];
    for _ in 0..rounds {
        for ((command, what), taken) in commands.iter_mut().zip(&mut times) {
            taken.push(time_process(command, what)?);
        }
    }
    Ok(times)
}

/// Each of `parts` over the time of the same round in `wholes`.
fn shares(parts: &[Duration], wholes: &[Duration]) -> Vec<f64> {
    parts
        .iter()
        .zip(wholes)
        .map(|(part, whole)| part.as_secs_f64() / whole.as_secs_f64())
        .collect()
}

/// Runs `command` (output discarded) to its end and returns how long it took.
fn time_process(command: &mut std::process::Command, what: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = command
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    anyhow::ensure!(status.success(), "{what} failed on the generated project");
    Ok(started.elapsed())
}

/// Runs `command` (output discarded) and returns its peak resident memory
/// in KiB: the kernel's high-water mark (`VmHWM`), read every 2 ms while it
/// runs, the last reading before it exits.
fn peak_memory(command: &mut std::process::Command) -> anyhow::Result<u64> {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start the measured command")?;
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if child.try_wait()?.is_some() {
            return Ok(peak);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Agents changed between the two revisions of the diff benchmark.
const CHANGED_AGENTS: usize = 20;

/// Times `cortex diff` between two commits of the generated project that
/// differ in [`CHANGED_AGENTS`] agents: both revisions read from git,
/// compiled and rendered, the plan made and rendered as text and markdown.
/// Leaves `dir` a git repository with both commits.
fn diff_revisions(
    shape: Shape,
    dir: &Path,
    runs: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let repo = git2::Repository::init(dir).context("cannot create a git repository")?;
    commit_all(&repo, "generated project")?;
    cortex_testkit::generate::write_files(
        &cortex_testkit::generate::with_changed_agents(shape, CHANGED_AGENTS),
        dir,
    )?;
    commit_all(&repo, "change agents")?;
    let (from, to) = (At::Revision("HEAD~1".into()), At::Revision("HEAD".into()));
    let mut timings = Vec::new();
    let mut stages = Vec::new();
    let mut summary = None;
    for _ in 0..runs {
        let started = Instant::now();
        let (old, new) = desired_pair(dir, &from, &to, &Options::default());
        let (old, new) = (old?, new?);
        let compiled = started.elapsed();
        let plan = plan_between(&old, &new, &PlanOptions::default());
        let planned = started.elapsed();
        let text = render_text(&plan, false);
        let md = markdown::render_markdown(&plan, markdown::GITHUB_COMMENT_LIMIT);
        timings.push(started.elapsed());
        stages.push((compiled, planned - compiled, started.elapsed() - planned));
        summary = Some((plan.summary, text.len(), md.chars().count()));
        // Dropped outside the timed span, as the CLI never frees them.
        drop((old, new, plan));
    }
    if let Some((compiled, planned, rendered)) = stages.last() {
        writeln!(
            out,
            "diff stages (last run): compile and render both revisions {:.0} ms, plan {:.0} ms, text and markdown {:.0} ms",
            ms(*compiled),
            ms(*planned),
            ms(*rendered)
        )?;
    }
    let (counts, text_len, md_len) = summary.context("no run")?;
    writeln!(
        out,
        "diff of two revisions ({CHANGED_AGENTS} agents changed: {} updates of {} objects; text {} bytes, markdown {} chars), {}",
        counts.update,
        counts.update + counts.unchanged + counts.create + counts.delete,
        text_len,
        md_len,
        Spread::of(&mut timings)
    )?;
    Ok(())
}

/// Times `cortex validate` and `cortex diff` of the generated project as
/// processes, as a user runs them (their targets are the commands' times):
/// each process pays for what the in-process runs share, its start, fresh
/// memory and its exit. When helm is installed, each round also times
/// `helm template` of the chart in `built` (the build's output directory),
/// and both commands are reported
/// as a share of helm's time in their round: this machine's speed moves by
/// half from hour to hour, and a ratio to a peer run beside them does not.
fn commands_as_processes(
    dir: &Path,
    built: &Path,
    runs: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let cortex = crate::cortex_binary()?;
    let mut validate = std::process::Command::new(&cortex);
    validate.arg("validate").arg(dir);
    let mut diff = std::process::Command::new(&cortex);
    diff.arg("diff")
        .arg(dir)
        .args(["--from", "HEAD~1", "--to", "HEAD"]);
    let mut helm = find_helm().map(|helm| {
        let mut helm = std::process::Command::new(helm);
        helm.args(["template", "release"]).arg(built.join("chart"));
        helm
    });
    let mut commands = vec![
        (&mut validate, "cortex validate"),
        (&mut diff, "cortex diff"),
    ];
    if let Some(helm) = &mut helm {
        commands.push((helm, "helm template"));
    }
    let mut times = alternate(&mut commands, runs)?;
    // Shares pair the rounds: taken before the times are sorted.
    let round_shares = match &times[..] {
        [validates, diffs, helms] => Some((shares(validates, helms), shares(diffs, helms))),
        _ => None,
    };
    writeln!(
        out,
        "as processes, alternating: cortex validate {}; cortex diff --from HEAD~1 --to HEAD {}",
        Spread::of(&mut times[0]),
        Spread::of(&mut times[1])
    )?;
    if let Some((mut validate_shares, mut diff_shares)) = round_shares {
        let share = |shares: &mut Vec<f64>| {
            let [min, median, max] = min_median_max(shares);
            format!("min {min:.3}, median {median:.3}, max {max:.3}")
        };
        writeln!(
            out,
            "as a share of helm template's time in the same round: cortex validate {}; cortex diff {}",
            share(&mut validate_shares),
            share(&mut diff_shares)
        )?;
    }
    Ok(())
}

fn commit_all(repo: &git2::Repository, message: &str) -> anyhow::Result<()> {
    let mut index = repo.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("cortex bench", "bench@cortex.invalid")?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?;
    Ok(())
}

fn find_helm() -> Option<std::path::PathBuf> {
    let local = Path::new(".tools/bin/helm");
    if local.is_file() {
        return Some(local.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("helm"))
            .find(|p| p.is_file())
    })
}
