//! `cortex-bench compiler`'s Kubernetes figure: a plan of about 1,000 objects, 10
//! of them changed, against the in-process API server — wall time and the
//! requests it took.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use cortex_compiler::Options;
use cortex_reconciler::target::kubernetes::{ApplySettings, PlanSettings, apply, plan};
use cortex_reconciler::{At, desired_at};
use cortex_testkit::generate::{Shape, write_to};
use cortex_testkit::kubernetes::FakeApiServer;
use serde_json::json;

use crate::spread::Spread;

/// Agents of the generated project: 200 agents render about 1,000
/// Kubernetes objects.
const AGENTS: usize = 200;

/// Objects changed between the applied state and the plan.
const CHANGED: usize = 10;

pub fn kubernetes_plan(runs: usize, out: &mut impl Write) -> anyhow::Result<()> {
    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let shape = Shape {
        agents: AGENTS,
        workflows: 10,
        tasks: 5,
    };
    write_to(shape, temp.path()).context("cannot write the generated project")?;
    let desired = desired_at(temp.path(), &At::WorkTree, &Options::default())
        .map_err(|e| anyhow::anyhow!("the generated project does not compile: {e}"))?;
    let objects = desired
        .objects
        .iter()
        .filter(|o| o.api_version.is_some())
        .count();

    let server = FakeApiServer::start().context("cannot start the in-process API server")?;
    let runtime = crate::tokio_runtime()?;
    let cluster = runtime.block_on(server.connect(temp.path()))?;
    // Apply everything once (not timed), then change ten Deployments.
    let first = runtime.block_on(plan(&cluster, &desired, &PlanSettings::default()))?;
    runtime.block_on(apply(&cluster, &first.saved, &ApplySettings::default()))?;
    let mut changed = desired;
    for object in changed
        .objects
        .iter_mut()
        .filter(|o| o.id.kind == "Deployment")
        .take(CHANGED)
    {
        std::sync::Arc::make_mut(&mut object.body)["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example/agent:2.0.0");
    }

    let mut timings: Vec<Duration> = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        server.reset_requests();
        let started = Instant::now();
        let planned = runtime.block_on(plan(&cluster, &changed, &PlanSettings::default()))?;
        timings.push(started.elapsed());
        last = Some((planned.saved.summary, server.requests()));
    }
    let (summary, requests) = last.context("no run")?;
    writeln!(
        out,
        "kubernetes plan ({objects} objects, {} updates, {} unchanged) against the in-process API server: \
         {} requests ({} LIST, {} dry-run apply, {} GET, {} discovery, {} writes), {}",
        summary.update,
        summary.unchanged,
        requests.total(),
        requests.list,
        requests.dry_run,
        requests.get,
        requests.discovery,
        requests.writes(),
        Spread::of(&mut timings)
    )?;
    Ok(())
}
