//! Restart backoff: `initial × multiplier^n`, capped at `max`, starting
//! over once a process has stayed up for [`STABLE_PERIOD`].

use std::time::Duration;

use cortex_compiler::runtime_config;

/// A process that stays up this long is considered recovered: its next
/// restart waits `initial` again (Kubernetes resets CrashLoopBackOff after
/// 10 minutes of running; agents restart faster, so one minute).
pub const STABLE_PERIOD: Duration = Duration::from_secs(60);

/// A restart backoff policy (an agent's `recovery.backoff`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Factor between consecutive delays.
    pub multiplier: f64,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The policy of a runtime.json `recovery.backoff` entry (a
    /// multiplier below 1 or not finite counts as the default).
    pub fn from_runtime(entry: &runtime_config::Backoff) -> Backoff {
        Backoff {
            initial: Duration::from_millis(entry.initial_ms),
            multiplier: Some(entry.multiplier)
                .filter(|m| m.is_finite() && *m >= 1.0)
                .unwrap_or(runtime_config::defaults::BACKOFF_MULTIPLIER),
            max: Duration::from_millis(entry.max_ms),
        }
    }

    /// The delay before restart number `n` (0-based) of a run of failures.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = self.multiplier.powi(n.min(64) as i32);
        let seconds = (self.initial.as_secs_f64() * factor).min(self.max.as_secs_f64());
        Duration::from_secs_f64(seconds.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(10),
        };
        let delays: Vec<u64> = (0..6).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn reads_the_runtime_entry_with_defaults() {
        let b = Backoff::from_runtime(&runtime_config::Backoff {
            initial_ms: 500,
            max_ms: 4000,
            multiplier: 3.0,
        });
        assert_eq!(b.delay(1), Duration::from_millis(1500));
        let d = Backoff::from_runtime(&runtime_config::Backoff::default());
        assert_eq!(d.initial, Duration::from_secs(1));
        assert_eq!(d.max, Duration::from_secs(300));
    }
}
