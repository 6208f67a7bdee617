//! What the broker checks of a payload's shape before it takes it in,
//! whatever path it came by (HTTP, the agent socket, in process): how deep
//! its arrays and objects nest.

use super::BrokerError;

/// Deepest nesting of arrays and objects a payload may have, so that every
/// agent can read what it is given: serde_json stops at 128 levels (most
/// JSON parsers stop between 100 and 1,000), a delivery frame wraps the
/// payload 3 levels deep and a dead-letter envelope one more.
pub const MAX_PAYLOAD_DEPTH: usize = 100;

/// Refuses a payload nested deeper than [`MAX_PAYLOAD_DEPTH`]. `payload`
/// is JSON text already parsed once (strings may hold brackets: they are
/// skipped).
pub fn check_depth(payload: &str) -> Result<(), BrokerError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in payload.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_PAYLOAD_DEPTH {
                    return Err(BrokerError::TooDeep {
                        limit: MAX_PAYLOAD_DEPTH,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
