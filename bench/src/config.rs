//! Synthetic runtime configs for the runtime benchmarks.

use cortex_runtime::store::Applied;
use serde_json::{Map, json};

/// A runtime config with `agents` agents `a0…`, each subscribed to nothing,
/// with inboxes deep enough for the benchmarks.
pub(crate) fn config_of(agents: usize) -> Applied {
    let mut entries = Map::new();
    let mut tokens = std::collections::BTreeMap::new();
    for i in 0..agents {
        entries.insert(
            format!("a{i}"),
            json!({"inbox": {"capacity": 1_000_000}, "delivery": {"maxAttempts": 5, "ackTimeoutMs": 60_000}, "publish": [], "subscribe": []}),
        );
        tokens.insert(format!("a{i}"), format!("token-{i}"));
    }
    Applied {
        revision: 1,
        commit: None,
        config: json!({"agents": entries, "topics": {}}),
        tokens,
        applied_at_ms: 0,
    }
}
