//! The durable broker workload, on cortex: 256 concurrent publishers each
//! waiting for its message to be durable (SQLite WAL, `synchronous=FULL`;
//! group commit makes one fsync serve many), two consumers receiving in
//! batches and acking each batch durably. [`crate::jetstream`] runs the
//! same workload on NATS JetStream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cortex_runtime::broker::{Broker, BrokerConfig, Journal, Principal};
use cortex_runtime::store::{SqliteStore, Store};

/// Concurrent publishers, each awaiting durability before its next publish.
pub const PUBLISHERS: u64 = 256;

/// Throughput and publish latency of one durable run.
#[derive(Clone, Debug)]
pub struct DurableFigures {
    /// Messages per second, publish to acknowledged delivery.
    pub rate: f64,
    /// Median publish latency (call → durable).
    pub p50: Duration,
    /// 99th percentile publish latency.
    pub p99: Duration,
    /// Every run's rate, when this is a median of several.
    runs: Vec<f64>,
}

impl DurableFigures {
    /// The figures of one run from its publish latencies.
    pub fn new(rate: f64, mut latencies: Vec<Duration>) -> DurableFigures {
        latencies.sort();
        // A run always publishes: no latency reads as zero, not a panic.
        let at = |q: f64| crate::spread::quantile(&latencies, q).unwrap_or_default();
        DurableFigures {
            rate,
            p50: at(0.50),
            p99: at(0.99),
            runs: vec![rate],
        }
    }

    /// The run with the median rate, with every run's rate kept.
    pub fn median_of(mut runs: Vec<DurableFigures>) -> DurableFigures {
        runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let mut median = runs.swap_remove(runs.len() / 2);
        median.runs = rates;
        median
    }
}

impl std::fmt::Display for DurableFigures {
    /// `median 140000 msg/s (runs: …), publish latency p50 1.2 ms, p99 3.4 ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.0} msg/s (runs: {}), publish latency of that run p50 {:.2} ms, p99 {:.2} ms",
            self.rate,
            self.runs
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0
        )
    }
}

/// A system under the durable workload: two lanes (an agent's inbox, a
/// consumer's subject), each fed by half the publishers.
pub trait System: Clone + Send + Sync + 'static {
    /// Publishes one message to `lane` and returns once it is durable.
    fn publish(&self, lane: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Takes what `lane` holds (a batch, possibly empty after a short wait),
    /// acknowledges it durably, and says how many it took.
    fn take_and_ack(&self, lane: u64) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// Runs the workload on `system`: `total` messages from [`PUBLISHERS`]
/// publishers, two consumers, until every message is acknowledged.
pub async fn drive<S: System>(system: S, total: u64) -> anyhow::Result<DurableFigures> {
    let per_publisher = total / PUBLISHERS;
    let expected = per_publisher * PUBLISHERS;
    let started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let system = system.clone();
        publishers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_publisher as usize);
            for _ in 0..per_publisher {
                let sent = Instant::now();
                system.publish(p % 2).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut consumers = Vec::new();
    for lane in 0..2 {
        let system = system.clone();
        let acked = acked.clone();
        consumers.push(tokio::spawn(async move {
            while acked.load(Ordering::Relaxed) < expected {
                let taken = system.take_and_ack(lane).await?;
                acked.fetch_add(taken, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    let mut latencies = Vec::with_capacity(expected as usize);
    for p in publishers {
        latencies.extend(p.await??);
    }
    for c in consumers {
        c.await??;
    }
    let rate = expected as f64 / started.elapsed().as_secs_f64();
    Ok(DurableFigures::new(rate, latencies))
}

/// cortex's broker on its SQLite store.
#[derive(Clone)]
struct Cortex {
    broker: Arc<Broker>,
    payload: Arc<str>,
}

impl System for Cortex {
    async fn publish(&self, lane: u64) -> anyhow::Result<()> {
        self.broker
            .send(
                &Principal::Operator,
                &format!("a{lane}"),
                None,
                &self.payload,
            )
            .await?;
        Ok(())
    }

    async fn take_and_ack(&self, lane: u64) -> anyhow::Result<u64> {
        let agent = format!("a{lane}");
        let got = self
            .broker
            .receive(&agent, 2000, Duration::from_millis(50))
            .await?;
        let ids: Vec<u64> = got.iter().map(|t| t.id).collect();
        self.broker.ack_many(&agent, &ids).await?;
        Ok(ids.len() as u64)
    }
}

/// The workload on cortex's broker and SQLite store: `total` messages.
pub async fn cortex(total: u64) -> anyhow::Result<DurableFigures> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?);
    let config = BrokerConfig::from_applied(
        &crate::config::config_of(2),
        cortex_runtime::tokens::TokenHash::of("operator"),
    )?;
    let system = Cortex {
        broker: Broker::new(config, Journal::to(store.clone()), 0),
        payload: Arc::from(PAYLOAD),
    };
    let figures = drive(system, total).await?;
    let left = store.messages().await?.len();
    anyhow::ensure!(
        left == 0,
        "{left} messages left in the store after the durable run"
    );
    Ok(figures)
}

/// Every message's payload.
pub const PAYLOAD: &str = r#"{"subject":"printer on fire","ticket":"t-1"}"#;
