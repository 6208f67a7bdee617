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
use serde_json::json;

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
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
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

/// The workload on cortex's broker and SQLite store: `total` messages.
pub async fn cortex(total: u64) -> anyhow::Result<DurableFigures> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("bench.db"))?);
    let config = BrokerConfig::from_applied(
        &crate::config::config_of(2),
        cortex_runtime::tokens::TokenHash::of("operator"),
    )?;
    let broker = Broker::new(config, Journal::to(store.clone()), 0);
    let payload = json!({"ticket": "t-1", "subject": "printer on fire"}).to_string();
    let started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let broker = broker.clone();
        let payload = payload.clone();
        publishers.push(tokio::spawn(async move {
            let agent = format!("a{}", p % 2);
            let mut latencies = Vec::with_capacity((total / PUBLISHERS) as usize);
            for _ in 0..total / PUBLISHERS {
                let sent = Instant::now();
                broker
                    .send(&Principal::Operator, &agent, None, &payload)
                    .await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, cortex_runtime::broker::BrokerError>(latencies)
        }));
    }
    let expected = (total / PUBLISHERS) * PUBLISHERS;
    let mut readers = Vec::new();
    for lane in 0..2 {
        let broker = broker.clone();
        let acked = acked.clone();
        readers.push(tokio::spawn(async move {
            let agent = format!("a{lane}");
            while acked.load(Ordering::Relaxed) < expected {
                let got = broker
                    .receive(&agent, 2000, Duration::from_millis(50))
                    .await?;
                let ids: Vec<u64> = got.iter().map(|t| t.id).collect();
                broker.ack_many(&agent, &ids).await?;
                acked.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, cortex_runtime::broker::BrokerError>(())
        }));
    }
    let mut latencies = Vec::with_capacity(expected as usize);
    for p in publishers {
        latencies.extend(p.await??);
    }
    for r in readers {
        r.await??;
    }
    let rate = expected as f64 / started.elapsed().as_secs_f64();
    let left = store.messages().await?.len();
    anyhow::ensure!(
        left == 0,
        "{left} messages left in the store after the durable run"
    );
    Ok(DurableFigures::new(rate, latencies))
}
