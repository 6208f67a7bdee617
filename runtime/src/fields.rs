//! The value shapes every part of the runtime reads from runtime.json
//! entries, read one way.

use std::time::Duration;

use serde_json::Value;

/// A duration in milliseconds, or `default_ms` when absent or not a number.
pub(crate) fn millis(value: Option<&Value>, default_ms: u64) -> Duration {
    Duration::from_millis(value.and_then(Value::as_u64).unwrap_or(default_ms))
}

/// A list of strings (non-strings skipped); empty when absent.
pub(crate) fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
