//! The HTTP end-to-end benchmark: the runtime (durable store) in this
//! process; in a child process, `agents` agents each on its own agent
//! socket (a WebSocket: deliveries in, acks out) and senders of direct
//! messages at `rate` msg/s in total: the agents themselves over their
//! sockets (acking each delivery with their next send, or at once), or the
//! operator over HTTP ([`Senders`]). Latency is send start → the delivery
//! read off the receiving agent's socket (an agent waiting for its own
//! send's answer reads deliveries meanwhile and keeps them; when it looks at
//! them is not the broker's latency). Two processes because
//! each side needs a socket per agent and one process may hold 20,000 files
//! here.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_client::{Client, ClientError, Session};
use cortex_runtime::agents::Paths;
use cortex_runtime::store::{SqliteStore, Store};
use cortex_runtime::{Runtime, RuntimeOptions, start};
use serde_json::json;

/// The runtime under test: a fresh store in `dir` holding `agents` agents
/// `a0…` (tokens `token-0…`), the broker listening on `listen`.
async fn start_runtime(dir: &Path, agents: usize, listen: SocketAddr) -> anyhow::Result<Runtime> {
    let store = Arc::new(SqliteStore::open(&dir.join("bench.db"))?);
    let mut applied = crate::config::config_of(agents);
    applied.revision = 0;
    store.apply(0, applied).await?;
    Ok(start(
        store as Arc<dyn Store>,
        RuntimeOptions {
            paths: Paths {
                project: dir.to_path_buf(),
                state: dir.to_path_buf(),
            },
            listen,
            supervise: false,
            poll: Duration::from_secs(1),
            alert_period: Duration::from_secs(1),
            connections: Default::default(),
            extra_routes: None,
            extra_metrics: None,
        },
        "bench",
    )
    .await?)
}

/// `--serve-for-load ADDR`: only the runtime half of the HTTP benchmark,
/// for a load generator on another machine (so that it does not share this
/// one's cores); serves until Ctrl-C.
pub async fn serve_for_load(listen: SocketAddr, agents: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime = start_runtime(dir.path(), agents, listen).await?;
    println!(
        "the HTTP benchmark's runtime, {agents} agents, at {url} (Ctrl-C stops it). On the load generator's machine (`ulimit -n` above {files}), with this machine's address in the URL:\n  cortex-bench runtime --client-of {url} --operator-token {token} --http-agents {agents} --rate 20000 --senders agents",
        url = runtime.url,
        token = runtime.operator_token,
        files = files_needed(agents, 20_000),
    );
    tokio::signal::ctrl_c().await?;
    runtime.stop().await?;
    Ok(())
}

/// The runtime side: starts it, runs the child, returns its report.
pub async fn run(
    agents: usize,
    rate: u64,
    seconds: u64,
    senders: Senders,
) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let runtime = start_runtime(dir.path(), agents, "127.0.0.1:0".parse()?).await?;
    let child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "runtime",
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
            "--senders",
            senders.as_arg(),
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

/// The `p` quantile of latencies in µs, in ms (NaN when none arrived).
fn percentile(sorted: &[u64], p: f64) -> f64 {
    crate::spread::quantile(sorted, p).map_or(f64::NAN, |us| us as f64 / 1000.0)
}

/// Who sends the benchmark's messages, and how deliveries are acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Senders {
    /// The agents themselves, each over its socket, to random agents; each
    /// delivery's ack rides on the agent's next send
    /// ([`Session::defer_ack`]).
    Agents,
    /// The same, but each delivery acked at once by a frame of its own.
    AgentsAckingEach,
    /// The operator over HTTP (one request per message, many
    /// connections); each delivery acked at once.
    Http,
}

impl Senders {
    /// Every mode, in the order the benchmark runs them.
    pub const ALL: [Senders; 3] = [Senders::Agents, Senders::AgentsAckingEach, Senders::Http];

    /// The command-line spelling (`--senders`).
    pub fn as_arg(self) -> &'static str {
        match self {
            Senders::Agents => "agents",
            Senders::AgentsAckingEach => "agents-acking-each",
            Senders::Http => "http",
        }
    }

    /// From the command-line spelling.
    pub fn from_arg(arg: &str) -> anyhow::Result<Senders> {
        Senders::ALL
            .into_iter()
            .find(|s| s.as_arg() == arg)
            .ok_or_else(|| {
                anyhow::anyhow!("--senders is `agents`, `agents-acking-each` or `http`, not {arg}")
            })
    }

    /// What the report says of this mode.
    fn describe(self) -> &'static str {
        match self {
            Senders::Agents => {
                "agents sending to each other over their sockets, each ack riding on the agent's next send"
            }
            Senders::AgentsAckingEach => {
                "agents sending to each other over their sockets, each delivery acked at once by a frame of its own"
            }
            Senders::Http => "the operator sending over HTTP, each delivery acked at once",
        }
    }
}

/// What the load generator counts.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
}

impl Tally {
    /// Counts a send made at `t` (µs since the epoch) if it falls in the
    /// timed window.
    fn outcome<T>(&self, schedule: &Schedule, t: u64, result: Result<T, ClientError>) {
        if !schedule.counts(t) {
            return;
        }
        match result {
            Ok(_) => self.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.refused.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The warm-up before the timed window: the rate ramps from nothing to all
/// of it, linearly. What is sent then is not counted: the first seconds after 10,000
/// sockets open (allocators, the store's first pages, TCP's first
/// segments) are not the steady state the figure is about.
const WARM_UP: Duration = Duration::from_secs(4);

/// When the load generator sends, and which sends count.
#[derive(Clone, Copy)]
struct Schedule {
    /// Time zero of the `t` in the payloads.
    epoch: Instant,
    /// Sending starts (the warm-up).
    start: Instant,
    /// The timed window starts.
    measure: Instant,
    /// No send starts at or after this.
    end: Instant,
    /// Receiving stops.
    stop: Instant,
}

impl Schedule {
    fn new(epoch: Instant, seconds: u64) -> Schedule {
        // Sending starts a moment after every socket is open; receiving
        // stops 3 s after the window.
        let start = Instant::now() + Duration::from_millis(500);
        let measure = start + WARM_UP;
        let end = measure + Duration::from_secs(seconds);
        Schedule {
            epoch,
            start,
            measure,
            end,
            stop: end + Duration::from_secs(3),
        }
    }

    /// Microseconds since the epoch, the payloads' clock.
    fn micros(&self, at: Instant) -> u64 {
        at.duration_since(self.epoch).as_micros() as u64
    }

    /// Whether a send made at `t` (µs since the epoch) counts.
    fn counts(&self, t: u64) -> bool {
        t >= self.micros(self.measure)
    }

    /// When a lane sends its `n`th message (from 0): at the full rate it
    /// sends every `period`, offset by `phase` (a fraction of a period)
    /// from the other lanes; during the warm-up the rate ramps up
    /// linearly, so the sends there are spaced wider.
    fn send_time(&self, n: u64, phase: f64, period: Duration) -> Instant {
        let w = WARM_UP.as_secs_f64();
        // Where the send falls at the full rate, and so on the ramp: the
        // ramp's first `w` seconds send what the full rate sends in `w / 2`.
        let u = (n as f64 + phase) * period.as_secs_f64();
        let t = if u <= w / 2.0 {
            (2.0 * w * u).sqrt()
        } else {
            u + w / 2.0
        };
        self.start + Duration::from_secs_f64(t)
    }
}

/// The recipient of a sender's `n`th message: spread over all agents.
fn recipient(sender: u64, n: u64, agents: usize) -> String {
    format!("a{}", (sender * 7919 + n * 104_729) % agents as u64)
}

/// The load generator's async runtime: one worker thread, so its 10,000
/// agents' tasks never move between threads and it takes at most one core
/// from the runtime under test. At 20,000 msg/s it took 0.43–0.48 of a
/// core in runs that met the target (the one such run on two workers took
/// 0.50: within this machine's noise).
pub fn load_generator_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// The load generator (child process): opens every agent's socket, warms
/// up ([`WARM_UP`]), then sends at `rate` msg/s in total for `seconds`,
/// then waits for the last deliveries. Only what is sent in the timed
/// window is counted.
pub async fn client(
    url: &str,
    operator_token: &str,
    agents: usize,
    rate: u64,
    seconds: u64,
    senders: Senders,
) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let tally = Arc::new(Tally::default());
    let sessions = open_sessions(url, agents).await?;
    let schedule = Schedule::new(epoch, seconds);
    let period = Duration::from_secs_f64(agents as f64 / rate as f64);
    let mut tasks = Vec::with_capacity(agents);
    for (i, session) in sessions {
        let lane = Lane {
            agent: i,
            agents,
            period,
            senders,
            schedule,
            tally: tally.clone(),
        };
        tasks.push(tokio::spawn(lane.run(session)));
    }
    if senders == Senders::Http {
        http_senders(url, operator_token, agents, rate, schedule, &tally).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut all = std::mem::take(&mut *tally.latencies.lock().unwrap());
    all.sort_unstable();
    let sent = tally.sent.load(Ordering::Relaxed);
    println!(
        "HTTP end to end, {agents} agents on their sockets, {}, target {rate} msg/s: sent {:.0} msg/s ({} refused), delivered {} of {sent}, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        senders.describe(),
        sent as f64 / seconds as f64,
        tally.refused.load(Ordering::Relaxed),
        tally.received.load(Ordering::Relaxed),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
    );
    Ok(())
}

/// One agent of the load generator: what it needs to send its share and
/// count its deliveries.
struct Lane {
    agent: usize,
    agents: usize,
    /// Its gap between sends at the full rate.
    period: Duration,
    senders: Senders,
    schedule: Schedule,
    tally: Arc<Tally>,
}

impl Lane {
    /// Sends its share on schedule (unless the operator sends), takes its
    /// deliveries and settles them, until the schedule's stop.
    async fn run(self, mut session: Session) {
        let Lane {
            agent: i,
            agents,
            period,
            senders,
            schedule,
            tally,
        } = self;
        let Schedule {
            epoch, end, stop, ..
        } = schedule;
        let sends = senders != Senders::Http;
        let defer_acks = senders == Senders::Agents;
        let mut mine = Vec::new();
        // Agent i's sends fall at its share of each period.
        let phase = i as f64 / agents as f64;
        let mut n = 0u64;
        let mut next_send = schedule.send_time(n, phase, period);
        loop {
            let now = Instant::now();
            if now >= stop {
                break;
            }
            // No send starts at or after `end`, even one that fell due
            // before it (this lane is behind: it is not counted).
            let sending = sends && now < end && next_send < end;
            if sending && now >= next_send {
                let to = recipient(i as u64, n, agents);
                let t = epoch.elapsed().as_micros() as u64;
                let result = session.send(&to, None, &json!({ "t": t })).await;
                tally.outcome(&schedule, t, result);
                n += 1;
                next_send = schedule.send_time(n, phase, period);
                continue;
            }
            if !sending && session.deferred_acks() > 0 && session.flush().await.is_err() {
                break; // done sending: what would have ridden on a send goes now
            }
            // Wake to send next, or to stop.
            let until = if sending { next_send } else { stop };
            let (delivery, arrived) =
                match tokio::time::timeout_at(until.into(), session.next_timed()).await {
                    Ok(Some(Ok(timed))) => timed,
                    Ok(Some(Err(e))) => {
                        eprintln!("agent a{i}: {e}");
                        continue;
                    }
                    Ok(None) => break,
                    Err(_) => continue, // time to send, or to stop
                };
            let now = schedule.micros(arrived);
            let sent = delivery.payload["t"].as_u64().unwrap_or(now);
            if schedule.counts(sent) {
                mine.push(now.saturating_sub(sent));
                tally.received.fetch_add(1, Ordering::Relaxed);
            }
            if defer_acks {
                session.defer_ack(delivery.id);
            } else if session.ack(delivery.id).await.is_err() {
                break;
            }
        }
        tally.latencies.lock().unwrap().extend(mine);
    }
}

/// Sockets opened at once: more would overflow the listener's accept
/// queue (`net.core.somaxconn`), and the kernel resets what does not fit.
const OPENING_AT_ONCE: usize = 256;

/// Opens every agent's socket, [`OPENING_AT_ONCE`] at a time.
async fn open_sessions(url: &str, agents: usize) -> anyhow::Result<Vec<(usize, Session)>> {
    let mut opening = tokio::task::JoinSet::new();
    let mut sessions = Vec::with_capacity(agents);
    let mut next = 0;
    while sessions.len() < agents {
        while next < agents && opening.len() < OPENING_AT_ONCE {
            let i = next;
            let client = Client::new(url, &format!("a{i}"), &format!("token-{i}"));
            opening.spawn(async move { (i, client.session(64).await) });
            next += 1;
        }
        let Some(opened) = opening.join_next().await else {
            break;
        };
        let (i, session) = opened?;
        let session = session.map_err(|e| {
            anyhow::anyhow!(
                "agent a{i} cannot open its socket (is `ulimit -n` above {}?): {e}",
                agents * 2
            )
        })?;
        sessions.push((i, session));
    }
    Ok(sessions)
}

/// The operator's HTTP connections for `rate`: one lane per 40 msg/s (a
/// send waits for durability, a few ms).
fn lanes_for(rate: u64) -> u64 {
    (rate / 40).clamp(64, 2048)
}

/// Files each process of the benchmark opens: a socket per agent, the
/// operator's connections, and some to spare (the store, logs, listeners).
pub fn files_needed(agents: usize, rate: u64) -> u64 {
    agents as u64 + lanes_for(rate) + 256
}

/// The operator's senders over HTTP: one lane per 40 msg/s of the rate (a
/// send waits for durability, a few ms), each pacing its share.
async fn http_senders(
    url: &str,
    operator_token: &str,
    agents: usize,
    rate: u64,
    schedule: Schedule,
    tally: &Arc<Tally>,
) {
    let Schedule { end, epoch, .. } = schedule;
    let lanes = lanes_for(rate);
    let period = Duration::from_secs_f64(lanes as f64 / rate as f64);
    let mut publishers = Vec::new();
    for lane in 0..lanes {
        let operator = Client::new(url, "cortex", operator_token);
        let tally = tally.clone();
        publishers.push(tokio::spawn(async move {
            let phase = lane as f64 / lanes as f64;
            let mut n = 0u64;
            let mut next = schedule.send_time(n, phase, period);
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                if Instant::now() >= end {
                    break; // behind: what was not sent by `end` is not counted
                }
                let t = epoch.elapsed().as_micros() as u64;
                let to = recipient(lane, n, agents);
                let result = operator.send(&to, None, &json!({ "t": t })).await;
                tally.outcome(&schedule, t, result);
                n += 1;
                next = schedule.send_time(n, phase, period);
            }
        }));
    }
    for p in publishers {
        let _ = p.await;
    }
}
