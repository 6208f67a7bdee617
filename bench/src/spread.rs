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
            median: quantile(timings, 0.5).unwrap_or_default(),
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

/// Sorts `values` (at least one) and gives their minimum, median and
/// maximum (the median by [`quantile`]'s rule, as every figure).
pub(crate) fn min_median_max(values: &mut [f64]) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| quantile(values, q).unwrap_or(f64::NAN);
    [at(0.0), at(0.5), at(1.0)]
}

/// The `q` quantile (0–1) of `sorted` by nearest rank: the smallest value
/// with at least `q` of the values at or below it (the first for `q` = 0,
/// the last for `q` = 1); none when there are no values. Every benchmark
/// takes its percentiles here, so their figures mean the same thing.
pub(crate) fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::{min_median_max, quantile};

    #[test]
    fn quantiles_are_nearest_ranks() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.0), Some(1));
        assert_eq!(quantile(&values, 0.5), Some(50));
        assert_eq!(quantile(&values, 0.99), Some(99));
        assert_eq!(quantile(&values, 1.0), Some(100));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[1, 2, 3], 0.5), Some(2));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn min_median_max_sorts_first() {
        assert_eq!(min_median_max(&mut [3.0, 1.0, 2.0]), [1.0, 2.0, 3.0]);
        assert_eq!(min_median_max(&mut [5.0]), [5.0; 3]);
        // An even count's median is the lower middle, as `quantile` takes it.
        assert_eq!(min_median_max(&mut [4.0, 1.0, 3.0, 2.0]), [1.0, 2.0, 4.0]);
        let mut timings = [4, 1, 3, 2].map(std::time::Duration::from_millis);
        assert_eq!(
            super::Spread::of(&mut timings).median,
            std::time::Duration::from_millis(2)
        );
        assert!(min_median_max(&mut []).iter().all(|v| v.is_nan()));
    }
}
