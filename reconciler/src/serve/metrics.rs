//! `cortex serve`'s metrics, written on the runtime's `/metrics` (and on
//! the API's own before the runtime runs): syncs by outcome, reconcile
//! duration, push → applied latency, drift found and healed, compile
//! failures.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cortex_runtime::metrics::{Histogram, TASK_BUCKETS, family, label, unlabelled_counters};

/// The counters.
#[derive(Debug)]
pub struct ServeMetrics {
    syncs: Mutex<BTreeMap<String, u64>>,
    /// Reconcile durations (fetch, compile, plan, apply).
    pub reconcile: Histogram,
    /// From a new head seen by a fetch to its revision applied.
    pub fetch_to_applied: Histogram,
    /// Drift found (the store moved behind serve's back).
    pub drift_detected: AtomicU64,
    /// Drift put back.
    pub drift_healed: AtomicU64,
    /// Heads that did not compile.
    pub compile_failures: AtomicU64,
    /// Compiles made (a no-op reconcile makes none).
    pub compiles: AtomicU64,
}

impl Default for ServeMetrics {
    fn default() -> ServeMetrics {
        ServeMetrics {
            syncs: Mutex::default(),
            reconcile: Histogram::with_bounds(&TASK_BUCKETS),
            fetch_to_applied: Histogram::with_bounds(&TASK_BUCKETS),
            drift_detected: AtomicU64::new(0),
            drift_healed: AtomicU64::new(0),
            compile_failures: AtomicU64::new(0),
            compiles: AtomicU64::new(0),
        }
    }
}

impl ServeMetrics {
    /// A sync ended with `outcome` (`applied`, `healed`, `failed`…).
    pub fn sync(&self, outcome: &str) {
        *self
            .syncs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    /// A reconcile took `took`.
    pub fn reconciled(&self, took: Duration) {
        self.reconcile.observe(took);
    }

    /// Writes the families.
    pub fn render(&self, out: &mut String) {
        let syncs: Vec<(String, f64)> = self
            .syncs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(o, n)| (format!("{{outcome=\"{}\"}}", label(o)), *n as f64))
            .collect();
        family(
            out,
            "cortex_serve_syncs_total",
            "counter",
            "Syncs by outcome (applied, healed, unchanged when asked for, failed).",
            &syncs,
        );
        self.reconcile.render(
            out,
            "cortex_serve_reconcile_duration_seconds",
            "How long reconciles took (fetch, compile, plan, apply).",
        );
        self.fetch_to_applied.render(
            out,
            "cortex_serve_fetch_to_applied_seconds",
            "From a new head seen by a fetch to its revision applied.",
        );
        unlabelled_counters(
            out,
            &[
                (
                    "cortex_serve_drift_detected_total",
                    "Drift found: the store moved behind serve's back.",
                    &self.drift_detected,
                ),
                (
                    "cortex_serve_drift_healed_total",
                    "Drift put back.",
                    &self.drift_healed,
                ),
                (
                    "cortex_serve_compile_failures_total",
                    "Heads that did not compile (never applied).",
                    &self.compile_failures,
                ),
                (
                    "cortex_serve_compiles_total",
                    "Compiles made (a no-op reconcile makes none).",
                    &self.compiles,
                ),
            ],
        );
    }
}
