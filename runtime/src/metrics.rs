//! Runtime metrics in the Prometheus text format (version 0.0.4): counters
//! kept as atomics where events happen, gauges read at scrape time, and a
//! latency histogram with fixed buckets.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the delivery-latency buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Upper bounds (seconds) of the task-duration buckets: workflow tasks
/// take from milliseconds (a command) to minutes (a language model).
pub const TASK_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::with_bounds(&LATENCY_BUCKETS)
    }
}

impl Histogram {
    /// A histogram with buckets up to each of `bounds` (seconds, ascending).
    pub fn with_bounds(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the histogram as family `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The broker's counters.
#[derive(Debug, Default)]
pub struct BrokerCounters {
    /// Messages accepted (one per receiving inbox).
    pub published: AtomicU64,
    /// Deliveries made (first and later attempts).
    pub delivered: AtomicU64,
    /// Deliveries made again after an ack timeout or a nack.
    pub redelivered: AtomicU64,
    /// Messages acked or replied to.
    pub acked: AtomicU64,
    /// Messages dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Messages dropped by retention.
    pub expired: AtomicU64,
    /// Publishes refused because an inbox was full.
    pub rejected_full: AtomicU64,
    /// Publishes refused by a topic schema.
    pub rejected_schema: AtomicU64,
    /// Publish-to-ack latency.
    pub latency: Histogram,
}

/// Writes one metric family with its samples (`labels` already formatted
/// as `{a="b"}` or empty).
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Writes counters without labels: (name, help, value) each.
pub fn unlabelled_counters(out: &mut String, counters: &[(&str, &str, &AtomicU64)]) {
    for (name, help, value) in counters {
        family(
            out,
            name,
            "counter",
            help,
            &[(String::new(), value.load(Ordering::Relaxed) as f64)],
        );
    }
}

/// Escapes a label value.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl BrokerCounters {
    /// Renders the counters and the histogram.
    pub fn render(&self, out: &mut String) {
        let counters = [
            (
                "cortex_messages_published_total",
                "Messages accepted, one per receiving inbox.",
                &self.published,
            ),
            (
                "cortex_deliveries_total",
                "Deliveries made, first and later attempts.",
                &self.delivered,
            ),
            (
                "cortex_redeliveries_total",
                "Deliveries made again after an ack timeout or a nack.",
                &self.redelivered,
            ),
            (
                "cortex_messages_acked_total",
                "Messages acked or replied to.",
                &self.acked,
            ),
            (
                "cortex_dead_letters_total",
                "Messages dead-lettered after maxAttempts.",
                &self.dead_lettered,
            ),
            (
                "cortex_messages_expired_total",
                "Undelivered messages dropped by retention.",
                &self.expired,
            ),
            (
                "cortex_publish_rejected_inbox_full_total",
                "Publishes refused because an inbox was full.",
                &self.rejected_full,
            ),
            (
                "cortex_publish_rejected_schema_total",
                "Publishes refused by a topic schema.",
                &self.rejected_schema,
            ),
        ];
        unlabelled_counters(out, &counters);
        self.latency.render(
            out,
            "cortex_delivery_latency_seconds",
            "Time from publish to ack.",
        );
    }
}
