//! `cortex plan`, `cortex apply` and `cortex unlock` against a Kubernetes
//! cluster.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cortex_compiler::Options;
use cortex_reconciler::kubernetes::{
    self, ApplySettings, Cluster, ClusterPlan, ConnectOptions, PlanSettings, SavedPlan, lock,
};
use cortex_reconciler::plan::Revision;
use cortex_reconciler::plan::render::{json::render_json, markdown, text::render_text};
use cortex_reconciler::{At, Desired, PlanOptions, desired_at};

use crate::cli::{ClusterArgs, PlanFormat, PlanningArgs};
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

/// The async runtime of the cluster commands (two workers: this machine's cores).
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

/// Prints an error of the cluster commands; exit code 1.
pub(crate) fn failed(e: &dyn std::fmt::Display) -> anyhow::Result<ExitCode> {
    output::error_line(&e.to_string())?;
    Ok(ExitCode::from(1))
}

fn connect_options(args: &ClusterArgs, desired: Option<&Desired>) -> ConnectOptions {
    let project_context = desired.and_then(|d| {
        d.resolved
            .project
            .node
            .str_at(&["spec", "targets", "kubernetes", "context"])
            .map(str::to_string)
    });
    ConnectOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone().or(project_context),
    }
}

fn settings(planning: &PlanningArgs) -> PlanSettings {
    PlanSettings {
        prune: planning.prune,
        force: planning.force,
        force_conflicts: planning.force_conflicts,
        create_namespace: !planning.no_create_namespace,
        options: PlanOptions::default(),
    }
}

/// Prints a plan, with what it left out (orphans) and what will fail
/// (conflicts), in the requested format.
/// A plan in the requested format (shared by both targets).
pub(crate) fn render_plan(
    plan: &cortex_reconciler::Plan,
    format: PlanFormat,
    unified: bool,
) -> String {
    match format {
        PlanFormat::Text => render_text(plan, unified),
        PlanFormat::Markdown => markdown::render_markdown(plan, markdown::GITHUB_COMMENT_LIMIT),
        PlanFormat::Json => render_json(plan),
    }
}

fn print_plan(planned: &ClusterPlan, format: PlanFormat, unified: bool) -> anyhow::Result<()> {
    let mut text = render_plan(&planned.display, format, unified);
    if format != PlanFormat::Json {
        let saved = &planned.saved;
        if !saved.orphans.is_empty() {
            text.push_str(&format!(
                "\n{} object{} carry the ownership label but left the project (kept; --prune deletes them): {}\n",
                saved.orphans.len(),
                if saved.orphans.len() == 1 { "" } else { "s" },
                saved.orphans.join(", ")
            ));
        }
        for c in &saved.conflicts {
            for f in &c.fields {
                text.push_str(&format!(
                    "\nconflict: {} {} is managed by {:?}; apply needs --force-conflicts to take it over\n",
                    c.object, f.field, f.manager
                ));
            }
        }
    }
    anstream::stdout().write_all(text.as_bytes())?;
    Ok(())
}

pub fn plan(dir: &Path, request: PlanRequest) -> anyhow::Result<ExitCode> {
    let Some(desired) = compile(dir, request.env.clone(), request.format)? else {
        return Ok(ExitCode::from(1));
    };
    let runtime = runtime()?;
    let planned = runtime.block_on(async {
        let cluster = Cluster::connect(&connect_options(&request.cluster, Some(&desired))).await?;
        kubernetes::plan(&cluster, &desired, &settings(&request.planning)).await
    });
    let planned = match planned {
        Ok(p) => p,
        Err(e) => return failed(&e),
    };
    print_plan(&planned, request.format, request.unified)?;
    save_and_exit(
        request.out.as_deref(),
        || serde_json::to_vec_pretty(&planned.saved),
        request.detailed_exitcode && planned.saved.summary.has_changes(),
    )
}

/// The end of `cortex plan` on any target: saves the plan (its JSON) when `-o` asked
/// for it (atomically), then exits 2 when `changes` (with
/// `--detailed-exitcode`), else 0.
pub(crate) fn save_and_exit(
    out: Option<&Path>,
    saved: impl FnOnce() -> serde_json::Result<Vec<u8>>,
    changes: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(out) = out {
        cortex_reconciler::write::write_file(out, &saved()?)?;
        eprintln!(
            "Saved the plan to {}; apply exactly it with: cortex apply {}",
            out.display(),
            out.display()
        );
    }
    Ok(if changes {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn apply_settings(request: &ApplyRequest) -> ApplySettings {
    ApplySettings {
        force_conflicts: request.planning.force_conflicts,
        lock_timeout: request.lock_timeout,
        wait: request.wait.then_some(request.timeout),
        progress: std::io::stderr().is_terminal(),
        ..ApplySettings::default()
    }
}

pub fn apply(input: &Path, request: ApplyRequest) -> anyhow::Result<ExitCode> {
    if input.is_file() {
        return apply_saved(input, request);
    }
    if cannot_confirm(request.yes)? {
        return Ok(ExitCode::from(1));
    }
    let Some(desired) = compile(input, request.env.clone(), PlanFormat::Text)? else {
        return Ok(ExitCode::from(1));
    };
    let runtime = runtime()?;
    let outcome = runtime.block_on(async {
        let cluster = Cluster::connect(&connect_options(&request.cluster, Some(&desired))).await?;
        let planned = kubernetes::plan(&cluster, &desired, &settings(&request.planning)).await?;
        Ok::<_, kubernetes::KubeError>((cluster, planned))
    });
    let (cluster, planned) = match outcome {
        Ok(o) => o,
        Err(e) => return failed(&e),
    };
    print_plan(&planned, PlanFormat::Text, false)?;
    if !planned.saved.summary.has_changes() {
        println!("Nothing to apply.");
        return Ok(ExitCode::SUCCESS);
    }
    if !request.yes && !confirm(&cluster, &planned.saved)? {
        output::error_line("apply cancelled; nothing was changed")?;
        return Ok(ExitCode::from(1));
    }
    run_apply(&runtime, &cluster, &planned.saved, &request)
}

/// Whether `cortex apply` must stop because it would ask for confirmation
/// and cannot (no `--yes`, stdin not a terminal); says so when it must.
pub(crate) fn cannot_confirm(yes: bool) -> anyhow::Result<bool> {
    if yes || std::io::stdin().is_terminal() {
        return Ok(false);
    }
    output::error_line(
        "cortex apply asks for confirmation, but stdin is not a terminal: pass --yes, or apply a saved plan (cortex plan -o plan.json; cortex apply plan.json)",
    )?;
    Ok(true)
}

fn confirm(cluster: &Cluster, plan: &SavedPlan) -> anyhow::Result<bool> {
    eprint!(
        "\nApply these changes to namespace {} on {}? Only 'yes' is accepted: ",
        plan.namespace, cluster.server
    );
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

fn apply_saved(path: &Path, request: ApplyRequest) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let plan: SavedPlan = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            output::error_line(&format!(
                "{}: not a plan saved by `cortex plan -o`: {e}",
                path.display()
            ))?;
            return Ok(ExitCode::from(1));
        }
    };
    let p = &request.planning;
    if request.env.is_some() || p.prune || p.force || p.no_create_namespace {
        output::error_line(
            "--env, --prune, --force and --no-create-namespace are decided when planning; a saved plan is applied exactly as it was made (plan again with them)",
        )?;
        return Ok(ExitCode::from(1));
    }
    let runtime = runtime()?;
    let cluster = match runtime.block_on(Cluster::connect(&connect_options(&request.cluster, None)))
    {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    run_apply(&runtime, &cluster, &plan, &request)
}

fn run_apply(
    runtime: &tokio::runtime::Runtime,
    cluster: &Cluster,
    plan: &SavedPlan,
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
    let settings = ApplySettings {
        interrupt: Some(interrupt),
        ..apply_settings(request)
    };
    let result = runtime.block_on(kubernetes::apply(cluster, plan, &settings));
    listener.abort();
    match result {
        Ok(report) => {
            let mut parts = Vec::new();
            if report.namespace_created {
                parts.push(format!("namespace {} created", plan.namespace));
            }
            parts.push(format!("{} created", report.created));
            parts.push(format!("{} updated", report.updated));
            parts.push(format!("{} deleted", report.deleted));
            println!("Apply complete: {}.", parts.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failed(&e),
    }
}

pub fn unlock(dir: &Path, env: Option<String>, args: &ClusterArgs) -> anyhow::Result<ExitCode> {
    let Some(desired) = compile(dir, env, PlanFormat::Text)? else {
        return Ok(ExitCode::from(1));
    };
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        let cluster = Cluster::connect(&connect_options(args, Some(&desired))).await?;
        lock::unlock(&cluster, &desired.project.namespace, &desired.project.name).await
    });
    match result {
        Ok(Some(holder)) => {
            println!(
                "Broke the lock of {} in {} (held by {holder}).",
                desired.project.name, desired.project.namespace
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => {
            println!(
                "{} in {} was not locked.",
                desired.project.name, desired.project.namespace
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failed(&e),
    }
}
