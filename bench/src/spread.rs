//! How a benchmark reports repeated timings: runs, min, median, max; and
//! quantiles of latencies.

use std::time::Duration;

/// Minimum, median and maximum of some runs.
pub(crate) struct Spread {
    runs: usize,
    min: Duration,
    pub(crate) median: Duration,
    max: Duration,
}

impl Spread {
    /// Sorts `timings` (at least one) and takes their spread.
    pub(crate) fn of(timings: &mut [Duration]) -> Spread {
        timings.sort();
        Spread {
            runs: timings.len(),
            min: timings.first().copied().unwrap_or_default(),
            median: timings.get(timings.len() / 2).copied().unwrap_or_default(),
            max: timings.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Spread {
    /// `5 runs: min 1 ms, median 2 ms, max 3 ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
            self.runs,
            ms(self.min),
            ms(self.median),
            ms(self.max)
        )
    }
}

/// The `q` quantile (0–1) of `sorted`, by the index `len × q` (the last
/// value for `q` = 1); the default when there are none.
pub(crate) fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
