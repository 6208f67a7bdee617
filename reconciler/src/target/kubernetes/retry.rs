//! Bounded retries with exponential backoff and jitter for the requests
//! the API server may refuse for a moment: 429, 5xx, dropped connections,
//! and (where re-issuing the request re-plans it) 409.

use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub base: Duration,
    /// Longest delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 200 ms doubling to at most 5 s (about 10 s in all).
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry `n` (0-based): half the exponential step plus
    /// a random part of the other half, so retries of many clients spread.
    pub fn delay(&self, n: u32) -> Duration {
        let step = self.base.saturating_mul(1u32 << n.min(20)).min(self.cap);
        let half = step / 2;
        let jitter = getrandom::u64().unwrap_or(0) % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(jitter)
    }
}

/// Whether an error is worth another attempt.
fn retryable(e: &kube::Error, conflicts_too: bool) -> bool {
    match e {
        kube::Error::Api(status) => match status.code {
            429 | 500..=599 => true,
            409 => {
                conflicts_too
                    && status.reason != "AlreadyExists"
                    && crate::target::kubernetes::error::field_conflicts(e).is_none()
            }
            _ => false,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails for good, or the attempts run out.
/// With `conflicts_too`, a 409 that is not a field-manager conflict is
/// retried as well: for server-side apply, which sends no resourceVersion,
/// sending the object again applies it to the latest version.
pub async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    conflicts_too: bool,
    mut op: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if attempt + 1 < policy.attempts && retryable(&e, conflicts_too) => {
                tracing::debug!(attempt = attempt + 1, error = %e, "retrying a Kubernetes request");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let p = RetryPolicy::default();
        for n in 0..30 {
            let d = p.delay(n);
            assert!(d <= p.cap, "{d:?}");
            let step = p.base.saturating_mul(1 << n.min(20)).min(p.cap);
            assert!(d >= step / 2, "{n}: {d:?}");
        }
    }
}
