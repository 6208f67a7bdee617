//! Agent state's metrics: writes and conflicts per scope, watchers, and
//! how long after a write its watchers got it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::metrics::{family, label};

#[derive(Clone, Copy, Default)]
struct ScopeCounters {
    writes: u64,
    conflicts: u64,
    rejected: u64,
}

/// The counters ([`StateMetrics::render`] writes them as Prometheus text).
#[derive(Default)]
pub struct StateMetrics {
    scopes: Mutex<BTreeMap<String, ScopeCounters>>,
    watchers: AtomicI64,
    lag_ms_sum: AtomicU64,
    delivered: AtomicU64,
}

impl StateMetrics {
    fn count(&self, scope: &str, f: impl FnOnce(&mut ScopeCounters)) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        match scopes.get_mut(scope) {
            Some(c) => f(c),
            None => {
                let mut c = ScopeCounters::default();
                f(&mut c);
                scopes.insert(scope.to_string(), c);
            }
        }
    }

    /// A write (or delete) was made durable.
    pub fn written(&self, scope: &str) {
        self.count(scope, |c| c.writes += 1);
    }

    /// A compare-and-swap lost.
    pub fn conflicted(&self, scope: &str) {
        self.count(scope, |c| c.conflicts += 1);
    }

    /// A value broke the scope's schema.
    pub fn rejected(&self, scope: &str) {
        self.count(scope, |c| c.rejected += 1);
    }

    /// A watch opened (`1`) or closed (`-1`).
    pub fn watching(&self, delta: i64) {
        self.watchers.fetch_add(delta, Ordering::Relaxed);
    }

    /// A change reached a watcher `lag_ms` after it was written.
    pub fn delivered(&self, lag_ms: u64) {
        self.lag_ms_sum.fetch_add(lag_ms, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes per scope (tests and `cortex status`).
    pub fn writes(&self, scope: &str) -> u64 {
        self.scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope)
            .map_or(0, |c| c.writes)
    }

    /// Appends the families to `out`.
    pub fn render(&self, out: &mut String) {
        let scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let per = |f: fn(&ScopeCounters) -> u64| -> Vec<(String, f64)> {
            scopes
                .iter()
                .map(|(s, c)| (format!("{{scope=\"{}\"}}", label(s)), f(c) as f64))
                .collect()
        };
        family(
            out,
            "cortex_state_writes_total",
            "counter",
            "State writes and deletes made durable, per scope.",
            &per(|c| c.writes),
        );
        family(
            out,
            "cortex_state_conflicts_total",
            "counter",
            "State writes refused because ifVersion did not match, per scope.",
            &per(|c| c.conflicts),
        );
        family(
            out,
            "cortex_state_schema_rejections_total",
            "counter",
            "State values refused by their scope's schema, per scope.",
            &per(|c| c.rejected),
        );
        family(
            out,
            "cortex_state_watchers",
            "gauge",
            "Open state watches.",
            &[(String::new(), self.watchers.load(Ordering::Relaxed) as f64)],
        );
        let sum = self.lag_ms_sum.load(Ordering::Relaxed) as f64 / 1000.0;
        let count = self.delivered.load(Ordering::Relaxed) as f64;
        out.push_str("# HELP cortex_state_watch_lag_seconds From a state write to its delivery to a watcher.\n# TYPE cortex_state_watch_lag_seconds summary\n");
        out.push_str(&format!(
            "cortex_state_watch_lag_seconds_sum {sum}\ncortex_state_watch_lag_seconds_count {count}\n"
        ));
    }
}
