//! `cortex serve` as a user runs it (the release binary, a bare repository
//! in a temporary directory, commits pushed to it): how long from a push
//! to the commit applied — with a 1 s interval, and with the webhook — and,
//! on the generated 2,000-agent project, the cost of a reconcile that finds
//! nothing to do (wall and CPU time) and the process's memory.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use cortex_testkit::generate::{Shape, write_to};
use cortex_testkit::git::Repo;
use cortex_testkit::serve::{ServeApi, github_signature, small_project, small_specs};
use git2::Repository;
use serde_json::Value;

/// The webhook secret the bench gives `serve`.
const SECRET: &str = "bench webhook secret";

fn push(work: &Repo, remote: &Path) -> anyhow::Result<()> {
    Repository::open(work.path())?
        .remote_anonymous(remote.to_str().context("utf-8 path")?)?
        .push(&["+refs/heads/main:refs/heads/main"], None)?;
    Ok(())
}

/// A `cortex serve` child process, killed when dropped.
struct Served {
    child: Child,
    api: ServeApi,
    _state: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(remote: &Path, interval: &str) -> anyhow::Result<Served> {
        let state = tempfile::tempdir()?;
        let repo = remote.to_str().context("utf-8 path")?;
        let more = [
            "--no-agents",
            "--interval",
            interval,
            "--webhook-secret-env",
            "CORTEX_BENCH_WEBHOOK",
        ];
        let env = [("CORTEX_BENCH_WEBHOOK", SECRET), ("CORTEX_LOG", "warn")];
        let (child, url) =
            cortex_testkit::serve::spawn(&crate::cortex_binary()?, repo, state.path(), &more, &env)
                .context("start cortex serve")?;
        let mut api = ServeApi::operator(&url, state.path());
        // Latencies are read from the status: ask often.
        api.poll = Duration::from_millis(2);
        Ok(Served {
            child,
            api,
            _state: state,
        })
    }

    async fn status(&self) -> Value {
        self.api.status().await
    }

    async fn until(&self, what: &str, ok: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        self.api
            .try_until(what, ok)
            .await
            .map_err(anyhow::Error::msg)
    }

    async fn webhook(&self) -> anyhow::Result<()> {
        let body = br#"{"ref": "refs/heads/main"}"#;
        let answer = cortex_client::http_client()
            .post(format!("{}/api/v1/webhook", self.api.url))
            .header(
                "X-Hub-Signature-256",
                github_signature(SECRET.as_bytes(), body),
            )
            .body(body.to_vec())
            .send()
            .await?;
        anyhow::ensure!(
            answer.status() == 202,
            "the webhook answered {}",
            answer.status()
        );
        Ok(())
    }

    async fn sync(&self) -> anyhow::Result<()> {
        cortex_client::http_client()
            .post(format!("{}/api/v1/sync", self.api.url))
            .bearer_auth(&self.api.token)
            .send()
            .await?;
        Ok(())
    }

    /// (user + system CPU seconds, RSS MiB, peak RSS MiB) of the process.
    fn usage(&self) -> (f64, f64, f64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let cpu = fields
            .get(11)
            .zip(fields.get(12))
            .and_then(|(u, s)| Some(u.parse::<f64>().ok()? + s.parse::<f64>().ok()?))
            .unwrap_or(0.0)
            / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (cpu, kib("VmRSS:"), kib("VmHWM:"))
    }
}

fn spread(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "median {:.0} ms (min {:.0}, max {:.0}, {} pushes)",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        ms.len()
    )
}

/// Runs the serve benchmarks.
pub async fn run(pushes: usize) -> anyhow::Result<()> {
    // Push → applied, on a small project.
    let remote = tempfile::tempdir()?;
    Repository::init_bare(remote.path())?;
    let work = Repo::new();
    work.write("cortex.yaml", &small_project("served", "served"));
    work.write("specs.yaml", &small_specs("1h"));
    work.commit("first");
    push(&work, remote.path())?;
    let mut version = 0;
    for (mode, interval) in [("1 s interval", "1s"), ("webhook", "1h")] {
        let served = Served::start(remote.path(), interval)?;
        served
            .until("the first sync", |s| s["syncState"] == "synced")
            .await?;
        let mut latencies = Vec::new();
        for _ in 0..pushes {
            version += 1;
            work.write("specs.yaml", &small_specs(&format!("{}h", version + 1)));
            let commit = work.commit("change").to_string();
            push(&work, remote.path())?;
            let pushed = Instant::now();
            if interval == "1h" {
                served.webhook().await?;
            }
            served
                .until("the push applied", |s| s["syncedCommit"] == commit.as_str())
                .await?;
            latencies.push(pushed.elapsed().as_secs_f64() * 1000.0);
        }
        println!("serve: push → applied, {mode}: {}", spread(latencies));
    }

    // The generated project: a no-op reconcile's cost, and memory.
    let big_remote = tempfile::tempdir()?;
    Repository::init_bare(big_remote.path())?;
    let big = Repo::new();
    let shape = Shape {
        agents: 2000,
        workflows: 500,
        tasks: 20,
    };
    write_to(shape, big.path())?;
    big.commit("generated");
    push(&big, big_remote.path())?;
    let served = Served::start(big_remote.path(), "1h")?;
    let started = Instant::now();
    let first = served
        .until("the generated project synced", |s| {
            (s["syncState"] == "synced" && s["reconciles"].as_u64() >= Some(1))
                || s["syncState"] == "error"
        })
        .await?;
    anyhow::ensure!(first["syncState"] == "synced", "{first}");
    println!(
        "serve: the generated project (2,000 agents, 500 workflows): first sync (fetch, compile, apply, start the runtime) {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let (cpu_before, _, _) = served.usage();
    let mut walls = Vec::new();
    let runs = 5;
    for _ in 0..runs {
        let before = served.status().await["reconciles"].as_u64().unwrap_or(0);
        served.sync().await?;
        let after = served
            .until("the no-op reconcile", |s| {
                s["reconciles"].as_u64().unwrap_or(0) > before
            })
            .await?;
        walls.push(after["lastReconcileMs"].as_f64().unwrap_or(f64::NAN));
    }
    let (cpu_after, _, _) = served.usage();
    // Memory once the allocator has given back what the compile freed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, rss, peak) = served.usage();
    walls.sort_by(f64::total_cmp);
    println!(
        "serve: a no-op reconcile of the generated project (a sync asked for: fetch, read the store's revision; nothing compiled, planned or written): median {:.0} ms wall (min {:.0}, max {:.0}), {:.0} ms CPU each",
        walls[walls.len() / 2],
        walls[0],
        walls[walls.len() - 1],
        (cpu_after - cpu_before) * 1000.0 / runs as f64
    );
    println!(
        "serve: memory with the generated project, 10 s after the last sync: RSS {rss:.0} MiB ({:.0} MB), peak {peak:.0} MiB",
        rss * 1.048_576
    );
    drop(served);
    let (per_reconcile, background) = noop_allocations(big_remote.path()).await?;
    println!(
        "serve: allocations of a no-op reconcile of the generated project (serve in this process; Rust's allocations, libgit2's and SQLite's own C ones not counted): {per_reconcile:.0} each (the runtime's background work, {background:.0}/s, taken off)"
    );
    Ok(())
}

/// Allocations of one no-op reconcile of the project in `remote`, with
/// `serve` run in this process: reconciles woken one after another, less
/// what the idle runtime allocates in as long (measured just before).
async fn noop_allocations(remote: &Path) -> anyhow::Result<(f64, f64)> {
    use cortex_reconciler::serve::Serve;
    let state = tempfile::tempdir()?;
    let mut serve = Serve::new(cortex_testkit::serve::remote_options(
        remote,
        state.path(),
        Duration::from_secs(3600),
    ));
    serve.listen().await?;
    let (status, wake) = (serve.status(), serve.waker());
    let reconciles = || status.lock().map(|s| s.reconciles).unwrap_or(0);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve.run(stopped));
    let deadline = Instant::now() + Duration::from_secs(120);
    while status
        .lock()
        .map(|s| s.sync_state != "synced")
        .unwrap_or(true)
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the generated project did not sync"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = Duration::from_secs(3);
    let (idle, ()) = crate::counting::count(tokio::time::sleep(window)).await;
    let background = idle as f64 / window.as_secs_f64();
    let runs = 500;
    let started = Instant::now();
    let (busy, ()) = crate::counting::count(async {
        for _ in 0..runs {
            let before = reconciles();
            wake.notify_one();
            while reconciles() == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
    .await;
    let during = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await??;
    Ok((
        ((busy as f64 - background * during) / runs as f64).max(0.0),
        background,
    ))
}
