//! `cortex-bench state`: agent state against etcd on the same workload, in
//! one run, both over HTTP/JSON (cortex's state API; etcd's v3 JSON
//! gateway), both acknowledging a write once it is on disk (cortex: SQLite
//! WAL with `synchronous=FULL`; etcd: its WAL fsynced before the answer).
//!
//! - **CAS writes/s**: `WRITERS` concurrent writers, each on its own key,
//!   read-modify-write with compare-and-swap on the version it last wrote
//!   (cortex `PUT ifVersion`; etcd a transaction comparing `mod_revision`).
//! - **Contended increments/s**: `CONTENDERS` writers incrementing one key
//!   with compare-and-swap; a loser takes the winner's value from the
//!   refusal itself (cortex's 409 carries it; etcd's transaction reads it in
//!   its failure branch) and tries again. The final value must equal the
//!   increments that succeeded.
//! - **Watch latency**: one watcher on the scope (etcd: the key prefix);
//!   a writer writes one key at a time; the time from sending the write to
//!   the watcher receiving its change, p50 and p99.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cortex_client::Cas;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::peer::{Killed, free_port, until_up};
use crate::spread::{ms, quantile};

/// Concurrent CAS writers.
pub const WRITERS: u64 = 64;
/// Writers incrementing one key.
pub const CONTENDERS: u64 = 8;
/// Writes timed for the watch latency.
const WATCHED_WRITES: usize = 300;

/// One engine's figures.
struct Figures {
    writes_per_s: f64,
    contended_per_s: f64,
    conflicts_per_s: f64,
    watch_p50: Duration,
    watch_p99: Duration,
}

impl Figures {
    /// The figures of one engine: its write rates, and its watch
    /// latencies' quantiles.
    fn new(writes_per_s: f64, contended: (f64, f64), mut latencies: Vec<Duration>) -> Figures {
        latencies.sort();
        Figures {
            writes_per_s,
            contended_per_s: contended.0,
            conflicts_per_s: contended.1,
            watch_p50: quantile(&latencies, 0.5).unwrap_or_default(),
            watch_p99: quantile(&latencies, 0.99).unwrap_or_default(),
        }
    }
}

/// Counts of a contended phase: increments that won, refusals.
#[derive(Default)]
struct Contended {
    won: AtomicU64,
    lost: AtomicU64,
}

impl Contended {
    fn rates(&self, elapsed: Duration) -> (f64, f64) {
        let s = elapsed.as_secs_f64();
        (
            self.won.load(Ordering::Relaxed) as f64 / s,
            self.lost.load(Ordering::Relaxed) as f64 / s,
        )
    }
}

/// Runs `n` copies of `task(i, until)`, `until` being `seconds` from now,
/// and waits for them; answers how long they took.
async fn timed<F, Fut>(n: u64, seconds: u64, task: F) -> anyhow::Result<Duration>
where
    F: Fn(u64, Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(task(i, until))).collect();
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// Runs both engines for `seconds` of CAS writes each and prints the table.
pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let etcd_bin = std::env::var("CORTEX_BENCH_ETCD").unwrap_or_else(|_| "etcd".into());
    let cortex = cortex_figures(seconds).await?;
    let etcd = etcd_figures(&etcd_bin, seconds).await?;
    println!(
        "\nagent state: {WRITERS} CAS writers on their own keys, then {CONTENDERS} on one key, {seconds} s each; watch latency over {WATCHED_WRITES} writes"
    );
    println!(
        "{:<8} {:>14} {:>16} {:>12} {:>16} {:>16}",
        "engine",
        "CAS writes/s",
        "contended inc/s",
        "conflicts/s",
        "watch p50 (ms)",
        "watch p99 (ms)"
    );
    for (name, f) in [("cortex", &cortex), ("etcd", &etcd)] {
        println!(
            "{name:<8} {:>14.0} {:>16.0} {:>12.0} {:>16.2} {:>16.2}",
            f.writes_per_s,
            f.contended_per_s,
            f.conflicts_per_s,
            ms(f.watch_p50),
            ms(f.watch_p99)
        );
    }
    println!(
        "ratio cortex/etcd: writes {:.2}x, contended increments {:.2}x, watch p50 {:.2}x",
        cortex.writes_per_s / etcd.writes_per_s,
        cortex.contended_per_s / etcd.contended_per_s,
        ms(cortex.watch_p50) / ms(etcd.watch_p50)
    );
    Ok(())
}

async fn cortex_figures(seconds: u64) -> anyhow::Result<Figures> {
    let project = cortex_testkit::git::fixture_path("runtime/state");
    let t = cortex_testkit::runtime::start_project(&project, false).await;
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = timed(WRITERS, seconds, |w, until| {
        let scope = t.client("counter").state("agents/counter");
        let done = done.clone();
        async move {
            let key = format!("k{w}");
            let mut version = 0;
            let mut n = 0u64;
            while Instant::now() < until {
                match scope.put_if(&key, &json!(n), version).await? {
                    Cas::Written(v) => {
                        version = v;
                        n += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Cas::Conflict(_) => bail!("{key}: a conflict with no other writer"),
                }
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let writes_per_s = done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
    // Contended: one key.
    let counts = Arc::new(Contended::default());
    let elapsed = timed(CONTENDERS, seconds, |_, until| {
        let scope = t.client("counter").state("agents/counter");
        let counts = counts.clone();
        async move {
            let (mut version, mut n) = (0, 0);
            while Instant::now() < until {
                match scope.put_if("hot", &json!(n + 1), version).await? {
                    Cas::Written(v) => {
                        (version, n) = (v, n + 1);
                        counts.won.fetch_add(1, Ordering::Relaxed);
                    }
                    Cas::Conflict(current) => {
                        (version, n) =
                            current.map_or((0, 0), |c| (c.version, c.value.as_u64().unwrap_or(0)));
                        counts.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let (contended_per_s, conflicts_per_s) = counts.rates(elapsed);
    let hot = t
        .client("counter")
        .state("agents/counter")
        .get("hot")
        .await?;
    let won = counts.won.load(Ordering::Relaxed);
    anyhow::ensure!(
        hot.as_ref().and_then(|d| d.value.as_u64()) == Some(won),
        "cortex lost an increment: {won} won, the key holds {hot:?}"
    );
    // Watch latency.
    let scope = t.client("counter").state("agents/counter");
    let from = scope.list("", "", 1).await?.version;
    let mut watch = scope.watch(from);
    let mut latencies = Vec::with_capacity(WATCHED_WRITES);
    for n in 0..WATCHED_WRITES {
        let sent = Instant::now();
        scope.put("watched", &json!(n)).await?;
        let change = watch.next().await?;
        anyhow::ensure!(change.key == "watched", "unexpected change {change:?}");
        latencies.push(sent.elapsed());
    }
    t.runtime.stop().await?;
    Ok(Figures::new(
        writes_per_s,
        (contended_per_s, conflicts_per_s),
        latencies,
    ))
}

/// etcd on free ports in a temporary directory, stopped when dropped.
struct Etcd {
    _child: Killed,
    url: String,
    _dir: tempfile::TempDir,
}

async fn start_etcd(bin: &str) -> anyhow::Result<Etcd> {
    let dir = tempfile::tempdir()?;
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let child = Command::new(bin)
        .args([
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
            "--log-level",
            "error",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {bin} (scripts/bench installs it)"))?;
    let etcd = Etcd {
        _child: Killed(child),
        url,
        _dir: dir,
    };
    until_up(
        &cortex_client::http_client(),
        &format!("{}/health", etcd.url),
    )
    .await?;
    Ok(etcd)
}

fn b64(text: &str) -> String {
    B64.encode(text)
}

/// A revision as etcd's JSON gateway writes it (int64 as a string).
fn revision(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or(0)
}

/// etcd's compare-and-swap: `value` written to `key` (base64) if its
/// `mod_revision` is `version` (0: it does not exist); the key read back
/// in the failure branch.
async fn etcd_cas(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    version: u64,
    value: u64,
) -> anyhow::Result<Value> {
    let txn = json!({
        "compare": [{ "key": key, "target": "MOD", "result": "EQUAL", "mod_revision": version.to_string() }],
        "success": [{ "request_put": { "key": key, "value": B64.encode(value.to_string()) } }],
        "failure": [{ "request_range": { "key": key } }],
    });
    Ok(http
        .post(format!("{url}/v3/kv/txn"))
        .json(&txn)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn etcd_figures(bin: &str, seconds: u64) -> anyhow::Result<Figures> {
    let etcd = start_etcd(bin).await?;
    let http = cortex_client::http_client();
    let done = Arc::new(AtomicU64::new(0));
    let elapsed = timed(WRITERS, seconds, |w, until| {
        let (http, url, done) = (http.clone(), etcd.url.clone(), done.clone());
        async move {
            let key = b64(&format!("agents/counter/k{w}"));
            let mut version = 0;
            let mut n = 0u64;
            while Instant::now() < until {
                let answer = etcd_cas(&http, &url, &key, version, n).await?;
                if answer["succeeded"] != json!(true) {
                    bail!("{w}: a conflict with no other writer: {answer}");
                }
                version = revision(&answer["header"]["revision"]);
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let writes_per_s = done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
    // Contended: one key; the failure branch reads it.
    let counts = Arc::new(Contended::default());
    let hot = b64("agents/counter/hot");
    let elapsed = timed(CONTENDERS, seconds, |_, until| {
        let (http, url, counts, key) =
            (http.clone(), etcd.url.clone(), counts.clone(), hot.clone());
        async move {
            let (mut version, mut n) = (0u64, 0u64);
            while Instant::now() < until {
                let answer = etcd_cas(&http, &url, &key, version, n + 1).await?;
                if answer["succeeded"] == json!(true) {
                    (version, n) = (revision(&answer["header"]["revision"]), n + 1);
                    counts.won.fetch_add(1, Ordering::Relaxed);
                } else {
                    let kv = &answer["responses"][0]["response_range"]["kvs"][0];
                    version = revision(&kv["mod_revision"]);
                    n = kv["value"]
                        .as_str()
                        .and_then(|v| B64.decode(v).ok())
                        .and_then(|v| String::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    counts.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }
    })
    .await?;
    let (contended_per_s, conflicts_per_s) = counts.rates(elapsed);
    // Watch latency: a watch on the prefix, one JSON object per line.
    let prefix = "agents/counter/";
    let watch = http
        .post(format!("{}/v3/watch", etcd.url))
        .json(&json!({ "create_request": { "key": b64(prefix), "range_end": b64("agents/counter0") } }))
        .send()
        .await?
        .error_for_status()?;
    let mut chunks = watch.bytes_stream();
    let mut buffer = Vec::new();
    let mut next_event = async || -> anyhow::Result<Value> {
        loop {
            if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let value: Value = serde_json::from_slice(&line)?;
                if value["result"]["events"].is_array() {
                    return Ok(value);
                }
                continue;
            }
            match chunks.next().await {
                Some(chunk) => buffer.extend_from_slice(&chunk?),
                None => bail!("etcd closed the watch"),
            }
        }
    };
    let mut latencies = Vec::with_capacity(WATCHED_WRITES);
    for n in 0..WATCHED_WRITES {
        let sent = Instant::now();
        http.post(format!("{}/v3/kv/put", etcd.url))
            .json(&json!({ "key": b64("agents/counter/watched"), "value": b64(&n.to_string()) }))
            .send()
            .await?
            .error_for_status()?;
        next_event().await?;
        latencies.push(sent.elapsed());
    }
    Ok(Figures::new(
        writes_per_s,
        (contended_per_s, conflicts_per_s),
        latencies,
    ))
}
