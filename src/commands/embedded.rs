//! `cortex plan`, `cortex apply` and `cortex unlock` with the embedded
//! target: the runtime config kept in the local state store.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cortex_reconciler::PlanOptions;
use cortex_reconciler::embedded::{self, SavedEmbeddedPlan};
use cortex_reconciler::kubernetes::lock::holder_identity;
use cortex_runtime::engine::RUNTIME_URL;
use cortex_runtime::store::{SqliteStore, Store};

use crate::cli::{ClusterArgs, PlanFormat, PlanningArgs};
use crate::commands::kube::{
    self, ApplyRequest, PlanRequest, compile, failed, render_plan, runtime,
};
use crate::output;

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

/// `cortex plan --target embedded`.
pub fn plan(dir: &Path, request: PlanRequest) -> anyhow::Result<ExitCode> {
    if refuse_cluster_flags(&request.cluster, &request.planning)? {
        return Ok(ExitCode::from(1));
    }
    let Some(desired) = compile(dir, request.env.clone(), request.format)? else {
        return Ok(ExitCode::from(1));
    };
    let state = embedded::state_path(dir, &desired);
    let applied = match runtime()?.block_on(embedded::read_applied(&state)) {
        Ok(a) => a,
        Err(e) => return failed(&e),
    };
    let planned =
        embedded::plan_against(applied.as_ref(), &state, &desired, &PlanOptions::default());
    anstream::stdout()
        .write_all(render_plan(&planned.display, request.format, request.unified).as_bytes())?;
    super::kube::save_and_exit(
        request.out.as_deref(),
        || serde_json::to_vec_pretty(&planned.saved),
        request.detailed_exitcode && planned.saved.summary.has_changes(),
    )
}

/// `cortex apply --target embedded` (a directory) or a saved embedded plan.
pub fn apply(input: &Path, request: ApplyRequest) -> anyhow::Result<ExitCode> {
    if refuse_cluster_flags(&request.cluster, &request.planning)? {
        return Ok(ExitCode::from(1));
    }
    if request.wait {
        output::error_line(
            "--wait only applies to --target kubernetes (cortex up runs the agents of the embedded target)",
        )?;
        return Ok(ExitCode::from(1));
    }
    if super::kube::cannot_confirm(request.yes)? {
        return Ok(ExitCode::from(1));
    }
    let Some(desired) = compile(input, request.env.clone(), PlanFormat::Text)? else {
        return Ok(ExitCode::from(1));
    };
    let state = embedded::state_path(input, &desired);
    let runtime = runtime()?;
    let applied = match runtime.block_on(embedded::read_applied(&state)) {
        Ok(a) => a,
        Err(e) => return failed(&e),
    };
    let planned =
        embedded::plan_against(applied.as_ref(), &state, &desired, &PlanOptions::default());
    anstream::stdout()
        .write_all(render_plan(&planned.display, PlanFormat::Text, false).as_bytes())?;
    if !planned.saved.summary.has_changes() && applied.is_some() {
        println!("Nothing to apply.");
        return Ok(ExitCode::SUCCESS);
    }
    if !request.yes {
        eprint!(
            "\nApply these changes to the state store {}? Only 'yes' is accepted: ",
            state.display()
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            output::error_line("apply cancelled; nothing was changed")?;
            return Ok(ExitCode::from(1));
        }
    }
    run_apply(&runtime, &planned.saved, &request)
}

/// Applies a saved embedded plan file.
pub fn apply_saved(path: &Path, text: &str, request: ApplyRequest) -> anyhow::Result<ExitCode> {
    let plan: SavedEmbeddedPlan = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            output::error_line(&format!(
                "{}: not a plan saved by `cortex plan -o`: {e}",
                path.display()
            ))?;
            return Ok(ExitCode::from(1));
        }
    };
    if request.env.is_some() || refuse_cluster_flags(&request.cluster, &request.planning)? {
        if request.env.is_some() {
            output::error_line(
                "--env is decided when planning; a saved plan is applied exactly as it was made",
            )?;
        }
        return Ok(ExitCode::from(1));
    }
    let runtime = runtime()?;
    run_apply(&runtime, &plan, &request)
}

fn run_apply(
    runtime: &tokio::runtime::Runtime,
    plan: &SavedEmbeddedPlan,
    request: &ApplyRequest,
) -> anyhow::Result<ExitCode> {
    let store = match SqliteStore::open(&plan.state) {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let outcome = runtime.block_on(async {
        let done = embedded::apply(&store, plan, &holder_identity(), request.lock_timeout).await?;
        let running = store.meta(RUNTIME_URL).await.ok().flatten();
        Ok::<_, embedded::EmbeddedError>((done, running))
    });
    store.close();
    match outcome {
        Ok((done, running)) => {
            let s = &plan.summary;
            if done.changed {
                println!(
                    "Apply complete: revision {} ({} created, {} updated, {} deleted).",
                    done.revision, s.create, s.update, s.delete
                );
            } else {
                println!("Nothing to apply (revision {}).", done.revision);
            }
            match running {
                Some(url) => println!("The runtime at {url} picks it up within a second."),
                None => println!("Run it with: cortex up"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => failed(&e),
    }
}

/// Reads a saved plan and applies it with the target it was made for.
pub fn apply_plan_file(path: &Path, request: ApplyRequest) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let kind = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string));
    if kind.as_deref() == Some(embedded::PLAN_KIND) {
        apply_saved(path, &text, request)
    } else {
        kube::apply(path, request)
    }
}
