//! `cortex-bench runtime`: the runtime's figures (in docs/benchmarks.md) —
//! in-process broker throughput, durable throughput with fsync and group
//! commit, HTTP end-to-end latency with many connected agents, and the
//! health loop's CPU cost.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_runtime::broker::{Broker, BrokerConfig, Journal, Principal};

use serde_json::json;

use crate::durable::{DurableFigures, PUBLISHERS};
use crate::http::Senders;
use crate::tokio_runtime as runtime;

/// What to measure.
pub struct Request {
    pub http_agents: usize,
    pub rate: u64,
    pub seconds: u64,
    pub health_agents: usize,
    /// Modes of the HTTP benchmark, in order.
    pub senders: Vec<Senders>,
}

fn broker(agents: usize, journal: Journal) -> anyhow::Result<Arc<Broker>> {
    let config = BrokerConfig::from_applied(
        &crate::config::config_of(agents),
        cortex_runtime::tokens::TokenHash::of("operator"),
    )?;
    Ok(Broker::new(config, journal, 0))
}

/// Publish → receive → ack in batches of 1,000 on 2 tasks, nothing kept.
async fn in_process(total: u64) -> anyhow::Result<f64> {
    let broker = broker(2, Journal::none())?;
    let payload = json!({"ticket": "t-1", "subject": "printer on fire"}).to_string();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..2 {
        let broker = broker.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let agent = format!("a{lane}");
            let mut done = 0;
            while done < total / 2 {
                for _ in 0..1000 {
                    broker
                        .send(&Principal::Operator, &agent, None, &payload)
                        .await?;
                }
                let got = broker.try_receive(&agent, 1000)?;
                let ids: Vec<u64> = got.iter().map(|t| t.id).collect();
                broker.ack_many(&agent, &ids).await?;
                done += ids.len() as u64;
            }
            Ok::<_, cortex_runtime::broker::BrokerError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn cpu_seconds() -> f64 {
    // utime and stime (fields 14 and 15 of /proc/self/stat), in clock ticks of 1/100 s.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

static CHECKS: AtomicU64 = AtomicU64::new(0);

/// `agents` supervised replicas checked by TCP every second (a listener in
/// this process answers); the CPU the process spends over `seconds`.
async fn health_loop(agents: usize, seconds: u64) -> anyhow::Result<(f64, u64)> {
    use cortex_runtime::backoff::Backoff;
    use cortex_runtime::health::{Check, HealthSettings, LocalProbe, Probe};
    use cortex_runtime::process::{LaunchError, Launcher, Running};
    use cortex_runtime::store::BoxFuture;
    use cortex_runtime::supervisor::{ReplicaSpec, run_replica};

    struct Forever;
    struct Up;
    impl Launcher for Forever {
        fn launch(&self) -> BoxFuture<'_, Result<Box<dyn Running>, LaunchError>> {
            Box::pin(async { Ok(Box::new(Up) as Box<dyn Running>) })
        }
    }
    impl Running for Up {
        fn wait(&mut self) -> BoxFuture<'_, String> {
            Box::pin(std::future::pending())
        }
        fn stop(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn pid(&self) -> Option<u32> {
            None
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    struct Counting(LocalProbe);
    impl Probe for Counting {
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            CHECKS.fetch_add(1, Ordering::Relaxed);
            self.0.check()
        }
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let launcher: Arc<dyn Launcher> = Arc::new(Forever);
    let http = cortex_client::http_client();
    let mut tasks = Vec::new();
    for i in 0..agents {
        let check = Check::Tcp { port };
        let probe: Arc<dyn Probe> = Arc::new(Counting(LocalProbe {
            check: check.clone(),
            env: Vec::new(),
            http: http.clone(),
        }));
        let spec = ReplicaSpec {
            agent: format!("a{i}"),
            replica: 0,
            health: HealthSettings {
                check: Some(check),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                failure_threshold: 3,
            },
            backoff: Backoff::from_runtime(&Default::default()),
        };
        let report = Arc::new(|_| {});
        tasks.push(tokio::spawn(run_replica(
            spec,
            launcher.clone(),
            Some(probe),
            report,
            stop_rx.clone(),
        )));
    }
    // Let start-up settle, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, wall0, checks0) = (
        cpu_seconds(),
        Instant::now(),
        CHECKS.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cores = (cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64();
    let done = CHECKS.load(Ordering::Relaxed) - checks0;
    stop.send(true)?;
    for t in tasks {
        let _ = t.await;
    }
    Ok((cores, done))
}

/// Runs the runtime benchmarks and prints their figures.
pub fn run(request: Request) -> anyhow::Result<ExitCode> {
    if request.http_agents > 0 {
        check_open_files(crate::http::files_needed(request.http_agents, request.rate))?;
    }
    let rt = runtime()?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "runtime benchmarks on {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        rates.push(rt.block_on(in_process(1_000_000))?);
    }
    rates.sort_by(f64::total_cmp);
    writeln!(
        out,
        "in-process broker, publish → receive → ack (batches of 1,000, nothing kept): median {:.0} msg/s (runs: {})",
        rates[1],
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    let mut cortex = Vec::new();
    for _ in 0..3 {
        cortex.push(rt.block_on(crate::durable::cortex(100_000))?);
    }
    let cortex = DurableFigures::median_of(cortex);
    writeln!(
        out,
        "durable (SQLite WAL, synchronous=FULL, group commit), {PUBLISHERS} publishers each awaiting durability, acks durable: {cortex}"
    )?;
    match crate::jetstream::find_server() {
        Some(server) => {
            let mut peer = Vec::new();
            for _ in 0..3 {
                peer.push(rt.block_on(crate::jetstream::durable(&server, 100_000, true))?);
            }
            let peer = DurableFigures::median_of(peer);
            writeln!(
                out,
                "NATS JetStream ({}, file storage, sync_interval: always), the same workload: {peer}",
                crate::jetstream::version(&server)
            )?;
            writeln!(
                out,
                "cortex / JetStream: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x (below 1 is cortex faster for latency)",
                cortex.rate / peer.rate,
                cortex.p50.as_secs_f64() / peer.p50.as_secs_f64(),
                cortex.p99.as_secs_f64() / peer.p99.as_secs_f64()
            )?;
            let mut lax = Vec::new();
            for _ in 0..3 {
                lax.push(rt.block_on(crate::jetstream::durable(&server, 100_000, false))?);
            }
            writeln!(
                out,
                "for context, NATS JetStream with its default sync_interval (2 min: publishes acknowledged before fsync, not the same promise): {}",
                DurableFigures::median_of(lax)
            )?;
        }
        None => writeln!(
            out,
            "NATS JetStream: skipped (no nats-server: scripts/bench installs it, or set CORTEX_BENCH_NATS_SERVER)"
        )?,
    }
    if request.health_agents > 0 {
        let (cores, checks) = rt.block_on(health_loop(request.health_agents, request.seconds))?;
        writeln!(
            out,
            "health loop: {} replicas, TCP check every 1 s: {:.2} cores ({} checks in {} s, {:.0}/s)",
            request.health_agents,
            cores,
            checks,
            request.seconds,
            checks as f64 / request.seconds as f64
        )?;
    }
    if request.http_agents > 0 {
        for &senders in &request.senders {
            let report = rt.block_on(crate::http::run(
                request.http_agents,
                request.rate,
                request.seconds,
                senders,
            ))?;
            writeln!(out, "{report}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses to start the HTTP part when this process (and so its child)
/// may not open `needed` files: it would fail after minutes of set-up.
pub(crate) fn check_open_files(needed: u64) -> anyhow::Result<()> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    match limit.current {
        Some(current) if current < needed => anyhow::bail!(
            "the HTTP benchmark needs about {needed} open files per process and `ulimit -n` is {current}: raise it (`ulimit -n {needed}`) or pass a smaller --http-agents"
        ),
        _ => Ok(()),
    }
}
