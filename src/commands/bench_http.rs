//! The HTTP end-to-end benchmark: the runtime (durable store) in this
//! process; in a child process, `agents` agents each on its own agent
//! socket (a WebSocket: deliveries in, acks out), and
//! publishers sending direct messages at `rate` msg/s in total. Latency is
//! publish start → the agent holding the delivery. Two processes because
//! each side needs a socket per agent and one process may hold 20,000 files
//! here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_client::Client;
use cortex_reconciler::runtime::agents::Paths;
use cortex_reconciler::runtime::{RuntimeOptions, start};
use cortex_reconciler::store::{SqliteStore, Store};
use serde_json::json;

/// The runtime side: starts it, runs the child, returns its report.
pub async fn run(agents: usize, rate: u64, seconds: u64) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?);
    let mut applied = super::bench_runtime::config_of(agents);
    applied.revision = 0;
    store.apply(0, applied).await?;
    let runtime = start(
        store.clone() as Arc<dyn Store>,
        RuntimeOptions {
            paths: Paths {
                project: dir.path().to_path_buf(),
                state: dir.path().to_path_buf(),
            },
            listen: "127.0.0.1:0".parse()?,
            supervise: false,
            poll: Duration::from_secs(1),
            alert_period: Duration::from_secs(1),
        },
        "bench",
    )
    .await?;
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "bench-runtime",
            "--client-of",
            &runtime.url,
            "--operator-token",
            &runtime.operator_token,
            "--http-agents",
            &agents.to_string(),
            "--rate",
            &rate.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .kill_on_drop(true)
        .output()
        .await?;
    runtime.stop().await?;
    anyhow::ensure!(
        child.status.success(),
        "the load generator failed: {}",
        String::from_utf8_lossy(&child.stderr)
    );
    Ok(String::from_utf8_lossy(&child.stdout).trim().to_string())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The load generator (child process).
pub async fn client(
    url: &str,
    operator_token: &str,
    agents: usize,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let latencies: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    // Agents connect first (each on its own connection: separate clients).
    let connected = Arc::new(AtomicU64::new(0));
    let unconnected = Arc::new(AtomicU64::new(0));
    for i in 0..agents {
        let client = Client::new(url, &format!("a{i}"), &format!("token-{i}"));
        let (stop, received, latencies, connected, unconnected) = (
            stop.clone(),
            received.clone(),
            latencies.clone(),
            connected.clone(),
            unconnected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Each agent on its own socket (deliveries in, acks out).
            let mut session = match client.session(64).await {
                Ok(session) => session,
                Err(e) => {
                    eprintln!("agent a{i} cannot open its socket: {e}");
                    unconnected.fetch_add(1, Ordering::Relaxed);
                    connected.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let delivery =
                    match tokio::time::timeout(Duration::from_millis(500), session.next()).await {
                        Ok(Some(Ok(delivery))) => delivery,
                        Ok(Some(Err(e))) => {
                            eprintln!("agent a{i}: {e}");
                            continue;
                        }
                        Ok(None) => break,
                        Err(_) => continue, // look at `stop` again
                    };
                let now = epoch.elapsed().as_micros() as u64;
                let sent = delivery.payload["t"].as_u64().unwrap_or(now);
                mine.push(now.saturating_sub(sent));
                received.fetch_add(1, Ordering::Relaxed);
                if session.ack(delivery.id).await.is_err() {
                    break;
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    while connected.load(Ordering::Relaxed) < agents as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(
        unconnected.load(Ordering::Relaxed) == 0,
        "{} of {agents} agents could not open their socket (is `ulimit -n` at least {}?)",
        unconnected.load(Ordering::Relaxed),
        agents * 2
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // sockets settled
    // Publishers: one lane per 40 msg/s of the rate (a publish waits for
    // durability, a few ms), each pacing its share.
    let lanes = (rate / 40).clamp(64, 2048);
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut publishers = Vec::new();
    for lane in 0..lanes {
        let operator = Client::new(url, "cortex", operator_token);
        let (sent, refused) = (sent.clone(), refused.clone());
        let per_lane = (rate as f64 / lanes as f64).max(1.0);
        publishers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut next = Instant::now();
            while started.elapsed() < Duration::from_secs(seconds) {
                let agent = format!("a{}", (lane * 7919 + n * 104_729) % agents as u64);
                let t = epoch.elapsed().as_micros() as u64;
                match operator.send(&agent, None, &json!({ "t": t })).await {
                    Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
                next += Duration::from_secs_f64(1.0 / per_lane);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }));
    }
    for p in publishers {
        let _ = p.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last deliveries arrive, then stop the agents.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut all = latencies.lock().unwrap().clone();
    all.sort_unstable();
    println!(
        "HTTP end to end, {agents} connected agents, target {rate} msg/s: sent {:.0} msg/s ({} refused), delivered {} of {}, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sent.load(Ordering::Relaxed) as f64 / elapsed,
        refused.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
    );
    Ok(())
}
