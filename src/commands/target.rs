//! `cortex plan`, `cortex apply` and `cortex unlock`: the target is chosen
//! once (`--target`, or the kind a saved plan names), then every step goes
//! through [`Target`].

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cortex_compiler::Options;
use cortex_reconciler::plan::Revision;
use cortex_reconciler::plan::render::{json::render_json, markdown, text::render_text};
use cortex_reconciler::target::kubernetes::{ConnectOptions, PlanSettings};
use cortex_reconciler::target::{
    ApplyOptions, EmbeddedTarget, KubernetesTarget, SavedTargetPlan, Target,
};
use cortex_reconciler::{At, Desired, PlanOptions, desired_at};

use crate::cli::{ClusterArgs, PlanFormat, PlanningArgs, TargetArg};
use crate::commands::diff::report_failures;
use crate::output;

/// `cortex plan`'s options.
pub struct PlanRequest {
    pub env: Option<String>,
    pub cluster: ClusterArgs,
    pub planning: PlanningArgs,
    pub out: Option<std::path::PathBuf>,
    pub format: PlanFormat,
    pub detailed_exitcode: bool,
    pub unified: bool,
}

/// `cortex apply`'s options.
pub struct ApplyRequest {
    pub env: Option<String>,
    pub cluster: ClusterArgs,
    pub planning: PlanningArgs,
    pub yes: bool,
    pub wait: bool,
    pub timeout: Duration,
    pub lock_timeout: Duration,
}

/// The async runtime of the commands that plan and apply (two workers:
/// this machine's cores).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Compiles the work tree; on failure prints the diagnostics (nothing is
/// planned or applied, so nothing is ever pruned after a failed compile).
pub(crate) fn compile(
    dir: &Path,
    env: Option<String>,
    format: PlanFormat,
) -> anyhow::Result<Option<Desired>> {
    match desired_at(dir, &At::WorkTree, &Options { env }) {
        Ok(mut desired) => {
            desired.revision = work_tree_revision(dir);
            Ok(Some(desired))
        }
        Err(failure) => {
            report_failures(dir, &[failure], format)?;
            Ok(None)
        }
    }
}

/// `work tree`, with the commit it is on when it is in a git repository.
fn work_tree_revision(dir: &Path) -> Revision {
    let commit = git2::Repository::discover(dir).ok().and_then(|r| {
        r.head()
            .ok()?
            .peel_to_commit()
            .ok()
            .map(|c| c.id().to_string())
    });
    Revision {
        name: "work tree".to_string(),
        commit,
    }
}

/// Prints an error; exit code 1.
pub(crate) fn failed(e: &dyn std::fmt::Display) -> anyhow::Result<ExitCode> {
    output::error_line(&e.to_string())?;
    Ok(ExitCode::from(1))
}

/// A plan in the requested format.
fn render_plan(plan: &cortex_reconciler::Plan, format: PlanFormat, unified: bool) -> String {
    match format {
        PlanFormat::Text => render_text(plan, unified),
        PlanFormat::Markdown => markdown::render_markdown(plan, markdown::GITHUB_COMMENT_LIMIT),
        PlanFormat::Json => render_json(plan),
    }
}

/// The target `--target` chose, or a refusal (already printed) of flags
/// that do not apply to it.
fn chosen_target(
    cluster: &ClusterArgs,
    planning: &PlanningArgs,
) -> anyhow::Result<Option<Box<dyn Target>>> {
    Ok(match cluster.target {
        TargetArg::Kubernetes => Some(Box::new(KubernetesTarget::new(
            ConnectOptions {
                kubeconfig: cluster.kubeconfig.clone(),
                context: cluster.context.clone(),
            },
            PlanSettings {
                prune: planning.prune,
                force: planning.force,
                force_conflicts: planning.force_conflicts,
                create_namespace: !planning.no_create_namespace,
                options: PlanOptions::default(),
            },
        ))),
        TargetArg::Embedded if refuse_cluster_flags(cluster, planning)? => None,
        TargetArg::Embedded => Some(Box::new(EmbeddedTarget)),
    })
}

/// Refuses the flags that only mean something for a cluster.
fn refuse_cluster_flags(cluster: &ClusterArgs, planning: &PlanningArgs) -> anyhow::Result<bool> {
    let given: Vec<&str> = [
        (cluster.kubeconfig.is_some(), "--kubeconfig"),
        (cluster.context.is_some(), "--context"),
        (planning.prune, "--prune"),
        (planning.force, "--force"),
        (planning.force_conflicts, "--force-conflicts"),
        (planning.no_create_namespace, "--no-create-namespace"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .collect();
    if given.is_empty() {
        return Ok(false);
    }
    output::error_line(&format!(
        "{} only apply to --target kubernetes (the embedded store holds the whole runtime config, so objects that left the project are removed on apply)",
        given.join(", ")
    ))?;
    Ok(true)
}

fn print_plan(
    planned: &cortex_reconciler::target::TargetPlan,
    format: PlanFormat,
    unified: bool,
) -> anyhow::Result<()> {
    let mut text = render_plan(&planned.display, format, unified);
    if format != PlanFormat::Json {
        for note in &planned.notes {
            text.push_str(&format!("\n{note}\n"));
        }
    }
    anstream::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// `cortex plan`.
pub fn plan(dir: &Path, request: PlanRequest) -> anyhow::Result<ExitCode> {
    let Some(target) = chosen_target(&request.cluster, &request.planning)? else {
        return Ok(ExitCode::from(1));
    };
    let Some(desired) = compile(dir, request.env.clone(), request.format)? else {
        return Ok(ExitCode::from(1));
    };
    let planned = match runtime()?.block_on(target.plan(dir, &desired)) {
        Ok(p) => p,
        Err(e) => return failed(&e),
    };
    print_plan(&planned, request.format, request.unified)?;
    if let Some(out) = request.out.as_deref() {
        cortex_reconciler::write::write_file(out, &planned.saved.to_json()?)?;
        eprintln!(
            "Saved the plan to {}; apply exactly it with: cortex apply {}",
            out.display(),
            out.display()
        );
    }
    Ok(
        if request.detailed_exitcode && planned.saved.summary().has_changes() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// `cortex apply DIR` (plan, confirm, apply) or `cortex apply PLAN.json`
/// (apply exactly that plan, on the target it names).
pub fn apply(input: &Path, request: ApplyRequest) -> anyhow::Result<ExitCode> {
    if input.is_file() {
        return apply_saved(input, request);
    }
    let Some(target) = chosen_target(&request.cluster, &request.planning)? else {
        return Ok(ExitCode::from(1));
    };
    if refuse_wait(&request)? || cannot_confirm(request.yes)? {
        return Ok(ExitCode::from(1));
    }
    let Some(desired) = compile(input, request.env.clone(), PlanFormat::Text)? else {
        return Ok(ExitCode::from(1));
    };
    let runtime = runtime()?;
    let planned = match runtime.block_on(target.plan(input, &desired)) {
        Ok(p) => p,
        Err(e) => return failed(&e),
    };
    print_plan(&planned, PlanFormat::Text, false)?;
    if !planned.saved.needs_apply() {
        println!("Nothing to apply.");
        return Ok(ExitCode::SUCCESS);
    }
    if !request.yes {
        eprint!(
            "\nApply these changes to {}? Only 'yes' is accepted: ",
            target.describe(&planned.saved)
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            output::error_line("apply cancelled; nothing was changed")?;
            return Ok(ExitCode::from(1));
        }
    }
    run_apply(&runtime, &*target, &planned.saved, &request)
}

/// `--wait` waits for rollouts, which only a cluster has.
fn refuse_wait(request: &ApplyRequest) -> anyhow::Result<bool> {
    if request.wait && request.cluster.target == TargetArg::Embedded {
        output::error_line(
            "--wait only applies to --target kubernetes (cortex up runs the agents of the embedded target)",
        )?;
        return Ok(true);
    }
    Ok(false)
}

/// Whether `cortex apply` must stop because it would ask for confirmation
/// and cannot (no `--yes`, stdin not a terminal); says so when it must.
fn cannot_confirm(yes: bool) -> anyhow::Result<bool> {
    if yes || std::io::stdin().is_terminal() {
        return Ok(false);
    }
    output::error_line(
        "cortex apply asks for confirmation, but stdin is not a terminal: pass --yes, or apply a saved plan (cortex plan -o plan.json; cortex apply plan.json)",
    )?;
    Ok(true)
}

/// Applies a saved plan file exactly, on the target it was made for.
fn apply_saved(path: &Path, request: ApplyRequest) -> anyhow::Result<ExitCode> {
    let plan = match SavedTargetPlan::load(path) {
        Ok(p) => p,
        Err(e) => return failed(&e),
    };
    let p = &request.planning;
    let target: Box<dyn Target> = match &plan {
        SavedTargetPlan::Embedded(_) => {
            if request.env.is_some() {
                output::error_line(
                    "--env is decided when planning; a saved plan is applied exactly as it was made",
                )?;
                return Ok(ExitCode::from(1));
            }
            if refuse_cluster_flags(&request.cluster, p)? {
                return Ok(ExitCode::from(1));
            }
            Box::new(EmbeddedTarget)
        }
        SavedTargetPlan::Kubernetes(_) => {
            if request.env.is_some() || p.prune || p.force || p.no_create_namespace {
                output::error_line(
                    "--env, --prune, --force and --no-create-namespace are decided when planning; a saved plan is applied exactly as it was made (plan again with them)",
                )?;
                return Ok(ExitCode::from(1));
            }
            Box::new(KubernetesTarget::new(
                ConnectOptions {
                    kubeconfig: request.cluster.kubeconfig.clone(),
                    context: request.cluster.context.clone(),
                },
                PlanSettings::default(),
            ))
        }
    };
    run_apply(&runtime()?, &*target, &plan, &request)
}

fn run_apply(
    runtime: &tokio::runtime::Runtime,
    target: &dyn Target,
    plan: &SavedTargetPlan,
    request: &ApplyRequest,
) -> anyhow::Result<ExitCode> {
    // Ctrl-C stops sending writes and releases the lock before exiting.
    let interrupt = std::sync::Arc::new(tokio::sync::Notify::new());
    let listener = {
        let interrupt = interrupt.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt.notify_one();
            }
        })
    };
    let options = ApplyOptions {
        lock_timeout: request.lock_timeout,
        wait: request.wait.then_some(request.timeout),
        force_conflicts: request.planning.force_conflicts,
        progress: std::io::stderr().is_terminal(),
        interrupt: Some(interrupt),
    };
    let result = runtime.block_on(target.apply(plan, &options));
    listener.abort();
    let done = match result {
        Ok(done) => done,
        Err(e) => return failed(&e),
    };
    match plan {
        SavedTargetPlan::Embedded(_) => {
            let revision = done.revision.unwrap_or_default();
            if done.changed {
                println!(
                    "Apply complete: revision {revision} ({} created, {} updated, {} deleted).",
                    done.created, done.updated, done.deleted
                );
            } else {
                println!("Nothing to apply (revision {revision}).");
            }
            match &done.runtime_url {
                Some(url) => println!("The runtime at {url} picks it up within a second."),
                None => println!("Run it with: cortex up"),
            }
        }
        SavedTargetPlan::Kubernetes(_) => {
            let mut parts = Vec::new();
            if let Some(namespace) = &done.namespace_created {
                parts.push(format!("namespace {namespace} created"));
            }
            parts.push(format!("{} created", done.created));
            parts.push(format!("{} updated", done.updated));
            parts.push(format!("{} deleted", done.deleted));
            println!("Apply complete: {}.", parts.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cortex unlock`.
pub fn unlock(dir: &Path, env: Option<String>, cluster: &ClusterArgs) -> anyhow::Result<ExitCode> {
    if cluster.target == TargetArg::Embedded {
        // Nothing to compile or break: an OS file lock ends with its process.
        println!("{}", cortex_reconciler::target::EMBEDDED_UNLOCK);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(target) = chosen_target(cluster, &PlanningArgs::default())? else {
        return Ok(ExitCode::from(1));
    };
    let Some(desired) = compile(dir, env, PlanFormat::Text)? else {
        return Ok(ExitCode::from(1));
    };
    match runtime()?.block_on(target.unlock(&desired)) {
        Ok(said) => {
            println!("{said}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failed(&e),
    }
}
